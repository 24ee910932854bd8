// SVG charts drawn by the page itself (no library, no external assets). Colours come from
// style.css classes, so the CSP needs no inline styles. Each chart has a <title> and <desc>
// and the page also shows the numbers as a table.

import {s} from './dom.js';
import {formatNumber} from './i18n.js';

/**
 * Horizontal stacked bars: rows [{label, segments: [{key, value, label}]}].
 * keys name CSS classes "seg-<key>".
 */
export function stackedBars({title, desc, rows, width = 760}) {
  const rowH = 28;
  const gap = 10;
  const left = 190;
  const right = 60;
  const top = 8;
  const height = top + rows.length * (rowH + gap) + 10;
  const max = Math.max(1, ...rows.map((r) => r.segments.reduce((n, x) => n + x.value, 0)));
  const scale = (width - left - right) / max;
  const svg = s('svg', {viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img', width: '100%',
                        preserveAspectRatio: 'xMinYMin meet'},
    s('title', {}, title), s('desc', {}, desc));
  rows.forEach((r, i) => {
    const y = top + i * (rowH + gap);
    svg.appendChild(s('text', {x: left - 8, y: y + rowH / 2 + 5, class: 'chart-label', 'text-anchor': 'end'}, r.label));
    let x = left;
    let total = 0;
    for (const seg of r.segments) {
      if (!seg.value) continue;
      const w = seg.value * scale;
      svg.appendChild(s('rect', {x, y, width: Math.max(w, 1), height: rowH, class: `seg seg-${seg.key}`},
        s('title', {}, `${r.label} — ${seg.label}: ${formatNumber(seg.value)}`)));
      if (w > 22) {
        svg.appendChild(s('text', {x: x + w / 2, y: y + rowH / 2 + 5, class: 'seg-text', 'text-anchor': 'middle'}, formatNumber(seg.value)));
      }
      x += w;
      total += seg.value;
    }
    svg.appendChild(s('text', {x: x + 6, y: y + rowH / 2 + 5, class: 'chart-total'}, formatNumber(total)));
  });
  return svg;
}

/** Vertical bars over days: days [{date: 'YYYY-MM-DD', count}]. */
export function dailyBars({title, desc, days, width = 760, height = 220}) {
  const left = 40;
  const bottom = 36;
  const top = 12;
  const right = 10;
  const max = Math.max(1, ...days.map((d) => d.count));
  const niceMax = max <= 5 ? 5 : Math.ceil(max / 5) * 5;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const barW = plotW / Math.max(days.length, 1);
  const svg = s('svg', {viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img', width: '100%',
                        preserveAspectRatio: 'xMinYMin meet'},
    s('title', {}, title), s('desc', {}, desc));
  for (let i = 0; i <= 5; i++) {
    const v = (niceMax / 5) * i;
    const y = top + plotH - (v / niceMax) * plotH;
    svg.appendChild(s('line', {x1: left, x2: width - right, y1: y, y2: y, class: 'grid'}));
    svg.appendChild(s('text', {x: left - 6, y: y + 4, class: 'axis-label', 'text-anchor': 'end'}, formatNumber(v)));
  }
  days.forEach((d, i) => {
    const hgt = (d.count / niceMax) * plotH;
    const x = left + i * barW;
    if (d.count > 0) {
      svg.appendChild(s('rect', {x: x + 1, y: top + plotH - hgt, width: Math.max(barW - 2, 1), height: hgt, class: 'bar'},
        s('title', {}, `${d.date}: ${formatNumber(d.count)}`)));
    }
    if (i % 7 === 0 || i === days.length - 1) {
      svg.appendChild(s('text', {x: x + barW / 2, y: height - bottom + 16, class: 'axis-label', 'text-anchor': 'middle'}, d.date.slice(5)));
    }
  });
  svg.appendChild(s('line', {x1: left, x2: width - right, y1: top + plotH, y2: top + plotH, class: 'axis'}));
  return svg;
}
