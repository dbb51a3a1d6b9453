/**
 * Which FP8 KV-cache format an AMD GPU wants, and how vLLM adapts scales to it:
 *
 * - gfx94x (MI300X / MI300A / MI325X, `gcnArchName` containing `gfx94`): the FNUZ formats (`e4m3fnuz`: bias 8, no
 *   negative zero, NaN = 0x80, max 240). Checkpoint scales calibrated for OCP e4m3fn (amax / 448) are doubled,
 *   because an FNUZ byte decodes to half the OCP value; scales computed here use 224 as the effective maximum.
 * - gfx950 (MI350 / MI355) and gfx12 (RDNA4): the OCP formats (`e4m3fn`), no adjustment.
 * - anything else (gfx90a MI200, gfx908, RDNA3, ...): no FP8 hardware; kvq's kernels still run FP8 caches with
 *   their software conversion (csrc/fp8.h), in the OCP format.
 *
 * Sources: vLLM `vllm/platforms/rocm.py` (`is_fp8_fnuz()` = "gfx94" in gcnArchName, `fp8_dtype()`,
 * `supports_fp8()`), `BaseKVCacheMethod` (x2 on FNUZ), `get_fp8_min_max` (224) — see
 * docs/spec/vllm-fp8-kv-cache.md sections 1.3 and 3.
 * @module
 */
import { FP8_FORMATS, scaleFromAmax } from '@kvq/fp8';
import { invalidArgument } from './errors.js';

/** The FP8 KV-cache plan of one AMD architecture. */
export interface RocmFp8Plan {
  /** The base architecture, e.g. `'gfx942'` (features such as `:sramecc+` dropped). */
  readonly arch: string;
  /** FP8 format of the KV cache on this GPU. */
  readonly kvFormat: 'e4m3fnuz' | 'e4m3fn';
  /** Whether that format is FNUZ. */
  readonly fnuz: boolean;
  /** Whether the GPU has FP8 conversion / matrix instructions (gfx94x, gfx95x, gfx12). kvq's kernels do not need them. */
  readonly hardwareFp8: boolean;
  /** Factor applied to checkpoint K/V/Q scales (calibrated for OCP e4m3fn): 2 on FNUZ, else 1. */
  readonly checkpointScaleFactor: 1 | 2;
  /** Effective maximum for scales computed from an amax: 224 for e4m3fnuz (vLLM), 448 for e4m3fn. */
  readonly scaleMax: number;
}

/**
 * The plan for a HIP `gcnArchName` (e.g. `'gfx942:sramecc+:xnack-'`, as `GpuBackend.device.arch` reports it).
 * @throws KernelError `INVALID_ARGUMENT` when the name is not a gfx architecture.
 */
export function rocmFp8Plan(gcnArchName: string): RocmFp8Plan {
  const arch = typeof gcnArchName === 'string' ? gcnArchName.trim().split(':')[0]!.toLowerCase() : '';
  if (!/^gfx[0-9a-f]{3,4}$/.test(arch)) {
    throw invalidArgument('gcnArchName', `gcnArchName must look like 'gfx942' or 'gfx942:sramecc+:xnack-', got ${JSON.stringify(gcnArchName)}`);
  }
  const fnuz = arch.startsWith('gfx94');
  const hardwareFp8 = fnuz || arch.startsWith('gfx95') || arch.startsWith('gfx12');
  const kvFormat = fnuz ? 'e4m3fnuz' : 'e4m3fn';
  return Object.freeze({ arch, kvFormat, fnuz, hardwareFp8, checkpointScaleFactor: fnuz ? 2 : 1, scaleMax: FP8_FORMATS[kvFormat].scaleMax });
}

/**
 * A checkpoint's K/V/Q scales (calibrated for OCP e4m3fn) for this plan: `fround(scale * checkpointScaleFactor)`.
 * Writes `out` (default: a new array).
 * @throws KernelError `INVALID_ARGUMENT` for a scale that is not finite and > 0.
 */
export function adjustCheckpointScales(scales: ArrayLike<number>, plan: RocmFp8Plan, out = new Float32Array(scales.length)): Float32Array {
  for (let i = 0; i < scales.length; i++) {
    const s = scales[i]!;
    if (!Number.isFinite(s) || s <= 0) throw invalidArgument(`scales[${i}]`, `scales[${i}] must be finite and > 0, got ${s}`);
    out[i] = Math.fround(s * plan.checkpointScaleFactor);
  }
  return out;
}

/**
 * The scale for an observed `amax` on this GPU: `amax * headroom / plan.scaleMax` (224 on FNUZ), as `@kvq/fp8`
 * `scaleFromAmax` computes it for `plan.kvFormat`.
 */
export function kvScaleFromAmax(amax: number, plan: RocmFp8Plan, headroom = 1): number {
  return scaleFromAmax(amax, plan.kvFormat, { headroom, maxValue: plan.scaleMax });
}
