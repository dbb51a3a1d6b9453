import { int4F16GroupScale, isFp8Dtype, isKvQuantDtype, q4_0GroupScale, q4_0Position, type KvLayerCache, type KvQuantDtype } from '@kvq/cache';
import { decodeFp8, encodeFp8, f16BitsToF32, formatInfo, type Fp8Format } from '@kvq/fp8';

/** Counters of one tensor (K or V) of one layer. */
export interface KvTensorTelemetry {
  /** Values written to the cache. */
  readonly written: number;
  /**
   * Values whose `|x| / scale` rounds past the largest code (stored clamped to it, as the kernels saturate), ±Inf
   * included: FP8 per tensor / per head from `maxFinite + ulp / 2` (e4m3fn 464), the write-time-scaled dtypes from the
   * midpoint past their grid's top (int8 127.5, int4 7.5, E2M1 7; with scales from the group's amax only nvfp4's
   * E4M3-rounded block scale and ±Inf reach it); q4_0 from `x × id + 8.5 >= 16` (values of the sign opposite to the
   * group's extreme past 7.5 d).
   */
  readonly saturated: number;
  /** Non-zero finite values stored as zero: `|x| / scale` at or below half the smallest non-zero code. */
  readonly flushed: number;
}

/** The telemetry of one layer. */
export interface KvLayerTelemetry {
  readonly layer: number;
  /** The layer's K storage dtype; float pools (bf16, f16, f32) are not counted (all zeros). */
  readonly dtype: string;
  /** The layer's V storage dtype (`dtype` unless the layer stores V in another dtype). */
  readonly valueDtype: string;
  readonly k: KvTensorTelemetry;
  readonly v: KvTensorTelemetry;
}

/**
 * Per write-time-scaled dtype (docs/spec/kv-dtypes.md §2): its group size rule, the grid maximum the scale divides the
 * group's amax by, where `|x| / scale` rounds past the top code (the midpoint to the next value the grid would have:
 * int8 127.5, int4 7.5, E4M3 464 (448 / 480), E2M1 7 (6 / 8)), and up to where it rounds to zero (half the smallest
 * non-zero code; ties go to the even code, zero): int 0.5, E4M3 2^-10, E2M1 0.25.
 */
const QUANT: Record<Exclude<KvQuantDtype, 'q4_0' | 'int4_g32_f16'>, { group: number | 'head'; qmax: number; overflow: number; flush: number }> = {
  fp8_per_token_head: { group: 'head', qmax: 448, overflow: 464, flush: 2 ** -10 },
  int8_per_token_head: { group: 'head', qmax: 127, overflow: 127.5, flush: 0.5 },
  int4_per_token_head: { group: 'head', qmax: 7, overflow: 7.5, flush: 0.5 },
  int4_g16: { group: 16, qmax: 7, overflow: 7.5, flush: 0.5 },
  int4_g32: { group: 32, qmax: 7, overflow: 7.5, flush: 0.5 },
  int4_g64: { group: 64, qmax: 7, overflow: 7.5, flush: 0.5 },
  nvfp4: { group: 16, qmax: 6, overflow: 7, flush: 0.25 },
};

/** `|x| / scale` from which an FP8 format rounds past its largest finite value: `maxFinite + ulp / 2`. */
function fp8Overflow(format: Fp8Format): number {
  const { maxFinite, mantissaBits } = formatInfo(format);
  return maxFinite + 2 ** (Math.floor(Math.log2(maxFinite)) - mantissaBits) / 2;
}

const W = 0; // written
const S = 1; // saturated
const F = 2; // flushed

/**
 * FP8 telemetry of the KV cache while serving: per layer and tensor (K, V), how many values were written, saturated
 * and flushed to zero. Counts are taken at each `reshapeAndCache` from the values written and the scales the codec
 * uses for them (the layer's scales at that moment; for the write-time-scaled dtypes each group's scale, computed as
 * the kernels do), in the engine, for every backend and wherever its pools live (host or device).
 * Float caches cost nothing. Cost on a quantized cache: one pass over the written values (two for the write-time-scaled
 * dtypes: the group amax, then the counts); measured in docs/benchmarks.md.
 */
