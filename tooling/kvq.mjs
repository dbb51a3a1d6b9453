#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// `pnpm kvq <command> [options]` in a kvq checkout: builds only what the CLI needs, then runs it.
//
// 1. the TypeScript packages of the CLI (turbo `build --filter=@kvq/cli...`; with `bench --peer` also
//    @kvq/bench-peer), without declaration files (KVQ_BUILD_DTS=0 unless set: running needs only JavaScript);
// 2. in the same turbo run, the native CPU addon (`build:native` of @kvq/kernels-cpu, cached by turbo), unless the
//    addon that loads comes from an installed prebuilt platform package (@kvq/kernels-cpu-<platform>), which needs
//    no build. GPU kernels and the CUDA simulator are never built here: that is `pnpm build:gpu` (and `pnpm test`);
// 3. `node apps/cli/dist/bin.js <command> [options]`, whose exit status this script returns.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const turbo = createRequire(join(root, 'package.json')).resolve('turbo/bin/turbo');
const env = { ...process.env, KVQ_BUILD_DTS: process.env.KVQ_BUILD_DTS ?? '0' };

function step(what, cmd, cmdArgs, options = {}) {
  const r = spawnSync(cmd, cmdArgs, { cwd: root, stdio: 'inherit', env, ...options });
  if (r.status !== 0) {
    process.stderr.write(`kvq: ${what} failed (${r.error ? r.error.message : `exit ${r.status ?? r.signal}`})\n`);
    process.exit(r.status || 1);
  }
}

const peer = args[0] === 'bench' && args.includes('--peer');
const filters = ['--filter=@kvq/cli...', ...(peer ? ['--filter=@kvq/bench-peer...'] : [])];
// First only the CPU package and what it imports (a few seconds), to ask it which addon would load.
step('building @kvq/kernels-cpu', process.execPath, [turbo, 'run', 'build', '--filter=@kvq/kernels-cpu...', '--output-logs=errors-only']);

// A prebuilt platform package needs no build; a local build (or none) is left to turbo's build:native, which
// rebuilds only when csrc/, binding.gyp or the scripts changed.
const probe = spawnSync(
  process.execPath,
  [
    '--input-type=module',
    '-e',
    "const m = await import('@kvq/kernels-cpu'); const b = await m.createBackend(); console.log(b.info.binary ?? ''); b.dispose?.();",
  ],
  { cwd: join(root, 'apps', 'cli'), encoding: 'utf8', env },
);
const binary = probe.status === 0 ? probe.stdout.trim() : '';
const prebuilt = binary !== '' && !binary.startsWith(join(root, 'packages', 'kernels-cpu', 'build') + sep);
if (prebuilt) process.stderr.write(`kvq: native CPU kernels from ${binary} (prebuilt; no native build needed)\n`);

// The rest of the CLI's packages, and the addon when needed: one turbo run, so the C++ compile overlaps the
// TypeScript builds.
step('building the CLI', process.execPath, [turbo, 'run', 'build', ...(prebuilt ? [] : ['build:native']), ...filters, '--output-logs=errors-only']);

const cli = spawnSync(process.execPath, [join(root, 'apps', 'cli', 'dist', 'bin.js'), ...args], { stdio: 'inherit' });
process.exit(cli.status ?? 1);
