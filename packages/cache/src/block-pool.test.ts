import { describe, expect, it } from 'vitest';
import { FreeBlockQueue, KvCacheBlock } from './block.js';
import { BlockPool, type KvCacheEvent } from './block-pool.js';
import { errorCode } from './test-helpers.js';

const ids = (bs: readonly KvCacheBlock[]) => bs.map((b) => b.blockId);

describe('FreeBlockQueue', () => {
  it('pops from the front, appends at the back, removes from the middle in O(1)', () => {
    const blocks = Array.from({ length: 6 }, (_, i) => new KvCacheBlock(i));
    const q = new FreeBlockQueue(blocks);
    expect(q.size).toBe(6);
    q.remove(blocks[3]!);
    expect(ids(q.toArray())).toEqual([0, 1, 2, 4, 5]);
    expect(q.has(blocks[3]!)).toBe(false);
    expect(q.popLeft().blockId).toBe(0);
    q.append(blocks[3]!);
    q.append(blocks[0]!);
    expect(ids(q.toArray())).toEqual([1, 2, 4, 5, 3, 0]);
    expect(ids(q.popLeftN(3))).toEqual([1, 2, 4]);
    q.remove(blocks[0]!);
    q.remove(blocks[5]!);
    expect(ids(q.toArray())).toEqual([3]);
    expect(q.size).toBe(1);
  });

  it('rejects misuse', () => {
    const b = new KvCacheBlock(1);
    const q = new FreeBlockQueue([b]);
    expect(errorCode(() => q.append(b))).toBe('INVALID_STATE');
    q.popLeft();
    expect(errorCode(() => q.remove(b))).toBe('INVALID_STATE');
    expect(errorCode(() => q.popLeft())).toBe('OUT_OF_BLOCKS');
    expect(errorCode(() => q.popLeftN(1))).toBe('OUT_OF_BLOCKS');
  });
});

