/**
 * The vocabulary pass of token sampling (`KernelBackend.sampleBuckets`, optional): weigh every logit that can be a
 * candidate after temperature, and group the candidates by weight bucket (a counting sort), so a sampler walks whole
 * buckets for top-p and its draw and sorts only the one or two buckets it lands in. This is the O(vocabulary) part of
 * sampling; the reference below is the definition, and a native backend does the same pass bit for bit.
 * @module
 */
import { KernelError } from './errors.js';
import { checkF32, checkI32 } from './validate.js';

/** Weight buckets: -ln w up to 256 nats at 1/16 nat each; lighter weights share the last bucket. */
export const SAMPLE_BUCKETS = 4096;
/** Buckets per nat of -ln w. */
export const SAMPLE_BUCKETS_PER_NAT = 16;
/**
 * Ids per chunk of the masses' summation: a bucket's mass is summed chunk by chunk (ids `[c * 8192, (c + 1) * 8192)`,
 * ascending ids within a chunk, from 0), then the chunks' sums are added in chunk order. The bits do not depend on
 * how many threads weigh the chunks, so a native pass may weigh them in parallel.
 */
export const SAMPLE_CHUNK = 8192;

/** Arguments of `sampleBuckets`. Outputs are written in place; `weight`/`ids` have at least `logits.length` entries. */
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
  /** Out `[vocab]`: `weight[i] = e^((logits[i] - max) / temperature)` at every candidate id (other entries unspecified). */
  readonly weight: Float64Array;
  /** Out `[vocab]`: the candidate ids (weight > 0) grouped by bucket, bucket 0 first, ascending ids within a bucket. */
  readonly ids: Int32Array;
  /** Out `[SAMPLE_BUCKETS + 1]`: bucket `k` is `ids[start[k] .. start[k + 1])`; `start[0] = 0`. */
  readonly start: Int32Array;
  /**
   * Out `[SAMPLE_BUCKETS]`: the total weight of each bucket (float64): summed in ascending id order within each chunk
   * of {@link SAMPLE_CHUNK} ids, the chunks' sums added in chunk order.
   */
  readonly mass: Float64Array;
}

/** What `sampleBuckets` returns besides its outputs. */
export interface SampleBucketsResult {
  /** Number of candidates (`start[SAMPLE_BUCKETS]`). */
  readonly count: number;
  /** Sum of all candidates' weights: the buckets' masses added in float64, bucket 0 first. */
  readonly total: number;
  /** The largest logit (NaN ignored; `-Infinity` when there is none). */
  readonly max: number;
}

/**
 * Check {@link SampleBucketsArgs}: array types and sizes, a finite positive temperature, `pruneNats >= 0`, a `lower`
 * that is a number (NaN refused).
 * @throws KernelError `WRONG_ARRAY_TYPE` / `SHAPE_MISMATCH` / `INVALID_ARGUMENT` naming the argument
 */
export function validateSampleBuckets(args: SampleBucketsArgs): number {
  if (typeof args !== 'object' || args === null) throw new KernelError('INVALID_ARGUMENT', 'sampleBuckets needs an arguments object', { argument: 'args' });
  const n = checkF32('logits', args.logits, 1).length;
  const { temperature, lower, pruneNats } = args;
  if (typeof temperature !== 'number' || !(temperature > 0) || !Number.isFinite(temperature)) {
    throw new KernelError('INVALID_ARGUMENT', `temperature must be finite and > 0, got ${String(temperature)}`, { argument: 'temperature' });
  }
  if (typeof lower !== 'number' || Number.isNaN(lower)) throw new KernelError('INVALID_ARGUMENT', `lower must be a number, got ${String(lower)}`, { argument: 'lower' });
  if (typeof pruneNats !== 'number' || !(pruneNats >= 0)) throw new KernelError('INVALID_ARGUMENT', `pruneNats must be >= 0, got ${String(pruneNats)}`, { argument: 'pruneNats' });
  const topK = args.topK ?? 0;
  if (typeof topK !== 'number' || !Number.isSafeInteger(topK) || topK < 0 || topK > 0x7fffffff) {
    throw new KernelError('INVALID_ARGUMENT', `topK must be an integer in [0, 2^31), got ${String(args.topK)}`, { argument: 'topK' });
  }
  if (!(args.weight instanceof Float64Array) || args.weight.length < n) {
    throw new KernelError(args.weight instanceof Float64Array ? 'SHAPE_MISMATCH' : 'WRONG_ARRAY_TYPE', `weight must be a Float64Array of at least ${n} elements`, { argument: 'weight' });
  }
  checkI32('ids', args.ids, n);
  checkI32('start', args.start, SAMPLE_BUCKETS + 1);
  if (!(args.mass instanceof Float64Array) || args.mass.length < SAMPLE_BUCKETS) {
    throw new KernelError(args.mass instanceof Float64Array ? 'SHAPE_MISMATCH' : 'WRONG_ARRAY_TYPE', `mass must be a Float64Array of at least ${SAMPLE_BUCKETS} elements`, { argument: 'mass' });
  }
  return n;
}

