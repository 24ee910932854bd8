// Review of visits: list the visits in the supervisor's areas, mark each approved or as having
// issues with a comment.
//   GET /api/records?collection=visits&area=&field.kind=&field.review_status=&after=&limit=
//   GET /api/records/visits/{id}
//   PUT /api/records/visits/{id} {"fields": {"review_status": ..., "review_comment": ...}}

import {get, put} from '../api.js';
import {areaOptions, enumLabel, fieldDef, fieldLabel, formatUtc, formatValue} from '../data.js';
import {field, h, nextId, select} from '../dom.js';
import {formatDateTime, t} from '../i18n.js';
import {areaCell, badge, fieldList, fillHouseholdNames, forgetRecord, section, table} from './common.js';
import {historyTable} from './households.js';

const PAGE = 50;
const MAX_ROUNDS = 10;

function statusOf(v) { return v.fields?.review_status || 'pending'; }

function statusBadge(code) {
  const kind = code === 'approved' ? 'ok' : code === 'has_issues' ? 'bad' : 'warn';
  return badge(enumLabel('visits', 'review_status', code), kind);
}

function truncate(text, n = 90) {
  if (!text) return '—';
  const chars = [...text];
  return chars.length > n ? `${chars.slice(0, n).join('')}…` : text;
}

async function saveReview(id, status, comment) {
  const fields = {review_status: status};
  if (comment !== undefined) fields.review_comment = comment;
  const rec = await put(`/api/records/visits/${encodeURIComponent(id)}`, {fields});
  forgetRecord('visits', id);
  return rec;
}

