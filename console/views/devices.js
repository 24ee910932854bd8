// Tablets and enumerators: last sync, app version, records sent, open conflicts in the
// enumerator's areas.   GET /api/devices

import {get} from '../api.js';
import {h} from '../dom.js';
import {ageDays, formatAge, formatDateTime, formatNumber, t} from '../i18n.js';
import {badge, shortId, table} from './common.js';

const STALE_DAYS = 7;

export async function render(ctx) {
  ctx.setTitle(t('devices.title'));
  const data = await get('/api/devices');
  const devices = [...(data.devices || [])].sort((a, b) =>
    String(a.user).localeCompare(String(b.user)) || String(b.last_seen).localeCompare(String(a.last_seen)));
  const rows = devices.map((d) => {
    const stale = ageDays(d.last_seen) >= STALE_DAYS;
    return {className: stale ? 'is-stale' : null, header: true, cells: [
      h('span', {}, d.display_name || d.user || '—', h('br'), h('span', {class: 'muted mono'}, d.user || '')),
      h('span', {class: 'mono', title: d.id}, shortId(d.id)),
      d.app_version || '—',
      h('span', {}, formatDateTime(d.last_seen), h('br'),
        h('span', {class: 'muted'}, formatAge(d.last_seen)), stale ? ' ' : null,
        stale ? badge(t('devices.stale', {n: STALE_DAYS}), 'warn') : null),
      h('span', {class: 'num'}, formatNumber(d.records_sent)),
      d.open_conflicts > 0
        ? h('a', {href: '#/conflicts'}, badge(formatNumber(d.open_conflicts), 'warn'))
        : h('span', {class: 'num'}, '0'),
    ]};
  });
  return h('div', {class: 'page page-devices'},
    h('div', {class: 'page-head'}, h('h1', {}, t('devices.title')), h('p', {class: 'lead'}, t('devices.lead'))),
    h('p', {class: 'summary'}, t('devices.count', {n: devices.length})),
    table(t('devices.caption'), [
      {label: t('devices.user')}, {label: t('devices.device')}, {label: t('devices.app')},
      {label: t('devices.last_seen')},
      {label: t('devices.sent'), className: 'num'}, {label: t('devices.conflicts'), className: 'num'},
    ], rows, {empty: t('devices.none')}));
}
