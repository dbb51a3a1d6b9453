import { describe, expect, it } from 'vitest';
import { KvCacheManager, type KvCacheManagerOptions } from './manager.js';
import { errorCode, range } from './test-helpers.js';

function mgr(opts: Partial<KvCacheManagerOptions> = {}): KvCacheManager {
  return new KvCacheManager({ numBlocks: 16, blockSize: 4, hashSeed: 'test', ...opts });
}

const table = (m: KvCacheManager, id: string) => Array.from(m.blockTable(id));

describe('KvCacheManager: allocation and slot mapping', () => {
  it('allocates a prefill, then one slot per decode step, opening blocks as needed', () => {
    const m = mgr();
    m.addSequence('a', range(100, 10));
    expect(m.getSequence('a').status).toBe('waiting');
    const pre = m.allocate('a')!;
    expect(pre.numCachedTokens).toBe(0);
    expect(pre.firstPosition).toBe(0);
    expect(pre.numNewTokens).toBe(10);
    expect(pre.newBlockIds).toEqual([1, 2, 3]);
    expect(pre.copies).toEqual([]);
    expect(Array.from(pre.slotMapping)).toEqual([4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
    expect(m.getSequence('a')).toMatchObject({ status: 'running', numTokens: 10, numComputedTokens: 10, numBlocks: 3 });

    m.appendTokens('a', [7]);
    const d1 = m.allocate('a')!;
    expect(d1.numNewTokens).toBe(1);
    expect(d1.newBlockIds).toEqual([]);
    expect(Array.from(d1.slotMapping)).toEqual([14]);
    m.appendTokens('a', [8]);
    expect(Array.from(m.allocate('a')!.slotMapping)).toEqual([15]);
    m.appendTokens('a', [9]);
    const d3 = m.allocate('a')!;
    expect(d3.newBlockIds).toEqual([4]);
    expect(Array.from(d3.slotMapping)).toEqual([16]);
    expect(table(m, 'a')).toEqual([1, 2, 3, 4]);
    expect(Array.from(m.slotMapping('a', 2, 3))).toEqual([6, 7, 8]);
    m.checkInvariants();
    // nothing new to compute: an empty step
    const idle = m.allocate('a')!;
    expect(idle.numNewTokens).toBe(0);
    expect(idle.slotMapping.length).toBe(0);
  });

  it('supports chunked prefill', () => {
    const m = mgr();
    m.addSequence('a', range(0, 10));
    const c1 = m.allocate('a', { numNewTokens: 4 })!;
    expect(Array.from(c1.slotMapping)).toEqual([4, 5, 6, 7]);
    expect(m.getSequence('a').numComputedTokens).toBe(4);
    const c2 = m.allocate('a', { numNewTokens: 5 })!;
    expect(c2.firstPosition).toBe(4);
    expect(c2.newBlockIds).toEqual([2, 3]);
    const c3 = m.allocate('a')!;
    expect(c3.firstPosition).toBe(9);
    expect(c3.numNewTokens).toBe(1);
    expect(errorCode(() => m.allocate('a', { numNewTokens: 1 }))).toBe('INVALID_ARGUMENT');
    m.checkInvariants();
  });

  it('reserves lookahead slots without counting them as computed', () => {
    const m = mgr();
    m.addSequence('a', range(0, 4));
    const a = m.allocate('a', { numLookaheadTokens: 5 })!;
    expect(a.newBlockIds).toEqual([1, 2, 3]);
    expect(a.slotMapping.length).toBe(4);
    expect(m.getSequence('a').numComputedTokens).toBe(4);
    m.appendTokens('a', [1, 2, 3]);
    const b = m.allocate('a', { numLookaheadTokens: 2 })!;
    expect(b.newBlockIds).toEqual([]); // 4+3+2 = 9 slots fit in the 3 blocks
    expect(Array.from(b.slotMapping)).toEqual([8, 9, 10]);
    expect(Array.from(m.slotMapping('a', 8, 1))).toEqual([12]);
    expect(errorCode(() => m.slotMapping('a', 10, 3))).toBe('SLOT_OUT_OF_RANGE');
    expect(errorCode(() => m.allocate('a', { numLookaheadTokens: -1 }))).toBe('INVALID_ARGUMENT');
    m.checkInvariants();
  });

  it('returns null and changes nothing when blocks run out', () => {
    const m = mgr({ numBlocks: 4 }); // 3 usable blocks = 12 tokens
    m.addSequence('a', range(0, 13));
    expect(m.canAllocate('a')).toBe(false);
    expect(m.allocate('a')).toBeNull();
    expect(m.getSequence('a')).toMatchObject({ status: 'waiting', numBlocks: 0 });
    expect(m.metrics().numFreeBlocks).toBe(3);
    expect(m.metrics().prefixCacheQueries).toBe(0);
    expect(m.canAllocate('a', { numNewTokens: 12 })).toBe(true);
    m.checkInvariants();
  });

  it('frees on finish and abort, tail first', () => {
    const m = mgr({ numBlocks: 8 });
    m.addSequence('a', range(0, 9));
    m.allocate('a');
    m.addSequence('b', range(50, 2));
    m.allocate('b');
    m.free('a');
    expect(m.pool.freeBlockIds()).toEqual([5, 6, 7, 3, 2, 1]);
    m.abort('b');
    m.addSequence('w', [1]);
    m.abort('w'); // waiting: nothing to free
    expect(m.metrics()).toMatchObject({ numFreeBlocks: 7, usage: 0, numFinished: 1, numAborted: 2, numSequences: 0 });
    m.checkInvariants();
  });
});

describe('KvCacheManager: prefix caching', () => {
  it('hits whole cached blocks, never the last token', () => {
    const m = mgr();
    m.addSequence('a', range(0, 12));
    m.allocate('a');
    expect(m.metrics().numCachedBlocks).toBe(3);
    // identical prompt: the last token must be recomputed, so only 2 of 3 blocks hit
    expect(m.findCachedPrefix(range(0, 12))).toEqual({ blockIds: [1, 2], numCachedTokens: 8 });
    expect(m.findCachedPrefix(range(0, 13))).toEqual({ blockIds: [1, 2, 3], numCachedTokens: 12 });
    expect(m.findCachedPrefix([...range(0, 6), 99, ...range(7, 6)])).toEqual({ blockIds: [1], numCachedTokens: 4 });
    expect(m.findCachedPrefix(range(1, 12)).numCachedTokens).toBe(0);

    m.addSequence('b', [...range(0, 12), 500, 501]);
    const b = m.allocate('b')!;
    expect(b.numCachedTokens).toBe(12);
    expect(b.firstPosition).toBe(12);
    expect(b.newBlockIds).toEqual([4]);
    expect(Array.from(b.slotMapping)).toEqual([16, 17]);
    expect(table(m, 'b')).toEqual([1, 2, 3, 4]);
    expect(m.pool.getBlock(1).refCount).toBe(2);
    expect(m.getSequence('b').numCachedTokens).toBe(12);
    const met = m.metrics();
    expect(met.prefixCacheQueries).toBe(12 + 14);
    expect(met.prefixCacheHits).toBe(12);
    expect(met.recentHitRate).toBeCloseTo(12 / 26, 12);
    m.checkInvariants();
  });

  it('reuses cached blocks after their sequence ended, until they are reallocated (tails first)', () => {
    const m = mgr({ numBlocks: 6 }); // 5 usable
    m.addSequence('a', range(0, 16));
    m.allocate('a'); // blocks 1..4, all full and cached
    m.free('a');
    expect(m.metrics().numCachedBlocks).toBe(4);
    // a 2-block sequence takes block 5, then block 4 (a's tail): one lazy eviction
    m.addSequence('c', range(1000, 8));
    m.allocate('c');
    expect(table(m, 'c')).toEqual([5, 4]);
    expect(m.metrics().numEvictions).toBe(1);
    // a's first three blocks are still hittable
    expect(m.findCachedPrefix(range(0, 17)).numCachedTokens).toBe(12);
    m.free('c'); // queue: 3 2 1 4 5 (c's blocks cached too)
    m.addSequence('b', range(0, 17));
    const b = m.allocate('b')!;
    expect(b.numCachedTokens).toBe(12);
    expect(table(m, 'b')).toEqual([1, 2, 3, 4, 5]);
    expect(m.metrics().numEvictions).toBe(3);
    m.checkInvariants();
  });

  it('counts free cached hits against free capacity', () => {
    const m = mgr({ numBlocks: 4 }); // 3 usable
    m.addSequence('a', range(0, 8));
    m.allocate('a');
    m.free('a'); // blocks 2,1 free and cached, 3 free
    m.addSequence('b', range(0, 12)); // hits 2 blocks (which leave the free queue), needs 1 more
    expect(m.canAllocate('b')).toBe(true);
    m.addSequence('c', range(0, 13)); // would need 2 hits + 2 new = 4 > 3
    expect(m.canAllocate('c')).toBe(false);
    expect(m.allocate('b')!.numCachedTokens).toBe(8);
    expect(m.metrics().numFreeBlocks).toBe(0);
    m.checkInvariants();
  });

  it('isolates by cache salt, extra keys, per-block keys, dtype and scale version', () => {
    const format = { dtype: 'e4m3fn', scaleVersion: 0 };
    const m = mgr({ format });
    const prompt = range(0, 9);
    m.addSequence('a', prompt, { cacheSalt: 'alice', extraKeys: ['lora-1'] });
    m.allocate('a');
    expect(m.findCachedPrefix(prompt, { cacheSalt: 'alice', extraKeys: ['lora-1'] }).numCachedTokens).toBe(8);
    expect(m.findCachedPrefix(prompt, { cacheSalt: 'bob', extraKeys: ['lora-1'] }).numCachedTokens).toBe(0);
    expect(m.findCachedPrefix(prompt, { extraKeys: ['lora-1'] }).numCachedTokens).toBe(0);
    expect(m.findCachedPrefix(prompt, { cacheSalt: 'alice' }).numCachedTokens).toBe(0);
    expect(
      m.findCachedPrefix(prompt, { cacheSalt: 'alice', extraKeys: ['lora-1'], blockExtraKeys: (i) => (i === 1 ? ['img'] : undefined) })
        .numCachedTokens,
    ).toBe(4);
    format.scaleVersion = 1; // new scales: nothing cached is valid any more
    expect(m.findCachedPrefix(prompt, { cacheSalt: 'alice', extraKeys: ['lora-1'] }).numCachedTokens).toBe(0);
    format.scaleVersion = 0;
    format.dtype = 'e5m2';
    expect(m.findCachedPrefix(prompt, { cacheSalt: 'alice', extraKeys: ['lora-1'] }).numCachedTokens).toBe(0);
    format.dtype = 'e4m3fn';
    expect(m.findCachedPrefix(prompt, { cacheSalt: 'alice', extraKeys: ['lora-1'] }).numCachedTokens).toBe(8);
    m.checkInvariants();
  });

  it('recomputes a waiting sequence hashes after a format change', () => {
    const format = { dtype: 'bf16', scaleVersion: 0 };
    const m = mgr({ format });
    m.addSequence('a', range(0, 9));
    m.allocate('a');
    m.addSequence('b', range(0, 9));
    expect(m.canAllocate('b')).toBe(true); // computes b's hashes under version 0
    format.scaleVersion = 2;
    expect(m.allocate('b')!.numCachedTokens).toBe(0);
    m.checkInvariants();
  });

  it('never caches blocks of a sequence whose KV straddles a scale change', () => {
    const format = { dtype: 'e4m3fn', scaleVersion: 0 };
    const m = mgr({ format });
    m.addSequence('a', range(0, 6));
    m.allocate('a'); // positions 0..5 written with version-0 scales; block 1 half full
    format.scaleVersion = 1;
    m.addSequence('b', [...range(0, 4), 9]);
    expect(m.allocate('b')!.numCachedTokens).toBe(0); // recomputes block 0 under version 1
    m.appendTokens('a', [6, 7]);
    m.allocate('a'); // a's block 1 is now full, but holds version-0 KV at positions 4, 5
    m.addSequence('c', range(0, 9));
    expect(m.allocate('c')!.numCachedTokens).toBe(4); // b's block only, never a's block 1
    expect(m.blockTable('c')[0]).toBe(m.blockTable('b')[0]);
    m.checkInvariants();
  });

  it('can be disabled globally or per sequence', () => {
    const off = mgr({ enablePrefixCaching: false });
    off.addSequence('a', range(0, 9));
    off.allocate('a');
    expect(off.metrics().numCachedBlocks).toBe(0);
    expect(off.findCachedPrefix(range(0, 9)).numCachedTokens).toBe(0);
    off.checkInvariants();

    const m = mgr();
    m.addSequence('a', range(0, 9));
    m.allocate('a');
    m.addSequence('b', range(0, 9), { usePrefixCache: false });
    expect(m.allocate('b')!.numCachedTokens).toBe(0);
    expect(m.metrics().prefixCacheQueries).toBe(9); // b's admission was no query
    m.checkInvariants();
  });

  it('caches generated tokens as blocks fill, and emits stored/removed events', () => {
    const m = mgr({ numBlocks: 4, enableEvents: true });
    m.addSequence('a', range(0, 3));
    m.allocate('a');
    expect(m.takeEvents()).toEqual([]);
    m.appendTokens('a', [42]);
    m.allocate('a');
    const [stored] = m.takeEvents();
    expect(stored).toMatchObject({ type: 'stored', blockIds: [1], parentBlockHash: null, tokenIds: [0, 1, 2, 42], blockSize: 4 });
    m.addSequence('b', [0, 1, 2, 42, 7]);
    expect(m.allocate('b')!.numCachedTokens).toBe(4);
    m.free('a');
    m.free('b');
    expect(m.resetPrefixCache()).toBe(true);
    expect(m.takeEvents()).toEqual([{ type: 'cleared' }]);
    expect(m.metrics()).toMatchObject({ numCachedBlocks: 0, recentHitRate: 0 });
    m.checkInvariants();
  });

  it('refuses to reset the prefix cache while blocks are in use', () => {
    const m = mgr();
    m.addSequence('a', range(0, 9));
    m.allocate('a');
    expect(m.resetPrefixCache()).toBe(false);
    expect(m.metrics().numCachedBlocks).toBe(2);
  });

  it('tracks the hit rate over the most recent requests only', () => {
    const m = mgr({ maxRecentRequests: 2, numBlocks: 64 });
    m.addSequence('a', range(0, 9));
    m.allocate('a'); // 0 / 9
    m.addSequence('b', range(0, 9));
    m.allocate('b'); // 8 / 9
    expect(m.metrics().recentHitRate).toBeCloseTo(8 / 18, 12);
    m.addSequence('c', range(0, 9));
    m.allocate('c'); // 8 / 9, the first request leaves the window
    expect(m.metrics().recentHitRate).toBeCloseTo(16 / 18, 12);
    expect(m.metrics().prefixCacheHits).toBe(16);
  });
});

describe('KvCacheManager: copy-on-write forks', () => {
  it('shares blocks and copies the partial block on the first write', () => {
    const m = mgr();
    m.addSequence('p', range(0, 6));
    m.allocate('p'); // blocks 1 (full), 2 (2 tokens)
    m.fork('p', 'c');
    expect(table(m, 'c')).toEqual([1, 2]);
    expect(m.pool.getBlock(2).refCount).toBe(2);
    expect(m.getSequence('c')).toMatchObject({ status: 'running', numTokens: 6, numComputedTokens: 6 });
    m.checkInvariants();

    m.appendTokens('p', [60]);
    const p = m.allocate('p')!;
    expect(p.copies).toEqual([{ src: 2, dst: 3 }]);
    expect(table(m, 'p')).toEqual([1, 3]);
    expect(Array.from(p.slotMapping)).toEqual([14]);
    expect(m.pool.getBlock(2).refCount).toBe(1);

    m.appendTokens('c', [61]);
    const c = m.allocate('c')!;
    expect(c.copies).toEqual([]); // now exclusively owned
    expect(Array.from(c.slotMapping)).toEqual([10]);
    expect(m.tokenIds('c')).toEqual([...range(0, 6), 61]);
    m.checkInvariants();
    m.free('p');
    m.free('c');
    expect(m.metrics().numFreeBlocks).toBe(15);
    m.checkInvariants();
  });

  it('needs no copy when the last shared block is full', () => {
    const m = mgr();
    m.addSequence('p', range(0, 8));
    m.allocate('p');
    m.fork('p', 'c1');
    m.fork('p', 'c2');
    expect(m.pool.getBlock(2).refCount).toBe(3);
    for (const id of ['p', 'c1', 'c2']) {
      m.appendTokens(id, [1]);
      const a = m.allocate(id)!;
      expect(a.copies).toEqual([]);
      expect(a.newBlockIds).toHaveLength(1);
    }
    m.checkInvariants();
  });

  it('does not share lookahead capacity and replaces shared blocks in the lookahead range', () => {
    const m = mgr();
    m.addSequence('p', range(0, 5));
    m.allocate('p', { numLookaheadTokens: 8 }); // blocks 1,2,3,4 (13 slots)
    m.fork('p', 'c');
    expect(table(m, 'c')).toEqual([1, 2]);
    m.appendTokens('c', [9]);
    const c = m.allocate('c', { numLookaheadTokens: 4 })!; // write range 5..10 touches blocks 1 (shared) and 2 (shared)
    expect(c.copies).toEqual([{ src: 2, dst: 5 }]);
    expect(c.newBlockIds).toEqual([6]);
    expect(table(m, 'c')).toEqual([1, 5, 6]);
    m.checkInvariants();
  });

  it('accounts copy-on-write blocks in capacity checks', () => {
    const m = mgr({ numBlocks: 3 }); // 2 usable
    m.addSequence('p', range(0, 6));
    m.allocate('p');
    m.fork('p', 'c');
    m.appendTokens('p', [1]);
    expect(m.canAllocate('p')).toBe(false); // needs a private copy of block 2, none free
    expect(m.allocate('p')).toBeNull();
    m.free('c');
    expect(m.allocate('p')!.copies).toEqual([]);
    m.checkInvariants();
  });

  it('supports beam-search style replace (fork the best, drop the rest)', () => {
    const m = mgr();
    m.addSequence('b0', range(0, 5));
    m.allocate('b0');
    m.fork('b0', 'b1');
    m.appendTokens('b0', [10]);
    m.allocate('b0');
    m.appendTokens('b1', [11]);
    m.allocate('b1');
    // both new beams continue from b1
    m.fork('b1', 'b2');
    m.free('b0');
    m.checkInvariants();
    expect(m.tokenIds('b2')).toEqual([...range(0, 5), 11]);
    expect(table(m, 'b2')).toEqual(table(m, 'b1'));
  });
});

describe('KvCacheManager: preemption (mechanism; the policy is the engine scheduler\'s)', () => {
  function full(): KvCacheManager {
    const m = mgr({ numBlocks: 5 }); // 4 usable
    for (const [id, from] of [['a', 0], ['b', 10], ['c', 20], ['d', 30]] as const) m.addSequence(id, range(from, 4));
    for (const id of ['a', 'b', 'c', 'd']) m.allocate(id);
    return m;
  }

  it('reports failure without changing anything; preempting the sequence it is told to frees room', () => {
    const m = full();
    m.appendTokens('a', [1]);
    const before = m.getSequence('a');
    expect(m.canAllocate('a')).toBe(false);
    expect(m.allocate('a')).toBeNull();
    expect(m.getSequence('a')).toEqual(before);
    expect(m.metrics().numFreeBlocks).toBe(0);
    m.preempt('d');
    expect(m.getSequence('d')).toMatchObject({ status: 'preempted', numBlocks: 0, numComputedTokens: 0, numPreemptions: 1 });
    expect(m.metrics().numPreemptions).toBe(1);
    expect(m.canAllocate('a')).toBe(true);
    expect(m.allocate('a')!.newBlockIds).toEqual([4]); // d's block
    m.checkInvariants();
  });

  it('a sequence preempted for itself keeps its tokens and waits for re-admission', () => {
    const m = full();
    m.appendTokens('d', [1]);
    expect(m.allocate('d')).toBeNull();
    m.preempt('d');
    expect(m.getSequence('d')).toMatchObject({ status: 'preempted', numTokens: 5, numComputedTokens: 0 });
    expect(m.metrics().numRunning).toBe(3);
    m.checkInvariants();
  });

  it('re-admits a preempted sequence by recompute, with prefix hits on what is still cached', () => {
    const m = mgr({ numBlocks: 8 });
    m.addSequence('a', range(0, 9));
    m.allocate('a');
    m.appendTokens('a', [5, 6, 7]);
    m.allocate('a');
    m.preempt('a');
    expect(m.getSequence('a')).toMatchObject({ status: 'preempted', numTokens: 12, numComputedTokens: 0 });
    const again = m.allocate('a')!;
    expect(again.numCachedTokens).toBe(8); // 3 full blocks cached, last token recomputed → 2 blocks
    expect(again.firstPosition).toBe(8);
    expect(again.numNewTokens).toBe(4);
    expect(m.getSequence('a').status).toBe('running');
    m.checkInvariants();
  });
});

describe('KvCacheManager: bad input', () => {
  it('rejects bad configuration', () => {
    expect(errorCode(() => new KvCacheManager({ numBlocks: 10, blockSize: 12 }))).toBe('NOT_POWER_OF_TWO');
    expect(errorCode(() => new KvCacheManager({ numBlocks: 10, blockSize: 0 }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => new KvCacheManager({ numBlocks: -1 }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => new KvCacheManager({ numBlocks: 2 ** 28, blockSize: 16 }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => new KvCacheManager({ numBlocks: 4, maxRecentRequests: 0 }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => new KvCacheManager({ numBlocks: 4, format: {} as never }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => new KvCacheManager(undefined as never))).toBe('INVALID_ARGUMENT');
    expect(() => new KvCacheManager({ numBlocks: 10, blockSize: 12 })).toThrow(/blockSize must be a power of two, got 12/);
  });

  it('rejects unknown, duplicate and double-freed sequences', () => {
    const m = mgr();
    expect(errorCode(() => m.allocate('nope'))).toBe('UNKNOWN_SEQUENCE');
    expect(errorCode(() => m.free('nope'))).toBe('UNKNOWN_SEQUENCE');
    expect(() => m.free('nope')).toThrow(/unknown sequence "nope"/);
    m.addSequence('a', [1, 2]);
    expect(errorCode(() => m.addSequence('a', [1]))).toBe('DUPLICATE_SEQUENCE');
    m.allocate('a');
    expect(errorCode(() => m.fork('a', 'a'))).toBe('DUPLICATE_SEQUENCE');
    m.free('a');
    expect(errorCode(() => m.free('a'))).toBe('DOUBLE_FREE');
    expect(errorCode(() => m.abort('a'))).toBe('DOUBLE_FREE');
    expect(errorCode(() => m.allocate('a'))).toBe('DOUBLE_FREE');
    m.addSequence('a', [3]); // an id can be reused after it ended
    m.free('a');
    m.checkInvariants();
  });

  it('rejects bad token ids, prompts and options', () => {
    const m = mgr();
    expect(errorCode(() => m.addSequence('a', []))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => m.addSequence('a', [1, -2]))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => m.addSequence('a', [1.5]))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => m.addSequence('a', [2 ** 32]))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => m.addSequence('a', 'abc' as never))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => m.addSequence(Number.NaN, [1]))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => m.addSequence('a', [1], { extraKeys: [Number.NaN] }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => m.addSequence('a', [1], { cacheSalt: 5 as never }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => m.addSequence('a', [1], { blockExtraKeys: 3 as never }))).toBe('INVALID_ARGUMENT');
    expect(m.hasSequence('a')).toBe(false);
    m.addSequence('a', range(0, 5));
    expect(errorCode(() => m.appendTokens('a', [Number.NaN]))).toBe('INVALID_ARGUMENT');
    expect(m.getSequence('a').numTokens).toBe(5); // nothing appended
    expect(errorCode(() => m.allocate('a', { numNewTokens: 6 }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => m.allocate('a', { numNewTokens: -1 }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => m.allocate('a', null as never))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => m.findCachedPrefix([-1]))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => m.slotMapping('a', -1, 1))).toBe('INVALID_ARGUMENT');
    const bad = mgr();
    bad.addSequence('x', range(0, 9), { blockExtraKeys: () => 'nope' as never });
    expect(errorCode(() => bad.allocate('x'))).toBe('INVALID_ARGUMENT');
  });

  it('rejects operations in the wrong state', () => {
    const m = mgr();
    m.addSequence('a', [1, 2, 3]);
    expect(errorCode(() => m.preempt('a'))).toBe('INVALID_STATE');
    expect(errorCode(() => m.fork('a', 'b'))).toBe('INVALID_STATE');
    m.allocate('a');
    m.preempt('a');
    expect(errorCode(() => m.preempt('a'))).toBe('INVALID_STATE');
  });

  it('lists and describes sequences', () => {
    const m = mgr();
    m.addSequence(1, [1, 2]);
    m.addSequence('x', [1]);
    expect(m.sequenceIds()).toEqual([1, 'x']);
    expect(m.getSequence(1)).toEqual({
      id: 1,
      status: 'waiting',
      numTokens: 2,
      numComputedTokens: 0,
      numBlocks: 0,
      numCachedTokens: 0,
      numPreemptions: 0,
    });
  });
});
