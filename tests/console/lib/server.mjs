// Starts a real fieldsync-server for a test (demo data, plain HTTP, a free port, a temporary
// data folder) and stops it again, even when the test fails or the process is interrupted.

import {spawn} from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const running = new Set();
function killAll() {
  for (const p of running) {
    try { p.kill('SIGKILL'); } catch { /* gone */ }
  }
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => { killAll(); process.exit(130); });
}

/**
 * startServer({bin, consoleDir}) -> {baseUrl, syncUrl, dataDir, stop(), logText()}
 * Throws with the server's log when it does not come up within `timeoutMs`.
 */
export async function startServer({bin, consoleDir, timeoutMs = 30000, extraArgs = []}) {
  if (!fs.existsSync(bin)) {
    throw new Error(`no server binary at ${bin}: build it (cmake --build <build> --target fieldsync-server) or set FIELDSYNC_SERVER_BIN`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fieldsync-test-'));
  const dataDir = path.join(dir, 'data');
  const portFile = path.join(dir, 'port');
  const logFile = path.join(dir, 'server.log');
  const log = fs.openSync(logFile, 'w');
  // --no-demo-records: the tests count the records they write themselves.
  const args = ['--demo', '--no-demo-records', '--plain', '--port', '0', '--port-file', portFile, '--data-dir', dataDir,
                '--log-level', 'info', ...extraArgs];
  if (consoleDir) args.push('--console-dir', consoleDir);
  const proc = spawn(bin, args, {stdio: ['ignore', log, log]});
  running.add(proc);
  let exited = null;
  proc.on('exit', (code, signal) => { exited = {code, signal}; running.delete(proc); });
  const logText = () => { try { return fs.readFileSync(logFile, 'utf8'); } catch { return ''; } };

  const deadline = Date.now() + timeoutMs;
  let port = '';
  while (Date.now() < deadline) {
    if (exited) break;
    try { port = fs.readFileSync(portFile, 'utf8').trim(); } catch { port = ''; }
    if (port && fs.existsSync(path.join(dataDir, 'demo-credentials.txt'))) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  if (!port || exited) {
    try { proc.kill('SIGKILL'); } catch { /* gone */ }
    throw new Error(`fieldsync-server did not start (${exited ? `exited ${JSON.stringify(exited)}` : 'timeout'}):\n${logText()}`);
  }

  async function stop() {
    if (!exited) {
      proc.kill('SIGTERM');
      const until = Date.now() + 5000;
      while (!exited && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      if (!exited) proc.kill('SIGKILL');
    }
    fs.closeSync(log);
    if (!process.env.FIELDSYNC_KEEP_DATA) fs.rmSync(dir, {recursive: true, force: true});
  }

  return {
    baseUrl: `http://127.0.0.1:${port}`,
    syncUrl: `ws://127.0.0.1:${port}/sync`,
    dataDir, dir, stop, logText,
    alive: () => !exited,
  };
}

/** A JSON API call: {status, body}. */
export async function api(baseUrl, method, p, {token, body, raw} = {}) {
  const headers = {Accept: 'application/json'};
  if (token) headers.Authorization = `Bearer ${token}`;
  let payload;
  if (body !== undefined) {
    headers['Content-Type'] = raw ? 'text/plain' : 'application/json';
    payload = raw ? body : JSON.stringify(body);
  }
  const res = await fetch(baseUrl + p, {method, headers, body: payload});
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = text; }
  return {status: res.status, body: json, headers: res.headers};
}

export async function login(baseUrl, user, password) {
  const r = await api(baseUrl, 'POST', '/api/login', {body: {user, password}});
  if (r.status !== 200) throw new Error(`login ${user}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.token;
}
