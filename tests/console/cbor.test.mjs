// The test's CBOR codec (lib/cbor.mjs) against the protocol's hex vectors: decoding and
// re-encoding every valid vector gives its canonical bytes. No server, no browser.
import assert from 'node:assert/strict';
import path from 'node:path';
import {test} from 'node:test';
import {fileURLToPath} from 'node:url';

import {checkVectors} from './lib/cbor-check.mjs';
import {decode, encode} from './lib/cbor.mjs';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

test('lib/cbor.mjs round-trips the protocol vectors byte for byte', () => {
  const results = checkVectors(path.join(REPO, 'protocol/vectors'));
  assert.ok(results.length >= 15, `only ${results.length} vectors found`);
  assert.deepEqual(results.filter((r) => !r.ok).map((r) => r.name), []);
});

test('64-bit timestamps survive as BigInt; map keys are sorted by their encoding', () => {
  const ts = (BigInt(Date.now()) << 16n) + 3n;
  const back = decode(encode(new Map([['ts', ts], ['a', 1], ['bb', -2]])));
  assert.equal(back.get('ts'), ts);
  assert.deepEqual([...back.keys()], ['a', 'bb', 'ts'].sort((x, y) => x.length - y.length || (x < y ? -1 : 1)));
  assert.throws(() => encode(1.5), /no floats/);
});
