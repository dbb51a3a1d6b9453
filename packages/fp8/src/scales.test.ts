import { describe, expect, it } from 'vitest';
import { amaxPerHead, amaxTensor, MIN_SCALE, scaleFromAmax, scalesFromAmax } from './scales.js';

describe('scale helpers', () => {
  it('scaleFromAmax = amax / max finite (224 for e4m3fnuz), as float32', () => {
    expect(scaleFromAmax(448, 'e4m3fn')).toBe(1);
    expect(scaleFromAmax(57344, 'e5m2')).toBe(1);
    expect(scaleFromAmax(224, 'e4m3fnuz')).toBe(1);
    expect(scaleFromAmax(1, 'e4m3fn')).toBe(Math.fround(1 / 448));
    expect(scaleFromAmax(10, 'e4m3fn', { headroom: 2 })).toBe(Math.fround(20 / 448));
    expect(scaleFromAmax(200, 'e4m3fn', { maxValue: 200 })).toBe(1); // vLLM calculate_kv_scales style
    expect(scaleFromAmax(0, 'e4m3fn')).toBe(MIN_SCALE);
    expect(Array.from(scalesFromAmax([448, 896], 'e4m3fn'))).toEqual([1, 2]);
  });
  it('rejects bad amax/headroom', () => {
    expect(() => scaleFromAmax(NaN, 'e4m3fn')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => scaleFromAmax(-1, 'e4m3fn')).toThrow(/amax/);
    expect(() => scaleFromAmax(1, 'e4m3fn', { headroom: 0 })).toThrow(/headroom/);
  });
  it('amax per tensor and per head over [tokens, heads, dim]', () => {
    const x = Float32Array.of(1, -5, 2, 3, /* token 2 */ -1, 4, 7, -9);
    expect(amaxTensor(x)).toBe(9);
    expect(Array.from(amaxPerHead(x, 2, 2))).toEqual([5, 9]);
    expect(amaxTensor(Float32Array.of(1, NaN, 2))).toBeNaN();
    expect(Number.isNaN(amaxPerHead(Float32Array.of(1, NaN, 2, 3), 2, 1)[1])).toBe(true);
    expect(() => amaxPerHead(x, 3, 2)).toThrow(expect.objectContaining({ code: 'SHAPE_MISMATCH' }));
  });
});
