/**
 * Reference `reshapeAndCache` / `pagedAttention`, head by head, for every KV cache: each pool (K, V) is written and
 * read by its own dtype's rule (f32 copied, bf16/f16 rounded to nearest even, FP8 scaled per tensor or per head, the
 * write-time-scaled dtypes of docs/spec/kv-dtypes.md through `@kvq/cache` `quantizeKvHead` / `dequantizeKvHead`), so a
 * cache whose V dtype differs from its K dtype needs nothing more, and the reference, `writeKv` / `gatherKv` and every
 * backend share one byte layout. FP8-query mode supplies its own query operand and K reader (`QueryOperand`).
 * @module
 */
import { dequantizeKvHead, isKvQuantDtype, kvBlockLayout, quantizeKvHead } from '@kvq/cache';
import { f32ToBf16Bits, f32ToF16Bits, PER_TENSOR, quantizeScaled, type Fp8Format, type ScaleLayout } from '@kvq/fp8';
import type { KvLayerCache, PagedAttentionArgs, ReshapeAndCacheArgs } from '../contract.js';
import type { PagedAttentionPlan } from '../validate.js';
import { elementReader, scaleOf } from './elements.js';

type Pool = KvLayerCache['key'];

/**
 * Store one token's heads (`src`, `[numKvHeads, headSize]`) into a dense pool at `dst`, encoding per `dtype`: f32
 * copied, bf16/f16 rounded to nearest even, FP8 exactly as @kvq/fp8's scaled quantization (`encode(fround(x / scale))`,
 * satfinite, per-tensor or per-head `scales`).
 */
function storeToken(cache: KvLayerCache, dtype: KvLayerCache['dtype'], src: Float32Array, dst: Pool, scales: Float32Array): void {
  if (dtype === 'f32') (dst as Float32Array).set(src);
  else if (dtype === 'bf16') for (let i = 0; i < src.length; i++) dst[i] = f32ToBf16Bits(src[i]!);
  else if (dtype === 'f16') for (let i = 0; i < src.length; i++) dst[i] = f32ToF16Bits(src[i]!);
  else {
    const layout: ScaleLayout =
      scales.length === 1 ? PER_TENSOR : { granularity: 'head', numHeads: cache.numKvHeads, headSize: cache.headSize };
    quantizeScaled(src, scales, layout, dtype as Fp8Format, { out: dst as Uint8Array, saturation: 'satfinite' });
  }
}

/** Writes one token's heads (`src[at .. at + numKvHeads × headSize)`) into a pool's slot. */
type TokenWriter = (src: Float32Array, at: number, slot: number) => void;

/** Reads one kv head of a pool's slot, dequantized to the float32 values attention uses, into `out[0 .. headSize)`. */
export type HeadReader = (slot: number, kvh: number, out: Float32Array) => void;

/**
 * FP8-query mode (Flash Attention 3 semantics) for {@link pagedAttentionPerHead}: the query operand of head row
 * `query[qBase ..]` (kv head `kvh`), and the factor every raw score is multiplied by before `softmaxScale`.
 */
export interface QueryOperand {
  load(qBase: number, kvh: number, q: Float64Array): void;
  descale(kvh: number): number;
}

function poolOf(cache: KvLayerCache, which: 'key' | 'value'): { dtype: KvLayerCache['dtype']; pool: Pool; scales: Float32Array } {
  return which === 'key'
    ? { dtype: cache.dtype, pool: cache.key, scales: cache.kScale }
    : { dtype: cache.valueDtype ?? cache.dtype, pool: cache.value, scales: cache.vScale };
}

/** The {@link TokenWriter} of a (validated) cache's K or V pool, per that pool's dtype. */
export function poolTokenWriter(cache: KvLayerCache, which: 'key' | 'value'): TokenWriter {
  const { dtype, pool, scales } = poolOf(cache, which);
  const { numKvHeads, headSize } = cache;
  const tokenSize = numKvHeads * headSize;
  if (isKvQuantDtype(dtype)) {
    const layout = kvBlockLayout(dtype, cache.blockSize, numKvHeads, headSize);
    const bytes = pool as Uint8Array;
    const tensor = scales[0]!;
    return (src, at, slot) => {
      for (let h = 0; h < numKvHeads; h++) quantizeKvHead(layout, bytes, slot, h, src, at + h * headSize, tensor);
    };
  }
  return (src, at, slot) =>
    storeToken(cache, dtype, src.subarray(at, at + tokenSize), pool.subarray(slot * tokenSize, (slot + 1) * tokenSize), scales);
}

/**
 * The {@link HeadReader} of a (validated) cache's K or V pool: the write-time-scaled dtypes through
 * `dequantizeKvHead`; FP8 as `fround(decode(code) × scale)`; f32/bf16/f16 exactly.
 */
