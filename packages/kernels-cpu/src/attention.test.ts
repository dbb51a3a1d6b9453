import { createReferenceBackend, type KvDtype, type PagedAttentionArgs } from '@kvq/kernels';
import {
  BLOCK_SIZES,
  DEFAULT_TOLERANCES,
  GQA_RATIOS,
  HEAD_SIZES,
  KV_DTYPES,
  attentionArgs,
  buildAttentionBatch,
  compareOutput,
  rng,
  type AttentionBatch,
  type SeqSpec,
} from '@kvq/kernels/testing';
import { describe, expect, it } from 'vitest';
import { cpuAvailability, createBackend, type CpuBackend } from './backend.js';

const avail = cpuAvailability();
const isas = avail.available ? avail.cpu.isas : [];
const reference = createReferenceBackend();
const TOL = DEFAULT_TOLERANCES.pagedAttention;

/** A batch mixing decode, prefill and chunked prefill: query lengths 1, 7, 17 and 33. */
const MIXED: SeqSpec[] = [
  { queryLen: 1, seqLen: 1 },
  { queryLen: 7, seqLen: 7 },
  { queryLen: 17, seqLen: 40 },
  { queryLen: 1, seqLen: 33 },
  { queryLen: 33, seqLen: 33 },
];

interface Case {
  label: string;
  batch: AttentionBatch;
  args: Omit<PagedAttentionArgs, 'out'>;
  want: Float32Array;
}

function makeCase(
  label: string,
  spec: { dtype: KvDtype; scales: 'tensor' | 'head'; headSize: number; gqa: number; numKvHeads: number; blockSize: number; seqs: SeqSpec[] },
  seed: number,
  extra: Partial<PagedAttentionArgs> = {},
  mutate?: (b: AttentionBatch) => void,
): Case {
  const numHeads = spec.numKvHeads * spec.gqa;
  const batch = buildAttentionBatch({ ...spec, numHeads }, rng(seed), reference);
  mutate?.(batch);
  const args = { ...attentionArgs(batch), ...extra };
  const want = new Float32Array(batch.numTokens * numHeads * spec.headSize);
  reference.pagedAttention({ ...args, out: want });
  return { label, batch, args, want };
}

function check(b: CpuBackend, c: Case): void {
  const out = new Float32Array(c.want.length + 3).fill(12345.5);
  b.pagedAttention({ ...c.args, out });
  const f = compareOutput('out', out.subarray(0, c.want.length), c.want, TOL);
  expect(f?.message, c.label).toBeUndefined();
  expect(Array.from(out.subarray(c.want.length)), `${c.label}: wrote past the output`).toEqual([12345.5, 12345.5, 12345.5]);
}

/**
 * Every KV dtype and scale granularity x every head size, with GQA ratio, kv-head count and block size cycling
 * so that all of 1/2/4/8, 1/2 and 1/16/32 appear with every dtype. References are computed once and shared.
 */
const sweep: Case[] = [];
let n = 0;
for (const dtype of KV_DTYPES) {
  for (const scales of dtype.startsWith('e') ? (['tensor', 'head'] as const) : (['tensor'] as const)) {
    HEAD_SIZES.forEach((headSize, j) => {
      const gqa = GQA_RATIOS[(n + j) % GQA_RATIOS.length]!;
      const blockSize = BLOCK_SIZES[(n + 2 * j) % BLOCK_SIZES.length]!;
      const numKvHeads = 1 + ((n + j) % 2);
      sweep.push(
        makeCase(`${dtype}/${scales} hs=${headSize} gqa=${gqa} kvh=${numKvHeads} bs=${blockSize}`, { dtype, scales, headSize, gqa, numKvHeads, blockSize, seqs: MIXED }, 5000 + n * 10 + j),
      );
    });
    n++;
  }
}

describe.skipIf(!avail.available)('pagedAttention: native vs reference sweep', () => {
  for (const isa of isas) {
    it(`${isa}: ${sweep.length} cases (7 dtypes x scale granularities x head sizes 8/16/64/128, mixed varlen batch)`, () => {
      const b = createBackend({ isa, threads: 2 });
      try {
        for (const c of sweep) check(b, c);
      } finally {
        b.dispose();
      }
    });
  }
});

