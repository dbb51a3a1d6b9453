/**
 * Where a running sum crosses a threshold inside one weight bucket, without sorting the bucket: the sampler's top-p
 * cut and its draw both walk a bucket's tokens in order and stop at the first token whose cumulative weight exceeds a
 * target. A quickselect-style descent finds that token in expected O(m) plain comparisons: partition around a pivot,
 * sum the side that comes first, and keep only the side the target falls in. Sorting the bucket with a comparator
 * (what this replaces) cost ~1 ms a token when 9k ids of a 262k vocabulary shared the top bucket.
 */

/**
 * The order a bucket is walked in. `desc`: most likely first (weight descending, lower id first among equal
 * weights), the order of the draw. `asc`: the exact reverse (least likely first), the order of top-p's cut.
 */
export type WalkOrder = 'desc' | 'asc';

/** Result of {@link firstCrossing}. */
export interface Crossing {
  /** Index into the `members` array after the call of the first token whose cumulative weight exceeds the target; -1 when none does. */
  readonly at: number;
  /** Weight of the tokens walked before it (all of `members` when none crosses). */
  readonly before: number;
}

/** Below this many tokens the rest is sorted by insertion and walked. */
const SMALL = 16;

/** `a` comes before `b` in the walk (ids are distinct, so this is a strict total order). */
function precedes(weight: Float64Array, a: number, b: number, desc: boolean): boolean {
  const wa = weight[a]!;
  const wb = weight[b]!;
  return desc ? wa > wb || (wa === wb && a < b) : wa < wb || (wa === wb && a > b);
}

/**
 * Finds the first token of `members[from .. to)`, in `order`, at which the cumulative weight exceeds `target`
 * (cumulative > target). Reorders `members[from .. to)` in place: after the call the tokens before the returned index
 * (from `from` on) are exactly the tokens walked before it, in no particular order, so a caller can take them (or
 * them and the crossing token) as a set. The sums are taken in partition order, so a target within float rounding
 * of a boundary may land on either neighbour of the sorted walk.
 * @param members token ids (scratch the caller owns).
 * @param weight the weight of each token id (nonnegative, finite).
 * @param target the threshold in weight units (not normalized).
 */
export function firstCrossing(members: Int32Array, from: number, to: number, weight: Float64Array, target: number, order: WalkOrder): Crossing {
  const desc = order === 'desc';
  let lo = from;
  let hi = to;
  let before = 0;
  while (hi - lo > SMALL) {
    // Middle element as pivot, moved to the end; Lomuto partition of the rest: tokens that precede the pivot first.
    const mid = lo + ((hi - lo) >> 1);
    const pivot = members[mid]!;
    members[mid] = members[hi - 1]!;
    members[hi - 1] = pivot;
    let store = lo;
    let sum = 0;
    for (let j = lo; j < hi - 1; j++) {
      const t = members[j]!;
      if (precedes(weight, t, pivot, desc)) {
        members[j] = members[store]!;
        members[store++] = t;
        sum += weight[t]!;
      }
    }
    members[hi - 1] = members[store]!;
    members[store] = pivot;
    if (store > lo && before + sum > target) {
      hi = store; // the crossing is among the tokens before the pivot (the first token when the target is negative)
    } else if (before + sum + weight[pivot]! > target) {
      return { at: store, before: before + sum };
    } else {
      before += sum + weight[pivot]!;
      lo = store + 1;
    }
  }
  for (let j = lo + 1; j < hi; j++) {
    const t = members[j]!;
    let i = j - 1;
    while (i >= lo && precedes(weight, t, members[i]!, desc)) {
      members[i + 1] = members[i]!;
      i--;
    }
    members[i + 1] = t;
  }
  for (let j = lo; j < hi; j++) {
    const w = weight[members[j]!]!;
    if (before + w > target) return { at: j, before };
    before += w;
  }
  return { at: -1, before };
}
