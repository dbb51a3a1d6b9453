/**
 * Seeded data builders for parity tests: random activations, weights in every dtype, KV caches in every dtype
 * with per-tensor or per-head scales, and varlen attention batches over a shuffled block table.
 * @module
 */
import { isKvQuantDtype, kvPoolBlockLength, type KvLayerCache } from '@kvq/cache';
import { FP8_FORMATS, f32ToBf16Bits, f32ToF16Bits, type Fp8Format } from '@kvq/fp8';
import type { KernelBackend, KvDtype, PagedAttentionArgs, WeightDtype, WeightMatrix } from '../contract.js';
import { quantizeMatrix, type QuantizeOptions } from '../quant/quantize.js';
import { isFp8 } from '../validate.js';

/** A seeded PRNG (mulberry32) returning floats in `[0, 1)`. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal sample from `rnd` (Box–Muller). */
export function normal(rnd: () => number): number {
  const u = Math.max(rnd(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rnd());
}

/** `n` float32 samples of `N(0, std^2)`. */
export function randomF32(n: number, rnd: () => number, std = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = normal(rnd) * std;
  return a;
}

/** Uniform integers in `[0, max)`, as an `Int32Array` of length `n`. */
export function randomInts(n: number, max: number, rnd: () => number): Int32Array {
  const a = new Int32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.floor(rnd() * max);
  return a;
}

/** Fisher–Yates shuffle of `[0, n)`. */
export function permutation(n: number, rnd: () => number): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    const t = p[i]!;
    p[i] = p[j]!;
    p[j] = t;
  }
  return p;
}

/**
 * Encode float32 values `[rows, cols]` as a {@link WeightMatrix} of `dtype`: bf16/f16 rounded to nearest even; the
 * quantized dtypes through `quantizeMatrix` with `options` (`cols` must then be a multiple of the block size).
 */
export function weightFrom(
  dtype: WeightDtype,
  values: Float32Array,
  rows: number,
  cols: number,
  options?: QuantizeOptions,
): WeightMatrix {
  if (dtype === 'f32') return { dtype, data: values, rows, cols };
  if (dtype !== 'bf16' && dtype !== 'f16') return quantizeMatrix(values, rows, cols, dtype, options);
  const data = new Uint16Array(values.length);
  const enc = dtype === 'bf16' ? f32ToBf16Bits : f32ToF16Bits;
  for (let i = 0; i < values.length; i++) data[i] = enc(values[i]!);
  return { dtype, data, rows, cols };
}

/**
 * A random `[rows, cols]` weight with entries `N(0, 1/cols)` (so `x W^T` stays O(1) for unit inputs), stored as
 * `dtype` (quantized dtypes: see {@link weightFrom}).
 */
export function randomWeight(
  dtype: WeightDtype,
  rows: number,
  cols: number,
  rnd: () => number,
  options?: QuantizeOptions,
): WeightMatrix {
  return weightFrom(dtype, randomF32(rows * cols, rnd, 1 / Math.sqrt(cols)), rows, cols, options);
}

/** Options of {@link makeKvCache}. */
export interface KvCacheSpec {
  readonly dtype: KvDtype;
  /** The V pool's dtype (a mixed K/V cache). Default `dtype`. */
  readonly valueDtype?: KvDtype;
  readonly numBlocks: number;
  readonly blockSize: number;
  readonly numKvHeads: number;
  readonly headSize: number;
  /** Query heads (sizes `qScale` when `scales` is `'head'`). Default `numKvHeads`. */
  readonly numHeads?: number;
  /** K/V/Q scale granularity. Default `'tensor'`. */
  readonly scales?: 'tensor' | 'head';
  /** Value range the scales are fitted to: scale = `amax / maxFinite(format)`. Default 4. */
  readonly amax?: number;
}

/**
 * A zero-filled {@link KvLayerCache} (any dtype). FP8 caches get scales fitted to `amax` (per head: a spread of
 * different scales, `amax * (0.5 .. 1.5) / maxFinite`), so per-head indexing mistakes change results.
 */