describe.skipIf(!avail.available)('pagedAttention: special paths', () => {
  // Fast FP8 lanes (and the byte-table decode for FNUZ) misread NaN codes; tiles holding one must take the exact path.
  const nanCases: Case[] = (['e4m3fn', 'e5m2', 'e4m3fnuz', 'e5m2fnuz'] as const).flatMap((dtype, i) =>
    [64, 16].map((headSize) =>
      makeCase(
        `NaN codes in a ${dtype} cache hs=${headSize}`,
        { dtype, scales: 'head', headSize, gqa: 4, numKvHeads: 2, blockSize: 16, seqs: [{ queryLen: 1, seqLen: 150 }, { queryLen: 1, seqLen: 20 }, { queryLen: 5, seqLen: 90 }] },
        7000 + i,
        {},
        (batch) => {
          const nan = dtype.endsWith('fnuz') ? 0x80 : dtype === 'e5m2' ? 0x7e : 0xff;
          const pools = [batch.cache.key, batch.cache.value];
          // Sequence 0's 100th token: K of kv head 0 (that head's rows become NaN), V of kv head 1 dim 3.
          const slot = batch.blockTables[Math.floor(100 / 16)]! * 16 + (100 % 16);
          pools[0]![slot * 2 * headSize + 5] = nan;
          pools[1]![(slot * 2 + 1) * headSize + 3] = nan;
        },
      ),
    ),
  );
  // One long sequence and one kv head on 4 threads: the keys are split (flash-decoding) and recombined.
  const splitCases: Case[] = (['bf16', 'e4m3fn', 'f32', 'e5m2fnuz'] as const).flatMap((dtype, i) =>
    [64, 16].map((headSize) =>
      makeCase(
        `split keys ${dtype} hs=${headSize}`,
        { dtype, scales: 'head', headSize, gqa: 8, numKvHeads: 1, blockSize: 32, seqs: [{ queryLen: 1, seqLen: 1025 }] },
        7100 + i,
      ),
    ),
  );
  const windowCases: Case[] = [1, 7, 64].map((slidingWindow, i) =>
    makeCase(
      `sliding window ${slidingWindow}`,
      { dtype: i === 1 ? 'bf16' : 'e4m3fn', scales: 'head', headSize: 64, gqa: 2, numKvHeads: 2, blockSize: 16, seqs: [...MIXED, { queryLen: 1, seqLen: 300 }] },
      7200 + i,
      { slidingWindow },
    ),
  );
  const fp8QueryCases: Case[] = (['e4m3fn', 'e5m2', 'e4m3fnuz', 'e5m2fnuz'] as const).flatMap((dtype, i) =>
    [64, 128, 16].map((headSize, j) =>
      makeCase(
        `fp8 query ${dtype} hs=${headSize}`,
        { dtype, scales: j === 1 ? 'tensor' : 'head', headSize, gqa: 4, numKvHeads: 2, blockSize: 16, seqs: MIXED },
        7300 + i * 3 + j,
        { fp8Query: { saturation: j === 2 ? 'nosat' : 'satfinite' } },
      ),
    ),
  );
  for (const isa of isas) {
    it(`${isa}: NaN codes, split keys, sliding windows, FP8-query mode`, () => {
      const b = createBackend({ isa, threads: 4 });
      try {
        for (const c of [...nanCases, ...splitCases, ...windowCases, ...fp8QueryCases]) check(b, c);
      } finally {
        b.dispose();
      }
    });
  }

  it('the NaN cases really produce NaN rows (the injected codes are read)', () => {
    const c = nanCases[0]!;
    expect(c.want.some(Number.isNaN)).toBe(true);
    expect(c.want.some((v) => !Number.isNaN(v))).toBe(true);
  });
});

describe.skipIf(!avail.available)('pagedAttention: long sequences (1025 tokens)', () => {
  const long: Case[] = [
    makeCase('prefill 1025 e4m3fn hs=64 gqa=4', { dtype: 'e4m3fn', scales: 'head', headSize: 64, gqa: 4, numKvHeads: 2, blockSize: 16, seqs: [{ queryLen: 1025, seqLen: 1025 }] }, 7400),
    makeCase(
      'decode + chunked prefill at 1025, bf16 hs=128 gqa=8',
      { dtype: 'bf16', scales: 'tensor', headSize: 128, gqa: 8, numKvHeads: 1, blockSize: 32, seqs: [{ queryLen: 1, seqLen: 1025 }, { queryLen: 40, seqLen: 1025 }] },
      7401,
    ),
  ];
  for (const isa of isas) {
    it(`${isa}: ${long.length} long cases`, () => {
      const b = createBackend({ isa, threads: 2 });
      try {
        for (const c of long) check(b, c);
      } finally {
        b.dispose();
      }
    });
  }
});

describe.skipIf(!avail.available)('async variants', () => {
  it('pagedAttentionAsync and linearAsync give the sync results and keep the JS thread free', async () => {
    const b = createBackend();
    try {
      const c = sweep[sweep.length - 2]!;
      const sync = new Float32Array(c.want.length);
      b.pagedAttention({ ...c.args, out: sync });
      const viaAsync = new Float32Array(c.want.length);
      let ticks = 0;
      const timer = setInterval(() => ticks++, 0);
      await b.pagedAttentionAsync({ ...c.args, out: viaAsync });
      clearInterval(timer);
      expect(Array.from(viaAsync)).toEqual(Array.from(sync));
      expect(ticks).toBeGreaterThanOrEqual(0);

      const x = new Float32Array(3 * 70).map((_, i) => Math.sin(i));
      const weight = { dtype: 'bf16' as const, data: new Uint16Array(33 * 70).map((_, i) => 0x3c00 + (i % 97)), rows: 33, cols: 70 };
      const y1 = new Float32Array(3 * 33);
      const y2 = new Float32Array(3 * 33);
      b.linear({ x, weight, out: y1, rows: 3 });
      await b.linearAsync({ x, weight, out: y2, rows: 3 });
      expect(Array.from(y2)).toEqual(Array.from(y1));
      // dispose() while an async op is queued: the op still completes (it shares the pool), later calls fail.
      const y3 = new Float32Array(3 * 33);
      const pending = b.linearAsync({ x, weight, out: y3, rows: 3 });
      b.dispose();
      await pending;
      expect(Array.from(y3)).toEqual(Array.from(y1));
      await expect(b.linearAsync({ x, weight, out: y3, rows: 3 })).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE' });
      await expect(b.linearAsync({ x, weight, out: new Float32Array(5), rows: 3 })).rejects.toMatchObject({
        name: 'KernelError',
        code: 'SHAPE_MISMATCH',
        argument: 'out',
      });
    } finally {
      b.dispose();
    }
  });
});
