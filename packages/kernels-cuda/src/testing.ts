/**
 * `@kvq/kernels-cuda/testing`: what tests and the GPU check use, kept out of the main entry. The CUDA simulator
 * backend (csrc/'s kernels compiled by the host C++ compiler and run on the CPU, warp 32 and 64: for parity tests
 * of the kernels on machines without a GPU) and {@link runGpuCheck} (the parity suite, FP8 checks and benchmarks on
 * a real device, what `kvq-gpu-check` and `tooling/gpu-check.sh` run). Not for production inference.
 * @module
 */
export { createSimBackend, SIM_WARPS, simAvailability, simSpec, type SimBackendOptions, type SimWarp } from './sim.js';
export { formatGpuCheck, runGpuCheck, type GpuCheckOptions, type GpuCheckReport } from './gpu-check.js';
