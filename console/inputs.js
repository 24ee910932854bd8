// Typed inputs for a field's value, following the survey schema: an enum becomes a select with
// the codes' labels in the current language, an integer a number input with the schema's
// bounds, a date a date input, and so on. read() returns the JSON value to send, or throws an
// Error whose message says what is wrong (shown next to the form).

import {areaName, areasInScope, enumLabel, fieldDef} from './data.js';
import {h} from './dom.js';
import {t} from './i18n.js';

function pad(n) { return String(n).padStart(2, '0'); }

export function valueInput(coll, name, id) {
  if (name === '_deleted') {
    const control = h('select', {id},
      h('option', {value: ''}, t('input.choose')),
      h('option', {value: 'false'}, t('value.kept')),
      h('option', {value: 'true'}, t('value.deleted')));
    return {control, read: () => {
      if (!control.value) throw new Error(t('input.required'));
      return control.value === 'true';
    }};
  }
  const def = fieldDef(coll, name) || {type: 'text'};
  switch (def.type) {
    case 'enum': {
      const control = h('select', {id}, h('option', {value: ''}, t('input.choose')),
        (def.values || []).map((v) => h('option', {value: v.code}, enumLabel(coll, name, v.code))));
      return {control, read: () => {
        if (!control.value) throw new Error(t('input.required'));
        return control.value;
      }};
    }
    case 'boolean': {
      const control = h('select', {id}, h('option', {value: ''}, t('input.choose')),
        h('option', {value: 'true'}, t('value.yes')), h('option', {value: 'false'}, t('value.no')));
      return {control, read: () => {
        if (!control.value) throw new Error(t('input.required'));
        return control.value === 'true';
      }};
    }
    case 'integer':
    case 'counter': {
      const control = h('input', {id, type: 'number', step: '1', inputmode: 'numeric',
                                  min: def.min ?? null, max: def.max ?? null});
      return {control, read: () => {
        const text = control.value.trim();
        if (!/^-?\d+$/.test(text)) throw new Error(t('input.integer'));
        const n = Number(text);
        if (def.min !== undefined && n < def.min) throw new Error(t('input.min', {n: def.min}));
        if (def.max !== undefined && n > def.max) throw new Error(t('input.max', {n: def.max}));
        return n;
      }};
    }
    case 'date': {
      const control = h('input', {id, type: 'date'});
      return {control, read: () => {
        if (!/^\d{4}-\d{2}-\d{2}$/.test(control.value)) throw new Error(t('input.date'));
        return control.value;
      }};
    }
    case 'datetime': {
      const control = h('input', {id, type: 'datetime-local', step: '1'});
      return {control, read: () => {
        const d = new Date(control.value);
        if (!control.value || Number.isNaN(d.getTime())) throw new Error(t('input.datetime'));
        return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}T${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}Z`;
      }};
    }
    case 'geo': {
      const lat = h('input', {id, type: 'number', step: 'any', min: '-90', max: '90', 'aria-label': t('input.lat')});
      const lon = h('input', {type: 'number', step: 'any', min: '-180', max: '180', 'aria-label': t('input.lon')});
      const control = h('span', {class: 'geo-input'}, lat, lon);
      return {control, focusable: lat, read: () => {
        const a = Number(lat.value);
        const b = Number(lon.value);
        if (lat.value === '' || lon.value === '' || Math.abs(a) > 90 || Math.abs(b) > 180) throw new Error(t('input.geo'));
        return {lat: a, lon: b};
      }};
    }
    case 'area': {
      const control = h('select', {id}, h('option', {value: ''}, t('input.choose')),
        areasInScope().map((a) => h('option', {value: a.code}, `${'\u00a0\u00a0'.repeat(a.depth)}${areaName(a.code)}`)));
      return {control, read: () => {
        if (!control.value) throw new Error(t('input.required'));
        return control.value;
      }};
    }
    default: {
      const control = h('input', {id, type: 'text', maxlength: def.max_length ?? null});
      return {control, read: () => {
        const v = control.value.trim();
        if (!v) throw new Error(t('input.required'));
        if (def.min_length && [...v].length < def.min_length) throw new Error(t('input.min_length', {n: def.min_length}));
        return v;
      }};
    }
  }
}
