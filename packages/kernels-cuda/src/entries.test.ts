import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  exports: Record<string, Record<string, string> | string>;
};

describe('entry points', () => {
  it('the main entry is the CUDA backend only: no simulator, no GPU check, no vendor-neutral facade', async () => {
    const main = await import('./index.js');
    expect(Object.keys(main).sort()).toEqual(['CUDA_SPEC', 'backendName', 'createBackend', 'cudaAvailability', 'toKernelError']);
  });

  it('./testing has the simulator and the GPU check', async () => {
    const testing = await import('./testing.js');
    expect(Object.keys(testing).sort()).toEqual(['SIM_WARPS', 'createSimBackend', 'formatGpuCheck', 'runGpuCheck', 'simAvailability', 'simSpec']);
  });

  it('./gpu has the vendor-neutral GPU facade @kvq/kernels-rocm builds on', async () => {
    const gpu = await import('./gpu.js');
    expect(Object.keys(gpu).sort()).toEqual(['addonCandidates', 'createGpuBackend', 'gpuAvailability', 'probeAddon', 'probeInChild', 'tryLoadAddon']);
  });

  it('the exports map points each subpath at those sources and at its built files', () => {
    for (const [sub, src] of [
      ['.', './src/index.ts'],
      ['./gpu', './src/gpu.ts'],
      ['./testing', './src/testing.ts'],
    ] as const) {
      const entry = pkg.exports[sub] as Record<string, string>;
      const name = sub === '.' ? 'index' : sub.slice(2);
      expect(entry).toEqual({ '@kvq/source': src, types: `./dist/${name}.d.ts`, import: `./dist/${name}.js` });
    }
  });
});
