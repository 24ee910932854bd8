// Pieces shared by the pages: record look-ups with a short cache, tables, pagers, badges.

import {get} from '../api.js';
import {areaNameWithParent, collection, fieldLabel, formatValue} from '../data.js';
import {h} from '../dom.js';
import {t} from '../i18n.js';

const cache = new Map();   // "collection/id" -> {at, promise}
const TTL_MS = 60000;

/** GET /api/records/{collection}/{id}, cached for a minute (null when not visible). */
export function fetchRecord(coll, id) {
  const key = `${coll}/${id}`;
  const hit = cache.get(key);
  if (hit && Date.now() - hit.at < TTL_MS) return hit.promise;
  const promise = get(`/api/records/${encodeURIComponent(coll)}/${encodeURIComponent(id)}`)
    .catch((e) => {
      if (e.status === 401) throw e;
      return null;
    });
  cache.set(key, {at: Date.now(), promise});
  return promise;
}

export function forgetRecord(coll, id) { cache.delete(`${coll}/${id}`); }
export function forgetAll() { cache.clear(); }

/** "Bater" or the short id when the household has no head name. */
export function householdName(record, id) {
  const name = record?.fields?.head_name;
  if (name) return name;
  return shortId(id || record?.id);
}

export function shortId(id) {
  if (!id) return '—';
  return String(id).slice(0, 8);
}

/**
 * Fills `cell` with a link to the household once its record is known. Runs `limit` look-ups at
 * a time; the page stays usable meanwhile.
 */
export function fillHouseholdNames(items, isCurrent, limit = 4) {
  const queue = [...items];
  const worker = async () => {
    while (queue.length && isCurrent()) {
      const {id, cell} = queue.shift();
      const rec = await fetchRecord('households', id).catch(() => null);
      if (!isCurrent()) return;
      cell.textContent = '';
      cell.appendChild(h('a', {href: `#/households/${id}`}, householdName(rec, id)));
    }
  };
  return Promise.all(Array.from({length: limit}, worker));
}

/** A table: columns [{label, className}], rows of cells (nodes or text). */
export function table(caption, columns, rows, {empty, className} = {}) {
  if (!rows.length) return h('p', {class: 'empty'}, empty || t('list.empty'));
  return h('div', {class: 'table-wrap'},
    h('table', {class: ['data', className]},
      h('caption', {class: caption ? '' : 'visually-hidden'}, caption || ''),
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', {scope: 'col', class: c.className}, c.label)))),
      h('tbody', {}, rows.map((r) => h('tr', {class: r.className}, r.cells.map((c, i) =>
        (i === 0 && r.header ? h('th', {scope: 'row'}, c) : h('td', {class: columns[i]?.className}, c))))))));
}

export function badge(text, kind) {
  return h('span', {class: ['badge', kind && `badge-${kind}`]}, text);
}

/** Previous / next links for offset paging inside a route. */
export function pager({offset, limit, total, go}) {
  if (total <= limit && offset === 0) return null;
  const from = total === 0 ? 0 : offset + 1;
  const to = Math.min(offset + limit, total);
  const prev = h('button', {type: 'button', class: 'btn', disabled: offset === 0,
                            on: {click: () => go(Math.max(0, offset - limit))}}, t('pager.prev'));
  const next = h('button', {type: 'button', class: 'btn', disabled: to >= total,
                            on: {click: () => go(offset + limit)}}, t('pager.next'));
  return h('nav', {class: 'pager', 'aria-label': t('pager.label')},
    prev, h('span', {class: 'pager-pos'}, t('pager.position', {from, to, total})), next);
}

/** The fields of a record as a definition list, in schema order, conflicts flagged. */
export function fieldList(record, {skip = [], conflictLinks = {}} = {}) {
  const coll = collection(record.collection);
  const names = coll ? coll.fields.map((f) => f.name) : Object.keys(record.fields || {});
  for (const k of Object.keys(record.fields || {})) if (!names.includes(k)) names.push(k);
  const dl = h('dl', {class: 'fields'});
  for (const name of names) {
    if (skip.includes(name)) continue;
    const value = record.fields?.[name];
    const competing = record.conflicts?.[name];
    const def = coll?.fields?.find((f) => f.name === name);
    let dd;
    if (def?.type === 'reference' && def.target === 'households' && typeof value === 'string') {
      // A link to the household, named once its record is known.
      const cell = h('span', {}, h('a', {href: `#/households/${value}`}, shortId(value)));
      dd = h('dd', {}, cell);
      fillHouseholdNames([{id: value, cell}], () => true, 1);
    } else {
      dd = h('dd', {}, formatValue(record.collection, name, value));
    }
    if (competing) {
      dd.appendChild(document.createTextNode(' '));
      dd.appendChild(badge(t('conflict.flag'), 'warn'));
      const values = competing.map((c) => formatValue(record.collection, name, c.value)).join(' / ');
      dd.appendChild(h('span', {class: 'competing'}, ` ${t('conflict.competing_short')}: ${values}`));
      if (conflictLinks[name]) {
        dd.appendChild(document.createTextNode(' '));
        dd.appendChild(h('a', {href: `#/conflicts/${conflictLinks[name]}`}, t('conflict.open_link')));
      }
    }
    dl.appendChild(h('div', {class: ['field-row', competing && 'has-conflict']},
      h('dt', {}, fieldLabel(record.collection, name)), dd));
  }
  return dl;
}

export function areaCell(code) {
  return h('span', {title: code}, areaNameWithParent(code));
}

/** A titled section. */
export function section(title, ...children) {
  return h('section', {class: 'panel'}, h('h2', {}, title), ...children);
}
