/**
 * `@kvq/kernels-cuda`: the CUDA backend of kvq. Every op of the `@kvq/kernels` contract as CUDA kernels compiled
 * from one source that `@kvq/kernels-rocm` also builds with hipcc (csrc/vendor.h maps the CUDA names to HIP),
 * with the FP8 conversions shared with `@kvq/kernels-cpu` (csrc/fp8.h, proven bit-exact against CUDA's own).
 * Implements the {@link KernelBackend} contract; `@kvq/kernels`' loader imports {@link createBackend} from here.
 * @see ../README.md
 * @module
 */
import type { KernelBackend } from '@kvq/kernels';

export {
  backendName,
  createBackend,
  createGpuBackend,
  cudaAvailability,
  gpuAvailability,
  type AttentionBenchOptions,
  type GpuAvailability,
  type GpuBackend,
  type GpuBackendOptions,
} from './backend.js';
export type {
  Fp8VendorCheckResult,
  GpuDeviceInfo,
  GpuVendor,
  NativeAttentionBenchResult,
  NativeProbe,
} from './addon-types.js';
export { addonCandidates, CUDA_SPEC, probeAddon, probeInChild, tryLoadAddon, type AddonLoad, type AddonProbe, type GpuVendorSpec } from './load.js';
export { toKernelError } from './errors.js';
export { createSimBackend, SIM_WARPS, simAvailability, simSpec, type SimBackendOptions, type SimWarp } from './sim.js';
export { runGpuCheck, formatGpuCheck, type GpuCheckOptions, type GpuCheckReport } from './gpu-check.js';
export type { KernelBackend };
