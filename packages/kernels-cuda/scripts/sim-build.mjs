// SPDX-License-Identifier: Apache-2.0
//
// Builds the CUDA simulator addons: the very kernel sources of csrc/ (runtime.cu, ops.cu, attention.cu) compiled
// as C++ by the host compiler against csrc/sim/ (KVQ_SIM), linked with csrc/addon.cc into
// build/Release/kvq_sim_w32.node (NVIDIA's warp of 32) and kvq_sim_w64.node (AMD CDNA's wavefront of 64).
// They run every kernel on the CPU, so the kernels' logic is tested on machines without a GPU. Needs only a C++17
// compiler, the Node headers and node-addon-api (what @kvq/kernels-cpu needs); downloads nothing.
//
// Linux only (elsewhere it says so and skips). Environment: KVQ_SKIP_SIM=1 skips it; CXX, KVQ_NODEDIR,
// KVQ_NODE_ADDON_API_DIR as for the GPU build.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { delimiter, join, resolve } from 'node:path';
import { findNodeDir, kernelsIncludeDir } from './gpu-build.mjs';

const KERNEL_SOURCES = ['runtime.cu', 'ops.cu', 'wquant.cu', 'kvquant.cu', 'attention.cu'];
export const SIM_WARPS = [32, 64];

function which(cmd) {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && existsSync(join(dir, cmd))) return join(dir, cmd);
  }
  return undefined;
}

function run(cmd, args) {
  return new Promise((res) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    child.on('error', (e) => res({ status: -1, output: String(e) }));
    child.on('close', (status) => res({ status, output }));
  });
}

async function pool(jobs, n) {
  const results = new Array(jobs.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, jobs.length) }, async () => {
      while (next < jobs.length) {
        const i = next++;
        results[i] = await jobs[i]();
      }
    }),
  );
  return results;
}

/**
 * Build the simulator addons of a package.
 * @param {{ pkgDir: string, csrcDir: string, label: string }} o
 * @returns {Promise<{ status: 'skipped' | 'linked', reason?: string, addons: string[] }>}
 */
export async function buildSimAddons(o) {
  const log = (msg) => process.stdout.write(`[${o.label} build:gpu] ${msg}\n`);
  if (process.env.KVQ_SKIP_NATIVE === '1' || process.env.KVQ_SKIP_SIM === '1') {
    log('simulator addons skipped (KVQ_SKIP_NATIVE / KVQ_SKIP_SIM).');
    return { status: 'skipped', reason: 'skipped by environment', addons: [] };
  }
  if (process.platform !== 'linux') {
    // The fiber switch is written for Linux (x86-64 assembly, else glibc's ucontext).
    log(`simulator addons not built: Linux only (this is ${process.platform}).`);
    return { status: 'skipped', reason: `platform ${process.platform}`, addons: [] };
  }
  const started = Date.now();
  const nodeDir = findNodeDir();
  let addonApi = process.env.KVQ_NODE_ADDON_API_DIR;
  if (!addonApi) {
    try {
      addonApi = resolve(createRequire(join(o.pkgDir, 'package.json'))('node-addon-api').include_dir);
    } catch {
      addonApi = undefined;
    }
  }
  const cxx = process.env.CXX || which('c++') || which('g++');
  const missing = [
    cxx ? undefined : 'no C++ compiler (c++ / g++; set CXX)',
    nodeDir ? undefined : 'no Node headers (include/node/node_api.h; set KVQ_NODEDIR)',
    addonApi ? undefined : 'node-addon-api is not installed (run pnpm install)',
  ].filter(Boolean);
  if (missing.length > 0) {
    log(`simulator addons not built: ${missing.join('; ')}.`);
    return { status: 'skipped', reason: missing.join('; '), addons: [] };
  }
  const outDir = join(o.pkgDir, 'build', 'Release');
  const objDir = join(outDir, 'obj');
  mkdirSync(objDir, { recursive: true });
  const common = [`-I${kernelsIncludeDir(o.pkgDir)}`, '-std=c++17', '-O2', '-ffp-contract=off', '-fPIC', '-fvisibility=hidden', '-Wall', '-Wno-unknown-pragmas', '-Wno-unused-function'];
  const jobs = [];
  const addonObj = join(objDir, 'addon.sim.o');
  jobs.push(() =>
    run(cxx, [
      ...common, '-DNAPI_VERSION=8', '-DNODE_ADDON_API_CPP_EXCEPTIONS', '-DNODE_ADDON_API_CPP_EXCEPTIONS_ALL',
      '-DNODE_ADDON_API_DISABLE_DEPRECATED', `-I${addonApi}`, `-I${join(nodeDir, 'include', 'node')}`,
      '-c', join(o.csrcDir, 'addon.cc'), '-o', addonObj,
    ]).then((r) => ({ ...r, what: 'addon.cc' })),
  );
  const objects = new Map();
  for (const warp of SIM_WARPS) {
    const defs = ['-DKVQ_SIM=1', `-DKVQ_SIM_WARP=${warp}`, `-DKVQ_TARGETS=sim-w${warp}`];
    const objs = [];
    for (const src of KERNEL_SOURCES) {
      const obj = join(objDir, `${src.replace(/\.cu$/, '')}.sim${warp}.o`);
      objs.push(obj);
      jobs.push(() => run(cxx, [...common, ...defs, '-x', 'c++', '-c', join(o.csrcDir, src), '-o', obj]).then((r) => ({ ...r, what: `${src} (warp ${warp})` })));
    }
    const simObj = join(objDir, `cuda_sim.sim${warp}.o`);
    objs.push(simObj);
    jobs.push(() => run(cxx, [...common, ...defs, '-c', join(o.csrcDir, 'sim', 'cuda_sim.cc'), '-o', simObj]).then((r) => ({ ...r, what: `sim/cuda_sim.cc (warp ${warp})` })));
    objects.set(warp, objs);
  }
  const n = Math.max(1, Math.min(4, Number(process.env.KVQ_NATIVE_JOBS) || availableParallelism()));
  const results = await pool(jobs, n);
  const failed = results.filter((r) => r.status !== 0);
  if (failed.length > 0) {
    process.stderr.write(`[${o.label} build:gpu] ERROR: the simulator build failed:\n${failed.map((r) => `${r.what}:\n${r.output.trim()}`).join('\n')}\n`);
    process.exit(1);
  }
  const addons = [];
  for (const warp of SIM_WARPS) {
    const addon = join(outDir, `kvq_sim_w${warp}.node`);
    const tmp = `${addon}.tmp-${process.pid}`;
    const ld = await run(cxx, ['-shared', '-o', tmp, addonObj, ...objects.get(warp), '-static-libgcc']);
    if (ld.status !== 0) {
      process.stderr.write(`[${o.label} build:gpu] ERROR: linking ${addon} failed:\n${ld.output.trim()}\n`);
      process.exit(1);
    }
    rmSync(addon, { force: true });
    spawnSync('mv', [tmp, addon]);
    addons.push(addon);
  }
  log(`built the CUDA simulator addons (warp 32 and 64) in ${((Date.now() - started) / 1000).toFixed(1)} s: ${addons.join(', ')}`);
  return { status: 'linked', addons };
}
