/**
 * IEEE half (f16) and bfloat16 conversions on raw 16-bit patterns, round to nearest even.
 * 16-bit tensors travel through kvq as `Uint16Array` of bits.
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Float32 bit pattern of `x` (after rounding `x` to float32). */
export function f32Bits(x: number): number {
  f32[0] = x;
  return u32[0]!;
}

/** The float32 value of a 32-bit pattern. */
export function f32FromBits(bits: number): number {
  u32[0] = bits >>> 0;
  return f32[0]!;
}

/** bfloat16 bits of `x`, rounded to nearest even; NaN becomes a quiet NaN with the same sign. */
export function f32ToBf16Bits(x: number): number {
  const b = f32Bits(x);
  if ((b & 0x7fffffff) > 0x7f800000) return ((b >>> 16) | 0x0040) & 0xffff;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** The float32 value of bfloat16 bits (exact). */
export function bf16BitsToF32(bits: number): number {
  return f32FromBits((bits & 0xffff) << 16);
}

/** f16 bits of `x`, rounded to nearest even (from float32), overflow to +-inf, NaN to a quiet NaN. */
export function f32ToF16Bits(x: number): number {
  const b = f32Bits(x);
  const sign = (b >>> 16) & 0x8000;
  const a = b & 0x7fffffff;
  if (a > 0x7f800000) return sign | 0x7e00 | ((a >>> 13) & 0x3ff);
  if (a >= 0x477ff000) return sign | 0x7c00; // >= 65520 rounds to inf
  if (a >= 0x38800000) {
    // normal f16: rebias exponent (127 -> 15) and round 13 dropped bits
    return sign | (((a + 0xfff + ((a >>> 13) & 1)) >>> 13) - (112 << 10));
  }
  // subnormal f16 (quantum 2^-24) or zero; |x| * 2^24 is exact in a double, round half to even
  const t = f32FromBits(a) * 16777216;
  return sign | (t + 6755399441055744 - 6755399441055744);
}

let f16Table: Float32Array | undefined;

/** Table of the float32 value of every f16 bit pattern (65536 entries, built once, shared). */
export function f16ToF32Table(): Float32Array {
  if (f16Table) return f16Table;
  const table = new Float32Array(65536);
  const bits = new Uint32Array(table.buffer);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    if (e === 0x1f) bits[h] = sign | 0x7f800000 | (m << 13);
    else if (e !== 0) bits[h] = sign | ((e + 112) << 23) | (m << 13);
    else table[h] = (sign ? -m : m) * 2 ** -24;
  }
  f16Table = table;
  return table;
}

/** The float32 value of f16 bits (exact). */
export function f16BitsToF32(bits: number): number {
  return f16ToF32Table()[bits & 0xffff]!;
}
