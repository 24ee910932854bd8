// Demo data for the browser tests, pushed through the sync protocol as real tablets would:
// households and visits in Longhuqu and Hashatu (Ejin Horo Banner) and one household in Xini
// Town (Hanggin Banner), then two tablets of enumerator-longhuqu that change the same
// household's poverty status while "offline", which the server must flag as a conflict.

import fs from 'node:fs';
import path from 'node:path';
import {Tablet} from './sync-client.mjs';

export const LONGHUQU = 'ordos/ejin-horo/altan-xire/longhuqu';
export const HASHATU = 'ordos/ejin-horo/altan-xire/hashatu';
export const SISHILILIANG = 'ordos/hanggin/xini/sishililiang';

/** name -> password, from <data-dir>/demo-credentials.txt. */
export function readCredentials(dataDir) {
  const out = {};
  const text = fs.readFileSync(path.join(dataDir, 'demo-credentials.txt'), 'utf8');
  for (const line of text.split('\n')) {
    if (!line.trim() || line.startsWith('#')) continue;
    const [name, , password] = line.trim().split(/\s+/);
    out[name] = password;
  }
  return out;
}

function isoDaysAgo(days, hour = 9, minute = 30) {
  const d = new Date(Date.now() - days * 86400000);
  d.setUTCHours(hour, minute, 0, 0);
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

async function tablet(syncUrl, creds, user, rules, app) {
  const t = new Tablet({url: syncUrl, user, password: creds[user], rules, app});
  await t.connect();
  return t;
}

function expectOk(results, what) {
  const bad = results.filter((r) => !r.ok);
  if (bad.length) throw new Error(`${what}: the server refused ${bad.length} item(s): ${bad.map((r) => `${r.code}: ${r.reason}`).join('; ')}`);
}

/**
 * Seeds the data set. Returns ids: {conflictHousehold, hangginHousehold, hangginName,
 * households: [...], visits: [...]}.
 */
export async function seed({syncUrl, creds, rules}) {
  const tablets = [];
  try {
    // Tablet A of enumerator-longhuqu: four households and their visits.
    const a = await tablet(syncUrl, creds, 'enumerator-longhuqu', rules, 'fieldsync-tablet/1.4.2 (android 12)');
    tablets.push(a);
    const h1 = a.create('households', {
      village: LONGHUQU, head_name: 'Bater', head_id_number: '150627197803152417', members_count: 4,
      poverty_status: 'national_line', income_per_capita: 3600, identified_on: '2017-03-20',
      assistance: ['land_adoption', 'lambs_for_ewes'], cooperative: 'Happiness Pastorale cooperative',
      gps: {lat: 39.5651234, lon: 109.7356789}, phone: '13904770000',
    });
    const h2 = a.create('households', {
      village: LONGHUQU, head_name: 'Wang Guihua 王桂花', head_id_number: '150627196511083026', members_count: 2,
      poverty_status: 'dibao_line', income_per_capita: 2900, identified_on: '2016-11-02',
      assistance: ['entrusted_breeding'], notes: 'Widow; the son works in Dongsheng.',
    });
    const h3 = a.create('households', {
      village: LONGHUQU, head_name: 'Li Jianguo 李建国', head_id_number: '150627198207214413', members_count: 5,
      poverty_status: 'marginal', income_per_capita: 5200, assistance: ['shareholding_dividend'],
    });
    const h4 = a.create('households', {
      village: LONGHUQU, head_name: 'Zhang Shulan 张淑兰', head_id_number: '150627197112300521', members_count: 3,
      poverty_status: 'exited', exit_reason: 'income_above_line', income_per_capita: 8900,
      assistance: ['tourism_jobs', 'enriched_farmers_loan'],
    });
    const m1 = a.create('members', {village: LONGHUQU, household: h1, name: 'Bater', relation_to_head: 'head',
      sex: 'male', birth_date: '1978-03-15', labor_ability: 'ordinary', health: 'healthy'});
    const m2 = a.create('members', {village: LONGHUQU, household: h1, name: 'Oyunbileg', relation_to_head: 'spouse',
      sex: 'female', birth_date: '1980-07-02', labor_ability: 'weak', health: 'chronic_illness'});
    const v1 = a.create('visits', {village: LONGHUQU, household: h1, kind: 'look_back', enumerator: 'enumerator-longhuqu',
      visited_at: isoDaysAgo(1, 2, 15), findings: 'Flock of 40 ewes under "lambs in return for ewes"; spouse needs regular treatment.',
      income_observed: 3800, review_status: 'pending', gps: {lat: 39.5651, lon: 109.7357}});
    const v2 = a.create('visits', {village: LONGHUQU, household: h2, kind: 'extensive_visit', enumerator: 'enumerator-longhuqu',
      visited_at: isoDaysAgo(0, 1, 40), findings: 'Entrusted breeding income paid for the year.', income_observed: 3100});
    const v3 = a.create('visits', {village: LONGHUQU, household: h3, kind: 'identification', enumerator: 'enumerator-longhuqu',
      visited_at: isoDaysAgo(3, 3, 5), findings: 'Dividend from the land shareholding cooperative.', income_observed: 5200});
    const v4 = a.create('visits', {village: LONGHUQU, household: h4, kind: 'exit_verification', enumerator: 'enumerator-longhuqu',
      visited_at: isoDaysAgo(6, 6, 0), findings: 'Works at the tourism site; income verified with the wage slips.', income_observed: 9100});
    expectOk(await a.push([h1, h2, h3, h4, m1, m2, v1, v2, v3, v4]), 'tablet A');

    // Hashatu: two households and visits by enumerator-hashatu.
    const c = await tablet(syncUrl, creds, 'enumerator-hashatu', rules, 'fieldsync-tablet/1.4.1 (android 11)');
    tablets.push(c);
    const h5 = c.create('households', {
      village: HASHATU, head_name: 'Sarangerel 萨仁格日勒', head_id_number: '150627197409186627', members_count: 3,
      poverty_status: 'national_line', income_per_capita: 3300, assistance: ['tourism_jobs'],
    });
    const h6 = c.create('households', {
      village: HASHATU, head_name: 'Gao Fengying 高凤英', head_id_number: '150627195902144128', members_count: 1,
      poverty_status: 'dibao_line', income_per_capita: 2500, assistance: ['collective_economy_dividend'],
    });
    const h7 = c.create('households', {
      village: HASHATU, head_name: 'Wuyuntana 乌云塔娜', head_id_number: '150627198805230048', members_count: 4,
      poverty_status: 'not_poor', income_per_capita: 14200,
    });
    const v5 = c.create('visits', {village: HASHATU, household: h5, kind: 'look_back', enumerator: 'enumerator-hashatu',
      visited_at: isoDaysAgo(2, 4, 20), findings: 'Seasonal job at the scenic area from May to October.', income_observed: 3500});
    const v6 = c.create('visits', {village: HASHATU, household: h6, kind: 'extensive_visit', enumerator: 'enumerator-hashatu',
      visited_at: isoDaysAgo(0, 2, 0), findings: 'Lives alone; dibao paid monthly.', income_observed: 2500});
    expectOk(await c.push([h5, h6, h7, v5, v6]), 'Hashatu tablet');

    // Xini Town (Hanggin Banner): outside supervisor-ejin-horo's areas.
    const x = await tablet(syncUrl, creds, 'enumerator-xini', rules, 'fieldsync-tablet/1.4.2 (android 12)');
    tablets.push(x);
    const hangginName = 'Sodnomdorj 索德诺木道尔吉';
    const hx = x.create('households', {
      village: SISHILILIANG, head_name: hangginName, head_id_number: '150625197606061234', members_count: 6,
      poverty_status: 'national_line', income_per_capita: 3100, cooperative: 'Lvmei pig-raising cooperative',
    });
    expectOk(await x.push([hx]), 'Xini tablet');

    // The conflict: tablet B of the same enumerator pulls, then both change Bater's poverty
    // status without seeing each other's change.
    const b = await tablet(syncUrl, creds, 'enumerator-longhuqu', rules, 'fieldsync-tablet/1.3.9 (android 10)');
    tablets.push(b);
    await b.pullAll();
    if (!b.records.has(h1) || !b.records.has(h2)) throw new Error('tablet B did not receive the households');
    a.update(h1, {poverty_status: 'dibao_line'});
    b.update(h1, {poverty_status: 'exited'});
    // A second, independent conflict (income of household 2), so the queue has more than one.
    a.update(h2, {income_per_capita: 3100});
    b.update(h2, {income_per_capita: 4600});
    expectOk(await a.push([h1, h2]), 'tablet A (offline edit)');
    expectOk(await b.push([h1, h2]), 'tablet B (offline edit)');

    return {
      conflictHousehold: h1, conflictValues: ['dibao_line', 'exited'], secondHousehold: h2,
      hangginHousehold: hx, hangginName, households: [h1, h2, h3, h4, h5, h6, h7], visits: [v1, v2, v3, v4, v5, v6],
      tabletA: {replica: a.replica, device: a.device}, tabletB: {replica: b.replica, device: b.device},
    };
  } finally {
    for (const t of tablets) t.close();
  }
}
