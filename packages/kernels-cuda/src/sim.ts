/**
 * The GPU kernels on the CPU: `build/Release/kvq_sim_w32.node` and `kvq_sim_w64.node` are csrc/'s kernels compiled by
 * the host C++ compiler against csrc/sim (every CUDA thread a fiber, `__syncthreads` and warp shuffles as real
 * barriers, warp width 32 as on NVIDIA or 64 as on AMD CDNA). They implement the same contract through the same
 * facade as the CUDA backend, so the parity suite runs on the very kernel code without a GPU. For testing only:
 * correct results here prove the kernels' logic (indexing, synchronization, reductions, split-k merging, both warp
 * widths), not their speed, and not the vendor compilers' code generation.
 * @module
 */
import { fileURLToPath } from 'node:url';
import { createGpuBackend, gpuAvailability, type GpuAvailability, type GpuBackend, type GpuBackendOptions } from './backend.js';
import type { GpuVendorSpec } from './load.js';

/** Warp widths the simulator is built for: 32 (NVIDIA) and 64 (AMD CDNA wavefronts). */
export type SimWarp = 32 | 64;

/** Warp widths there are simulator builds of. */
export const SIM_WARPS: readonly SimWarp[] = Object.freeze([32, 64] as const);

const specs = new Map<SimWarp, GpuVendorSpec>();

/** The loader spec of the simulator addon for a warp width (`KVQ_SIM_W32_ADDON` / `KVQ_SIM_W64_ADDON` override the path). */
export function simSpec(warp: SimWarp): GpuVendorSpec {
  if (warp !== 32 && warp !== 64) throw new RangeError(`the simulator is built for warp 32 or 64, not ${String(warp)}`);
  let spec = specs.get(warp);
  if (!spec) {
    spec = Object.freeze({
      name: `cuda-sim-w${warp}`,
      vendor: 'sim',
      label: `CUDA simulator (warp ${warp})`,
      packageName: '@kvq/kernels-cuda',
      addonEnv: `KVQ_SIM_W${warp}_ADDON`,
      deviceEnv: 'KVQ_SIM_DEVICE',
      defaultPaths: () => [fileURLToPath(new URL(`../build/Release/kvq_sim_w${warp}.node`, import.meta.url))],
      buildHint: 'Build it with `pnpm --filter @kvq/kernels-cuda build:gpu` (needs only a C++17 compiler and the Node headers)',
    } satisfies GpuVendorSpec);
    specs.set(warp, spec);
  }
  return spec;
}

/** Whether the simulator addon of a warp width is built and loads (probed in a child process). Never throws. */
export function simAvailability(warp: SimWarp = 32): GpuAvailability {
  return gpuAvailability(simSpec(warp));
}

/** Options of {@link createSimBackend}. */
export interface SimBackendOptions extends GpuBackendOptions {
  /** Warp width to simulate. Default 32. */
  readonly warp?: SimWarp | undefined;
}

/**
 * Create a backend that runs the GPU kernels on the CPU simulator. Slow (every simulated thread is a fiber); for
 * tests of the kernels on machines without a GPU.
 * @throws KernelError `BACKEND_UNAVAILABLE` when the simulator addon is not built.
 */
export function createSimBackend(options: SimBackendOptions = {}): GpuBackend {
  const { warp = 32, ...rest } = options;
  return createGpuBackend(simSpec(warp), rest);
}
