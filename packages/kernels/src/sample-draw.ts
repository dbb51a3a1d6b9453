/**
 * One token drawn from a logits row (`KernelBackend.sampleDraw`, optional): the vocabulary pass of
 * `./sample-buckets.ts`, then top-p's cut and the draw, walking whole weight buckets by their masses and listing only
 * the bucket where the cut or the draw lands, whose crossing token is found by a quickselect descent
 * (`./sample-crossing.ts`) instead of a sort. {@link sampleDrawReference} is the definition; a native backend does the
 * same operations in the same order (float64 sums included), so it draws the same token for the same `u`.
 *
 * The result is the token vLLM's sampler would give for the same uniform draw, up to the rounding of cumulative sums:
 * the candidates sorted most likely first, top-p dropping from the least likely end every token at which the
 * cumulative mass is still `<= 1 - topP` (the most likely token always stays), then the first token at which the
 * cumulative probability of what is kept exceeds `u`.
 * @module
 */
import { KernelError } from './errors.js';
import { SAMPLE_BUCKETS, sampleBucketIdsReference, sampleBucketsReference, validateSampleBuckets, type SampleBucketIdsArgs } from './sample-buckets.js';
import { firstCrossing } from './sample-crossing.js';

/** Arguments of `sampleDraw`. */
export interface SampleDrawArgs {
  /** One row of logits `[vocab]` (processed: biases, penalties and masks applied). */
  readonly logits: Float32Array;
  /** Sampling temperature, finite and `> 0`. */
  readonly temperature: number;
  /** Top-k as `SampleBucketsArgs.topK` (`0`, the default: none). */
  readonly topK?: number;
  /** Top-p, in `(0, 1]` (`1`, the default: none). */
  readonly topP?: number;
  /** Min-p's weight floor as `SampleBucketsArgs.minWeight` (default 0). */
  readonly minWeight?: number;
  /** As `SampleBucketsArgs.pruneNats`: candidates lie within this many nats (after temperature) of the largest logit. */
  readonly pruneNats: number;
  /** The uniform draw, in `[0, 1)`. */
  readonly u: number;
}

/**
 * At most this many candidates are listed at once (one listing of every candidate) instead of bucket by bucket: top-k's
 * usual case.
 */
export const SAMPLE_SMALL_SET = 1024;

/**
 * Check {@link SampleDrawArgs}: the arguments `sampleBuckets` checks (see `validateSampleBuckets`), `topP` in `(0, 1]`
 * and `u` in `[0, 1)`. Returns the vocabulary size.
 * @throws KernelError `WRONG_ARRAY_TYPE` / `SHAPE_MISMATCH` / `INVALID_ARGUMENT` naming the argument
 */
export function validateSampleDraw(args: SampleDrawArgs): number {
  if (typeof args !== 'object' || args === null) throw new KernelError('INVALID_ARGUMENT', 'sampleDraw needs an arguments object', { argument: 'args' });
  const n = validateSampleBuckets({ logits: args.logits, temperature: args.temperature, lower: -Infinity, topK: args.topK, pruneNats: args.pruneNats, minWeight: args.minWeight, mass: scratch.mass });
  const topP = args.topP ?? 1;
  if (typeof topP !== 'number' || !(topP > 0 && topP <= 1)) throw new KernelError('INVALID_ARGUMENT', `topP must be in (0, 1], got ${String(args.topP)}`, { argument: 'topP' });
  if (typeof args.u !== 'number' || !(args.u >= 0 && args.u < 1)) throw new KernelError('INVALID_ARGUMENT', `u must be in [0, 1), got ${String(args.u)}`, { argument: 'u' });
  return n;
}

/**
 * The reference's scratch, grown to the largest vocabulary seen and reused (fresh vocabulary-sized arrays each token
 * cost allocation, zeroing and garbage collection comparable to the pass itself). JavaScript runs one call at a time.
 */
const scratch = {
  weight: new Float64Array(0),
  members: new Int32Array(0),
  tail: new Int32Array(0),
  mass: new Float64Array(SAMPLE_BUCKETS),
};

/**
 * The reference `sampleDraw`: the token drawn by `u` from the candidates of `sampleBucketsReference` (after
 * temperature, min-p, top-k and the pruning), cut by top-p; -1 when there is no candidate (every logit NaN or -inf).
 * Top-p: whole buckets go from the least likely end while their masses stay `<= (1 - topP) total (1 - 1e-9)`; in the
 * bucket where the cumulative mass crosses `(1 - topP) total`, the tokens walked (least likely first) before the
 * crossing go (in bucket 0 the most likely token always stays). The draw: `t = u` times the kept mass; whole buckets,
 * most likely first, while `t - mass >= 0`; in the bucket it lands in, the first token (most likely first, lower id
 * first among equal weights) whose cumulative weight exceeds what is left of `t`. With at most
 * {@link SAMPLE_SMALL_SET} candidates the cut and the draw walk all of them at once instead.
 */
