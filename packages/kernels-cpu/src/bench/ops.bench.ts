/**
 * Native vs the pure-TypeScript reference, one group per op of the contract (mid-sized shapes, default threads).
 */
import { buildRopeTable, createReferenceBackend, type KernelBackend } from '@kvq/kernels';
import { buildAttentionBatch, randomF32, randomInts, randomWeight, rng } from '@kvq/kernels/testing';
import { bench, describe } from 'vitest';
import { createBackend } from '../backend.js';

const cpu = createBackend();
const ref = createReferenceBackend();
const r = rng(3);
const opts = { time: 300, warmupTime: 50 };

function pair(name: string, run: (b: KernelBackend) => void): void {
  describe(name, () => {
    bench(`native (${cpu.isa}, ${cpu.threads} threads)`, () => run(cpu), opts);
    bench('reference (TypeScript)', () => run(ref), opts);
  });
}

const x1 = randomF32(1024, r);
const w1 = randomWeight('bf16', 1024, 1024, r);
const y1 = new Float32Array(1024);
pair('linear 1x1024 . 1024x1024 bf16', (b) => b.linear({ x: x1, weight: w1, out: y1, rows: 1 }));

const x16 = randomF32(16 * 64, r);
const w16 = randomWeight('f32', 256, 64, r);
const y16 = new Float32Array(16 * 256);
pair('linear 16x64 . 64x256 f32', (b) => b.linear({ x: x16, weight: w16, out: y16, rows: 16 }));

const hid = randomF32(16 * 4096, r);
const g = randomF32(4096, r);
const hidOut = new Float32Array(16 * 4096);
pair('rmsNorm 16x4096', (b) => b.rmsNorm({ x: hid, weight: g, out: hidOut, rows: 16, hidden: 4096, eps: 1e-5 }));

const big = randomF32(1 << 20, r);
const big2 = randomF32(1 << 20, r);
const bigOut = new Float32Array(1 << 20);
pair('add 1M', (b) => b.add({ a: big, b: big2, out: bigOut, length: 1 << 20 }));
pair('siluAndMul 1M', (b) => b.siluAndMul({ gate: big, up: big2, out: bigOut, length: 1 << 20 }));

const table = randomWeight('bf16', 2048, 1024, r);
const ids = randomInts(64, 2048, r);
const emb = new Float32Array(64 * 1024);
pair('embedding 64 tokens x 1024 bf16', (b) => b.embedding({ table, ids, out: emb, numTokens: 64 }));

const rt = buildRopeTable({ rotaryDim: 128, theta: 500000, maxPositions: 4096 });
const q = randomF32(64 * 32 * 128, r);
const k = randomF32(64 * 8 * 128, r);
const pos = randomInts(64, 4096, r);
pair('rope 64 tokens x 32/8 heads x 128', (b) =>
  b.rope({ query: q, key: k, positions: pos, numTokens: 64, numHeads: 32, numKvHeads: 8, headSize: 128, table: rt, style: 'rotate_half' }),
);

const logits = randomF32(4 * 32000, r, 3);
const probs = new Float32Array(4 * 32000);
pair('softmax 4x32000', (b) => b.softmax({ x: logits, out: probs, rows: 4, cols: 32000 }));

const batch = buildAttentionBatch(
  { dtype: 'e4m3fn', scales: 'head', blockSize: 16, numKvHeads: 8, headSize: 128, numHeads: 32, seqs: Array.from({ length: 4 }, () => ({ queryLen: 1, seqLen: 1024 })) },
  r,
  cpu,
);
const kNew = randomF32(64 * 8 * 128, r);
const slots = new Int32Array(64).map((_, i) => i * 3);
pair('reshapeAndCache 64 tokens x 8 kv heads x 128 e4m3fn', (b) =>
  b.reshapeAndCache({ key: kNew, value: kNew, slotMapping: slots, numTokens: 64, cache: batch.cache }),
);
const attnOut = new Float32Array(4 * 32 * 128);
pair('pagedAttention decode 4 seqs x 1024 ctx, 32/8 heads x 128, e4m3fn', (b) =>
  b.pagedAttention({
    query: batch.query,
    out: attnOut,
    cache: batch.cache,
    queryStartLoc: batch.queryStartLoc,
    seqLens: batch.seqLens,
    blockTables: batch.blockTables,
    maxBlocksPerSeq: batch.maxBlocksPerSeq,
    numSeqs: 4,
    numHeads: 32,
  }),
);

pair('amaxTensor 1M', (b) => b.amaxTensor({ x: big, length: 1 << 20 }));
const heads = new Float32Array(8);
pair('amaxPerHead 1024 tokens x 8 heads x 128', (b) => b.amaxPerHead({ x: big, out: heads, numTokens: 1024, numHeads: 8, headSize: 128 }));
const codes = new Uint8Array(1 << 20);
const sc = Float32Array.of(0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08);
const layout = { granularity: 'head', numHeads: 8, headSize: 128 } as const;
pair('quantizeFp8 1M e4m3fn per head', (b) => b.quantizeFp8({ src: big, out: codes, length: 1 << 20, scales: sc, layout, format: 'e4m3fn' }));
pair('dequantizeFp8 1M e4m3fn per head', (b) => b.dequantizeFp8({ src: codes, out: bigOut, length: 1 << 20, scales: sc, layout, format: 'e4m3fn' }));