describe('BlockPool', () => {
  it('reserves block 0 as the null block and never hands it out', () => {
    const pool = new BlockPool({ numBlocks: 5 });
    expect(pool.nullBlock.blockId).toBe(0);
    expect(pool.nullBlock.isNull).toBe(true);
    expect(pool.numFreeBlocks).toBe(4);
    expect(ids(pool.getNewBlocks(4))).toEqual([1, 2, 3, 4]);
    expect(pool.numFreeBlocks).toBe(0);
    expect(pool.usage()).toBe(1);
    expect(errorCode(() => pool.getNewBlocks(1))).toBe('OUT_OF_BLOCKS');
    expect(errorCode(() => pool.touch([pool.nullBlock]))).toBe('INVALID_STATE');
    pool.freeBlocks([pool.nullBlock]); // skipped, as vLLM
    expect(pool.nullBlock.refCount).toBe(0);
    pool.checkInvariants();
  });

  it('validates its size', () => {
    expect(errorCode(() => new BlockPool({ numBlocks: 1 }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => new BlockPool({ numBlocks: -3 }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => new BlockPool({ numBlocks: 2.5 }))).toBe('INVALID_ARGUMENT');
    expect(errorCode(() => new BlockPool(null as never))).toBe('INVALID_ARGUMENT');
    const pool = new BlockPool({ numBlocks: 3 });
    expect(errorCode(() => pool.getBlock(3))).toBe('SLOT_OUT_OF_RANGE');
    expect(errorCode(() => pool.getNewBlocks(-1))).toBe('INVALID_ARGUMENT');
  });

  it('frees in the given order (reverse table order puts chain tails first in line for eviction)', () => {
    const pool = new BlockPool({ numBlocks: 8 });
    const a = pool.getNewBlocks(3); // 1 2 3
    const b = pool.getNewBlocks(2); // 4 5
    pool.freeBlocks(a.slice().reverse());
    pool.freeBlocks(b.slice().reverse());
    expect(pool.freeBlockIds()).toEqual([6, 7, 3, 2, 1, 5, 4]);
    expect(pool.usage()).toBe(0);
    pool.checkInvariants();
  });

  it('detects double frees without releasing anything', () => {
    const pool = new BlockPool({ numBlocks: 4 });
    const [x, y] = pool.getNewBlocks(2) as [KvCacheBlock, KvCacheBlock];
    pool.freeBlocks([x]);
    expect(errorCode(() => pool.freeBlocks([y, x]))).toBe('DOUBLE_FREE');
    expect(y.refCount).toBe(1);
    expect(errorCode(() => pool.freeBlocks([y, y]))).toBe('DOUBLE_FREE');
    expect(y.refCount).toBe(1);
    pool.checkInvariants();
  });

  it('caches full blocks, hits them while free, and evicts lazily on reallocation', () => {
    const events: KvCacheEvent[] = [];
    const pool = new BlockPool({ numBlocks: 4, enableEvents: true, onEvent: (e) => events.push(e) });
    const [a, b] = pool.getNewBlocks(2) as [KvCacheBlock, KvCacheBlock];
    pool.cacheFullBlocks([a, b], ['h1', 'h2'], { parentBlockHash: null, tokenIds: [1, 2, 3, 4], blockSize: 2 });
    expect(pool.numCachedBlocks).toBe(2);
    expect(pool.getCachedBlock('h1')).toBe(a);
    pool.freeBlocks([b, a]);
    expect(pool.getCachedBlock('h2')).toBe(b); // still hittable while free
    pool.touch([a]);
    expect(a.refCount).toBe(1);
    expect(pool.freeBlockIds()).toEqual([3, 2]);
    // reallocating block 3 (no hash) then 2 (hash h2): h2 is evicted now
    pool.getNewBlocks(1);
    expect(pool.numEvictions).toBe(0);
    const [c] = pool.getNewBlocks(1) as [KvCacheBlock];
    expect(c).toBe(b);
    expect(c.blockHash).toBeUndefined();
    expect(pool.getCachedBlock('h2')).toBeUndefined();
    expect(pool.numEvictions).toBe(1);
    pool.checkInvariants();
    expect(pool.takeEvents()).toEqual([
      { type: 'stored', blockHashes: ['h1', 'h2'], blockIds: [1, 2], parentBlockHash: null, tokenIds: [1, 2, 3, 4], blockSize: 2 },
      { type: 'removed', blockHashes: ['h2'], blockIds: [2], reason: 'reallocated' },
    ]);
    expect(events).toHaveLength(2);
    expect(pool.takeEvents()).toEqual([]);
  });

  it('keeps duplicates of one hash (no de-duplication) and skips already-cached blocks', () => {
    const pool = new BlockPool({ numBlocks: 4 });
    const [a, b] = pool.getNewBlocks(2) as [KvCacheBlock, KvCacheBlock];
    const meta = { parentBlockHash: null, tokenIds: [], blockSize: 1 };
    pool.cacheFullBlocks([a], ['h'], meta);
    pool.cacheFullBlocks([b], ['h'], meta);
    pool.cacheFullBlocks([a], ['other'], meta); // a already holds 'h'
    expect(a.blockHash).toBe('h');
    expect(pool.cachedEntries()).toEqual([['h', [1, 2]]]);
    pool.evictBlocks([1]);
    expect(pool.getCachedBlock('h')).toBe(b);
    pool.checkInvariants();
    expect(errorCode(() => pool.cacheFullBlocks([pool.nullBlock], ['n'], meta))).toBe('INVALID_STATE');
    expect(errorCode(() => pool.cacheFullBlocks([a], [], meta))).toBe('SHAPE_MISMATCH');
  });

  it('does not cache when caching is disabled', () => {
    const pool = new BlockPool({ numBlocks: 3, enableCaching: false });
    const [a] = pool.getNewBlocks(1) as [KvCacheBlock];
    pool.cacheFullBlocks([a], ['h'], { parentBlockHash: null, tokenIds: [], blockSize: 1 });
    expect(pool.getCachedBlock('h')).toBeUndefined();
    pool.checkInvariants();
  });

  it('evictBlocks drops hashes and emits removed events; resetPrefixCache only when idle', () => {
    const pool = new BlockPool({ numBlocks: 4, enableEvents: true });
    const [a, b] = pool.getNewBlocks(2) as [KvCacheBlock, KvCacheBlock];
    pool.cacheFullBlocks([a, b], ['x', 'y'], { parentBlockHash: 'p', tokenIds: [], blockSize: 1 });
    pool.takeEvents();
    expect(pool.evictBlocks([1, 3])).toBe(1);
    expect(pool.takeEvents()).toEqual([{ type: 'removed', blockHashes: ['x'], blockIds: [1], reason: 'evicted' }]);
    expect(pool.resetPrefixCache()).toBe(false);
    expect(pool.getCachedBlock('y')).toBe(b);
    pool.freeBlocks([a, b]);
    expect(pool.resetPrefixCache()).toBe(true);
    expect(pool.getCachedBlock('y')).toBeUndefined();
    expect(pool.numCachedBlocks).toBe(0);
    expect(pool.takeEvents()).toEqual([{ type: 'cleared' }]);
    expect(errorCode(() => pool.evictBlocks([9]))).toBe('SLOT_OUT_OF_RANGE');
    pool.checkInvariants();
  });

  it('share() needs blocks in use', () => {
    const pool = new BlockPool({ numBlocks: 3 });
    const [a] = pool.getNewBlocks(1) as [KvCacheBlock];
    pool.share([a]);
    expect(a.refCount).toBe(2);
    expect(errorCode(() => pool.share([pool.getBlock(2)]))).toBe('INVALID_STATE');
    expect(errorCode(() => pool.share([pool.nullBlock]))).toBe('INVALID_STATE');
  });

  it('checkInvariants catches corruption', () => {
    const pool = new BlockPool({ numBlocks: 3 });
    const [a] = pool.getNewBlocks(1) as [KvCacheBlock];
    a.refCount = 0; // leaked: not in the queue
    expect(errorCode(() => pool.checkInvariants())).toBe('INVARIANT_VIOLATION');
  });
});
