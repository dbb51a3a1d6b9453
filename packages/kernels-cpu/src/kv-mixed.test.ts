/**
 * Mixed K/V precision caches (`cache.valueDtype` other than `cache.dtype`) on the native CPU backend, every ISA this
 * machine runs: `reshapeAndCache` writes each pool byte-identical to the reference backend and to `@kvq/cache`'s
 * `writeKv` (K with its dtype's writer and kScale, V with its own and vScale); `pagedAttention` (csrc/kvmixed_impl.h:
 * each tile's K and V rows dequantized by their own dtype's decoder) matches the reference within the attention
 * parity tolerance on decode, prefill and chunked batches, GQA, sliding windows, split long contexts, the lse output
 * and head sizes 64 / 128 / 40 / 80 / 96; a backend without mixed kernels and bad pools are typed errors.
 */
import { createKvLayerCache, writeKv, type KvStorageDtype } from '@kvq/cache';
import { createReferenceBackend, isKernelError, KernelError, type KvLayerCache, type PagedAttentionArgs } from '@kvq/kernels';
import { NativeKernelBackend } from '@kvq/kernels/native';
import {
  DEFAULT_TOLERANCES,
  attentionArgs,
  buildAttentionBatch,
  cloneKvCache,
  compareOutput,
  fillKvPools,
  makeKvCache,
  permutation,
  randomF32,
  rng,
  type AttentionBatch,
  type SeqSpec,
} from '@kvq/kernels/testing';
import { describe, expect, it } from 'vitest';
import type { NativeContext } from './addon-types.js';
import { cpuAvailability, createBackend, type CpuBackend } from './backend.js';
import { loadAddon } from './load.js';

const avail = cpuAvailability();
const isas = avail.available ? avail.cpu.isas : [];
const reference = createReferenceBackend();
const TOL = DEFAULT_TOLERANCES.pagedAttention;

type Pair = readonly [k: KvStorageDtype, v: KvStorageDtype];

/** Whether a dtype takes per-head scales (the FP8 formats with per-tensor / per-head scales). */
const isFp8 = (d: KvStorageDtype): boolean => d === 'e4m3fn' || d === 'e5m2' || d === 'e4m3fnuz' || d === 'e5m2fnuz';

/** Dense with quantized, two write-time-scaled layouts, nvfp4 either side, FP8 with either, two FP8 formats. */
const WRITE_PAIRS: readonly (readonly [...Pair, scales: 'tensor' | 'head', headSize: number])[] = [
  ['int8_per_token_head', 'int4_g32_f16', 'tensor', 128],
  ['nvfp4', 'bf16', 'tensor', 64],
  ['bf16', 'nvfp4', 'tensor', 96],
  ['e4m3fn', 'e5m2', 'head', 64],
  ['e5m2fnuz', 'e4m3fnuz', 'head', 40],
  ['bf16', 'e4m3fn', 'tensor', 64],
  ['e5m2', 'int4_per_token_head', 'tensor', 40],
  ['fp8_per_token_head', 'q4_0', 'tensor', 64],
  ['f32', 'int4_g16', 'tensor', 48],
  ['int4_g64', 'f16', 'tensor', 128],
  ['int4_g32', 'nvfp4', 'tensor', 64],
  ['nvfp4', 'e4m3fn', 'tensor', 64],
];

/** A mixed layer of the testing kit, both pools filled with pre-existing content that must survive unwritten slots. */
function filledCache(k: KvStorageDtype, v: KvStorageDtype, scales: 'tensor' | 'head', numBlocks: number, blockSize: number, numKvHeads: number, headSize: number): KvLayerCache {
  return fillKvPools(makeKvCache({ dtype: k, valueDtype: v, numBlocks, blockSize, numKvHeads, headSize, scales, amax: 3 }));
}

const bytes = (a: ArrayBufferView): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

