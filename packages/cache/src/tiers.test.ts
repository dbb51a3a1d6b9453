import { describe, expect, it } from 'vitest';
import {
  crc32,
  decodeKvBlock,
  encodeKvBlock,
  kvBlockFormatOf,
  kvBlockPayloadBytes,
  readKvBlock,
  writeKvBlock,
  type KvBlockFormat,
} from './block-codec.js';
import { CacheError } from './errors.js';
import { KvCacheManager } from './manager.js';
import { KvCacheStorage } from './storage/storage.js';
import { errorCode, range } from './test-helpers.js';
import { HostMemoryTier, type KvBlockTier, type KvTierEntry } from './tier.js';
import { TieredKvStore, type KvTierOperation } from './tiered-store.js';

const FORMAT: KvBlockFormat = { dtype: 'e4m3fn', layout: 'L', scaleVersion: 3, scaleFingerprint: 'abc', modelFingerprint: 'model-a' };

function storage(dtype: 'e4m3fn' | 'bf16' | 'f32' = 'e4m3fn', numBlocks = 8): KvCacheStorage {
  return new KvCacheStorage({ dtype, numLayers: 2, numBlocks, blockSize: 4, numKvHeads: 2, headSize: 8 });
}

function fill(s: KvCacheStorage, seed: number): void {
  s.layers.forEach((l, li) => {
    for (let i = 0; i < l.key.length; i++) {
      l.key[i] = (i * 7 + seed + li) % 200;
      l.value[i] = (i * 13 + seed + 2 * li) % 200;
    }
  });
}

describe('block codec', () => {
  it('crc32 is zlib-compatible', () => {
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
    expect(crc32(new Uint8Array(0))).toBe(0);
  });

  it('round-trips a block between two storages of the same format, every layer, K and V', () => {
    for (const dtype of ['e4m3fn', 'bf16', 'f32'] as const) {
      const a = storage(dtype);
      fill(a, 5);
      const b = storage(dtype);
      const payload = readKvBlock(a, 3);
      expect(payload.length).toBe(kvBlockPayloadBytes(a));
      const bytes = encodeKvBlock('h3', kvBlockFormatOf(a, 'm'), payload);
      writeKvBlock(b, 6, decodeKvBlock(bytes, 'h3', kvBlockFormatOf(b, 'm')));
      const per = 4 * 2 * 8;
      for (let l = 0; l < 2; l++) {
        expect(Array.from(b.layers[l]!.key.subarray(6 * per, 7 * per))).toEqual(Array.from(a.layers[l]!.key.subarray(3 * per, 4 * per)));
        expect(Array.from(b.layers[l]!.value.subarray(6 * per, 7 * per))).toEqual(Array.from(a.layers[l]!.value.subarray(3 * per, 4 * per)));
        // the neighbours are untouched
        expect(b.layers[l]!.key.subarray(5 * per, 6 * per).every((x) => x === 0)).toBe(true);
      }
    }
  });

  it('the format covers dtype, layout and scales; scale changes are seen', () => {
    const a = storage();
    const f0 = kvBlockFormatOf(a, 'm');
    expect(kvBlockFormatOf(storage('bf16'), 'm').dtype).toBe('bf16');
    expect(kvBlockFormatOf(new KvCacheStorage({ dtype: 'e4m3fn', numLayers: 3, numBlocks: 8, blockSize: 4, numKvHeads: 2, headSize: 8 }), 'm').layout).not.toBe(f0.layout);
    a.setScales(0, { kScale: 0.5 });
    const f1 = kvBlockFormatOf(a, 'm');
    expect(f1.scaleVersion).toBe(f0.scaleVersion + 1);
    expect(f1.scaleFingerprint).not.toBe(f0.scaleFingerprint);
    const b = storage();
    b.setScales(0, { kScale: 0.25 }); // same version counter, other values
    expect(kvBlockFormatOf(b, 'm').scaleVersion).toBe(f1.scaleVersion);
    expect(kvBlockFormatOf(b, 'm').scaleFingerprint).not.toBe(f1.scaleFingerprint);
  });

  it('rejects corrupt bytes and foreign blocks with typed codes naming the field', () => {
    const payload = Uint8Array.from(range(0, 40));
    const good = encodeKvBlock('h1', FORMAT, payload);
    expect(Array.from(decodeKvBlock(good, 'h1', FORMAT))).toEqual(Array.from(payload));
    const flipped = good.slice();
    flipped[flipped.length - 3]! ^= 0x10;
    expect(errorCode(() => decodeKvBlock(flipped, 'h1', FORMAT))).toBe('CORRUPT_BLOCK');
    expect(errorCode(() => decodeKvBlock(good.subarray(0, good.length - 1), 'h1', FORMAT))).toBe('CORRUPT_BLOCK');
    expect(errorCode(() => decodeKvBlock(new TextEncoder().encode('hello world, not a block'), 'h1', FORMAT))).toBe('CORRUPT_BLOCK');
    expect(errorCode(() => decodeKvBlock(new Uint8Array(0), 'h1', FORMAT))).toBe('CORRUPT_BLOCK');
    for (const [field, other] of [
      ['modelFingerprint', { ...FORMAT, modelFingerprint: 'model-b' }],
      ['dtype', { ...FORMAT, dtype: 'bf16' }],
      ['layout', { ...FORMAT, layout: 'M' }],
      ['scaleVersion', { ...FORMAT, scaleVersion: 4 }],
      ['scaleFingerprint', { ...FORMAT, scaleFingerprint: 'abd' }],
    ] as const) {
      const e = (() => {
        try {
          decodeKvBlock(encodeKvBlock('h1', other, payload), 'h1', FORMAT);
        } catch (err) {
          return err as CacheError;
        }
        return undefined;
      })();
      expect(e?.code).toBe('FOREIGN_BLOCK');
      expect(e?.message).toContain(field);
    }
    expect(errorCode(() => decodeKvBlock(good, 'h2', FORMAT))).toBe('FOREIGN_BLOCK');
    const v2 = good.slice();
    v2[4] = 2;
    expect(errorCode(() => decodeKvBlock(v2, 'h1', FORMAT))).toBe('FOREIGN_BLOCK');
  });

  it('checks block ids and payload sizes', () => {
    const s = storage();
    expect(errorCode(() => readKvBlock(s, 0))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => readKvBlock(s, 8))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => writeKvBlock(s, 1, new Uint8Array(3)))).toBe('SHAPE_MISMATCH');
  });
});

