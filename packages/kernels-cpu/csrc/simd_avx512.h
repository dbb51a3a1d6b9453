// SPDX-License-Identifier: Apache-2.0
//
// AVX-512 (F, BW, VL, DQ) + F16C vector layer: 16 float32 lanes.
// Included only by kernels_avx512.cc (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c).
// Everything lives in namespace kvq::KVQ_NS and is `static inline`, so no symbol can leak into another ISA's TU.
#ifndef KVQ_SIMD_AVX512_H_
#define KVQ_SIMD_AVX512_H_

#include <immintrin.h>
#include <stdint.h>

#include "fp8.h"
#include "portable.h"

namespace kvq {
namespace KVQ_NS {

#define KVQ_SI static KVQ_ALWAYS_INLINE

typedef __m512 VF;
static const int W = 16;
static const char* const kIsaName = "avx512";

KVQ_SI __mmask16 tail_mask(int n) { return (__mmask16)((1u << n) - 1u); }
KVQ_SI VF vzero() { return _mm512_setzero_ps(); }
KVQ_SI VF vset1(float x) { return _mm512_set1_ps(x); }
KVQ_SI VF vload(const float* p) { return _mm512_loadu_ps(p); }
KVQ_SI VF vloadn(const float* p, int n) { return _mm512_maskz_loadu_ps(tail_mask(n), p); }
KVQ_SI void vstore(float* p, VF v) { _mm512_storeu_ps(p, v); }
KVQ_SI void vstoren(float* p, VF v, int n) { _mm512_mask_storeu_ps(p, tail_mask(n), v); }
KVQ_SI VF vadd(VF a, VF b) { return _mm512_add_ps(a, b); }
KVQ_SI VF vsub(VF a, VF b) { return _mm512_sub_ps(a, b); }
KVQ_SI VF vmul(VF a, VF b) { return _mm512_mul_ps(a, b); }
KVQ_SI VF vdiv(VF a, VF b) { return _mm512_div_ps(a, b); }
/** a * b + c (fused). */
KVQ_SI VF vfma(VF a, VF b, VF c) { return _mm512_fmadd_ps(a, b, c); }
/** max(a, b); when either is NaN returns b. */
KVQ_SI VF vmax(VF a, VF b) { return _mm512_max_ps(a, b); }
KVQ_SI VF vmin(VF a, VF b) { return _mm512_min_ps(a, b); }
KVQ_SI VF vabs(VF a) { return _mm512_abs_ps(a); }
KVQ_SI float vhsum(VF v) { return _mm512_reduce_add_ps(v); }
KVQ_SI float vhmax(VF v) { return _mm512_reduce_max_ps(v); }
KVQ_SI bool vhasnan(VF v) { return _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) != 0; }
KVQ_SI void vprefetch(const void* p) { _mm_prefetch((const char*)p, _MM_HINT_T0); }

/** Horizontal sums of four vectors into out[0..3]. */
KVQ_SI void vhsum4(VF a, VF b, VF c, VF d, float* out) {
  const __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
  const __m256 b8 = _mm256_add_ps(_mm512_castps512_ps256(b), _mm512_extractf32x8_ps(b, 1));
  const __m256 c8 = _mm256_add_ps(_mm512_castps512_ps256(c), _mm512_extractf32x8_ps(c, 1));
  const __m256 d8 = _mm256_add_ps(_mm512_castps512_ps256(d), _mm512_extractf32x8_ps(d, 1));
  const __m256 ab = _mm256_hadd_ps(a8, b8);
  const __m256 cd = _mm256_hadd_ps(c8, d8);
  const __m256 abcd = _mm256_hadd_ps(ab, cd);
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1)));
}

/**
 * exp(x) in float32, about 1 ulp (Cephes-style range reduction + degree-6 polynomial).
 * NaN propagates; x > 88.376 gives +inf; x < -87.336 gives 0 (the true value would be subnormal).
 */
