// Households: search within the supervisor's areas by head's name, identity number, village and
// poverty status; one household with all its answers, members, visits and change history.
//   GET /api/records?collection=households&q=&area=&field.poverty_status=&after=&limit=
//   GET /api/records/households/{id}   (+ history from the audit log)
//   GET /api/export?collection=households&format=csv&area=   (download, token in the header)

import {get, request} from '../api.js';
import {areaOptions, enumLabel, fieldDef, fieldLabel, formatUtc, formatValue, maskId} from '../data.js';
import {field, h, select} from '../dom.js';
import {formatDateTime, t} from '../i18n.js';
import {areaCell, badge, fieldList, householdName, section, shortId, table} from './common.js';

const PAGE = 50;

/** The change history of a record (GET /api/records/... history), newest first. */
export function historyTable(record) {
  const entries = [...(record.history || [])].sort((a, b) => b.seq - a.seq);
  const rows = entries.map((e) => {
    const fields = e.summary?.fields || {};
    const changes = Object.entries(fields).filter(([k, v]) => !(k === '_deleted' && v === false)).map(([k, v]) =>
      h('li', {}, h('span', {class: 'muted'}, `${fieldLabel(record.collection, k)}: `), formatValue(record.collection, k, v)));
    return {cells: [
      formatDateTime(e.at),
      e.user || '—',
      e.device === 'api' ? t('conflict.device_api') : shortId(e.device),
      e.summary?.created ? badge(t('history.created'), 'info') : badge(t('history.changed'), 'plain'),
      changes.length ? h('ul', {class: 'change-list'}, changes) : '—',
    ]};
  });
  return table(null, [
    {label: t('history.at')}, {label: t('history.user')}, {label: t('history.device')},
    {label: t('history.kind')}, {label: t('history.changes'), className: 'wide'},
  ], rows, {empty: t('history.none')});
}

