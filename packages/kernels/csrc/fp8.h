// SPDX-License-Identifier: Apache-2.0
//
// FP8 / bf16 / f16 scalar conversions shared by host and device code.
//
// Pure header, no STL, no exceptions, no globals: a later CUDA/HIP build includes it unchanged
// (every function is KVQ_HOST_DEVICE, i.e. `__host__ __device__` under nvcc/hipcc).
//
// Semantics (bit-exact with CUDA's __nv_cvt_float_to_fp8 and with @kvq/fp8):
// - round to nearest, ties to even, from float32;
// - satfinite: |x| beyond max finite (and +-inf) -> +-max finite;
// - nosat: overflow -> e4m3fn: NaN keeping the sign (0x7F/0xFF); e5m2: +-inf (0x7C/0xFC); fnuz: 0x80;
// - NaN input -> 0x7F (OCP formats) / 0x80 (FNUZ), sign dropped;
// - results that round to zero keep the sign (OCP) / are 0x00 (FNUZ has no -0).
// Decoding is exact; NaN codes decode to the float32 bit pattern 0x7FFFFFFF (what CUDA's fp8->half->float gives).
// See docs/spec/fp8-formats.md.
#ifndef KVQ_FP8_H_
#define KVQ_FP8_H_

#include <stdint.h>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define KVQ_HOST_DEVICE __host__ __device__ __forceinline__
#elif defined(_MSC_VER)
#define KVQ_HOST_DEVICE static __forceinline
#else
#define KVQ_HOST_DEVICE static inline __attribute__((always_inline))
#endif
// memcpy for bit casts: the builtin under GCC/Clang (no <string.h> needed), the CRT's (an intrinsic) under MSVC.
#if defined(_MSC_VER) && !defined(__clang__)
#include <string.h>
#define KVQ_MEMCPY memcpy
#else
#define KVQ_MEMCPY __builtin_memcpy
#endif

namespace kvq {

/** FP8 formats, in @kvq/fp8 order. */
enum Fp8Format : int { kE4M3FN = 0, kE5M2 = 1, kE4M3FNUZ = 2, kE5M2FNUZ = 3 };

KVQ_HOST_DEVICE uint32_t f32_as_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  KVQ_MEMCPY(&u, &x, 4);
  return u;
#endif
}

KVQ_HOST_DEVICE float bits_as_f32(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  KVQ_MEMCPY(&x, &u, 4);
  return x;
#endif
}

/** Compile-time constants of one FP8 format. */
template <int F>
struct Fp8Traits;

template <>
struct Fp8Traits<kE4M3FN> {
  static constexpr int kMant = 3, kBias = 7;
  static constexpr uint32_t kMaxCode = 0x7E, kNanCode = 0x7F;
  static constexpr bool kFnuz = false, kHasInf = false;
};
template <>
struct Fp8Traits<kE5M2> {
  static constexpr int kMant = 2, kBias = 15;
  static constexpr uint32_t kMaxCode = 0x7B, kNanCode = 0x7F;
  static constexpr bool kFnuz = false, kHasInf = true;
};
template <>
struct Fp8Traits<kE4M3FNUZ> {
  static constexpr int kMant = 3, kBias = 8;
  static constexpr uint32_t kMaxCode = 0x7F, kNanCode = 0x80;
  static constexpr bool kFnuz = true, kHasInf = false;
};
template <>
struct Fp8Traits<kE5M2FNUZ> {
  static constexpr int kMant = 2, kBias = 16;
  static constexpr uint32_t kMaxCode = 0x7F, kNanCode = 0x80;
  static constexpr bool kFnuz = true, kHasInf = false;
};

/**
 * Encode one float32 (given as its bit pattern) to an FP8 code.
 * Written branch-light (selects, no loops) so compilers vectorize loops over it.
 * The subnormal range is rounded with the float "magic number" trick: adding 2^(23 + q) (q = exponent of the
 * smallest subnormal) makes the FPU round |x| to a multiple of 2^q, ties to even (default rounding mode).
 */
