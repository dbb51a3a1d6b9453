/**
 * The vocabulary pass of token sampling (`KernelBackend.sampleBuckets` and `sampleBucketIds`, optional): weigh every
 * logit that can be a candidate after temperature and sum the candidates' weights by weight bucket (1/16 nat wide), so
 * a sampler walks whole buckets for top-p and its draw and lists only the one or two buckets it lands in
 * (`sampleBucketIds`). This is the O(vocabulary) part of sampling; the references below are the definition, and a
 * native backend does the same passes bit for bit.
 *
 * Weights are float32 values (vLLM's sampler also takes its softmax in float32), computed in float64 by a fixed
 * sequence of operations ({@link sampleWeight}) and rounded once: JavaScript and native code (no fused multiply-add)
 * give the same bits.
 * @module
 */
import { KernelError } from './errors.js';
import { checkF32, checkI32 } from './validate.js';

/** Buckets per nat of -ln w. */
export const SAMPLE_BUCKETS_PER_NAT = 16;
/**
 * Tokens this many nats or more below the most likely one (after temperature) are no candidates: their float32
 * weights would leave the normal range (e^-86 = 4.5e-38), and together they hold under n e^-86 of the mass.
 */
export const SAMPLE_MAX_NATS = 86;
/** Weight buckets: bucket k holds the candidates `k / 16 <= -ln w < (k + 1) / 16` nats below the most likely. */
export const SAMPLE_BUCKETS = SAMPLE_MAX_NATS * SAMPLE_BUCKETS_PER_NAT;
/**
 * Ids per chunk of the masses' summation: a bucket's mass is summed chunk by chunk (ids `[c * 8192, (c + 1) * 8192)`,
 * ascending ids within a chunk, from 0), then the chunks' sums are added in chunk order. The bits do not depend on
 * how many threads weigh the chunks, so a native pass may weigh them in parallel.
 */
export const SAMPLE_CHUNK = 8192;

/** Arguments of `sampleBuckets`. */
export interface SampleBucketsArgs {
  /** One row of logits `[vocab]` (processed: biases, penalties and masks applied). */
  readonly logits: Float32Array;
  /** Sampling temperature, finite and `> 0`. */
  readonly temperature: number;
  /** Logit floor: logits below it, and NaN, are no candidates (`-Infinity`: none). */
  readonly lower: number;
  /**
   * Top-k: when `0 < topK < logits.length`, the floor is also the `topK`-th largest logit (NaN never counts;
   * `-Infinity` when fewer than `topK` logits are above `-Infinity`), so ties with it stay. `0` (default): no top-k.
   * A non-negative integer.
   */
  readonly topK?: number;
  /**
   * Candidates also lie within this many nats (after temperature) of the largest logit: the floor becomes
   * `max(lower, max - pruneNats * temperature)`. `Infinity`: no such limit. `>= 0`.
   */
  readonly pruneNats: number;
  /** Candidates also weigh at least this much (the most likely token weighs 1): min-p's floor. Default 0. In `[0, 1]`. */
  readonly minWeight?: number;
  /**
   * Out `[SAMPLE_BUCKETS]`: the total weight of each bucket (float64 sums of the float32 weights): summed in ascending
   * id order within each chunk of {@link SAMPLE_CHUNK} ids, the chunks' sums added in chunk order.
   */
  readonly mass: Float64Array;
}

/** What `sampleBuckets` returns besides `mass`; `max` and `floor` are what `sampleBucketIds` takes back. */
export interface SampleBucketsResult {
  /** Number of candidates. */
  readonly count: number;
  /** Sum of all candidates' weights: the buckets' masses added in float64, bucket 0 first. */
  readonly total: number;
  /** The largest logit (NaN ignored; `-Infinity` when there is none). */
  readonly max: number;
  /** The logit floor the pass applied: `max(lower, k-th largest, max - pruneNats * temperature)`. */
  readonly floor: number;
}

/** Arguments of `sampleBucketIds`: the same row, temperature and min weight as the pass, and its `max` and `floor`. */
export interface SampleBucketIdsArgs {
  /** The logits row the pass weighed. */
  readonly logits: Float32Array;
  /** The pass's temperature. */
  readonly temperature: number;
  /** The pass's `max`. */
  readonly max: number;
  /** The pass's `floor`. */
  readonly floor: number;
  /** The pass's `minWeight` (default 0). */
  readonly minWeight?: number;
  /** The bucket to list, in `[0, SAMPLE_BUCKETS)`, or `-1` for every candidate. */
  readonly bucket: number;
  /** Out `[vocab]`: the bucket's candidate ids, ascending. */
  readonly ids: Int32Array;
  /** Out `[vocab]`: `weight[id]` for each listed id (float32 values; other entries untouched). */
  readonly weight: Float64Array;
}

