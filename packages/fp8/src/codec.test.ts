import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodeFp8,
  decodeFp8Array,
  decodeFp8ToBf16Bits,
  decodeFp8ToF16Bits,
  encodeFp8,
  encodeFp8Array,
  encodeFp8BitRange,
  encodeFp8FromBf16Bits,
  encodeFp8FromF16Bits,
  fp8DecodeTable,
} from './codec.js';
import { Fp8Error } from './errors.js';
import { FP8_FORMAT_NAMES, FP8_FORMATS, type Fp8Format, type Saturation } from './formats.js';
import { bf16BitsToF32, f16BitsToF32, f32Bits, f32FromBits } from './half.js';

/**
 * An obviously-correct (and slow) encoder written from the format definition alone: pick the nearest finite
 * code by exhaustive search, ties to the even code; overflow when |x| rounds past max (i.e. to the value one
 * ulp above max); NaN, overflow and zero encodings per spec/fp8-formats.md.
 */
function referenceEncode(x: number, format: Fp8Format, saturation: Saturation): number {
  const f = FP8_FORMATS[format];
  const table = fp8DecodeTable(format);
  const v = Math.fround(x);
  const negative = v < 0 || Object.is(v, -0);
  if (Number.isNaN(v)) return f.nanCode;
  const mag = Math.abs(v);
  const overflow = (): number => {
    if (saturation === 'satfinite') return (negative ? 0x80 : 0) | f.maxFiniteCode;
    if (f.fnuz) return 0x80;
    if (f.infCodes) return negative ? f.infCodes.negative : f.infCodes.positive;
    return negative ? 0xff : 0x7f;
  };
  const ulpAtMax = f.minSubnormal * 2 ** ((f.maxFiniteCode >> f.mantissaBits) - 1);
  // Far beyond max, distances lose precision in doubles; there is nothing to search.
  if (mag >= f.maxFinite + 2 * ulpAtMax) return overflow();
  let best = -1;
  let bestDist = Infinity;
  const candidates: [number, number][] = [[-1, f.maxFinite + ulpAtMax]];
  for (let code = 0; code <= f.maxFiniteCode; code++) candidates.push([code, table[code]!]);
  for (const [code, value] of candidates) {
    const d = Math.abs(mag - value);
    // -1 (overflow) has an odd neighbour at max iff max's code is odd; treat it as the code after max.
    const parityCode = code === -1 ? f.maxFiniteCode + 1 : code;
    const bestParity = best === -1 ? f.maxFiniteCode + 1 : best;
    if (d < bestDist || (d === bestDist && (parityCode & 1) === 0 && (bestParity & 1) === 1)) {
      best = code;
      bestDist = d;
    }
  }
  if (best === -1) return overflow();
  if (best === 0) return negative && !f.fnuz ? 0x80 : 0;
  return (negative ? 0x80 : 0) | best;
}

const SATURATIONS: Saturation[] = ['satfinite', 'nosat'];

describe('format constants', () => {
  it('match the spec table', () => {
    expect(FP8_FORMATS.e4m3fn).toMatchObject({ bias: 7, maxFinite: 448, maxFiniteCode: 0x7e, minNormal: 2 ** -6, minSubnormal: 2 ** -9, nanCode: 0x7f, infCodes: null });
    expect(FP8_FORMATS.e5m2).toMatchObject({ bias: 15, maxFinite: 57344, maxFiniteCode: 0x7b, minNormal: 2 ** -14, minSubnormal: 2 ** -16, infCodes: { positive: 0x7c, negative: 0xfc } });
    expect(FP8_FORMATS.e4m3fnuz).toMatchObject({ bias: 8, maxFinite: 240, maxFiniteCode: 0x7f, minNormal: 2 ** -7, minSubnormal: 2 ** -10, nanCode: 0x80, hasNegativeZero: false, scaleMax: 224 });
    expect(FP8_FORMATS.e5m2fnuz).toMatchObject({ bias: 16, maxFinite: 57344, maxFiniteCode: 0x7f, minNormal: 2 ** -15, minSubnormal: 2 ** -17, nanCode: 0x80 });
    expect(FP8_FORMATS.e5m2.nanCodes).toEqual([0x7d, 0x7e, 0x7f, 0xfd, 0xfe, 0xff]);
  });
});