template <int F, bool kSat>
KVQ_HOST_DEVICE uint32_t fp8_encode_bits(uint32_t b) {
  typedef Fp8Traits<F> T;
  const int shift = 23 - T::kMant;
  const uint32_t a = b & 0x7FFFFFFFu;
  const uint32_t s = (b >> 24) & 0x80u;
  const uint32_t min_normal_bits = (uint32_t)(128 - T::kBias) << 23;
  // Normal range: round the float32 mantissa to kMant bits, re-bias the exponent.
  const uint32_t rn = ((a + ((1u << (shift - 1)) - 1u) + ((a >> shift) & 1u)) >> shift) -
                      ((uint32_t)(127 - T::kBias) << T::kMant);
  // Subnormal range: |x| + 2^(23 + q) rounds to a multiple of 2^q; the low mantissa bits are the code.
  // 2^(23+q) with q = 1 - bias - mant.
  const float magic = bits_as_f32((uint32_t)(127 + 23 + 1 - T::kBias - T::kMant) << 23);
  const uint32_t rs = f32_as_bits(bits_as_f32(a < min_normal_bits ? a : 0u) + magic) - f32_as_bits(magic);
  const uint32_t c = a < min_normal_bits ? rs : rn;
  // Overflow code for this (format, saturation).
  uint32_t ovf;
  if (kSat) {
    ovf = s | T::kMaxCode;
  } else if (T::kFnuz) {
    ovf = 0x80u;
  } else if (T::kHasInf) {
    ovf = s | 0x7Cu;
  } else {
    ovf = s | 0x7Fu;
  }
  uint32_t r = c > T::kMaxCode ? ovf : (s | c);
  if (T::kFnuz) r = (c == 0u && a < min_normal_bits) ? 0u : r;
  r = a > 0x7F800000u ? T::kNanCode : r;
  return r;
}

/** Encode a float32 value (see fp8_encode_bits). */
template <int F, bool kSat>
KVQ_HOST_DEVICE uint8_t fp8_encode(float x) {
  return (uint8_t)fp8_encode_bits<F, kSat>(f32_as_bits(x));
}

/**
 * Exact float32 value of an FP8 code, as a bit pattern. NaN codes give 0x7FFFFFFF; e5m2's inf codes give +-inf.
 */
template <int F>
KVQ_HOST_DEVICE uint32_t fp8_decode_bits(uint32_t code) {
  typedef Fp8Traits<F> T;
  code &= 0xFFu;
  const uint32_t mag = code & 0x7Fu;
  const uint32_t sign = (code & 0x80u) << 24;
  if (T::kFnuz) {
    if (code == 0x80u) return 0x7FFFFFFFu;
  } else if (T::kHasInf) {
    if (mag > 0x7Cu) return 0x7FFFFFFFu;
    if (mag == 0x7Cu) return sign | 0x7F800000u;
  } else {
    if (mag == 0x7Fu) return 0x7FFFFFFFu;
  }
  // The code's magnitude bits placed at the top of a float32 exponent/mantissa, times 2^(127 - bias - (7 - E)):
  // exact for normal and subnormal codes (the shifted pattern is a float32 with the same significand).
  const float raw = bits_as_f32(mag << (23 - T::kMant));
  // 2^(127 - bias) adjusts the exponent bias from 127 to the format's.
  const float adjust = bits_as_f32((uint32_t)(127 + 127 - T::kBias) << 23);
  return sign | f32_as_bits(raw * adjust);
}

/** Exact float32 value of an FP8 code. */
template <int F>
KVQ_HOST_DEVICE float fp8_decode(uint32_t code) {
  return bits_as_f32(fp8_decode_bits<F>(code));
}

/**
 * bfloat16 bits of the magnitude of an FP8 code (the code's sign bit is ignored): every FP8 value is exact in
 * bf16 (at most 3 mantissa bits, exponent within bf16's range). NaN codes give 0x7FC0, e5m2's inf 0x7F80, and
 * FNUZ's 0x80 (NaN) is not representable as a magnitude: callers handle that code themselves.
 * Pure integer arithmetic and constexpr, so lookup tables can be built at compile time.
 */
template <int F>
KVQ_HOST_DEVICE constexpr uint16_t fp8_magnitude_bf16_bits(uint32_t code) {
  typedef Fp8Traits<F> T;
  const uint32_t mag = code & 0x7Fu;
  if (!T::kFnuz && !T::kHasInf && mag == 0x7Fu) return 0x7FC0u;
  if (T::kHasInf && mag > 0x7Cu) return 0x7FC0u;
  if (T::kHasInf && mag == 0x7Cu) return 0x7F80u;
  const uint32_t e = mag >> T::kMant;
  uint32_t m = mag & ((1u << T::kMant) - 1u);
  if (e == 0u && m == 0u) return 0u;
  int exp = (int)e - T::kBias;  // value = 2^exp * 1.m (normal)
  if (e == 0u) {
    // subnormal: m * 2^(1 - bias - mant); normalize so the leading one becomes implicit
    exp = 1 - T::kBias;
    while ((m & (1u << T::kMant)) == 0u) {
      m <<= 1;
      exp -= 1;
    }
    m &= (1u << T::kMant) - 1u;
  }
  return (uint16_t)(((uint32_t)(exp + 127) << 7) | (m << (7 - T::kMant)));
}