/** ln 2 split for an exact product n * LN2_HI with |n| < 2^21 (fdlibm's ln2_hi has 32 significant bits) plus the rest. */
const LN2_HI = 6.93147180369123816490e-1;
const LN2_LO = 1.90821492927058770002e-10;
/** 1.5 * 2^52: adding it rounds a float64 in (-2^51, 2^51) to an integer (ties to even). */
const ROUNDER = 6755399441055744;
/** 2^-n for n = 0..127. */
const POW2_NEG = Float64Array.from({ length: 128 }, (_, n) => 2 ** -n);

/**
 * The weight of a candidate `q` nats below the most likely token (`q = (max - l) * (1 / temperature)` in float64, in
 * `[0, SAMPLE_MAX_NATS)`): e^-q by these float64 operations, in this order, without fused multiply-add: x = -q;
 * n = (x log2e + 1.5 2^52) - 1.5 2^52 (x log2e rounded to an integer, ties to even); r = (x - n ln2_hi) - n ln2_lo;
 * p = e^r by Taylor's degree-7 polynomial (Horner from 1/5040; truncation under 6e-9 relative for |r| <= ln2/2); then
 * p 2^n rounded once to float32. Within 1 float32 ulp (plus 6e-9 relative) of e^-q; exactly 1 at q = 0. Native
 * backends evaluate the same operations, so both give the same bits.
 */
export function sampleWeight(q: number): number {
  const x = -q;
  const n = x * Math.LOG2E + ROUNDER - ROUNDER;
  const r = x - n * LN2_HI - n * LN2_LO;
  const p = 1 + r * (1 + r * (0.5 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (1 / 720 + r * (1 / 5040)))))));
  return Math.fround(p * POW2_NEG[-n | 0]!);
}

function checkNumber(name: string, value: unknown): number {
  if (typeof value !== 'number' || Number.isNaN(value)) throw new KernelError('INVALID_ARGUMENT', `${name} must be a number, got ${String(value)}`, { argument: name });
  return value;
}

function checkTemperature(temperature: unknown): void {
  if (typeof temperature !== 'number' || !(temperature > 0) || !Number.isFinite(temperature)) {
    throw new KernelError('INVALID_ARGUMENT', `temperature must be finite and > 0, got ${String(temperature)}`, { argument: 'temperature' });
  }
}

function checkMinWeight(minWeight: unknown): number {
  const m = minWeight ?? 0;
  if (typeof m !== 'number' || !(m >= 0 && m <= 1)) throw new KernelError('INVALID_ARGUMENT', `minWeight must be in [0, 1], got ${String(minWeight)}`, { argument: 'minWeight' });
  return m;
}

function checkArgsObject(args: unknown, op: string): void {
  if (typeof args !== 'object' || args === null) throw new KernelError('INVALID_ARGUMENT', `${op} needs an arguments object`, { argument: 'args' });
}

/**
 * Check {@link SampleBucketsArgs}: array types and sizes, a finite positive temperature, `pruneNats >= 0`, a `lower`
 * that is a number (NaN refused), `topK` a non-negative integer, `minWeight` in `[0, 1]`. Returns the vocabulary size.
 * @throws KernelError `WRONG_ARRAY_TYPE` / `SHAPE_MISMATCH` / `INVALID_ARGUMENT` naming the argument
 */
export function validateSampleBuckets(args: SampleBucketsArgs): number {
  checkArgsObject(args, 'sampleBuckets');
  const n = checkF32('logits', args.logits, 1).length;
  checkTemperature(args.temperature);
  checkNumber('lower', args.lower);
  if (typeof args.pruneNats !== 'number' || !(args.pruneNats >= 0)) throw new KernelError('INVALID_ARGUMENT', `pruneNats must be >= 0, got ${String(args.pruneNats)}`, { argument: 'pruneNats' });
  const topK = args.topK ?? 0;
  if (typeof topK !== 'number' || !Number.isSafeInteger(topK) || topK < 0 || topK > 0x7fffffff) {
    throw new KernelError('INVALID_ARGUMENT', `topK must be an integer in [0, 2^31), got ${String(args.topK)}`, { argument: 'topK' });
  }
  checkMinWeight(args.minWeight);
  checkF64('mass', args.mass, SAMPLE_BUCKETS);
  return n;
}