export function makeKvCache(spec: KvCacheSpec): KvLayerCache {
  const { dtype, numBlocks, blockSize, numKvHeads, headSize } = spec;
  const valueDtype = spec.valueDtype ?? dtype;
  const numHeads = spec.numHeads ?? numKvHeads;
  // write-time-scaled dtypes: byte pools of whole blocks (codes and scales, `kvPoolBlockLength`)
  const make = (d: KvDtype): Float32Array | Uint16Array | Uint8Array => {
    const n = numBlocks * kvPoolBlockLength({ dtype: d, blockSize, numKvHeads, headSize });
    return d === 'f32' ? new Float32Array(n) : d === 'bf16' || d === 'f16' ? new Uint16Array(n) : new Uint8Array(n);
  };
  // nvfp4's tensor scale maps the amax to E4M3's 448 times E2M1's 6; the other write-time-scaled dtypes ignore it
  const maxOf = (d: KvDtype): number => (isFp8(d) ? FP8_FORMATS[d as Fp8Format].maxFinite : isKvQuantDtype(d) ? 448 * 6 : 448);
  const amax = spec.amax ?? 4;
  const scales = (count: number, salt: number, max: number): Float32Array => {
    const s = new Float32Array(spec.scales === 'head' ? count : 1);
    for (let i = 0; i < s.length; i++) s[i] = (amax * (s.length === 1 ? 1 : 0.5 + ((i * 7 + salt) % 11) / 10)) / max;
    return s;
  };
  return {
    dtype,
    valueDtype,
    numBlocks,
    blockSize,
    numKvHeads,
    headSize,
    key: make(dtype),
    value: make(valueDtype),
    kScale: scales(numKvHeads, 1, maxOf(dtype)),
    vScale: scales(numKvHeads, 4, maxOf(valueDtype)),
    qScale: scales(numHeads, 2, maxOf(dtype)),
  };
}

/**
 * Fills both pools of `c` with a fixed pattern (float32 pools `i % 13`, 16-bit pools `(i * 37) & 0x3fff`, byte pools
 * `(i * 37) & 0x7f`: finite values of every dtype), the pre-existing content a write must leave where it writes no
 * token. Returns `c`.
 */
export function fillKvPools(c: KvLayerCache): KvLayerCache {
  for (const pool of [c.key, c.value]) {
    const mask = pool instanceof Float32Array ? 0 : pool instanceof Uint16Array ? 0x3fff : 0x7f;
    for (let i = 0; i < pool.length; i++) pool[i] = mask === 0 ? i % 13 : (i * 37) & mask;
  }
  return c;
}

/** A deep copy of a cache (pools and scales), for comparing two backends' writes. */
export function cloneKvCache(c: KvLayerCache): KvLayerCache {
  return {
    ...c,
    key: c.key.slice(),
    value: c.value.slice(),
    kScale: c.kScale.slice(),
    vScale: c.vScale.slice(),
    qScale: c.qScale.slice(),
  };
}

/** One sequence of a varlen attention batch: `queryLen` new tokens at the end of a `seqLen`-token context. */
export interface SeqSpec {
  readonly queryLen: number;
  readonly seqLen: number;
}

/** A complete, filled attention batch (see {@link buildAttentionBatch}). */
export interface AttentionBatch {
  readonly cache: KvLayerCache;
  readonly query: Float32Array;
  readonly queryStartLoc: Int32Array;
  readonly seqLens: Int32Array;
  readonly blockTables: Int32Array;
  readonly maxBlocksPerSeq: number;
  readonly numSeqs: number;
  readonly numHeads: number;
  readonly numTokens: number;
  /** Unpaged float32 keys of every sequence, `[seqLen, numKvHeads, headSize]` each (before quantization). */
  readonly keys: readonly Float32Array[];
  /** Unpaged float32 values, like {@link keys}. */
  readonly values: readonly Float32Array[];
}

