// fieldsync supervisor console: boot, hash routing, header, sign-in and sign-out.
//
// Routes (hash, so the server only ever serves static files):
//   #/signin                 sign-in form
//   #/conflicts[?area=&field=&age=&offset=]   the conflict queue, oldest first
//   #/conflicts/<id>         one conflict: competing values, resolve
//   #/visits[?status=&area=&kind=]            visits to review
//   #/visits/<id>            one visit: approve / has issues, comment
//   #/households[?q=&area=&status=]           search households
//   #/households/<id>        one household: fields, members, visits, change history
//   #/devices                tablets and enumerators
//   #/overview[?area=]       charts: households by poverty status, visits per day

import * as api from './api.js';
import {loadSessionData, resetSessionData} from './data.js';
import {clear, h} from './dom.js';
import {language, loadLanguages, setLanguage, t} from './i18n.js';
import * as conflicts from './views/conflicts.js';
import * as conflict from './views/conflict.js';
import * as devices from './views/devices.js';
import * as households from './views/households.js';
import * as overview from './views/overview.js';
import * as signin from './views/signin.js';
import * as visits from './views/visits.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const flashArea = document.getElementById('flash');
const who = document.getElementById('who');
const signOutButton = document.getElementById('sign-out');
const langSelect = document.getElementById('lang-select');

const NAV = [
  {route: 'conflicts', key: 'nav.conflicts'},
  {route: 'visits', key: 'nav.visits'},
  {route: 'households', key: 'nav.households'},
  {route: 'devices', key: 'nav.devices'},
  {route: 'overview', key: 'nav.overview'},
];

let sessionReady = false;   // schema and areas loaded for the current session
let renderSeq = 0;          // increases with every navigation; stale async renders check it
let pendingFlash = null;    // a message to show after the next navigation
let returnTo = null;        // where to go after signing in

// --- Messages -------------------------------------------------------------------------------

/** Shows a message in the live region. kind: success | error | info. */
export function flash(text, kind = 'info', {afterNavigation = false} = {}) {
  if (afterNavigation) {
    pendingFlash = {text, kind};
    return;
  }
  clear(flashArea);
  if (!text) return;
  flashArea.appendChild(h('p', {class: ['flash', `flash-${kind}`], 'data-kind': kind}, text));
}

// --- Routing --------------------------------------------------------------------------------

function parseHash() {
  const raw = window.location.hash.replace(/^#\/?/, '');
  const [path, qs] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  return {parts, query: new URLSearchParams(qs || '')};
}

export function navigate(route, query) {
  let hash = `#/${route}`;
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
    const qs = q.toString();
    if (qs) hash += `?${qs}`;
  }
  if (window.location.hash === hash) render();
  else window.location.hash = hash;
}

function setTitle(title) {
  document.title = `${title} — fieldsync`;
}

function updateChrome() {
  const s = api.currentSession();
  document.getElementById('brand-text').textContent = t('app.title');
  document.getElementById('lang-label').textContent = t('app.language');
  document.getElementById('skip-link').textContent = t('app.skip');
  document.getElementById('foot').textContent = t('app.footer');
  signOutButton.textContent = t('app.sign_out');
  langSelect.value = language();
  const signedIn = Boolean(s && sessionReady);
  nav.hidden = !signedIn;
  who.hidden = !signedIn;
  signOutButton.hidden = !s;
  nav.setAttribute('aria-label', t('nav.label'));
  clear(nav);
  if (signedIn) {
    const current = parseHash().parts[0] || 'conflicts';
    const ul = h('ul');
    for (const item of NAV) {
      const a = h('a', {href: `#/${item.route}`}, t(item.key));
      if (item.route === current) a.setAttribute('aria-current', 'page');
      ul.appendChild(h('li', {}, a));
    }
    nav.appendChild(ul);
    who.textContent = `${s.user.display_name || s.user.name} · ${t(`role.${s.user.role}`)}`;
    who.title = s.user.name;
  }
}

async function ensureSessionData() {
  if (sessionReady) return;
  const me = await loadSessionData();
  const s = api.currentSession();
  if (s && me?.user) api.setSession({...s, user: me.user});
  sessionReady = true;
}

function viewFor(parts) {
  const [first, second] = parts;
  switch (first) {
    case 'conflicts': return second ? {view: conflict, params: {id: second}} : {view: conflicts};
    case 'visits': return {view: visits, params: {id: second}};
    case 'households': return {view: households, params: {id: second}};
    case 'devices': return {view: devices};
    case 'overview': return {view: overview};
    default: return null;
  }
}