/**
 * 2^(j/64), j = 0..63, for {@link expNonPositive}, as V8 computes them. A native `sampleBuckets` takes this very table
 * (a C library's `pow` differs from V8's in the last bit for 10 of the 64 entries). Do not modify.
 */
export const SAMPLE_EXP2_FRAC: Float64Array = Float64Array.from({ length: 64 }, (_, j) => 2 ** (j / 64));
const EXP2_FRAC = SAMPLE_EXP2_FRAC;
/** 2^m for m = -1099..0 (0 below -1074), for {@link expNonPositive}. */
const EXP2_INT = Float64Array.from({ length: 1100 }, (_, i) => 2 ** (i - 1099));
/** ln 2 / 64 split for an exact product with |n| < 2^21 (fdlibm's ln2_hi has 32 significant bits) plus the rest. */
const LN2_64_HI = 6.93147180369123816490e-1 / 64;
const LN2_64_LO = 1.90821492927058770002e-10 / 64;

/**
 * e^x for x <= 0 (NaN stays NaN; below -745.2 gives 0), within ~2 ulp of `Math.exp` for normal results (subnormal
 * results, below e^-708, round as their reduced precision allows). x = n ln2/64 + r with |r| <= ln2/128 (plus
 * rounding), e^x = 2^(n >> 6) * 2^((n & 63)/64) * e^r, e^r by a degree-5 Taylor polynomial (truncation r^6/720 <
 * 4e-17). The sampler's weights: 6-7 ns a call where V8's `Math.exp` (a call out of JIT code) took 16-24; the native
 * CPU backend evaluates the same operations in the same order (no contraction), so both give the same bits.
 */
export function expNonPositive(x: number): number {
  if (!(x > -745.2)) return x === x ? 0 : x;
  // n = x * 64/ln2 rounded (to within 1/2; `| 0` truncates towards 0, so -0.5 first: V8's Math.round is a call).
  const n = (x * (64 / Math.LN2) - 0.5) | 0;
  const r = x - n * LN2_64_HI - n * LN2_64_LO;
  const p = 1 + r * (1 + r * (0.5 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120)))));
  return EXP2_INT[(n >> 6) + 1099]! * (EXP2_FRAC[n & 63]! * p);
}

/** Candidate scratch of the reference (ids in ascending order and their buckets), reused between calls. */
let scratchIds = new Int32Array(0);
let scratchBucket = new Int32Array(0);
/** One chunk's bucket masses (chunks after the first), reused between calls. */
const chunkMass = new Float64Array(SAMPLE_BUCKETS);

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

/**
 * Weigh the candidates of ids `[from, to)` (ascending ids) into `weight`, `scratchIds` from `live` on, their buckets and
 * the bucket counts (in `start[k + 1]`) and masses (`into`, added to from its current values). Its own function for
 * V8 (see {@link maxOf}). Returns the new candidate count.
 */