KVQ_SI VF vexp(VF x) {
  const VF hi = _mm512_set1_ps(88.3762626647949f);
  const VF lo = _mm512_set1_ps(-87.3365478515625f);
  const __mmask16 over = _mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ);
  const __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
  VF xc = _mm512_min_ps(hi, x);  // NaN stays NaN (second operand)
  xc = _mm512_max_ps(lo, xc);
  const VF n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  VF r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  VF p = _mm512_set1_ps(1.9875691500E-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  VF y = _mm512_mul_ps(p, _mm512_castsi512_ps(e));
  y = _mm512_mask_mov_ps(y, over, _mm512_set1_ps(kvq_inff()));
  y = _mm512_mask_mov_ps(y, under, _mm512_setzero_ps());
  return y;
}

// ---- 16-bit loads ------------------------------------------------------------------------------
KVQ_SI VF vload_bf16(const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16));
}
KVQ_SI VF vloadn_bf16(const uint16_t* p, int n) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(tail_mask(n), p)), 16));
}
KVQ_SI VF vload_f16(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p)); }
KVQ_SI VF vloadn_f16(const uint16_t* p, int n) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(tail_mask(n), p)); }
/** One f16 (bits) widened to float32 (F16C, exact). */
KVQ_SI float f16_scalar(uint16_t h) { return _cvtsh_ss(h); }

#include "simd_unpack_sse.h"

// ---- int8 loads (quantized weights) ---------------------------------------------------------------
/** W int8 values converted to float32 (exact). */
KVQ_SI VF vcvt_i8(const int8_t* p) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)p))); }
/** The first n (< W) int8 values converted, the other lanes 0. */
KVQ_SI VF vcvtn_i8(const int8_t* p, int n) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8((__mmask16)((1u << n) - 1u), p)));
}
/** W bytes of packed 4-bit values: lo[j] = (p[j] & 15) - bias, hi[j] = (p[j] >> 4) - bias, as float32 (exact). */
KVQ_SI void vcvt_nib(const uint8_t* p, int bias, VF* lo, VF* hi) {
  const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)p)), z = _mm512_set1_epi32(bias);
  *lo = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_and_si512(b, _mm512_set1_epi32(15)), z));
  *hi = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(b, 4), z));
}

// ---- FP8 loads: decoded value times `mul` (mul must include fp8_load_const<F>()) -------------------
/**
 * Power of two the raw lanes of vload_fp8 must be multiplied by to give the exact decoded value.
 * Folding a scale into it (mul = const * scale) is exact when the product stays a finite normal float.
 */
template <int F>
KVQ_SI float fp8_load_const() {
  return F == kE4M3FN ? 0x1p120f : F == kE4M3FNUZ ? 0x1p119f : F == kE5M2FNUZ ? 0x1p111f : 1.0f;
}

template <int F>
KVQ_SI VF fp8_lanes(__m128i bytes, VF mul) {
  if (F == kE5M2) {
    // e5m2 is the top byte of an IEEE half: exact, with inf; NaN codes become CUDA's 0x7FFFFFFF pattern.
    const __m256i h = _mm256_slli_epi16(_mm256_cvtepu8_epi16(bytes), 8);
    const VF v = _mm512_cvtph_ps(h);
    const __mmask16 ok = _mm512_cmp_ps_mask(v, v, _CMP_ORD_Q);
    return _mm512_mask_mul_ps(_mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF)), ok, v, mul);
  } else {
    const int m = Fp8Traits<F>::kMant;
    const __m512i magmask = _mm512_set1_epi32(0x7F << (23 - m));
    __m512i y = _mm512_slli_epi32(_mm512_cvtepi8_epi32(bytes), 23 - m);
    y = _mm512_and_si512(y, _mm512_set1_epi32((int)(0x80000000u | (0x7Fu << (23 - m)))));
    __mmask16 ok;
    if (Fp8Traits<F>::kFnuz) {
      ok = _mm512_cmpneq_epi32_mask(y, _mm512_set1_epi32((int)0x80000000u));
    } else {
      ok = _mm512_cmpneq_epi32_mask(_mm512_and_si512(y, magmask), magmask);
    }
    return _mm512_mask_mul_ps(_mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF)), ok, _mm512_castsi512_ps(y), mul);
  }
}
template <int F>
KVQ_SI VF vload_fp8(const uint8_t* p, VF mul) {
  return fp8_lanes<F>(_mm_loadu_si128((const __m128i*)p), mul);
}
template <int F>
KVQ_SI VF vloadn_fp8(const uint8_t* p, int n, VF mul) {
  return fp8_lanes<F>(_mm_maskz_loadu_epi8(tail_mask(n), p), mul);
}

