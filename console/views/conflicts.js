// The conflict queue: open conflicts in the supervisor's areas, oldest first, with counts by
// village and by question, filtered by area, question and age.
//   GET /api/conflicts?status=open&area=&field=&older_than_days=&limit=&offset=

import {get} from '../api.js';
import {areaName, areaOptions, fieldLabel, formatValue, reviewFields} from '../data.js';
import {field, h, select} from '../dom.js';
import {formatAge, formatDateTime, formatNumber, t} from '../i18n.js';
import {areaCell, badge, fillHouseholdNames, pager, shortId, table} from './common.js';

const PAGE = 25;
const AGES = [0, 1, 3, 7, 30];

function fieldCollection(name) {
  return reviewFields().find((x) => x.field.name === name)?.collection || 'households';
}

export async function render(ctx) {
  const q = ctx.query;
  const filters = {
    area: q.get('area') || '',
    field: q.get('field') || '',
    age: q.get('age') || '',
    status: q.get('status') || 'open',
  };
  const offset = Math.max(0, parseInt(q.get('offset') || '0', 10) || 0);
  ctx.setTitle(t('conflicts.title'));

  const data = await get('/api/conflicts', {
    status: filters.status, area: filters.area, field: filters.field,
    older_than_days: filters.age || undefined, limit: PAGE, offset,
  });

  const go = (changes) => ctx.navigate('conflicts', {...filters, offset: 0, ...changes});

  // Filters.
  const areaSel = select(areaOptions(), filters.area, {name: 'area'});
  const fieldOpts = [{value: '', label: t('filter.all_fields')}];
  for (const {collection, field: f} of reviewFields()) {
    fieldOpts.push({value: f.name, label: fieldLabel(collection, f.name)});
  }
  fieldOpts.push({value: '_deleted', label: fieldLabel('households', '_deleted')});
  const fieldSel = select(fieldOpts, filters.field, {name: 'field'});
  const ageSel = select(AGES.map((d) => ({value: d ? String(d) : '', label: d ? t('filter.older_than', {n: d}) : t('filter.any_age')})),
                        filters.age, {name: 'age'});
  const statusSel = select([
    {value: 'open', label: t('conflicts.status_open')},
    {value: 'resolved', label: t('conflicts.status_resolved')},
    {value: 'all', label: t('conflicts.status_all')},
  ], filters.status, {name: 'status'});
  const form = h('form', {class: 'filters', role: 'search', 'aria-label': t('filter.label')},
    field(t('filter.area'), areaSel).wrap,
    field(t('filter.field'), fieldSel).wrap,
    field(t('filter.age'), ageSel).wrap,
    field(t('filter.status'), statusSel).wrap,
    h('div', {class: 'filter-actions'},
      h('button', {type: 'submit', class: 'btn btn-primary'}, t('filter.apply')),
      h('button', {type: 'button', class: 'btn btn-quiet', on: {click: () => ctx.navigate('conflicts')}}, t('filter.clear'))));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    go({area: areaSel.value, field: fieldSel.value, age: ageSel.value, status: statusSel.value});
  });

  // Counts.
  const byVillage = Object.entries(data.counts?.by_village || {}).sort((a, b) => b[1] - a[1]);
  const byField = Object.entries(data.counts?.by_field || {}).sort((a, b) => b[1] - a[1]);
  const countList = (title, entries, label, onPick, current) => h('div', {class: 'count-box'},
    h('h2', {}, title),
    entries.length ? h('ul', {class: 'counts'}, entries.map(([k, n]) => h('li', {},
      h('button', {type: 'button', class: ['link-button', current === k && 'is-current'],
                   'aria-pressed': current === k ? 'true' : 'false',
                   on: {click: () => onPick(current === k ? '' : k)}}, label(k)),
      h('span', {class: 'count'}, formatNumber(n)))))
      : h('p', {class: 'empty'}, '—'));

  const counts = h('div', {class: 'counts-grid'},
    countList(t('conflicts.by_village'), byVillage, (k) => areaName(k), (k) => go({area: k}), filters.area),
    countList(t('conflicts.by_field'), byField, (k) => fieldLabel(fieldCollection(k), k), (k) => go({field: k}), filters.field));

  // The list.
  const names = [];
  const rows = (data.conflicts || []).map((c) => {
    const hhId = c.collection === 'households' ? c.record : null;
    const who = h('span', {class: 'muted'}, shortId(c.record));
    if (hhId) names.push({id: hhId, cell: who});
    const values = (Array.isArray(c.values) ? c.values : []).map((v) =>
      h('li', {}, h('span', {class: 'value'}, formatValue(c.collection, c.field, v.value)),
        h('span', {class: 'muted'}, ` — ${v.by}`)));
    const opened = h('span', {}, formatDateTime(c.opened_at), h('br'),
      h('span', {class: 'muted'}, formatAge(c.opened_at)));
    return {
      cells: [
        h('a', {href: `#/conflicts/${c.id}`, class: 'conflict-link', 'aria-label': t('conflicts.open_n', {id: c.id})}, `#${c.id}`),
        opened,
        areaCell(c.area),
        who,
        fieldLabel(c.collection, c.field),
        values.length ? h('ul', {class: 'value-list'}, values) : (c.resolution !== undefined ? formatValue(c.collection, c.field, c.resolution) : '—'),
        c.status === 'open' ? badge(t('conflicts.status_open_one'), 'warn') : badge(t('conflicts.status_resolved_one'), 'ok'),
      ],
    };
  });
  const list = table(t('conflicts.caption'), [
    {label: t('conflicts.col_id')},
    {label: t('conflicts.col_opened')},
    {label: t('conflicts.col_village')},
    {label: t('conflicts.col_household')},
    {label: t('conflicts.col_field')},
    {label: t('conflicts.col_values')},
    {label: t('conflicts.col_status')},
  ], rows, {empty: filters.status === 'open' ? t('conflicts.none') : t('list.empty'), className: 'conflicts-table'});
  fillHouseholdNames(names, ctx.isCurrent);

  const total = data.total || 0;
  return h('div', {class: 'page page-conflicts'},
    h('div', {class: 'page-head'},
      h('h1', {}, t('conflicts.title')),
      h('p', {class: 'lead'}, t('conflicts.lead'))),
    form,
    h('p', {class: 'summary', 'data-total': String(total)},
      filters.status === 'open' ? t('conflicts.total_open', {n: formatNumber(total)}) : t('conflicts.total', {n: formatNumber(total)})),
    counts,
    list,
    pager({offset, limit: PAGE, total, go: (o) => ctx.navigate('conflicts', {...filters, offset: o})}));
}

