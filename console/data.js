// What every page needs after sign-in: the survey schema (field types, en/zh labels of fields
// and answer codes) and the area tree (names in both languages). Loaded once per session.

import {get} from './api.js';
import {pick, t, formatDateTime} from './i18n.js';

let schema = null;   // the schema document: {name, version, collections: [...]}
let areas = [];      // [{code, parent, level, name_en, name_zh}]
let areaByCode = new Map();
let scope = [];      // the user's area codes (admin: every root)

export async function loadSessionData() {
  const [s, a, me] = await Promise.all([get('/api/schema'), get('/api/areas'), get('/api/me')]);
  schema = s.document;
  areas = a.areas || [];
  areaByCode = new Map(areas.map((x) => [x.code, x]));
  scope = me.scope || [];
  return me;
}

export function resetSessionData() {
  schema = null;
  areas = [];
  areaByCode = new Map();
  scope = [];
}

export function getSchema() { return schema; }
export function getScope() { return scope; }

export function collection(name) {
  return schema?.collections?.find((c) => c.name === name) || null;
}

export function fieldDef(coll, name) {
  return collection(coll)?.fields?.find((f) => f.name === name) || null;
}

export function collectionLabel(coll) {
  return pick(collection(coll)?.title, coll);
}

/** The field's label in the current language; `_deleted` is the record's deletion. */
export function fieldLabel(coll, name) {
  if (name === '_deleted') return t('field.deleted');
  return pick(fieldDef(coll, name)?.label, name);
}

export function enumLabel(coll, name, code) {
  const def = fieldDef(coll, name);
  const v = def?.values?.find((x) => x.code === code);
  return v ? pick(v.label, code) : String(code);
}

/** Every field with merge rule "review" in any collection (what can be in conflict). */
export function reviewFields() {
  const seen = new Map();
  for (const c of schema?.collections || []) {
    for (const f of c.fields || []) {
      if (f.merge === 'review' && !seen.has(f.name)) seen.set(f.name, {collection: c.name, field: f});
    }
  }
  return [...seen.values()];
}

// --- Areas ----------------------------------------------------------------------------------

export function area(code) { return areaByCode.get(code) || null; }

export function areaName(code) {
  const a = areaByCode.get(code);
  if (!a) return code || '—';
  return pick({en: a.name_en, zh: a.name_zh}, code);
}

/** "Longhuqu Village (Altan Xire Town)": the name with its parent's, for lists. */
export function areaNameWithParent(code) {
  const a = areaByCode.get(code);
  if (!a) return code || '—';
  const parent = a.parent ? areaByCode.get(a.parent) : null;
  if (!parent || !parent.parent) return areaName(code);
  return `${areaName(code)} · ${areaName(parent.code)}`;
}

export function contains(outer, inner) {
  return inner === outer || inner.startsWith(`${outer}/`);
}

/** Areas inside the user's scope, in tree order, each with its depth below the scope root. */
export function areasInScope() {
  const out = [];
  for (const a of [...areas].sort((x, y) => x.code.localeCompare(y.code))) {
    const root = scope.find((r) => contains(r, a.code));
    if (!root) continue;
    const depth = a.code.split('/').length - root.split('/').length;
    out.push({...a, depth});
  }
  return out;
}

/** Options for an area <select>: "all my areas" then the tree, indented. */
export function areaOptions() {
  const opts = [{value: '', label: t('filter.all_areas')}];
  for (const a of areasInScope()) {
    opts.push({value: a.code, label: `${'\u00a0\u00a0'.repeat(a.depth)}${areaName(a.code)}`});
  }
  return opts;
}

// --- Values ---------------------------------------------------------------------------------

export function formatGeo(v) {
  if (!v || typeof v !== 'object') return '—';
  const lat = Number(v.lat).toFixed(5);
  const lon = Number(v.lon).toFixed(5);
  return `${lat}, ${lon}`;
}

/** A unit of the schema ("persons", "CNY/year") in the current language, when known. */
export function unitLabel(unit) {
  const key = `unit.${unit}`;
  const text = t(key);
  return text === key ? unit : text;
}

/** Date-time fields are UTC in the survey ("Visited at (UTC)"): shown as UTC. */
export function formatUtc(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

/** A field's value as text for display, typed by the schema. */
export function formatValue(coll, name, value) {
  if (value === undefined || value === null || value === '') return '—';
  if (name === '_deleted') return value ? t('value.deleted') : t('value.kept');
  const def = fieldDef(coll, name);
  const type = def?.type;
  if (Array.isArray(value)) {
    if (value.length === 0) return '—';
    return value.map((v) => (def?.values ? enumLabel(coll, name, v) : String(v))).join(', ');
  }
  switch (type) {
    case 'enum': return enumLabel(coll, name, value);
    case 'boolean': return value ? t('value.yes') : t('value.no');
    case 'geo': return formatGeo(value);
    case 'area': return areaName(value);
    case 'datetime': return formatUtc(value);
    case 'integer':
    case 'counter': {
      const unit = def?.unit ? ` ${unitLabel(def.unit)}` : '';
      return `${new Intl.NumberFormat().format(value)}${unit}`;
    }
    default:
      if (typeof value === 'object') return JSON.stringify(value);
      return String(value);
  }
}

/** 150202198001011234 -> 150202********1234 (lists show less than the detail page). */
export function maskId(text) {
  if (typeof text !== 'string' || text.length < 10) return text || '—';
  return `${text.slice(0, 6)}${'*'.repeat(text.length - 10)}${text.slice(-4)}`;
}
