import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CacheError } from './errors.js';
import { KvCacheManager, type KvAllocation, type SequenceId } from './manager.js';

/**
 * Random interleavings of every manager operation, with the invariants checked independently after every
 * step, plus a shadow of the KV data: every slot records which token prefix was "computed" into it, so a
 * wrong prefix hit or a missing copy-on-write shows up as a sequence reading someone else's KV.
 */

type Op =
  | { kind: 'add'; template: number; suffix: number[]; salt: boolean }
  | { kind: 'allocate'; pick: number; chunk: number; lookahead: number }
  | { kind: 'append'; pick: number; tokens: number[] }
  | { kind: 'fork'; pick: number }
  | { kind: 'free'; pick: number }
  | { kind: 'abort'; pick: number }
  | { kind: 'preempt'; pick: number }
  | { kind: 'bumpScales' }
  | { kind: 'evict'; blockId: number }
  | { kind: 'reset' };

const token = fc.integer({ min: 0, max: 3 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('add' as const), template: fc.nat(3), suffix: fc.array(token, { maxLength: 12 }), salt: fc.boolean() }) },
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('allocate' as const), pick: fc.nat(), chunk: fc.nat(12), lookahead: fc.nat(5) }) },
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('append' as const), pick: fc.nat(), tokens: fc.array(token, { minLength: 1, maxLength: 3 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('fork' as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('free' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('abort' as const), pick: fc.nat() }) },
  // weight 3: preempting is how a scheduler makes room (the victim policy lives in @kvq/engine's scheduler)
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('preempt' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('bumpScales' as const) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('evict' as const), blockId: fc.nat(63) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('reset' as const) }) },
);

const TEMPLATES = [[], [1, 2, 3, 0, 1, 2, 3, 0], [1, 2, 3, 0, 2, 2, 2, 2, 1, 1], [3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3]];

/** Interns token prefixes: equal ids ⇔ equal token sequences (exact, O(1) per extension). */
class PrefixTrie {
  private readonly ids = new Map<string, number>();

  /** Id of `parent` (an id, or -1 for the empty prefix) extended by `token`. */
  extend(parent: number, token: number): number {
    const key = `${parent}:${token}`;
    let id = this.ids.get(key);
    if (id === undefined) {
      id = this.ids.size;
      this.ids.set(key, id);
    }
    return id;
  }
}

const MAX_LIVE = 16;
const MAX_TOKENS = 64;

interface SlotContent {
  /** Id of the token prefix (positions 0..p) whose KV this slot holds. */
  readonly prefix: number;
  /** Scale version when it was written. */
  readonly version: number;
}

class Harness {
  readonly m: KvCacheManager;
  readonly format = { dtype: 'e4m3fn', scaleVersion: 0 };
  /** Shadow KV storage: slot → content. */
  readonly slots = new Map<number, SlotContent>();
  readonly live: SequenceId[] = [];
  private readonly trie = new PrefixTrie();
  private nextId = 0;

  constructor(
    readonly numBlocks: number,
    readonly blockSize: number,
  ) {
    this.m = new KvCacheManager({ numBlocks, blockSize, hashSeed: 'prop', format: this.format, maxRecentRequests: 7 });
  }

  private pick(n: number): SequenceId | undefined {
    return this.live.length === 0 ? undefined : this.live[n % this.live.length];
  }

  /** Prefix ids of positions 0..n-1. */
  private prefixIds(tokens: readonly number[], n: number): number[] {
    const out: number[] = [];
    let id = -1;
    for (let p = 0; p < n; p++) out.push((id = this.trie.extend(id, tokens[p]!)));
    return out;
  }

