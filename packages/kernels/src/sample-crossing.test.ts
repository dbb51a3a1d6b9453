import { describe, expect, it } from 'vitest';
import { firstCrossing, type WalkOrder } from './sample-crossing.js';
import { rng as seeded } from './testing/random.js';

/** The definition: sort (weight, then id) in the walk's order and walk until the cumulative weight exceeds the target. */
function sortedWalk(ids: number[], weight: Float64Array, target: number, order: WalkOrder): { id: number; before: number } {
  const sorted = [...ids].sort((a, b) => (order === 'desc' ? weight[b]! - weight[a]! || a - b : weight[a]! - weight[b]! || b - a));
  let before = 0;
  for (const id of sorted) {
    if (before + weight[id]! > target) return { id, before };
    before += weight[id]!;
  }
  return { id: -1, before };
}

describe('firstCrossing (quickselect descent) against the sorted walk', () => {
  it('finds the same token and the same weight before it, both orders, many ties, every target kind', () => {
    const next = seeded(11);
    let checked = 0;
    for (const size of [1, 2, 5, 16, 17, 40, 300, 5000]) {
      // Small integer weights: every sum is exact, so the descent and the sorted walk must agree to the bit.
      const weight = new Float64Array(size + 10);
      const ids = Array.from({ length: size }, (_, i) => i + 3);
      for (const id of ids) weight[id] = Math.floor(next() * (size > 100 ? 40 : 4));
      const total = ids.reduce((s, id) => s + weight[id]!, 0);
      for (const order of ['desc', 'asc'] as const) {
        for (const target of [-1, 0, total - 1, total, total + 5, ...Array.from({ length: 12 }, () => Math.floor(next() * total) + (next() < 0.5 ? 0 : 0.5))]) {
          const members = Int32Array.from([...ids].sort(() => next() - 0.5));
          const got = firstCrossing(members, 0, size, weight, target, order);
          const want = sortedWalk(ids, weight, target, order);
          expect(got.at < 0 ? -1 : members[got.at], `${size} ${order} ${target}`).toBe(want.id);
          expect(got.before).toBe(want.before);
          // The tokens before the returned index are exactly those walked before the crossing.
          if (got.at >= 0) {
            const walkedBefore = new Set(members.subarray(0, got.at));
            const first = [...ids].filter((id) => id !== want.id && (order === 'desc' ? weight[id]! > weight[want.id]! || (weight[id] === weight[want.id] && id < want.id) : weight[id]! < weight[want.id]! || (weight[id] === weight[want.id] && id > want.id)));
            expect(walkedBefore).toEqual(new Set(first));
          }
          expect([...members].sort((a, b) => a - b)).toEqual(ids); // a permutation of the members
          checked++;
        }
      }
    }
    expect(checked).toBeGreaterThan(200);
  });

  it('searches only members[from .. to)', () => {
    const weight = Float64Array.from([5, 1, 1, 1, 9]);
    const members = Int32Array.from([4, 1, 2, 3, 0]);
    const got = firstCrossing(members, 1, 4, weight, 1.5, 'desc');
    expect(members[got.at]).toBe(2);
    expect(got.before).toBe(1);
    expect(members[0]).toBe(4);
    expect(members[4]).toBe(0);
  });
});