describe('HostMemoryTier', () => {
  const v = (n: number, fillWith = 1) => new Uint8Array(n).fill(fillWith);

  it('evicts the least recently used entries to stay within capacity; a hit refreshes', async () => {
    const t = new HostMemoryTier({ capacityBytes: 30 });
    await t.set([{ hash: 'a', value: v(10) }, { hash: 'b', value: v(10) }, { hash: 'c', value: v(10) }]);
    expect(t.byteLength).toBe(30);
    await t.get(['a']); // a is now the most recent
    await t.set([{ hash: 'd', value: v(10) }]);
    expect([t.has('a'), t.has('b'), t.has('c'), t.has('d')]).toEqual([true, false, true, true]);
    expect(t.numEvictions).toBe(1);
    await t.set([{ hash: 'big', value: v(31) }]); // larger than the capacity: not stored, nothing evicted
    expect(t.has('big')).toBe(false);
    expect(t.size).toBe(3);
    await t.set([{ hash: 'a', value: v(20, 7) }]); // overwrite: bytes accounted once
    expect(t.byteLength).toBeLessThanOrEqual(30);
    expect((await t.get(['a', 'zz']))[0]![0]).toBe(7);
    expect((await t.get(['zz']))[0]).toBeUndefined();
  });

  it('copies a value that is a view into a larger buffer (it must not pin the rest)', async () => {
    const t = new HostMemoryTier({ capacityBytes: 100 });
    const big = new Uint8Array(1000).fill(3);
    await t.set([{ hash: 'v', value: big.subarray(10, 20) }]);
    const [got] = await t.get(['v']);
    expect(got!.buffer.byteLength).toBe(10);
    expect(Array.from(got!)).toEqual(new Array(10).fill(3));
  });

  it('validates its options', () => {
    expect(errorCode(() => new HostMemoryTier({ capacityBytes: 0 }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => new HostMemoryTier({ capacityBytes: 1.5 }))).toBe('INVALID_ARGUMENT');
  });
});

/** A tier whose behaviour the test scripts (the real tiers are tested in their own packages). */
class ScriptedTier implements KvBlockTier {
  readonly map = new Map<string, Uint8Array>();
  mode: 'ok' | 'down' | 'hang' | 'full' = 'ok';
  gets = 0;
  constructor(readonly name: string) {}
  get(hashes: readonly string[]) {
    this.gets++;
    if (this.mode === 'down') return Promise.reject(new CacheError('TIER_UNAVAILABLE', 'connection refused'));
    if (this.mode === 'hang') return new Promise<(Uint8Array | undefined)[]>(() => {});
    return Promise.resolve(hashes.map((h) => this.map.get(h)));
  }
  set(entries: readonly KvTierEntry[]) {
    if (this.mode === 'down') return Promise.reject(new CacheError('TIER_UNAVAILABLE', 'connection refused'));
    if (this.mode === 'full') return Promise.reject(new CacheError('TIER_FULL', 'OOM'));
    if (this.mode === 'hang') return new Promise<void>(() => {});
    for (const e of entries) this.map.set(e.hash, e.value);
    return Promise.resolve();
  }
  close() {
    return Promise.resolve();
  }
}

describe('TieredKvStore', () => {
  const block = (h: string, format = FORMAT) => ({ hash: h, value: encodeKvBlock(h, format, new TextEncoder().encode(`payload ${h}`)) });
  const text = (p: Uint8Array) => new TextDecoder().decode(p);

  it('loads the longest consecutive run across tiers and promotes lower-tier hits', async () => {
    const host = new ScriptedTier('host');
    const redis = new ScriptedTier('redis');
    const ops: KvTierOperation[] = [];
    const store = new TieredKvStore({ tiers: [host, redis], log: () => {} });
    store.onOperation((op) => ops.push(op));
    for (const h of ['h0', 'h1']) host.map.set(h, block(h).value);
    for (const h of ['h0', 'h1', 'h2', 'h3', 'h5']) redis.map.set(h, block(h).value);
    const got = await store.load(['h0', 'h1', 'h2', 'h3', 'h4', 'h5'], FORMAT);
    expect(got.map(text)).toEqual(['payload h0', 'payload h1', 'payload h2', 'payload h3']);
    await store.flush();
    expect(host.map.has('h2') && host.map.has('h3')).toBe(true); // promoted
    const [hs, rs] = store.tierStats();
    expect(hs).toMatchObject({ tier: 'host', hits: 2, misses: 4 });
    expect(rs).toMatchObject({ tier: 'redis', hits: 2, misses: 2 });
    expect(rs!.bytesLoaded).toBe(block('h2').value.length + block('h3').value.length);
    expect(ops.filter((o) => o.op === 'load').map((o) => [o.tier, o.blocks, o.hits])).toEqual([['host', 6, 2], ['redis', 4, 2]]);
  });

  it('treats an unreachable, slow, full, corrupt or foreign tier as a miss, counted and logged, never thrown', async () => {
    const redis = new ScriptedTier('redis');
    const logs: string[] = [];
    const store = new TieredKvStore({ tiers: [redis], timeoutMs: 50, log: (m) => logs.push(m) });
    redis.map.set('h0', block('h0').value);
    redis.map.set('h1', new TextEncoder().encode('garbage'));
    expect((await store.load(['h0', 'h1'], FORMAT)).length).toBe(1);
    redis.map.set('h1', block('h1', { ...FORMAT, modelFingerprint: 'other' }).value);
    expect((await store.load(['h0', 'h1'], FORMAT)).length).toBe(1);
    redis.map.set('h0', block('h9').value); // a real block planted under another key
    expect((await store.load(['h0'], FORMAT)).length).toBe(0);
    redis.mode = 'down';
    expect(await store.load(['h0'], FORMAT)).toEqual([]);
    await store.store([block('x')]);
    redis.mode = 'hang';
    const t0 = Date.now();
    expect(await store.load(['h0'], FORMAT)).toEqual([]);
    expect(Date.now() - t0).toBeLessThan(1000);
    await store.store([block('x')]);
    redis.mode = 'full';
    await store.store([block('y')]);
    const f = store.tierStats()[0]!.failures;
    expect(f).toEqual({ unavailable: 2, timeout: 2, full: 1, corrupt: 1, foreign: 2, error: 0 });
    expect(logs.some((l) => l.includes('redis: unavailable'))).toBe(true);
    expect(logs.filter((l) => l.includes('redis: foreign')).length).toBe(1); // rate-limited
    redis.mode = 'ok';
    redis.map.set('h0', block('h0').value);
    expect((await store.load(['h0'], FORMAT)).length).toBe(1);
  });

  it('drops writes beyond the in-flight byte limit instead of queueing them', async () => {
    const slow = new ScriptedTier('redis');
    slow.mode = 'hang';
    const store = new TieredKvStore({ tiers: [slow], timeoutMs: 30, maxPendingStoreBytes: 100, log: () => {} });
    const big = { hash: 'b', value: new Uint8Array(80) };
    const first = store.store([big]);
    await store.store([{ hash: 'c', value: new Uint8Array(80) }]);
    expect(store.tierStats()[0]!.blocksDropped).toBe(1);
    await first;
    expect(store.tierStats()[0]!.failures.timeout).toBe(1);
  });

  it('looks a long chain up in calls of at most maxBlocksPerCall blocks, stopping at the first gap', async () => {
    const t = new ScriptedTier('redis');
    const store = new TieredKvStore({ tiers: [t], maxBlocksPerCall: 2, log: () => {} });
    for (const h of ['c0', 'c1', 'c2', 'c3', 'c4']) t.map.set(h, block(h).value);
    expect((await store.load(['c0', 'c1', 'c2', 'c3', 'c4'], FORMAT)).map(text)).toEqual(['c0', 'c1', 'c2', 'c3', 'c4'].map((h) => `payload ${h}`));
    expect(t.gets).toBe(3);
    t.map.delete('c2');
    expect((await store.load(['c0', 'c1', 'c2', 'c3', 'c4'], FORMAT)).length).toBe(2);
    expect(t.gets).toBe(5);
    expect(store.tierStats()[0]).toMatchObject({ hits: 7, misses: 3 });
  });

  it('validates its options', () => {
    expect(errorCode(() => new TieredKvStore({ tiers: [new ScriptedTier('a')], maxBlocksPerCall: 0 }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => new TieredKvStore({ tiers: [] }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => new TieredKvStore({ tiers: [new ScriptedTier('a'), new ScriptedTier('a')] }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => new TieredKvStore({ tiers: [new ScriptedTier('a')], timeoutMs: 0 }))).toBe('INVALID_ARGUMENT');
  });
});

describe('KvCacheManager: blocks imported from a tier', () => {
  it('imports blocks after the cached prefix; admission hits them; nothing leaks', () => {
    const m = new KvCacheManager({ numBlocks: 12, blockSize: 4, hashSeed: 's' });
    const tokens = range(10, 18); // 4 full blocks can be hit (the last token's block never)
    m.addSequence('w', tokens.slice(0, 9));
    m.allocate('w');
    m.free('w'); // blocks 0, 1 of the chain are cached locally
    m.addSequence('a', tokens);
    const { hashes, numCachedBlocks } = m.prefixBlockHashes('a');
    expect(hashes.length).toBe(4);
    expect(numCachedBlocks).toBe(2);
    const written: number[][] = [];
    expect(m.importBlocks('a', 2, hashes.slice(2), (ids) => written.push([...ids]))).toBe(2);
    expect(written[0]!.length).toBe(2);
    m.checkInvariants();
    expect(m.metrics().numFreeBlocks).toBe(11);
    expect(m.prefixBlockHashes('a').numCachedBlocks).toBe(4);
    const alloc = m.allocate('a')!;
    expect(alloc.numCachedTokens).toBe(16);
    expect(Array.from(m.blockTable('a')).slice(2, 4)).toEqual(written[0]);
    m.free('a');
    m.checkInvariants();
    expect(m.metrics().numFreeBlocks).toBe(11);
  });

  it('imports nothing for stale hashes, a lost local prefix, or a running sequence; caps at the free blocks', () => {
    const m = new KvCacheManager({ numBlocks: 4, blockSize: 4, hashSeed: 's' });
    m.addSequence('a', range(0, 30));
    const { hashes } = m.prefixBlockHashes('a');
    expect(m.importBlocks('a', 0, ['nope'], () => {})).toBe(0);
    expect(m.importBlocks('a', 1, hashes.slice(1, 2), () => {})).toBe(0); // block 0 is not cached
    expect(m.importBlocks('a', 0, hashes, () => {})).toBe(3); // 3 usable blocks
    m.checkInvariants();
    expect(() => m.importBlocks('a', 0, hashes.slice(0, 1), () => { throw new Error('boom'); })).toThrow('boom');
    m.checkInvariants();
    expect(m.metrics().numFreeBlocks).toBe(3);
    const b = new KvCacheManager({ numBlocks: 8, blockSize: 4, hashSeed: 's' });
    b.addSequence('r', range(0, 9));
    const h = b.prefixBlockHashes('r').hashes;
    b.allocate('r');
    expect(b.prefixBlockHashes('r').hashes).toEqual([]);
    expect(b.importBlocks('r', 0, h, () => {})).toBe(0);
    expect(b.cachedBlockHash('r', 0)).toBe(h[0]);
    expect(b.cachedBlockHash('r', 2)).toBeUndefined(); // not full
  });
});
