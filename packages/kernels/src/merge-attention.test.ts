import { describe, expect, it } from 'vitest';
import { KernelError } from './errors.js';
import { mergeAttentionStates } from './merge-attention.js';
import { createReferenceBackend } from './reference/backend.js';
import { makeKvCache, randomF32, rng } from './testing/random.js';

const ref = createReferenceBackend();

describe('mergeAttentionStates', () => {
  it('is the softmax-weighted mix of the parts, with lse = ln(e^a + e^b)', () => {
    const outA = Float32Array.of(1, 2, 10, 20);
    const outB = Float32Array.of(3, 4, 30, 40);
    const lseA = Float32Array.of(Math.log(1), 5);
    const lseB = Float32Array.of(Math.log(3), -Infinity);
    const out = new Float32Array(4);
    const lse = new Float32Array(2);
    mergeAttentionStates({ outA, lseA, outB, lseB, out, lse, numRows: 2, headSize: 2 });
    // Row 0: weights 1/4 and 3/4. Row 1: part B attends nothing.
    expect(Array.from(out)).toEqual([Math.fround(0.25 * 1 + 0.75 * 3), Math.fround(0.25 * 2 + 0.75 * 4), 10, 20]);
    expect(lse[0]).toBeCloseTo(Math.log(4), 6);
    expect(lse[1]).toBe(5);
  });

  it('gives 0 and -inf for a row neither part attends, runs in place, and propagates NaN', () => {
    const outA = Float32Array.of(NaN, NaN, 1, 1);
    const outB = Float32Array.of(7, 7, 2, 2);
    const lseA = Float32Array.of(-Infinity, NaN);
    const lseB = Float32Array.of(-Infinity, 0);
    mergeAttentionStates({ outA, lseA, outB, lseB, out: outA, lse: lseA, numRows: 2, headSize: 2 });
    expect(Array.from(outA.subarray(0, 2))).toEqual([0, 0]);
    expect(lseA[0]).toBe(-Infinity);
    expect(Number.isNaN(outA[2])).toBe(true);
    expect(Number.isNaN(lseA[1])).toBe(true);
  });

  it('rejects wrong sizes and partial overlaps with typed errors', () => {
    const a = new Float32Array(8);
    const l = new Float32Array(2);
    expect(() => mergeAttentionStates({ outA: a, lseA: l, outB: a, lseB: l, out: new Float32Array(3), numRows: 2, headSize: 2 })).toThrow(KernelError);
    expect(() => mergeAttentionStates({ outA: a, lseA: l, outB: a, lseB: l, out: a.subarray(1), numRows: 2, headSize: 2 })).toThrow(/overlaps/);
    expect(() => mergeAttentionStates({ outA: a, lseA: l, outB: a, lseB: l, out: a, numRows: -1, headSize: 2 })).toThrow(/numRows/);
  });
});

describe('pagedAttention lse (reference)', () => {
  // One sequence of 37 positions, f32 cache, blocks of 4, GQA 2:1, head size 8.
  const headSize = 8;
  const blockSize = 4;
  const L = 37;
  const rnd = rng(5);
  const cache = makeKvCache({ dtype: 'f32', numBlocks: 12, blockSize, numKvHeads: 1, headSize });
  const keys = randomF32(L * headSize, rnd);
  const values = randomF32(L * headSize, rnd);
  const table = Int32Array.from({ length: 11 }, (_, i) => 11 - i); // scattered blocks
  const slots = Int32Array.from({ length: L }, (_, p) => table[Math.floor(p / blockSize)]! * blockSize + (p % blockSize));
  ref.reshapeAndCache({ key: keys, value: values, slotMapping: slots, numTokens: L, cache });
  const query = randomF32(2 * headSize, rnd);
  const decode = (seqLen: number, blockTables: Int32Array, lse: Float32Array): Float32Array => {
    const out = new Float32Array(2 * headSize);
    ref.pagedAttention({ query, out, cache, queryStartLoc: Int32Array.of(0, 1), seqLens: Int32Array.of(seqLen), blockTables, maxBlocksPerSeq: blockTables.length, numSeqs: 1, numHeads: 2, lse });
    return out;
  };

  it('is ln(sum_j e^(q.k_j / sqrt(d))) over the attended keys', () => {
    const lse = new Float32Array(2);
    decode(L, table, lse);
    for (let h = 0; h < 2; h++) {
      let sum = 0;
      for (let j = 0; j < L; j++) {
        let dot = 0;
        for (let d = 0; d < headSize; d++) dot += query[h * headSize + d]! * keys[j * headSize + d]!;
        sum += Math.exp(dot / Math.sqrt(headSize));
      }
      expect(lse[h]).toBeCloseTo(Math.log(sum), 5);
    }
  });

  it('merges attention over [0, 8) and over [8, 37) (block table shifted by 2 blocks) into attention over [0, 37)', () => {
    const full = decode(L, table, new Float32Array(2));
    const lseA = new Float32Array(2);
    const lseB = new Float32Array(2);
    const a = decode(8, table.subarray(0, 2), lseA);
    const b = decode(L - 8, table.subarray(2), lseB);
    const merged = new Float32Array(full.length);
    mergeAttentionStates({ outA: a, lseA, outB: b, lseB, out: merged, numRows: 2, headSize });
    for (let i = 0; i < full.length; i++) expect(merged[i]).toBeCloseTo(full[i]!, 6);
  });
});