async function renderList(ctx) {
  const q = ctx.query;
  const filters = {status: q.get('status') || 'to_review', area: q.get('area') || '', kind: q.get('kind') || ''};
  ctx.setTitle(t('visits.title'));

  const statusSel = select([
    {value: 'to_review', label: t('visits.to_review')},
    {value: 'approved', label: enumLabel('visits', 'review_status', 'approved')},
    {value: 'has_issues', label: enumLabel('visits', 'review_status', 'has_issues')},
    {value: 'all', label: t('visits.all')},
  ], filters.status, {name: 'status'});
  const areaSel = select(areaOptions(), filters.area, {name: 'area'});
  const kindDef = fieldDef('visits', 'kind');
  const kindSel = select([{value: '', label: t('visits.all_kinds')},
    ...(kindDef?.values || []).map((v) => ({value: v.code, label: enumLabel('visits', 'kind', v.code)}))],
  filters.kind, {name: 'kind'});
  const form = h('form', {class: 'filters', role: 'search', 'aria-label': t('filter.label')},
    field(t('visits.status_filter'), statusSel).wrap,
    field(t('filter.area'), areaSel).wrap,
    field(fieldLabel('visits', 'kind'), kindSel).wrap,
    h('div', {class: 'filter-actions'}, h('button', {type: 'submit', class: 'btn btn-primary'}, t('filter.apply'))));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    ctx.navigate('visits', {status: statusSel.value, area: areaSel.value, kind: kindSel.value});
  });

  const query = {collection: 'visits', area: filters.area, limit: PAGE};
  if (filters.kind) query['field.kind'] = filters.kind;
  if (filters.status === 'approved' || filters.status === 'has_issues') query['field.review_status'] = filters.status;
  const keep = (v) => (filters.status === 'to_review' ? statusOf(v) === 'pending' : true);

  let after = 0;
  let exhausted = false;
  async function fetchMore() {
    const out = [];
    for (let round = 0; round < MAX_ROUNDS && out.length < PAGE && !exhausted; round++) {
      const page = await get('/api/records', {...query, after: after || undefined});
      out.push(...(page.records || []).filter(keep));
      if (page.next === null || page.next === undefined) exhausted = true;
      else after = page.next;
    }
    return out;
  }

  const columns = [
    {label: fieldLabel('visits', 'visited_at')},
    {label: fieldLabel('visits', 'village')},
    {label: fieldLabel('visits', 'household')},
    {label: fieldLabel('visits', 'kind')},
    {label: fieldLabel('visits', 'enumerator')},
    {label: fieldLabel('visits', 'income_observed')},
    {label: fieldLabel('visits', 'findings'), className: 'wide'},
    {label: fieldLabel('visits', 'review_status')},
    {label: t('list.actions')},
  ];
  const tbody = h('tbody');
  const wrap = h('div', {class: 'table-wrap'}, h('table', {class: 'data visits-table'},
    h('caption', {class: 'visually-hidden'}, t('visits.title')),
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', {scope: 'col', class: c.className}, c.label)))), tbody));
  const empty = h('p', {class: 'empty', hidden: true}, filters.status === 'to_review' ? t('visits.none_to_review') : t('list.empty'));
  const more = h('button', {type: 'button', class: 'btn', hidden: true}, t('list.more'));
  const count = h('p', {class: 'summary'});
  let shown = 0;

  function addRows(list) {
    const names = [];
    for (const v of list) {
      const hh = h('span', {class: 'muted'}, '…');
      if (v.fields?.household) names.push({id: v.fields.household, cell: hh});
      const statusCell = h('td', {}, statusBadge(statusOf(v)));
      const approve = h('button', {type: 'button', class: 'btn btn-small', disabled: statusOf(v) === 'approved',
                                   'aria-label': t('visits.approve_one', {when: formatUtc(v.fields?.visited_at)})}, t('visits.approve'));
      approve.addEventListener('click', async () => {
        approve.disabled = true;
        try {
          await saveReview(v.id, 'approved');
          statusCell.textContent = '';
          statusCell.appendChild(statusBadge('approved'));
          ctx.flash(t('visits.approved_msg'), 'success');
        } catch (e) {
          if (e.status === 401) return;
          approve.disabled = false;
          ctx.flash(e.message, 'error');
        }
      });
      tbody.appendChild(h('tr', {},
        h('td', {}, h('a', {href: `#/visits/${v.id}`}, formatUtc(v.fields?.visited_at))),
        h('td', {}, areaCell(v.area)),
        h('td', {}, hh),
        h('td', {}, formatValue('visits', 'kind', v.fields?.kind)),
        h('td', {}, v.fields?.enumerator || '—'),
        h('td', {}, formatValue('visits', 'income_observed', v.fields?.income_observed)),
        h('td', {class: 'wide'}, truncate(v.fields?.findings)),
        statusCell,
        h('td', {class: 'row-actions'}, approve, ' ', h('a', {href: `#/visits/${v.id}`, class: 'btn btn-small btn-quiet'}, t('visits.review')))));
    }
    shown += list.length;
    fillHouseholdNames(names, ctx.isCurrent);
    empty.hidden = shown > 0;
    wrap.hidden = shown === 0;
    more.hidden = exhausted;
    count.textContent = t('visits.shown', {n: shown});
  }

  more.addEventListener('click', async () => {
    more.disabled = true;
    try { addRows(await fetchMore()); } finally { more.disabled = false; }
  });
  addRows(await fetchMore());

  return h('div', {class: 'page page-visits'},
    h('div', {class: 'page-head'}, h('h1', {}, t('visits.title')), h('p', {class: 'lead'}, t('visits.lead'))),
    form, count, wrap, empty, h('div', {class: 'actions'}, more));
}

async function renderOne(ctx) {
  const id = ctx.params.id;
  const v = await get(`/api/records/visits/${encodeURIComponent(id)}`);
  ctx.setTitle(t('visits.one_title'));
  const status = statusOf(v);
  const name = nextId('review');
  const choices = ['approved', 'has_issues'].map((code) => {
    const rid = nextId('status');
    return h('div', {class: 'radio'},
      h('input', {type: 'radio', name, id: rid, value: code, checked: status === code}),
      h('label', {for: rid}, enumLabel('visits', 'review_status', code)));
  });
  const comment = h('textarea', {id: nextId('comment'), rows: '4', maxlength: String(fieldDef('visits', 'review_comment')?.max_length || 2000)});
  comment.value = v.fields?.review_comment || '';
  const error = h('p', {class: 'form-error', role: 'alert', hidden: true});
  const submit = h('button', {type: 'submit', class: 'btn btn-primary', id: 'save-review'}, t('visits.save'));
  const form = h('form', {class: 'review-form', novalidate: true},
    h('fieldset', {}, h('legend', {}, fieldLabel('visits', 'review_status')), h('div', {class: 'radios'}, choices)),
    h('div', {class: 'field'}, h('label', {for: comment.id}, fieldLabel('visits', 'review_comment')), comment,
      h('span', {class: 'hint'}, t('visits.comment_hint'))),
    error, h('div', {class: 'actions'}, submit));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    const picked = form.querySelector(`input[name="${name}"]:checked`);
    if (!picked) {
      error.textContent = t('visits.pick');
      error.hidden = false;
      return;
    }
    if (picked.value === 'has_issues' && !comment.value.trim()) {
      error.textContent = t('visits.comment_needed');
      error.hidden = false;
      comment.focus();
      return;
    }
    submit.disabled = true;
    try {
      await saveReview(id, picked.value, comment.value.trim());
      ctx.flash(t('visits.saved_msg', {status: enumLabel('visits', 'review_status', picked.value)}), 'success', {afterNavigation: true});
      ctx.rerender();
    } catch (e) {
      if (e.status === 401) return;
      error.textContent = e.message;
      error.hidden = false;
      submit.disabled = false;
    }
  });
  const hh = v.fields?.household;
  return h('div', {class: 'page page-visit'},
    h('div', {class: 'page-head'},
      h('p', {class: 'crumbs'}, h('a', {href: '#/visits'}, `← ${t('visits.back')}`)),
      h('h1', {}, t('visits.one_heading', {kind: formatValue('visits', 'kind', v.fields?.kind), when: formatUtc(v.fields?.visited_at)})),
      h('p', {class: 'meta'}, statusBadge(status), ' ', hh ? h('a', {href: `#/households/${hh}`}, t('visits.to_household')) : null)),
    h('div', {class: 'two-col'},
      section(t('visits.fields'), fieldList(v)),
      section(t('visits.review_heading'), form)),
    section(t('history.title'), historyTable(v)));
}

export function render(ctx) {
  return ctx.params.id ? renderOne(ctx) : renderList(ctx);
}
