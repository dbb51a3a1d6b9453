import { createKvLayerCache, gatherKv, KV_QUANT_DTYPES, writeKv, type KvQuantDtype } from '@kvq/cache';
import { describe, expect, it } from 'vitest';
import type { KvLayerCache } from '../contract.js';
import { isKernelError } from '../errors.js';
import { nativeKvDtypeCode } from '../native/ops.js';
import { dequantizeRow } from '../quant/dequantize.js';
import { quantizeGgml } from '../quant/quantize-ggml.js';
import { randomF32, rng } from '../testing/random.js';
import { createReferenceBackend } from './backend.js';

const ref = createReferenceBackend();

function cacheOf(dtype: KvQuantDtype, numBlocks: number, blockSize: number, numKvHeads: number, headSize: number): KvLayerCache {
  const c = createKvLayerCache({ dtype, numBlocks, blockSize, numKvHeads, headSize });
  if (dtype === 'nvfp4') {
    c.kScale[0] = 4 / (448 * 6);
    c.vScale[0] = 3 / (448 * 6);
  }
  return c;
}

function kernelCode(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (isKernelError(e)) return e.code;
    throw e;
  }
  throw new Error('nothing thrown');
}

describe('reference reshapeAndCache / pagedAttention on write-time-scaled caches', () => {
  it.each(KV_QUANT_DTYPES)('%s: reshapeAndCache writes the bytes of @kvq/cache writeKv, padding slots untouched', (dtype) => {
    const [numKvHeads, headSize, blockSize, numTokens] = [2, 64, 16, 21];
    const r = rng(5);
    const key = randomF32(numTokens * numKvHeads * headSize, r, 1.5);
    const value = randomF32(numTokens * numKvHeads * headSize, r, 1.5);
    key.set([NaN, Infinity, -0, 1e30], 64); // token 0, kv head 1
    const slotMapping = Int32Array.from({ length: numTokens }, (_, t) => (t === 3 ? -1 : 16 + t));
    const a = cacheOf(dtype, 4, blockSize, numKvHeads, headSize);
    const b = cacheOf(dtype, 4, blockSize, numKvHeads, headSize);
    a.key.fill(0xa5);
    b.key.fill(0xa5);
    ref.reshapeAndCache({ key, value, slotMapping, numTokens, cache: a });
    const skip = Int32Array.from(slotMapping); // writeKv skips the same padding slot
    writeKv(b, key, value, skip);
    expect(a.key).toEqual(b.key);
    expect(a.value).toEqual(b.value);
    expect(a.key.subarray(0, 16)).toEqual(new Uint8Array(16).fill(0xa5)); // block 0 untouched
  });

  it.each(KV_QUANT_DTYPES)('%s: pagedAttention equals float64 attention over the dequantized cache', (dtype) => {
    const [numKvHeads, headSize, blockSize, gqa] = [2, 64, 4, 2];
    const numHeads = numKvHeads * gqa;
    const seqLen = 11;
    const queryLen = 3;
    const r = rng(9);
    const cache = cacheOf(dtype, 5, blockSize, numKvHeads, headSize);
    const blockTable = [3, 1, 4];
    const key = randomF32(seqLen * numKvHeads * headSize, r, 1);
    const value = randomF32(seqLen * numKvHeads * headSize, r, 1);
    const slotMapping = Int32Array.from({ length: seqLen }, (_, p) => blockTable[Math.floor(p / blockSize)]! * blockSize + (p % blockSize));
    ref.reshapeAndCache({ key, value, slotMapping, numTokens: seqLen, cache });
    const query = randomF32(queryLen * numHeads * headSize, r, 1);
    const out = new Float32Array(queryLen * numHeads * headSize);
    ref.pagedAttention({
      query,
      out,
      cache,
      queryStartLoc: Int32Array.from([0, queryLen]),
      seqLens: Int32Array.from([seqLen]),
      blockTables: Int32Array.from(blockTable),
      maxBlocksPerSeq: 3,
      numSeqs: 1,
      numHeads,
    });
    const kv = gatherKv(cache, blockTable, seqLen);
    const scale = 1 / Math.sqrt(headSize);
    for (let i = 0; i < queryLen; i++) {
      const pos = seqLen - queryLen + i;
      for (let h = 0; h < numHeads; h++) {
        const g = Math.floor(h / gqa);
        const q = query.subarray((i * numHeads + h) * headSize, (i * numHeads + h + 1) * headSize);
        const s = Array.from({ length: pos + 1 }, (_, j) => {
          let d = 0;
          for (let e = 0; e < headSize; e++) d += q[e]! * kv.key[(j * numKvHeads + g) * headSize + e]!;
          return d * scale;
        });
        const m = Math.max(...s);
        const p = s.map((x) => Math.exp(x - m));
        const z = p.reduce((x, y) => x + y, 0);
        for (let e = 0; e < headSize; e++) {
          let acc = 0;
          for (let j = 0; j <= pos; j++) acc += p[j]! * kv.value[(j * numKvHeads + g) * headSize + e]!;
          const want = acc / z;
          const got = out[(i * numHeads + h) * headSize + e]!;
          expect(Math.abs(got - want)).toBeLessThanOrEqual(1e-6 * (1 + Math.abs(want)));
        }
      }
    }
  });

  it('typed errors: head size, pool length, nvfp4 tensor scale, fp8Query', () => {
    const good = cacheOf('int8_per_token_head', 2, 4, 1, 16);
    const args = (cache: KvLayerCache) => ({
      key: new Float32Array(16),
      value: new Float32Array(16),
      slotMapping: Int32Array.from([0]),
      numTokens: 1,
      cache,
    });
    expect(kernelCode(() => ref.reshapeAndCache(args({ ...good, dtype: 'int4_g32' })))).toBe('INVALID_ARGUMENT');
    expect(kernelCode(() => ref.reshapeAndCache(args({ ...good, key: new Uint8Array(good.key.length - 4) })))).toBe('SHAPE_MISMATCH');
    expect(kernelCode(() => ref.reshapeAndCache(args({ ...good, key: new Float32Array(good.key.length) })))).toBe('WRONG_ARRAY_TYPE');
    const nv = cacheOf('nvfp4', 2, 4, 1, 16);
    expect(kernelCode(() => ref.reshapeAndCache(args({ ...nv, kScale: Float32Array.from([1, 1]) })))).toBe('INVALID_SCALE');
    expect(kernelCode(() => ref.reshapeAndCache(args({ ...nv, vScale: Float32Array.from([0]) })))).toBe('INVALID_SCALE');
    expect(
      kernelCode(() =>
        ref.pagedAttention({
          query: new Float32Array(16),
          out: new Float32Array(16),
          cache: good,
          queryStartLoc: Int32Array.from([0, 1]),
          seqLens: Int32Array.from([1]),
          blockTables: Int32Array.from([0]),
          maxBlocksPerSeq: 1,
          numSeqs: 1,
          numHeads: 1,
          fp8Query: {},
        }),
      ),
    ).toBe('INVALID_ARGUMENT');
  });

  it('native backends refuse every write-time-scaled dtype with UNSUPPORTED (and keep the others)', () => {
    for (const d of KV_QUANT_DTYPES) expect(kernelCode(() => nativeKvDtypeCode(d, 'reshapeAndCache'))).toBe('UNSUPPORTED');
    expect(nativeKvDtypeCode('e4m3fn', 'pagedAttention')).toBe(3);
    expect(nativeKvDtypeCode('bf16', 'pagedAttention')).toBe(1);
  });
});

