import { describe, expect, it } from 'vitest';
import { decodeFp8, encodeFp8, encodeFp8FromBf16Bits, fp8DecodeTable } from './codec.js';
import { FP8_FORMATS } from './formats.js';
import { bf16BitsToF32 } from './half.js';

// Independent of the encoder's own constants: the spec relates each FNUZ format to its OCP twin bit for bit
// (same pattern = half the value, since the bias is one higher), except 0x80 (NaN, no -0) and the OCP
// special codes (e4m3fn's 0x7F/0xFF NaN -> fnuz 240/-240; e5m2's inf/NaN codes -> fnuz finite values).
const PAIRS = [
  { fnuz: 'e4m3fnuz', ocp: 'e4m3fn', mantissaBits: 3 },
  { fnuz: 'e5m2fnuz', ocp: 'e5m2', mantissaBits: 2 },
] as const;

describe('FNUZ formats', () => {
  for (const { fnuz, ocp, mantissaBits } of PAIRS) {
    it(`${fnuz}: all 256 codes decode to half the ${ocp} value of the same pattern`, () => {
      for (let code = 0; code < 256; code++) {
        const v = decodeFp8(code, fnuz);
        if (code === 0x80) {
          expect(Number.isNaN(v)).toBe(true);
          continue;
        }
        const ocpValue = decodeFp8(code, ocp);
        if (Number.isFinite(ocpValue)) {
          expect(v).toBe(ocpValue / 2);
        } else {
          // top-exponent codes are ordinary finite values in FNUZ: 2^(emax - bias) * (1 + m/2^M)
          const e = (code & 0x7f) >> mantissaBits;
          const m = code & ((1 << mantissaBits) - 1);
          const bias = FP8_FORMATS[fnuz].bias;
          expect(v).toBe((code & 0x80 ? -1 : 1) * 2 ** (e - bias) * (1 + m / (1 << mantissaBits)));
        }
      }
    });

    it(`${fnuz}: all 256 codes round-trip (NaN stays NaN; no -0 code is ever produced)`, () => {
      const table = fp8DecodeTable(fnuz);
      for (let code = 0; code < 256; code++) {
        const v = table[code]!;
        expect(encodeFp8(v, fnuz, 'nosat')).toBe(code);
        expect(encodeFp8(v, fnuz, 'satfinite')).toBe(code);
      }
    });

    it(`${fnuz}: encode(x) equals ${ocp}'s encode(2x) wherever ${ocp} has the same code`, () => {
      // Every bf16 pattern: x and 2x are exact in float32, and rounding commutes with the power-of-two shift.
      const bf16 = new Uint16Array(65536).map((_, i) => i);
      const got = encodeFp8FromBf16Bits(bf16, fnuz);
      let compared = 0;
      for (let i = 0; i < 65536; i++) {
        const x = bf16BitsToF32(i);
        if (!Number.isFinite(x)) continue;
        const twin = encodeFp8(2 * x, ocp, 'nosat');
        const twinValue = decodeFp8(twin, ocp);
        // Only where the OCP code is an ordinary finite nonzero value that exists in both formats.
        if (!Number.isFinite(twinValue) || twinValue === 0 || (twin & 0x7f) > FP8_FORMATS[ocp].maxFiniteCode) continue;
        expect(got[i], `x=${x}`).toBe(twin);
        compared++;
      }
      expect(compared).toBeGreaterThan(4000); // every in-range bf16 value of either sign
    });
  }

  it('e4m3fnuz boundaries: 240 max, 248 overflow tie, 224 effective scale max, NaN 0x80, no -0, subnormals', () => {
    expect(FP8_FORMATS.e4m3fnuz.maxFinite).toBe(240);
    expect(FP8_FORMATS.e4m3fnuz.scaleMax).toBe(224);
    expect(encodeFp8(224, 'e4m3fnuz')).toBe(0x7e);
    expect(encodeFp8(232, 'e4m3fnuz')).toBe(0x7e); // tie 224 (even) / 240 (odd) -> 224
    expect(encodeFp8(232.01, 'e4m3fnuz')).toBe(0x7f);
    expect(encodeFp8(247.99, 'e4m3fnuz', 'nosat')).toBe(0x7f);
    expect(encodeFp8(248, 'e4m3fnuz', 'nosat')).toBe(0x80);
    expect(encodeFp8(248, 'e4m3fnuz', 'satfinite')).toBe(0x7f);
    expect(encodeFp8(-248, 'e4m3fnuz', 'satfinite')).toBe(0xff);
    expect(encodeFp8(NaN, 'e4m3fnuz')).toBe(0x80);
    expect(encodeFp8(-0, 'e4m3fnuz')).toBe(0x00);
    expect(encodeFp8(-(2 ** -12), 'e4m3fnuz')).toBe(0x00); // below half the min subnormal
    expect(encodeFp8(2 ** -10, 'e4m3fnuz')).toBe(0x01);
    expect(encodeFp8(-(2 ** -10), 'e4m3fnuz')).toBe(0x81);
    expect(encodeFp8(2 ** -7, 'e4m3fnuz')).toBe(0x08); // min normal
    expect(encodeFp8(7 * 2 ** -10, 'e4m3fnuz')).toBe(0x07); // max subnormal
  });

  it('e5m2fnuz boundaries: 57344 max, no inf, NaN 0x80, subnormals', () => {
    expect(encodeFp8(57344, 'e5m2fnuz')).toBe(0x7f);
    expect(encodeFp8(Infinity, 'e5m2fnuz')).toBe(0x7f);
    expect(encodeFp8(-Infinity, 'e5m2fnuz', 'nosat')).toBe(0x80);
    expect(encodeFp8(61440, 'e5m2fnuz', 'nosat')).toBe(0x80);
    expect(encodeFp8(2 ** -17, 'e5m2fnuz')).toBe(0x01);
    expect(encodeFp8(-0, 'e5m2fnuz')).toBe(0x00);
  });
});
