import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeLoad, isKernelError, loadBackend } from '@kvq/kernels';
import { afterEach, describe, expect, it } from 'vitest';
import { NATIVE_ABI as ADDON_ABI } from '@kvq/kernels/native';
import { createBackend, createGpuBackend, cudaAvailability } from './backend.js';
import { CUDA_SPEC, type GpuVendorSpec } from './load.js';

const avail = cudaAvailability();
const dir = mkdtempSync(join(tmpdir(), 'kvq-cuda-backend-'));

function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  throw new Error('expected a throw');
}

/** A spec whose only addon candidate is a fake CommonJS module with `body` (always probed: no driver check). */
function fakeSpec(name: string, body: string): GpuVendorSpec {
  const p = join(dir, `${name}.cjs`);
  writeFileSync(p, body);
  return { ...CUDA_SPEC, name: `cuda-${name}`, addonEnv: 'KVQ_TEST_UNSET_ADDON', defaultPaths: () => [p], driverAbsent: undefined };
}

describe('availability', () => {
  it('says why when unavailable (the addon is not built, or there is no driver / device)', () => {
    if (avail.available) {
      expect(avail.probe.deviceCount).toBeGreaterThan(0);
      return;
    }
    expect(avail.reason).toMatch(/no usable native addon|no usable CUDA device|driver|device|does not load|stale or foreign build/);
  });
});

describe.skipIf(avail.available)('without a usable GPU (this machine)', () => {
  it('createBackend throws BACKEND_UNAVAILABLE carrying the probe reason', () => {
    const e = thrown(() => createBackend());
    expect(isKernelError(e, 'BACKEND_UNAVAILABLE')).toBe(true);
    expect((e as Error).message).toContain('@kvq/kernels-cuda is unavailable');
    if (!avail.available) expect((e as Error).message).toContain(avail.reason.slice(0, 40));
  });

  it('without the child probe, the in-process load fails just as cleanly', () => {
    const e = thrown(() => createBackend({ probe: false }));
    expect(isKernelError(e, 'BACKEND_UNAVAILABLE')).toBe(true);
  });

  it("the @kvq/kernels loader falls back past 'cuda' and records why", async () => {
    const loaded = await loadBackend({ env: '', candidates: [{ name: 'cuda', load: () => import('./index.js') }] });
    expect(loaded.backend.name).toBe('reference');
    expect(loaded.rejected).toHaveLength(1);
    expect(loaded.rejected[0]!.name).toBe('cuda');
    expect(loaded.rejected[0]!.reason).toContain('@kvq/kernels-cuda is unavailable');
    expect(describeLoad(loaded)).toMatch(/^reference .*rejected: cuda: createBackend\(\) failed/);
  });

  it('KVQ_BACKEND=cuda fails loudly instead of falling back', async () => {
    await expect(loadBackend({ env: 'cuda', candidates: [{ name: 'cuda', load: () => import('./index.js') }] })).rejects.toMatchObject({
      code: 'BACKEND_UNAVAILABLE',
    });
  });
});

describe('a broken binary never takes the process down', () => {
  it('a segfault on load is caught by the child probe', () => {
    const spec = fakeSpec('segv', `process.kill(process.pid, 'SIGSEGV');`);
    const e = thrown(() => createGpuBackend(spec));
    expect(isKernelError(e, 'BACKEND_UNAVAILABLE')).toBe(true);
    expect((e as Error).message).toMatch(/crashed with SIGSEGV/);
  });

  it('a runtime that sees no device is reported with its reason', () => {
    const probe = { ok: false, reason: 'no usable CUDA device: cudaErrorNoDevice', vendor: 'cuda', targets: 'sm_90', runtimeVersion: 13000, driverVersion: 13000, deviceCount: 0, devices: [] };
    const spec = fakeSpec('nodev', `module.exports = { abi: ${ADDON_ABI}, vendor: 'cuda', probe: () => (${JSON.stringify(probe)}) };`);
    const e = thrown(() => createGpuBackend(spec));
    expect((e as Error).message).toContain('cudaErrorNoDevice');
  });

  it('a device ordinal past the device count is BACKEND_UNAVAILABLE', () => {
    const probe = { ok: true, vendor: 'cuda', targets: 'sm_90', runtimeVersion: 13000, driverVersion: 13000, deviceCount: 1, devices: [] };
    const spec = fakeSpec('onedev', `module.exports = { abi: ${ADDON_ABI}, vendor: 'cuda', probe: () => (${JSON.stringify(probe)}) };`);
    const e = thrown(() => createGpuBackend(spec, { device: 3 }));
    expect(isKernelError(e, 'BACKEND_UNAVAILABLE')).toBe(true);
    expect((e as Error).message).toContain('device 3 does not exist (1 CUDA device)');
  });

  it("a context constructor's BACKEND_UNAVAILABLE passes through", () => {
    const probe = { ok: true, vendor: 'cuda', targets: 'sm_90', runtimeVersion: 13000, driverVersion: 13000, deviceCount: 1, devices: [] };
    const spec = fakeSpec(
      'ctxfail',
      `module.exports = { abi: ${ADDON_ABI}, vendor: 'cuda', targets: 'sm_90', probe: () => (${JSON.stringify(probe)}),` +
        ` Context: class { constructor() { const e = new Error('cudaSetDevice failed: cudaErrorDevicesUnavailable'); e.code = 'BACKEND_UNAVAILABLE'; throw e; } } };`,
    );
    const e = thrown(() => createGpuBackend(spec));
    expect(isKernelError(e, 'BACKEND_UNAVAILABLE')).toBe(true);
    expect((e as Error).message).toContain('cudaErrorDevicesUnavailable');
  });
});

describe('options', () => {
  const saved = process.env.KVQ_CUDA_DEVICE;
  afterEach(() => {
    if (saved === undefined) delete process.env.KVQ_CUDA_DEVICE;
    else process.env.KVQ_CUDA_DEVICE = saved;
  });

  it('bad device options are INVALID_ARGUMENT naming the option', () => {
    expect(thrown(() => createBackend({ device: -1 }))).toMatchObject({ code: 'INVALID_ARGUMENT', argument: 'device' });
    expect(thrown(() => createBackend({ device: 1.5 }))).toMatchObject({ code: 'INVALID_ARGUMENT', argument: 'device' });
    process.env.KVQ_CUDA_DEVICE = 'first';
    expect(thrown(() => createBackend())).toMatchObject({ code: 'INVALID_ARGUMENT', argument: 'KVQ_CUDA_DEVICE' });
  });
});