  /** Apply what the engine would do with an allocation: CoW copies, then KV writes. */
  private applyAllocation(id: SequenceId, a: KvAllocation): void {
    const bs = this.blockSize;
    for (const { src, dst } of a.copies) {
      for (let o = 0; o < bs; o++) {
        const c = this.slots.get(src * bs + o);
        if (c === undefined) this.slots.delete(dst * bs + o);
        else this.slots.set(dst * bs + o, c);
      }
    }
    const tokens = this.m.tokenIds(id);
    // A prefix hit must only reuse KV written under the current scales.
    const table = this.m.blockTable(id);
    for (let p = 0; p < a.numCachedTokens; p++) {
      const c = this.slots.get(table[Math.floor(p / bs)]! * bs + (p % bs));
      if (c?.version !== this.format.scaleVersion) {
        throw new Error(`hit at position ${p} of ${String(id)} reuses KV of scale version ${c?.version}, now ${this.format.scaleVersion}`);
      }
    }
    const ids = this.prefixIds(tokens, a.firstPosition + a.numNewTokens);
    a.slotMapping.forEach((slot, k) => {
      this.slots.set(slot, { prefix: ids[a.firstPosition + k]!, version: this.format.scaleVersion });
    });
  }

  step(op: Op): void {
    const m = this.m;
    // Keep the population and lengths bounded so thousands of steps stay cheap: past the caps, growth
    // operations end a sequence instead.
    if ((op.kind === 'add' || op.kind === 'fork') && this.live.length >= MAX_LIVE) {
      op = { kind: 'free', pick: op.kind === 'fork' ? op.pick : op.template };
    } else if (op.kind === 'append') {
      const id = this.pick(op.pick);
      if (id !== undefined && m.getSequence(id).numTokens >= MAX_TOKENS) op = { kind: 'free', pick: op.pick };
    }
    switch (op.kind) {
      case 'add': {
        const id = `s${this.nextId++}`;
        const tokens = [...TEMPLATES[op.template]!, ...op.suffix];
        if (tokens.length === 0) tokens.push(0);
        m.addSequence(id, tokens, op.salt ? { cacheSalt: 'x' } : {});
        this.live.push(id);
        break;
      }
      case 'allocate': {
        const id = this.pick(op.pick);
        if (id === undefined) return;
        const info = m.getSequence(id);
        const before = m.metrics().numFreeBlocks;
        const canAlloc = m.canAllocate(id, { numLookaheadTokens: op.lookahead });
        const remaining = info.numTokens - info.numComputedTokens;
        const opts = { numLookaheadTokens: op.lookahead, ...(op.chunk > 0 && info.status === 'running' ? { numNewTokens: Math.min(op.chunk, remaining) } : {}) };
        const a = m.allocate(id, opts);
        if (a === null) {
          expect(m.metrics().numFreeBlocks).toBe(before); // a failed allocation changes nothing
          expect(m.getSequence(id)).toEqual(info);
        } else {
          if (!('numNewTokens' in opts)) expect(canAlloc).toBe(true);
          this.applyAllocation(id, a);
        }
        break;
      }
      case 'append': {
        const id = this.pick(op.pick);
        if (id === undefined) return;
        m.appendTokens(id, op.tokens);
        break;
      }
      case 'fork': {
        const id = this.pick(op.pick);
        if (id === undefined || m.getSequence(id).status !== 'running') return;
        const child = `s${this.nextId++}`;
        m.fork(id, child);
        this.live.push(child);
        break;
      }
      case 'free':
      case 'abort': {
        const id = this.pick(op.pick);
        if (id === undefined) return;
        if (op.kind === 'free') m.free(id);
        else m.abort(id);
        this.live.splice(this.live.indexOf(id), 1);
        // a second free is a typed error, not corruption
        expect(() => m.free(id)).toThrow(CacheError);
        break;
      }
      case 'preempt': {
        const id = this.pick(op.pick);
        if (id === undefined || m.getSequence(id).status !== 'running') return;
        m.preempt(id);
        break;
      }
      case 'bumpScales':
        this.format.scaleVersion++;
        break;
      case 'evict':
        if (op.blockId < this.numBlocks) m.pool.evictBlocks([op.blockId]);
        break;
      case 'reset':
        m.resetPrefixCache();
        break;
    }
  }

