import { KV_QUANT_DTYPES } from '@kvq/cache';
import { describe, expect, it } from 'vitest';
import type { BackendInfo, WeightMatrix } from '../contract.js';
import { STANDARD_NATIVE_OPS } from '../validate.js';
import { KernelError } from '../errors.js';
import { DTYPE_CODE, NATIVE_ABI, NativeKernelBackend, nativeKvCacheCode, nativeKvDtypeCode, weightArgs, type NativeKernelOps } from './ops.js';

describe('native facade: weight arguments (csrc/napi_args.h readWeight)', () => {
  it('ABI 5 and the dtype codes of csrc/ops.h', () => {
    expect(NATIVE_ABI).toBe(5);
    expect([DTYPE_CODE.f32, DTYPE_CODE.bf16, DTYPE_CODE.f16]).toEqual([0, 1, 2]);
    expect([DTYPE_CODE.e4m3fn, DTYPE_CODE.e5m2, DTYPE_CODE.e4m3fnuz, DTYPE_CODE.e5m2fnuz]).toEqual([3, 4, 5, 6]);
    const ggml = ['q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q4_k', 'q5_k', 'q6_k'] as const;
    expect(ggml.map((d) => DTYPE_CODE[d])).toEqual([16, 17, 18, 19, 20, 21, 22, 23]);
    expect([DTYPE_CODE.fp8_e4m3, DTYPE_CODE.int8, DTYPE_CODE.int4]).toEqual([24, 25, 26]);
  });

  it('write-time-scaled KV dtypes: codes 32..40 (csrc/ops.h kKvFp8PerTokenHead..kKvInt4G32F16) only for a backend with their kernels', () => {
    expect(KV_QUANT_DTYPES.map((d) => nativeKvDtypeCode(d, 'pagedAttention', true))).toEqual([32, 33, 34, 35, 36, 37, 38, 39, 40]);
    for (const d of KV_QUANT_DTYPES) {
      let err: unknown;
      try {
        nativeKvDtypeCode(d, 'reshapeAndCache');
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(KernelError);
      expect((err as KernelError).code).toBe('UNSUPPORTED');
      expect((err as KernelError).message).toContain(`'${d}'`);
    }
    expect(nativeKvDtypeCode('e4m3fn', 'pagedAttention', true)).toBe(3);
  });

  it('a mixed cache passes the packed code kCode | ((vCode + 1) << 8); a uniform one its code alone', () => {
    expect(nativeKvCacheCode({ dtype: 'bf16', valueDtype: 'bf16' }, 'pagedAttention')).toBe(1);
    expect(nativeKvCacheCode({ dtype: 'int8_per_token_head', valueDtype: 'int8_per_token_head' }, 'pagedAttention', true)).toBe(33);
    expect(nativeKvCacheCode({ dtype: 'int8_per_token_head', valueDtype: 'int4_g32_f16' }, 'pagedAttention', true, true)).toBe(33 | (41 << 8));
    expect(nativeKvCacheCode({ dtype: 'bf16', valueDtype: 'e4m3fn' }, 'reshapeAndCache', false, true)).toBe(1 | (4 << 8));
    expect(nativeKvCacheCode({ dtype: 'f32', valueDtype: 'e5m2fnuz' }, 'reshapeAndCache', false, true)).toBe(0 | (7 << 8));
    const err = (f: () => unknown): KernelError => {
      try {
        f();
      } catch (e) {
        if (e instanceof KernelError) return e;
      }
      throw new Error('expected a KernelError');
    };
    // Without mixed kernels: UNSUPPORTED on cache.valueDtype naming both dtypes.
    const m = err(() => nativeKvCacheCode({ dtype: 'bf16', valueDtype: 'e4m3fn' }, 'pagedAttention', true));
    expect([m.code, m.argument]).toEqual(['UNSUPPORTED', 'cache.valueDtype']);
    expect(m.message).toMatch(/'bf16'.*'e4m3fn'/);
    // With them but without the write-time-scaled kernels: the V pool's dtype is named.
    const q = err(() => nativeKvCacheCode({ dtype: 'bf16', valueDtype: 'nvfp4' }, 'pagedAttention', false, true));
    expect([q.code, q.argument]).toEqual(['UNSUPPORTED', 'cache.valueDtype']);
  });

  it('dense and GGML weights pass no scale, zero point or group size', () => {
    const data = new Uint8Array(2 * 18);
    const w: WeightMatrix = { dtype: 'q4_0', data, rows: 2, cols: 32 };
    expect(weightArgs(w)).toEqual([data, 17, 2, 32, null, null, 0]);
    const f = new Float32Array(6);
    expect(weightArgs({ dtype: 'f32', data: f, rows: 2, cols: 3 })).toEqual([f, 0, 2, 3, null, null, 0]);
  });

  it('compressed-tensors weights pass their scale; int4 its zero point and group size', () => {
    const scale = Float32Array.of(0.5, 0.25);
    const i8 = new Int8Array(8);
    expect(weightArgs({ dtype: 'int8', data: i8, rows: 2, cols: 4, scale })).toEqual([i8, 25, 2, 4, scale, null, 0]);
    const codes = new Uint8Array(8);
    expect(weightArgs({ dtype: 'fp8_e4m3', data: codes, rows: 2, cols: 4, scale: Float32Array.of(2) })).toEqual([
      codes,
      24,
      2,
      4,
      Float32Array.of(2),
      null,
      0,
    ]);
    const packed = new Uint8Array(4);
    const zp = new Int8Array(4);
    const s4 = new Float32Array(4);
    expect(weightArgs({ dtype: 'int4', data: packed, rows: 2, cols: 4, scale: s4, zeroPoint: zp, groupSize: 2 })).toEqual([
      packed,
      26,
      2,
      4,
      s4,
      zp,
      2,
    ]);
    // A symmetric int4 weight: no zero point.
    expect(weightArgs({ dtype: 'int4', data: packed, rows: 2, cols: 4, scale: s4, groupSize: 2 })[5]).toBeNull();
  });
});

describe('NativeKernelBackend: the standard ops come from STANDARD_NATIVE_OPS', () => {
  class FakeBackend extends NativeKernelBackend<NativeKernelOps> {}
  /** A context whose ops record their positional arguments. */
  function fakeContext(omit: readonly string[] = []): { ctx: NativeKernelOps; calls: [string, unknown[]][] } {
    const calls: [string, unknown[]][] = [];
    const ctx = Object.fromEntries(
      [...Object.keys(STANDARD_NATIVE_OPS), 'dispose']
        .filter((op) => !omit.includes(op))
        .map((op) => [op, (...args: unknown[]) => void calls.push([op, args])]),
    ) as unknown as NativeKernelOps;
    return { ctx, calls };
  }
  const info = { version: '0', isa: 'fake', simd: 'none', threads: 1 } as unknown as BackendInfo;

  it('installs one method per standard op, validating first, then one positional call', () => {
    const { ctx, calls } = fakeContext();
    const b = new FakeBackend('fake', info, ctx);
    for (const op of Object.keys(STANDARD_NATIVE_OPS)) expect(typeof (b as unknown as Record<string, unknown>)[op]).toBe('function');
    const x = Float32Array.of(1, 3, 2, 0);
    const out = new Int32Array(2);
    b.argmax({ x, out, rows: 2, cols: 2 });
    expect(calls).toEqual([['argmax', [x, out, 2, 2]]]);
    expect(() => b.argmax({ x, out, rows: 3, cols: 2 })).toThrow(expect.objectContaining({ code: 'SHAPE_MISMATCH', argument: 'x' }));
    expect(calls).toHaveLength(1);
  });

  it('addon errors become KernelErrors naming the op', () => {
    const { ctx } = fakeContext();
    (ctx as unknown as Record<string, unknown>).softmax = () => {
      throw Object.assign(new Error('boom'), { code: 'OUT_OF_RANGE', argument: 'x' });
    };
    const b = new FakeBackend('fake', info, ctx);
    const x = new Float32Array(2);
    expect(() => b.softmax({ x, out: new Float32Array(2), rows: 1, cols: 2 })).toThrow(
      expect.objectContaining({ code: 'OUT_OF_RANGE', message: expect.stringContaining('softmax') }),
    );
  });

  it('a binary without one of the standard ops (a stale build) is refused with BACKEND_UNAVAILABLE', () => {
    const { ctx } = fakeContext(['argmax']);
    expect(() => new FakeBackend('fake', info, ctx)).toThrow(
      expect.objectContaining({ code: 'BACKEND_UNAVAILABLE', message: expect.stringMatching(/no argmax op: it is a stale build/) }),
    );
  });
});
