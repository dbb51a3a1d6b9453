/**
 * Engine-side math for the architecture variants the kernel contract has no op for yet: GELU-tanh-and-mul (Gemma's
 * GeGLU), tanh soft-capping of logits, in-place scaling, and paged attention with soft-capped scores (Gemma 2).
 * They run in TypeScript over Float32Arrays on every backend: correct and measured, not fast (see
 * packages/engine/README.md "Supported architectures" for the cost and the kernel ops that would replace them).
 * @module
 */
import type { KvLayerCache, PagedAttentionArgs } from '@kvq/kernels';
import { bf16BitsToF32, f16BitsToF32, fp8DecodeTable, type Fp8Format } from '@kvq/fp8';

import { EngineError } from '../errors.js';

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

/**
 * `out[i] = gelu_tanh(gate[i]) * up[i]` for `i < length`, with
 * `gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/π) (x + 0.044715 x³)))` (PyTorch `gelu(approximate='tanh')`, transformers'
 * `gelu_pytorch_tanh`), computed in float64 and stored as float32. `out` may alias `gate` or `up`.
 */
export function geluTanhAndMul(gate: Float32Array, up: Float32Array, out: Float32Array, length: number): void {
  for (let i = 0; i < length; i++) {
    const x = gate[i]!;
    out[i] = 0.5 * x * (1 + Math.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))) * up[i]!;
  }
}

/** In place: `x[i] = cap * tanh(x[i] / cap)` for `i < length` (Gemma 2 logit soft-capping). `cap > 0`. */
export function softcapInPlace(x: Float32Array, length: number, cap: number): void {
  for (let i = 0; i < length; i++) x[i] = cap * Math.tanh(x[i]! / cap);
}

/** In place: `x[i] *= factor` for `i < length` (float32 product). */
export function scaleInPlace(x: Float32Array, length: number, factor: number): void {
  const f = Math.fround(factor);
  for (let i = 0; i < length; i++) x[i] = x[i]! * f;
}

/** Reads element `i` of a KV pool as a number, dequantized with the head's scale for FP8. */
function poolReader(cache: KvLayerCache, which: 'key' | 'value'): (index: number, kvHead: number) => number {
  const pool = cache[which];
  const scales = which === 'key' ? cache.kScale : cache.vScale;
  switch (cache.dtype) {
    case 'f32': {
      const a = pool as Float32Array;
      return (i) => a[i]!;
    }
    case 'bf16': {
      const a = pool as Uint16Array;
      return (i) => bf16BitsToF32(a[i]!);
    }
    case 'f16': {
      const a = pool as Uint16Array;
      return (i) => f16BitsToF32(a[i]!);
    }
    default: {
      const table = fp8DecodeTable(cache.dtype as Fp8Format);
      const a = pool as Uint8Array;
      return (i, h) => Math.fround(table[a[i]!]! * scales[scales.length === 1 ? 0 : h]!);
    }
  }
}

/**
 * Paged attention with tanh soft-capping of the scaled scores: `s = cap * tanh((q . k) * softmaxScale / cap)`, then
 * the causal (optionally sliding-window) softmax over the cached keys and the weighted sum of cached values: the
 * kernel contract's `pagedAttention` semantics (varlen batch, GQA, FP8 keys/values dequantized as
 * `fround(decode(code) * scale)`) plus transformers' Gemma 2 `attn_logit_softcapping`. Accumulates in float64.
 * @throws EngineError `INVALID_ARGUMENT` for FP8-query mode (not combined with soft-capping) or `cap <= 0`.
 */
export function softcappedPagedAttention(args: PagedAttentionArgs, cap: number): void {
  if (args.fp8Query) throw new EngineError('INVALID_ARGUMENT', 'fp8Query is not supported with attention logit soft-capping', { field: 'fp8Query' });
  if (!(cap > 0) || !Number.isFinite(cap)) throw new EngineError('INVALID_ARGUMENT', `attention soft-cap must be finite and > 0, got ${cap}`, { field: 'attnLogitSoftcapping' });
  const { query, out, cache, queryStartLoc, seqLens, blockTables, maxBlocksPerSeq, numSeqs, numHeads } = args;
  const { numKvHeads, headSize, blockSize } = cache;
  const group = numHeads / numKvHeads;
  const scale = args.softmaxScale ?? 1 / Math.sqrt(headSize);
  const window = args.slidingWindow ?? 0;
  const readK = poolReader(cache, 'key');
  const readV = poolReader(cache, 'value');
  const tokenSize = numKvHeads * headSize;
  const acc = new Float64Array(headSize);
  for (let s = 0; s < numSeqs; s++) {
    const qStart = queryStartLoc[s]!;
    const qLen = queryStartLoc[s + 1]! - qStart;
    const seqLen = seqLens[s]!;
    const slotOf = (pos: number): number => blockTables[s * maxBlocksPerSeq + Math.floor(pos / blockSize)]! * blockSize + (pos % blockSize);
    for (let i = 0; i < qLen; i++) {
      const pos = seqLen - qLen + i;
      const first = window > 0 ? Math.max(0, pos - window + 1) : 0;
      const n = pos - first + 1;
      const scores = new Float64Array(n);
      for (let h = 0; h < numHeads; h++) {
        const kvh = Math.floor(h / group);
        const qBase = ((qStart + i) * numHeads + h) * headSize;
        let m = -Infinity;
        for (let j = 0; j < n; j++) {
          const kBase = slotOf(first + j) * tokenSize + kvh * headSize;
          let dot = 0;
          for (let d = 0; d < headSize; d++) dot += query[qBase + d]! * readK(kBase + d, kvh);
          const sc = cap * Math.tanh((dot * scale) / cap);
          scores[j] = sc;
          if (sc > m) m = sc;
        }
        let sum = 0;
        acc.fill(0);
        for (let j = 0; j < n; j++) {
          const e = Math.exp(scores[j]! - m);
          sum += e;
          const vBase = slotOf(first + j) * tokenSize + kvh * headSize;
          for (let d = 0; d < headSize; d++) acc[d]! += e * readV(vBase + d, kvh);
        }
        for (let d = 0; d < headSize; d++) out[qBase + d] = acc[d]! / sum;
      }
    }
  }
}