describe.skipIf(!avail.available)('reshapeAndCache on mixed caches: the bytes of the reference and of @kvq/cache writeKv', () => {
  for (const isa of isas) {
    it(`${isa}: ${WRITE_PAIRS.length} (K, V) pairs, padding slots, NaN / ±Inf / zero heads, pre-existing content kept`, () => {
      const b = createBackend({ isa, threads: 2 });
      try {
        WRITE_PAIRS.forEach(([k, v, scales, headSize], i) => {
          const r = rng(9100 + i);
          const numKvHeads = 1 + (i % 3);
          const blockSize = [1, 16, 32][i % 3]!;
          const numTokens = [7, 17, 33, 70][i % 4]!;
          const numBlocks = Math.ceil((numTokens * 1.3) / blockSize) + 1;
          const n = numTokens * numKvHeads * headSize;
          const key = randomF32(n, r, 1.5);
          const value = randomF32(n, r, 1.5);
          key.set([NaN, Infinity, -Infinity, -0, 1e-30, 1e30]);
          value.set([1e30, -1e30, 3e-39, 0, -1e-30, Infinity]);
          for (let e = (numTokens - 1) * numKvHeads * headSize; e < n; e++) {
            key[e] = e % 2 ? -0 : 0;
            value[e] = 0;
          }
          const order = permutation(numBlocks * blockSize, r);
          const slotMapping = Int32Array.from({ length: numTokens }, (_, t) => (t % 9 === 4 ? -1 : order[t]!));
          const label = `${k}/${v} ${scales} hs=${headSize} kvh=${numKvHeads} bs=${blockSize} tokens=${numTokens}`;

          const native = filledCache(k, v, scales, numBlocks, blockSize, numKvHeads, headSize);
          const viaRef = cloneKvCache(native);
          b.reshapeAndCache({ key, value, slotMapping, numTokens, cache: native });
          reference.reshapeAndCache({ key, value, slotMapping, numTokens, cache: viaRef });
          expect(bytes(native.key).equals(bytes(viaRef.key)), `${label}: K pool`).toBe(true);
          expect(bytes(native.value).equals(bytes(viaRef.value)), `${label}: V pool`).toBe(true);

          // @kvq/cache's writer on a layer of its own (per-head scales only when both dtypes are FP8).
          const layer = createKvLayerCache({ dtype: k, valueDtype: v, numBlocks, blockSize, numKvHeads, headSize, scaleGranularity: scales });
          layer.kScale.set(native.kScale);
          layer.vScale.set(native.vScale);
          const onNative = { ...layer, key: layer.key.slice(), value: layer.value.slice() } as KvLayerCache;
          writeKv(layer, key, value, slotMapping);
          b.reshapeAndCache({ key, value, slotMapping, numTokens, cache: onNative });
          expect(bytes(onNative.key).equals(bytes(layer.key)), `${label}: K pool vs writeKv`).toBe(true);
          expect(bytes(onNative.value).equals(bytes(layer.value)), `${label}: V pool vs writeKv`).toBe(true);
        });
      } finally {
        b.dispose();
      }
    });
  }
});

interface Case {
  label: string;
  args: Omit<PagedAttentionArgs, 'out'>;
  want: Float32Array;
  wantLse: Float32Array;
}