describe('encode: known values', () => {
  it('e4m3fn boundaries', () => {
    expect(encodeFp8(448, 'e4m3fn')).toBe(0x7e);
    expect(encodeFp8(464, 'e4m3fn')).toBe(0x7e); // tie between 448 (even) and 480 (overflow) -> 448
    expect(encodeFp8(464.0001, 'e4m3fn')).toBe(0x7e); // saturates
    expect(encodeFp8(464.0001, 'e4m3fn', 'nosat')).toBe(0x7f);
    expect(encodeFp8(-1e9, 'e4m3fn', 'nosat')).toBe(0xff);
    expect(encodeFp8(-Infinity, 'e4m3fn')).toBe(0xfe);
    expect(encodeFp8(NaN, 'e4m3fn')).toBe(0x7f);
    expect(encodeFp8(f32FromBits(0xffc12345), 'e4m3fn')).toBe(0x7f); // negative NaN with payload: sign dropped
    expect(encodeFp8(1, 'e4m3fn')).toBe(0x38);
    expect(encodeFp8(-0, 'e4m3fn')).toBe(0x80);
    expect(encodeFp8(2 ** -9, 'e4m3fn')).toBe(0x01);
    expect(encodeFp8(2 ** -10, 'e4m3fn')).toBe(0x00); // half the min subnormal: tie to even (zero)
    expect(encodeFp8(-(2 ** -10) * 1.0001, 'e4m3fn')).toBe(0x81);
    expect(encodeFp8(-1e-30, 'e4m3fn')).toBe(0x80); // flushes to -0, sign kept
    expect(encodeFp8(1.0625, 'e4m3fn')).toBe(0x38); // tie between 1 (even) and 1.125 -> 1
    expect(encodeFp8(1.1875, 'e4m3fn')).toBe(0x3a); // tie between 1.125 (odd) and 1.25 -> 1.25
  });
  it('e5m2 boundaries', () => {
    expect(encodeFp8(57344, 'e5m2')).toBe(0x7b);
    expect(encodeFp8(61440, 'e5m2')).toBe(0x7b); // tie next to the odd max code -> overflow -> saturates
    expect(encodeFp8(61440, 'e5m2', 'nosat')).toBe(0x7c);
    expect(encodeFp8(61439.99, 'e5m2', 'nosat')).toBe(0x7b);
    expect(encodeFp8(-Infinity, 'e5m2', 'nosat')).toBe(0xfc);
    expect(encodeFp8(Infinity, 'e5m2')).toBe(0x7b);
    expect(encodeFp8(NaN, 'e5m2')).toBe(0x7f);
    expect(encodeFp8(2 ** -16, 'e5m2')).toBe(0x01);
  });
  it('fnuz boundaries', () => {
    expect(encodeFp8(240, 'e4m3fnuz')).toBe(0x7f);
    expect(encodeFp8(247.99, 'e4m3fnuz', 'nosat')).toBe(0x7f);
    expect(encodeFp8(248, 'e4m3fnuz', 'nosat')).toBe(0x80); // tie with odd max -> overflow -> NaN
    expect(encodeFp8(248, 'e4m3fnuz')).toBe(0x7f);
    expect(encodeFp8(-1000, 'e4m3fnuz')).toBe(0xff);
    expect(encodeFp8(-0, 'e4m3fnuz')).toBe(0x00);
    expect(encodeFp8(-1e-30, 'e5m2fnuz')).toBe(0x00);
    expect(encodeFp8(NaN, 'e5m2fnuz')).toBe(0x80);
    expect(encodeFp8(Infinity, 'e5m2fnuz', 'nosat')).toBe(0x80);
  });
});

describe('encode matches the exhaustive-search reference', () => {
  for (const format of FP8_FORMAT_NAMES) {
    for (const saturation of SATURATIONS) {
      it(`${format}/${saturation}: every bf16 bit pattern and random float32 bits`, () => {
        const bf16 = new Uint16Array(65536).map((_, i) => i);
        const got = encodeFp8FromBf16Bits(bf16, format, { saturation });
        const bad: string[] = [];
        for (let i = 0; i < 65536 && bad.length < 5; i += 1) {
          const want = referenceEncode(bf16BitsToF32(i), format, saturation);
          if (got[i] !== want) bad.push(`bf16 0x${i.toString(16)}: got ${got[i]} want ${want}`);
        }
        expect(bad).toEqual([]);
        fc.assert(
          fc.property(fc.integer({ min: 0, max: 0xffffffff }), (bits) => {
            const x = f32FromBits(bits);
            return encodeFp8(x, format, saturation) === referenceEncode(x, format, saturation);
          }),
          { numRuns: 3000 },
        );
      });
    }
  }

  it('adversarial inputs: halfway cases, near-subnormal, just beyond max, NaN payloads', () => {
    for (const format of FP8_FORMAT_NAMES) {
      const f = FP8_FORMATS[format];
      const table = fp8DecodeTable(format);
      const inputs: number[] = [0, -0, Infinity, -Infinity, NaN, f32FromBits(0x7f800001), f32FromBits(0xffffffff), 1e-45, -1e-45];
      for (let c = 0; c < f.maxFiniteCode; c++) {
        const lo = table[c]!;
        const hi = table[c + 1]!;
        const mid = (lo + hi) / 2;
        inputs.push(mid, -mid, f32FromBits(f32Bits(mid) + 1), f32FromBits(f32Bits(mid) - 1), lo, -lo);
      }
      inputs.push(f.maxFinite, f.maxFinite * 1.03125, f.maxFinite * 1.0625, f.maxFinite * 1.1, 3.4e38);
      for (const saturation of SATURATIONS) {
        for (const x of inputs) {
          expect(encodeFp8(x, format, saturation), `${format}/${saturation} x=${x}`).toBe(referenceEncode(x, format, saturation));
        }
      }
    }
  });
});