export function poolHeadReader(cache: KvLayerCache, which: 'key' | 'value'): HeadReader {
  const { dtype, pool, scales } = poolOf(cache, which);
  const { numKvHeads, headSize } = cache;
  if (isKvQuantDtype(dtype)) {
    const layout = kvBlockLayout(dtype, cache.blockSize, numKvHeads, headSize);
    const bytes = pool as Uint8Array;
    const tensor = scales[0]!;
    return (slot, kvh, out) => dequantizeKvHead(layout, bytes, slot, kvh, out, 0, tensor);
  }
  const read = elementReader(dtype, pool);
  const scaled = dtype !== 'f32' && dtype !== 'bf16' && dtype !== 'f16';
  return (slot, kvh, out) => {
    const base = (slot * numKvHeads + kvh) * headSize;
    if (!scaled) {
      for (let d = 0; d < headSize; d++) out[d] = read(base + d);
      return;
    }
    const s = scaleOf(scales, kvh);
    for (let d = 0; d < headSize; d++) out[d] = Math.fround(read(base + d) * s);
  };
}

/** Write every non-padding token's K and V heads into its slot with the pools' writers. */
export function reshapeAndCachePerHead(args: ReshapeAndCacheArgs, numTokens: number, writeK: TokenWriter, writeV: TokenWriter): void {
  const { key, value, slotMapping, cache } = args;
  const tokenSize = cache.numKvHeads * cache.headSize;
  for (let t = 0; t < numTokens; t++) {
    const slot = slotMapping[t]!;
    if (slot < 0) continue;
    writeK(key, t * tokenSize, slot);
    writeV(value, t * tokenSize, slot);
  }
}

/**
 * Paged attention with each position's K and V heads read by the pools' readers (dequantized to float32, or raw FP8
 * values in FP8-query mode); scores and the weighted sum of V are accumulated in float64. `queryOperand` replaces the
 * float32 query rows and descales each score (FP8-query mode); default: the query as given, no descale.
 */
export function pagedAttentionPerHead(
  args: PagedAttentionArgs,
  plan: PagedAttentionPlan,
  readK: HeadReader,
  readV: HeadReader,
  queryOperand?: QueryOperand,
): void {
  const { numSeqs, numHeads, headSize, blockSize, groupSize, softmaxScale, slidingWindow } = plan;
  const { query, out, queryStartLoc, seqLens, blockTables, maxBlocksPerSeq } = args;
  const kHead = new Float32Array(headSize);
  const vHead = new Float32Array(headSize);
  const acc = new Float64Array(headSize);
  const q = new Float64Array(headSize);

  for (let s = 0; s < numSeqs; s++) {
    const qStart = queryStartLoc[s]!;
    const qLen = queryStartLoc[s + 1]! - qStart;
    const seqLen = seqLens[s]!;
    const slotOf = (pos: number): number =>
      blockTables[s * maxBlocksPerSeq + Math.floor(pos / blockSize)]! * blockSize + (pos % blockSize);
    for (let i = 0; i < qLen; i++) {
      const pos = seqLen - qLen + i;
      const first = slidingWindow > 0 ? Math.max(0, pos - slidingWindow + 1) : 0;
      const n = pos - first + 1;
      const scores = new Float64Array(n);
      for (let h = 0; h < numHeads; h++) {
        const kvh = Math.floor(h / groupSize);
        const qBase = ((qStart + i) * numHeads + h) * headSize;
        if (queryOperand) queryOperand.load(qBase, kvh, q);
        else for (let d = 0; d < headSize; d++) q[d] = query[qBase + d]!;
        const descale = queryOperand ? queryOperand.descale(kvh) : 1;
        let m = -Infinity;
        for (let j = 0; j < n; j++) {
          readK(slotOf(first + j), kvh, kHead);
          let dot = 0;
          for (let d = 0; d < headSize; d++) dot += q[d]! * kHead[d]!;
          if (queryOperand) dot *= descale;
          const score = dot * softmaxScale;
          scores[j] = score;
          if (score > m) m = score;
        }
        let sum = 0;
        for (let j = 0; j < n; j++) {
          const e = Math.exp(scores[j]! - m);
          scores[j] = e;
          sum += e;
        }
        acc.fill(0);
        for (let j = 0; j < n; j++) {
          readV(slotOf(first + j), kvh, vHead);
          const p = scores[j]!;
          for (let d = 0; d < headSize; d++) acc[d] = acc[d]! + p * vHead[d]!;
        }
        const oBase = ((qStart + i) * numHeads + h) * headSize;
        for (let d = 0; d < headSize; d++) out[oBase + d] = acc[d]! / sum;
        if (plan.lse) plan.lse[(qStart + i) * numHeads + h] = m + Math.log(sum);
      }
    }
  }
}