/**
 * Check {@link SampleBucketIdsArgs}: array types and sizes, temperature, `max` and `floor` numbers, `minWeight` in
 * `[0, 1]`, `bucket` an integer in `[-1, SAMPLE_BUCKETS)`. Returns the vocabulary size.
 * @throws KernelError `WRONG_ARRAY_TYPE` / `SHAPE_MISMATCH` / `INVALID_ARGUMENT` naming the argument
 */
export function validateSampleBucketIds(args: SampleBucketIdsArgs): number {
  checkArgsObject(args, 'sampleBucketIds');
  const n = checkF32('logits', args.logits, 1).length;
  checkTemperature(args.temperature);
  checkNumber('max', args.max);
  checkNumber('floor', args.floor);
  checkMinWeight(args.minWeight);
  const b = args.bucket;
  if (typeof b !== 'number' || !Number.isInteger(b) || b < -1 || b >= SAMPLE_BUCKETS) {
    throw new KernelError('INVALID_ARGUMENT', `bucket must be an integer in [-1, ${SAMPLE_BUCKETS}), got ${String(b)}`, { argument: 'bucket' });
  }
  checkI32('ids', args.ids, n);
  checkF64('weight', args.weight, n);
  return n;
}

function checkF64(name: string, value: unknown, needed: number): void {
  if (!(value instanceof Float64Array) || value.length < needed) {
    throw new KernelError(value instanceof Float64Array ? 'SHAPE_MISMATCH' : 'WRONG_ARRAY_TYPE', `${name} must be a Float64Array of at least ${needed} elements`, { argument: name });
  }
}

/** The largest of `values` (NaN ignored; -Infinity when empty). Its own function: V8 optimizes a hot loop best there. */
function maxOf(values: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < values.length; i++) if (values[i]! > max) max = values[i]!;
  return max;
}

/**
 * The `k`-th largest of `values` (1 <= k <= values.length; NaN never counts; -Infinity when fewer than k values
 * are above -Infinity), by a min-heap of the k largest: O(n log k). The scan tests four values against the heap's
 * floor at a time (one branch for the common case of none above it). Any exact selection gives the same value, so a
 * native pass may select differently.
 */
function kthLargest(values: Float32Array, k: number): number {
  const heap = new Float64Array(k).fill(-Infinity);
  let floor = -Infinity; // heap[0]
  /** Replaces the heap's smallest by `w` (> floor) and sifts it down. */
  const push = (w: number): void => {
    let c = 0;
    for (;;) {
      const l = 2 * c + 1;
      if (l >= k) break;
      const s = l + 1 < k && heap[l + 1]! < heap[l]! ? l + 1 : l;
      if (!(heap[s]! < w)) break;
      heap[c] = heap[s]!;
      c = s;
    }
    heap[c] = w;
    floor = heap[0]!;
  };
  const n = values.length;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const a = values[i]!;
    const b = values[i + 1]!;
    const c = values[i + 2]!;
    const d = values[i + 3]!;
    if (a > floor || b > floor || c > floor || d > floor) {
      if (a > floor) push(a);
      if (b > floor) push(b);
      if (c > floor) push(c);
      if (d > floor) push(d);
    }
  }
  for (; i < n; i++) if (values[i]! > floor) push(values[i]!);
  return floor;
}

/** One chunk's bucket masses (chunks after the first), reused between calls. */
const chunkMass = new Float64Array(SAMPLE_BUCKETS);

/**
 * The candidate rule both passes share, before the weight test: q of logit `l`, the nats it lies below the most likely
 * token (`(max - l) * invT`), when `l >= floor` (NaN never) and `0 <= q < SAMPLE_MAX_NATS`; else -1.
 */
function candidateQ(l: number, floor: number, max: number, invT: number): number {
  if (!(l >= floor)) return -1;
  const q = (max - l) * invT;
  return q >= 0 && q < SAMPLE_MAX_NATS ? q : -1;
}

/**
 * Weigh the candidates of ids `[from, to)` into the bucket masses `into` (added to, ascending ids). Its own function
 * for V8 (see {@link maxOf}). Returns the number of candidates.
 */
