import { CacheError } from './errors.js';
import type { BlockHash } from './hash.js';

/**
 * One KV-cache block's bookkeeping (vLLM `KVCacheBlock`).
 *
 * NOTE: fields are owned by {@link BlockPool}; read them, never write them from outside the pool.
 */
export class KvCacheBlock {
  /** Index of the block in every layer's K/V pool. */
  readonly blockId: number;
  /** True only for the pool's reserved null block (id 0), which is never handed out. */
  readonly isNull: boolean;
  /** Number of block tables referencing this block. 0 ⇔ the block is in the free queue (except the null block). */
  refCount = 0;
  /** Hash of the block's tokens once it is full and cached; kept while free so it can still be hit. */
  blockHash: BlockHash | undefined = undefined;
  /** @internal free-queue links */
  prevFree: KvCacheBlock | null = null;
  /** @internal free-queue links */
  nextFree: KvCacheBlock | null = null;

  constructor(blockId: number, isNull = false) {
    this.blockId = blockId;
    this.isNull = isNull;
  }
}

/**
 * Intrusive doubly linked list of free blocks (vLLM `FreeKVCacheBlockQueue`): O(1) `popLeft`, `append`
 * and removal from the middle (a prefix-cache hit on a free block). The front is the least recently freed
 * block, the next eviction candidate.
 */
export class FreeBlockQueue {
  private readonly head = new KvCacheBlock(-1);
  private readonly tail = new KvCacheBlock(-2);
  private count = 0;

  /** Build the queue from `blocks` in the given order (front = first). */
  constructor(blocks: readonly KvCacheBlock[] = []) {
    this.head.nextFree = this.tail;
    this.tail.prevFree = this.head;
    for (const b of blocks) this.append(b);
  }

  /** Number of blocks in the queue. */
  get size(): number {
    return this.count;
  }

  /** Remove and return the front (least recently freed) block. @throws CacheError `OUT_OF_BLOCKS` when empty. */
  popLeft(): KvCacheBlock {
    const b = this.head.nextFree!;
    if (b === this.tail) throw new CacheError('OUT_OF_BLOCKS', 'no free blocks left in the queue');
    this.unlink(b);
    return b;
  }

  /** Remove and return the `n` front blocks, front first. @throws CacheError `OUT_OF_BLOCKS` when fewer are free. */
  popLeftN(n: number): KvCacheBlock[] {
    if (n > this.count) {
      throw new CacheError('OUT_OF_BLOCKS', `cannot pop ${n} blocks: only ${this.count} are free`);
    }
    const out: KvCacheBlock[] = new Array<KvCacheBlock>(n);
    for (let i = 0; i < n; i++) out[i] = this.popLeft();
    return out;
  }

  /** Remove `block` from anywhere in the queue. @throws CacheError `INVALID_STATE` when it is not queued. */
  remove(block: KvCacheBlock): void {
    if (block.prevFree === null || block.nextFree === null) {
      throw new CacheError('INVALID_STATE', `block ${block.blockId} is not in the free queue`);
    }
    this.unlink(block);
  }

  /** Append `block` at the back (most recently freed). @throws CacheError `INVALID_STATE` when already queued. */
  append(block: KvCacheBlock): void {
    if (block.prevFree !== null || block.nextFree !== null) {
      throw new CacheError('INVALID_STATE', `block ${block.blockId} is already in the free queue`);
    }
    const last = this.tail.prevFree!;
    last.nextFree = block;
    block.prevFree = last;
    block.nextFree = this.tail;
    this.tail.prevFree = block;
    this.count++;
  }

  /** True when `block` is currently queued. */
  has(block: KvCacheBlock): boolean {
    return block.prevFree !== null && block.nextFree !== null;
  }

  /** The queued blocks, front (next to evict) first. O(n). */
  toArray(): KvCacheBlock[] {
    const out: KvCacheBlock[] = [];
    for (let b = this.head.nextFree!; b !== this.tail; b = b.nextFree!) out.push(b);
    return out;
  }

  private unlink(b: KvCacheBlock): void {
    b.prevFree!.nextFree = b.nextFree;
    b.nextFree!.prevFree = b.prevFree;
    b.prevFree = null;
    b.nextFree = null;
    this.count--;
  }
}
