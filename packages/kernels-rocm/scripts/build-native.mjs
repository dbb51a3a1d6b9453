#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// `pnpm --filter @kvq/kernels-rocm build:gpu`: compiles @kvq/kernels-cuda's csrc/*.cu (the one kernel source)
// with hipcc (HIP_PLATFORM=amd) for gfx90a and gfx940 (+ gfx942 / gfx950 when the compiler knows them) and links
// build/Release/kvq_rocm.node against libamdhip64 when it is present. Skipped with a message when hipcc is absent.
// Installs and downloads nothing. See @kvq/kernels-cuda's scripts/gpu-build.mjs for the environment variables.
//
//   node scripts/build-native.mjs [--compile-only] [--quick]   (--quick: one target, see gpu-build.mjs)
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const pkgDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');
let cudaDir;
try {
  cudaDir = dirname(createRequire(join(pkgDir, 'package.json')).resolve('@kvq/kernels-cuda/package.json'));
} catch {
  // Not installed as a dependency (e.g. a bare checkout): the sibling package of the monorepo.
  cudaDir = resolve(pkgDir, '..', 'kernels-cuda');
}
const { buildGpuAddon } = await import(pathToFileURL(join(cudaDir, 'scripts', 'gpu-build.mjs')).href);
await buildGpuAddon({
  vendor: 'hip',
  pkgDir,
  csrcDir: join(cudaDir, 'csrc'),
  outName: 'kvq_rocm.node',
  label: '@kvq/kernels-rocm',
  compileOnly: process.argv.includes('--compile-only'),
  quick: process.argv.includes('--quick'),
});
