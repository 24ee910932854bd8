// Browser tests of the supervisor console (console/), against a real fieldsync-server.
//
// The server runs with --demo on a free port and a temporary data folder; two "tablets" of
// enumerator-longhuqu (lib/sync-client.mjs, speaking the CBOR sync protocol of
// protocol/SPEC.md) change the same household's poverty status while offline, which makes a
// conflict. Then, in Debian's chromium driven by playwright-core: sign in as
// supervisor-ejin-horo, resolve the conflict with a note, check through the API and a third
// tablet that the single resolved value is what everyone holds, review visits, check that a
// Hanggin household stays invisible, switch to Chinese, let a session expire, sign out
// (token revoked), and sign in with the keyboard only.
//
// Environment: FIELDSYNC_SERVER_BIN (default build/debug/bin/fieldsync-server),
// FIELDSYNC_SCREENSHOT_DIR (default <build>/console-screenshots), FIELDSYNC_CHROMIUM
// (default /usr/bin/chromium). Run: cd tests/console && npm ci && node --test

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, before, test} from 'node:test';
import {fileURLToPath} from 'node:url';
import {chromium} from 'playwright-core';

import {readCredentials, seed} from './lib/seed.mjs';
import {api, login, startServer} from './lib/server.mjs';
import {Tablet, mergeRules} from './lib/sync-client.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '../..');
const BIN = process.env.FIELDSYNC_SERVER_BIN || path.join(REPO, 'build/debug/bin/fieldsync-server');
const SHOTS = process.env.FIELDSYNC_SCREENSHOT_DIR || path.join(path.dirname(path.dirname(BIN)), 'console-screenshots');
const CHROMIUM = process.env.FIELDSYNC_CHROMIUM || '/usr/bin/chromium';
const SCHEMA = path.join(REPO, 'protocol/schemas/household-survey.json');
const SUPERVISOR = 'supervisor-ejin-horo';

// The whole run is bounded: if anything hangs, stop the browser and the server and fail.
const WATCHDOG_MS = 170000;

const s = {};   // shared state of the steps below
const consoleErrors = [];

async function shot(name) {
  fs.mkdirSync(SHOTS, {recursive: true});
  await s.page.screenshot({path: path.join(SHOTS, `${name}.png`), fullPage: true});
}

async function go(route) {
  await s.page.goto(`${s.server.baseUrl}/console/#/${route}`);
}

async function signIn(user = SUPERVISOR) {
  await s.page.goto(`${s.server.baseUrl}/console/#/signin`);
  await s.page.fill('input[name=username]', user);
  await s.page.fill('input[name=password]', s.creds[user]);
  await s.page.click('#sign-in');
}

const sessionToken = () => s.page.evaluate(() => JSON.parse(sessionStorage.getItem('fieldsync.session') || 'null')?.token);

before(async () => {
  s.watchdog = setTimeout(async () => {
    console.error(`console tests: still running after ${WATCHDOG_MS / 1000} s; stopping`);
    try { await s.context?.close(); } catch { /* ignore */ }
    try { await s.server?.stop(); } catch { /* ignore */ }
    process.exit(1);
  }, WATCHDOG_MS);
  s.watchdog.unref();
  s.server = await startServer({bin: BIN, consoleDir: path.join(REPO, 'console')});
  s.creds = readCredentials(s.server.dataDir);
  s.rules = mergeRules(SCHEMA);
  s.userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fieldsync-chromium-'));
  s.context = await chromium.launchPersistentContext(s.userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run',
           '--disable-quic', '--disable-component-update', '--disable-sync'],
    viewport: {width: 1280, height: 900},
    locale: 'en-GB',
    timezoneId: 'Asia/Shanghai',
  });
  // Record CSP violations on every page (an init script is not subject to the page's CSP).
  await s.context.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  s.page = s.context.pages()[0] || await s.context.newPage();
  s.page.setDefaultTimeout(15000);
  s.page.on('console', (m) => {
    // 401/404 answers the tests provoke on purpose show up as "Failed to load resource".
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) consoleErrors.push(m.text());
  });
  s.page.on('pageerror', (e) => consoleErrors.push(`page error: ${e.message}`));
});

after(async () => {
  clearTimeout(s.watchdog);
  try { await s.context?.close(); } catch { /* ignore */ }
  if (s.userDataDir) fs.rmSync(s.userDataDir, {recursive: true, force: true});
  if (s.server) {
    if (process.exitCode && s.server.logText) console.error(`--- server log ---\n${s.server.logText().slice(-4000)}`);
    await s.server.stop();
  }
});

