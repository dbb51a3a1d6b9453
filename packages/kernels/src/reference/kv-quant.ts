/**
 * Reference `reshapeAndCache` / `pagedAttention` for the write-time-scaled KV dtypes (`fp8_per_token_head`,
 * `int8_per_token_head`, `int4_per_token_head`, `int4_g16/32/64`, `nvfp4`): the executable form of
 * docs/spec/kv-dtypes.md. Codes and scales are written and read by `@kvq/cache` `quantizeKvHead` /
 * `dequantizeKvHead`, so the reference, `writeKv` / `gatherKv` and every backend share one byte layout.
 * @module
 */
import { dequantizeKvHead, quantizeKvHead, type KvBlockLayout } from '@kvq/cache';
import type { PagedAttentionArgs, ReshapeAndCacheArgs } from '../contract.js';
import type { PagedAttentionPlan } from '../validate.js';

/** Quantize every non-padding token's K and V heads into its slot (scales computed per token, kv head and group). */
export function reshapeAndCacheQuant(args: ReshapeAndCacheArgs, layout: KvBlockLayout, numTokens: number): void {
  const { key, value, slotMapping, cache } = args;
  const { numKvHeads, headSize } = layout;
  const kPool = cache.key as Uint8Array;
  const vPool = cache.value as Uint8Array;
  const kTensor = cache.kScale[0]!;
  const vTensor = cache.vScale[0]!;
  for (let t = 0; t < numTokens; t++) {
    const slot = slotMapping[t]!;
    if (slot < 0) continue;
    for (let h = 0; h < numKvHeads; h++) {
      const at = (t * numKvHeads + h) * headSize;
      quantizeKvHead(layout, kPool, slot, h, key, at, kTensor);
      quantizeKvHead(layout, vPool, slot, h, value, at, vTensor);
    }
  }
}

/**
 * Paged attention over a write-time-scaled cache: each position's K and V heads are dequantized
 * (`fround(value × scale)`), scores and the weighted sum of V are accumulated in float64, as the other reference
 * paths do. `fp8Query` is rejected by validation for these dtypes.
 */
export function pagedAttentionQuant(args: PagedAttentionArgs, plan: PagedAttentionPlan, layout: KvBlockLayout): void {
  const { numSeqs, numHeads, headSize, blockSize, groupSize, softmaxScale, slidingWindow } = plan;
  const { query, out, cache, queryStartLoc, seqLens, blockTables, maxBlocksPerSeq } = args;
  const kPool = cache.key as Uint8Array;
  const vPool = cache.value as Uint8Array;
  const kTensor = cache.kScale[0]!;
  const vTensor = cache.vScale[0]!;
  const kHead = new Float32Array(headSize);
  const vHead = new Float32Array(headSize);
  const acc = new Float64Array(headSize);

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
        let m = -Infinity;
        for (let j = 0; j < n; j++) {
          dequantizeKvHead(layout, kPool, slotOf(first + j), kvh, kHead, 0, kTensor);
          let dot = 0;
          for (let d = 0; d < headSize; d++) dot += query[qBase + d]! * kHead[d]!;
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
          dequantizeKvHead(layout, vPool, slotOf(first + j), kvh, vHead, 0, vTensor);
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
