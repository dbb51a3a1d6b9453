import { captureOutput } from '@kvq/test-utils';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { main } from './main.js';

// The native CPU package as on a machine where no addon loads (no local build, no platform package):
// createBackend throws with the package's reason. The engine and `kvq env` import it dynamically; both see this.
vi.mock('@kvq/kernels-cpu', () => ({
  createBackend: () => {
    throw new Error('no usable native addon [/bad/kvq_cpu.node (invalid ELF header)]. Fix: npm install @kvq/kernels-cpu-test-triple');
  },
}));

afterEach(() => {
  vi.unstubAllEnvs();
});

describe('kvq backend choice when the native CPU addon is unavailable', () => {
  it('--backend cpu exits 1 with BACKEND_UNAVAILABLE and the reason, generating nothing', async () => {
    vi.stubEnv('KVQ_BACKEND', '');
    const c = captureOutput();
    expect(await main(['generate', '--backend', 'cpu', '--max-tokens', '2', 'In the beginning'], c.io)).toBe(1);
    expect(c.out()).toBe('');
    expect(c.err()).toMatch(/^kvq: backend "cpu" was requested but cannot be used: createBackend\(\) failed: no usable native addon \[\/bad\/kvq_cpu\.node \(invalid ELF header\)\]/);
    expect(c.err()).not.toMatch(/warning/);
  });

  it('KVQ_BACKEND=cpu is an error too', async () => {
    vi.stubEnv('KVQ_BACKEND', 'cpu');
    const c = captureOutput();
    expect(await main(['generate', '--max-tokens', '2', 'In the beginning'], c.io)).toBe(1);
    expect(c.err()).toMatch(/^kvq: KVQ_BACKEND=cpu was requested but cannot be used: .*invalid ELF header/);
  });

  it('the default (auto) runs on the reference backend and prints exactly one warning line naming the reason and the fix', async () => {
    vi.stubEnv('KVQ_BACKEND', '');
    const c = captureOutput();
    expect(await main(['generate', '--json', '--max-tokens', '2', '--temperature', '0', 'In the beginning'], c.io)).toBe(0);
    expect((JSON.parse(c.out()) as { backend: string }).backend).toBe('reference');
    const warnings = c.err().split('\n').filter((l) => l.includes('warning'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/^kvq: warning: using the pure-TypeScript reference backend .*because .*cpu: createBackend\(\) failed: no usable native addon .*Fix: npm install @kvq\/kernels-cpu-test-triple/);
  });

  it('kvq env --json reports the reference backend, the rejected cpu candidate and the fallback warning', async () => {
    vi.stubEnv('KVQ_BACKEND', '');
    const c = captureOutput();
    expect(await main(['env', '--json'], c.io)).toBe(0);
    const env = JSON.parse(c.out()) as { backend: { chosen: string; rejected: { name: string; reason: string }[]; fallback: string | null } };
    expect(env.backend.chosen).toBe('reference');
    expect(env.backend.rejected.find((r) => r.name === 'cpu')?.reason).toMatch(/invalid ELF header/);
    expect(env.backend.fallback).toMatch(/^kvq: using the pure-TypeScript reference backend .*invalid ELF header/);
  });
});
