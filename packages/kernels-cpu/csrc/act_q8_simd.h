// SPDX-License-Identifier: Apache-2.0
//
// GGML's 8-bit activation quantization (@kvq/kernels csrc/act_q8.h) in AVX2 vectors, bit-identical to the scalar
// act_q8_quantize_block: the same float32 multiplies, the same rounding (Q8_0: half away from zero, as roundf;
// Q8_K: half to even, as nearbyintf), the same NaN / infinity / zero-block and overflow rules. The scalar code calls libm's roundf
// once per element (GCC does not inline it); quantizing every linear's input row that way cost a few microseconds per
// call, serially, before the threads start.
// Included by wquant_impl.h inside the ISA namespace, AVX2 and AVX-512 builds only (both compile with -mavx2).
#ifndef KVQ_ACT_Q8_SIMD_H_
#define KVQ_ACT_Q8_SIMD_H_

#if defined(__AVX2__)

/** The largest |x| of n floats (n a multiple of 8) and whether any is NaN or infinite. */
KVQ_I float act_q8_amax8(const float* x, int n, bool* nonFinite) {
  const __m256 absMask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256 fmax = _mm256_set1_ps(3.402823466e38f);
  __m256 am = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  for (int j = 0; j < n; j += 8) {
    const __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + j), absMask);
    am = _mm256_max_ps(am, a);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, fmax, _CMP_NLE_UQ));  // !(a <= FLT_MAX): NaN or infinity
  }
  *nonFinite = _mm256_movemask_ps(bad) != 0;
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(am), _mm256_extractf128_ps(am, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

/** Store 32 int32 lanes (four vectors, values in [-128, 127]) as 32 int8 in order. */
KVQ_I void act_q8_store32(const __m256i* r, int8_t* q) {
  const __m256i w01 = _mm256_packs_epi32(r[0], r[1]), w23 = _mm256_packs_epi32(r[2], r[3]);
  const __m256i b = _mm256_packs_epi16(w01, w23);  // 128-bit lanes interleave 4-element groups: 0 2 4 6 | 1 3 5 7
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

/** roundf(v) for |v| < 2^23, lane-wise: truncate, then step away from zero when the (exact) fraction is >= 0.5. */
KVQ_I __m256 act_q8_round_away(__m256 v) {
  const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 absMask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256 frac = _mm256_and_ps(_mm256_sub_ps(v, t), absMask);
  const __m256 one = _mm256_or_ps(_mm256_andnot_ps(absMask, v), _mm256_set1_ps(1.0f));  // copysign(1, v)
  return _mm256_add_ps(t, _mm256_and_ps(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ), one));
}

/** act_q8_quantize_block for n = 32 (Q8_0): q[32], returns the f16-rounded scale (NaN for a non-finite block). */
KVQ_I float act_q8_block32_simd(const float* x, int8_t* q) {
  bool nonFinite;
  const float amax = act_q8_amax8(x, 32, &nonFinite);
  if (nonFinite) {
    memset(q, 0, 32);
    return NAN;
  }
  const float d = amax / 127.0f;
  float ids = d != 0.0f ? 1.0f / d : 0.0f;
  if (!(ids <= 3.402823466e38f)) ids = 0.0f;  // 1 / d overflowed: codes 0 (act_q8.h)
  const __m256 id = _mm256_set1_ps(ids);
  __m256i r[4];
  for (int i = 0; i < 4; i++) r[i] = _mm256_cvttps_epi32(act_q8_round_away(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * i), id)));
  act_q8_store32(r, q);
  return f16_to_f32(f32_to_f16(d));
}

/** act_q8_quantize_block for n = 256 (Q8_K): q[256], returns the scale 1 / iscale (0 for a zero block, NaN if non-finite). */
KVQ_I float act_q8_block256_simd(const float* x, int8_t* q) {
  bool nonFinite;
  const float amax = act_q8_amax8(x, 256, &nonFinite);
  if (nonFinite || amax == 0.0f) {
    memset(q, 0, 256);
    return nonFinite ? NAN : 0.0f;
  }
  // max = the first element of largest magnitude (the scalar loop's strict `>` keeps the first).
  const __m256 absMask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256 vam = _mm256_set1_ps(amax);
  float max = amax;
  for (int j = 0; j < 256; j += 8) {
    const int m = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_and_ps(_mm256_loadu_ps(x + j), absMask), vam, _CMP_EQ_OQ));
    if (m) {
      max = x[j + __builtin_ctz((unsigned)m)];
      break;
    }
  }
  const float iscale = -127.0f / max;
  if (!(fabsf(iscale) <= 3.402823466e38f)) {  // -127 / max overflowed: codes 0, scale 0 (act_q8.h)
    memset(q, 0, 256);
    return 0.0f;
  }
  const __m256 is = _mm256_set1_ps(iscale), hi = _mm256_set1_ps(127.0f);
  for (int j = 0; j < 256; j += 32) {
    __m256i r[4];
    for (int i = 0; i < 4; i++) {
      const __m256 v = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + j + 8 * i), is), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      r[i] = _mm256_cvttps_epi32(_mm256_min_ps(v, hi));
    }
    act_q8_store32(r, q + j);
  }
  return 1.0f / iscale;
}

#endif  // __AVX2__
#endif  // KVQ_ACT_Q8_SIMD_H_
