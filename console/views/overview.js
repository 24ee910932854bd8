// Overview: households by poverty status per village, and visits per day (last 60 days), as
// SVG charts with the same numbers in tables.   GET /api/overview?area=

import {get} from '../api.js';
import {areaName, areaNameWithParent, areaOptions, enumLabel} from '../data.js';
import {dailyBars, stackedBars} from '../charts.js';
import {field, h, select} from '../dom.js';
import {formatNumber, t} from '../i18n.js';
import {section, table} from './common.js';

function statusLabel(code) {
  return code === 'unknown' ? t('overview.unknown') : enumLabel('households', 'poverty_status', code);
}

export async function render(ctx) {
  const area = ctx.query.get('area') || '';
  ctx.setTitle(t('overview.title'));
  const data = await get('/api/overview', {area});
  const hh = data.households || {statuses: [], villages: [], totals: {}};
  const statuses = hh.statuses || [];
  const villages = [...(hh.villages || [])].sort((a, b) => a.area.localeCompare(b.area));

  const areaSel = select(areaOptions(), area, {name: 'area'});
  const form = h('form', {class: 'filters', role: 'search', 'aria-label': t('filter.label')},
    field(t('filter.area'), areaSel).wrap,
    h('div', {class: 'filter-actions'}, h('button', {type: 'submit', class: 'btn btn-primary'}, t('filter.apply'))));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    ctx.navigate('overview', {area: areaSel.value});
  });

  const grand = statuses.reduce((n, k) => n + (hh.totals?.[k] || 0), 0);
  const legend = h('ul', {class: 'legend'}, statuses.map((k) =>
    h('li', {}, h('span', {class: `swatch seg-${k}`, 'aria-hidden': 'true'}), `${statusLabel(k)} (${formatNumber(hh.totals?.[k] || 0)})`)));
  const chart = villages.length ? stackedBars({
    title: t('overview.by_status'),
    desc: t('overview.by_status_desc'),
    rows: villages.map((v) => ({
      label: areaName(v.area),
      segments: statuses.map((k) => ({key: k, value: v.counts?.[k] || 0, label: statusLabel(k)})),
    })),
  }) : h('p', {class: 'empty'}, t('overview.no_households'));
  const statusTable = table(t('overview.table_caption'), [
    {label: t('conflicts.col_village')}, ...statuses.map((k) => ({label: statusLabel(k), className: 'num'})),
    {label: t('overview.total'), className: 'num'},
  ], villages.map((v) => ({header: true, cells: [areaNameWithParent(v.area),
    ...statuses.map((k) => formatNumber(v.counts?.[k] || 0)), formatNumber(v.total)]})), {empty: t('overview.no_households')});

  const days = data.visits?.days || [];
  const visitsChart = dailyBars({title: t('overview.visits'), desc: t('overview.visits_desc'), days});
  const nonZero = days.filter((d) => d.count > 0);

  return h('div', {class: 'page page-overview'},
    h('div', {class: 'page-head'}, h('h1', {}, t('overview.title')), h('p', {class: 'lead'}, t('overview.lead'))),
    form,
    h('div', {class: 'stat-row'},
      h('div', {class: 'stat'}, h('span', {class: 'stat-n'}, formatNumber(grand)), h('span', {class: 'stat-l'}, t('overview.households_total'))),
      h('div', {class: 'stat'}, h('span', {class: 'stat-n'}, formatNumber(villages.length)), h('span', {class: 'stat-l'}, t('overview.villages'))),
      h('div', {class: 'stat'}, h('span', {class: 'stat-n'}, formatNumber(data.visits?.total || 0)), h('span', {class: 'stat-l'}, t('overview.visits_total')))),
    section(t('overview.by_status'), legend, h('figure', {class: 'chart-box'}, chart), h('details', {}, h('summary', {}, t('overview.show_numbers')), statusTable)),
    section(t('overview.visits'), h('figure', {class: 'chart-box'}, visitsChart),
      h('details', {}, h('summary', {}, t('overview.show_numbers')),
        table(null, [{label: t('overview.date')}, {label: t('overview.count'), className: 'num'}],
          nonZero.map((d) => ({cells: [d.date, formatNumber(d.count)]})), {empty: t('overview.no_visits')}))));
}
