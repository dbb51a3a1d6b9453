import { bench, describe } from 'vitest';
import { loadedManager, nodeSha256, uniqueTokens } from './bench-fixtures.js';

/**
 * Bookkeeping throughput at 100k blocks (≈ 1.6M tokens of capacity), on a pool already a third cached-free
 * and a third in use. Baselines in the same run: a bare JS array free list (pop/push of the same number of
 * block ids: the floor of any allocator), and the manager with prefix caching off (no hashing).
 */
const NUM_BLOCKS = 100_001;
const PROMPT = 1024; // 64 blocks of 16

/** A fresh prompt per call without building one: the manager copies tokens, so a shared buffer is reused and
 * its first token changed (which changes every block hash of the chain: never a prefix hit). */
function freshPrompt(base: number): () => number[] {
  const buf = uniqueTokens(base, PROMPT);
  let k = 0;
  return () => {
    buf[0] = 200_000 + (k++ % 1_000_000);
    return buf;
  };
}

describe('prefill 1024 tokens then free (64 blocks)', () => {
  const free = Array.from({ length: NUM_BLOCKS - 1 }, (_, i) => i + 1);
  bench('baseline: JS array free list pop/push 64 ids', () => {
    const got: number[] = [];
    for (let i = 0; i < 64; i++) got.push(free.pop()!);
    for (let i = 63; i >= 0; i--) free.push(got[i]!);
  });

  const off = loadedManager(NUM_BLOCKS, { promptTokens: PROMPT, enablePrefixCaching: false }).m;
  const offPrompt = freshPrompt(5);
  let k = 0;
  bench('manager, prefix caching off', () => {
    const id = `b${k++}`;
    off.addSequence(id, offPrompt());
    off.allocate(id);
    off.free(id);
  });

  const on = loadedManager(NUM_BLOCKS, { promptTokens: PROMPT }).m;
  const onPrompt = freshPrompt(6);
  let j = 0;
  bench('manager, prefix caching on (pure-TS SHA-256, 64 block hashes)', () => {
    const id = `c${j++}`;
    on.addSequence(id, onPrompt());
    on.allocate(id);
    on.free(id);
  });

  const peer = loadedManager(NUM_BLOCKS, { promptTokens: PROMPT, hashFn: nodeSha256 }).m;
  const peerPrompt = freshPrompt(7);
  let q = 0;
  bench('manager, prefix caching on (node:crypto SHA-256)', () => {
    const id = `d${q++}`;
    peer.addSequence(id, peerPrompt());
    peer.allocate(id);
    peer.free(id);
  });
});

describe('decode step (append 1 token + allocate 1 slot), 16k running tokens', () => {
  const { m } = loadedManager(NUM_BLOCKS, { promptTokens: PROMPT });
  m.addSequence('dec', uniqueTokens(9, PROMPT));
  m.allocate('dec');
  let t = 0;
  let steps = 0;
  bench('appendTokens + allocate', () => {
    m.appendTokens('dec', [t++ % 50_000]);
    m.allocate('dec');
    if (++steps === 16_384) {
      // keep the sequence bounded: restart it
      m.free('dec');
      m.addSequence('dec', uniqueTokens(9, PROMPT));
      m.allocate('dec');
      steps = 0;
    }
  });
});

describe('prefix lookup of a 1024-token prompt (64 cached blocks)', () => {
  const ts = loadedManager(NUM_BLOCKS, { promptTokens: PROMPT });
  bench('findCachedPrefix, pure-TS SHA-256', () => {
    ts.m.findCachedPrefix(ts.cachedPrompt);
  });
  const node = loadedManager(NUM_BLOCKS, { promptTokens: PROMPT, hashFn: nodeSha256 });
  bench('findCachedPrefix, node:crypto SHA-256', () => {
    node.m.findCachedPrefix(node.cachedPrompt);
  });
  let n = 0;
  bench('admit with a 1024-token hit + free (touch/release 64 cached blocks)', () => {
    const id = `h${n++}`;
    ts.m.addSequence(id, ts.cachedPrompt);
    ts.m.allocate(id);
    ts.m.free(id);
  });
});