/** A batch written by the reference into a mixed cache, and the reference's output and lse over it. */
function makeCase(
  spec: { k: KvStorageDtype; v: KvStorageDtype; scales?: 'tensor' | 'head'; headSize: number; gqa: number; numKvHeads: number; blockSize: number; seqs: SeqSpec[] },
  seed: number,
  extra: Partial<PagedAttentionArgs> = {},
): Case {
  const numHeads = spec.numKvHeads * spec.gqa;
  const scales = spec.scales ?? 'tensor';
  const batch: AttentionBatch = buildAttentionBatch(
    { dtype: spec.k, valueDtype: spec.v, scales, headSize: spec.headSize, numKvHeads: spec.numKvHeads, blockSize: spec.blockSize, numHeads, seqs: spec.seqs },
    rng(seed),
    reference,
  );
  const args = { ...attentionArgs(batch), ...extra };
  const want = new Float32Array(batch.numTokens * numHeads * spec.headSize);
  const wantLse = new Float32Array(batch.numTokens * numHeads);
  reference.pagedAttention({ ...args, out: want, lse: wantLse });
  const window = extra.slidingWindow ? ` window=${extra.slidingWindow}` : '';
  const label = `${spec.k}/${spec.v}${scales === 'head' ? ' per-head' : ''} hs=${spec.headSize} gqa=${spec.gqa} kvh=${spec.numKvHeads} bs=${spec.blockSize} seqs=${spec.seqs.map((s) => `${s.queryLen}/${s.seqLen}`).join(',')}${window}`;
  return { label, args, want, wantLse };
}

function check(b: CpuBackend, c: Case): void {
  const out = new Float32Array(c.want.length + 3).fill(12345.5);
  const lse = new Float32Array(c.wantLse.length + 3).fill(12345.5);
  b.pagedAttention({ ...c.args, out: out.subarray(0, c.want.length), lse: lse.subarray(0, c.wantLse.length) });
  expect(compareOutput('out', out.subarray(0, c.want.length), c.want, TOL)?.message, c.label).toBeUndefined();
  expect(compareOutput('lse', lse.subarray(0, c.wantLse.length), c.wantLse, TOL)?.message, c.label).toBeUndefined();
  expect(Array.from(out.subarray(c.want.length)), `${c.label}: wrote past the output`).toEqual([12345.5, 12345.5, 12345.5]);
  expect(Array.from(lse.subarray(c.wantLse.length)), `${c.label}: wrote past lse`).toEqual([12345.5, 12345.5, 12345.5]);
}

/** Decode, prefill, chunked prefill and a 1-token context in one batch. */
const VARLEN: SeqSpec[] = [
  { queryLen: 1, seqLen: 33 },
  { queryLen: 7, seqLen: 7 },
  { queryLen: 17, seqLen: 40 },
  { queryLen: 1, seqLen: 1 },
  { queryLen: 5, seqLen: 21 },
];

/** The attention pairs, each with the head sizes both of its dtypes can hold. */
const ATTN_PAIRS: readonly (readonly [...Pair, headSizes: readonly number[], scales?: 'head'])[] = [
  ['int8_per_token_head', 'int4_g32_f16', [64, 128, 96]],
  ['nvfp4', 'bf16', [64, 128, 80]],
  ['bf16', 'nvfp4', [128]],
  ['e4m3fn', 'e5m2', [64, 128, 40], 'head'],
  ['e5m2fnuz', 'e4m3fnuz', [64], 'head'],
  ['bf16', 'e4m3fn', [64, 40]],
  ['fp8_per_token_head', 'q4_0', [128, 96]],
  ['f32', 'int4_g16', [64, 48]],
  ['int4_g64', 'f16', [128]],
  ['e4m3fn', 'int4_per_token_head', [64, 40]],
  ['int4_g32', 'nvfp4', [96]],
  ['f16', 'bf16', [64, 8]],
];

const sweep: Case[] = [];
ATTN_PAIRS.forEach(([k, v, headSizes, scales], i) => {
  headSizes.forEach((headSize, j) => {
    const gqa = [1, 2, 4, 8][(i + j) % 4]!;
    const numKvHeads = 1 + ((i + j) % 2);
    const blockSize = [16, 1, 32][(i + 2 * j) % 3]!;
    sweep.push(makeCase({ k, v, scales, headSize, gqa, numKvHeads, blockSize, seqs: VARLEN }, 9300 + i * 10 + j));
  });
});

