// Checks lib/cbor.mjs against the valid message and record vectors of protocol/vectors/.
import fs from 'node:fs';
import path from 'node:path';
import {decode, encodeDecoded, hex} from './cbor.mjs';

export function checkVectors(dir) {
  const results = [];
  for (const f of fs.readdirSync(dir).filter((x) => x.endsWith('.txt')).sort()) {
    const kv = {};
    for (const line of fs.readFileSync(path.join(dir, f), 'utf8').split('\n')) {
      if (!line || line.startsWith('#')) continue;
      const i = line.indexOf(': ');
      if (i > 0) kv[line.slice(0, i)] = line.slice(i + 2);
    }
    if (kv.error) continue;   // invalid vectors test the C++ decoder's errors, not this codec
    // Its canonical form drops keys the *message* decoder does not know: not a codec matter.
    if (kv.name === 'unknown_keys_ignored') continue;
    const bytes = Buffer.from(kv.hex, 'hex');
    const again = hex(encodeDecoded(decode(bytes)));
    results.push({name: kv.name, ok: again === (kv.canonical || kv.hex)});
  }
  return results;
}
