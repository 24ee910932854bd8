// One conflict: the competing answers side by side (who, which tablet, when, where), the
// household's other answers and its recent visits; the supervisor keeps one answer or enters
// another, adds a note and resolves.
//   GET  /api/conflicts/{id}
//   POST /api/conflicts/{id}/resolve {"choice": i | "value": v, "note": "..."}

import {get, post} from '../api.js';
import {areaNameWithParent, fieldLabel, formatGeo, formatUtc, formatValue} from '../data.js';
import {h, nextId} from '../dom.js';
import {formatAge, formatDateTime, t} from '../i18n.js';
import {valueInput} from '../inputs.js';
import {badge, fieldList, forgetRecord, householdName, section, shortId, table} from './common.js';

function visitsTable(visits) {
  const rows = visits.map((v) => ({cells: [
    h('a', {href: `#/visits/${v.id}`}, formatUtc(v.fields?.visited_at)),
    formatValue('visits', 'kind', v.fields?.kind),
    v.fields?.enumerator || '—',
    formatValue('visits', 'income_observed', v.fields?.income_observed),
    v.fields?.findings || '—',
    formatValue('visits', 'review_status', v.fields?.review_status),
  ]}));
  return table(null, [
    {label: fieldLabel('visits', 'visited_at')},
    {label: fieldLabel('visits', 'kind')},
    {label: fieldLabel('visits', 'enumerator')},
    {label: fieldLabel('visits', 'income_observed')},
    {label: fieldLabel('visits', 'findings'), className: 'wide'},
    {label: fieldLabel('visits', 'review_status')},
  ], rows, {empty: t('conflict.no_visits')});
}

function valueCard(c, v, index, open, radioName) {
  const rid = nextId('choice');
  const details = h('dl', {class: 'card-facts'},
    h('div', {}, h('dt', {}, t('conflict.by')), h('dd', {}, v.by || '—')),
    // A resolved conflict keeps the values, not the tablets' details: show what is known.
    open || v.device ? h('div', {}, h('dt', {}, t('conflict.device')), h('dd', {},
      v.device ? (v.device === 'api' ? t('conflict.device_api') : shortId(v.device)) : '—',
      v.app_version ? h('span', {class: 'muted'}, ` (${v.app_version})`) : null)) : null,
    h('div', {}, h('dt', {}, t('conflict.at')), h('dd', {}, formatDateTime(v.at),
      h('span', {class: 'muted'}, ` · ${formatAge(v.at)}`))),
    open || v.gps ? h('div', {}, h('dt', {}, t('conflict.gps')), h('dd', {}, v.gps ? formatGeo(v.gps) : t('conflict.no_gps'))) : null,
    h('div', {}, h('dt', {}, t('conflict.replica')), h('dd', {class: 'mono', title: v.replica}, shortId(v.replica))));
  const valueText = formatValue(c.collection, c.field, v.value);
  const head = open
    ? h('div', {class: 'card-choice'},
        h('input', {type: 'radio', name: radioName, id: rid, value: String(index)}),
        h('label', {for: rid}, h('span', {class: 'choice-label'}, t('conflict.keep')),
          h('span', {class: 'card-value'}, valueText)))
    : h('div', {class: 'card-value'}, valueText);
  return h('article', {class: 'value-card', 'aria-label': t('conflict.answer_n', {n: index + 1})},
    h('p', {class: 'card-index'}, t('conflict.answer_n', {n: index + 1})), head, details);
}