export class KvTelemetry {
  /** `[layer][K: written, saturated, flushed, V: written, saturated, flushed]`. */
  private readonly counts: Float64Array[];
  private readonly dtypes: string[];
  private readonly valueDtypes: string[];

  /** @param layers the cache's layers (their dtypes name the counters) */
  constructor(layers: readonly KvLayerCache[]) {
    this.counts = layers.map(() => new Float64Array(6));
    this.dtypes = layers.map((l) => l.dtype);
    this.valueDtypes = layers.map((l) => l.valueDtype ?? l.dtype);
  }

  /**
   * Counts one layer's write of `numTokens` tokens (`key`/`value` `[numTokens, numKvHeads, headSize]`, as written, to
   * the slots of `slotMapping`; negative slots are padding and skipped).
   */
  observe(layer: number, cache: KvLayerCache, key: Float32Array, value: Float32Array, slotMapping: Int32Array, numTokens: number): void {
    const c = this.counts[layer];
    if (!c) return;
    this.observePool(c, 0, cache, cache.dtype, cache.kScale, key, slotMapping, numTokens);
    this.observePool(c, 3, cache, cache.valueDtype ?? cache.dtype, cache.vScale, value, slotMapping, numTokens);
  }

  /** Counts one pool's write (K at counter offset 0, V at 3) per the pool's dtype. */
  private observePool(c: Float64Array, at: number, cache: KvLayerCache, dtype: KvLayerCache['dtype'], scales: Float32Array, x: Float32Array, slots: Int32Array, n: number): void {
    if (isFp8Dtype(dtype)) this.observeFp8(c, at, cache, dtype, scales, x, slots, n);
    else if (dtype === 'q4_0') observeQ4_0(c, at, cache, x, slots, n);
    else if (dtype === 'int4_g32_f16') observeInt4F16(c, at, cache, x, slots, n);
    else if (isKvQuantDtype(dtype)) this.observeQuant(c, at, cache, dtype, scales[0]!, x, slots, n);
  }

  private observeFp8(c: Float64Array, at: number, cache: KvLayerCache, format: Fp8Format, scales: Float32Array, x: Float32Array, slots: Int32Array, n: number): void {
    const overflow = fp8Overflow(format);
    const flush = formatInfo(format).minSubnormal / 2;
    eachWrittenHead(cache, slots, n, (h, src) => {
      const s = scales[scales.length === 1 ? 0 : h]!;
      for (let i = 0; i < cache.headSize; i++) {
        const r = Math.abs(Math.fround(x[src + i]! / s));
        if (r >= overflow) c[at + S]!++;
        else if (r > 0 && r <= flush) c[at + F]!++;
      }
      c[at + W]! += cache.headSize;
    });
  }

  private observeQuant(c: Float64Array, at: number, cache: KvLayerCache, quantDtype: KvQuantDtype, tensorScale: number, x: Float32Array, slots: Int32Array, n: number): void {
    const dtype = quantDtype as Exclude<KvQuantDtype, 'q4_0' | 'int4_g32_f16'>;
    const q = QUANT[dtype];
    const G = q.group === 'head' ? cache.headSize : q.group;
    eachWrittenHead(cache, slots, n, (_h, src) => {
      for (let g = src; g < src + cache.headSize; g += G) {
        let amax = 0;
        let nan = false;
        for (let i = g; i < g + G; i++) {
          const a = Math.abs(x[i]!);
          if (a !== a) nan = true;
          else if (a !== Infinity && a > amax) amax = a;
        }
        if (nan) continue; // a NaN group is stored as NaN: neither saturated nor flushed
        const scale = groupScale(dtype, amax, q.qmax, tensorScale);
        for (let i = g; i < g + G; i++) {
          const a = Math.abs(x[i]!);
          if (a === 0) continue;
          if (a === Infinity) c[at + S]!++;
          else if (!(scale > 0)) c[at + F]!++; // a zero (or underflowed) scale stores the whole group as zeros
          else {
            const r = Math.abs(Math.fround(a / scale));
            if (r >= q.overflow) c[at + S]!++;
            else if (r <= q.flush) c[at + F]!++;
          }
        }
      }
      c[at + W]! += cache.headSize;
    });
  }

