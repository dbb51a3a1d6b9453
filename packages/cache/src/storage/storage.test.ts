import {
  bf16BitsToF32,
  dequantizeScaled,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  PER_TENSOR,
  quantizeScaled,
  type Fp8Format,
  type ScaleLayout,
} from '@kvq/fp8';
import { seededNormal, seededRandom } from '@kvq/test-utils';
import { describe, expect, it } from 'vitest';
import { isFp8Dtype, KV_STORAGE_DTYPES, type KvStorageDtype } from '../dtype.js';
import { isKvQuantDtype } from '../kv-quant.js';
import { KvCacheManager } from '../manager.js';
import { errorCode, range } from '../test-helpers.js';
import { gatherKv, writeKv } from './io.js';
import type { KvLayerCache } from './layer.js';
import { copyBlocks, createKvLayerCache, KvCacheStorage } from './storage.js';

const bits = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);

/** Awkward data: normal values over several magnitudes, plus zeros, -0, saturating and tiny values, NaN. */
function testData(n: number, seed: number): Float32Array {
  const normal = seededNormal(seed);
  const u = seededRandom(seed + 1);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = normal() * 2 ** Math.floor(u() * 12 - 4);
  const specials = [0, -0, 1e6, -1e6, 1e-30, -3e-8, Number.NaN, 448, 57344, 240];
  for (let i = 0; i < specials.length && i * 7 < n; i++) x[i * 7] = specials[i]!;
  return x;
}

/** What the pool must hold for `row` (one token's [numKvHeads, headSize] values). */
function expectedEncoding(layer: KvLayerCache, row: Float32Array, scales: Float32Array): ArrayLike<number> {
  if (layer.dtype === 'f32') return row;
  if (layer.dtype === 'bf16') return Array.from(row, f32ToBf16Bits);
  if (layer.dtype === 'f16') return Array.from(row, f32ToF16Bits);
  const layout: ScaleLayout =
    scales.length === 1 ? PER_TENSOR : { granularity: 'head', numHeads: layer.numKvHeads, headSize: layer.headSize };
  return quantizeScaled(row, scales, layout, layer.dtype as Fp8Format);
}

/** What reading `row` back must give. */
function expectedRoundTrip(layer: KvLayerCache, row: Float32Array, scales: Float32Array): Float32Array {
  if (layer.dtype === 'f32') return row.slice();
  if (layer.dtype === 'bf16') return Float32Array.from(row, (v) => bf16BitsToF32(f32ToBf16Bits(v)));
  if (layer.dtype === 'f16') return Float32Array.from(row, (v) => f16BitsToF32(f32ToF16Bits(v)));
  const layout: ScaleLayout =
    scales.length === 1 ? PER_TENSOR : { granularity: 'head', numHeads: layer.numKvHeads, headSize: layer.headSize };
  return dequantizeScaled(quantizeScaled(row, scales, layout, layer.dtype as Fp8Format), scales, layout, layer.dtype as Fp8Format);
}

