// SPDX-License-Identifier: Apache-2.0
//
// The layering of the root README's dependency diagram, as data: which workspace packages each package may import.
// `.dependency-cruiser.cjs` turns it into rules; `boundaries.test.ts` plants violations and checks they are caught.
// Nothing imports upward or sideways; test-only packages (@kvq/fixtures, @kvq/test-utils) are imported only from
// tests, benchmarks and `testing/` helpers (bench-peer, a private benchmark app, also at run time).

/** Workspace folder of each package (the key is its name without the @kvq/ scope). */
const DIRS = {
  fp8: 'packages/fp8',
  'model-tiny': 'packages/model-tiny',
  cache: 'packages/cache',
  'cache-redis': 'packages/cache-redis',
  kernels: 'packages/kernels',
  'kernels-cpu': 'packages/kernels-cpu',
  'kernels-cuda': 'packages/kernels-cuda',
  'kernels-rocm': 'packages/kernels-rocm',
  engine: 'packages/engine',
  calibrate: 'packages/calibrate',
  server: 'apps/server',
  cli: 'apps/cli',
  'bench-peer': 'packages/bench-peer',
  fixtures: 'tooling/fixtures',
  'test-utils': 'tooling/test-utils',
};

/** Packages each package's source may import at run time (besides itself). */
const ALLOWED = {
  fp8: [],
  'model-tiny': [],
  cache: ['fp8'],
  // The shared Redis / Valkey tier: the only package with a network client; nothing below it imports it.
  'cache-redis': ['fp8', 'cache'],
  kernels: ['fp8', 'cache'],
  'kernels-cpu': ['fp8', 'kernels'],
  'kernels-cuda': ['fp8', 'kernels'],
  // The ROCm backend is the HIP build of kernels-cuda's one kernel source and reuses its GPU facade.
  'kernels-rocm': ['fp8', 'kernels', 'kernels-cuda'],
  engine: ['fp8', 'cache', 'kernels', 'kernels-cpu'],
  calibrate: ['fp8', 'cache', 'kernels', 'engine'],
  // The apps hand the engine their GPU backend candidates (optional dependencies, imported only when tried).
  server: ['fp8', 'cache', 'cache-redis', 'kernels', 'kernels-cuda', 'kernels-rocm', 'engine', 'model-tiny'],
  cli: ['fp8', 'cache', 'kernels', 'kernels-cpu', 'kernels-cuda', 'kernels-rocm', 'engine', 'calibrate', 'server', 'model-tiny'],
  'bench-peer': ['fp8', 'cache', 'kernels', 'engine', 'calibrate', 'model-tiny', 'fixtures'],
  fixtures: ['model-tiny'],
  'test-utils': [],
};

/** Packages that tests, benchmarks and `testing/` helpers may import on top of ALLOWED. */
const TEST_ONLY = {
  all: ['fixtures', 'test-utils', 'model-tiny'],
  // The engine's GPU-simulator test runs kvq-tiny on kernels-cuda's simulator.
  engine: ['kernels-cuda'],
  // Its parity kit's property tests compare with the cache package's storage layout.
  'kernels-cpu': ['cache'],
  'kernels-cuda': ['cache'],
};

/** Files that count as tests (relative to the repository root). */
const TEST_FILE = '(\\.test\\.ts|test-helpers\\.ts|\\.test-d\\.ts|\\.bench\\.ts)$|/src/testing/|/src/bench/|/test/';

module.exports = { DIRS, ALLOWED, TEST_ONLY, TEST_FILE };
