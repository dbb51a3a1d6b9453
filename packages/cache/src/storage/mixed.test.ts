/**
 * Mixed-precision storage (`layerDtypes`, the basis of `kvCacheDtypeSkipLayers`): each layer gets its own dtype and
 * pool size, the planner sums the per-layer pages, block hashes and the tier block format tell a mixed cache from a
 * uniform one (and a uniform cache's hashes do not change), and a mixed block round-trips through the codec.
 */
import { describe, expect, it } from 'vitest';
import { decodeKvBlock, encodeKvBlock, kvBlockFormatOf, kvBlockPayloadBytes, readKvBlock, writeKvBlock } from '../block-codec.js';
import { CacheError } from '../errors.js';
import { BlockHasher } from '../hash.js';
import { kvBlockLayout } from '../kv-quant.js';
import { planKvCache } from '../plan.js';
import { KvCacheStorage, type KvCacheStorageOptions } from './storage.js';

const SHAPE = { numLayers: 4, numBlocks: 5, blockSize: 16, numKvHeads: 2, headSize: 64, numHeads: 4 } as const;
const MIXED = ['bf16', 'e4m3fn', 'e4m3fn', 'bf16'] as const;

describe('KvCacheStorage layerDtypes', () => {
  it('gives each layer its dtype and pool size; the default is every layer the main dtype', () => {
    const s = new KvCacheStorage({ ...SHAPE, dtype: 'e4m3fn', layerDtypes: MIXED });
    expect(s.dtype).toBe('e4m3fn');
    expect(s.layerDtypes).toEqual(MIXED);
    expect(s.layers.map((l) => l.dtype)).toEqual(MIXED);
    const perBlock = 16 * 2 * 64;
    expect(s.layer(0).key).toBeInstanceOf(Uint16Array);
    expect(s.layer(0).key.byteLength).toBe(5 * perBlock * 2);
    expect(s.layer(1).key).toBeInstanceOf(Uint8Array);
    expect(s.layer(1).key.byteLength).toBe(5 * perBlock);
    expect(new KvCacheStorage({ ...SHAPE, dtype: 'bf16' }).layerDtypes).toEqual(['bf16', 'bf16', 'bf16', 'bf16']);
    // A write-time-scaled main dtype with float skip layers; per-head FP8 scales only where the dtype takes them.
    const q = new KvCacheStorage({ ...SHAPE, dtype: 'int8_per_token_head', layerDtypes: ['bf16', 'int8_per_token_head', 'int8_per_token_head', 'int8_per_token_head'] });
    expect(q.layer(1).key.byteLength).toBe(5 * kvBlockLayout('int8_per_token_head', 16, 2, 64).blockBytes);
    const h = new KvCacheStorage({ ...SHAPE, dtype: 'e4m3fn', scaleGranularity: 'head', layerDtypes: MIXED });
    expect(h.layer(1).kScale.length).toBe(2);
    expect(h.layer(0).kScale.length).toBe(1);
  });

  it('rejects a wrong length or an unknown dtype with a typed error naming the layer', () => {
    const bad = (layerDtypes: unknown) => () => new KvCacheStorage({ ...SHAPE, dtype: 'e4m3fn', layerDtypes } as unknown as KvCacheStorageOptions);
    expect(bad(['bf16'])).toThrow(/layerDtypes must be an array of 4 dtypes/);
    expect(bad(['bf16', 'e4m3fn', 'int3', 'bf16'])).toThrow(CacheError);
    expect(bad(['bf16', 'e4m3fn', 'int3', 'bf16'])).toThrow(/layerDtypes\[2\]/);
  });

  it('planKvCache sums the per-layer pages: bytes per token and blocks for a budget', () => {
    const model = { numLayers: 4, numKvHeads: 2, headSize: 64, numHeads: 4 };
    const plan = planKvCache({ model, dtype: 'e4m3fn', blockSize: 16, memoryBytes: 1 << 20, layerDtypes: MIXED });
    // bf16 layers: 2 x 2 heads x 64 x 2 B; e4m3 layers: 2 x 2 x 64 x 1 B (per token); scales 12 B per FP8 layer.
    expect(plan.bytesPerToken).toBe(2 * 512 + 2 * 256);
    expect(plan.scaleBytes).toBe(2 * 12);
    expect(plan.numBlocks).toBe(Math.floor(((1 << 20) - 24) / (16 * plan.bytesPerToken)));
    const uniform = planKvCache({ model, dtype: 'e4m3fn', blockSize: 16, memoryBytes: 1 << 20 });
    expect(planKvCache({ model, dtype: 'e4m3fn', blockSize: 16, memoryBytes: 1 << 20, layerDtypes: ['e4m3fn', 'e4m3fn', 'e4m3fn', 'e4m3fn'] })).toEqual(uniform);
    expect(() => planKvCache({ model, dtype: 'e4m3fn', memoryBytes: 1 << 20, layerDtypes: ['bf16'] })).toThrow(/layerDtypes must be an array of 4/);
  });

  it('block hashes and the tier format tell mixed from uniform; a uniform cache hashes as before', () => {
    const hasher = new BlockHasher({ seed: 'x' });
    const tokens = Array.from({ length: 16 }, (_, i) => i + 1);
    const hash = (format: { dtype: string; scaleVersion: number; layerDtypes?: readonly string[] }) => hasher.hashBlock(undefined, format, tokens, 0, 16, undefined);
    const uniform = new KvCacheStorage({ ...SHAPE, dtype: 'e4m3fn' });
    const mixed = new KvCacheStorage({ ...SHAPE, dtype: 'e4m3fn', layerDtypes: MIXED });
    expect(hash(uniform)).toBe(hash({ dtype: 'e4m3fn', scaleVersion: 0 }));
    expect(hash(mixed)).not.toBe(hash(uniform));
    expect(hash(mixed)).not.toBe(hash(new KvCacheStorage({ ...SHAPE, dtype: 'e4m3fn', layerDtypes: ['e4m3fn', 'e4m3fn', 'e4m3fn', 'bf16'] })));
    expect(kvBlockFormatOf(mixed, 'm').layout).toContain(';dtypes=bf16,e4m3fn,e4m3fn,bf16');
    expect(kvBlockFormatOf(uniform, 'm').layout).not.toContain('dtypes=');
  });

  it('a mixed block round-trips through readKvBlock / encode / decode / writeKvBlock with every layer size', () => {
    const a = new KvCacheStorage({ ...SHAPE, dtype: 'e4m3fn', layerDtypes: MIXED });
    a.layers.forEach((l, i) => {
      for (const pool of [l.key, l.value]) for (let j = 0; j < pool.length; j++) pool[j] = (j * 7 + i * 13) & 0x7f;
    });
    expect(kvBlockPayloadBytes(a)).toBe(2 * (2 * 4096 + 2 * 2048)); // K+V of 2 bf16 and 2 e4m3 layers
    const payload = readKvBlock(a, 3);
    expect(payload.length).toBe(kvBlockPayloadBytes(a));
    const format = kvBlockFormatOf(a, 'model');
    const b = new KvCacheStorage({ ...SHAPE, dtype: 'e4m3fn', layerDtypes: MIXED });
    writeKvBlock(b, 2, decodeKvBlock(encodeKvBlock('h', format, payload), 'h', kvBlockFormatOf(b, 'model')));
    b.layers.forEach((l, i) => {
      const per = l.key.length / 5;
      expect(Array.from(l.key.subarray(2 * per, 3 * per))).toEqual(Array.from(a.layers[i]!.key.subarray(3 * per, 4 * per)));
      expect(Array.from(l.value.subarray(2 * per, 3 * per))).toEqual(Array.from(a.layers[i]!.value.subarray(3 * per, 4 * per)));
    });
    // A uniform cache of the same main dtype is another format: the block is refused, not misread.
    expect(() => decodeKvBlock(encodeKvBlock('h', format, payload), 'h', kvBlockFormatOf(new KvCacheStorage({ ...SHAPE, dtype: 'e4m3fn' }), 'model'))).toThrow(/layout/);
    expect(() => writeKvBlock(b, 1, payload.subarray(1))).toThrow(/has 24576 bytes/);
  });
});

