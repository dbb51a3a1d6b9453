#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// Builds build/Release/kvq_cpu.node with node-gyp from csrc/ — an explicit step (README, CI, turbo's
// `build:native` task), never an install script, and never a download: node-gyp is pointed at headers that
// are already on this machine (`--nodedir`), and the build fails with instructions when there are none.
//
// Environment:
//   KVQ_NODEDIR          directory whose include/node/ holds node_api.h (default: auto-detected)
//   KVQ_NATIVE_FLAGS     extra C++ flags appended to every translation unit (e.g. "-g")
//   KVQ_SKIP_NATIVE=1    skip the build (the package then reports itself unavailable)
//   KVQ_NATIVE_JOBS      parallel compile jobs (default: number of CPUs)
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { nodeGypToolchain, pkgDir } from './native-env.mjs';

function log(msg) {
  process.stdout.write(`[kvq build:native] ${msg}\n`);
}

function fail(msg) {
  process.stderr.write(`[kvq build:native] ERROR: ${msg}\n`);
  process.exit(1);
}

if (process.env.KVQ_SKIP_NATIVE === '1') {
  log('KVQ_SKIP_NATIVE=1: skipping the native build; @kvq/kernels-cpu will report itself unavailable.');
  process.exit(0);
}

const { nodedir, nodeGyp } = nodeGypToolchain(fail);

const jobs = process.env.KVQ_NATIVE_JOBS ?? String(availableParallelism());
const env = { ...process.env };
if (process.env.KVQ_NATIVE_FLAGS) env.CXXFLAGS = `${env.CXXFLAGS ?? ''} ${process.env.KVQ_NATIVE_FLAGS}`.trim();
// Keep node-gyp's own cache inside the package so it never looks at (or fills) a shared download cache.
env.npm_config_devdir = join(pkgDir, 'build', '.node-gyp');

/** Run node-gyp; returns its exit status (non-zero = failed). */
function gypStatus(args) {
  log(`node-gyp ${args.join(' ')}`);
  const r = spawnSync(process.execPath, [nodeGyp, ...args], { cwd: pkgDir, env, stdio: 'inherit' });
  if (r.error) fail(`could not run node-gyp: ${r.error.message}`);
  return r.status ?? 1;
}

function gypFailed(args, status) {
  fail(
    `node-gyp ${args[0]} failed (exit ${status}). It needs python3, make and a C++17 compiler (g++ >= 9 or ` +
      'clang >= 10); see the output above.',
  );
}

function gyp(args) {
  const status = gypStatus(args);
  if (status !== 0) gypFailed(args, status);
}

const makefile = join(pkgDir, 'build', 'Makefile');
const gypFile = join(pkgDir, 'binding.gyp');
const configured = existsSync(makefile) && statSync(makefile).mtimeMs >= statSync(gypFile).mtimeMs;
if (!configured) gyp(['configure', `--nodedir=${nodedir}`, '--release']);
const buildArgs = ['build', `--nodedir=${nodedir}`, '--release', `--jobs=${jobs}`];
const status = gypStatus(buildArgs);
if (status !== 0) {
  // A parallel make in a freshly configured tree once failed to open a dependency file; a real compile error
  // fails again here, so one serial retry costs nothing but time.
  log(`build failed (exit ${status}); retrying once with --jobs=1`);
  const again = ['build', `--nodedir=${nodedir}`, '--release', '--jobs=1'];
  const status2 = gypStatus(again);
  if (status2 !== 0) gypFailed(again, status2);
}

// Load the result in a child process first: a broken binary must not take the caller down.
const addon = join(pkgDir, 'build', 'Release', 'kvq_cpu.node');
const probe = spawnSync(
  process.execPath,
  ['-e', `const a=require(${JSON.stringify(addon)});const i=a.cpuInfo();console.log(JSON.stringify({abi:a.abi,isas:i.isas,cpus:i.cpus}))`],
  { encoding: 'utf8' },
);
if (probe.status !== 0) fail(`the built addon does not load: ${probe.stderr.trim()}`);
log(`built ${addon}: ${probe.stdout.trim()}`);