test('two tablets of enumerator-longhuqu make a poverty-status conflict', async () => {
  s.seeded = await seed({syncUrl: s.server.syncUrl, creds: s.creds, rules: s.rules});
  s.supToken = await login(s.server.baseUrl, SUPERVISOR, s.creds[SUPERVISOR]);
  const r = await api(s.server.baseUrl, 'GET', '/api/conflicts?status=open', {token: s.supToken});
  assert.equal(r.status, 200);
  const c = r.body.conflicts.find((x) => x.record === s.seeded.conflictHousehold && x.field === 'poverty_status');
  assert.ok(c, `no open poverty_status conflict for ${s.seeded.conflictHousehold}: ${JSON.stringify(r.body)}`);
  assert.deepEqual(c.values.map((v) => v.value).sort(), ['dibao_line', 'exited']);
  assert.ok(c.values.every((v) => v.by === 'enumerator-longhuqu'));
  s.conflictId = c.id;
  s.incomeConflictId = r.body.conflicts.find((x) => x.record === s.seeded.secondHousehold && x.field === 'income_per_capita')?.id;
  assert.ok(s.incomeConflictId, 'no income conflict');
});

test('sign in as supervisor-ejin-horo and see the conflict queue', async () => {
  await s.page.goto(`${s.server.baseUrl}/console/`);
  await s.page.waitForSelector('#sign-in');
  await shot('01-sign-in');
  await signIn();
  await s.page.waitForSelector('.page-conflicts');
  await s.page.waitForSelector(`a[href="#/conflicts/${s.conflictId}"]`);
  const summary = await s.page.textContent('.summary');
  assert.match(summary, /2 open conflicts/);
  await s.page.waitForSelector('a[href^="#/households/"]:text("Bater")');   // names filled in
  assert.equal(await sessionToken() !== null, true);
  assert.ok(!s.page.url().includes(await sessionToken()), 'the token must never appear in the URL');
  await shot('02-conflicts');
});

test('open the conflict and resolve it by keeping one answer, with a note', async () => {
  await s.page.click(`a[href="#/conflicts/${s.conflictId}"]`);
  await s.page.waitForSelector('.page-conflict[data-status="open"]');
  const cards = s.page.locator('.value-card:not(.value-card-other)');
  assert.equal(await cards.count(), 2);
  const text = await s.page.textContent('.cards');
  assert.match(text, /Exited poverty/);
  assert.match(text, /Below the municipal minimum-subsistence \(dibao\) line/);
  assert.match(text, /enumerator-longhuqu/);
  assert.match(text, /fieldsync-tablet\/1\.4\.2/);   // tablet A's app version
  assert.match(text, /39\.56512, 109\.73568/);        // tablet A recorded the home's GPS
  assert.match(await s.page.textContent('.page-conflict'), /Recent visits[\s\S]*Look back/);
  await shot('03-conflict-detail');
  // Keep "Exited poverty".
  await cards.filter({hasText: 'Exited poverty'}).locator('input[type=radio]').check();
  await s.page.fill('textarea', 'Checked with the village committee: the family exited in 2023.');
  await s.page.click('#resolve');
  await s.page.waitForSelector('.page-conflict[data-status="resolved"]');
  const flash = await s.page.textContent('.flash-success');
  assert.match(flash, /Conflict \d+ resolved: Poverty status is now “Exited poverty”/);
  assert.match(await s.page.textContent('.settled-value'), /Exited poverty/);
  await shot('04-conflict-resolved');
});

test('the API reports the conflict resolved, with the note', async () => {
  const r = await api(s.server.baseUrl, 'GET', `/api/conflicts/${s.conflictId}`, {token: s.supToken});
  assert.equal(r.status, 200);
  assert.equal(r.body.conflict.status, 'resolved');
  assert.equal(r.body.conflict.resolution, 'exited');
  assert.equal(r.body.conflict.resolved_by, SUPERVISOR);
  assert.equal(r.body.conflict.note, 'Checked with the village committee: the family exited in 2023.');
  const rec = await api(s.server.baseUrl, 'GET', `/api/records/households/${s.seeded.conflictHousehold}`, {token: s.supToken});
  assert.equal(rec.body.fields.poverty_status, 'exited');
  assert.equal(rec.body.conflicts?.poverty_status, undefined);
});

