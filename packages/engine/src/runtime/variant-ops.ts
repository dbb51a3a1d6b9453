/**
 * Engine-side math for the architecture variants the kernel contract has no op for yet: tanh soft-capping of logits,
 * in-place scaling, and paged attention with soft-capped scores (Gemma 2).
 * They run in TypeScript over Float32Arrays on every backend: correct and measured, not fast (see
 * packages/engine/README.md "Supported architectures" for the cost and the kernel ops that would replace them).
 * @module
 */
import type { KvLayerCache, PagedAttentionArgs } from '@kvq/kernels';
import { f16BitsToF32, fp8DecodeTable, type Fp8Format } from '@kvq/fp8';

import { EngineError } from '../errors.js';

/** In place: `x[i] = cap * tanh(x[i] / cap)` for `i < length` (Gemma 2 logit soft-capping). `cap > 0`. */
export function softcapInPlace(x: Float32Array, length: number, cap: number): void {
  for (let i = 0; i < length; i++) x[i] = cap * Math.tanh(x[i]! / cap);
}

/** In place: `x[i] *= factor` for `i < length` (float32 product). */
export function scaleInPlace(x: Float32Array, length: number, factor: number): void {
  const f = Math.fround(factor);
  for (let i = 0; i < length; i++) x[i] = x[i]! * f;
}

/**
 * Decodes `count` elements of a KV pool starting at `offset` into `dst[dstOffset..]` as float32 (FP8: the code's value
 * times the head's scale, rounded to float32, as the reference backend).
 */
type RowDecoder = (offset: number, count: number, dst: Float32Array, dstOffset: number, kvHead: number) => void;

function rowDecoder(cache: KvLayerCache, which: 'key' | 'value'): RowDecoder {
  const pool = cache[which];
  const scales = which === 'key' ? cache.kScale : cache.vScale;
  const dtype = which === 'key' ? cache.dtype : (cache.valueDtype ?? cache.dtype);
  switch (dtype) {
    case 'f32': {
      const a = pool as Float32Array;
      return (o, n, dst, d) => dst.set(a.subarray(o, o + n), d);
    }
    case 'bf16': {
      const a = pool as Uint16Array;
      return (o, n, dst, d) => {
        const u = new Uint32Array(dst.buffer, dst.byteOffset + d * 4, n);
        for (let i = 0; i < n; i++) u[i] = a[o + i]! << 16;
      };
    }
    case 'f16': {
      const a = pool as Uint16Array;
      return (o, n, dst, d) => {
        for (let i = 0; i < n; i++) dst[d + i] = f16BitsToF32(a[o + i]!);
      };
    }
    default: {
      const table = fp8DecodeTable(dtype as Fp8Format);
      const a = pool as Uint8Array;
      return (o, n, dst, d, h) => {
        const sc = scales[scales.length === 1 ? 0 : h]!;
        for (let i = 0; i < n; i++) dst[d + i] = table[a[o + i]!]! * sc;
      };
    }
  }
}

/**
 * Paged attention with tanh soft-capping of the scaled scores: `s = cap * tanh((q . k) * softmaxScale / cap)`, then
 * the causal (optionally sliding-window) softmax over the cached keys and the weighted sum of cached values: the
 * kernel contract's `pagedAttention` semantics (varlen batch, GQA, FP8 keys/values dequantized as
 * `fround(decode(code) * scale)`) plus transformers' Gemma 2 `attn_logit_softcapping`. Keys and values of the visible
 * window are decoded once per KV head and shared by its query heads; sums in float64. Writes `args.lse` (the
 * log-sum-exp of the capped scores) when given.
 * @throws EngineError `INVALID_ARGUMENT` for FP8-query mode (not combined with soft-capping) or `cap <= 0`.
 */
export function softcappedPagedAttention(args: PagedAttentionArgs, cap: number): void {
  if (args.fp8Query) throw new EngineError('INVALID_ARGUMENT', 'fp8Query is not supported with attention logit soft-capping', { field: 'fp8Query' });
  if (!(cap > 0) || !Number.isFinite(cap)) throw new EngineError('INVALID_ARGUMENT', `attention soft-cap must be finite and > 0, got ${cap}`, { field: 'attnLogitSoftcapping' });
  const { query, out, cache, queryStartLoc, seqLens, blockTables, maxBlocksPerSeq, numSeqs, numHeads } = args;
  const { numKvHeads, headSize: D, blockSize } = cache;
  const group = numHeads / numKvHeads;
  const scale = args.softmaxScale ?? 1 / Math.sqrt(D);
  const window = args.slidingWindow ?? 0;
  const decodeK = rowDecoder(cache, 'key');
  const decodeV = rowDecoder(cache, 'value');
  const tokenSize = numKvHeads * D;
  const acc = new Float64Array(D);
  let keys = new Float32Array(0);
  let values = new Float32Array(0);
  for (let s = 0; s < numSeqs; s++) {
    const qStart = queryStartLoc[s]!;
    const qLen = queryStartLoc[s + 1]! - qStart;
    const seqLen = seqLens[s]!;
    // Every position this sequence's queries can see, decoded once per KV head.
    const lo = window > 0 ? Math.max(0, seqLen - qLen - window + 1) : 0;
    const span = seqLen - lo;
    if (keys.length < span * D) {
      keys = new Float32Array(span * D);
      values = new Float32Array(span * D);
    }
    const scores = new Float64Array(span);
    for (let kvh = 0; kvh < numKvHeads; kvh++) {
      for (let p = lo; p < seqLen; p++) {
        const slot = blockTables[s * maxBlocksPerSeq + Math.floor(p / blockSize)]! * blockSize + (p % blockSize);
        const base = slot * tokenSize + kvh * D;
        decodeK(base, D, keys, (p - lo) * D, kvh);
        decodeV(base, D, values, (p - lo) * D, kvh);
      }
      for (let i = 0; i < qLen; i++) {
        const pos = seqLen - qLen + i;
        const first = window > 0 ? Math.max(0, pos - window + 1) : 0;
        for (let h = kvh * group; h < (kvh + 1) * group; h++) {
          const qBase = ((qStart + i) * numHeads + h) * D;
          let m = -Infinity;
          for (let p = first; p <= pos; p++) {
            const kb = (p - lo) * D;
            let dot = 0;
            for (let d = 0; d < D; d++) dot += query[qBase + d]! * keys[kb + d]!;
            const sc = cap * Math.tanh((dot * scale) / cap);
            scores[p - lo] = sc;
            if (sc > m) m = sc;
          }
          let sum = 0;
          acc.fill(0);
          for (let p = first; p <= pos; p++) {
            const e = Math.exp(scores[p - lo]! - m);
            sum += e;
            const vb = (p - lo) * D;
            for (let d = 0; d < D; d++) acc[d]! += e * values[vb + d]!;
          }
          for (let d = 0; d < D; d++) out[qBase + d] = acc[d]! / sum;
          if (args.lse) args.lse[(qStart + i) * numHeads + h] = m + Math.log(sum);
        }
      }
    }
  }
}
