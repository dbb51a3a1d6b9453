import { describe, expect, it } from 'vitest';
import { KernelError } from './errors.js';
import {
  SAMPLE_BUCKETS,
  SAMPLE_BUCKETS_PER_NAT,
  SAMPLE_CHUNK,
  SAMPLE_MAX_NATS,
  sampleBucketIdsReference,
  sampleBucketsReference,
  sampleWeight,
} from './sample-buckets.js';
import { rng } from './testing/random.js';

const fr = Math.fround;

function run(logits: number[], temperature = 1, lower = -Infinity, pruneNats = Infinity, topK = 0, minWeight = 0) {
  const row = Float32Array.from(logits);
  const mass = new Float64Array(SAMPLE_BUCKETS);
  const r = sampleBucketsReference({ logits: row, temperature, lower, pruneNats, topK, minWeight, mass });
  /** The candidates of bucket k (-1: all), ascending ids, and their weights by id. */
  const list = (bucket: number) => {
    const ids = new Int32Array(row.length);
    const weight = new Float64Array(row.length);
    const n = sampleBucketIdsReference({ logits: row, temperature, max: r.max, floor: r.floor, minWeight, bucket, ids, weight });
    return { ids: Array.from(ids.subarray(0, n)), weight };
  };
  return { ...r, mass, list };
}

/** q of a logit: (max - l) * (1 / T) in float64. */
const qOf = (max: number, l: number, T: number) => (max - fr(l)) * (1 / T);