describe('decode', () => {
  it('every non-NaN code round-trips through encode (all formats)', () => {
    for (const format of FP8_FORMAT_NAMES) {
      const f = FP8_FORMATS[format];
      for (let code = 0; code < 256; code++) {
        if (f.nanCodes.includes(code)) {
          expect(Number.isNaN(decodeFp8(code, format))).toBe(true);
          continue;
        }
        const value = decodeFp8(code, format);
        expect(encodeFp8(value, format, 'nosat'), `${format} code ${code}`).toBe(code);
      }
    }
  });
  it('16-bit decodes are exact', () => {
    const codes = new Uint8Array(256).map((_, i) => i);
    for (const format of FP8_FORMAT_NAMES) {
      const f32 = decodeFp8Array(codes, format);
      const h = decodeFp8ToF16Bits(codes, format);
      const b = decodeFp8ToBf16Bits(codes, format);
      for (let c = 0; c < 256; c++) {
        if (Number.isNaN(f32[c])) {
          expect(h[c]).toBe(0x7fff);
          expect(b[c]).toBe(0x7fff);
        } else {
          expect(f16BitsToF32(h[c]!)).toBe(f32[c]);
          expect(bf16BitsToF32(b[c]!)).toBe(f32[c]);
        }
      }
    }
  });
  it('rejects bad codes', () => {
    expect(() => decodeFp8(256, 'e4m3fn')).toThrow(Fp8Error);
    expect(() => decodeFp8(1.5, 'e4m3fn')).toThrow(/0\.\.255/);
  });
});

describe('bulk paths', () => {
  it('all sources agree with the float32 path', () => {
    const half = new Uint16Array(65536).map((_, i) => i);
    for (const format of FP8_FORMAT_NAMES) {
      for (const saturation of SATURATIONS) {
        const fromHalf = encodeFp8FromF16Bits(half, format, { saturation });
        const widened = new Float32Array(65536).map((_, i) => f16BitsToF32(i));
        expect(fromHalf).toEqual(encodeFp8Array(widened, format, { saturation }));
        const plain = Array.from(widened.subarray(0, 5000));
        expect(encodeFp8Array(plain, format, { saturation })).toEqual(encodeFp8Array(widened.subarray(0, 5000), format, { saturation }));
      }
    }
  });
  it('writes into a caller buffer, respects subarray offsets, and checks its size', () => {
    const backing = new Float32Array([9, 1, 2, 448, 9]);
    const view = backing.subarray(1, 4);
    const out = new Uint8Array(4);
    expect(encodeFp8Array(view, 'e4m3fn', { out })).toBe(out);
    expect(Array.from(out)).toEqual([0x38, 0x40, 0x7e, 0]);
    expect(() => encodeFp8Array(view, 'e4m3fn', { out: new Uint8Array(2) })).toThrow(/needs at least 3/);
    const decoded = new Float32Array(6);
    decodeFp8Array(out.subarray(0, 3), 'e4m3fn', { out: decoded.subarray(2) });
    expect(Array.from(decoded)).toEqual([0, 0, 1, 2, 448, 0]);
  });
  it('encodeFp8BitRange equals encoding each pattern', () => {
    const start = 0x43e00000 - 500;
    const codes = encodeFp8BitRange(start, 1000, 'e4m3fn', { saturation: 'nosat' });
    for (let i = 0; i < 1000; i++) expect(codes[i]).toBe(encodeFp8(f32FromBits(start + i), 'e4m3fn', 'nosat'));
    expect(() => encodeFp8BitRange(2 ** 32 - 1, 2, 'e4m3fn')).toThrow(Fp8Error);
  });
  it('rejects unknown formats and saturation modes with typed errors', () => {
    expect(() => encodeFp8(1, 'e3m4' as Fp8Format)).toThrow(expect.objectContaining({ code: 'UNKNOWN_FORMAT' }));
    expect(() => encodeFp8(1, 'e4m3fn', 'clamp' as Saturation)).toThrow(expect.objectContaining({ code: 'UNKNOWN_SATURATION' }));
  });
});

describe('properties', () => {
  for (const format of FP8_FORMAT_NAMES) {
    it(`${format}: monotone and nearest`, () => {
      const table = fp8DecodeTable(format);
      const max = FP8_FORMATS[format].maxFinite;
      fc.assert(
        fc.property(fc.float({ noNaN: true, min: -max, max }), fc.float({ noNaN: true, min: -max, max }), (a, b) => {
          const [x, y] = a <= b ? [a, b] : [b, a];
          const dx = table[encodeFp8(x, format)]!;
          const dy = table[encodeFp8(y, format)]!;
          if (!(dx <= dy)) return false;
          // nearest: no representable value is strictly closer
          const err = Math.abs(dx - x);
          for (let c = 0; c < 256; c++) {
            const v = table[c]!;
            if (Number.isFinite(v) && Math.abs(v - x) < err) return false;
          }
          return true;
        }),
        { numRuns: 500 },
      );
    });
  }
});
