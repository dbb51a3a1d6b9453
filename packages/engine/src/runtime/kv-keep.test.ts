/**
 * The kept-precision cache's mechanism: block bookkeeping (sink, moving tail, release, fork) and the split attention,
 * checked against attention written from the definition (float64, dense): a key at position j is read in the model
 * dtype when it is kept (j < sinkEnd or j >= tailStart), else dequantized from the quantized cache.
 */
import { KvCacheStorage } from '@kvq/cache';
import { seededRandom } from '@kvq/test-utils';
import { createReferenceBackend } from '@kvq/kernels';
import { describe, expect, it } from 'vitest';
import { EngineError } from '../errors.js';
import { keepAttention, keptBlocksPerSequence, KeepScratch, KvKeepBlocks, kvKeepConfig, planKeepSplit, tailStart, type KeepSeqStep } from './kv-keep.js';

const ref = createReferenceBackend();

describe('kvKeepConfig and the regions', () => {
  it('rounds the sink up to whole blocks, keeps recent as given, and is off when both are 0', () => {
    expect(kvKeepConfig(undefined, undefined, 16)).toBeUndefined();
    expect(kvKeepConfig(0, 0, 16)).toBeUndefined();
    expect(kvKeepConfig(4, 0, 16)).toEqual({ blockSize: 16, sinkTokens: 16, recentTokens: 0 });
    expect(kvKeepConfig(17, 40, 16)).toEqual({ blockSize: 16, sinkTokens: 32, recentTokens: 40 });
  });

  it.each([[-1, 'kvCacheKeepSink'], [1.5, 'kvCacheKeepSink'], ['4', 'kvCacheKeepSink']])('rejects sink %j with a typed error naming the field', (v, field) => {
    let err: unknown;
    try {
      kvKeepConfig(v, 0, 16);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(EngineError);
    expect((err as EngineError).code).toBe('INVALID_ARGUMENT');
    expect((err as EngineError).field).toBe(field);
  });

  it('starts the tail at a block boundary with at least `recent` tokens after it, never inside the sink', () => {
    const c = kvKeepConfig(16, 20, 16)!;
    expect(tailStart(c, 10)).toBe(16);
    expect(tailStart(c, 36)).toBe(16);
    expect(tailStart(c, 52)).toBe(32);
    for (let len = 1; len < 200; len++) {
      const t = tailStart(c, len);
      expect(t % 16).toBe(0);
      expect(t).toBeGreaterThanOrEqual(16);
      if (len >= 36) expect(len - t).toBeGreaterThanOrEqual(20);
      expect(len - t).toBeLessThan(20 + 16);
    }
    const noTail = kvKeepConfig(16, 0, 16)!;
    expect(tailStart(noTail, 100)).toBe(100);
    expect(keptBlocksPerSequence(c)).toBe(1 + 3);
  });
});

describe('KvKeepBlocks', () => {
  it('writes sink and tail tokens, drops aged-out tail blocks, and returns every block on release', () => {
    const c = kvKeepConfig(4, 8, 4)!; // sink 1 block, tail >= 8 tokens
    const blocks = new KvKeepBlocks(c, 1 + 2 * keptBlocksPerSequence(c));
    const total = blocks.freeBlocks;
    const prefill = blocks.step('a', 0, 22); // tail start floor((22-8)/4)*4 = 12
    expect(prefill.tailStart).toBe(12);
    expect(prefill.sinkEnd).toBe(4);
    const kept = Array.from(prefill.slots).map((s, p) => (s >= 0 ? p : -1)).filter((p) => p >= 0);
    expect(kept).toEqual([0, 1, 2, 3, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]);
    expect(prefill.table.length).toBe(1 + 3);
    // Decode until the tail moves twice: at most sink + 3 tail blocks ever held.
    for (let p = 22; p < 40; p++) {
      const s = blocks.step('a', p, 1);
      expect(s.slots[0]).toBeGreaterThanOrEqual(0);
      expect(total - blocks.freeBlocks).toBeLessThanOrEqual(keptBlocksPerSequence(c));
      expect(s.table.length).toBe(1 + Math.ceil((p + 1 - s.tailStart) / 4));
    }
    blocks.release('a');
    expect(blocks.freeBlocks).toBe(total);
  });

  it('gives a forked sequence its own copies and starts over at position 0 (recompute)', () => {
    const c = kvKeepConfig(4, 4, 4)!;
    const blocks = new KvKeepBlocks(c, 1 + 2 * keptBlocksPerSequence(c));
    const total = blocks.freeBlocks;
    const parent = blocks.step('p', 0, 10);
    const copies: { src: number; dst: number }[] = [];
    blocks.fork('p', 'c', (pairs) => copies.push(...pairs));
    expect(copies.length).toBe(parent.table.length);
    const child = blocks.step('c', 10, 1);
    const parentNext = blocks.step('p', 10, 1);
    expect(child.table[0]).not.toBe(parentNext.table[0]);
    const again = blocks.step('c', 0, 3); // recompute from scratch: the old blocks are returned first
    expect(again.table.length).toBe(1);
    blocks.release('c');
    blocks.release('p');
    expect(blocks.freeBlocks).toBe(total);
  });

  it('refuses, with a typed error, a sequence whose kept tokens were never written or a pool that is full', () => {
    const c = kvKeepConfig(4, 0, 4)!;
    const blocks = new KvKeepBlocks(c, 2);
    expect(() => blocks.step('x', 8, 1)).toThrow(EngineError); // the sink was never computed
    blocks.step('y', 0, 4);
    expect(() => blocks.step('z', 0, 1)).toThrow(/no free block/);
  });
});

/** A sequence of the split test: its positions, its new tokens and its K/V. */
interface Seq {
  readonly len: number;
  readonly qLen: number;
}

/** Dense float64 attention from the definition: key j in the model dtype when kept, else the quantized cache's. */
function definition(
  seqs: readonly Seq[],
  q: Float32Array,
  keptK: (s: number, j: number) => Float32Array,
  mainK: (s: number, j: number) => Float32Array,
  keptV: (s: number, j: number) => Float32Array,
  mainV: (s: number, j: number) => Float32Array,
  steps: readonly KeepSeqStep[],
  numHeads: number,
  headSize: number,
): Float64Array {
  const out = new Float64Array(q.length);
  let row = 0;
  seqs.forEach((sq, s) => {
    const { sinkEnd: N, tailStart: T } = steps[s]!;
    for (let i = 0; i < sq.qLen; i++, row++) {
      const p = sq.len - sq.qLen + i;
      for (let h = 0; h < numHeads; h++) {
        const qb = (row * numHeads + h) * headSize;
        const scores: number[] = [];
        const vals: Float32Array[] = [];
        for (let j = 0; j <= p; j++) {
          const kept = j < N || j >= T;
          const k = kept ? keptK(s, j) : mainK(s, j);
          let dot = 0;
          for (let d = 0; d < headSize; d++) dot += q[qb + d]! * k[d]!;
          scores.push(dot / Math.sqrt(headSize));
          vals.push(kept ? keptV(s, j) : mainV(s, j));
        }
        const m = Math.max(...scores);
        const e = scores.map((x) => Math.exp(x - m));
        const z = e.reduce((a, b) => a + b, 0);
        for (let d = 0; d < headSize; d++) {
          let acc = 0;
          for (let j = 0; j <= p; j++) acc += (e[j]! / z) * vals[j]![d]!;
          out[qb + d] = acc;
        }
      }
    }
  });
  return out;
}

describe('split attention over the quantized and the kept cache', () => {
  it.each([
    ['e4m3fn', 4, 8],
    ['int4_per_token_head', 8, 0],
    ['int8_per_token_head', 0, 5],
  ] as const)('%s, sink %i, recent %i: decode, prefill and chunked prefill match the definition', (dtype, sink, recent) => {
    const bs = 4;
    const numKvHeads = 2;
    const numHeads = 4;
    const headSize = 32;
    const c = kvKeepConfig(sink, recent, bs)!;
    const rnd = seededRandom(7);
    const seqs: Seq[] = [
      { len: 30, qLen: 1 }, // decode
      { len: 13, qLen: 13 }, // whole prompt
      { len: 27, qLen: 9 }, // chunk over a cached prefix
      { len: 3, qLen: 1 }, // inside the sink
    ];
    const width = numKvHeads * headSize;
    const main = new KvCacheStorage({ dtype, numLayers: 1, numBlocks: 40, blockSize: bs, numKvHeads, headSize, numHeads }).layer(0);
    const keptStore = new KvCacheStorage({ dtype: 'f32', numLayers: 1, numBlocks: 1 + seqs.length * keptBlocksPerSequence(c), blockSize: bs, numKvHeads, headSize, numHeads });
    const kept = keptStore.layer(0);
    if (main.kScale.length > 0 && dtype === 'e4m3fn') {
      main.kScale.fill(0.02);
      main.vScale.fill(0.02);
    }
    const blocks = new KvKeepBlocks(c, keptStore.numBlocks);
    // Every sequence's K/V for all its positions, and its main block table (scattered blocks).
    const K = seqs.map((s) => Float32Array.from({ length: s.len * width }, () => rnd() * 2 - 1));
    const V = seqs.map((s) => Float32Array.from({ length: s.len * width }, () => rnd() * 2 - 1));
    let next = 39;
    const tables = seqs.map((s) => Int32Array.from({ length: Math.ceil(s.len / bs) }, () => next--));
    const steps: KeepSeqStep[] = [];
    seqs.forEach((s, i) => {
      const first = s.len - s.qLen;
      // The cached prefix: computed in an earlier step (every position written to the main cache, kept ones too).
      if (first > 0) {
        const pre = blocks.step(String(i), 0, first);
        const slots = Int32Array.from({ length: first }, (_, p) => tables[i]![Math.floor(p / bs)]! * bs + (p % bs));
        ref.reshapeAndCache({ key: K[i]!.subarray(0, first * width), value: V[i]!.subarray(0, first * width), slotMapping: slots, numTokens: first, cache: main });
        ref.reshapeAndCache({ key: K[i]!.subarray(0, first * width), value: V[i]!.subarray(0, first * width), slotMapping: pre.slots, numTokens: first, cache: kept });
      }
      const st = blocks.step(String(i), first, s.qLen);
      steps.push(st);
      const slots = Int32Array.from({ length: s.qLen }, (_, k) => tables[i]![Math.floor((first + k) / bs)]! * bs + ((first + k) % bs));
      ref.reshapeAndCache({ key: K[i]!.subarray(first * width), value: V[i]!.subarray(first * width), slotMapping: slots, numTokens: s.qLen, cache: main });
      ref.reshapeAndCache({ key: K[i]!.subarray(first * width), value: V[i]!.subarray(first * width), slotMapping: st.slots, numTokens: s.qLen, cache: kept });
    });
    const numTokens = seqs.reduce((a, s) => a + s.qLen, 0);
    const query = Float32Array.from({ length: numTokens * numHeads * headSize }, () => rnd() * 2 - 1);
    const maxBlocks = Math.max(...tables.map((t) => t.length));
    const blockTables = new Int32Array(seqs.length * maxBlocks);
    tables.forEach((t, i) => blockTables.set(t, i * maxBlocks));
    const queryStartLoc = Int32Array.from([0, ...seqs.map((_, i) => seqs.slice(0, i + 1).reduce((a, s) => a + s.qLen, 0))]);
    const seqLens = Int32Array.from(seqs.map((s) => s.len));
    const batch = { queryStartLoc, seqLens, blockTables, maxBlocksPerSeq: maxBlocks, numSeqs: seqs.length, numTokens };
    const split = planKeepSplit(batch, { slotMapping: new Int32Array(numTokens), seqs: steps }, bs);
    const out = new Float32Array(query.length);
    keepAttention((a) => ref.pagedAttention(a), { query, out, cache: main, queryStartLoc, seqLens, blockTables, maxBlocksPerSeq: maxBlocks, numSeqs: seqs.length, numHeads }, kept, split, new KeepScratch());

    // The definition's inputs: the quantized cache's values, read back one position at a time (a window of 1 at
    // that position attends it alone and returns its V; K is read the same way from a view whose V pool is the K pool).
    const dequant = (s: number, j: number, which: 'key' | 'value'): Float32Array => {
      const c = which === 'key' ? { ...main, value: main.key, vScale: main.kScale } : main;
      const o = new Float32Array(numKvHeads * headSize);
      ref.pagedAttention({
        query: new Float32Array(numKvHeads * headSize),
        out: o,
        cache: c,
        queryStartLoc: Int32Array.of(0, 1),
        seqLens: Int32Array.of((j % bs) + 1),
        blockTables: Int32Array.of(tables[s]![Math.floor(j / bs)]!),
        maxBlocksPerSeq: 1,
        numSeqs: 1,
        numHeads: numKvHeads,
        slidingWindow: 1,
      });
      return o;
    };
    const head = (vec: Float32Array, h: number) => vec.subarray(h * headSize, (h + 1) * headSize);
    const group = numHeads / numKvHeads;
    // Per query head h the definition reads kv head floor(h / group): evaluate one head at a time.
    const want = new Float64Array(query.length);
    for (let h = 0; h < numHeads; h++) {
      const kvh = Math.floor(h / group);
      const qh = new Float32Array(numTokens * headSize);
      for (let t = 0; t < numTokens; t++) qh.set(query.subarray((t * numHeads + h) * headSize, (t * numHeads + h + 1) * headSize), t * headSize);
      const raw = (arr: Float32Array[]) => (s: number, j: number) => arr[s]!.subarray(j * width + kvh * headSize, j * width + (kvh + 1) * headSize);
      const d = definition(
        seqs,
        qh,
        raw(K),
        (s, j) => head(dequant(s, j, 'key'), kvh),
        raw(V),
        (s, j) => head(dequant(s, j, 'value'), kvh),
        steps,
        1,
        headSize,
      );
      for (let t = 0; t < numTokens; t++) for (let e = 0; e < headSize; e++) want[(t * numHeads + h) * headSize + e] = d[t * headSize + e]!;
    }
    let maxErr = 0;
    for (let i = 0; i < out.length; i++) maxErr = Math.max(maxErr, Math.abs(out[i]! - want[i]!));
    expect(maxErr).toBeLessThan(2e-6);
    // And the kept tokens mattered: the same batch read entirely from the quantized cache differs.
    const plain = new Float32Array(query.length);
    ref.pagedAttention({ query, out: plain, cache: main, queryStartLoc, seqLens, blockTables, maxBlocksPerSeq: maxBlocks, numSeqs: seqs.length, numHeads });
    let diff = 0;
    for (let i = 0; i < out.length; i++) diff = Math.max(diff, Math.abs(out[i]! - plain[i]!));
    expect(diff).toBeGreaterThan(1e-4);
  });
});