// ---- FP8 byte-table decode (AVX-512 VBMI) -------------------------------------------------------------
// 64 codes at a time: two vpermi2b lookups give the high and low bytes of the bf16 of each magnitude (exact for
// every FP8 value, NaN/inf included), the sign bit is or-ed in, and two unpack steps widen bf16 to float32.
// The widening leaves the 64 values in a fixed order: physical lane 16v + 4L + i of the four output vectors holds
// logical element 16L + 4v + i (a 4x4 transpose of 4-element groups, so the map is its own inverse). Kernels
// lay out their query / accumulator rows in the same order (see lut_perm) and never notice.
static const bool kHasFp8Lut = true;

/** Physical position of logical element e (0..63) of a 64-block in the table decode's order (an involution). */
KVQ_SI int lut_perm(int e) { return ((e >> 2) & 3) * 16 + (e >> 4) * 4 + (e & 3); }

struct Fp8Lut {
  __m512i hiA, hiB, loA, loB;
};

template <int F>
struct Fp8LutBytes {
  alignas(64) uint8_t hi[128];
  alignas(64) uint8_t lo[128];
  constexpr Fp8LutBytes() : hi(), lo() {
    for (uint32_t c = 0; c < 128; c++) {
      const uint16_t b = fp8_magnitude_bf16_bits<F>(c);
      hi[c] = (uint8_t)(b >> 8);
      lo[c] = (uint8_t)(b & 0xFF);
    }
  }
};

template <int F>
KVQ_SI Fp8Lut fp8_lut() {
  static constexpr Fp8LutBytes<F> t{};
  Fp8Lut l;
  l.hiA = _mm512_load_si512((const void*)t.hi);
  l.hiB = _mm512_load_si512((const void*)(t.hi + 64));
  l.loA = _mm512_load_si512((const void*)t.lo);
  l.loB = _mm512_load_si512((const void*)(t.lo + 64));
  return l;
}

/** Exact decode of 64 codes into out[0..3] (table order, see lut_perm). FNUZ's NaN code 0x80 comes out as -0. */
KVQ_SI void fp8_lut_decode64(const uint8_t* p, const Fp8Lut& t, VF* out) {
  const __m512i b = _mm512_loadu_si512((const void*)p);
  __m512i hi = _mm512_permutex2var_epi8(t.hiA, b, t.hiB);
  const __m512i lo = _mm512_permutex2var_epi8(t.loA, b, t.loB);
  hi = _mm512_ternarylogic_epi32(hi, b, _mm512_set1_epi8((char)0x80), 0xF8);  // hi | (b & 0x80)
  const __m512i w0 = _mm512_unpacklo_epi8(lo, hi);
  const __m512i w1 = _mm512_unpackhi_epi8(lo, hi);
  const __m512i z = _mm512_setzero_si512();
  out[0] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(z, w0));
  out[1] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(z, w0));
  out[2] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(z, w1));
  out[3] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(z, w1));
}

// ---- int4 by permute (AVX-512 F): 128 packed 4-bit values as 8 vectors, each a 16-entry table lookup -------------
// vpermps reads only the low 4 bits of each index lane, so dword j of 64 packed bytes shifted right by 4k indexes
// the table with nibble k of that dword (element 8j + k): no mask, no widening, one shift + one permute per 16 values.
// The values come out in a fixed order: vector k lane j holds element 8j + k (see int4_perm_pos).
static const bool kHasInt4Perm = true;

