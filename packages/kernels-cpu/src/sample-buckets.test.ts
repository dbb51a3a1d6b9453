/**
 * The native vocabulary passes of sampling (csrc/sample_buckets.h) against `sampleBucketsReference` and
 * `sampleBucketIdsReference`: the same bits (bucket masses, count, total, max, floor; each listed bucket's ids and
 * weights) over vocabulary sizes, temperatures, top-k (the k-th largest found natively), min weights, caller floors,
 * prune limits, and logits with NaN, +-Infinity and ties, on every ISA this machine runs; bad arguments are typed errors.
 */
import { KernelError, SAMPLE_BUCKETS, sampleBucketIdsReference, sampleBucketsReference, type SampleBucketIdsArgs, type SampleBucketsArgs } from '@kvq/kernels';
import { rng } from '@kvq/kernels/testing';
import { describe, expect, it } from 'vitest';
import { cpuAvailability, createBackend } from './backend.js';

const avail = cpuAvailability();

describe.skipIf(!avail.available)('sampleBuckets / sampleBucketIds: native vs reference', () => {
  const b = avail.available ? createBackend({ threads: 1 }) : undefined;
  // Chunks of SAMPLE_CHUNK ids weighed on three threads (this machine may have fewer cores: the bits must not depend
  // on how the chunks are shared out), and every ISA tier the CPU runs (the vector loops and their scalar tails).
  const backends = avail.available ? [b!, createBackend({ threads: 3 }), ...avail.cpu.isas.filter((isa) => isa !== b!.isa).map((isa) => createBackend({ threads: 2, isa }))] : [];

  const cases: { name: string; logits: Float32Array; temperature: number; lower: number; pruneNats: number; topK?: number; minWeight?: number }[] = [];
  const rnd = rng(3);
  for (const n of [1, 7, 32000, 128256]) {
    const flat = Float32Array.from({ length: n }, () => (rnd() * 2 - 1) * 8);
    const peaked = Float32Array.from({ length: n }, (_, i) => -1.5 * Math.log(1 + ((i * 2654435761) % n)) + rnd() * 1e-3);
    cases.push({ name: `flat ${n}, T 0.8`, logits: flat, temperature: 0.8, lower: -Infinity, pruneNats: Math.log(n) + 28 });
    cases.push({ name: `peaked ${n}, T 1`, logits: peaked, temperature: 1, lower: -Infinity, pruneNats: Infinity });
    cases.push({ name: `flat ${n}, T 1.7, caller floor`, logits: flat, temperature: 1.7, lower: n > 50 ? 6.5 : -Infinity, pruneNats: 3 });
    for (const topK of [1, 5, 50, 1000]) cases.push({ name: `flat ${n}, T 0.8, top-k ${topK}`, logits: flat, temperature: 0.8, lower: -Infinity, pruneNats: Math.log(n) + 28, topK });
    cases.push({ name: `peaked ${n}, T 1, top-k 40`, logits: peaked, temperature: 1, lower: -Infinity, pruneNats: Infinity, topK: 40 });
    cases.push({ name: `flat ${n}, T 0.6, min weight 0.05`, logits: flat, temperature: 0.6, lower: -Infinity, pruneNats: 3.1, minWeight: 0.05 });
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

  it.each(cases)('$name', ({ logits, temperature, lower, pruneNats, topK, minWeight }) => {
    const n = logits.length;
    const args = (mass: Float64Array): SampleBucketsArgs => ({ logits, temperature, lower, pruneNats, ...(topK !== undefined ? { topK } : {}), ...(minWeight !== undefined ? { minWeight } : {}), mass });
    const want = new Float64Array(SAMPLE_BUCKETS);
    const r = sampleBucketsReference(args(want));
    // The buckets to list: every candidate, the first and last non-empty ones, and one in between.
    const used = [...want.keys()].filter((k) => want[k]! > 0);
    const lists = [-1, ...new Set([used[0] ?? 0, used[used.length >> 1] ?? 0, used[used.length - 1] ?? 0])];
    const list = (pass: (a: SampleBucketIdsArgs) => number, bucket: number) => {
      const ids = new Int32Array(n).fill(-1);
      const weight = new Float64Array(n).fill(-1);
      const count = pass({ logits, temperature, max: r.max, floor: r.floor, ...(minWeight !== undefined ? { minWeight } : {}), bucket, ids, weight });
      return { count, ids, weight };
    };
    const wantLists = lists.map((k) => list(sampleBucketIdsReference, k));
    expect(wantLists[0]!.count).toBe(r.count);
    for (const backend of backends) {
      const got = new Float64Array(SAMPLE_BUCKETS).fill(-1);
      const g = backend.sampleBuckets!(args(got));
      expect(g, backend.info.simd).toEqual(r);
      expect(Object.is(g.max, r.max)).toBe(true);
      expect(firstDiff(got, want, SAMPLE_BUCKETS), backend.info.simd).toBe(-1);
      lists.forEach((k, j) => {
        const w = wantLists[j]!;
        const l = list((a) => backend.sampleBucketIds!(a), k);
        expect(l.count, `${backend.info.simd} bucket ${k}`).toBe(w.count);
        expect(firstDiff(l.ids, w.ids, w.count), `${backend.info.simd} bucket ${k}`).toBe(-1);
        let weightDiff = -1;
        for (let j = 0; j < w.count && weightDiff < 0; j++) if (!Object.is(l.weight[w.ids[j]!], w.weight[w.ids[j]!])) weightDiff = w.ids[j]!;
        expect(weightDiff, `${backend.info.simd} bucket ${k}`).toBe(-1);
      });
    }
  });

  /** First index where a and c differ in bits (Object.is: signed zeros count), or -1. */
  function firstDiff(a: ArrayLike<number>, c: ArrayLike<number>, m: number): number {
    for (let j = 0; j < m; j++) if (!Object.is(a[j], c[j])) return j;
    return -1;
  }

  it('refuses bad arguments with typed errors naming them', () => {
    const base = { logits: new Float32Array(8), temperature: 1, lower: -Infinity, pruneNats: Infinity, mass: new Float64Array(SAMPLE_BUCKETS) };
    for (const [bad, arg] of [
      [{ temperature: 0 }, 'temperature'],
      [{ temperature: Infinity }, 'temperature'],
      [{ lower: NaN }, 'lower'],
      [{ pruneNats: -1 }, 'pruneNats'],
      [{ topK: -1 }, 'topK'],
      [{ topK: 2.5 }, 'topK'],
      [{ minWeight: -0.5 }, 'minWeight'],
      [{ mass: new Float64Array(10) }, 'mass'],
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