async function download(filters) {
  const res = await request('GET', '/api/export', {query: {collection: 'households', format: 'csv', area: filters.area, bom: 'true'}, raw: true});
  const blob = await res.blob();
  const url = URL.createObjectURL(blob);
  const a = h('a', {href: url, download: `households-${new Date().toISOString().slice(0, 10)}.csv`, hidden: true});
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function renderList(ctx) {
  const qp = ctx.query;
  const filters = {q: qp.get('q') || '', area: qp.get('area') || '', status: qp.get('status') || ''};
  ctx.setTitle(t('households.title'));

  const text = h('input', {type: 'search', name: 'q', value: filters.q, autocomplete: 'off'});
  const areaSel = select(areaOptions(), filters.area, {name: 'area'});
  const statusDef = fieldDef('households', 'poverty_status');
  const statusSel = select([{value: '', label: t('households.any_status')},
    ...(statusDef?.values || []).map((v) => ({value: v.code, label: enumLabel('households', 'poverty_status', v.code)}))],
  filters.status, {name: 'status'});
  const form = h('form', {class: 'filters', role: 'search', 'aria-label': t('filter.label')},
    field(t('households.search'), text, t('households.search_hint')).wrap,
    field(fieldLabel('households', 'village'), areaSel).wrap,
    field(fieldLabel('households', 'poverty_status'), statusSel).wrap,
    h('div', {class: 'filter-actions'},
      h('button', {type: 'submit', class: 'btn btn-primary'}, t('households.search_button')),
      h('button', {type: 'button', class: 'btn btn-quiet', on: {click: () => ctx.navigate('households')}}, t('filter.clear'))));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    ctx.navigate('households', {q: text.value.trim(), area: areaSel.value, status: statusSel.value});
  });

  const query = {collection: 'households', q: filters.q, area: filters.area, limit: PAGE};
  if (filters.status) query['field.poverty_status'] = filters.status;
  let after = 0;
  let exhausted = false;
  const tbody = h('tbody');
  const columns = [
    fieldLabel('households', 'head_name'), fieldLabel('households', 'head_id_number'),
    fieldLabel('households', 'village'), fieldLabel('households', 'poverty_status'),
    fieldLabel('households', 'members_count'), fieldLabel('households', 'assistance'), t('households.updated'),
  ];
  const wrap = h('div', {class: 'table-wrap'}, h('table', {class: 'data households-table'},
    h('caption', {class: 'visually-hidden'}, t('households.title')),
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', {scope: 'col'}, c)))), tbody));
  const empty = h('p', {class: 'empty', hidden: true}, t('households.none'));
  const more = h('button', {type: 'button', class: 'btn', hidden: true}, t('list.more'));
  const count = h('p', {class: 'summary'});
  let shown = 0;

  async function load() {
    const page = await get('/api/records', {...query, after: after || undefined});
    if (page.next === null || page.next === undefined) exhausted = true;
    else after = page.next;
    for (const r of page.records || []) {
      const f = r.fields || {};
      const status = h('span', {}, formatValue('households', 'poverty_status', f.poverty_status));
      if (r.conflicts) {
        status.appendChild(document.createTextNode(' '));
        status.appendChild(badge(t('conflict.flag'), 'warn'));
      }
      tbody.appendChild(h('tr', {class: r.deleted ? 'is-deleted' : null},
        h('th', {scope: 'row'}, h('a', {href: `#/households/${r.id}`}, householdName(r, r.id))),
        h('td', {class: 'mono'}, maskId(f.head_id_number)),
        h('td', {}, areaCell(r.area)),
        h('td', {}, status),
        h('td', {class: 'num'}, formatValue('households', 'members_count', f.members_count)),
        h('td', {}, formatValue('households', 'assistance', f.assistance)),
        h('td', {}, formatDateTime(r.updated_at))));
      shown += 1;
    }
    empty.hidden = shown > 0;
    wrap.hidden = shown === 0;
    more.hidden = exhausted;
    count.textContent = t('households.shown', {n: shown});
  }
  more.addEventListener('click', async () => {
    more.disabled = true;
    try { await load(); } finally { more.disabled = false; }
  });
  await load();

  const exportButton = h('button', {type: 'button', class: 'btn btn-quiet'}, t('households.export'));
  exportButton.addEventListener('click', async () => {
    exportButton.disabled = true;
    try { await download(filters); } catch (e) { if (e.status !== 401) ctx.flash(e.message, 'error'); } finally { exportButton.disabled = false; }
  });

  return h('div', {class: 'page page-households'},
    h('div', {class: 'page-head'}, h('h1', {}, t('households.title')), h('p', {class: 'lead'}, t('households.lead'))),
    form, h('div', {class: 'summary-row'}, count, exportButton), wrap, empty, h('div', {class: 'actions'}, more));
}

async function renderOne(ctx) {
  const id = ctx.params.id;
  const rec = await get(`/api/records/households/${encodeURIComponent(id)}`);
  const name = householdName(rec, id);
  ctx.setTitle(name);
  const [members, visits, conflicts] = await Promise.all([
    get('/api/records', {collection: 'members', 'field.household': id, area: rec.area, limit: 100}).catch(() => ({records: []})),
    get('/api/records', {collection: 'visits', 'field.household': id, area: rec.area, limit: 100}).catch(() => ({records: []})),
    rec.conflicts ? get('/api/conflicts', {status: 'open', area: rec.area, limit: 500}).catch(() => ({conflicts: []})) : {conflicts: []},
  ]);
  const links = {};
  for (const c of conflicts.conflicts || []) if (c.record === id) links[c.field] = c.id;

  const memberRows = (members.records || []).map((m) => ({cells: [
    m.fields?.name || '—',
    formatValue('members', 'relation_to_head', m.fields?.relation_to_head),
    formatValue('members', 'sex', m.fields?.sex),
    formatValue('members', 'birth_date', m.fields?.birth_date),
    formatValue('members', 'labor_ability', m.fields?.labor_ability),
    formatValue('members', 'health', m.fields?.health),
  ]}));
  const visitRows = (visits.records || [])
    .sort((a, b) => String(b.fields?.visited_at).localeCompare(String(a.fields?.visited_at)))
    .map((v) => ({cells: [
      h('a', {href: `#/visits/${v.id}`}, formatUtc(v.fields?.visited_at)),
      formatValue('visits', 'kind', v.fields?.kind),
      v.fields?.enumerator || '—',
      v.fields?.findings || '—',
      formatValue('visits', 'review_status', v.fields?.review_status || 'pending'),
    ]}));

  return h('div', {class: 'page page-household'},
    h('div', {class: 'page-head'},
      h('p', {class: 'crumbs'}, h('a', {href: '#/households'}, `← ${t('households.back')}`)),
      h('h1', {}, name),
      h('p', {class: 'meta'}, rec.deleted ? badge(t('households.deleted'), 'bad') : null, ' ',
        areaCell(rec.area), h('span', {class: 'muted'}, ` · ${t('households.updated')}: ${formatDateTime(rec.updated_at)} · ${shortId(rec.id)}`))),
    section(t('households.answers'), fieldList(rec, {conflictLinks: links})),
    section(t('households.members'), table(null, [
      {label: fieldLabel('members', 'name')}, {label: fieldLabel('members', 'relation_to_head')},
      {label: fieldLabel('members', 'sex')}, {label: fieldLabel('members', 'birth_date')},
      {label: fieldLabel('members', 'labor_ability')}, {label: fieldLabel('members', 'health')},
    ], memberRows, {empty: t('households.no_members')})),
    section(t('households.visits'), table(null, [
      {label: fieldLabel('visits', 'visited_at')}, {label: fieldLabel('visits', 'kind')},
      {label: fieldLabel('visits', 'enumerator')}, {label: fieldLabel('visits', 'findings'), className: 'wide'},
      {label: fieldLabel('visits', 'review_status')},
    ], visitRows, {empty: t('conflict.no_visits')})),
    section(t('history.title'), historyTable(rec)));
}

export function render(ctx) {
  return ctx.params.id ? renderOne(ctx) : renderList(ctx);
}
