// The HTTP JSON API client (docs/api.md). The session token is kept in memory and in
// sessionStorage (so a reload of the tab keeps the session; closing the tab ends it). It only
// ever travels in the Authorization header: never in a URL, never in a cookie, so the browser
// never attaches it by itself and there is nothing for a cross-site request to ride on.

const TOKEN_KEY = 'fieldsync.session';

let session = null;          // {token, expires_at, user}
let onExpired = () => {};

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
}

export function loadSession() {
  try {
    const raw = sessionStorage.getItem(TOKEN_KEY);
    if (raw) session = JSON.parse(raw);
  } catch { session = null; }
  if (session && session.expires_at && new Date(session.expires_at).getTime() <= Date.now()) {
    clearSession();
  }
  return session;
}

export function currentSession() { return session; }

export function setSession(s) {
  session = s;
  try { sessionStorage.setItem(TOKEN_KEY, JSON.stringify(s)); } catch { /* memory only */ }
}

export function clearSession() {
  session = null;
  try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* nothing stored */ }
}

/** Called with the server's message when a request comes back 401 (token expired or revoked). */
export function setExpiredHandler(fn) { onExpired = fn; }

function buildUrl(path, query) {
  const u = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v === undefined || v === null || v === '') continue;
    u.searchParams.set(k, String(v));
  }
  return u.pathname + u.search;
}

/**
 * request('GET', '/api/conflicts', {query: {status: 'open'}}) -> parsed JSON.
 * Throws ApiError (status 0 for a network failure).
 */
export async function request(method, path, {query, body, raw = false, auth = true, quiet401 = false} = {}) {
  const headers = {Accept: 'application/json'};
  if (auth && session) headers.Authorization = `Bearer ${session.token}`;
  let payload;
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(buildUrl(path, query), {
      method, headers, body: payload, cache: 'no-store', credentials: 'omit', redirect: 'error',
    });
  } catch (e) {
    throw new ApiError(0, 'network', String(e && e.message ? e.message : e));
  }
  if (raw && res.ok) return res;
  let data = null;
  const text = await res.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    const err = data && data.error ? data.error : {};
    const e = new ApiError(res.status, err.code || `http_${res.status}`,
                           err.message || `HTTP ${res.status}`, err);
    if (res.status === 401 && auth && session) {
      clearSession();
      if (!quiet401) onExpired(e.message);
    }
    throw e;
  }
  return data;
}

export const get = (path, query) => request('GET', path, {query});
export const post = (path, body) => request('POST', path, {body});
export const put = (path, body) => request('PUT', path, {body});

export async function login(user, password) {
  const data = await request('POST', '/api/login', {body: {user, password}, auth: false});
  setSession({token: data.token, expires_at: data.expires_at, user: data.user});
  return data;
}

export async function logout() {
  if (!session) return;
  try {
    await request('POST', '/api/logout', {auth: true, quiet401: true});
  } finally {
    clearSession();
  }
}