/** Physical position of logical element e (0..127) of a 128-block in int4_perm_decode128's order. */
KVQ_SI int int4_perm_pos(int e) { return (e & 7) * 16 + (e >> 3); }

/** out[k] = table[nibble k of each of the 16 dwords at p], k = 0..7 (table: 16 floats, one per 4-bit code). */
KVQ_SI void int4_perm_decode128(const uint8_t* p, VF table, VF* out) {
  // NOTE: moving bytes down by vpshufb instead of some of the shifts measured slower (the permutes' port is the busier).
  const __m512i d = _mm512_loadu_si512((const void*)p);
  out[0] = _mm512_permutexvar_ps(d, table);
  out[1] = _mm512_permutexvar_ps(_mm512_srli_epi32(d, 4), table);
  out[2] = _mm512_permutexvar_ps(_mm512_srli_epi32(d, 8), table);
  out[3] = _mm512_permutexvar_ps(_mm512_srli_epi32(d, 12), table);
  out[4] = _mm512_permutexvar_ps(_mm512_srli_epi32(d, 16), table);
  out[5] = _mm512_permutexvar_ps(_mm512_srli_epi32(d, 20), table);
  out[6] = _mm512_permutexvar_ps(_mm512_srli_epi32(d, 24), table);
  out[7] = _mm512_permutexvar_ps(_mm512_srli_epi32(d, 28), table);
}

/** Fast FP8 lanes: like vload_fp8 but NaN codes decode to finite garbage (callers prescan with fp8_any_nan). */
template <int F>
KVQ_SI VF fp8_lanes_fast(__m128i bytes, VF mul) {
  if (F == kE5M2) return _mm512_mul_ps(_mm512_cvtph_ps(_mm256_slli_epi16(_mm256_cvtepu8_epi16(bytes), 8)), mul);
  const int m = Fp8Traits<F>::kMant;
  const __m512i y = _mm512_and_si512(_mm512_slli_epi32(_mm512_cvtepi8_epi32(bytes), 23 - m),
                                     _mm512_set1_epi32((int)(0x80000000u | (0x7Fu << (23 - m)))));
  return _mm512_mul_ps(_mm512_castsi512_ps(y), mul);
}
template <int F>
KVQ_SI VF vload_fp8_fast(const uint8_t* p, VF mul) {
  return fp8_lanes_fast<F>(_mm_loadu_si128((const __m128i*)p), mul);
}
template <int F>
KVQ_SI VF vloadn_fp8_fast(const uint8_t* p, int n, VF mul) {
  return fp8_lanes_fast<F>(_mm_maskz_loadu_epi8(tail_mask(n), p), mul);
}
/** Whether any of the n codes at p is a NaN code that the fast lanes would misdecode (never for e5m2). */
template <int F>
KVQ_SI bool fp8_any_nan(const uint8_t* p, int64_t n) {
  if (F == kE5M2) return false;
  __mmask64 hit = 0;
  int64_t i = 0;
  for (; i < n; i += 64) {
    const int64_t left = n - i;
    const __mmask64 m = left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1);
    const __m512i b = _mm512_maskz_loadu_epi8(m, p + i);
    if (Fp8Traits<F>::kFnuz) {
      hit |= _mm512_mask_cmpeq_epi8_mask(m, b, _mm512_set1_epi8((char)0x80));
    } else {
      hit |= _mm512_mask_cmpeq_epi8_mask(m, _mm512_and_si512(b, _mm512_set1_epi8(0x7F)), _mm512_set1_epi8(0x7F));
    }
  }
  return hit != 0;
}

#undef KVQ_SI

}  // namespace KVQ_NS
}  // namespace kvq

#endif  // KVQ_SIMD_AVX512_H_