async function render() {
  const seq = ++renderSeq;
  const {parts, query} = parseHash();
  const session = api.currentSession();

  if (pendingFlash) {
    flash(pendingFlash.text, pendingFlash.kind);
    pendingFlash = null;
  } else {
    flash('');
  }

  if (!session || parts[0] === 'signin') {
    if (session && parts[0] === 'signin') {
      navigate('conflicts');
      return;
    }
    if (parts.length && parts[0] !== 'signin') returnTo = window.location.hash;
    sessionReady = false;
    updateChrome();
    const node = signin.render({onSignedIn});
    clear(main).appendChild(node);
    setTitle(t('signin.title'));
    if (parts[0] !== 'signin') history.replaceState(null, '', '#/signin');
    const first = main.querySelector('input');
    if (first) first.focus();
    return;
  }

  try {
    await ensureSessionData();
  } catch (e) {
    if (seq !== renderSeq) return;
    if (e.status === 401) return;   // the expiry handler took over
    clear(main).appendChild(h('div', {class: 'panel'},
      h('h1', {tabindex: '-1'}, t('error.title')),
      h('p', {class: 'error-text'}, `${t('error.load')} ${e.message}`),
      h('button', {type: 'button', class: 'btn', on: {click: () => render()}}, t('action.retry'))));
    return;
  }
  if (seq !== renderSeq) return;
  updateChrome();

  const role = api.currentSession().user.role;
  if (role !== 'supervisor' && role !== 'admin') {
    clear(main).appendChild(h('div', {class: 'panel'},
      h('h1', {tabindex: '-1'}, t('role.not_for_you_title')),
      h('p', {}, t('role.not_for_you', {role: t(`role.${role}`)}))));
    setTitle(t('role.not_for_you_title'));
    return;
  }

  let target = viewFor(parts);
  if (!target) {
    history.replaceState(null, '', '#/conflicts');
    target = {view: conflicts};
    updateChrome();
  }
  const ctx = {
    params: target.params || {},
    query,
    navigate,
    flash,
    rerender: render,
    isCurrent: () => seq === renderSeq,
    setTitle,
  };
  const loading = h('p', {class: 'loading', role: 'status'}, t('app.loading'));
  clear(main).appendChild(loading);
  let node;
  try {
    node = await target.view.render(ctx);
  } catch (e) {
    if (seq !== renderSeq) return;
    if (e.status === 401) return;
    node = h('div', {class: 'panel'},
      h('h1', {tabindex: '-1'}, e.status === 404 ? t('error.not_found') : t('error.title')),
      h('p', {class: 'error-text'}, e.message),
      h('p', {}, h('a', {href: '#/conflicts'}, t('error.back'))));
    setTitle(t('error.title'));
  }
  if (seq !== renderSeq) return;
  clear(main).appendChild(node);
  // Move focus to the page heading, so keyboard and screen-reader users start at the top.
  const heading = main.querySelector('h1');
  if (heading) {
    heading.setAttribute('tabindex', '-1');
    heading.focus({preventScroll: false});
  }
}

async function onSignedIn() {
  sessionReady = false;
  resetSessionData();
  const dest = returnTo && !returnTo.startsWith('#/signin') ? returnTo : '#/conflicts';
  returnTo = null;
  if (window.location.hash === dest) render();
  else window.location.hash = dest;
}

async function signOut() {
  signOutButton.disabled = true;
  try {
    await api.logout();
    flash(t('signin.signed_out'), 'success', {afterNavigation: true});
  } catch (e) {
    flash(`${t('signin.sign_out_failed')} ${e.message}`, 'error', {afterNavigation: true});
  } finally {
    signOutButton.disabled = false;
    sessionReady = false;
    resetSessionData();
    returnTo = null;
    if (window.location.hash === '#/signin') render();
    else window.location.hash = '#/signin';
  }
}

// --- Boot -----------------------------------------------------------------------------------

async function boot() {
  await loadLanguages();
  api.loadSession();
  api.setExpiredHandler((message) => {
    sessionReady = false;
    resetSessionData();
    const hash = window.location.hash;
    returnTo = hash && !hash.startsWith('#/signin') ? hash : null;
    flash(t('signin.expired'), 'error', {afterNavigation: true});
    if (message) console.info('session ended:', message);
    if (window.location.hash === '#/signin') render();
    else window.location.hash = '#/signin';
  });
  langSelect.addEventListener('change', () => {
    setLanguage(langSelect.value);
    updateChrome();
    render();
  });
  signOutButton.addEventListener('click', signOut);
  document.getElementById('skip-link').addEventListener('click', (ev) => {
    ev.preventDefault();
    main.focus();
  });
  window.addEventListener('hashchange', render);
  updateChrome();
  await render();
}

boot().catch((e) => {
  clear(main).appendChild(h('p', {class: 'error-text'}, `The console could not start: ${e.message}`));
});
