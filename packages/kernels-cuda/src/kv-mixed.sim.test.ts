/**
 * Mixed K/V precision caches (`cache.valueDtype` other than `cache.dtype`) on the GPU kernels, run by the CUDA
 * simulator at warp 32 and 64 (csrc/kvquant.cu's mixed path: each pool written by its own dtype's rule, decoded by its
 * own dtype inside a correctness-first attention kernel):
 *
 * - `reshapeAndCache` writes both pools byte-identical to the reference backend (dense with write-time-scaled both
 *   ways, two write-time-scaled layouts, two FP8 formats with per-head scales, FP8 with a dense or write-time-scaled
 *   pool, nvfp4 on either side), padding slots skipped and pre-existing content kept;
 * - `pagedAttention` matches the reference within the attention parity tolerance on decode, prefill and chunked
 *   batches, GQA, sliding windows, the lse output;
 * - resident pools (`residentCaches`, each pool sized by its own dtype) and pools given to the device (`attachCache`:
 *   device-only writes, block moves and copy-on-write copies per pool) give the results of the copy-per-call path;
 * - the addon declares the kernels, reads the packed dtype code, and still refuses the FP8 query on such a cache; an
 *   addon without the declaration (a binary built before the kernels) is refused before any native call.
 *
 * A missing simulator build skips with the reason, except in CI (`KVQ_REQUIRE_GPU_COMPILERS=1`), where it fails.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createReferenceBackend, type KvLayerCache, type PagedAttentionArgs } from '@kvq/kernels';
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
import { createGpuBackend, type GpuBackend } from './backend.js';
import { createSimBackend, SIM_WARPS, simAvailability, simSpec, type SimWarp } from './sim.js';

const required = process.env.KVQ_REQUIRE_GPU_COMPILERS === '1';
const reference = createReferenceBackend();
const TOL = DEFAULT_TOLERANCES.pagedAttention;

type KvDtype = KvLayerCache['dtype'];

const bytes = (a: ArrayBufferView): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/** Run `f` with a simulator backend of `warp`, disposing it after. */
function withSim<T>(warp: SimWarp, f: (gpu: GpuBackend) => T): T {
  const gpu = createSimBackend({ warp });
  try {
    return f(gpu);
  } finally {
    gpu.dispose();
  }
}

/** (K dtype, V dtype, scale granularity, head size) of the write cases. */
const WRITE_PAIRS: readonly (readonly [k: KvDtype, v: KvDtype, scales: 'tensor' | 'head', headSize: number])[] = [
  ['int8_per_token_head', 'int4_g32_f16', 'tensor', 64],
  ['bf16', 'nvfp4', 'tensor', 32],
  ['nvfp4', 'f16', 'tensor', 64],
  ['e4m3fn', 'e5m2', 'head', 32],
  ['e5m2fnuz', 'e4m3fnuz', 'head', 16],
  ['f32', 'int4_g16', 'tensor', 48],
  ['fp8_per_token_head', 'q4_0', 'tensor', 64],
  ['e4m3fn', 'int4_per_token_head', 'head', 32],
  ['int4_g64', 'bf16', 'tensor', 64],
  ['int4_g32', 'nvfp4', 'tensor', 32],
];

/** A mixed cache with both pools filled with content that must survive where no token is written. */
function filledCache(k: KvDtype, v: KvDtype, scales: 'tensor' | 'head', numBlocks: number, blockSize: number, numKvHeads: number, headSize: number): KvLayerCache {
  return fillKvPools(makeKvCache({ dtype: k, valueDtype: v, numBlocks, blockSize, numKvHeads, headSize, scales, amax: 3 }));
}

interface AttnCase {
  label: string;
  args: Omit<PagedAttentionArgs, 'out'>;
  want: Float32Array;
  wantLse: Float32Array;
  batch: AttentionBatch;
}

