import { describe, expect, it } from 'vitest';
import { bf16BitsToF32, f16BitsToF32, f32Bits, f32FromBits, f32ToBf16Bits, f32ToF16Bits } from './half.js';

describe('f16', () => {
  it('every non-NaN f16 pattern round-trips through float32', () => {
    for (let h = 0; h < 65536; h++) {
      const x = f16BitsToF32(h);
      if (Number.isNaN(x)) {
        expect((f32ToF16Bits(x) & 0x7c00) === 0x7c00 && (f32ToF16Bits(x) & 0x3ff) !== 0).toBe(true);
        continue;
      }
      expect(f32ToF16Bits(x)).toBe(h);
    }
  });
  it('rounds to nearest even between neighbours and overflows to inf', () => {
    for (let h = 0; h < 0x7bff; h += 7) {
      const lo = f16BitsToF32(h);
      const hi = f16BitsToF32(h + 1);
      const mid = (lo + hi) / 2;
      expect(f32ToF16Bits(mid)).toBe(h % 2 === 0 ? h : h + 1);
      expect(f32ToF16Bits(f32FromBits(f32Bits(mid) + 1))).toBe(h + 1);
      expect(f32ToF16Bits(f32FromBits(f32Bits(mid) - 1))).toBe(h);
    }
    expect(f32ToF16Bits(65504)).toBe(0x7bff);
    expect(f32ToF16Bits(65519.99)).toBe(0x7bff);
    expect(f32ToF16Bits(65520)).toBe(0x7c00);
    expect(f32ToF16Bits(-1e30)).toBe(0xfc00);
    expect(f32ToF16Bits(2 ** -25)).toBe(0); // tie -> even zero
    expect(f32ToF16Bits(-(2 ** -25) * 1.5)).toBe(0x8001);
  });
});

describe('bf16', () => {
  it('round-trips every non-NaN pattern and rounds ties to even', () => {
    for (let b = 0; b < 65536; b++) {
      const x = bf16BitsToF32(b);
      if (Number.isNaN(x)) continue;
      expect(f32ToBf16Bits(x)).toBe(b);
    }
    expect(f32ToBf16Bits(f32FromBits(0x3f808000))).toBe(0x3f80); // tie, even stays
    expect(f32ToBf16Bits(f32FromBits(0x3f818000))).toBe(0x3f82); // tie, odd rounds up
    expect(f32ToBf16Bits(f32FromBits(0x3f808001))).toBe(0x3f81);
    expect(f32ToBf16Bits(f32FromBits(0x7f7fffff))).toBe(0x7f80); // rounds to inf
    expect(f32ToBf16Bits(NaN) & 0x7fc0).toBe(0x7fc0);
  });
});