/** Runtime-format encode (slower; for glue code and tests). */
KVQ_HOST_DEVICE uint8_t fp8_encode_rt(float x, int format, bool sat) {
  const uint32_t b = f32_as_bits(x);
  switch (format) {
    case kE4M3FN: return (uint8_t)(sat ? fp8_encode_bits<kE4M3FN, true>(b) : fp8_encode_bits<kE4M3FN, false>(b));
    case kE5M2: return (uint8_t)(sat ? fp8_encode_bits<kE5M2, true>(b) : fp8_encode_bits<kE5M2, false>(b));
    case kE4M3FNUZ:
      return (uint8_t)(sat ? fp8_encode_bits<kE4M3FNUZ, true>(b) : fp8_encode_bits<kE4M3FNUZ, false>(b));
    default: return (uint8_t)(sat ? fp8_encode_bits<kE5M2FNUZ, true>(b) : fp8_encode_bits<kE5M2FNUZ, false>(b));
  }
}

/** Runtime-format decode. */
KVQ_HOST_DEVICE float fp8_decode_rt(uint32_t code, int format) {
  switch (format) {
    case kE4M3FN: return fp8_decode<kE4M3FN>(code);
    case kE5M2: return fp8_decode<kE5M2>(code);
    case kE4M3FNUZ: return fp8_decode<kE4M3FNUZ>(code);
    default: return fp8_decode<kE5M2FNUZ>(code);
  }
}

// ------------------------------------------------------------------------------------------------
// bfloat16 / IEEE half (raw 16-bit patterns), round to nearest even; same results as @kvq/fp8 half.ts
// ------------------------------------------------------------------------------------------------

/** bf16 bits -> float32 (exact). */
KVQ_HOST_DEVICE float bf16_to_f32(uint16_t h) { return bits_as_f32((uint32_t)h << 16); }

/** float32 -> bf16 bits, round to nearest even; NaN -> quiet NaN keeping sign and top payload bits. */
KVQ_HOST_DEVICE uint16_t f32_to_bf16(float x) {
  const uint32_t b = f32_as_bits(x);
  const uint32_t rounded = (b + 0x7FFFu + ((b >> 16) & 1u)) >> 16;
  const uint32_t nan = (b >> 16) | 0x40u;
  return (uint16_t)(((b & 0x7FFFFFFFu) > 0x7F800000u) ? nan : rounded);
}

/** IEEE half bits -> float32 (exact). */
KVQ_HOST_DEVICE float f16_to_f32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1Fu;
  const uint32_t m = h & 0x3FFu;
  if (e == 0x1Fu) return bits_as_f32(sign | 0x7F800000u | (m << 13));
  if (e != 0u) return bits_as_f32(sign | ((e + 112u) << 23) | (m << 13));
  // subnormal: m * 2^-24, exact in float32
  return bits_as_f32(sign | f32_as_bits((float)m * 5.9604644775390625e-8f));
}

/** float32 -> IEEE half bits, round to nearest even, overflow -> +-inf, NaN -> quiet NaN (F16C's result). */
KVQ_HOST_DEVICE uint16_t f32_to_f16(float x) {
  const uint32_t b = f32_as_bits(x);
  const uint32_t sign = (b >> 16) & 0x8000u;
  const uint32_t a = b & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return (uint16_t)(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
  if (a >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u);
  if (a >= 0x38800000u) return (uint16_t)(sign | (((a + 0xFFFu + ((a >> 13) & 1u)) >> 13) - (112u << 10)));
  // subnormal half: quantum 2^-24; adding 2^-1 (= 2^(23-24)) rounds |x| to a multiple of 2^-24, ties to even
  const float magic = 0.5f;
  return (uint16_t)(sign | (f32_as_bits(bits_as_f32(a) + magic) - f32_as_bits(magic)));
}

}  // namespace kvq

#endif  // KVQ_FP8_H_
