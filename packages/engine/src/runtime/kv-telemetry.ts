import { dequantizeKvHead, isFp8Dtype, isKvQuantDtype, kvBlockLayout, kvHeadScale, type KvBlockLayout, type KvLayerCache, type KvQuantDtype } from '@kvq/cache';
import { formatInfo, type Fp8Format } from '@kvq/fp8';

/** Counters of one tensor (K or V) of one layer. */
export interface KvTensorTelemetry {
  /** Values written to the cache. */
  readonly written: number;
  /**
   * Values whose `|x| / scale` rounds past the largest code (stored clamped to it, as the kernels saturate), ±Inf
   * included: FP8 per tensor / per head from `maxFinite + ulp / 2` (e4m3fn 464), the write-time-scaled dtypes from the
   * midpoint past their grid's top (int8 127.5, int4 7.5, E2M1 7; with scales from the group's amax only nvfp4's
   * E4M3-rounded block scale and ±Inf reach it).
   */
  readonly saturated: number;
  /** Non-zero finite values stored as zero (read back from the cache after the write). */
  readonly flushed: number;
}

/** The telemetry of one layer. */
export interface KvLayerTelemetry {
  readonly layer: number;
  /** The layer's storage dtype; float caches (bf16, f16, f32) are not counted (all zeros). */
  readonly dtype: string;
  readonly k: KvTensorTelemetry;
  readonly v: KvTensorTelemetry;
}

/**
 * Where `|x| / scale` rounds past the largest code of each write-time-scaled dtype (the midpoint between the largest
 * grid value and the next one the grid would have): int8 127.5, int4 7.5, E4M3 464 (448 / 480), E2M1 7 (6 / 8).
 */
const QUANT_OVERFLOW: Record<KvQuantDtype, number> = {
  fp8_per_token_head: 464,
  int8_per_token_head: 127.5,
  int4_per_token_head: 7.5,
  int4_g16: 7.5,
  int4_g32: 7.5,
  int4_g64: 7.5,
  nvfp4: 7,
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
 * and flushed to zero. Counts are taken right after each `reshapeAndCache` from the values written and the cache's
 * own bytes (so they describe what the cache holds, with its scales at that moment), in the engine, for every backend.
 * Float caches cost nothing. Cost on a quantized cache: one pass over the written values (and, for the write-time-scaled
 * dtypes, a decode of them); measured in docs/benchmarks.md.
 */
export class KvTelemetry {
  /** `[layer][K: written, saturated, flushed, V: written, saturated, flushed]`. */
  private readonly counts: Float64Array[];
  private readonly dtypes: string[];
  private readonly layouts = new Map<string, KvBlockLayout>();
  private scratch = new Float32Array(0);

  /** @param layers the cache's layers (their dtypes name the counters) */
  constructor(layers: readonly KvLayerCache[]) {
    this.counts = layers.map(() => new Float64Array(6));
    this.dtypes = layers.map((l) => l.dtype);
  }

  /**
   * Counts one layer's write of `numTokens` tokens (`key`/`value` `[numTokens, numKvHeads, headSize]`, as written, to
   * the slots of `slotMapping`; negative slots are padding and skipped).
   */
  observe(layer: number, cache: KvLayerCache, key: Float32Array, value: Float32Array, slotMapping: Int32Array, numTokens: number): void {
    const c = this.counts[layer];
    if (!c) return;
    if (isFp8Dtype(cache.dtype)) {
      this.observeFp8(c, 0, cache, cache.key, cache.kScale, key, slotMapping, numTokens);
      this.observeFp8(c, 3, cache, cache.value, cache.vScale, value, slotMapping, numTokens);
    } else if (isKvQuantDtype(cache.dtype)) {
      this.observeQuant(c, 0, cache, cache.key as Uint8Array, cache.kScale[0]!, key, slotMapping, numTokens);
      this.observeQuant(c, 3, cache, cache.value as Uint8Array, cache.vScale[0]!, value, slotMapping, numTokens);
    }
  }

  private observeFp8(c: Float64Array, at: number, cache: KvLayerCache, pool: KvLayerCache['key'], scales: Float32Array, x: Float32Array, slots: Int32Array, n: number): void {
    const overflow = fp8Overflow(cache.dtype as Fp8Format);
    const fnuz = cache.dtype === 'e4m3fnuz' || cache.dtype === 'e5m2fnuz';
    const codes = pool as Uint8Array;
    eachWrittenHead(cache, slots, n, (slot, h, src) => {
      const limit = overflow * scales[scales.length === 1 ? 0 : h]!;
      const dst = (slot * cache.numKvHeads + h) * cache.headSize;
      for (let i = 0; i < cache.headSize; i++) {
        const a = Math.abs(x[src + i]!);
        if (a >= limit) c[at + S]!++;
        else if (a > 0 && (fnuz ? codes[dst + i] === 0 : (codes[dst + i]! & 0x7f) === 0)) c[at + F]!++;
      }
      c[at + W]! += cache.headSize;
    });
  }

  private observeQuant(c: Float64Array, at: number, cache: KvLayerCache, pool: Uint8Array, tensorScale: number, x: Float32Array, slots: Int32Array, n: number): void {
    const dtype = cache.dtype as KvQuantDtype;
    const id = `${dtype}:${cache.blockSize}:${cache.numKvHeads}:${cache.headSize}`;
    let l = this.layouts.get(id);
    if (!l) this.layouts.set(id, (l = kvBlockLayout(dtype, cache.blockSize, cache.numKvHeads, cache.headSize)));
    const layout = l;
    if (this.scratch.length < cache.headSize) this.scratch = new Float32Array(cache.headSize);
    const back = this.scratch;
    const overflow = QUANT_OVERFLOW[dtype];
    const nv = dtype === 'nvfp4';
    const G = layout.groupSize;
    eachWrittenHead(cache, slots, n, (slot, h, src) => {
      dequantizeKvHead(layout, pool, slot, h, back, 0, tensorScale);
      for (let g = 0; g < layout.groupsPerHead; g++) {
        const limit = overflow * kvHeadScale(layout, pool, slot, h, g) * (nv ? tensorScale : 1);
        for (let i = g * G; i < (g + 1) * G; i++) {
          const a = Math.abs(x[src + i]!);
          if (!(a > 0)) continue; // zero or NaN
          if (a >= limit) c[at + S]!++;
          else if (back[i] === 0) c[at + F]!++;
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
      k: { written: c[W]!, saturated: c[S]!, flushed: c[F]! },
      v: { written: c[3 + W]!, saturated: c[3 + S]!, flushed: c[3 + F]! },
    }));
  }

  /** Zeroes every counter. */
  reset(): void {
    for (const c of this.counts) c.fill(0);
  }
}


/** Calls `fn(slot, head, srcOffset)` for every head of every written token (negative slots are padding). */
function eachWrittenHead(cache: KvLayerCache, slots: Int32Array, n: number, fn: (slot: number, head: number, src: number) => void): void {
  const row = cache.numKvHeads * cache.headSize;
  for (let t = 0; t < n; t++) {
    const slot = slots[t]!;
    if (slot < 0) continue;
    for (let h = 0; h < cache.numKvHeads; h++) fn(slot, h, t * row + h * cache.headSize);
  }
}
