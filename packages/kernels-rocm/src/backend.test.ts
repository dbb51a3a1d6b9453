import { describeLoad, isKernelError, loadBackend } from '@kvq/kernels';
import { describe, expect, it } from 'vitest';
import { amdDriverAbsent, archUsesFnuz, backendName, createBackend, rocmAvailability, ROCM_SPEC } from './backend.js';

const avail = rocmAvailability();

describe('the ROCm backend', () => {
  it('is the CUDA facade with its own name, addon and variables', () => {
    expect(backendName).toBe('rocm');
    expect(ROCM_SPEC.vendor).toBe('hip');
    expect(ROCM_SPEC.defaultPaths()[0]).toMatch(/kernels-rocm[/\\]build[/\\]Release[/\\]kvq_rocm\.node$/);
    expect(ROCM_SPEC.addonEnv).toBe('KVQ_ROCM_ADDON');
  });

  it('says why when unavailable (not built, no HIP runtime, or no AMD GPU)', () => {
    if (avail.available) return;
    expect(avail.reason).toMatch(/no usable native addon|no usable HIP device|hipErrorNoDevice|does not load|no AMD GPU driver/);
  });
});

describe('the cheap driver check before the child-process probe', () => {
  it('on Linux without /dev/kfd there is certainly no ROCm device; with it, or on another OS, the probe decides', () => {
    expect(amdDriverAbsent('linux', () => false)).toMatch(/^no AMD GPU driver on this machine \(\/dev\/kfd does not exist\)/);
    expect(amdDriverAbsent('linux', (p) => p === '/dev/kfd')).toBeUndefined();
    expect(amdDriverAbsent('win32', () => false)).toBeUndefined();
    expect(ROCM_SPEC.driverAbsent?.()).toBe(amdDriverAbsent());
  });
});

describe.skipIf(avail.available)('without an AMD GPU (this machine)', () => {
  it('createBackend throws BACKEND_UNAVAILABLE with the reason', () => {
    let e: unknown;
    try {
      createBackend();
    } catch (err) {
      e = err;
    }
    expect(isKernelError(e, 'BACKEND_UNAVAILABLE')).toBe(true);
    expect((e as Error).message).toContain('@kvq/kernels-rocm is unavailable');
  });

  it("the @kvq/kernels loader falls back past 'rocm'", async () => {
    const loaded = await loadBackend({ env: '', candidates: [{ name: 'rocm', load: () => import('./index.js') }] });
    expect(loaded.backend.name).toBe('reference');
    expect(loaded.rejected.map((r) => r.name)).toEqual(['rocm']);
    expect(describeLoad(loaded)).toContain('@kvq/kernels-rocm is unavailable');
  });
});

describe('FNUZ FP8 per architecture (BackendInfo.fp8Fnuz)', () => {
  it('gfx94x uses FNUZ; gfx950, gfx12, gfx90a and names that are not gfx architectures do not', () => {
    expect(archUsesFnuz('gfx942:sramecc+:xnack-')).toBe(true);
    expect(archUsesFnuz('gfx940')).toBe(true);
    expect(archUsesFnuz('gfx950')).toBe(false);
    expect(archUsesFnuz('gfx1201')).toBe(false);
    expect(archUsesFnuz('gfx90a:sramecc+:xnack-')).toBe(false);
    expect(archUsesFnuz('sim-w64')).toBe(false);
    expect(ROCM_SPEC.fp8Fnuz).toBe(archUsesFnuz);
  });
});
