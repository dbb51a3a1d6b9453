/**
 * Inputs shared by `backend.bench.ts` and its companion test (which proves the benchmarked calls compute the
 * right thing). Not exported from the package.
 * @module
 */
import type { KernelBackend, KvDtype, LinearArgs, PagedAttentionArgs } from '../contract.js';
import { buildAttentionBatch, randomF32, randomWeight, rng } from '../testing/random.js';

/** A decode-shaped linear layer (1 row, 1024 -> 1024) in `dtype`. */
export function linearInput(dtype: 'f32' | 'bf16'): LinearArgs {
  const r = rng(42);
  return { x: randomF32(1024, r), weight: randomWeight(dtype, 1024, 1024, r), out: new Float32Array(1024), rows: 1 };
}

/**
 * The plain float32 baseline the reference linear is compared with: a single dot-product loop over a
 * Float32Array weight (what any JS implementation costs at minimum).
 */
export function baselineLinear(x: Float32Array, w: Float32Array, out: Float32Array, n: number, k: number): void {
  for (let o = 0; o < n; o++) {
    let acc = 0;
    for (let i = 0; i < k; i++) acc += x[i]! * w[o * k + i]!;
    out[o] = acc;
  }
}

/** A decode batch: 4 sequences of 512 tokens, 8 query heads over 2 kv heads of 64, block size 16. */
export function decodeInput(dtype: KvDtype, writer: KernelBackend): PagedAttentionArgs {
  const b = buildAttentionBatch(
    { dtype, scales: 'head', blockSize: 16, numKvHeads: 2, headSize: 64, numHeads: 8, seqs: Array(4).fill({ queryLen: 1, seqLen: 512 }) },
    rng(7),
    writer,
  );
  return { ...b, out: new Float32Array(b.query.length) };
}
