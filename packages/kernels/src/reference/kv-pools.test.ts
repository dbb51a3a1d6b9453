import { createKvLayerCache, gatherKv, writeKv, type KvStorageDtype } from '@kvq/cache';
import { describe, expect, it } from 'vitest';
import type { KvLayerCache } from '../contract.js';
import { isKernelError } from '../errors.js';
import { randomF32, rng } from '../testing/random.js';
import { createReferenceBackend } from './backend.js';

const ref = createReferenceBackend();

/** K/V dtype pairs of mixed caches: dense with quantized, two quantized layouts, two FP8 formats. */
const PAIRS: ReadonlyArray<readonly [KvStorageDtype, KvStorageDtype]> = [
  ['int8_per_token_head', 'int4_g32_f16'],
  ['bf16', 'nvfp4'],
  ['nvfp4', 'f32'],
  ['e4m3fn', 'int4_per_token_head'],
  ['fp8_per_token_head', 'q4_0'],
  ['e5m2', 'e4m3fn'],
  ['f16', 'bf16'],
];

function layer(dtype: KvStorageDtype, valueDtype: KvStorageDtype, numBlocks: number, numKvHeads: number, headSize: number): KvLayerCache {
  const c = createKvLayerCache({ dtype, valueDtype, numBlocks, blockSize: 4, numKvHeads, headSize });
  // Scales other than 1 so a pool read with the other pool's scale would show.
  c.kScale.fill(dtype === 'nvfp4' ? 3 / (448 * 6) : 0.02);
  c.vScale.fill(valueDtype === 'nvfp4' ? 5 / (448 * 6) : 0.03);
  return c;
}

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (isKernelError(e)) return e.code;
    throw e;
  }
  throw new Error('nothing thrown');
}

describe('reference backend: mixed K/V dtypes', () => {
  for (const [kd, vd] of PAIRS) {
    it(`${kd} K with ${vd} V: each pool written and attended as a uniform cache of its dtype`, () => {
      const rnd = rng(7);
      const numKvHeads = 2;
      const headSize = 64;
      const numHeads = 4;
      const seqLen = 11;
      const numBlocks = 4;
      const key = randomF32(seqLen * numKvHeads * headSize, rnd, 2);
      const value = randomF32(seqLen * numKvHeads * headSize, rnd, 2);
      // Blocks 3, 1, 2 (not contiguous, block 0 unused).
      const table = [3, 1, 2];
      const slotMapping = new Int32Array(seqLen).map((_, p) => table[Math.floor(p / 4)]! * 4 + (p % 4));
      const mixed = layer(kd, vd, numBlocks, numKvHeads, headSize);
      ref.reshapeAndCache({ key, value, slotMapping, numTokens: seqLen, cache: mixed });
      // The pools hold exactly what uniform caches of each dtype hold.
      const kOnly = layer(kd, kd, numBlocks, numKvHeads, headSize);
      kOnly.vScale.set(kOnly.kScale);
      const vOnly = layer(vd, vd, numBlocks, numKvHeads, headSize);
      vOnly.kScale.set(vOnly.vScale);
      writeKv(kOnly, key, key, slotMapping);
      writeKv(vOnly, value, value, slotMapping);
      expect(Buffer.from(mixed.key.buffer).equals(Buffer.from(kOnly.key.buffer))).toBe(true);
      expect(Buffer.from(mixed.value.buffer).equals(Buffer.from(vOnly.value.buffer))).toBe(true);
      // @kvq/cache writeKv writes the same bytes into a mixed layer.
      const viaCache = layer(kd, vd, numBlocks, numKvHeads, headSize);
      writeKv(viaCache, key, value, slotMapping);
      expect(Buffer.from(viaCache.value.buffer).equals(Buffer.from(mixed.value.buffer))).toBe(true);

      // Attention over the mixed cache equals attention over a float32 cache holding the dequantized K of the K-dtype
      // cache and the dequantized V of the V-dtype cache, bit for bit (same float64 sums in the same order).
      const deqK = gatherKv(kOnly, table, seqLen).key;
      const deqV = gatherKv(vOnly, table, seqLen).value;
      const plain = layer('f32', 'f32', numBlocks, numKvHeads, headSize);
      writeKv(plain, deqK, deqV, slotMapping);
      expect(gatherKv(mixed, table, seqLen)).toEqual({ key: deqK, value: deqV });
      const qLen = 3;
      const query = randomF32(qLen * numHeads * headSize, rnd, 1);
      const run = (cache: KvLayerCache, slidingWindow?: number) => {
        const out = new Float32Array(query.length);
        const lse = new Float32Array(qLen * numHeads);
        ref.pagedAttention({
          query,
          out,
          lse,
          cache,
          queryStartLoc: new Int32Array([0, qLen]),
          seqLens: new Int32Array([seqLen]),
          blockTables: new Int32Array(table),
          maxBlocksPerSeq: 3,
          numSeqs: 1,
          numHeads,
          ...(slidingWindow ? { slidingWindow } : {}),
        });
        return [out, lse];
      };
      expect(run(mixed)).toEqual(run(plain));
      expect(run(mixed, 5)).toEqual(run(plain, 5));
    });
  }

  it('refuses a V pool sized for the K dtype, and fp8Query on a mixed cache, with typed errors', () => {
    const c = layer('bf16', 'int4_g32', 2, 1, 64);
    const wrong = { ...c, value: new Uint8Array(c.key.length * 2) };
    const key = new Float32Array(64);
    expect(code(() => ref.reshapeAndCache({ key, value: key, slotMapping: new Int32Array([4]), numTokens: 1, cache: wrong }))).toBe('SHAPE_MISMATCH');
    const f = layer('e4m3fn', 'e5m2', 2, 1, 64);
    const args = {
      query: key,
      out: new Float32Array(64),
      cache: f,
      queryStartLoc: new Int32Array([0, 1]),
      seqLens: new Int32Array([1]),
      blockTables: new Int32Array([1]),
      maxBlocksPerSeq: 1,
      numSeqs: 1,
      numHeads: 1,
    };
    expect(code(() => ref.pagedAttention({ ...args, fp8Query: {} }))).toBe('INVALID_ARGUMENT');
    expect(code(() => ref.pagedAttention({ ...args, cache: { ...f, valueDtype: 'int9' as never } }))).toBe('INVALID_ARGUMENT');
  });
});
