import { CalibrateError } from './errors.js';

/**
 * llm-compressor's min/max observers (`llmcompressor/observers/min_max.py`, spec §4.3):
 * - `static_minmax`: running min and max over every observation (kvq's default: the amax of all samples).
 * - `memoryless_minmax`: min and max of the latest observation only (compressed-tensors' default for a hand-written
 *   `kv_cache_scheme` since 2026-01, i.e. the last calibration sample decides).
 * - `minmax`: exponential moving average `m ← m + c·(new − m)`, c = {@link MINMAX_AVERAGING_CONSTANT}, the first
 *   observation initializing it.
 */
export type ObserverKind = 'static_minmax' | 'memoryless_minmax' | 'minmax';

/** Every {@link ObserverKind}, default first. */
export const OBSERVER_KINDS: readonly ObserverKind[] = Object.freeze(['static_minmax', 'memoryless_minmax', 'minmax']);

/** llm-compressor's default `averaging_constant` of the `minmax` (moving average) observer. */
export const MINMAX_AVERAGING_CONSTANT = 0.01;

/**
 * Min/max statistics of `channels` independent channels (1 for a per-tensor scale, one per head for `attn_head`).
 * Symmetric FP8 scales use `amax = max(-min, max)` after clamping `min <= 0 <= max`, as compressed-tensors'
 * `calculate_qparams` does.
 */
export class MinMaxObserver {
  readonly kind: ObserverKind;
  readonly channels: number;
  readonly averagingConstant: number;
  private readonly min: Float64Array;
  private readonly max: Float64Array;
  private readonly absMax: Float64Array;
  private count = 0;

  /**
   * @param channels number of independent statistics (integer >= 1)
   * @param averagingConstant for `minmax` only; default 0.01
   */
  constructor(kind: ObserverKind, channels: number, averagingConstant = MINMAX_AVERAGING_CONSTANT) {
    this.kind = kind;
    this.channels = channels;
    this.averagingConstant = averagingConstant;
    this.min = new Float64Array(channels);
    this.max = new Float64Array(channels);
    this.absMax = new Float64Array(channels);
  }

  /** Observations so far. */
  get observations(): number {
    return this.count;
  }

  /**
   * Add one observation: the min and max of each channel over the observed tensor.
   * @param min length `channels`
   * @param max length `channels`
   */
  update(min: ArrayLike<number>, max: ArrayLike<number>): void {
    const first = this.count === 0;
    const c = this.averagingConstant;
    for (let i = 0; i < this.channels; i++) {
      const lo = min[i]!;
      const hi = max[i]!;
      this.absMax[i] = Math.max(this.absMax[i]!, -lo, hi);
      if (first || this.kind === 'memoryless_minmax') {
        this.min[i] = lo;
        this.max[i] = hi;
      } else if (this.kind === 'static_minmax') {
        this.min[i] = Math.min(this.min[i]!, lo);
        this.max[i] = Math.max(this.max[i]!, hi);
      } else {
        this.min[i] = this.min[i]! + c * (lo - this.min[i]!);
        this.max[i] = this.max[i]! + c * (hi - this.max[i]!);
      }
    }
    this.count++;
  }

  /** The statistic a symmetric scale is computed from, per channel: `max(-min(min, 0), max(max, 0))`. */
  amax(): Float64Array {
    return Float64Array.from({ length: this.channels }, (_, i) => Math.max(-Math.min(this.min[i]!, 0), Math.max(this.max[i]!, 0)));
  }

  /** The largest |x| ever observed per channel (whatever the observer kind), for reports. */
  observedAbsMax(): Float64Array {
    return Float64Array.from(this.absMax);
  }
}

/**
 * Per-head min and max of `x` laid out `[numTokens, numHeads, headDim]` (only the first
 * `numTokens * numHeads * headDim` elements are read).
 * @throws CalibrateError `NON_FINITE_ACTIVATION` when an element is NaN or infinite (`what` names the tensor)
 */
export function headMinMax(x: Float32Array, numTokens: number, numHeads: number, headDim: number, what: string): { min: Float64Array; max: Float64Array } {
  const min = new Float64Array(numHeads);
  const max = new Float64Array(numHeads);
  if (numTokens === 0) return { min, max };
  min.fill(Infinity);
  max.fill(-Infinity);
  const row = numHeads * headDim;
  let bad = -1;
  for (let t = 0; t < numTokens; t++) {
    for (let h = 0; h < numHeads; h++) {
      let lo = min[h]!;
      let hi = max[h]!;
      const start = t * row + h * headDim;
      for (let i = start; i < start + headDim; i++) {
        const v = x[i]!;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
        if (v !== v) bad = i;
      }
      min[h] = lo;
      max[h] = hi;
    }
  }
  for (let h = 0; h < numHeads && bad < 0; h++) if (!Number.isFinite(min[h]!) || !Number.isFinite(max[h]!)) bad = h;
  if (bad >= 0) {
    throw new CalibrateError('NON_FINITE_ACTIVATION', `${what} has a non-finite value (NaN or infinity); the model's activations overflow`, { field: what });
  }
  return { min, max };
}

/** Reduce per-head min/max to one channel (min of mins, max of maxes). */
export function tensorMinMax(perHead: { min: Float64Array; max: Float64Array }): { min: Float64Array; max: Float64Array } {
  let lo = Infinity;
  let hi = -Infinity;
  for (let h = 0; h < perHead.min.length; h++) {
    lo = Math.min(lo, perHead.min[h]!);
    hi = Math.max(hi, perHead.max[h]!);
  }
  return { min: Float64Array.of(lo), max: Float64Array.of(hi) };
}
