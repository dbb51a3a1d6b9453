import { KvCacheStorage, type KvStorageDtype } from '@kvq/cache';
import { createReferenceBackend } from '@kvq/kernels';
import { describe, expect, it } from 'vitest';

import { EngineError } from '../errors.js';
import { scaleInPlace, softcapInPlace, softcappedPagedAttention } from './variant-ops.js';

describe('softcapInPlace / scaleInPlace', () => {
  it('soft-caps to (-cap, cap) and scales', () => {
    const x = Float32Array.from([0, 1, 100, -100]);
    softcapInPlace(x, 4, 5);
    expect([...x].map((v) => Number(v.toFixed(5)))).toEqual([0, Number((5 * Math.tanh(0.2)).toFixed(5)), 5, -5]);
    scaleInPlace(x, 2, 2);
    expect(x[1]).toBe(Math.fround(Math.fround(5 * Math.tanh(0.2)) * 2));
  });
});

describe('softcappedPagedAttention', () => {
  const H = 4;
  const KV = 2;
  const D = 8;
  const bs = 4;
  // Two sequences: 6 cached tokens + 3 new (prefill chunk), and 9 tokens decoding 1.
  const seqLens = Int32Array.from([9, 10]);
  const queryStartLoc = Int32Array.from([0, 3, 4]);
  const blockTables = Int32Array.from([1, 2, 3, 0, 4, 5, 6, 0]);

  function setup(dtype: KvStorageDtype) {
    const storage = new KvCacheStorage({ dtype, numLayers: 1, numBlocks: 8, blockSize: bs, numKvHeads: KV, headSize: D, numHeads: H });
    const cache = storage.layer(0);
    const ref = createReferenceBackend();
    const tokens = 9 + 10;
    const kv = Float32Array.from({ length: tokens * KV * D }, (_, i) => Math.sin(i * 0.7) * 2);
    const vv = Float32Array.from({ length: tokens * KV * D }, (_, i) => Math.cos(i * 0.3));
    const slots = Int32Array.from([...Array(9).keys()].map((p) => blockTables[Math.floor(p / bs)]! * bs + (p % bs)).concat([...Array(10).keys()].map((p) => blockTables[4 + Math.floor(p / bs)]! * bs + (p % bs))));
    ref.reshapeAndCache({ key: kv, value: vv, slotMapping: slots, numTokens: tokens, cache });
    const query = Float32Array.from({ length: 4 * H * D }, (_, i) => Math.sin(i * 1.3));
    return { ref, cache, query };
  }

  it.each(['f32', 'bf16', 'f16', 'e4m3fn', 'e5m2'] as const)('%s cache: with a huge cap it equals the reference pagedAttention (window %s)', (dtype) => {
    for (const slidingWindow of [undefined, 3]) {
      const { ref, cache, query } = setup(dtype);
      const args = { query, cache, queryStartLoc, seqLens, blockTables, maxBlocksPerSeq: 4, numSeqs: 2, numHeads: H, softmaxScale: 0.3, slidingWindow };
      const want = new Float32Array(4 * H * D);
      ref.pagedAttention({ ...args, out: want });
      const got = new Float32Array(4 * H * D);
      softcappedPagedAttention({ ...args, out: got }, 1e9);
      got.forEach((v, i) => expect(Math.abs(v - want[i]!)).toBeLessThan(1e-6));
    }
  });

  it('a small cap changes the result the way cap·tanh(s/cap) says (dense recomputation)', () => {
    const { cache, query } = setup('f32');
    const out = new Float32Array(4 * H * D);
    softcappedPagedAttention({ query, out, cache, queryStartLoc, seqLens, blockTables, maxBlocksPerSeq: 4, numSeqs: 2, numHeads: H, softmaxScale: 0.3 }, 0.5);
    // Decode row of sequence 1 (query row 3), head 3 (KV head 1): all 10 positions visible.
    const keyAt = (p: number, d: number) => (cache.key as Float32Array)[(blockTables[4 + Math.floor(p / bs)]! * bs + (p % bs)) * KV * D + D + d]!;
    const valAt = (p: number, d: number) => (cache.value as Float32Array)[(blockTables[4 + Math.floor(p / bs)]! * bs + (p % bs)) * KV * D + D + d]!;
    const s = [...Array(10).keys()].map((p) => {
      let dot = 0;
      for (let d = 0; d < D; d++) dot += query[(3 * H + 3) * D + d]! * keyAt(p, d);
      return 0.5 * Math.tanh((dot * 0.3) / 0.5);
    });
    const e = s.map((x) => Math.exp(x - Math.max(...s)));
    const z = e.reduce((a, b) => a + b, 0);
    for (let d = 0; d < D; d++) {
      const want = e.reduce((a, w, p) => a + w * valAt(p, d), 0) / z;
      expect(out[(3 * H + 3) * D + d]).toBeCloseTo(want, 6);
    }
  });

  it('rejects FP8-query mode and a cap that is not > 0', () => {
    const { cache, query } = setup('e4m3fn');
    const args = { query, out: new Float32Array(4 * H * D), cache, queryStartLoc, seqLens, blockTables, maxBlocksPerSeq: 4, numSeqs: 2, numHeads: H };
    expect(() => softcappedPagedAttention({ ...args, fp8Query: {} }, 50)).toThrow(EngineError);
    expect(() => softcappedPagedAttention(args, 0)).toThrow(/soft-cap/);
  });
});
