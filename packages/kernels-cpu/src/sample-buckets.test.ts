/**
 * The native vocabulary pass of sampling (csrc/sample_buckets.h) against `sampleBucketsReference`: the same bits
 * (weights at every candidate, ids, bucket starts and masses, count, total, max) over vocabulary sizes, temperatures,
 * top-k (the k-th largest found natively) and caller floors, prune limits, and logits with NaN, +-Infinity and ties; bad arguments are typed errors.
 */
import { KernelError, SAMPLE_BUCKETS, sampleBucketsReference, type SampleBucketsArgs } from '@kvq/kernels';
import { rng } from '@kvq/kernels/testing';
import { describe, expect, it } from 'vitest';
import { cpuAvailability, createBackend } from './backend.js';

const avail = cpuAvailability();

function outputs(n: number) {
  return { weight: new Float64Array(n).fill(-1), ids: new Int32Array(n).fill(-1), start: new Int32Array(SAMPLE_BUCKETS + 1), mass: new Float64Array(SAMPLE_BUCKETS) };
}

describe.skipIf(!avail.available)('sampleBuckets: native vs reference', () => {
  const b = avail.available ? createBackend({ threads: 1 }) : undefined;
  // Chunks of SAMPLE_CHUNK ids weighed on three threads (this machine may have fewer cores: the bits must not depend
  // on how the chunks are shared out).
  const b3 = avail.available ? createBackend({ threads: 3 }) : undefined;

  const cases: { name: string; logits: Float32Array; temperature: number; lower: number; pruneNats: number; topK?: number }[] = [];
  const rnd = rng(3);
  for (const n of [1, 7, 32000, 128256]) {
    const flat = Float32Array.from({ length: n }, () => (rnd() * 2 - 1) * 8);
    const peaked = Float32Array.from({ length: n }, (_, i) => -1.5 * Math.log(1 + ((i * 2654435761) % n)) + rnd() * 1e-3);
    cases.push({ name: `flat ${n}, T 0.8`, logits: flat, temperature: 0.8, lower: -Infinity, pruneNats: Math.log(n) + 28 });
    cases.push({ name: `peaked ${n}, T 1`, logits: peaked, temperature: 1, lower: -Infinity, pruneNats: Infinity });
    cases.push({ name: `flat ${n}, T 1.7, caller floor`, logits: flat, temperature: 1.7, lower: n > 50 ? 6.5 : -Infinity, pruneNats: 3 });
    for (const topK of [1, 5, 50, 1000]) cases.push({ name: `flat ${n}, T 0.8, top-k ${topK}`, logits: flat, temperature: 0.8, lower: -Infinity, pruneNats: Math.log(n) + 28, topK });
    cases.push({ name: `peaked ${n}, T 1, top-k 40`, logits: peaked, temperature: 1, lower: -Infinity, pruneNats: Infinity, topK: 40 });
  }
  const special = Float32Array.from({ length: 1000 }, (_, i) => (i % 97 === 0 ? NaN : i % 101 === 0 ? -Infinity : i % 7 === 0 ? 2.5 : Math.sin(i) * 40));
  cases.push({ name: 'NaN, -Infinity, ties, a 80-nat range (last bucket), T 0.05', logits: special, temperature: 0.05, lower: -Infinity, pruneNats: Infinity });
  // Ties at the k-th largest (2.5 repeats), NaN in every compare group, and more k than finite values.
  for (const topK of [3, 140, 150, 999]) cases.push({ name: `NaN, -Infinity, ties, top-k ${topK}`, logits: special, temperature: 1, lower: -Infinity, pruneNats: Infinity, topK });
  const fewFinite = new Float32Array(100).fill(-Infinity);
  fewFinite.set([3, NaN, 1, 2], 40);
  cases.push({ name: 'top-k 10 over 3 finite logits (the floor stays -Infinity)', logits: fewFinite, temperature: 1, lower: -Infinity, pruneNats: Infinity, topK: 10 });
  cases.push({ name: 'all -Infinity', logits: new Float32Array(64).fill(-Infinity), temperature: 1, lower: -Infinity, pruneNats: Infinity });
  const inf = new Float32Array(64).fill(1);
  inf[5] = Infinity;
  cases.push({ name: '+Infinity logit', logits: inf, temperature: 1, lower: -Infinity, pruneNats: 28 });
  // The largest logit a zero: the reference keeps the first zero it meets, and its sign reaches every weight.
  for (const [first, second] of [[-0, 0], [0, -0]] as const) {
    const z = Float32Array.from({ length: 20000 }, (_, i) => -1 - (i % 13));
    z[9000] = first;
    z[17001] = second;
    cases.push({ name: `largest logit ${Object.is(first, -0) ? '-0 then +0' : '+0 then -0'}`, logits: z, temperature: 0.7, lower: -Infinity, pruneNats: 40 });
  }

  it.each(cases)('$name', ({ logits, temperature, lower, pruneNats, topK }) => {
    const n = logits.length;
    const want = outputs(n);
    const got = outputs(n);
    const args = (o: ReturnType<typeof outputs>): SampleBucketsArgs => ({ logits, temperature, lower, pruneNats, ...(topK !== undefined ? { topK } : {}), ...o });
    const r = sampleBucketsReference(args(want));
    for (const backend of [b3!, b!]) {
      const g = backend.sampleBuckets!(args(got));
      expect(g).toEqual(r);
      expect(Object.is(g.max, r.max)).toBe(true);
      expectSameBits(got, want, r.count);
    }
  });

  /** Every output of the native pass has the reference's bits (Object.is: signed zeros count). */
  function expectSameBits(got: ReturnType<typeof outputs>, want: ReturnType<typeof outputs>, count: number) {
    // First difference of each output (bits: Object.is), or -1.
    const firstDiff = (a: ArrayLike<number>, c: ArrayLike<number>, m: number) => {
      for (let j = 0; j < m; j++) if (!Object.is(a[j], c[j])) return j;
      return -1;
    };
    expect(firstDiff(got.start, want.start, SAMPLE_BUCKETS + 1)).toBe(-1);
    expect(firstDiff(got.mass, want.mass, SAMPLE_BUCKETS)).toBe(-1);
    expect(firstDiff(got.ids, want.ids, count)).toBe(-1);
    let weightDiff = -1;
    for (let j = 0; j < count && weightDiff < 0; j++) if (!Object.is(got.weight[want.ids[j]!], want.weight[want.ids[j]!])) weightDiff = want.ids[j]!;
    expect(weightDiff).toBe(-1);
  }

  it('refuses bad arguments with typed errors naming them', () => {
    const o = outputs(8);
    const base = { logits: new Float32Array(8), temperature: 1, lower: -Infinity, pruneNats: Infinity, ...o };
    for (const [bad, arg] of [
      [{ temperature: 0 }, 'temperature'],
      [{ temperature: Infinity }, 'temperature'],
      [{ lower: NaN }, 'lower'],
      [{ pruneNats: -1 }, 'pruneNats'],
      [{ topK: -1 }, 'topK'],
      [{ topK: 2.5 }, 'topK'],
      [{ weight: new Float64Array(4) }, 'weight'],
      [{ ids: new Float32Array(8) }, 'ids'],
      [{ start: new Int32Array(10) }, 'start'],
    ] as const) {
      let err: unknown;
      try {
        b!.sampleBuckets!({ ...base, ...(bad as object) } as SampleBucketsArgs);
      } catch (e) {
        err = e;
      }
      expect(err, arg).toBeInstanceOf(KernelError);
      expect((err as KernelError).argument).toBe(arg);
    }
  });
});