export async function render(ctx) {
  const id = ctx.params.id;
  const data = await get(`/api/conflicts/${encodeURIComponent(id)}`);
  const c = data.conflict;
  const record = data.record;
  const label = fieldLabel(c.collection, c.field);
  ctx.setTitle(t('conflict.title', {id: c.id, field: label}));
  const open = c.status === 'open';
  const values = Array.isArray(c.values) ? c.values : [];
  const hhName = record && c.collection === 'households' ? householdName(record, c.record) : shortId(c.record);

  const head = h('div', {class: 'page-head'},
    h('p', {class: 'crumbs'}, h('a', {href: '#/conflicts'}, `← ${t('conflict.back')}`)),
    h('h1', {}, t('conflict.title', {id: c.id, field: label})),
    h('p', {class: 'meta'},
      open ? badge(t('conflicts.status_open_one'), 'warn') : badge(t('conflicts.status_resolved_one'), 'ok'),
      ' ',
      c.collection === 'households'
        ? h('a', {href: `#/households/${c.record}`}, hhName)
        : h('span', {}, `${c.collection} ${shortId(c.record)}`),
      h('span', {class: 'muted'}, ` · ${areaNameWithParent(c.area)} · ${t('conflict.opened', {when: formatDateTime(c.opened_at), age: formatAge(c.opened_at)})}`)));

  const parts = [head];

  if (open) {
    const radioName = nextId('settle');
    const cards = values.map((v, i) => valueCard(c, v, i, true, radioName));
    const otherId = nextId('choice');
    const inputId = nextId('value');
    const other = valueInput(c.collection, c.field, inputId);
    const otherRadio = h('input', {type: 'radio', name: radioName, id: otherId, value: 'other'});
    (other.focusable || other.control).addEventListener('focus', () => { otherRadio.checked = true; });
    cards.push(h('article', {class: 'value-card value-card-other'},
      h('p', {class: 'card-index'}, t('conflict.other_title')),
      h('div', {class: 'card-choice'}, otherRadio, h('label', {for: otherId}, t('conflict.other'))),
      h('div', {class: 'field'}, h('label', {for: inputId}, t('conflict.other_value', {field: label})), other.control)));

    const note = h('textarea', {id: nextId('note'), rows: '3', maxlength: '2000', name: 'note'});
    const error = h('p', {class: 'form-error', role: 'alert', hidden: true});
    const submit = h('button', {type: 'submit', class: 'btn btn-primary', id: 'resolve'}, t('conflict.resolve'));
    const form = h('form', {class: 'resolve-form', novalidate: true},
      h('fieldset', {},
        h('legend', {}, t('conflict.choose_legend', {field: label})),
        h('div', {class: 'cards'}, cards)),
      h('div', {class: 'field'}, h('label', {for: note.id}, t('conflict.note')), note,
        h('span', {class: 'hint'}, t('conflict.note_hint'))),
      error,
      h('div', {class: 'actions'}, submit));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      error.hidden = true;
      const picked = form.querySelector(`input[name="${radioName}"]:checked`);
      let body;
      try {
        if (!picked) throw new Error(t('conflict.pick_one'));
        if (picked.value === 'other') body = {value: other.read()};
        else body = {choice: Number(picked.value)};
      } catch (e) {
        error.textContent = e.message;
        error.hidden = false;
        return;
      }
      if (note.value.trim()) body.note = note.value.trim();
      submit.disabled = true;
      try {
        const res = await post(`/api/conflicts/${encodeURIComponent(c.id)}/resolve`, body);
        forgetRecord(c.collection, c.record);
        const settled = formatValue(c.collection, c.field, res.conflict?.resolution);
        ctx.flash(t('conflict.resolved_msg', {id: c.id, field: label, value: settled}), 'success', {afterNavigation: true});
        ctx.rerender();
      } catch (e) {
        if (e.status === 401) return;
        error.textContent = e.message;
        error.hidden = false;
        submit.disabled = false;
      }
    });
    parts.push(h('section', {class: 'panel'}, h('h2', {}, t('conflict.competing', {n: values.length})),
      h('p', {class: 'lead'}, t('conflict.explain')), form));
  } else {
    const resolution = h('dl', {class: 'fields'},
      h('div', {class: 'field-row'}, h('dt', {}, t('conflict.settled_value')),
        h('dd', {class: 'settled-value'}, formatValue(c.collection, c.field, c.resolution))),
      h('div', {class: 'field-row'}, h('dt', {}, t('conflict.resolved_by')), h('dd', {}, c.resolved_by || '—')),
      h('div', {class: 'field-row'}, h('dt', {}, t('conflict.resolved_at')), h('dd', {}, formatDateTime(c.resolved_at))),
      h('div', {class: 'field-row'}, h('dt', {}, t('conflict.note')), h('dd', {class: 'note-text'}, c.note || '—')));
    parts.push(section(t('conflict.resolution'), resolution));
    if (values.length) {
      parts.push(section(t('conflict.were_competing'),
        h('div', {class: 'cards'}, values.map((v, i) => valueCard(c, v, i, false)))));
    }
  }

  if (record) {
    parts.push(section(t('conflict.household_fields'),
      h('p', {class: 'lead'}, t('conflict.household_lead')),
      fieldList(record, {skip: [c.field]})));
  } else {
    parts.push(section(t('conflict.household_fields'), h('p', {class: 'empty'}, t('conflict.record_hidden'))));
  }
  parts.push(section(t('conflict.recent_visits'), visitsTable(data.visits || [])));
  return h('div', {class: 'page page-conflict', 'data-status': c.status}, parts);
}
