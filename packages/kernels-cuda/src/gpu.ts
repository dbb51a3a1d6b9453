/**
 * `@kvq/kernels-cuda/gpu`: the vendor-neutral GPU facade, for packages that build their own GPU backend from this
 * package's kernel source (`@kvq/kernels-rocm`). A {@link GpuVendorSpec} says where the addon is and what it must
 * report; {@link createGpuBackend} probes it in a child process, loads it and opens the device, and returns a
 * {@link GpuBackend}: the shared native adapter of `@kvq/kernels/native` plus device information, residency, device
 * FP8 checks and benchmarks. The loading steps (probe, candidates, in-process load) are here for tools and tests.
 * @module
 */
export {
  createGpuBackend,
  gpuAvailability,
  type AttentionBenchOptions,
  type GpuAvailability,
  type GpuBackend,
  type GpuBackendOptions,
} from './backend.js';
export type { Fp8VendorCheckResult, GpuDeviceInfo, GpuVendor, NativeAttentionBenchResult, NativeProbe, TransferStats } from './addon-types.js';
export { addonCandidates, probeAddon, probeInChild, tryLoadAddon, type AddonLoad, type AddonProbe, type GpuVendorSpec } from './load.js';