/** The sliding-window cases' pairs and windows (a window of 1: each query attends to itself only). */
const WINDOWS: readonly (readonly [...Pair, window: number])[] = [
  ['int8_per_token_head', 'int4_g32_f16', 1],
  ['bf16', 'e5m2', 7],
  ['e4m3fn', 'q4_0', 64],
];

/** Sliding windows and long contexts split over the pool's threads (flash-decoding partials). */
const special: Case[] = [
  ...WINDOWS.map(([k, v, slidingWindow], i) =>
    makeCase({ k, v, headSize: 64, gqa: 2, numKvHeads: 2, blockSize: 16, seqs: [...VARLEN, { queryLen: 1, seqLen: 300 }] }, 9500 + i, { slidingWindow }),
  ),
  makeCase({ k: 'int8_per_token_head', v: 'int4_g32_f16', headSize: 128, gqa: 8, numKvHeads: 1, blockSize: 32, seqs: [{ queryLen: 1, seqLen: 1025 }] }, 9510),
  makeCase({ k: 'bf16', v: 'e4m3fn', headSize: 64, gqa: 4, numKvHeads: 1, blockSize: 16, seqs: [{ queryLen: 1, seqLen: 1300 }, { queryLen: 3, seqLen: 700 }] }, 9511),
  makeCase({ k: 'nvfp4', v: 'int8_per_token_head', headSize: 96, gqa: 2, numKvHeads: 1, blockSize: 16, seqs: [{ queryLen: 1, seqLen: 1025 }] }, 9512, { slidingWindow: 700 }),
  makeCase({ k: 'e4m3fn', v: 'e5m2', scales: 'head', headSize: 128, gqa: 4, numKvHeads: 2, blockSize: 16, seqs: [{ queryLen: 70, seqLen: 1025 }] }, 9513),
];

describe.skipIf(!avail.available)('pagedAttention on mixed caches: native vs reference', () => {
  for (const isa of isas) {
    it(`${isa}: ${sweep.length} cases (decode, prefill and chunked in one batch, GQA 1-8, head sizes 8-128)`, () => {
      const b = createBackend({ isa, threads: 2 });
      try {
        for (const c of sweep) check(b, c);
      } finally {
        b.dispose();
      }
    });
    it(`${isa}: sliding windows and long contexts split over 4 threads`, () => {
      const b = createBackend({ isa, threads: 4 });
      try {
        for (const c of special) check(b, c);
      } finally {
        b.dispose();
      }
    });
  }

  it('the async variant gives the sync result', async () => {
    const b = createBackend({ threads: 2 });
    try {
      const c = sweep[0]!;
      const sync = new Float32Array(c.want.length);
      const viaAsync = new Float32Array(c.want.length);
      b.pagedAttention({ ...c.args, out: sync });
      await b.pagedAttentionAsync({ ...c.args, out: viaAsync });
      expect(Array.from(viaAsync)).toEqual(Array.from(sync));
    } finally {
      b.dispose();
    }
  });

  it('a uniform cache is untouched by the mixed path: a "mixed" pair of one dtype is the uniform cache', () => {
    // The packed code of equal dtypes is never sent; a cache with valueDtype === dtype takes the uniform kernels.
    const b = createBackend({ threads: 2 });
    try {
      const c = makeCase({ k: 'int8_per_token_head', v: 'int8_per_token_head', headSize: 128, gqa: 4, numKvHeads: 2, blockSize: 16, seqs: VARLEN }, 9600);
      check(b, c);
    } finally {
      b.dispose();
    }
  });
});

/** Run `fn`; the KernelError it throws (or a failure when it throws nothing or something else). */
function kernelError(fn: () => unknown): KernelError {
  try {
    fn();
  } catch (e) {
    if (isKernelError(e)) return e;
    throw e;
  }
  throw new Error('expected a KernelError, nothing was thrown');
}

/** The `{ code, argument }` of what a direct addon call throws. */
function nativeError(fn: () => unknown): { code?: unknown; argument?: unknown } {
  try {
    fn();
  } catch (e) {
    const { code, argument } = e as { code?: unknown; argument?: unknown };
    return { code, argument };
  }
  throw new Error('expected the addon to throw');
}

