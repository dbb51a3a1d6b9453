import { KvCacheManager } from '@kvq/cache';
import { describe, expect, it } from 'vitest';
import { EngineError } from '../errors.js';
import { Scheduler, type SchedulerConfig, type SchedulerOutput, type SchedulerSequence } from './scheduler.js';

// The scheduler over a real cache manager, no model: sequences are plain records, and "running the model" is
// appending one token to every sequence whose scheduled tokens reach its end (what the engine does after sampling).

const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);

function setup(numBlocks: number, config: Partial<SchedulerConfig> = {}, enablePrefixCaching = true) {
  const manager = new KvCacheManager({ numBlocks, blockSize: 4, hashSeed: 'scheduler-test', enablePrefixCaching });
  const scheduler = new Scheduler<SchedulerSequence>(manager, { maxModelLen: 1000, maxNumBatchedTokens: 512, maxNumSeqs: 64, ...config });
  let arrival = 0;
  const add = (id: string, tokens: number[], priority = 0, cacheSalt?: string): SchedulerSequence => {
    const seq = { id, requestId: `req-${id}`, priority, arrivalTime: arrival++, cacheSalt };
    manager.addSequence(id, tokens, cacheSalt === undefined ? {} : { cacheSalt });
    scheduler.add(seq);
    return seq;
  };
  /** Append a token to every scheduled sequence whose computed tokens reached its known tokens. */
  const decodeAll = (out: SchedulerOutput<SchedulerSequence>) => {
    for (const { seq, allocation } of out.scheduled) {
      if (allocation.firstPosition + allocation.numNewTokens === manager.getSequence(seq.id).numTokens) manager.appendTokens(seq.id, [7]);
    }
  };
  const ids = (list: readonly SchedulerSequence[]) => list.map((s) => s.id);
  const work = (out: SchedulerOutput<SchedulerSequence>) => out.scheduled.map((s) => [s.seq.id, s.allocation.firstPosition, s.allocation.numNewTokens]);
  return { manager, scheduler, add, decodeAll, ids, work };
}