  /** Invariants, computed from public state independently of `checkInvariants`. */
  check(): void {
    const m = this.m;
    const bs = this.blockSize;
    const refs = new Map<number, number>();
    for (const id of this.live) {
      const info = m.getSequence(id);
      const table = m.blockTable(id);
      expect(table.includes(0), 'null block handed out').toBe(false);
      expect(new Set(table).size).toBe(table.length);
      for (const b of table) refs.set(b, (refs.get(b) ?? 0) + 1);
      expect(table.length * bs).toBeGreaterThanOrEqual(info.numComputedTokens);
      if (info.status !== 'running') expect(table.length).toBe(0);
      // KV correctness: every computed position holds this sequence's own prefix
      const tokens = m.tokenIds(id);
      const ids = this.prefixIds(tokens, info.numComputedTokens);
      for (let p = 0; p < info.numComputedTokens; p++) {
        const c = this.slots.get(table[Math.floor(p / bs)]! * bs + (p % bs));
        if (c?.prefix !== ids[p]) {
          throw new Error(`sequence ${String(id)} position ${p} reads KV of another token prefix`);
        }
      }
    }
    const free = m.pool.freeBlockIds();
    const freeSet = new Set(free);
    expect(freeSet.size).toBe(free.length);
    expect(freeSet.has(0)).toBe(false);
    for (let b = 1; b < this.numBlocks; b++) {
      const r = refs.get(b) ?? 0;
      const rc = m.pool.getBlock(b).refCount;
      if (rc !== r) throw new Error(`block ${b} has ref count ${rc} but ${r} table references`);
      if (freeSet.has(b) !== (r === 0)) throw new Error(`block ${b}: free=${freeSet.has(b)} but ${r} references`);
    }
    expect(m.pool.getBlock(0).refCount).toBe(0);
    // hash map ⇔ block hashes
    let mapped = 0;
    for (const [h, ids] of m.pool.cachedEntries()) {
      if (m.pool.getCachedBlock(h) === undefined) throw new Error(`hash ${h} listed but not found`);
      for (const b of ids) {
        mapped++;
        if (m.pool.getBlock(b).blockHash !== h) throw new Error(`map lists block ${b} under a hash it does not hold`);
      }
    }
    let hashed = 0;
    for (let b = 0; b < this.numBlocks; b++) if (m.pool.getBlock(b).blockHash !== undefined) hashed++;
    expect(mapped).toBe(hashed);
    const met = m.metrics();
    expect(met.numFreeBlocks).toBe(free.length);
    expect(met.usage).toBeCloseTo(1 - free.length / (this.numBlocks - 1), 12);
    expect(met.prefixCacheHits).toBeLessThanOrEqual(met.prefixCacheQueries);
    m.checkInvariants();
  }

  finish(): void {
    for (const id of this.live.splice(0)) this.m.free(id);
    this.check();
    expect(this.m.pool.numFreeBlocks).toBe(this.numBlocks - 1);
    expect(this.m.metrics()).toMatchObject({ usage: 0, numSequences: 0, numRunning: 0 });
  }
}

describe('KvCacheManager: property-based interleavings', () => {
  it('keeps every invariant after every step, and leaks nothing when all sequences end', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 3, max: 40 }),
        fc.constantFrom(1, 2, 4, 8),
        fc.array(opArb, { minLength: 50, maxLength: 300 }),
        (numBlocks, blockSize, ops) => {
          const h = new Harness(numBlocks, blockSize);
          for (const op of ops) {
            h.step(op);
            h.check();
          }
          h.finish();
        },
      ),
      { numRuns: 150, seed: 20260501 },
    );
  });

  it('survives a long run (5000 steps) with prefix hits, forks and preemptions all happening', () => {
    const ops = fc.sample(opArb, { numRuns: 5000, seed: 7 });
    const h = new Harness(24, 4);
    for (const op of ops) {
      h.step(op);
      h.check();
    }
    const met = h.m.metrics();
    // the run exercised what it claims to
    expect(met.prefixCacheHits).toBeGreaterThan(0);
    expect(met.numPreemptions).toBeGreaterThan(0);
    expect(met.numEvictions).toBeGreaterThan(0);
    h.finish();
  });
});
