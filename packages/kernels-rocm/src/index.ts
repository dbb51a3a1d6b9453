/**
 * `@kvq/kernels-rocm`: the ROCm backend of kvq. The kernels are `@kvq/kernels-cuda`'s CUDA source compiled with
 * hipcc through its vendor shim (wavefront-64 aware), behind the same typed facade; plus the FP8 plan of AMD
 * architectures (FNUZ on MI300 with vLLM's x2 checkpoint-scale adjustment and 224 effective max).
 * @see ../README.md
 * @module
 */
export { archUsesFnuz, backendName, createBackend, rocmAvailability, ROCM_SPEC } from './backend.js';
export { adjustCheckpointScales, kvScaleFromAmax, rocmFp8Plan, type RocmFp8Plan } from './fp8-plan.js';
export type { GpuAvailability, GpuBackend, GpuBackendOptions } from '@kvq/kernels-cuda/gpu';