describe('KvCacheStorage layerValueDtypes (K and V in different dtypes)', () => {
  const KEYS = ['int8_per_token_head', 'int8_per_token_head', 'bf16', 'e4m3fn'] as const;
  const VALUES = ['int4_g32_f16', 'int8_per_token_head', 'e4m3fn', 'e4m3fn'] as const;
  const q8 = kvBlockLayout('int8_per_token_head', 16, 2, 64).blockBytes;
  const q4 = kvBlockLayout('int4_g32_f16', 16, 2, 64).blockBytes;

  it('gives each pool its own dtype and size; V defaults to the layer dtype', () => {
    const s = new KvCacheStorage({ ...SHAPE, dtype: 'int8_per_token_head', layerDtypes: KEYS, layerValueDtypes: VALUES });
    expect(s.layerValueDtypes).toEqual(VALUES);
    expect(s.layers.map((l) => [l.dtype, l.valueDtype])).toEqual(KEYS.map((k, i) => [k, VALUES[i]]));
    expect(s.layer(0).key.byteLength).toBe(5 * q8);
    expect(s.layer(0).value.byteLength).toBe(5 * q4);
    expect(s.layer(2).key).toBeInstanceOf(Uint16Array);
    expect(s.layer(2).value).toBeInstanceOf(Uint8Array);
    expect(new KvCacheStorage({ ...SHAPE, dtype: 'e4m3fn', layerDtypes: MIXED }).layerValueDtypes).toEqual(MIXED);
    // `valueDtype` alone: every layer K `dtype`, V `valueDtype`.
    const g = new KvCacheStorage({ ...SHAPE, dtype: 'bf16', valueDtype: 'int4_g32' });
    expect(g.layers.map((l) => l.valueDtype)).toEqual(['int4_g32', 'int4_g32', 'int4_g32', 'int4_g32']);
    expect(() => new KvCacheStorage({ ...SHAPE, dtype: 'bf16', layerValueDtypes: ['bf16'] })).toThrow(/layerValueDtypes must be an array of 4/);
    expect(() => new KvCacheStorage({ ...SHAPE, dtype: 'bf16', layerValueDtypes: ['bf16', 'x', 'bf16', 'bf16'] as never })).toThrow(/layerValueDtypes\[1\]/);
  });

  it('copyBlocks copies each pool by its own block size', () => {
    const s = new KvCacheStorage({ ...SHAPE, dtype: 'int8_per_token_head', layerDtypes: KEYS, layerValueDtypes: VALUES });
    const l = s.layer(0);
    l.value.fill(9, 1 * q4, 2 * q4);
    l.key.fill(7, 1 * q8, 2 * q8);
    s.copyBlocks([{ src: 1, dst: 3 }]);
    expect(l.value.subarray(3 * q4, 4 * q4).every((v) => v === 9)).toBe(true);
    expect(l.value.subarray(4 * q4).every((v) => v === 0)).toBe(true);
    expect(l.key.subarray(3 * q8, 4 * q8).every((v) => v === 7)).toBe(true);
  });

  it('planKvCache adds half a page of each pool dtype per layer', () => {
    const model = { numLayers: 4, numKvHeads: 2, headSize: 64, numHeads: 4 };
    const plan = planKvCache({ model, dtype: 'int8_per_token_head', blockSize: 16, memoryBytes: 1 << 20, layerDtypes: KEYS, layerValueDtypes: VALUES });
    // Per block: layer 0 K int8 + V int4, layer 1 K+V int8, layer 2 K bf16 (4096 B) + V e4m3 (2048 B), layer 3 2 x e4m3.
    const perToken = (q8 + q4 + 2 * q8 + 4096 + 2048 + 2 * 2048) / 16;
    expect(plan.bytesPerToken).toBe(perToken);
    expect(planKvCache({ model, dtype: 'bf16', blockSize: 16, memoryBytes: 1 << 20, layerValueDtypes: ['bf16', 'bf16', 'bf16', 'bf16'] })).toEqual(
      planKvCache({ model, dtype: 'bf16', blockSize: 16, memoryBytes: 1 << 20 }),
    );
  });

  it('hashes and the tier format name every layer as K/V; caches differing only in a V dtype never share a hash', () => {
    const hasher = new BlockHasher({ seed: 'x' });
    const tokens = Array.from({ length: 16 }, (_, i) => i + 1);
    const hash = (format: KvCacheStorage) => hasher.hashBlock(undefined, format, tokens, 0, 16, undefined);
    const a = new KvCacheStorage({ ...SHAPE, dtype: 'int8_per_token_head', layerDtypes: KEYS, layerValueDtypes: VALUES });
    const b = new KvCacheStorage({ ...SHAPE, dtype: 'int8_per_token_head', layerDtypes: KEYS, layerValueDtypes: [...VALUES.slice(0, 3), 'bf16'] });
    const c = new KvCacheStorage({ ...SHAPE, dtype: 'int8_per_token_head', layerDtypes: KEYS });
    expect(new Set([hash(a), hash(b), hash(c)]).size).toBe(3);
    // V given equal to K everywhere is the plain per-layer cache.
    expect(hash(new KvCacheStorage({ ...SHAPE, dtype: 'int8_per_token_head', layerDtypes: KEYS, layerValueDtypes: KEYS }))).toBe(hash(c));
    expect(kvBlockFormatOf(a, 'm').layout).toContain(';dtypes=int8_per_token_head/int4_g32_f16,int8_per_token_head/int8_per_token_head,bf16/e4m3fn,e4m3fn/e4m3fn');
  });

  it('a block round-trips through the codec with each pool size', () => {
    const a = new KvCacheStorage({ ...SHAPE, dtype: 'int8_per_token_head', layerDtypes: KEYS, layerValueDtypes: VALUES });
    a.layers.forEach((l, i) => {
      for (const pool of [l.key, l.value]) for (let j = 0; j < pool.length; j++) pool[j] = (j * 5 + i * 3) & 0x7f;
    });
    expect(kvBlockPayloadBytes(a)).toBe(q8 + q4 + 2 * q8 + 4096 + 2048 + 2048 + 2048);
    const b = new KvCacheStorage({ ...SHAPE, dtype: 'int8_per_token_head', layerDtypes: KEYS, layerValueDtypes: VALUES });
    writeKvBlock(b, 2, readKvBlock(a, 4));
    b.layers.forEach((l, i) => {
      for (const pool of ['key', 'value'] as const) {
        const per = l[pool].length / 5;
        expect(Array.from(l[pool].subarray(2 * per, 3 * per))).toEqual(Array.from(a.layers[i]![pool].subarray(4 * per, 5 * per)));
      }
    });
  });
});