function weigh(logits: Float32Array, from: number, to: number, floor: number, max: number, invT: number, minWeight: number, into: Float64Array): number {
  let count = 0;
  for (let i = from; i < to; i++) {
    const q = candidateQ(logits[i]!, floor, max, invT);
    if (q < 0) continue;
    const w = sampleWeight(q);
    if (!(w >= minWeight)) continue;
    into[(q * SAMPLE_BUCKETS_PER_NAT) | 0]! += w;
    count++;
  }
  return count;
}

/**
 * The reference `sampleBuckets` (the definition the native backends match bit for bit): the largest logit `max`, the
 * floor `max(lower, k-th largest logit when 0 < topK < n, max - pruneNats * temperature)`, then for every logit `l` at
 * or above it (NaN never): `q = (max - l) * (1 / temperature)` (float64); a candidate when `0 <= q < SAMPLE_MAX_NATS`
 * and its weight `w = sampleWeight(q) >= minWeight`; its bucket `floor(16 q)`. Each bucket's mass sums its
 * weights in ascending id order within each {@link SAMPLE_CHUNK} ids, then the chunks' sums in chunk order; the total
 * sums the masses, bucket 0 first.
 */
export function sampleBucketsReference(args: SampleBucketsArgs): SampleBucketsResult {
  const n = validateSampleBuckets(args);
  const { logits, temperature, mass } = args;
  const minWeight = args.minWeight ?? 0;
  mass.fill(0, 0, SAMPLE_BUCKETS);
  const max = maxOf(logits.subarray(0, n));
  let floor = args.lower;
  const topK = args.topK ?? 0;
  if (topK > 0 && topK < n) floor = Math.max(floor, kthLargest(logits.subarray(0, n), topK));
  if (args.pruneNats < Infinity && max > -Infinity) floor = Math.max(floor, max - args.pruneNats * temperature);
  const invT = 1 / temperature;
  // The first chunk sums straight into `mass` (from 0); each later chunk into its own masses, added in chunk order.
  let count = weigh(logits, 0, Math.min(n, SAMPLE_CHUNK), floor, max, invT, minWeight, mass);
  for (let from = SAMPLE_CHUNK; from < n; from += SAMPLE_CHUNK) {
    chunkMass.fill(0);
    count += weigh(logits, from, Math.min(n, from + SAMPLE_CHUNK), floor, max, invT, minWeight, chunkMass);
    for (let k = 0; k < SAMPLE_BUCKETS; k++) mass[k]! += chunkMass[k]!;
  }
  let total = 0;
  for (let k = 0; k < SAMPLE_BUCKETS; k++) total += mass[k]!;
  return { count, total, max, floor };
}

/**
 * The reference `sampleBucketIds`: the candidates of one bucket (or all of them, `bucket` -1) under the rule of
 * {@link sampleBucketsReference} with the pass's `max` and `floor`, ascending ids into `ids`, each weight into
 * `weight[id]`. Returns how many.
 */
export function sampleBucketIdsReference(args: SampleBucketIdsArgs): number {
  const n = validateSampleBucketIds(args);
  const { logits, max, floor, bucket, ids, weight } = args;
  const minWeight = args.minWeight ?? 0;
  const invT = 1 / args.temperature;
  // Bucket k holds k <= 16 (max - l) invT < k + 1: logits outside these bounds (widened far past q's rounding) are not
  // in it, without computing q. Every candidate for bucket -1.
  let lo = -Infinity;
  let hi = Infinity;
  if (bucket >= 0 && invT < Infinity && Number.isFinite(max)) {
    const dhi = (bucket + 1) / (SAMPLE_BUCKETS_PER_NAT * invT);
    const eps = 1e-9 * (Math.abs(max) + dhi + 1);
    lo = max - dhi - eps;
    hi = max - bucket / (SAMPLE_BUCKETS_PER_NAT * invT) + eps;
  }
  let count = 0;
  for (let i = 0; i < n; i++) {
    const l = logits[i]!;
    if (l < lo || l > hi) continue;
    const q = candidateQ(l, floor, max, invT);
    if (q < 0 || (bucket >= 0 && ((q * SAMPLE_BUCKETS_PER_NAT) | 0) !== bucket)) continue;
    const w = sampleWeight(q);
    if (!(w >= minWeight)) continue;
    weight[i] = w;
    ids[count++] = i;
  }
  return count;
}
