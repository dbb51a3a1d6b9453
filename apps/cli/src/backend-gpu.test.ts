/**
 * `--backend cuda | rocm | auto` on the machine the tests run on, nothing mocked: the CLI hands the engine its GPU
 * candidates (the optional dependencies @kvq/kernels-cuda and @kvq/kernels-rocm). Without a usable GPU, a named GPU
 * backend is an error with the package's reason and generates nothing; `auto` skips the GPUs without a word and runs
 * on the native CPU backend; `kvq env` lists why each GPU was rejected.
 */
import { cpuAvailability } from '@kvq/kernels-cpu';
import { cudaAvailability } from '@kvq/kernels-cuda';
import { rocmAvailability } from '@kvq/kernels-rocm';
import { captureOutput } from '@kvq/test-utils';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { main } from './main.js';

const cuda = cudaAvailability();
const rocm = rocmAvailability();
const cpu = cpuAvailability();
const noGpu = !cuda.available && !rocm.available;

afterEach(() => {
  vi.unstubAllEnvs();
});

describe('the --backend help', () => {
  it('lists auto | cpu | cuda | rocm | reference, the auto order, and what cuda/rocm need', async () => {
    const c = captureOutput();
    expect(await main(['generate', '--help'], c.io)).toBe(0);
    const help = c.out().replace(/\s+/g, ' ');
    expect(help).toContain('--backend NAME kernel backend: auto | cpu | cuda | rocm | reference');
    expect(help).toContain('auto tries cuda, rocm, cpu, then reference');
    expect(help).toContain('pnpm --filter @kvq/kernels-cuda build:gpu');
  });
});

describe.skipIf(cuda.available)(`--backend cuda without a usable CUDA GPU (here: ${cuda.available ? 'one is usable' : cuda.reason})`, () => {
  it('exits 1 naming cuda and the reason, and prints no tokens', async () => {
    vi.stubEnv('KVQ_BACKEND', '');
    const c = captureOutput();
    expect(await main(['generate', '--backend', 'cuda', '--max-tokens', '4', '--temperature', '0', 'In the beginning'], c.io)).toBe(1);
    expect(c.out()).toBe('');
    const lines = c.err().trimEnd().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^kvq: backend "cuda" was requested but cannot be used: createBackend\(\) failed: @kvq\/kernels-cuda is unavailable: /);
    if (!cuda.available) expect(lines[0]).toContain(cuda.reason);
  });

  it('KVQ_BACKEND=cuda is the same error', async () => {
    vi.stubEnv('KVQ_BACKEND', 'cuda');
    const c = captureOutput();
    expect(await main(['generate', '--max-tokens', '4', 'In the beginning'], c.io)).toBe(1);
    expect(c.out()).toBe('');
    expect(c.err()).toMatch(/^kvq: KVQ_BACKEND=cuda was requested but cannot be used: .*@kvq\/kernels-cuda is unavailable/);
  });
});

describe.skipIf(rocm.available)('--backend rocm without a usable AMD GPU', () => {
  it('exits 1 naming rocm and the reason', async () => {
    vi.stubEnv('KVQ_BACKEND', '');
    const c = captureOutput();
    expect(await main(['generate', '--backend', 'rocm', '--max-tokens', '4', 'In the beginning'], c.io)).toBe(1);
    expect(c.out()).toBe('');
    expect(c.err()).toMatch(/^kvq: backend "rocm" was requested but cannot be used: createBackend\(\) failed: @kvq\/kernels-rocm is unavailable: /);
    if (!rocm.available) expect(c.err()).toContain(rocm.reason);
  });
});

describe.skipIf(!noGpu || !cpu.available)(
  `--backend auto on a CPU-only machine${cpu.available ? '' : ` (skipped: the native CPU addon is unavailable: ${cpu.reason})`}`,
  () => {
    it('runs on cpu and prints no warning about the GPUs it skipped', async () => {
      vi.stubEnv('KVQ_BACKEND', '');
      const c = captureOutput();
      expect(await main(['generate', '--backend', 'auto', '--json', '--max-tokens', '4', '--temperature', '0', 'In the beginning'], c.io)).toBe(0);
      const out = JSON.parse(c.out()) as { backend: string; token_ids: number[] };
      expect(out.backend).toBe('cpu');
      expect(out.token_ids).toHaveLength(4);
      expect(c.err()).not.toMatch(/warning|cuda|rocm/i);
    });

    it('kvq env lists cuda and rocm as rejected with their reasons, cpu as chosen, and no fallback', async () => {
      vi.stubEnv('KVQ_BACKEND', '');
      const c = captureOutput();
      expect(await main(['env', '--json'], c.io)).toBe(0);
      const env = JSON.parse(c.out()) as { backend: { chosen: string; rejected: { name: string; reason: string }[]; fallback: string | null } };
      expect(env.backend.chosen).toBe('cpu');
      expect(env.backend.fallback).toBeNull();
      expect(env.backend.rejected.map((r) => r.name)).toEqual(['cuda', 'rocm']);
      if (!cuda.available) expect(env.backend.rejected[0]!.reason).toBe(`createBackend() failed: @kvq/kernels-cuda is unavailable: ${cuda.reason}`);
      if (!rocm.available) expect(env.backend.rejected[1]!.reason).toBe(`createBackend() failed: @kvq/kernels-rocm is unavailable: ${rocm.reason}`);
      const text = captureOutput();
      expect(await main(['env'], text.io)).toBe(0);
      expect(text.out()).toMatch(/^ {2}chosen: cpu: /m);
      expect(text.out()).toMatch(/^ {2}rejected cuda: createBackend\(\) failed: @kvq\/kernels-cuda is unavailable: /m);
      expect(text.out()).toMatch(/^ {2}rejected rocm: createBackend\(\) failed: @kvq\/kernels-rocm is unavailable: /m);
    });
  },
);
