// SPDX-License-Identifier: Apache-2.0
//
// AVX2 + FMA + F16C vector layer: 8 float32 lanes.
// Included only by kernels_avx2.cc (compiled with -mavx2 -mfma -mf16c).
#ifndef KVQ_SIMD_AVX2_H_
#define KVQ_SIMD_AVX2_H_

#include <immintrin.h>
#include <stdint.h>

#include "fp8.h"
#include "portable.h"

namespace kvq {
namespace KVQ_NS {

#define KVQ_SI static KVQ_ALWAYS_INLINE

typedef __m256 VF;
static const int W = 8;
static const char* const kIsaName = "avx2";

KVQ_SI __m256i tail_mask(int n) {
  static const int32_t tbl[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256((const __m256i*)(tbl + 8 - n));
}
KVQ_SI VF vzero() { return _mm256_setzero_ps(); }
KVQ_SI VF vset1(float x) { return _mm256_set1_ps(x); }
KVQ_SI VF vload(const float* p) { return _mm256_loadu_ps(p); }
KVQ_SI VF vloadn(const float* p, int n) { return _mm256_maskload_ps(p, tail_mask(n)); }
KVQ_SI void vstore(float* p, VF v) { _mm256_storeu_ps(p, v); }
KVQ_SI void vstoren(float* p, VF v, int n) { _mm256_maskstore_ps(p, tail_mask(n), v); }
KVQ_SI VF vadd(VF a, VF b) { return _mm256_add_ps(a, b); }
KVQ_SI VF vsub(VF a, VF b) { return _mm256_sub_ps(a, b); }
KVQ_SI VF vmul(VF a, VF b) { return _mm256_mul_ps(a, b); }
KVQ_SI VF vdiv(VF a, VF b) { return _mm256_div_ps(a, b); }
KVQ_SI VF vfma(VF a, VF b, VF c) { return _mm256_fmadd_ps(a, b, c); }
KVQ_SI VF vmax(VF a, VF b) { return _mm256_max_ps(a, b); }
KVQ_SI VF vmin(VF a, VF b) { return _mm256_min_ps(a, b); }
KVQ_SI VF vabs(VF a) { return _mm256_and_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF))); }
KVQ_SI float vhsum(VF v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
KVQ_SI float vhmax(VF v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
KVQ_SI bool vhasnan(VF v) { return _mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)) != 0; }
KVQ_SI void vprefetch(const void* p) { _mm_prefetch((const char*)p, _MM_HINT_T0); }

KVQ_SI void vhsum4(VF a, VF b, VF c, VF d, float* out) {
  const __m256 ab = _mm256_hadd_ps(a, b);
  const __m256 cd = _mm256_hadd_ps(c, d);
  const __m256 abcd = _mm256_hadd_ps(ab, cd);
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1)));
}

/** exp(x), same algorithm and limits as the AVX-512 layer. */
KVQ_SI VF vexp(VF x) {
  const VF hi = _mm256_set1_ps(88.3762626647949f);
  const VF lo = _mm256_set1_ps(-87.3365478515625f);
  const VF over = _mm256_cmp_ps(x, hi, _CMP_GT_OQ);
  const VF under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  VF xc = _mm256_min_ps(hi, x);
  xc = _mm256_max_ps(lo, xc);
  const VF n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  VF r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  VF p = _mm256_set1_ps(1.9875691500E-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507E-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073E-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894E-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459E-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201E-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  VF y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  y = _mm256_blendv_ps(y, _mm256_set1_ps(kvq_inff()), over);
  y = _mm256_blendv_ps(y, _mm256_setzero_ps(), under);
  return y;
}

// ---- 16-bit loads ------------------------------------------------------------------------------
KVQ_SI __m128i load16n(const uint16_t* p, int n) {
  uint16_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int i = 0; i < n; i++) tmp[i] = p[i];
  return _mm_loadu_si128((const __m128i*)tmp);
}
KVQ_SI VF vload_bf16(const uint16_t* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p)), 16));
}
KVQ_SI VF vloadn_bf16(const uint16_t* p, int n) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(load16n(p, n)), 16));
}
KVQ_SI VF vload_f16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p)); }
KVQ_SI VF vloadn_f16(const uint16_t* p, int n) { return _mm256_cvtph_ps(load16n(p, n)); }
/** One f16 (bits) widened to float32 (F16C, exact). */
KVQ_SI float f16_scalar(uint16_t h) { return _cvtsh_ss(h); }

#include "simd_unpack_sse.h"

// ---- int8 loads (quantized weights) ---------------------------------------------------------------
/** W int8 values converted to float32 (exact). */
KVQ_SI VF vcvt_i8(const int8_t* p) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)p))); }
/** The first n (< W) int8 values converted, the other lanes 0. */
KVQ_SI VF vcvtn_i8(const int8_t* p, int n) {
  int8_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int i = 0; i < n; i++) tmp[i] = p[i];
  return vcvt_i8(tmp);
}
/** W bytes of packed 4-bit values: lo[j] = (p[j] & 15) - bias, hi[j] = (p[j] >> 4) - bias, as float32 (exact). */
KVQ_SI void vcvt_nib(const uint8_t* p, int bias, VF* lo, VF* hi) {
  const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)p)), z = _mm256_set1_epi32(bias);
  *lo = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(b, _mm256_set1_epi32(15)), z));
  *hi = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(b, 4), z));
}