function weigh(logits: Float32Array, from: number, to: number, floor: number, max: number, temperature: number, weight: Float64Array, start: Int32Array, into: Float64Array, live: number): number {
  const invT = 1 / temperature;
  const scale = SAMPLE_BUCKETS_PER_NAT / temperature;
  for (let i = from; i < to; i++) {
    const l = logits[i]!;
    if (!(l >= floor)) continue; // below the floor, or NaN
    const w = expNonPositive((l - max) * invT);
    weight[i] = w;
    if (w > 0) {
      // -ln w = (max - l) / T, without a logarithm; `| 0` floors it (d >= 0).
      const d = (max - l) * scale;
      const k = d < SAMPLE_BUCKETS - 1 ? d | 0 : SAMPLE_BUCKETS - 1;
      scratchIds[live] = i;
      scratchBucket[live++] = k;
      start[k + 1]!++;
      into[k]! += w;
    }
  }
  return live;
}

/**
 * The reference `sampleBuckets` (the definition the native backends match bit for bit): the largest logit, the
 * floor `max(lower, k-th largest logit when 0 < topK < n, max - pruneNats * temperature)`, then for every logit at or above it (NaN never) its weight
 * `expNonPositive((l - max) * (1 / temperature))` and, when that is > 0, its bucket `min(4095, floor((max - l) *
 * (16 / temperature)))`; each bucket's mass sums its weights in ascending id order within each {@link SAMPLE_CHUNK}
 * ids, then the chunks' sums in chunk order; the total sums the masses
 * (bucket 0 first), and candidates are grouped by bucket, ascending ids within one.
 */
export function sampleBucketsReference(args: SampleBucketsArgs): SampleBucketsResult {
  const n = validateSampleBuckets(args);
  const { logits, temperature, weight, ids, start, mass } = args;
  if (scratchIds.length < n) {
    scratchIds = new Int32Array(n);
    scratchBucket = new Int32Array(n);
  }
  start.fill(0, 0, SAMPLE_BUCKETS + 1);
  mass.fill(0, 0, SAMPLE_BUCKETS);
  const max = maxOf(logits.subarray(0, n));
  let floor = args.lower;
  const topK = args.topK ?? 0;
  if (topK > 0 && topK < n) floor = Math.max(floor, kthLargest(logits.subarray(0, n), topK));
  if (args.pruneNats < Infinity && max > -Infinity) floor = Math.max(floor, max - args.pruneNats * temperature);
  // The first chunk sums straight into `mass` (from 0); each later chunk into its own masses, added in chunk order.
  // No candidate lies in a bucket above `top` (l >= floor, and rounding is monotonic), so only buckets 0..top are
  // touched (all of them when the floor is -Infinity; NaN compares false).
  const reach = (max - floor) * (SAMPLE_BUCKETS_PER_NAT / temperature);
  const top = reach < SAMPLE_BUCKETS - 1 ? Math.floor(reach) : SAMPLE_BUCKETS - 1;
  let live = weigh(logits, 0, Math.min(n, SAMPLE_CHUNK), floor, max, temperature, weight, start, mass, 0);
  for (let from = SAMPLE_CHUNK; from < n; from += SAMPLE_CHUNK) {
    chunkMass.fill(0, 0, top + 1);
    live = weigh(logits, from, Math.min(n, from + SAMPLE_CHUNK), floor, max, temperature, weight, start, chunkMass, live);
    for (let k = 0; k <= top; k++) mass[k]! += chunkMass[k]!;
  }
  // The total from the masses (bucket 0 first): a chain of 4096 additions instead of one per candidate, so a native
  // pass need not serialize its weighing on it.
  let total = 0;
  for (let k = 0; k < SAMPLE_BUCKETS; k++) total += mass[k]!;
  for (let k = 0; k < SAMPLE_BUCKETS; k++) start[k + 1]! += start[k]!;
  // Stable scatter: ascending ids within each bucket.
  const next = start.slice(0, SAMPLE_BUCKETS);
  for (let j = 0; j < live; j++) ids[next[scratchBucket[j]!]!++] = scratchIds[j]!;
  return { count: live, total, max };
}
