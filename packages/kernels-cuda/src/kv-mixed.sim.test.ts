/**
 * Mixed K/V precision caches (`cache.valueDtype` other than `cache.dtype`) on the GPU backend, which has no kernels
 * for them: the facade refuses them with `UNSUPPORTED` on `cache.valueDtype` (naming both dtypes) before any native
 * call, and the addon itself (csrc/napi_args.h readCache without `mixed`) refuses the packed dtype code the same way,
 * on the CUDA simulator. A missing simulator build skips with the reason, except in CI (`KVQ_REQUIRE_GPU_COMPILERS=1`).
 */
import { createRequire } from 'node:module';
import { isKernelError } from '@kvq/kernels';
import { makeKvCache } from '@kvq/kernels/testing';
import { describe, expect, it } from 'vitest';
import { createSimBackend, simAvailability, simSpec } from './sim.js';

const required = process.env.KVQ_REQUIRE_GPU_COMPILERS === '1';
const avail = simAvailability(32);

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

describe.skipIf(!avail.available && !required)(`mixed K/V caches (CUDA simulator)${avail.available ? '' : `: not built (${avail.reason})`}`, () => {
  const cache = makeKvCache({ dtype: 'bf16', valueDtype: 'e4m3fn', numBlocks: 2, blockSize: 4, numKvHeads: 1, headSize: 8, numHeads: 2 });
  const args = {
    query: new Float32Array(2 * 8),
    out: new Float32Array(2 * 8),
    cache,
    queryStartLoc: Int32Array.of(0, 1),
    seqLens: Int32Array.of(3),
    blockTables: Int32Array.of(0, 1),
    maxBlocksPerSeq: 2,
    numSeqs: 1,
    numHeads: 2,
  };

  it('the GPU backend refuses them with UNSUPPORTED on cache.valueDtype, naming both dtypes', () => {
    const gpu = createSimBackend();
    try {
      let message = '';
      try {
        gpu.pagedAttention(args);
      } catch (e) {
        expect(isKernelError(e, 'UNSUPPORTED')).toBe(true);
        message = (e as Error).message;
      }
      expect(message).toMatch(/'bf16'.*'e4m3fn'/);
      expect(thrown(() => gpu.pagedAttention(args))).toEqual({ code: 'UNSUPPORTED', argument: 'cache.valueDtype' });
      const w = { key: new Float32Array(8), value: new Float32Array(8), slotMapping: Int32Array.of(2), numTokens: 1, cache };
      expect(thrown(() => gpu.reshapeAndCache(w))).toEqual({ code: 'UNSUPPORTED', argument: 'cache.valueDtype' });
    } finally {
      gpu.dispose();
    }
  });

  it('the addon refuses the packed dtype code (kCode | ((vCode + 1) << 8)) with UNSUPPORTED on cache.valueDtype', () => {
    const path = simSpec(32).defaultPaths()[0]!;
    const addon = createRequire(import.meta.url)(path) as { Context: new (device: number) => Record<string, (...a: unknown[]) => unknown> };
    const ctx = new addon.Context(0);
    try {
      const packed = 1 | ((3 + 1) << 8); // bf16 K, e4m3fn V
      const c = [cache.key, cache.value, cache.numBlocks, cache.blockSize, cache.numKvHeads, cache.headSize, cache.kScale, cache.vScale];
      expect(thrown(() => ctx.reshapeAndCache!(new Float32Array(8), new Float32Array(8), Int32Array.of(2), 1, packed, ...c))).toEqual({
        code: 'UNSUPPORTED',
        argument: 'cache.valueDtype',
      });
      const attn = [args.queryStartLoc, args.seqLens, args.blockTables, 2, 1, 2, 0.35, 0, 0, new Float32Array(1), null];
      expect(thrown(() => ctx.pagedAttention!(args.query, args.out, packed, ...c, ...attn))).toEqual({ code: 'UNSUPPORTED', argument: 'cache.valueDtype' });
      // The same pools as a uniform bf16 code: the V pool (a byte pool) is refused for its kind.
      expect(thrown(() => ctx.pagedAttention!(args.query, args.out, 1, ...c, ...attn))).toEqual({ code: 'WRONG_ARRAY_TYPE', argument: 'cache.value' });
    } finally {
      ctx.dispose!();
    }
  });
});