test('a third tablet pulling afterwards holds the single resolved value', async () => {
  const t = new Tablet({url: s.server.syncUrl, user: 'enumerator-longhuqu', password: s.creds['enumerator-longhuqu'], rules: s.rules});
  try {
    await t.connect();
    await t.pullAll();
    const entries = t.entries(s.seeded.conflictHousehold, 'poverty_status');
    assert.equal(entries.length, 1, `expected one entry, got ${JSON.stringify(entries)}`);
    assert.equal(entries[0].value, 'exited');
    assert.equal(entries[0].by, SUPERVISOR);
  } finally {
    t.close();
  }
});

test('the income conflict is resolved with a typed new value', async () => {
  await go(`conflicts/${s.incomeConflictId}`);
  await s.page.waitForSelector('.page-conflict[data-status="open"]');
  const other = s.page.locator('.value-card-other');
  const input = other.locator('input[type=number]');
  assert.equal(await input.getAttribute('min'), '0');
  await input.fill('4200');
  assert.equal(await other.locator('input[type=radio]').isChecked(), true);
  await s.page.fill('textarea', 'Recomputed from the cooperative dividend and the wage slips.');
  await s.page.click('#resolve');
  await s.page.waitForSelector('.page-conflict[data-status="resolved"]');
  const r = await api(s.server.baseUrl, 'GET', `/api/conflicts/${s.incomeConflictId}`, {token: s.supToken});
  assert.equal(r.body.conflict.resolution, 4200);
  await go('conflicts');
  await s.page.waitForSelector('.page-conflicts');
  assert.match(await s.page.textContent('.page-conflicts'), /No open conflicts/);
});

test('visit review: approve one visit, mark another as having issues', async () => {
  await go('visits');
  await s.page.waitForSelector('.visits-table tbody tr');
  const rows = s.page.locator('.visits-table tbody tr');
  assert.equal(await rows.count(), 6);
  await shot('05-visits');
  const first = rows.filter({hasText: 'Look back'}).filter({hasText: 'Longhuqu'});
  await first.locator('button', {hasText: 'Approve'}).click();
  await s.page.waitForSelector('.flash-success:text("Visit approved")');
  const v1 = s.seeded.visits[0];
  let r = await api(s.server.baseUrl, 'GET', `/api/records/visits/${v1}`, {token: s.supToken});
  assert.equal(r.body.fields.review_status, 'approved');

  const v2 = s.seeded.visits[1];
  await go(`visits/${v2}`);
  await s.page.waitForSelector('.review-form');
  await s.page.check('.review-form input[value="has_issues"]');
  await s.page.click('#save-review');
  assert.match(await s.page.textContent('.review-form .form-error'), /Say what the issues are/);
  await s.page.fill('.review-form textarea', 'Income of the son in Dongsheng not recorded; visit again.');
  await s.page.click('#save-review');
  await s.page.waitForSelector('.flash-success:text("Review saved")');
  await shot('06-visit-detail');
  r = await api(s.server.baseUrl, 'GET', `/api/records/visits/${v2}`, {token: s.supToken});
  assert.equal(r.body.fields.review_status, 'has_issues');
  assert.equal(r.body.fields.review_comment, 'Income of the son in Dongsheng not recorded; visit again.');
});

test('households: search, and a household with its change history', async () => {
  await go('households');
  await s.page.waitForSelector('.households-table tbody tr');
  assert.equal(await s.page.locator('.households-table tbody tr').count(), 7);
  await shot('07-households');
  await s.page.fill('input[name=q]', '150627198207');   // part of an identity number
  await s.page.click('button[type=submit]');
  await s.page.waitForFunction(() => document.querySelectorAll('.households-table tbody tr').length === 1);
  assert.match(await s.page.textContent('.households-table tbody'), /Li Jianguo/);
  await s.page.selectOption('select[name=status]', 'exited');
  await s.page.fill('input[name=q]', '');
  await s.page.click('button[type=submit]');
  await s.page.waitForFunction(() => document.querySelectorAll('.households-table tbody tr').length === 2);
  await go(`households/${s.seeded.conflictHousehold}`);
  await s.page.waitForSelector('.page-household');
  const body = await s.page.textContent('.page-household');
  assert.match(body, /Change history/);
  assert.match(body, /supervisor-ejin-horo/);       // the resolution is in the history
  assert.match(body, /Oyunbileg/);                   // a member
  assert.ok(await s.page.locator('.page-household table').last().locator('tbody tr').count() >= 3);
  await shot('08-household-detail');
});

