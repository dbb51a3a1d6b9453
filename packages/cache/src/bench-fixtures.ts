/**
 * Workloads shared by the benchmarks (`*.bench.ts`) and their companion test (`bench-fixtures.test.ts`),
 * so what is timed is also checked for correct results.
 */
import { createHash } from 'node:crypto';
import { KvCacheManager } from './manager.js';
import { createKvLayerCache } from './storage/storage.js';
import type { KvLayerCache } from './storage/layer.js';
import type { KvStorageDtype } from './dtype.js';
import type { HashFunction } from './hash.js';

/** node:crypto SHA-256 as a {@link HashFunction} (the "peer" the pure-TS hash is compared with). */
export const nodeSha256: HashFunction = (d) => new Uint8Array(createHash('sha256').update(d).digest());

/** Distinct token ids for workload `k` (`n` tokens). */
export function uniqueTokens(k: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => (k * 7919 + i * 104_729) % 150_000);
}

export interface LoadedManager {
  readonly m: KvCacheManager;
  /** A prompt whose first `cachedTokens` tokens are in the prefix cache (blocks free, evictable). */
  readonly cachedPrompt: number[];
  readonly cachedTokens: number;
}

/**
 * A manager over `numBlocks` blocks of `blockSize`, loaded like a busy server: about a third of the blocks
 * cached-but-free (finished requests), a third held by running sequences, the rest never used.
 */
export function loadedManager(
  numBlocks: number,
  opts: { blockSize?: number; promptTokens?: number; hashFn?: HashFunction; enablePrefixCaching?: boolean } = {},
): LoadedManager {
  const blockSize = opts.blockSize ?? 16;
  const promptTokens = opts.promptTokens ?? 1024;
  const m = new KvCacheManager({
    numBlocks,
    blockSize,
    hashSeed: 'bench',
    ...(opts.hashFn !== undefined ? { hashFn: opts.hashFn } : {}),
    ...(opts.enablePrefixCaching !== undefined ? { enablePrefixCaching: opts.enablePrefixCaching } : {}),
  });
  const blocksPerSeq = Math.ceil(promptTokens / blockSize);
  const third = Math.floor((numBlocks - 1) / 3 / blocksPerSeq);
  const cachedPrompt = [...uniqueTokens(123_456_789, promptTokens), 1];
  m.addSequence('cached', cachedPrompt);
  m.allocate('cached');
  m.free('cached');
  for (let i = 0; i < third - 1; i++) {
    m.addSequence(`done${i}`, uniqueTokens(i, promptTokens));
    m.allocate(`done${i}`);
    m.free(`done${i}`);
  }
  for (let i = 0; i < third; i++) {
    m.addSequence(`run${i}`, uniqueTokens(1_000_000 + i, promptTokens));
    m.allocate(`run${i}`);
  }
  return { m, cachedPrompt, cachedTokens: opts.enablePrefixCaching === false ? 0 : Math.floor(promptTokens / blockSize) * blockSize };
}

/** One layer of Llama-3.1-8B shape (8 KV heads × 128) with `numBlocks` blocks of 16, plus `numTokens` tokens of K/V data. */
export function kvWorkload(dtype: KvStorageDtype, numBlocks: number, numTokens: number) {
  const layer: KvLayerCache = createKvLayerCache({ dtype, numBlocks, blockSize: 16, numKvHeads: 8, headSize: 128 });
  if (dtype !== 'f32' && dtype !== 'bf16' && dtype !== 'f16') {
    layer.kScale[0] = 0.02;
    layer.vScale[0] = 0.01;
  }
  const row = 8 * 128;
  const key = new Float32Array(numTokens * row);
  const value = new Float32Array(numTokens * row);
  for (let i = 0; i < key.length; i++) {
    key[i] = Math.sin(i * 0.37) * 4;
    value[i] = Math.cos(i * 0.11) * 2;
  }
  // the tokens of one sequence, in blocks 1, 3, 5, ... (non-contiguous, as a real table)
  const numSeqBlocks = Math.ceil(numTokens / 16);
  const blockTable = Int32Array.from({ length: numSeqBlocks }, (_, i) => 1 + 2 * i);
  const slotMapping = Int32Array.from({ length: numTokens }, (_, p) => blockTable[Math.floor(p / 16)]! * 16 + (p % 16));
  return { layer, key, value, blockTable, slotMapping, numTokens };
}
