#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// `pnpm --filter @kvq/kernels-cuda build:gpu`: compiles csrc/*.cu with nvcc for sm_80, sm_89 and sm_90 (+ PTX)
// and links build/Release/kvq_cuda.node when the CUDA runtime library and Node headers are present. Skipped with a
// message when there is no CUDA toolkit. An explicit step (README, CI, turbo's `build:gpu`), never an install
// script; installs and downloads nothing. See scripts/gpu-build.mjs for the environment variables.
// Then builds the CUDA simulator addons (scripts/sim-build.mjs: the same kernels on the CPU, warp 32 and 64), which
// need only a C++ compiler and run in every test run.
//
//   node scripts/build-native.mjs [--compile-only] [--quick]   (--quick: one target, see gpu-build.mjs)
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildGpuAddon } from './gpu-build.mjs';
import { buildSimAddons } from './sim-build.mjs';

const pkgDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');
await buildGpuAddon({
  vendor: 'cuda',
  pkgDir,
  csrcDir: join(pkgDir, 'csrc'),
  outName: 'kvq_cuda.node',
  label: '@kvq/kernels-cuda',
  compileOnly: process.argv.includes('--compile-only'),
  quick: process.argv.includes('--quick'),
});
await buildSimAddons({ pkgDir, csrcDir: join(pkgDir, 'csrc'), label: '@kvq/kernels-cuda' });