test('a Hanggin household is invisible to the Ejin Horo supervisor', async () => {
  const hx = s.seeded.hangginHousehold;
  // It exists: the administrator sees it.
  const adminToken = await login(s.server.baseUrl, 'admin', s.creds.admin);
  assert.equal((await api(s.server.baseUrl, 'GET', `/api/records/households/${hx}`, {token: adminToken})).status, 200);
  // The supervisor does not, neither by id nor by search.
  assert.equal((await api(s.server.baseUrl, 'GET', `/api/records/households/${hx}`, {token: s.supToken})).status, 404);
  const search = await api(s.server.baseUrl, 'GET', `/api/records?collection=households&q=${encodeURIComponent('Sodnomdorj')}`, {token: s.supToken});
  assert.equal(search.body.records.length, 0);
  await go(`households?q=Sodnomdorj`);
  await s.page.waitForSelector('.page-households .empty:not([hidden])');
  assert.match(await s.page.textContent('.page-households'), /No household matches/);
  await go(`households/${hx}`);
  await s.page.waitForSelector('main h1:text("Not found")');
  assert.doesNotMatch(await s.page.textContent('main'), /Sodnomdorj/);
});

test('devices and overview pages', async () => {
  await go('devices');
  await s.page.waitForSelector('.page-devices table');
  const devices = await s.page.textContent('.page-devices table');
  assert.match(devices, /fieldsync-tablet\/1\.4\.2/);
  assert.match(devices, /enumerator-hashatu/);
  assert.doesNotMatch(devices, /enumerator-xini/);   // Xini is outside Ejin Horo
  await shot('09-devices');
  await go('overview');
  await s.page.waitForSelector('.page-overview svg.chart');
  assert.ok(await s.page.locator('.page-overview svg.chart rect.seg').count() >= 5);
  assert.ok(await s.page.locator('.page-overview svg.chart rect.bar').count() >= 1);
  assert.match(await s.page.textContent('.stat-row'), /7\s*households/);
  await shot('10-overview');
});

test('switching to Chinese shows the schema\'s Chinese labels, and persists', async () => {
  await go('households');
  await s.page.waitForSelector('.households-table');
  await s.page.selectOption('#lang-select', 'zh');
  await s.page.waitForSelector('#nav a:text("冲突处理")');
  await s.page.waitForSelector('.households-table th:text("贫困户属性")');
  const table = await s.page.textContent('.households-table');
  assert.match(table, /已脱贫退出/);    // enum label "exited" from the schema
  assert.match(table, /户主姓名/);
  assert.equal(await s.page.getAttribute('html', 'lang'), 'zh-CN');
  await shot('11-households-zh');
  await s.page.reload();
  await s.page.waitForSelector('.page-households h1:text("农牧户")');
  await go(`conflicts/${s.conflictId}`);
  await s.page.waitForSelector('.page-conflict');
  assert.match(await s.page.textContent('.page-conflict'), /贫困户属性/);
  await shot('12-conflict-zh');
  await s.page.selectOption('#lang-select', 'en');
  await s.page.waitForSelector('#nav a:text("Conflicts")');
});

test('a revoked session sends the console back to sign-in with "session expired"', async () => {
  const token = await sessionToken();
  assert.ok(token);
  assert.equal((await api(s.server.baseUrl, 'POST', '/api/logout', {token})).status, 200);
  await go('devices');
  await s.page.waitForSelector('#sign-in');
  assert.match(await s.page.textContent('.flash-error'), /Your session expired/);
  assert.equal(await sessionToken(), undefined);
  await shot('13-session-expired');
});

test('sign-out revokes the token on the server', async () => {
  await signIn();
  await s.page.waitForSelector('.page-devices');   // back where the session expired
  const token = await sessionToken();
  assert.equal((await api(s.server.baseUrl, 'GET', '/api/me', {token})).status, 200);
  await s.page.click('#sign-out');
  await s.page.waitForSelector('#sign-in');
  assert.match(await s.page.textContent('.flash-success'), /You are signed out/);
  assert.equal(await sessionToken(), undefined);
  const r = await api(s.server.baseUrl, 'GET', '/api/me', {token});
  assert.equal(r.status, 401);
  assert.match(r.body.error.message, /revoked/);
  await shot('14-signed-out');
});