describe('sampleBucketsReference and sampleBucketIdsReference (the definition)', () => {
  it('weighs e^-q in float32, skips NaN and -Infinity, and sums by 1/16-nat buckets; the listing gives each bucket', () => {
    const r = run([0, -1, NaN, -Infinity, 0, -1.03, -0.5], 2);
    expect(r.max).toBe(0);
    expect(r.floor).toBe(-Infinity);
    expect(r.count).toBe(5);
    // q = (max - l) / T: ids 0 and 4 -> bucket 0; id 6 -> 0.25 nat = bucket 4; id 1 -> 8; id 5 -> 8 (8.24).
    expect(r.list(0).ids).toEqual([0, 4]);
    expect(r.list(4).ids).toEqual([6]);
    expect(r.list(8).ids).toEqual([1, 5]);
    expect(r.list(-1).ids).toEqual([0, 1, 4, 5, 6]);
    const w = r.list(8).weight;
    expect(w[1]).toBe(sampleWeight(0.5));
    expect(w[5]).toBe(sampleWeight(qOf(0, -1.03, 2)));
    expect(r.mass[8]).toBe(w[1]! + w[5]!);
    expect(r.mass[0]).toBe(2);
    for (const k of [1, 2, 3, 5, 6, 7, 9]) expect(r.mass[k]).toBe(0);
    expect(r.total).toBe(((2 + r.mass[4]!) + r.mass[8]!));
    expect(r.total).toBeCloseTo(2 + Math.exp(-0.25) + Math.exp(-0.5) + Math.exp(Math.fround(-1.03) / 2), 6);
  });

  it('applies the floor (lower, max - pruneNats * T) and minWeight; 86 nats down weigh nothing', () => {
    expect(run([0, -1, -2, -3], 1, -1.5).count).toBe(2);
    const pruned = run([0, -1, -2, -3], 2, -Infinity, 0.9);
    expect(pruned.count).toBe(2);
    expect(pruned.floor).toBe(0 - 0.9 * 2);
    // A floor just above a logit (not a float32 itself) leaves it out.
    const below = fr(0.1);
    const r = run([1, below], 1, below + 1e-12);
    expect(r.count).toBe(1);
    expect(r.floor).toBe(below + 1e-12);
    expect(run([0, -85.9, -86, -300]).count).toBe(2);
    expect(run([0, -85.99, -86]).list(SAMPLE_BUCKETS - 1).ids).toEqual([1]);
    expect(run([-Infinity, -Infinity]).count).toBe(0);
    expect(run([Infinity, 1]).count).toBe(0); // q is NaN or Infinity: nothing to weigh
    // minWeight: weights below it are no candidates (e^-1 = 0.37, e^-3 = 0.05).
    const m = run([0, -1, -3], 1, -Infinity, Infinity, 0, 0.1);
    expect(m.count).toBe(2);
    expect(m.list(-1).ids).toEqual([0, 1]);
  });

  it('top-k: the floor is the k-th largest logit (ties with it stay, NaN never counts, fewer than k finite: all stay)', () => {
    const ids = (r: ReturnType<typeof run>) => r.list(-1).ids;
    expect(ids(run([0.5, 3, NaN, 2, 3, -1, 2], 1, -Infinity, Infinity, 3))).toEqual([1, 3, 4, 6]); // 3, 3, 2 | tie 2
    expect(ids(run([0.5, 3, NaN, 2, 3, -1, 2], 1, -Infinity, Infinity, 1))).toEqual([1, 4]);
    expect(ids(run([1, -Infinity, NaN, 0], 1, -Infinity, Infinity, 3))).toEqual([0, 3]);
    expect(run([1, 2, 3], 1, -Infinity, Infinity, 3).count).toBe(3); // k = n: no cut
    expect(ids(run([1, 2, 3, 4], 1, 3.5, Infinity, 3))).toEqual([3]); // lower above the k-th largest wins
    // Against a sort on random rows (every k from 1 to 40, with repeats and NaN).
    const next = rng(5);
    for (let t = 0; t < 200; t++) {
      const row = Array.from({ length: 1 + Math.floor(next() * 300) }, () => (next() < 0.05 ? NaN : Math.round(next() * 64) / 8));
      const k = 1 + Math.floor(next() * 40);
      const sorted = row.filter((v) => !Number.isNaN(v)).sort((a, b) => b - a);
      const kth = k < row.length ? (sorted[k - 1] ?? -Infinity) : -Infinity;
      const want = row.flatMap((v, i) => (v >= kth ? [i] : []));
      expect(ids(run(row, 1, -Infinity, Infinity, k))).toEqual(want);
    }
  });

  it('sums each bucket chunk by chunk: ascending ids within SAMPLE_CHUNK ids from 0, then the chunks in order', () => {
    const next = rng(23);
    for (const [n, T, pruneNats] of [[2 * SAMPLE_CHUNK + 1234, 0.8, Infinity], [3 * SAMPLE_CHUNK, 1.3, 6], [SAMPLE_CHUNK + 1, 1, Infinity]] as const) {
      const row = Array.from({ length: n }, (_, i) => (i % 997 === 0 ? NaN : Math.round((next() * 16 - 8) * 32) / 32));
      const r = run(row, T, -Infinity, pruneNats);
      const max = Math.max(...row.filter((v) => !Number.isNaN(v)));
      const floor = pruneNats < Infinity ? max - pruneNats * T : -Infinity;
      const want = new Float64Array(SAMPLE_BUCKETS);
      const ids: number[][] = Array.from({ length: SAMPLE_BUCKETS }, () => []);
      for (let from = 0; from < n; from += SAMPLE_CHUNK) {
        const chunk = new Float64Array(SAMPLE_BUCKETS);
        for (let i = from; i < Math.min(n, from + SAMPLE_CHUNK); i++) {
          const l = fr(row[i]!);
          if (!(l >= floor)) continue;
          const q = qOf(max, l, T);
          const k = Math.floor(q * SAMPLE_BUCKETS_PER_NAT);
          chunk[k]! += sampleWeight(q);
          ids[k]!.push(i);
        }
        for (let k = 0; k < SAMPLE_BUCKETS; k++) want[k]! += chunk[k]!;
      }
      expect(Array.from(r.mass)).toEqual(Array.from(want));
      for (const k of [0, 5, 40, 100, 200]) expect(r.list(k).ids).toEqual(ids[k]);
      expect(r.count).toBe(ids.flat().length);
    }
  });

  it('refuses bad arguments with typed errors naming them', () => {
    const base = { logits: new Float32Array(2), temperature: 1, lower: -Infinity, pruneNats: Infinity, mass: new Float64Array(SAMPLE_BUCKETS) };
    const arg = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        expect(e).toBeInstanceOf(KernelError);
        return (e as KernelError).argument;
      }
      return undefined;
    };
    expect(arg(() => sampleBucketsReference({ ...base, temperature: -1 }))).toBe('temperature');
    expect(arg(() => sampleBucketsReference({ ...base, mass: new Float64Array(3) }))).toBe('mass');
    expect(arg(() => sampleBucketsReference({ ...base, minWeight: 1.5 }))).toBe('minWeight');
    for (const topK of [-1, 1.5, NaN, 2 ** 31]) expect(arg(() => sampleBucketsReference({ ...base, topK }))).toBe('topK');
    const ids = { logits: new Float32Array(2), temperature: 1, max: 0, floor: -Infinity, bucket: 0, ids: new Int32Array(2), weight: new Float64Array(2) };
    for (const bucket of [-2, SAMPLE_BUCKETS, 0.5]) expect(arg(() => sampleBucketIdsReference({ ...ids, bucket }))).toBe('bucket');
    expect(arg(() => sampleBucketIdsReference({ ...ids, max: NaN }))).toBe('max');
    expect(arg(() => sampleBucketIdsReference({ ...ids, floor: NaN }))).toBe('floor');
    expect(arg(() => sampleBucketIdsReference({ ...ids, ids: new Int32Array(1) }))).toBe('ids');
    expect(arg(() => sampleBucketIdsReference({ ...ids, weight: new Float32Array(2) as unknown as Float64Array }))).toBe('weight');
  });
});

describe('sampleWeight (the sampler weights, float32)', () => {
  it('a float32, within 1 float32 ulp of e^-q over [0, 86), and exactly 1 at q = 0', () => {
    const next = rng(11);
    let worst = 0;
    for (let i = 0; i < 200000; i++) {
      const q = i < 1000 ? i * 1e-3 : i < 2000 ? next() * 1e-6 : next() * SAMPLE_MAX_NATS;
      if (!(q < SAMPLE_MAX_NATS)) continue;
      const w = sampleWeight(q);
      expect(w).toBe(fr(w));
      const want = Math.exp(-q);
      // One float32 ulp at w: 2^(exponent of w - 23).
      const ulp = 2 ** (Math.floor(Math.log2(want)) - 23);
      worst = Math.max(worst, Math.abs(w - want) / ulp);
    }
    expect(worst).toBeLessThanOrEqual(1);
    expect(sampleWeight(0)).toBe(1);
    expect(sampleWeight(-0)).toBe(1);
    // Monotonic at the bucket edges the sampler walks (non-increasing in q).
    for (let k = 0; k < SAMPLE_BUCKETS - 1; k++) {
      const edge = (k + 1) / SAMPLE_BUCKETS_PER_NAT;
      const before = edge - edge * 2 ** -52;
      expect(sampleWeight(before)).toBeGreaterThanOrEqual(sampleWeight(edge));
    }
  });
});
