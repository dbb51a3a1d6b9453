import { describe, expect, it } from 'vitest';
import { KernelError } from './errors.js';
import { expNonPositive, SAMPLE_BUCKETS, SAMPLE_BUCKETS_PER_NAT, SAMPLE_CHUNK, sampleBucketsReference } from './sample-buckets.js';
import { rng } from './testing/random.js';

function run(logits: number[], temperature = 1, lower = -Infinity, pruneNats = Infinity, topK = 0) {
  const n = logits.length;
  const o = { weight: new Float64Array(n), ids: new Int32Array(n), start: new Int32Array(SAMPLE_BUCKETS + 1), mass: new Float64Array(SAMPLE_BUCKETS) };
  const r = sampleBucketsReference({ logits: Float32Array.from(logits), temperature, lower, pruneNats, topK, ...o });
  return { ...r, ...o };
}

describe('sampleBucketsReference (the definition)', () => {
  it('weighs e^((l - max) / T), skips NaN and -Infinity, and groups by 1/16-nat buckets, ascending ids within one', () => {
    const r = run([0, -1, NaN, -Infinity, 0, -1.03, -0.5], 2);
    expect(r.max).toBe(0);
    expect(r.count).toBe(5);
    // -ln w = (max - l) / T: ids 0 and 4 -> bucket 0; id 6 -> 0.25 nat = bucket 4; id 1 -> 8; id 5 -> 8 (8.24).
    expect(Array.from(r.ids.subarray(0, 5))).toEqual([0, 4, 6, 1, 5]);
    expect(r.start[1]).toBe(2);
    expect(r.start[4]).toBe(2);
    expect(r.start[5]).toBe(3);
    expect(r.start[8]).toBe(3);
    expect(r.start[9]).toBe(5);
    expect(r.start[SAMPLE_BUCKETS]).toBe(5);
    expect(r.weight[1]).toBe(expNonPositive(-0.5));
    expect(r.mass[8]).toBe(r.weight[1]! + r.weight[5]!);
    expect(r.total).toBeCloseTo(2 + Math.exp(-0.25) + Math.exp(-0.5) + Math.exp(Math.fround(-1.03) / 2), 14);
  });

  it('applies the floor: lower, and max - pruneNats * T; weights past 256 nats share the last bucket', () => {
    expect(run([0, -1, -2, -3], 1, -1.5).count).toBe(2);
    expect(run([0, -1, -2, -3], 2, -Infinity, 0.9).count).toBe(2); // floor -1.8
    const far = run([0, -300]);
    expect(far.count).toBe(2);
    expect(far.start[SAMPLE_BUCKETS - 1]).toBe(1);
    expect(run([-Infinity, -Infinity]).count).toBe(0);
  });

  it('top-k: the floor is the k-th largest logit (ties with it stay, NaN never counts, fewer than k finite: all stay)', () => {
    const ids = (r: ReturnType<typeof run>) => Array.from(r.ids.subarray(0, r.count)).sort((a, b) => a - b);
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
          const l = Math.fround(row[i]!);
          if (!(l >= floor)) continue;
          const k = Math.min(SAMPLE_BUCKETS - 1, Math.floor((max - l) * (SAMPLE_BUCKETS_PER_NAT / T)));
          chunk[k]! += expNonPositive((l - max) * (1 / T));
          ids[k]!.push(i);
        }
        for (let k = 0; k < SAMPLE_BUCKETS; k++) want[k]! += chunk[k]!;
      }
      expect(Array.from(r.mass)).toEqual(Array.from(want));
      expect(Array.from(r.ids.subarray(0, r.count))).toEqual(ids.flat());
    }
  });

  it('refuses bad arguments with typed errors', () => {
    const o = { weight: new Float64Array(2), ids: new Int32Array(2), start: new Int32Array(SAMPLE_BUCKETS + 1), mass: new Float64Array(SAMPLE_BUCKETS) };
    const base = { logits: new Float32Array(2), temperature: 1, lower: -Infinity, pruneNats: Infinity, ...o };
    expect(() => sampleBucketsReference({ ...base, temperature: -1 })).toThrow(KernelError);
    expect(() => sampleBucketsReference({ ...base, mass: new Float64Array(3) })).toThrow(/mass/);
    expect(() => sampleBucketsReference({ ...base, ids: new Int32Array(1) })).toThrow(KernelError);
    for (const topK of [-1, 1.5, NaN, 2 ** 31]) expect(() => sampleBucketsReference({ ...base, topK })).toThrow(/topK/);
  });
});

describe('expNonPositive (the sampler weights)', () => {
  it('within 2 ulp of Math.exp over [-708, 0] and exact where the result is 1; 0 below the float64 range; NaN stays NaN', () => {
    const next = rng(11);
    let worst = 0;
    for (let i = 0; i < 200000; i++) {
      const x = i < 1000 ? -i * 1e-3 : i < 2000 ? -(next() * 1e-12) : -next() * 708;
      const want = Math.exp(x);
      worst = Math.max(worst, Math.abs(expNonPositive(x) - want) / want);
    }
    expect(worst).toBeLessThan(4.5e-16);
    expect(expNonPositive(0)).toBe(1);
    expect(expNonPositive(-0)).toBe(1);
    expect(expNonPositive(-746)).toBe(0);
    expect(expNonPositive(-Infinity)).toBe(0);
    expect(expNonPositive(Number.NaN)).toBeNaN();
    // The subnormal range keeps its (reduced) precision: within one subnormal step of Math.exp, never above it by more.
    for (const x of [-709, -720, -740, -745]) expect(Math.abs(expNonPositive(x) - Math.exp(x))).toBeLessThanOrEqual(Math.exp(x) * 1e-12 + 2 * Number.MIN_VALUE);
  });

});