describe('Scheduler: token budget and admission', () => {
  it('chunks prefills to the token budget, running sequences first, then FCFS admission', () => {
    const { scheduler, add, decodeAll, ids, work } = setup(64, { maxNumBatchedTokens: 16 });
    add('a', range(0, 10));
    add('b', range(20, 10));
    add('c', range(40, 10));
    let out = scheduler.schedule();
    expect(work(out)).toEqual([['a', 0, 10], ['b', 0, 6]]); // b's prefill is chunked at the budget
    expect(out.numScheduledTokens).toBe(16);
    expect(ids(out.admitted)).toEqual(['a', 'b']);
    expect(ids(scheduler.waiting)).toEqual(['c']);
    decodeAll(out); // a finished its prefill: one sampled token
    out = scheduler.schedule();
    expect(work(out)).toEqual([['a', 10, 1], ['b', 6, 4], ['c', 0, 10]]); // decode, rest of the chunk, then c (11 <= 16)
    expect(out.numScheduledTokens).toBe(15);
    expect(ids(out.admitted)).toEqual(['c']);
    expect(ids(scheduler.running)).toEqual(['a', 'b', 'c']);
  });

  it('admits no more than maxNumSeqs running sequences', () => {
    const { scheduler, add, ids } = setup(64, { maxNumSeqs: 2 });
    for (const id of ['a', 'b', 'c']) add(id, range(0, 3));
    const out = scheduler.schedule();
    expect(ids(out.admitted)).toEqual(['a', 'b']);
    expect(ids(scheduler.waiting)).toEqual(['c']);
  });

  it('does not charge prefix-cache hits to the budget', () => {
    const { manager, scheduler, add, decodeAll, work } = setup(64, { maxNumBatchedTokens: 3 });
    const x = add('x', range(0, 9));
    for (let i = 0; i < 3; i++) decodeAll(scheduler.schedule()); // 9 prompt tokens through a budget of 3
    scheduler.finish(x, 'free');
    add('y', range(0, 9));
    const out = scheduler.schedule();
    expect(work(out)).toEqual([['y', 8, 1]]); // 8 tokens (2 blocks) hit; only the last one is computed
    expect(out.scheduled[0]!.allocation.numCachedTokens).toBe(8);
    expect(manager.metrics().prefixCacheHits).toBe(8);
  });

  it('a request that can never fit is a typed error naming it', () => {
    const { scheduler, add } = setup(3); // 2 usable blocks of 4 tokens
    add('big', range(0, 20));
    let error: unknown;
    try {
      scheduler.schedule();
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(EngineError);
    expect((error as EngineError).code).toBe('INVALID_ARGUMENT');
    expect((error as EngineError).message).toContain('"req-big" needs more KV cache blocks than exist (2 usable blocks)');
  });

  it('rejects bad limits and policies', () => {
    const manager = new KvCacheManager({ numBlocks: 8, blockSize: 4 });
    const code = (config: SchedulerConfig) => {
      try {
        new Scheduler(manager, config);
      } catch (e) {
        return (e as EngineError).code;
      }
      return 'none';
    };
    expect(code({ maxModelLen: 10, maxNumBatchedTokens: 0 })).toBe('INVALID_ARGUMENT');
    expect(code({ maxModelLen: 10, maxNumSeqs: 1.5 })).toBe('INVALID_ARGUMENT');
    expect(code({ maxModelLen: 0 })).toBe('INVALID_ARGUMENT');
    expect(code({ maxModelLen: 10, policy: 'lifo' as never })).toBe('INVALID_ARGUMENT');
    expect(code({ maxModelLen: 10 })).toBe('none');
  });
});

describe('Scheduler: preemption policy (the cache manager only frees what it is told to)', () => {
  /** 4 usable blocks, four 4-token sequences admitted in order a, b, c, d: the cache is full. */
  function full(policy: 'fcfs' | 'priority', priorities = [0, 0, 0, 0]) {
    const t = setup(5, { policy });
    ['a', 'b', 'c', 'd'].forEach((id, i) => t.add(id, range(10 * i, 4), priorities[i]));
    const first = t.scheduler.schedule();
    expect(t.ids(first.admitted)).toEqual(['a', 'b', 'c', 'd']);
    expect(t.manager.metrics().numFreeBlocks).toBe(0);
    return t;
  }

  it('fcfs: preempts the most recently admitted sequences not yet scheduled, requeued at the head; no admission that step', () => {
    const { manager, scheduler, add, ids, work } = full('fcfs');
    for (const id of ['a', 'b', 'c', 'd']) manager.appendTokens(id, [1]); // every sequence needs a 2nd block
    add('e', range(90, 2));
    const out = scheduler.schedule();
    expect(ids(out.preempted)).toEqual(['d', 'c']); // a takes d's block, b takes c's
    expect(work(out)).toEqual([['a', 4, 1], ['b', 4, 1]]);
    expect(ids(scheduler.running)).toEqual(['a', 'b']);
    expect(ids(scheduler.waiting)).toEqual(['c', 'd', 'e']); // the last preempted first, e not admitted
    expect(manager.getSequence('c')).toMatchObject({ status: 'preempted', numTokens: 5, numComputedTokens: 0 });
    expect(manager.metrics().numPreemptions).toBe(2);
    manager.checkInvariants();
  });

  it('fcfs: the requester preempts itself when it is the most recently admitted', () => {
    const { manager, scheduler, ids, work } = full('fcfs');
    scheduler.finish(scheduler.running[3]!, 'free'); // d done: one block free
    scheduler.finish(scheduler.running[2]!, 'free'); // c done: two blocks free
    for (const id of ['a', 'b']) manager.appendTokens(id, range(100, 8)); // each needs 2 more blocks
    const out = scheduler.schedule();
    // a takes both free blocks; b, the last admitted, is its own victim (a, earlier and scheduled, is kept).
    expect(work(out)).toEqual([['a', 4, 8]]);
    expect(ids(out.preempted)).toEqual(['b']);
    expect(ids(scheduler.waiting)).toEqual(['b']);
    manager.checkInvariants();
  });

  it('admits nothing in a step that preempted, even when blocks and budget would allow it', () => {
    const { manager, scheduler, add, ids, work } = setup(7, { maxNumBatchedTokens: 8 }, false); // 6 usable blocks
    add('a', range(0, 4));
    add('b', range(10, 4));
    scheduler.schedule(); // a, b: 8 tokens
    add('v', range(20, 16));
    scheduler.schedule(); // v: first chunk of 8
    scheduler.schedule(); // v: second chunk; the cache is full
    expect(manager.metrics().numFreeBlocks).toBe(0);
    manager.appendTokens('a', [1]);
    const out = scheduler.schedule();
    expect(ids(out.preempted)).toEqual(['v']);
    expect(work(out)).toEqual([['a', 4, 1]]);
    expect(manager.metrics().numFreeBlocks).toBe(3); // v's chunk of 7 would fit now, but waits for the next step
    expect(ids(out.admitted)).toEqual([]);
    expect(work(scheduler.schedule())).toEqual([['v', 0, 8]]);
  });

  it('priority: never preempts a sequence already scheduled in the step, however low its priority', () => {
    const t = setup(6, { policy: 'priority' }); // 5 usable blocks
    ['a', 'b', 'c', 'd'].forEach((id, i) => t.add(id, range(10 * i, 4), [2, 0, 0, 1][i]));
    t.scheduler.schedule();
    t.manager.appendTokens('a', [1]);
    t.manager.appendTokens('b', [1]);
    const out = t.scheduler.schedule();
    // a takes the free block and is scheduled; b then needs one: d (priority 1) goes, not a (priority 2).
    expect(t.ids(out.preempted)).toEqual(['d']);
    expect(t.work(out)).toEqual([['a', 4, 1], ['b', 4, 1]]);
    t.manager.checkInvariants();
  });

  it('priority: preempts the largest (priority, arrival) first, whatever the admission order', () => {
    const { manager, scheduler, ids } = full('priority', [1, 0, 2, 1]);
    manager.appendTokens('b', [1]);
    let out = scheduler.schedule();
    expect(ids(out.preempted)).toEqual(['c']); // priority 2
    manager.appendTokens('a', [1]);
    out = scheduler.schedule();
    expect(ids(out.preempted)).toEqual(['d']); // priority 1 like a, but arrived later
    expect(ids(scheduler.running)).toEqual(['a', 'b']);
    expect(ids(scheduler.waiting)).toEqual(['d', 'c']);
    manager.checkInvariants();
  });

  it('fcfs on the same workload preempts by admission order instead (the policies differ)', () => {
    const { manager, scheduler, ids } = full('fcfs', [1, 0, 2, 1]);
    manager.appendTokens('b', [1]);
    expect(ids(scheduler.schedule().preempted)).toEqual(['d']);
  });

  it('fork joins the running queue sharing blocks; finish frees or aborts in the manager', () => {
    const { manager, scheduler, add, ids } = setup(16);
    const a = add('a', range(0, 6));
    scheduler.schedule();
    const child = { ...a, id: 'a#1' };
    scheduler.fork(a, child);
    expect(ids(scheduler.running)).toEqual(['a', 'a#1']);
    expect(manager.blockTable('a#1')).toEqual(manager.blockTable('a'));
    scheduler.finish(child, 'abort');
    scheduler.finish(a, 'free');
    expect(scheduler.hasUnfinished()).toBe(false);
    expect(manager.metrics()).toMatchObject({ numAborted: 1, numFinished: 1, numSequences: 0 });
    manager.checkInvariants();
  });
});

describe('Scheduler: admission hold (a KV-tier lookup in flight)', () => {
  it('stops admission at a held sequence (FCFS kept), keeps running the others, and does not call it unfittable', () => {
    const manager = new KvCacheManager({ numBlocks: 64, blockSize: 4, hashSeed: 'hold' });
    const held = new Set<string>();
    const scheduler = new Scheduler<SchedulerSequence>(manager, { maxModelLen: 1000 }, { admissionHold: (s) => held.has(s.id) });
    const add = (id: string, n: number) => {
      manager.addSequence(id, range(0, n));
      const seq = { id, requestId: id, priority: 0, arrivalTime: 0, cacheSalt: undefined };
      scheduler.add(seq);
      return seq;
    };
    held.add('a');
    add('a', 8);
    add('b', 8);
    let out = scheduler.schedule(); // nothing runs, the head is held: an empty step, no "can never fit" error
    expect(out.scheduled).toEqual([]);
    expect(scheduler.waiting.map((s) => s.id)).toEqual(['a', 'b']);
    held.delete('a');
    out = scheduler.schedule();
    expect(out.admitted.map((s) => s.id)).toEqual(['a', 'b']);
    held.add('c');
    add('c', 8);
    manager.appendTokens('a', [1]);
    out = scheduler.schedule();
    expect(out.scheduled.map((s) => s.seq.id)).toEqual(['a']); // a decodes; c waits for its lookup
    expect(scheduler.waiting.map((s) => s.id)).toEqual(['c']);
  });
});
