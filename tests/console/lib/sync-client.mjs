// A minimal fieldsync sync client ("tablet") for tests, written from protocol/SPEC.md: one
// WebSocket to /sync, binary frames of CBOR maps; hello -> welcome, push -> push_ack,
// pull -> changes. It keeps no database: record states live in memory, in the decoded form of
// lib/cbor.mjs (maps as Map, byte-string map keys as "h:<hex>").

import crypto from 'node:crypto';
import fs from 'node:fs';
import WebSocket from 'ws';
import {decode, encodeDecoded, hex} from './cbor.mjs';

const HLC_SHIFT = 16n;

export function randomId() { return new Uint8Array(crypto.randomBytes(16)); }

/** A UUIDv7 record id (48 bits of Unix ms, version 7, variant, random). */
export function uuidv7() {
  const b = randomId();
  const ms = BigInt(Date.now());
  for (let i = 0; i < 6; i++) b[i] = Number((ms >> BigInt(8 * (5 - i))) & 0xffn);
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  return b;
}

export function idText(b) {
  const x = hex(b);
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

export function idBytes(text) { return new Uint8Array(Buffer.from(text.replace(/-/g, ''), 'hex')); }

/** field name -> merge rule, per collection, from a schema document. */
export function mergeRules(schemaFile) {
  const doc = JSON.parse(fs.readFileSync(schemaFile, 'utf8'));
  const out = {};
  for (const c of doc.collections) {
    out[c.name] = {};
    for (const f of c.fields) out[c.name][f.name] = {rule: f.merge, type: f.type};
  }
  return out;
}

export class Tablet {
  /**
   * url: ws://host:port/sync; user/password: the enumerator's account; rules: mergeRules().
   */
  constructor({url, user, password, rules, app = 'fieldsync-test-tablet/0.1 (node)'}) {
    this.url = url;
    this.user = user;
    this.password = password;
    this.rules = rules;
    this.app = app;
    this.replica = randomId();
    this.device = randomId();
    this.cursor = 0;
    this.records = new Map();   // id text -> state
    this.inbox = [];
    this.waiters = [];
    this.batch = 0;
    this.lastTs = 0n;
  }

  async connect() {
    this.ws = new WebSocket(this.url, {perMessageDeflate: false});
    this.ws.binaryType = 'nodebuffer';
    this.ws.on('message', (data, isBinary) => {
      if (!isBinary) return this.fail(new Error('server sent a text frame'));
      let msg;
      try { msg = decode(new Uint8Array(data)); } catch (e) { return this.fail(e); }
      this.inbox.push(msg);
      this.wake();
    });
    this.ws.on('close', () => { this.closed = true; this.wake(); });
    this.ws.on('error', (e) => this.fail(e));
    await new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('error', reject);
    });
    this.send(new Map([
      ['t', 'hello'], ['v', 1], ['app', this.app],
      ['auth', new Map([['user', this.user], ['password', this.password]])],
      ['clock', Date.now()], ['cursor', this.cursor], ['device', this.device],
      ['schema', 0], ['replica', this.replica],
    ]));
    const welcome = await this.next('welcome');
    this.by = welcome.get('user');
    this.schemaVersion = welcome.get('schema_version');
    this.scope = welcome.get('scope');
    return welcome;
  }

  fail(e) { this.error = e; this.wake(); }
  wake() { for (const w of this.waiters.splice(0)) w(); }

  send(map) { this.ws.send(Buffer.from(encodeDecoded(map)), {binary: true}); }

  /** The next message of type `type` (others are kept aside); an error message rejects. */
  async next(type, timeoutMs = 15000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.inbox.findIndex((m) => m.get('t') === type || m.get('t') === 'error');
      if (i >= 0) {
        const [m] = this.inbox.splice(i, 1);
        if (m.get('t') === 'error') throw new Error(`server error ${m.get('code')}: ${m.get('message')}`);
        return m;
      }
      if (this.error) throw this.error;
      if (this.closed) throw new Error(`connection closed while waiting for ${type}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${type}`);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => { clearTimeout(timer); resolve(); });
      });
    }
  }

  tick() {
    let ts = BigInt(Date.now()) << HLC_SHIFT;
    if (ts <= this.lastTs) ts = this.lastTs + 1n;
    this.lastTs = ts;
    return ts;
  }

  /** Applies one local update (a new dot) to `state` writing `fields` {name: value}. */
  write(state, fields) {
    const coll = state.get('c');
    const key = `h:${hex(this.replica)}`;
    const ctx = state.get('ctx');
    const n = (ctx.get(key) || 0) + 1;
    ctx.set(key, n);
    const ts = this.tick();
    const f = state.get('f');
    const entry = (value) => [this.replica, n, ts, this.by, value];
    for (const [name, raw] of Object.entries(fields)) {
      const def = this.rules[coll]?.[name];
      if (!def) throw new Error(`no field ${coll}.${name} in the schema`);
      let value = raw;
      if (def.type === 'geo' && raw && typeof raw === 'object') {
        value = [Math.round(raw.lat * 1e7), Math.round(raw.lon * 1e7)];
      }
      switch (def.rule) {
        case 'lww': f.set(name, [0, entry(value)]); break;
        case 'review': f.set(name, [1, [entry(value)]]); break;
        case 'set': {
          const elements = (Array.isArray(value) ? value : [value]).map((v) => [v, [[this.replica, n]]]);
          f.set(name, [2, elements]);
          break;
        }
        case 'counter': f.set(name, [3, [[this.replica, Math.max(value, 0), Math.max(-value, 0)]]]); break;
        default: throw new Error(`unknown rule ${def.rule}`);
      }
    }
    f.set('_deleted', [1, [entry(false)]]);
    return state;
  }

  /** A new record in `collection` with `fields`; returns its id text. */
  create(collection, fields) {
    const id = uuidv7();
    const state = new Map([['c', collection], ['f', new Map()], ['id', id], ['ctx', new Map()]]);
    this.write(state, fields);
    const text = idText(id);
    this.records.set(text, state);
    return text;
  }

  update(idTextValue, fields) {
    const state = this.records.get(idTextValue);
    if (!state) throw new Error(`this tablet does not hold ${idTextValue}`);
    this.write(state, fields);
  }

  /** Pushes the given records (ids); returns the results [{ok, code?, reason?}]. */
  async push(ids) {
    this.batch += 1;
    const items = ids.map((id) => new Map([['sv', this.schemaVersion], ['rec', this.records.get(id)]]));
    this.send(new Map([['t', 'push'], ['batch', this.batch], ['items', items]]));
    const ack = await this.next('push_ack');
    return ack.get('results').map((r) => ({ok: r.get('ok'), code: r.get('code'), reason: r.get('reason')}));
  }

  /** Pulls every change after the stored cursor; replaces local states by the server's. */
  async pullAll() {
    for (let pages = 0; pages < 1000; pages++) {
      this.send(new Map([['t', 'pull'], ['since', this.cursor], ['limit', 100]]));
      const ch = await this.next('changes');
      for (const item of ch.get('items')) {
        const rec = item.get('rec');
        this.records.set(idText(rec.get('id')), rec);
      }
      this.cursor = ch.get('cursor');
      if (!ch.get('more')) return;
    }
  }

  /** The entries of a review field: [{value, by, replica}]. */
  entries(idTextValue, field) {
    const fs = this.records.get(idTextValue)?.get('f')?.get(field);
    if (!fs) return [];
    const [rule, body] = fs;
    const list = rule === 1 ? body : [body];
    return list.map((e) => ({replica: hex(e[0]), counter: e[1], by: e[3], value: e[4]}));
  }

  close() {
    try { this.ws?.close(); } catch { /* already closed */ }
  }
}