// ---- FP8 loads ---------------------------------------------------------------------------------
template <int F>
KVQ_SI float fp8_load_const() {
  return F == kE4M3FN ? 0x1p120f : F == kE4M3FNUZ ? 0x1p119f : F == kE5M2FNUZ ? 0x1p111f : 1.0f;
}

template <int F>
KVQ_SI VF fp8_lanes(__m128i bytes, VF mul) {
  if (F == kE5M2) {
    // NaN codes become CUDA's 0x7FFFFFFF pattern.
    const __m128i h = _mm_slli_epi16(_mm_cvtepu8_epi16(bytes), 8);
    const VF v = _mm256_cvtph_ps(h);
    return _mm256_blendv_ps(_mm256_mul_ps(v, mul), _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF)),
                            _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  } else {
    const int m = Fp8Traits<F>::kMant;
    const __m256i magmask = _mm256_set1_epi32(0x7F << (23 - m));
    __m256i y = _mm256_slli_epi32(_mm256_cvtepi8_epi32(bytes), 23 - m);
    y = _mm256_and_si256(y, _mm256_set1_epi32((int)(0x80000000u | (0x7Fu << (23 - m)))));
    __m256i nan;
    if (Fp8Traits<F>::kFnuz) {
      nan = _mm256_cmpeq_epi32(y, _mm256_set1_epi32((int)0x80000000u));
    } else {
      nan = _mm256_cmpeq_epi32(_mm256_and_si256(y, magmask), magmask);
    }
    const VF v = _mm256_mul_ps(_mm256_castsi256_ps(y), mul);
    return _mm256_blendv_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF)), _mm256_castsi256_ps(nan));
  }
}
template <int F>
KVQ_SI VF vload_fp8(const uint8_t* p, VF mul) {
  return fp8_lanes<F>(_mm_loadl_epi64((const __m128i*)p), mul);
}
template <int F>
KVQ_SI VF vloadn_fp8(const uint8_t* p, int n, VF mul) {
  uint8_t tmp[16] = {0};
  for (int i = 0; i < n; i++) tmp[i] = p[i];
  return fp8_lanes<F>(_mm_loadl_epi64((const __m128i*)tmp), mul);
}

/** Fast FP8 lanes: like vload_fp8 but NaN codes decode to finite garbage (callers prescan with fp8_any_nan). */
template <int F>
KVQ_SI VF fp8_lanes_fast(__m128i bytes, VF mul) {
  if (F == kE5M2) return _mm256_mul_ps(_mm256_cvtph_ps(_mm_slli_epi16(_mm_cvtepu8_epi16(bytes), 8)), mul);
  const int m = Fp8Traits<F>::kMant;
  const __m256i y = _mm256_and_si256(_mm256_slli_epi32(_mm256_cvtepi8_epi32(bytes), 23 - m),
                                     _mm256_set1_epi32((int)(0x80000000u | (0x7Fu << (23 - m)))));
  return _mm256_mul_ps(_mm256_castsi256_ps(y), mul);
}
template <int F>
KVQ_SI VF vload_fp8_fast(const uint8_t* p, VF mul) {
  return fp8_lanes_fast<F>(_mm_loadl_epi64((const __m128i*)p), mul);
}
template <int F>
KVQ_SI VF vloadn_fp8_fast(const uint8_t* p, int n, VF mul) {
  uint8_t tmp[16] = {0};
  for (int i = 0; i < n; i++) tmp[i] = p[i];
  return fp8_lanes_fast<F>(_mm_loadl_epi64((const __m128i*)tmp), mul);
}
template <int F>
KVQ_SI bool fp8_any_nan(const uint8_t* p, int64_t n) {
  if (F == kE5M2) return false;
  int hit = 0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256i b = _mm256_loadu_si256((const __m256i*)(p + i));
    if (Fp8Traits<F>::kFnuz) {
      hit |= _mm256_movemask_epi8(_mm256_cmpeq_epi8(b, _mm256_set1_epi8((char)0x80)));
    } else {
      hit |= _mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_and_si256(b, _mm256_set1_epi8(0x7F)), _mm256_set1_epi8(0x7F)));
    }
  }
  for (; i < n; i++) hit |= Fp8Traits<F>::kFnuz ? (p[i] == 0x80) : ((p[i] & 0x7F) == 0x7F);
  return hit != 0;
}

// No byte-table FP8 decode on this ISA (stubs keep the shared kernel templates compiling; never called).
static const bool kHasFp8Lut = false;
KVQ_SI int lut_perm(int e) { return e; }
struct Fp8Lut {};
template <int F>
KVQ_SI Fp8Lut fp8_lut() {
  return Fp8Lut{};
}
KVQ_SI void fp8_lut_decode64(const uint8_t*, const Fp8Lut&, VF*) {}

// No int4 permute decode on this ISA (16-lane table lookups are AVX-512's; stubs keep the shared kernel templates
// compiling, never called): int4 rows use vcvt_nib.
static const bool kHasInt4Perm = false;
KVQ_SI int int4_perm_pos(int e) { return e; }
KVQ_SI void int4_perm_decode128(const uint8_t*, VF, VF*) {}

#undef KVQ_SI

}  // namespace KVQ_NS
}  // namespace kvq

#endif  // KVQ_SIMD_AVX2_H_