/**
 * The {@link PagedAttentionArgs} of a batch, without `out` (and without the options a test adds: `softmaxScale`,
 * `slidingWindow`, `fp8Query`).
 */
export function attentionArgs(batch: AttentionBatch): Omit<PagedAttentionArgs, 'out'> {
  return {
    query: batch.query,
    cache: batch.cache,
    queryStartLoc: batch.queryStartLoc,
    seqLens: batch.seqLens,
    blockTables: batch.blockTables,
    maxBlocksPerSeq: batch.maxBlocksPerSeq,
    numSeqs: batch.numSeqs,
    numHeads: batch.numHeads,
  };
}

/** Options of {@link buildAttentionBatch}. */
export interface AttentionBatchSpec extends Omit<KvCacheSpec, 'numBlocks'> {
  readonly numHeads: number;
  readonly seqs: readonly SeqSpec[];
  /** Standard deviation of K, V and Q entries. Default 1. */
  readonly std?: number;
  /** Spare blocks beyond those needed (they stay zero / unused). Default 3. */
  readonly spareBlocks?: number;
}

/**
 * Build a varlen attention batch: random K/V for every context position of every sequence, written into a fresh
 * cache through `writer.reshapeAndCache` (pass the reference backend to isolate attention from cache writes),
 * with each sequence's blocks drawn from a shuffled pool (so block ids are non-contiguous and interleaved),
 * plus random queries for the new tokens.
 */
export function buildAttentionBatch(spec: AttentionBatchSpec, rnd: () => number, writer: KernelBackend): AttentionBatch {
  const { blockSize, numKvHeads, headSize, numHeads, seqs } = spec;
  const std = spec.std ?? 1;
  const blocksPer = seqs.map((s) => Math.ceil(s.seqLen / blockSize));
  const maxBlocksPerSeq = Math.max(1, ...blocksPer);
  const totalBlocks = blocksPer.reduce((a, b) => a + b, 0);
  const numBlocks = totalBlocks + (spec.spareBlocks ?? 3);
  const cache = makeKvCache({ ...spec, numBlocks, amax: spec.amax ?? 4 * std });
  const order = permutation(numBlocks, rnd);
  const blockTables = new Int32Array(seqs.length * maxBlocksPerSeq).fill(-1);
  let next = 0;
  seqs.forEach((_, s) => {
    for (let b = 0; b < blocksPer[s]!; b++) blockTables[s * maxBlocksPerSeq + b] = order[next++]!;
  });
  const tokenSize = numKvHeads * headSize;
  const keys: Float32Array[] = [];
  const values: Float32Array[] = [];
  seqs.forEach((sq, s) => {
    const k = randomF32(sq.seqLen * tokenSize, rnd, std);
    const v = randomF32(sq.seqLen * tokenSize, rnd, std);
    keys.push(k);
    values.push(v);
    const slotMapping = new Int32Array(sq.seqLen);
    for (let p = 0; p < sq.seqLen; p++) {
      slotMapping[p] = blockTables[s * maxBlocksPerSeq + Math.floor(p / blockSize)]! * blockSize + (p % blockSize);
    }
    writer.reshapeAndCache({ key: k, value: v, slotMapping, numTokens: sq.seqLen, cache });
  });
  const queryStartLoc = new Int32Array(seqs.length + 1);
  seqs.forEach((sq, s) => {
    queryStartLoc[s + 1] = queryStartLoc[s]! + sq.queryLen;
  });
  const numTokens = queryStartLoc[seqs.length]!;
  return {
    cache,
    query: randomF32(numTokens * numHeads * headSize, rnd, std),
    queryStartLoc,
    seqLens: Int32Array.from(seqs, (s) => s.seqLen),
    blockTables,
    maxBlocksPerSeq,
    numSeqs: seqs.length,
    numHeads,
    numTokens,
    keys,
    values,
  };
}
