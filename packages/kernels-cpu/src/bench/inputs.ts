/**
 * Inputs shared by the benchmarks (`*.bench.ts`) and their companion test (`inputs.test.ts`, which proves the
 * native results on exactly these inputs match the reference).
 * @module
 */
import type { KernelBackend, KvDtype, PagedAttentionArgs, WeightDtype, WeightMatrix } from '@kvq/kernels';
import { buildAttentionBatch, randomF32, randomWeight, rng } from '@kvq/kernels/testing';

/** Decode-attention benchmark shape: 8 query heads over 2 kv heads (GQA 4), block size 16. */
const ATTN_HEADS = { numHeads: 8, numKvHeads: 2, blockSize: 16 } as const;

/** Context lengths and head sizes of the decode-attention benchmark. */
export const ATTN_CONTEXTS = [512, 4096, 16384] as const;
export const ATTN_HEAD_SIZES = [64, 128] as const;
/** KV dtypes compared (FP8 = e4m3fn, vLLM's `fp8`). */
export const ATTN_DTYPES: readonly KvDtype[] = ['f32', 'bf16', 'e4m3fn'];

/**
 * One decode step (1 query token) of one sequence with `ctx` tokens of context in a shuffled paged cache, the
 * cache written through `writer.reshapeAndCache` (so FP8 codes are real quantized normals, per-head scales).
 */
export function decodeAttentionArgs(dtype: KvDtype, ctx: number, headSize: number, writer: KernelBackend): PagedAttentionArgs {
  const { numHeads, numKvHeads, blockSize } = ATTN_HEADS;
  const b = buildAttentionBatch(
    { dtype, scales: 'head', blockSize, numKvHeads, headSize, numHeads, seqs: [{ queryLen: 1, seqLen: ctx }], spareBlocks: 1 },
    rng(ctx * 1000 + headSize),
    writer,
  );
  return {
    query: b.query,
    out: new Float32Array(numHeads * headSize),
    cache: b.cache,
    queryStartLoc: b.queryStartLoc,
    seqLens: b.seqLens,
    blockTables: b.blockTables,
    maxBlocksPerSeq: b.maxBlocksPerSeq,
    numSeqs: 1,
    numHeads,
  };
}

/** Layers of the streaming decode-attention benchmark (Llama-3-8B's 32). */
export const ATTN_STREAM_LAYERS = 32;

/**
 * One decode step's attention over `layers` distinct layer caches (copies of {@link decodeAttentionArgs}' cache at
 * different addresses), run in order as a forward pass does: each layer's K/V is read once per step, so beyond a
 * few MiB in all it comes from DRAM rather than from a cache the previous call just warmed.
 */
export function decodeAttentionLayerArgs(
  dtype: KvDtype,
  ctx: number,
  headSize: number,
  writer: KernelBackend,
  layers: number = ATTN_STREAM_LAYERS,
): PagedAttentionArgs[] {
  const first = decodeAttentionArgs(dtype, ctx, headSize, writer);
  const out: PagedAttentionArgs[] = [first];
  for (let l = 1; l < layers; l++) {
    const c = first.cache;
    out.push({ ...first, cache: { ...c, key: c.key.slice(), value: c.value.slice() }, out: new Float32Array(first.out.length) });
  }
  return out;
}

/** Bytes of K and V that one decode step reads for a sequence of `ctx` tokens (one layer). */
export function attentionKvBytes(dtype: KvDtype, ctx: number, headSize: number): number {
  const elem = dtype === 'f32' ? 4 : dtype === 'bf16' || dtype === 'f16' ? 2 : 1;
  return 2 * ctx * ATTN_HEADS.numKvHeads * headSize * elem;
}

/** GEMV / GEMM benchmark shapes: a 4096 x 4096 projection (Llama-7B-like), decode (1 row) and prefill (128 rows). */
export const LINEAR_SHAPE = { out: 4096, in: 4096 } as const;
export const LINEAR_DTYPES: readonly WeightDtype[] = ['f32', 'bf16', 'f16'];

export interface LinearInputs {
  readonly x: Float32Array;
  readonly weight: WeightMatrix;
  readonly out: Float32Array;
  readonly rows: number;
}

/** Random activations and a random weight in `dtype`, for `rows` input rows. */
export function linearInputs(dtype: WeightDtype, rows: number, outF: number = LINEAR_SHAPE.out, inF: number = LINEAR_SHAPE.in): LinearInputs {
  const r = rng(rows * 7 + outF);
  return { x: randomF32(rows * inF, r), weight: randomWeight(dtype, outF, inF, r), out: new Float32Array(rows * outF), rows };
}

/** Bytes of a weight matrix's data (what a decode GEMV must stream from memory once). */
export function weightBytes(w: WeightMatrix): number {
  return w.data.byteLength;
}