describe('q4_0 KV cache against the GGUF q4_0 weight quantizer', () => {
  it("stores the values of ggml's q4_0 blocks (quantize-ggml.ts, tested against gguf-py's vectors)", () => {
    // Same data through two separately written quantizers: the KV dtype (@kvq/cache) and the GGUF weight type. The
    // weight quantizer follows gguf-py (x * id in float64), the KV one ggml's C (float32): they may differ only where
    // x * id lands within a float32 rounding of a .5 boundary, which these seeded rows never hit.
    const r = rng(1717);
    const rows = 64;
    const D = 128;
    const x = randomF32(rows * D, r, 3);
    for (let i = 0; i < x.length; i += 97) x[i] = x[i]! * 50; // outliers: groups whose extreme dwarfs the rest
    const cache = createKvLayerCache({ dtype: 'q4_0', numBlocks: rows / 16, blockSize: 16, numKvHeads: 1, headSize: D });
    const slots = Int32Array.from({ length: rows }, (_, t) => t);
    ref.reshapeAndCache({ key: x, value: x, slotMapping: slots, numTokens: rows, cache });
    const kv = gatherKv(cache, [0, 1, 2, 3], rows).key;
    const w = { dtype: 'q4_0' as const, data: quantizeGgml(x, rows, D, 'q4_0'), rows, cols: D };
    const deq = new Float32Array(rows * D);
    for (let row = 0; row < rows; row++) dequantizeRow(w, row, deq, row * D);
    let same = 0;
    for (let i = 0; i < deq.length; i++) if (Object.is(kv[i], deq[i]) || (kv[i] === 0 && deq[i] === 0)) same++;
    expect(same).toBe(deq.length);
  });
});