describe('createKvLayerCache', () => {
  it('allocates the flash layout with unit scales', () => {
    const l = createKvLayerCache({ dtype: 'e4m3fn', numBlocks: 3, blockSize: 4, numKvHeads: 2, headSize: 5, numHeads: 6 });
    expect(l.key).toBeInstanceOf(Uint8Array);
    expect(l.key.length).toBe(3 * 4 * 2 * 5);
    expect(l.value.length).toBe(l.key.length);
    expect(Array.from(l.kScale)).toEqual([1]);
    expect(Array.from(l.qScale)).toEqual([1]);
    const h = createKvLayerCache({
      dtype: 'bf16',
      numBlocks: 2,
      numKvHeads: 2,
      headSize: 8,
      numHeads: 6,
      scaleGranularity: 'head',
      qScaleGranularity: 'head',
    });
    expect(h.blockSize).toBe(16);
    expect(h.key).toBeInstanceOf(Uint16Array);
    expect(h.kScale.length).toBe(2);
    expect(h.vScale.length).toBe(2);
    expect(h.qScale.length).toBe(6);
  });

  it('rejects bad shapes', () => {
    const base = { dtype: 'f32' as const, numBlocks: 2, numKvHeads: 2, headSize: 4 };
    expect(errorCode(() => createKvLayerCache({ ...base, numBlocks: -1 }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => createKvLayerCache({ ...base, headSize: 0 }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => createKvLayerCache({ ...base, blockSize: 24 }))).toBe('NOT_POWER_OF_TWO');
    expect(errorCode(() => createKvLayerCache({ ...base, numHeads: 3 }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => createKvLayerCache({ ...base, dtype: 'fp8' as never }))).toBe('UNSUPPORTED_DTYPE');
    expect(errorCode(() => createKvLayerCache({ ...base, scaleGranularity: 'token' as never }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => createKvLayerCache({ ...base, numBlocks: 2 ** 40 }))).toBe('INVALID_ARGUMENT');
  });
});

describe('writeKv / gatherKv match @kvq/fp8 bit for bit', () => {
  const cases: Array<[KvStorageDtype, 'tensor' | 'head']> = [];
  // The write-time-scaled dtypes have their own suite (kv-quant.test.ts).
  for (const d of KV_STORAGE_DTYPES.filter((x) => !isKvQuantDtype(x))) {
    cases.push([d, 'tensor']);
    if (isFp8Dtype(d)) cases.push([d, 'head']);
  }

  it.each(cases)('%s with %s scales', (dtype, granularity) => {
    const numKvHeads = 3;
    const headSize = 7;
    const blockSize = 4;
    const numBlocks = 9;
    const row = numKvHeads * headSize;
    const layer = createKvLayerCache({ dtype, numBlocks, blockSize, numKvHeads, headSize, scaleGranularity: granularity });
    const kScales = granularity === 'head' ? [0.5, 0.0625, 3] : [0.25];
    const vScales = granularity === 'head' ? [2, 0.01, 1] : [1.5];
    layer.kScale.set(kScales);
    layer.vScale.set(vScales);

    // 17 tokens to scattered slots (two runs of consecutive slots, one padding slot), keys padded by 2 rows
    const numTokens = 17;
    const slots = Int32Array.from([8, 9, 10, 11, 3, 30, 31, 32, 33, 34, -1, 0, 20, 21, 22, 5, 13]);
    const key = testData((numTokens + 2) * row, 1);
    const value = testData((numTokens + 2) * row, 2);
    writeKv(layer, key, value, slots);

    for (let t = 0; t < numTokens; t++) {
      const s = slots[t]!;
      if (s < 0) continue;
      for (const [pool, src, sc] of [
        [layer.key, key, layer.kScale],
        [layer.value, value, layer.vScale],
      ] as const) {
        const r = src.subarray(t * row, (t + 1) * row);
        const stored = Array.from(pool.subarray(s * row, (s + 1) * row));
        const want = Array.from(expectedEncoding(layer, r, sc));
        if (dtype === 'f32') expect(bits(Float32Array.from(stored))).toEqual(bits(Float32Array.from(want)));
        else expect(stored).toEqual(want);
      }
    }

    // gather a "sequence" whose positions 0..11 live in blocks [2, 0, 5]: slots 8..11, 0..3, 20..23
    const blockTable = [2, 0, 5, 8];
    const g = gatherKv(layer, blockTable, 11);
    expect(g.key.length).toBe(11 * row);
    const posToToken = new Map<number, number>();
    slots.forEach((s, t) => {
      if (s >= 0) posToToken.set(s, t);
    });
    for (let p = 0; p < 11; p++) {
      const slot = blockTable[Math.floor(p / blockSize)]! * blockSize + (p % blockSize);
      const t = posToToken.get(slot);
      const gotK = g.key.subarray(p * row, (p + 1) * row);
      const gotV = g.value.subarray(p * row, (p + 1) * row);
      if (t === undefined) {
        // never written: zero bits decode to +0 in every dtype
        expect(Array.from(bits(gotK)).every((b) => b === 0)).toBe(true);
        continue;
      }
      expect(bits(gotK)).toEqual(bits(expectedRoundTrip(layer, key.subarray(t * row, (t + 1) * row), layer.kScale)));
      expect(bits(gotV)).toEqual(bits(expectedRoundTrip(layer, value.subarray(t * row, (t + 1) * row), layer.vScale)));
    }

    // into caller-provided buffers
    const out = { key: new Float32Array(11 * row + 5), value: new Float32Array(11 * row) };
    gatherKv(layer, blockTable, 11, out);
    expect(bits(out.key.subarray(0, 11 * row))).toEqual(bits(g.key));
  });

  it('skips padding slots and leaves the pools untouched', () => {
    const layer = createKvLayerCache({ dtype: 'e4m3fn', numBlocks: 2, blockSize: 2, numKvHeads: 1, headSize: 2 });
    writeKv(layer, Float32Array.of(1, 2, 3, 4), Float32Array.of(5, 6, 7, 8), Int32Array.of(-1, -7));
    expect(Array.from(layer.key)).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    writeKv(layer, new Float32Array(0), new Float32Array(0), new Int32Array(0));
  });

  it('rejects bad input with typed errors', () => {
    const layer = createKvLayerCache({ dtype: 'e4m3fn', numBlocks: 2, blockSize: 2, numKvHeads: 1, headSize: 2, scaleGranularity: 'head' });
    const kv = new Float32Array(4);
    expect(errorCode(() => writeKv(layer, kv, kv, Int32Array.of(0, 4)))).toBe('SLOT_OUT_OF_RANGE');
    expect(errorCode(() => writeKv(layer, new Float32Array(3), kv, Int32Array.of(0)))).toBe('SHAPE_MISMATCH');
    expect(errorCode(() => writeKv(layer, kv, new Float32Array(2), Int32Array.of(0, 1)))).toBe('SHAPE_MISMATCH');
    expect(errorCode(() => writeKv(layer, kv, kv, [0, 1] as never))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => writeKv(layer, [1, 2] as never, kv, Int32Array.of(0)))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => gatherKv(layer, [0], 3))).toBe('SLOT_OUT_OF_RANGE');
    expect(errorCode(() => gatherKv(layer, [0, 2], 3))).toBe('SLOT_OUT_OF_RANGE');
    expect(errorCode(() => gatherKv(layer, [0], -1))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => gatherKv(layer, 'x' as never, 1))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => gatherKv(layer, [0], 2, { key: new Float32Array(1), value: new Float32Array(2) }))).toBe('SHAPE_MISMATCH');
    for (const bad of [Number.NaN, 0, -1, Number.POSITIVE_INFINITY, 1e-50]) {
      layer.kScale[0] = bad;
      expect(errorCode(() => writeKv(layer, kv, kv, Int32Array.of(0, 1)))).toBe('INVALID_SCALE');
      expect(errorCode(() => gatherKv(layer, [0], 1))).toBe('INVALID_SCALE');
    }
    layer.kScale[0] = 1;
    expect(() => {
      layer.vScale[0] = -2;
      writeKv(layer, kv, kv, Int32Array.of(0, 1));
    }).toThrow(/layer\.vScale\[0\] = -2 must be a finite float32 > 0/);
    const wrongShape = { ...layer, kScale: new Float32Array([1, 1, 1]) };
    expect(errorCode(() => writeKv(wrongShape, kv, kv, Int32Array.of(0, 1)))).toBe('SCALE_SHAPE');
    const mismatched = { ...layer, kScale: new Float32Array([1]), vScale: Float32Array.of(1) };
    expect(() => writeKv(mismatched, kv, kv, Int32Array.of(0, 1))).not.toThrow();
    const truncated = { ...layer, key: new Uint8Array(3) };
    expect(errorCode(() => gatherKv(truncated, [0], 1))).toBe('SHAPE_MISMATCH');
    // bf16 ignores scales entirely
    const plain = createKvLayerCache({ dtype: 'bf16', numBlocks: 2, blockSize: 2, numKvHeads: 1, headSize: 2 });
    plain.kScale[0] = Number.NaN;
    expect(() => writeKv(plain, kv, kv, Int32Array.of(0, 1))).not.toThrow();
  });
});