describe.skipIf(!avail.available)('mixed caches: typed errors', () => {
  const seqs = [{ queryLen: 2, seqLen: 9 }];
  const mixed = makeCase({ k: 'int8_per_token_head', v: 'int4_g32_f16', headSize: 64, gqa: 2, numKvHeads: 2, blockSize: 4, seqs }, 9700);

  it('a native backend without mixed kernels refuses them with UNSUPPORTED on cache.valueDtype, before any native call', () => {
    const load = loadAddon();
    if (!load.ok) throw new Error(load.reason);
    const ctx: NativeContext = new load.addon.Context(1, 'auto', 0);
    let calls = 0;
    const counting = new Proxy(ctx, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver) as unknown;
        if (typeof v !== 'function') return v;
        return (...a: unknown[]) => {
          if (prop === 'reshapeAndCache' || prop === 'pagedAttention') calls++;
          return (v as (...x: unknown[]) => unknown).apply(target, a);
        };
      },
    });
    /** The shared adapter with kernels for the write-time-scaled dtypes but not for mixed caches (a GPU backend's shape). */
    class NoMixed extends NativeKernelBackend<NativeContext> {
      protected override kvQuantKernels(): boolean {
        return true;
      }
    }
    const b = new NoMixed('no-mixed', { description: 'test', simd: 'none', threads: 1 } as never, counting);
    try {
      const e = kernelError(() => b.pagedAttention({ ...mixed.args, out: new Float32Array(mixed.want.length) }));
      expect({ code: e.code, argument: e.argument }).toEqual({ code: 'UNSUPPORTED', argument: 'cache.valueDtype' });
      expect(e.message).toContain("'int8_per_token_head'");
      expect(e.message).toContain("'int4_g32_f16'");
      const n = 2 * 2 * 64;
      const w = kernelError(() =>
        b.reshapeAndCache({ key: new Float32Array(n), value: new Float32Array(n), slotMapping: Int32Array.of(0, 1), numTokens: 2, cache: cloneKvCache(mixed.args.cache) }),
      );
      expect({ code: w.code, argument: w.argument }).toEqual({ code: 'UNSUPPORTED', argument: 'cache.valueDtype' });
      expect(calls).toBe(0);
      // Uniform caches still run through it.
      const uni = makeCase({ k: 'bf16', v: 'bf16', headSize: 64, gqa: 2, numKvHeads: 2, blockSize: 4, seqs }, 9701);
      const out = new Float32Array(uni.want.length);
      b.pagedAttention({ ...uni.args, out });
      expect(calls).toBe(1);
      expect(compareOutput('out', out, uni.want, TOL)).toBeUndefined();
    } finally {
      b.dispose();
    }
  });

  it('a V pool sized or typed for the K dtype is a SHAPE_MISMATCH / WRONG_ARRAY_TYPE on cache.value', () => {
    const b = createBackend({ threads: 1 });
    try {
      const c = mixed.args.cache;
      const kSized = { ...c, value: new Uint8Array(c.key.length) };
      expect(kSized.value.length).not.toBe(c.value.length);
      const e = kernelError(() => b.pagedAttention({ ...mixed.args, cache: kSized, out: new Float32Array(mixed.want.length) }));
      expect({ code: e.code, argument: e.argument }).toEqual({ code: 'SHAPE_MISMATCH', argument: 'cache.value' });
      const f16V = makeCase({ k: 'bf16', v: 'f16', headSize: 64, gqa: 1, numKvHeads: 1, blockSize: 4, seqs }, 9702);
      const wrongKind = { ...f16V.args.cache, value: new Uint8Array(f16V.args.cache.value.length) as unknown as Uint16Array };
      const t = kernelError(() => b.pagedAttention({ ...f16V.args, cache: wrongKind, out: new Float32Array(f16V.want.length) }));
      expect({ code: t.code, argument: t.argument }).toEqual({ code: 'WRONG_ARRAY_TYPE', argument: 'cache.value' });
    } finally {
      b.dispose();
    }
  });

  it('the addon re-checks every pool against its own dtype, the packed code, the scales and the FP8 query', () => {
    const load = loadAddon();
    if (!load.ok) throw new Error(load.reason);
    const ctx: NativeContext = new load.addon.Context(1, 'auto', 0);
    try {
      const c = mixed.args.cache;
      const a = mixed.args;
      const packed = 33 | ((40 + 1) << 8); // int8_per_token_head K, int4_g32_f16 V
      const call = (code: number, key: KvLayerCache['key'], value: KvLayerCache['value'], kScale = c.kScale, vScale = c.vScale, fp8Query = 0) =>
        ctx.pagedAttention(
          a.query as Float32Array,
          new Float32Array(mixed.want.length),
          code,
          key,
          value,
          c.numBlocks,
          c.blockSize,
          c.numKvHeads,
          c.headSize,
          kScale,
          vScale,
          a.queryStartLoc,
          a.seqLens,
          a.blockTables,
          a.maxBlocksPerSeq,
          a.numSeqs,
          a.numHeads,
          0.125,
          0,
          fp8Query,
          new Float32Array(1).fill(1),
          null,
        );
      expect(() => call(packed, c.key, c.value)).not.toThrow();
      // The V pool sized for K's dtype (both byte pools), then a K-sized pool passed as V under a uniform code.
      expect(nativeError(() => call(packed, c.key, c.key))).toEqual({ code: 'SHAPE_MISMATCH', argument: 'cache.value' });
      expect(nativeError(() => call(33, c.key, c.value))).toEqual({ code: 'SHAPE_MISMATCH', argument: 'cache.value' });
      // Not a KV dtype code in the V half.
      expect(nativeError(() => call(33 | ((7 + 1) << 8), c.key, c.value))).toEqual({ code: 'INVALID_ARGUMENT', argument: 'cache.valueDtype' });
      // FP8 pools: e4m3fn K with per-head scales, e5m2 V with a per-tensor one (lengths differ); a bad V scale.
      const f = makeCase({ k: 'e4m3fn', v: 'e5m2', scales: 'head', headSize: 64, gqa: 2, numKvHeads: 2, blockSize: 4, seqs }, 9703).args.cache;
      const fp8 = 3 | ((4 + 1) << 8);
      expect(() => call(fp8, f.key, f.value, f.kScale, f.vScale)).not.toThrow();
      expect(nativeError(() => call(fp8, f.key, f.value, f.kScale, Float32Array.of(1)))).toEqual({ code: 'INVALID_SCALE', argument: 'cache.vScale' });
      expect(nativeError(() => call(fp8, f.key, f.value, f.kScale, Float32Array.of(1, 0)))).toMatchObject({ code: 'INVALID_SCALE' });
      // The FP8 query needs one FP8 dtype for K and V.
      expect(nativeError(() => call(fp8, f.key, f.value, f.kScale, f.vScale, 1))).toEqual({ code: 'INVALID_ARGUMENT', argument: 'fp8Query' });
    } finally {
      ctx.dispose();
    }
  });

  it('fp8Query on a mixed FP8 cache is refused before any native call', () => {
    const b = createBackend({ threads: 1 });
    try {
      const f = makeCase({ k: 'e4m3fn', v: 'e5m2', headSize: 64, gqa: 2, numKvHeads: 2, blockSize: 4, seqs }, 9704);
      const e = kernelError(() => b.pagedAttention({ ...f.args, out: new Float32Array(f.want.length), fp8Query: {} }));
      expect(e.code).toBe('INVALID_ARGUMENT');
    } finally {
      b.dispose();
    }
  });
});