export function sampleDrawReference(args: SampleDrawArgs): number {
  const n = validateSampleDraw(args);
  if (scratch.weight.length < n) {
    scratch.weight = new Float64Array(n);
    scratch.members = new Int32Array(n);
    scratch.tail = new Int32Array(n);
  }
  const { weight, members, tail, mass } = scratch;
  const logits = args.logits.length === n ? args.logits : args.logits.subarray(0, n);
  const { temperature, pruneNats, u } = args;
  const minWeight = args.minWeight ?? 0;
  const topP = args.topP ?? 1;
  const c = sampleBucketsReference({ logits, temperature, lower: -Infinity, topK: args.topK ?? 0, pruneNats, minWeight, mass });
  if (c.count === 0) return -1;
  const list: { -readonly [K in keyof SampleBucketIdsArgs]: SampleBucketIdsArgs[K] } = { logits, temperature, max: c.max, floor: c.floor, minWeight, bucket: -1, ids: members, weight };
  /** Lists bucket k's candidates (-1: all) into `into` (from 0) and their weights into `weight`; returns how many. */
  const load = (k: number, into: Int32Array): number => {
    list.bucket = k;
    list.ids = into;
    return sampleBucketIdsReference(list);
  };
  if (c.count <= SAMPLE_SMALL_SET) return drawFromAll(members, weight, load(-1, members), c.total, topP, u);
  // Top-p's cut: lastBucket is the least likely bucket kept; tailCount the tokens kept of it when it is cut (in
  // `tail`), -1 when it is whole and not listed yet.
  let lastBucket = SAMPLE_BUCKETS - 1;
  while (lastBucket > 0 && mass[lastBucket] === 0) lastBucket--;
  let tailCount = -1;
  if (topP < 1 && c.count > 1) {
    const limit = (1 - topP) * c.total;
    let cumulative = 0;
    for (let k = lastBucket; k >= 0; k--) {
      if (mass[k] === 0) continue;
      if (k > 0 && cumulative + mass[k]! <= limit * (1 - 1e-9)) {
        cumulative += mass[k]!;
        continue;
      }
      const m = load(k, members);
      const x = firstCrossing(members, 0, m, weight, limit - cumulative, 'asc');
      if (x.at < 0 && k > 0) {
        cumulative += x.before; // the whole bucket went; the cut continues above it
        continue;
      }
      // The crossing token and every token after it in the walk stay (none crossed in bucket 0: its most likely token).
      const from = x.at < 0 ? m - 1 : x.at;
      tail.set(members.subarray(from, m));
      tailCount = m - from;
      lastBucket = k;
      break;
    }
  }
  let keptTotal = 0;
  for (let k = 0; k < lastBucket; k++) keptTotal += mass[k]!;
  if (tailCount < 0) keptTotal += mass[lastBucket]!;
  else for (let j = 0; j < tailCount; j++) keptTotal += weight[tail[j]!]!;
  let t = u * keptTotal;
  for (let k = 0; k < lastBucket; k++) {
    if (mass[k] === 0 || t - mass[k]! >= 0) {
      t -= mass[k]!;
      continue;
    }
    const m = load(k, members);
    const x = firstCrossing(members, 0, m, weight, t, 'desc');
    if (x.at >= 0) return members[x.at]!;
    t -= x.before; // rounding: the bucket's mass and its walk differ in the last bits
  }
  if (tailCount < 0) tailCount = load(lastBucket, tail);
  const x = firstCrossing(tail, 0, tailCount, weight, t, 'desc');
  return tail[x.at < 0 ? tailCount - 1 : x.at]!;
}

/**
 * The cut and the draw over all `m` candidates at once (`members[0 .. m)`, weights in `weight`), `total` their mass:
 * top-p's crossing least likely first, then the draw's most likely first among the kept.
 */
function drawFromAll(members: Int32Array, weight: Float64Array, m: number, total: number, topP: number, u: number): number {
  let from = 0; // members[from .. m) are kept
  if (topP < 1 && m > 1) {
    const x = firstCrossing(members, 0, m, weight, (1 - topP) * total, 'asc');
    from = x.at < 0 ? m - 1 : x.at;
  }
  let keptTotal = 0;
  for (let j = from; j < m; j++) keptTotal += weight[members[j]!]!;
  const x = firstCrossing(members, from, m, weight, u * keptTotal, 'desc');
  return members[x.at < 0 ? m - 1 : x.at]!;
}
