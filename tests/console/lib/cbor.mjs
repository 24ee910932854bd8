// A small CBOR codec for the fieldsync profile (protocol/SPEC.md §2): unsigned and negative
// integers (BigInt beyond 2^53, so 64-bit HLC timestamps round-trip exactly), byte strings
// (Uint8Array), text, arrays, maps (decoded as Map, so byte-string keys of causal contexts
// work), false, true, null. No floats, no tags, no indefinite lengths. Encoding is
// deterministic (RFC 8949 §4.2.1): shortest heads, map keys sorted by their encoded bytes.
//
// Written here rather than taken from npm so that the test controls exactly what goes on the
// wire; it is checked against protocol/vectors/ by cbor.test.mjs.

const te = new TextEncoder();
const td = new TextDecoder('utf-8', {fatal: true});

function head(major, n) {
  const v = BigInt(n);
  const m = major << 5;
  if (v < 24n) return Uint8Array.of(m | Number(v));
  if (v < 0x100n) return Uint8Array.of(m | 24, Number(v));
  if (v < 0x10000n) return Uint8Array.of(m | 25, Number(v >> 8n), Number(v & 0xffn));
  if (v < 0x100000000n) {
    const b = new Uint8Array(5);
    b[0] = m | 26;
    new DataView(b.buffer).setUint32(1, Number(v));
    return b;
  }
  if (v <= 0xffffffffffffffffn) {
    const b = new Uint8Array(9);
    b[0] = m | 27;
    new DataView(b.buffer).setBigUint64(1, v);
    return b;
  }
  throw new RangeError(`integer out of the 64-bit range: ${v}`);
}

function concat(parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/** Encodes a JS value: number (integer) | bigint | string | boolean | null | Uint8Array | Array | Map | plain object. */
export function encode(value) {
  const parts = [];
  const enc = (v) => {
    if (v === null || v === undefined) { parts.push(Uint8Array.of(0xf6)); return; }
    if (v === false) { parts.push(Uint8Array.of(0xf4)); return; }
    if (v === true) { parts.push(Uint8Array.of(0xf5)); return; }
    if (typeof v === 'number') {
      if (!Number.isInteger(v)) throw new TypeError(`no floats in the fieldsync profile: ${v}`);
      v = BigInt(v);
    }
    if (typeof v === 'bigint') {
      parts.push(v >= 0n ? head(0, v) : head(1, -1n - v));
      return;
    }
    if (typeof v === 'string') {
      const b = te.encode(v);
      parts.push(head(3, b.length), b);
      return;
    }
    if (v instanceof Uint8Array) { parts.push(head(2, v.length), v); return; }
    if (Array.isArray(v)) {
      parts.push(head(4, v.length));
      for (const x of v) enc(x);
      return;
    }
    const entries = v instanceof Map ? [...v.entries()] : Object.entries(v);
    const encoded = entries.map(([k, x]) => [encode(k), encode(x)]);
    encoded.sort((a, b) => compareBytes(a[0], b[0]));
    parts.push(head(5, encoded.length));
    for (const [k, x] of encoded) parts.push(k, x);
  };
  enc(value);
  return concat(parts);
}

/** Decodes one CBOR item that must fill `bytes`; maps come back as Map. */
export function decode(bytes) {
  const buf = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let pos = 0;
  const need = (n) => { if (pos + n > buf.length) throw new Error('truncated CBOR'); };
  const arg = (info) => {
    if (info < 24) return BigInt(info);
    if (info === 24) { need(1); return BigInt(buf[pos++]); }
    if (info === 25) { need(2); const v = dv.getUint16(pos); pos += 2; return BigInt(v); }
    if (info === 26) { need(4); const v = dv.getUint32(pos); pos += 4; return BigInt(v); }
    if (info === 27) { need(8); const v = dv.getBigUint64(pos); pos += 8; return v; }
    throw new Error(`unsupported additional info ${info} (indefinite lengths are outside the profile)`);
  };
  const small = (v) => (v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= -BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
  const item = (depth) => {
    if (depth > 64) throw new Error('too deep');
    need(1);
    const ib = buf[pos++];
    const major = ib >> 5;
    const info = ib & 31;
    switch (major) {
      case 0: return small(arg(info));
      case 1: return small(-1n - arg(info));
      case 2: { const n = Number(arg(info)); need(n); const b = buf.slice(pos, pos + n); pos += n; return b; }
      case 3: { const n = Number(arg(info)); need(n); const s = td.decode(buf.subarray(pos, pos + n)); pos += n; return s; }
      case 4: { const n = Number(arg(info)); const a = []; for (let i = 0; i < n; i++) a.push(item(depth + 1)); return a; }
      case 5: {
        const n = Number(arg(info));
        const m = new Map();
        for (let i = 0; i < n; i++) {
          let k = item(depth + 1);
          if (k instanceof Uint8Array) k = `h:${hex(k)}`;   // byte keys as text, see mapKey()
          if (m.has(k)) throw new Error('duplicate map key');
          m.set(k, item(depth + 1));
        }
        return m;
      }
      case 7:
        if (info === 20) return false;
        if (info === 21) return true;
        if (info === 22) return null;
        throw new Error(`simple value or float ${info} is outside the profile`);
      default: throw new Error(`tags are outside the profile (major type ${major})`);
    }
  };
  const v = item(0);
  if (pos !== buf.length) throw new Error(`${buf.length - pos} bytes after the item`);
  return v;
}

// Byte-string map keys (causal contexts: replica id -> counter) decode to "h:<hex>" strings;
// encodeKeyed() turns them back into byte strings.
export function hex(b) { return Buffer.from(b).toString('hex'); }
export function unhex(s) { return new Uint8Array(Buffer.from(s, 'hex')); }

/** Deep copy of a decoded value with "h:<hex>" map keys turned back into Uint8Array keys. */
export function restoreKeys(v) {
  if (v instanceof Map) {
    const m = new Map();
    for (const [k, x] of v) m.set(typeof k === 'string' && k.startsWith('h:') ? unhex(k.slice(2)) : k, restoreKeys(x));
    return m;
  }
  if (Array.isArray(v)) return v.map(restoreKeys);
  return v;
}

export function encodeDecoded(v) { return encode(restoreKeys(v)); }