  /** Per-layer counters since creation (or the last {@link reset}). */
  snapshot(): KvLayerTelemetry[] {
    return this.counts.map((c, layer) => ({
      layer,
      dtype: this.dtypes[layer]!,
      valueDtype: this.valueDtypes[layer]!,
      k: { written: c[W]!, saturated: c[S]!, flushed: c[F]! },
      v: { written: c[3 + W]!, saturated: c[3 + S]!, flushed: c[3 + F]! },
    }));
  }

  /** Zeroes every counter. */
  reset(): void {
    for (const c of this.counts) c.fill(0);
  }
}


/**
 * q4_0's counts, from the codes its quantizer computes (docs/spec/kv-dtypes.md §2): `t = fround(fround(x × id) + 8.5)`
 * truncated is the code (8 = zero), so a value saturates where `t >= 16` (an opposite-sign value past 7.5 d; the
 * group's extreme itself maps to −8 exactly) or `t < 0` (−Inf, or below −8.5 d under a saturated f16 scale), and is
 * flushed where its code is 8 (`8 <= t < 9`) or the stored scale is zero.
 */
function observeQ4_0(c: Float64Array, at: number, cache: KvLayerCache, x: Float32Array, slots: Int32Array, n: number): void {
  eachWrittenHead(cache, slots, n, (_h, src) => {
    for (let g = src; g < src + cache.headSize; g += 32) {
      const { id, zero, nan } = q4_0GroupScale(x, g);
      if (nan) continue; // a NaN group is stored as NaN: neither saturated nor flushed
      for (let i = g; i < g + 32; i++) {
        const v = x[i]!;
        if (v === 0) continue;
        if (Math.abs(v) === Infinity) c[at + S]!++;
        else if (zero) c[at + F]!++;
        else {
          const t = q4_0Position(v, id);
          if (t >= 16 || t < 0) c[at + S]!++;
          else if (t >= 8 && t < 9) c[at + F]!++; // code 8: stored as zero
        }
      }
    }
    c[at + W]! += cache.headSize;
  });
}

/**
 * int4_g32_f16's counts: its f16 scale d holds both extremes of the group, so only ±Inf (and values past an f16
 * scale saturated at 65504) saturate (`|x / d|` past 7.5 or below -8.5); flushed: `|x / d| <= 0.5` (ties to the even 0).
 */
function observeInt4F16(c: Float64Array, at: number, cache: KvLayerCache, x: Float32Array, slots: Int32Array, n: number): void {
  eachWrittenHead(cache, slots, n, (_h, src) => {
    for (let g = src; g < src + cache.headSize; g += 32) {
      const d = f16BitsToF32(int4F16GroupScale(x, g));
      if (d !== d) continue; // a NaN group is stored as NaN: neither saturated nor flushed
      for (let i = g; i < g + 32; i++) {
        const v = x[i]!;
        if (v === 0) continue;
        if (Math.abs(v) === Infinity) c[at + S]!++;
        else if (d === 0) c[at + F]!++;
        else {
          const r = Math.fround(v / d);
          if (r >= 7.5 || r < -8.5) c[at + S]!++;
          else if (Math.abs(r) <= 0.5) c[at + F]!++;
        }
      }
    }
    c[at + W]! += cache.headSize;
  });
}

/** Calls `fn(head, srcOffset)` for every head of every written token (negative slots are padding). */
function eachWrittenHead(cache: KvLayerCache, slots: Int32Array, n: number, fn: (head: number, src: number) => void): void {
  const row = cache.numKvHeads * cache.headSize;
  for (let t = 0; t < n; t++) {
    if (slots[t]! < 0) continue;
    for (let h = 0; h < cache.numKvHeads; h++) fn(h, t * row + h * cache.headSize);
  }
}

/**
 * A group's scale as the codec computes it (docs/spec/kv-dtypes.md §2): `fround(amax / qmax)`; nvfp4's E4M3 block
 * scale times the tensor scale `g`.
 */
function groupScale(dtype: KvQuantDtype, amax: number, qmax: number, g: number): number {
  if (dtype !== 'nvfp4') return Math.fround(amax / qmax);
  const s8 = encodeFp8(Math.fround(Math.fround(amax / 6) / g), 'e4m3fn', 'satfinite');
  return Math.fround(decodeFp8(s8, 'e4m3fn') * g);
}