test('an enumerator is told the console is for supervisors', async () => {
  await signIn('enumerator-hashatu');
  await s.page.waitForSelector('main h1:text("This console is for supervisors")');
  await s.page.click('#sign-out');
  await s.page.waitForSelector('#sign-in');
});

test('keyboard only: from the top of the page, Tab reaches the sign-in button, and Enter signs in', async () => {
  await s.page.goto('about:blank');
  await s.page.goto(`${s.server.baseUrl}/console/`);
  await s.page.waitForSelector('#sign-in');
  const focused = () => s.page.evaluate(() => {
    const el = document.activeElement;
    const label = el.labels?.[0]?.textContent || el.getAttribute('aria-label') || el.textContent || '';
    return {id: el.id, tag: el.tagName, name: el.getAttribute('name'), label: label.trim(),
            outline: getComputedStyle(el).outlineStyle};
  });
  // The sign-in form takes the focus; Shift+Tab walks back to the first control of the page.
  assert.equal((await focused()).name, 'username');
  const seen = [];
  for (let i = 0; i < 6; i++) {
    await s.page.keyboard.press('Shift+Tab');
    const info = await focused();
    seen.push(info);
    if (info.id === 'skip-link') break;
  }
  assert.equal(seen.at(-1).id, 'skip-link', `Shift+Tab did not reach the skip link: ${JSON.stringify(seen)}`);
  // Forward from the top, typing into what has the focus.
  let reached = false;
  for (let i = 0; i < 12 && !reached; i++) {
    await s.page.keyboard.press('Tab');
    const info = await focused();
    seen.push(info);
    assert.ok(info.label, `focusable element without a label: ${JSON.stringify(info)}`);
    assert.notEqual(info.outline, 'none', `no visible focus on ${JSON.stringify(info)}`);
    if (info.name === 'username') await s.page.keyboard.type(SUPERVISOR);
    if (info.name === 'password') await s.page.keyboard.type(s.creds[SUPERVISOR]);
    if (info.id === 'sign-in') {
      reached = true;
      await shot('15-keyboard-focus');
    }
  }
  assert.ok(reached, `Tab never reached the sign-in button: ${JSON.stringify(seen)}`);
  await s.page.keyboard.press('Enter');
  try {
    await s.page.waitForSelector('.page-conflicts');
  } catch (e) {
    await shot('failure-keyboard');
    throw new Error(`${e.message}\nfocus path: ${JSON.stringify(seen)}`);
  }
  // Signed in: the page heading has the focus, and Tab goes on into the navigation.
  assert.equal((await focused()).tag, 'H1');
});

test('text from tablets is shown as text, never as markup', async () => {
  const evil = '<img src=x onerror="window.__pwned=1"><b>Baatar</b>';
  const t = new Tablet({url: s.server.syncUrl, user: 'enumerator-hashatu', password: s.creds['enumerator-hashatu'], rules: s.rules});
  try {
    await t.connect();
    const id = t.create('households', {village: 'ordos/ejin-horo/altan-xire/hashatu', head_name: evil,
      poverty_status: 'marginal', notes: '<script>window.__pwned=2</script>'});
    const [res] = await t.push([id]);
    assert.ok(res.ok, JSON.stringify(res));
    await go(`households/${id}`);
    await s.page.waitForSelector('.page-household');
    assert.equal(await s.page.textContent('.page-household h1'), evil);
    assert.equal(await s.page.locator('.page-household img, .page-household b, .page-household script').count(), 0);
    await go('households?q=Baatar');
    await s.page.waitForSelector('.households-table tbody tr');
    assert.equal(await s.page.locator('.households-table img').count(), 0);
    assert.equal(await s.page.evaluate(() => window.__pwned), undefined);
  } finally {
    t.close();
  }
});

test('no CSP violations and no script errors', async () => {
  const violations = await s.page.evaluate(() => window.__cspViolations || []);
  assert.deepEqual(violations, []);
  assert.deepEqual(consoleErrors, []);
  const res = await fetch(`${s.server.baseUrl}/console/`);
  assert.match(res.headers.get('content-security-policy'), /script-src 'self'/);
  assert.match(res.headers.get('content-security-policy'), /frame-ancestors 'none'/);
  assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
});
