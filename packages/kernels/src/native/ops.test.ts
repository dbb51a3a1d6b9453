import { describe, expect, it } from 'vitest';
import type { WeightMatrix } from '../contract.js';
import { DTYPE_CODE, NATIVE_ABI, weightArgs } from './ops.js';

describe('native facade: weight arguments (csrc/napi_args.h readWeight)', () => {
  it('ABI 3 and the dtype codes of csrc/ops.h', () => {
    expect(NATIVE_ABI).toBe(3);
    expect([DTYPE_CODE.f32, DTYPE_CODE.bf16, DTYPE_CODE.f16]).toEqual([0, 1, 2]);
    expect([DTYPE_CODE.e4m3fn, DTYPE_CODE.e5m2, DTYPE_CODE.e4m3fnuz, DTYPE_CODE.e5m2fnuz]).toEqual([3, 4, 5, 6]);
    const ggml = ['q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q4_k', 'q5_k', 'q6_k'] as const;
    expect(ggml.map((d) => DTYPE_CODE[d])).toEqual([16, 17, 18, 19, 20, 21, 22, 23]);
    expect([DTYPE_CODE.fp8_e4m3, DTYPE_CODE.int8, DTYPE_CODE.int4]).toEqual([24, 25, 26]);
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