describe('copyBlocks', () => {
  it('copies whole blocks in both pools', () => {
    const l = createKvLayerCache({ dtype: 'f16', numBlocks: 4, blockSize: 2, numKvHeads: 1, headSize: 3 });
    const n = 6;
    for (let i = 0; i < l.key.length; i++) {
      l.key[i] = i;
      l.value[i] = 1000 + i;
    }
    copyBlocks(l, [
      { src: 1, dst: 3 },
      { src: 2, dst: 2 },
    ]);
    expect(Array.from(l.key.subarray(3 * n, 4 * n))).toEqual(range(n, n));
    expect(Array.from(l.value.subarray(3 * n, 4 * n))).toEqual(range(1000 + n, n));
    expect(Array.from(l.key.subarray(2 * n, 3 * n))).toEqual(range(2 * n, n));
    expect(errorCode(() => copyBlocks(l, [{ src: 0, dst: 4 }]))).toBe('SLOT_OUT_OF_RANGE');
    expect(errorCode(() => copyBlocks(l, [{ src: -1, dst: 1 }]))).toBe('SLOT_OUT_OF_RANGE');
  });
});

describe('KvCacheStorage', () => {
  const opts = { numLayers: 3, dtype: 'e4m3fn' as const, numBlocks: 8, blockSize: 4, numKvHeads: 2, headSize: 4, numHeads: 4 };

  it('holds one layer per attention layer and counts its bytes', () => {
    const st = new KvCacheStorage({ ...opts, scaleGranularity: 'head', qScaleGranularity: 'head' });
    expect(st.layers).toHaveLength(3);
    expect(st.layer(2)).toBe(st.layers[2]);
    expect(st.byteLength).toBe(3 * (2 * 8 * 4 * 2 * 4 + (2 + 2 + 4) * 4));
    expect(errorCode(() => st.layer(3))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => new KvCacheStorage({ ...opts, numLayers: 0 }))).toBe('INVALID_ARGUMENT');
  });

  it('setScales validates everything first, writes in place and bumps the version', () => {
    const st = new KvCacheStorage({ ...opts, scaleGranularity: 'head' });
    const k = st.layers[1]!.kScale;
    expect(st.scaleVersion).toBe(0);
    st.setScales(1, { kScale: [0.5, 0.25], vScale: 2, qScale: 0.125 });
    expect(st.layers[1]!.kScale).toBe(k); // same array, updated in place
    expect(Array.from(k)).toEqual([0.5, 0.25]);
    expect(Array.from(st.layers[1]!.vScale)).toEqual([2, 2]);
    expect(Array.from(st.layers[1]!.qScale)).toEqual([0.125]);
    expect(st.scaleVersion).toBe(1);
    expect(errorCode(() => st.setScales(1, { kScale: [1, 1], vScale: [1, Number.NaN] }))).toBe('INVALID_SCALE');
    expect(Array.from(k)).toEqual([0.5, 0.25]); // nothing written
    expect(errorCode(() => st.setScales(1, { kScale: [1] }))).toBe('SCALE_SHAPE');
    expect(errorCode(() => st.setScales(1, { kScale: 0 }))).toBe('INVALID_SCALE');
    expect(errorCode(() => st.setScales(1, { kScale: 'x' as never }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => st.setScales(9, { kScale: 1 }))).toBe('INVALID_ARGUMENT');
    expect(st.scaleVersion).toBe(1);
    st.setScales(0, {});
    expect(st.scaleVersion).toBe(1);
    st.layers[0]!.kScale[0] = 3;
    st.markScalesChanged();
    expect(st.scaleVersion).toBe(2);
    st.validate();
    st.layers[2]!.vScale[1] = -1;
    expect(() => st.validate()).toThrow(/layers\[2\]\.vScale\[1\]/);
  });

  it('drives the prefix-cache hash: new scales, no reuse', () => {
    const st = new KvCacheStorage(opts);
    const m = new KvCacheManager({ numBlocks: st.numBlocks, blockSize: st.blockSize, format: st, hashSeed: 's' });
    m.addSequence('a', range(0, 9));
    m.allocate('a');
    expect(m.findCachedPrefix(range(0, 9)).numCachedTokens).toBe(8);
    st.setScales(0, { kScale: 0.5 });
    expect(m.findCachedPrefix(range(0, 9)).numCachedTokens).toBe(0);
  });

  it('end to end with the manager: prefix hits and copy-on-write forks read back their own KV', () => {
    const numKvHeads = 2;
    const headSize = 4;
    const row = numKvHeads * headSize;
    const st = new KvCacheStorage({ numLayers: 2, dtype: 'e5m2', numBlocks: 12, blockSize: 4, numKvHeads, headSize, scaleGranularity: 'head' });
    st.setScales(0, { kScale: [0.5, 2], vScale: [0.25, 1] });
    st.setScales(1, { kScale: 0.75, vScale: 3 });
    const m = new KvCacheManager({ numBlocks: 12, blockSize: 4, format: st, hashSeed: 'e2e' });
    // "model": K/V of position p depend on the token prefix up to p (here: a hash of it), per layer
    const kvFor = (tokens: readonly number[], p: number, layer: number, which: number): Float32Array => {
      let h = 17 + layer * 131 + which * 7919;
      for (let i = 0; i <= p; i++) h = (Math.imul(h, 31) + tokens[i]! + 1) | 0;
      const r = seededNormal(h);
      return Float32Array.from({ length: row }, () => r() * 3);
    };
    const run = (id: string) => {
      const a = m.allocate(id)!;
      st.copyBlocks(a.copies);
      const tokens = m.tokenIds(id);
      st.layers.forEach((layer, l) => {
        const k = new Float32Array(a.numNewTokens * row);
        const v = new Float32Array(a.numNewTokens * row);
        for (let i = 0; i < a.numNewTokens; i++) {
          k.set(kvFor(tokens, a.firstPosition + i, l, 0), i * row);
          v.set(kvFor(tokens, a.firstPosition + i, l, 1), i * row);
        }
        writeKv(layer, k, v, a.slotMapping);
      });
      return a;
    };
    const verify = (id: string) => {
      const tokens = m.tokenIds(id);
      const n = m.getSequence(id).numComputedTokens;
      st.layers.forEach((layer, l) => {
        const g = gatherKv(layer, m.blockTable(id), n);
        for (let p = 0; p < n; p++) {
          const want = expectedRoundTrip(layer, kvFor(tokens, p, l, 0), layer.kScale);
          expect(bits(g.key.subarray(p * row, (p + 1) * row)), `${id} layer ${l} pos ${p}`).toEqual(bits(want));
          const wantV = expectedRoundTrip(layer, kvFor(tokens, p, l, 1), layer.vScale);
          expect(bits(g.value.subarray(p * row, (p + 1) * row))).toEqual(bits(wantV));
        }
      });
    };
    m.addSequence('a', range(0, 10));
    run('a');
    m.addSequence('b', [...range(0, 8), 42, 43]);
    expect(run('b').numCachedTokens).toBe(8);
    m.fork('a', 'a2');
    m.appendTokens('a', [7]);
    expect(run('a').copies).toHaveLength(1);
    m.appendTokens('a2', [8]);
    expect(run('a2').copies).toHaveLength(0);
    for (const id of ['a', 'a2', 'b']) verify(id);
    m.checkInvariants();
  });
});
