import fc from 'fast-check';
import { seededNormal } from '@kvq/test-utils';
import { describe, expect, it } from 'vitest';
import { decodeFp8, encodeFp8 } from './codec.js';
import { FP8_FORMAT_NAMES } from './formats.js';
import { dequantizeScaled, PER_TENSOR, quantizeScaled, validateScales, type ScaleLayout } from './scaled.js';

function randomTensor(n: number, seed: number, spread = 100): Float32Array {
  const g = seededNormal(seed);
  return Float32Array.from({ length: n }, () => g() * spread);
}

/** The per-element scale index each layout implies, written out longhand for [T, H, D]. */
function scaleIndex(layout: ScaleLayout, i: number, H: number, D: number): number {
  const t = Math.floor(i / (H * D));
  const h = Math.floor(i / D) % H;
  switch (layout.granularity) {
    case 'tensor':
      return 0;
    case 'head':
      return h;
    case 'token':
      return t;
    case 'token_head':
      return t * H + h;
  }
}

describe('scaled quantization', () => {
  const T = 5;
  const H = 3;
  const D = 8;
  const layouts: [ScaleLayout, number][] = [
    [PER_TENSOR, 1],
    [{ granularity: 'head', numHeads: H, headSize: D }, H],
    [{ granularity: 'token', tokenSize: H * D }, T],
    [{ granularity: 'token_head', numHeads: H, headSize: D }, T * H],
  ];
  for (const format of FP8_FORMAT_NAMES) {
    for (const [layout, numScales] of layouts) {
      it(`${format}/${layout.granularity}: q = encode(f32(x / s)), x' = f32(decode(q) * s), element by element`, () => {
        const x = randomTensor(T * H * D, 7);
        const scales = Float32Array.from({ length: numScales }, (_, i) => Math.fround(0.05 + i * 0.37));
        const q = quantizeScaled(x, scales, layout, format);
        const back = dequantizeScaled(q, scales, layout, format);
        for (let i = 0; i < x.length; i++) {
          const s = scales[scaleIndex(layout, i, H, D)]!;
          expect(q[i]).toBe(encodeFp8(Math.fround(x[i]! / s), format));
          const want = Math.fround(decodeFp8(q[i]!, format) * s);
          expect(Object.is(back[i], want) || (Number.isNaN(back[i]) && Number.isNaN(want))).toBe(true);
        }
      });
    }
  }

  it('a power-of-two scale changes nothing but the exponent (within range)', () => {
    fc.assert(
      fc.property(fc.float({ min: -100, max: 100, noNaN: true }), fc.integer({ min: -3, max: 3 }), (x, k) => {
        const s = 2 ** k;
        const q1 = quantizeScaled(Float32Array.of(x * s), s, PER_TENSOR, 'e4m3fn');
        const q2 = quantizeScaled(Float32Array.of(x), 1, PER_TENSOR, 'e4m3fn');
        // Equal unless x/1 or x*s/s lands in the subnormal range or saturates, which powers of two up to 8 with
        // |x| <= 100 and > 2^-6 cannot change; restrict to that range.
        return Math.abs(x) < 2 ** -6 || q1[0] === q2[0];
      }),
    );
  });

  it('per-tensor scale 1 dequantizes exactly like a plain decode (NaN bits included)', () => {
    const codes = new Uint8Array(256).map((_, i) => i);
    const a = new Uint32Array(dequantizeScaled(codes, 1, PER_TENSOR, 'e4m3fn').buffer);
    expect(a[0x7f]).toBe(0x7fffffff);
    expect(a[0x38]).toBe(0x3f800000);
  });

  it('validates scales and shapes with typed errors naming the problem', () => {
    const x = new Float32Array(24);
    expect(() => quantizeScaled(x, [1, 2], PER_TENSOR, 'e4m3fn')).toThrow(expect.objectContaining({ code: 'SCALE_SHAPE' }));
    expect(() => quantizeScaled(x, [0], PER_TENSOR, 'e4m3fn')).toThrow(expect.objectContaining({ code: 'INVALID_SCALE' }));
    expect(() => quantizeScaled(x, [NaN], PER_TENSOR, 'e4m3fn')).toThrow(/scales\[0\] = NaN/);
    expect(() => quantizeScaled(x, [Infinity], PER_TENSOR, 'e4m3fn')).toThrow(/finite/);
    expect(() => quantizeScaled(x, [-1], PER_TENSOR, 'e4m3fn')).toThrow(/> 0/);
    expect(() => quantizeScaled(x, [1e-50], PER_TENSOR, 'e4m3fn')).toThrow(/float32/); // underflows to 0 as float32
    expect(() => quantizeScaled(x, [1, 1, 1], { granularity: 'head', numHeads: 3, headSize: 5 }, 'e4m3fn')).toThrow(
      expect.objectContaining({ code: 'SHAPE_MISMATCH' }),
    );
    expect(() => quantizeScaled(x, [1], { granularity: 'head', numHeads: 0, headSize: 8 }, 'e4m3fn')).toThrow(/numHeads/);
    expect(() => quantizeScaled(x, [1], PER_TENSOR, 'e4m3fn', { out: new Uint8Array(3) })).toThrow(
      expect.objectContaining({ code: 'OUTPUT_TOO_SMALL' }),
    );
    expect(() => validateScales([1, 2, 3], 3, 'k_scale')).not.toThrow();
    expect(() => validateScales([1, -2, 3], 3, 'k_scale')).toThrow(/k_scale\[1\] = -2/);
  });
});
