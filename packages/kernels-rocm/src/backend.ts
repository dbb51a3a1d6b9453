/**
 * The ROCm backend: the HIP build of `@kvq/kernels-cuda`'s kernel source (`build/Release/kvq_rocm.node`, from
 * `build:gpu`) behind the vendor-neutral GPU facade of `@kvq/kernels-cuda/gpu` (the shared native adapter of
 * `@kvq/kernels/native` plus device, probe and residency), told apart from CUDA by {@link ROCM_SPEC}.
 * @module
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createGpuBackend, gpuAvailability, type GpuAvailability, type GpuBackend, type GpuBackendOptions, type GpuVendorSpec } from '@kvq/kernels-cuda/gpu';
import { rocmFp8Plan } from './fp8-plan.js';

/** Whether a HIP `gcnArchName` uses the FNUZ FP8 formats (gfx94x); false for names that are not gfx architectures. */
export function archUsesFnuz(gcnArchName: string): boolean {
  try {
    return rocmFp8Plan(gcnArchName).fnuz;
  } catch {
    return false;
  }
}

/** The device node of AMD's kernel driver (amdgpu's KFD), which HIP needs on Linux (containers get it passed in). */
const AMD_KFD_NODE = '/dev/kfd';

/**
 * `driverAbsent` of {@link ROCM_SPEC}: on Linux, no usable AMD GPU driver when {@link AMD_KFD_NODE} does not exist,
 * without starting the child-process probe; elsewhere it cannot tell (`undefined`).
 * @param platform default `process.platform`
 * @param exists default `fs.existsSync`
 */
export function amdDriverAbsent(platform: NodeJS.Platform = process.platform, exists: (path: string) => boolean = existsSync): string | undefined {
  if (platform !== 'linux' || exists(AMD_KFD_NODE)) return undefined;
  return `no AMD GPU driver on this machine (${AMD_KFD_NODE} does not exist), so no ROCm device can be used (KVQ_GPU_PROBE=always probes anyway)`;
}

/** The name the loader and `KVQ_BACKEND` use for this backend. */
export const backendName = 'rocm';

/** Where the ROCm addon is and how it is told apart from the CUDA one. */
export const ROCM_SPEC: GpuVendorSpec = Object.freeze({
  name: backendName,
  vendor: 'hip',
  label: 'ROCm',
  packageName: '@kvq/kernels-rocm',
  addonEnv: 'KVQ_ROCM_ADDON',
  deviceEnv: 'KVQ_ROCM_DEVICE',
  // src/ and dist/ are both one level below the package root.
  defaultPaths: () => [fileURLToPath(new URL('../build/Release/kvq_rocm.node', import.meta.url))],
  buildHint:
    'Build it with `pnpm --filter @kvq/kernels-rocm build:gpu` (needs hipcc and libamdhip64, e.g. apt-get install hipcc libamdhip64-dev rocm-device-libs), or point KVQ_ROCM_ADDON at a kvq_rocm.node',
  // MI300-class GPUs: BackendInfo.fp8Fnuz, so engines pick e4m3fnuz for `fp8` as vLLM does there.
  fp8Fnuz: archUsesFnuz,
  driverAbsent: () => amdDriverAbsent(),
});

/** Probe the ROCm addon in a child process (cached) without creating a backend. Never throws. */
export function rocmAvailability(timeoutMs?: number): GpuAvailability {
  return gpuAvailability(ROCM_SPEC, timeoutMs);
}

/**
 * Create the ROCm backend (the factory the `@kvq/kernels` loader imports for `'rocm'`). Options as
 * `@kvq/kernels-cuda`'s (`device` defaults to `KVQ_ROCM_DEVICE`, else 0).
 * @throws KernelError `BACKEND_UNAVAILABLE` when the addon is not built, does not load, or no AMD GPU is usable
 *   here (the message says which and how to fix it); `INVALID_ARGUMENT` for bad options.
 * @example
 * const gpu = createBackend();
 * const plan = rocmFp8Plan(gpu.device.arch);   // e4m3fnuz on MI300
 */
export function createBackend(options: GpuBackendOptions = {}): GpuBackend {
  return createGpuBackend(ROCM_SPEC, options);
}
