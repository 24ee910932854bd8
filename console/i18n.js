// Interface text in English and Chinese. The strings live in i18n/en.json and i18n/zh.json;
// labels of survey fields and answer codes come from the schema (schema.js), not from here.
// The chosen language persists in localStorage ("fieldsync.lang").

const LANG_KEY = 'fieldsync.lang';
const LANGS = ['en', 'zh'];
const tables = {};
let lang = 'en';

export async function loadLanguages() {
  await Promise.all(LANGS.map(async (l) => {
    const res = await fetch(`i18n/${l}.json`, {cache: 'no-cache', credentials: 'omit'});
    if (!res.ok) throw new Error(`i18n/${l}.json: HTTP ${res.status}`);
    tables[l] = await res.json();
  }));
  let saved = null;
  try { saved = localStorage.getItem(LANG_KEY); } catch { /* storage disabled */ }
  if (!saved) saved = (navigator.language || '').toLowerCase().startsWith('zh') ? 'zh' : 'en';
  setLanguage(LANGS.includes(saved) ? saved : 'en', false);
}

export function language() { return lang; }

export function setLanguage(l, persist = true) {
  lang = LANGS.includes(l) ? l : 'en';
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
  if (persist) {
    try { localStorage.setItem(LANG_KEY, lang); } catch { /* storage disabled */ }
  }
}

/** t('conflicts.title', {n: 3}) -> the text in the current language ({n} replaced). */
export function t(key, params) {
  let s = tables[lang]?.[key] ?? tables.en?.[key] ?? key;
  if (params) s = s.replace(/\{(\w+)\}/g, (m, k) => (k in params ? String(params[k]) : m));
  return s;
}

/** A {en, zh} label object in the current language (falling back to the other, then `fallback`). */
export function pick(labels, fallback = '') {
  if (!labels) return fallback;
  if (typeof labels === 'string') return labels;
  return labels[lang] || labels.en || labels.zh || fallback;
}

/** Locale for Intl formatting. */
export function locale() { return lang === 'zh' ? 'zh-CN' : 'en-GB'; }

export function formatNumber(n) {
  if (n === null || n === undefined || n === '') return '—';
  return new Intl.NumberFormat(locale()).format(n);
}

function pad(n) { return String(n).padStart(2, '0'); }

/** "2024-05-01 14:03" in the browser's time zone. */
export function formatDateTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** "3 days ago", "today", "in the future" (for a clock that is ahead). */
export function formatAge(iso, now = Date.now()) {
  if (!iso) return '';
  const ms = now - new Date(iso).getTime();
  if (Number.isNaN(ms)) return '';
  if (ms < -60000) return t('age.future');
  const minutes = Math.floor(ms / 60000);
  if (minutes < 60) return t('age.minutes', {n: Math.max(minutes, 0)});
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return t('age.hours', {n: hours});
  return t('age.days', {n: Math.floor(hours / 24)});
}

export function ageDays(iso, now = Date.now()) {
  const ms = now - new Date(iso).getTime();
  return Number.isNaN(ms) ? 0 : Math.floor(ms / 86400000);
}