/** A batch written by the reference into a mixed cache, with the reference's output and lse over it. */
function attnCase(
  spec: { k: KvDtype; v: KvDtype; scales?: 'tensor' | 'head'; headSize: number; gqa: number; numKvHeads: number; blockSize: number; seqs: readonly SeqSpec[] },
  seed: number,
  extra: Partial<PagedAttentionArgs> = {},
): AttnCase {
  const numHeads = spec.numKvHeads * spec.gqa;
  const scales = spec.scales ?? 'tensor';
  const batch = buildAttentionBatch(
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
  return { label, args, want, wantLse, batch };
}

/** The GPU's output and lse for a case, compared with the reference's; nothing written past either array. */
function checkAttention(gpu: GpuBackend, c: AttnCase, cache: KvLayerCache = c.args.cache): Float32Array {
  const out = new Float32Array(c.want.length + 3).fill(12345.5);
  const lse = new Float32Array(c.wantLse.length + 3).fill(12345.5);
  gpu.pagedAttention({ ...c.args, cache, out: out.subarray(0, c.want.length), lse: lse.subarray(0, c.wantLse.length) });
  expect(compareOutput('out', out.subarray(0, c.want.length), c.want, TOL)?.message, c.label).toBeUndefined();
  expect(compareOutput('lse', lse.subarray(0, c.wantLse.length), c.wantLse, TOL)?.message, c.label).toBeUndefined();
  expect(Array.from(out.subarray(c.want.length)), `${c.label}: wrote past the output`).toEqual([12345.5, 12345.5, 12345.5]);
  expect(Array.from(lse.subarray(c.wantLse.length)), `${c.label}: wrote past lse`).toEqual([12345.5, 12345.5, 12345.5]);
  return out.slice(0, c.want.length);
}

/** Decode, prefill, chunked prefill and a 1-token context in one batch. */
const VARLEN: readonly SeqSpec[] = [
  { queryLen: 1, seqLen: 33 },
  { queryLen: 7, seqLen: 7 },
  { queryLen: 9, seqLen: 40 },
  { queryLen: 1, seqLen: 1 },
  { queryLen: 3, seqLen: 150 },
];

/** (K, V, head size, scales) of the attention sweep: the kinds of pairs of the write cases. */
const ATTN_PAIRS: readonly (readonly [k: KvDtype, v: KvDtype, headSize: number, scales?: 'head'])[] = [
  ['int8_per_token_head', 'int4_g32_f16', 64],
  ['nvfp4', 'bf16', 80],
  ['bf16', 'nvfp4', 32],
  ['e4m3fn', 'e5m2', 32, 'head'],
  ['e5m2fnuz', 'e4m3fnuz', 16, 'head'],
  ['f32', 'int4_g16', 48],
  ['fp8_per_token_head', 'q4_0', 64],
  ['e4m3fn', 'int4_per_token_head', 40, 'head'],
  ['int4_g64', 'f16', 128],
  ['f16', 'bf16', 8],
];

const sweep: AttnCase[] = ATTN_PAIRS.map(([k, v, headSize, scales], i) =>
  attnCase({ k, v, scales, headSize, gqa: [1, 2, 4, 8][i % 4]!, numKvHeads: 1 + (i % 2), blockSize: [16, 1, 32][i % 3]!, seqs: VARLEN }, 7100 + i),
);

/** Sliding windows (1: each query sees itself only) and a context longer than one tile of the kernel's 128 keys. */
const windows: AttnCase[] = [
  attnCase({ k: 'int8_per_token_head', v: 'int4_g32_f16', headSize: 64, gqa: 2, numKvHeads: 2, blockSize: 16, seqs: VARLEN }, 7200, { slidingWindow: 1 }),
  attnCase({ k: 'bf16', v: 'e5m2', headSize: 32, gqa: 4, numKvHeads: 1, blockSize: 16, seqs: VARLEN }, 7201, { slidingWindow: 7 }),
  attnCase({ k: 'e4m3fn', v: 'q4_0', headSize: 64, gqa: 2, numKvHeads: 1, blockSize: 16, seqs: [{ queryLen: 2, seqLen: 300 }, ...VARLEN] }, 7202, { slidingWindow: 140 }),
  attnCase({ k: 'nvfp4', v: 'int8_per_token_head', headSize: 32, gqa: 1, numKvHeads: 2, blockSize: 16, seqs: [{ queryLen: 1, seqLen: 400 }] }, 7203),
];

for (const warp of SIM_WARPS) {
  const avail = simAvailability(warp);
  describe.skipIf(!avail.available && !required)(
    `mixed K/V caches on the CUDA simulator, warp ${warp}${avail.available ? '' : `: not built (${avail.reason})`}`,
    () => {
      it('the addon declares kernels for them (mixedKvKernels)', () => {
        const addon = createRequire(import.meta.url)(simSpec(warp).defaultPaths()[0]!) as { mixedKvKernels?: unknown };
        expect(addon.mixedKvKernels).toBe(true);
      });

      it(`reshapeAndCache: ${WRITE_PAIRS.length} (K, V) pairs byte-identical to the reference, padding slots, NaN / ±Inf / zero heads, other slots kept`, () => {
        withSim(warp, (gpu) => {
          WRITE_PAIRS.forEach(([k, v, scales, headSize], i) => {
            const r = rng(7000 + i);
            const numKvHeads = 1 + (i % 3);
            const blockSize = [1, 16, 32][i % 3]!;
            const numTokens = [7, 17, 33][i % 3]!;
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
            const onGpu = filledCache(k, v, scales, numBlocks, blockSize, numKvHeads, headSize);
            const viaRef = cloneKvCache(onGpu);
            const before = cloneKvCache(onGpu);
            gpu.reshapeAndCache({ key, value, slotMapping, numTokens, cache: onGpu });
            reference.reshapeAndCache({ key, value, slotMapping, numTokens, cache: viaRef });
            expect(bytes(onGpu.key).equals(bytes(viaRef.key)), `${label}: K pool`).toBe(true);
            expect(bytes(onGpu.value).equals(bytes(viaRef.value)), `${label}: V pool`).toBe(true);
            // The write changed both pools (the comparison is not between two untouched copies).
            expect(bytes(onGpu.key).equals(bytes(before.key)), `${label}: K pool unchanged`).toBe(false);
            expect(bytes(onGpu.value).equals(bytes(before.value)), `${label}: V pool unchanged`).toBe(false);
          });
        });
      });

      it(`pagedAttention: ${sweep.length} pairs vs the reference (decode, prefill, chunked in one batch; GQA 1-8; lse)`, () => {
        withSim(warp, (gpu) => {
          for (const c of sweep) checkAttention(gpu, c);
        });
      });

      it('pagedAttention: sliding windows and contexts longer than one key tile', () => {
        withSim(warp, (gpu) => {
          for (const c of windows) checkAttention(gpu, c);
        });
      });

      it('resident pools (residentCaches): each pool uploaded at its own size, writes reach device and host, attention identical to the copy-per-call path', () => {
        const c = attnCase({ k: 'bf16', v: 'int4_g32_f16', headSize: 64, gqa: 2, numKvHeads: 2, blockSize: 16, seqs: VARLEN }, 7300);
        const plain = createSimBackend({ warp });
        const resident = createSimBackend({ warp, residentCaches: true });
        try {
          const cacheA = cloneKvCache(c.batch.cache);
          const cacheB = cloneKvCache(c.batch.cache);
          const viaRef = cloneKvCache(c.batch.cache);
          // First use uploads both pools; K (Uint16Array) and V (byte pool) have different lengths and element sizes.
          checkAttention(resident, c, cacheB);
          expect(resident.residentBytes).toBe(cacheB.key.byteLength + cacheB.value.byteLength);
          // New tokens into a spare block (no sequence uses it), then a table entry pointing at it.
          const used = new Set(Array.from(c.batch.blockTables).filter((b) => b >= 0));
          let spare = 0;
          while (used.has(spare)) spare++;
          const n = 5;
          const r = rng(7301);
          const key = randomF32(n * 2 * 64, r);
          const value = randomF32(n * 2 * 64, r);
          const slotMapping = Int32Array.from({ length: n }, (_, i) => spare * 16 + i);
          plain.reshapeAndCache({ key, value, slotMapping, numTokens: n, cache: cacheA });
          resident.reshapeAndCache({ key, value, slotMapping, numTokens: n, cache: cacheB });
          reference.reshapeAndCache({ key, value, slotMapping, numTokens: n, cache: viaRef });
          for (const cache of [cacheA, cacheB]) {
            expect(bytes(cache.key).equals(bytes(viaRef.key))).toBe(true);
            expect(bytes(cache.value).equals(bytes(viaRef.value))).toBe(true);
          }
          const tables = c.batch.blockTables.slice();
          tables[0] = spare;
          const o1 = new Float32Array(c.want.length);
          const o2 = new Float32Array(c.want.length);
          const want = new Float32Array(c.want.length);
          plain.pagedAttention({ ...c.args, blockTables: tables, cache: cacheA, out: o1 });
          resident.pagedAttention({ ...c.args, blockTables: tables, cache: cacheB, out: o2 });
          reference.pagedAttention({ ...c.args, blockTables: tables, cache: viaRef, out: want });
          expect(bytes(o2).equals(bytes(o1)), 'resident vs copied pools').toBe(true);
          expect(compareOutput('out', o2, want, TOL)?.message).toBeUndefined();
        } finally {
          plain.dispose();
          resident.dispose();
        }
      });

      it('pools given to the device (attachCache): device-only writes, block moves and copy-on-write copies per pool', () => {
        const c = attnCase({ k: 'int8_per_token_head', v: 'nvfp4', headSize: 32, gqa: 4, numKvHeads: 1, blockSize: 16, seqs: VARLEN }, 7400);
        withSim(warp, (gpu) => {
          const mem = gpu.memory;
          const cache = cloneKvCache(c.batch.cache);
          const viaRef = cloneKvCache(c.batch.cache);
          mem.attachCache(cache);
          expect(gpu.residentBytes).toBe(cache.key.byteLength + cache.value.byteLength);
          checkAttention(gpu, c, cache);
          const used = new Set(Array.from(c.batch.blockTables).filter((b) => b >= 0));
          const spares = Array.from({ length: cache.numBlocks }, (_, b) => b).filter((b) => !used.has(b));
          expect(spares.length).toBeGreaterThanOrEqual(3);
          const [s0, s1, s2] = spares as [number, number, number];
          // A device-only write: the host pools stay as they were until the blocks are moved to the host.
          const n = 9;
          const r = rng(7401);
          const key = randomF32(n * 32, r);
          const value = randomF32(n * 32, r);
          const slotMapping = Int32Array.from({ length: n }, (_, i) => s0 * 16 + i);
          const hostBefore = cloneKvCache(cache);
          gpu.reshapeAndCache({ key, value, slotMapping, numTokens: n, cache });
          reference.reshapeAndCache({ key, value, slotMapping, numTokens: n, cache: viaRef });
          expect(bytes(cache.key).equals(bytes(hostBefore.key))).toBe(true);
          expect(bytes(cache.value).equals(bytes(hostBefore.value))).toBe(true);
          mem.cacheToHost(cache, [s0]);
          expect(bytes(cache.key).equals(bytes(viaRef.key)), 'K pool after cacheToHost').toBe(true);
          expect(bytes(cache.value).equals(bytes(viaRef.value)), 'V pool after cacheToHost').toBe(true);
          // Copy-on-write: block s0 to s1 on the device; each pool copies its own block length.
          mem.copyCacheBlocks(cache, [{ src: s0, dst: s1 }]);
          // Host -> device: the reference's content of another write into block s2.
          const key2 = randomF32(n * 32, r);
          const value2 = randomF32(n * 32, r);
          reference.reshapeAndCache({ key: key2, value: value2, slotMapping: slotMapping.map((s) => s + (s2 - s0) * 16), numTokens: n, cache: viaRef });
          cache.key.set(viaRef.key);
          cache.value.set(viaRef.value);
          mem.cacheFromHost(cache, [s2]);
          // Attention over the copied block and over the block moved in, on the device, vs the reference.
          for (const b of [s1, s2]) {
            const tables = c.batch.blockTables.slice();
            tables[0] = b;
            const expectFrom = b === s1 ? s0 : s2;
            const refTables = c.batch.blockTables.slice();
            refTables[0] = expectFrom;
            const out = new Float32Array(c.want.length);
            const want = new Float32Array(c.want.length);
            gpu.pagedAttention({ ...c.args, blockTables: tables, cache, out });
            reference.pagedAttention({ ...c.args, blockTables: refTables, cache: viaRef, out: want });
            expect(compareOutput('out', out, want, TOL)?.message, `block ${b}`).toBeUndefined();
          }
          mem.detachCache(cache);
          expect(gpu.residentBytes).toBe(0);
          // The detached pools: block s1 holds block s0's bytes in each pool, the rest is the reference's.
          for (const [pool, refPool] of [[cache.key, viaRef.key], [cache.value, viaRef.value]] as const) {
            const per = pool.length / cache.numBlocks;
            const block = (p: typeof pool, b: number) => bytes(p.subarray(b * per, (b + 1) * per));
            expect(block(pool, s1).equals(block(refPool, s0))).toBe(true);
            for (let b = 0; b < cache.numBlocks; b++) if (b !== s1) expect(block(pool, b).equals(block(refPool, b)), `block ${b}`).toBe(true);
          }
        });
      });
    },
  );
}

describe.skipIf(!simAvailability(32).available && !required)('mixed K/V caches at the simulator addon (warp 32)', () => {
  /** `{ code, argument }` of what `f` throws (a KernelError or an addon Error), or a note that it threw nothing. */
  function thrown(f: () => unknown): { code?: unknown; argument?: unknown } | string {
    try {
      f();
    } catch (e) {
      const { code, argument } = e as { code?: unknown; argument?: unknown };
      return { code, argument };
    }
    return 'no throw';
  }

  it('reads the packed dtype code (kCode | ((vCode + 1) << 8)), checks each pool by its own dtype, refuses the FP8 query', () => {
    const c = attnCase({ k: 'e4m3fn', v: 'e5m2', scales: 'head', headSize: 16, gqa: 2, numKvHeads: 2, blockSize: 4, seqs: [{ queryLen: 2, seqLen: 9 }] }, 7500);
    const addon = createRequire(import.meta.url)(simSpec(32).defaultPaths()[0]!) as { Context: new (device: number) => Record<string, (...a: unknown[]) => unknown> };
    const ctx = new addon.Context(0);
    try {
      const a = c.args;
      const cache = a.cache;
      const packed = 3 | ((4 + 1) << 8); // e4m3fn K, e5m2 V
      const call = (code: number, vScale: Float32Array, fp8Query: number, out: Float32Array) =>
        ctx.pagedAttention!(
          a.query, out, code, cache.key, cache.value, cache.numBlocks, cache.blockSize, cache.numKvHeads, cache.headSize, cache.kScale, vScale,
          a.queryStartLoc, a.seqLens, a.blockTables, a.maxBlocksPerSeq, a.numSeqs, a.numHeads, 1 / Math.sqrt(16), 0, fp8Query, new Float32Array(a.numHeads).fill(0.01), null,
        );
      const out = new Float32Array(c.want.length);
      expect(thrown(() => call(packed, cache.vScale, 0, out))).toBe('no throw');
      expect(compareOutput('out', out, c.want, TOL)?.message).toBeUndefined();
      expect(thrown(() => call(packed, Float32Array.of(1), 0, out))).toEqual({ code: 'INVALID_SCALE', argument: 'cache.vScale' });
      expect(thrown(() => call(packed, cache.vScale, 1, out))).toEqual({ code: 'INVALID_ARGUMENT', argument: 'fp8Query' });
      // Not a KV dtype code in the V half.
      expect(thrown(() => call(3 | ((7 + 1) << 8), cache.vScale, 0, out))).toEqual({ code: 'INVALID_ARGUMENT', argument: 'cache.valueDtype' });
    } finally {
      ctx.dispose!();
    }
  });

  it('an addon without the mixedKvKernels flag (built before the mixed kernels) is refused before any native call', () => {
    // The simulator addon re-exported without the flag, as a binary built before it would load.
    const dir = mkdtempSync(join(tmpdir(), 'kvq-old-addon-'));
    const path = join(dir, 'old-addon.cjs');
    writeFileSync(path, `const a = require(${JSON.stringify(simSpec(32).defaultPaths()[0]!)});\nmodule.exports = { ...a, mixedKvKernels: undefined };\n`);
    const old = createGpuBackend({ ...simSpec(32), name: 'cuda-sim-old', addonEnv: 'KVQ_TEST_NO_SUCH_ADDON_ENV', defaultPaths: () => [path] }, { probe: false });
    try {
      const c = attnCase({ k: 'bf16', v: 'e4m3fn', headSize: 16, gqa: 2, numKvHeads: 1, blockSize: 4, seqs: [{ queryLen: 2, seqLen: 9 }] }, 7503);
      expect(thrown(() => old.pagedAttention({ ...c.args, out: new Float32Array(c.want.length) }))).toEqual({ code: 'UNSUPPORTED', argument: 'cache.valueDtype' });
      const w = { key: new Float32Array(16), value: new Float32Array(16), slotMapping: Int32Array.of(2), numTokens: 1, cache: cloneKvCache(c.args.cache) };
      expect(thrown(() => old.reshapeAndCache(w))).toEqual({ code: 'UNSUPPORTED', argument: 'cache.valueDtype' });
      // Uniform caches still run through it.
      const u = attnCase({ k: 'bf16', v: 'bf16', headSize: 16, gqa: 2, numKvHeads: 1, blockSize: 4, seqs: [{ queryLen: 2, seqLen: 9 }] }, 7504);
      checkAttention(old, u);
    } finally {
      old.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the facade refuses the FP8 query on a mixed FP8 cache and a V pool sized for the K dtype, with typed errors', () => {
    const c = attnCase({ k: 'int8_per_token_head', v: 'int4_g32_f16', headSize: 64, gqa: 2, numKvHeads: 2, blockSize: 4, seqs: [{ queryLen: 2, seqLen: 9 }] }, 7501);
    const f = attnCase({ k: 'e4m3fn', v: 'e5m2', headSize: 16, gqa: 2, numKvHeads: 2, blockSize: 4, seqs: [{ queryLen: 2, seqLen: 9 }] }, 7502);
    withSim(32, (gpu) => {
      const kSized = { ...c.args.cache, value: new Uint8Array(c.args.cache.key.length) };
      expect(thrown(() => gpu.pagedAttention({ ...c.args, cache: kSized, out: new Float32Array(c.want.length) }))).toEqual({
        code: 'SHAPE_MISMATCH',
        argument: 'cache.value',
      });
      const e = thrown(() => gpu.pagedAttention({ ...f.args, out: new Float32Array(f.want.length), fp8Query: {} }));
      expect(typeof e === 'object' && e.code).toBe('INVALID_ARGUMENT');
    });
  });
});
