// SPDX-License-Identifier: Apache-2.0
//
// compressed-tensors W4A16 with 16-bit activations on the CPU: `linear` on int4 weights with `activations: 'q16'`
// (LinearParams::xq == 2). Each activation row is quantized in blocks of 128 (act_q8.h act_q16_quantize_block), then:
// - decode (rows <= 4) on AVX-512 VNNI, AVX2 and NEON builds, groups a multiple of 128: the 4-bit values meet the
//   codes in exact int32 sums. A code c = 256 h + l splits into an unsigned low byte l and a signed high byte h, so one
//   unsigned-by-signed byte dot takes the low bytes against the nibbles and one the nibbles against the high bytes;
//   the offset 8 + zeroPoint comes off through the block's per-lane code sums. AVX-512 VNNI: per 128 weights four
//   `vpdpbusd`, three nibble operations and one float conversion, against eight permutes and eight FMAs of the
//   float32 GEMV. AVX2: `vpmaddubsw` pairs (at most 2 x 255 x 15, no saturation), summed in int16 over the block's
//   two halves and widened by `vpmaddwd` (the high bytes' by 256), the same integers. NEON (4 int32 lanes of 32
//   elements): with the dot-product extension (the neon-dotprod tier, Apple Silicon) 8 UDOT (low bytes x nibbles) and
//   8 SDOT (nibbles x high bytes) per 128 weights; without, UMULL / UMLAL2 and SMULL / SMLAL2 summed in 16-bit lanes
//   over the whole block (at most 16 x 255 x 15 unsigned, 16 x 128 x 15 signed) and widened once by UADDLP / SADDLP;
//   the same integers again;
// - otherwise (scalar, groups not a multiple of 128, prefill): the float32 kernels on x's round trip x'.
// The integer sums are exact (every lane stays below 2^24, so its conversion is too); only the order of the float
// additions and the rounding of x' (code * scale, once per element in the reference) differ from the reference's
// float64 dot over x'. The code layout (Q16Row), the GEMV loop and the dispatch are shared by the ISAs; each supplies
// q16_block (the row quantizer: act_q16_quantize_block's float operations in its vectors) and q16_block_dot.
// Part of kernels_impl.h (inside namespace kvq::KVQ_NS, after wquant_impl.h).
#ifndef KVQ_WQUANT_Q16ACT_H_
#define KVQ_WQUANT_Q16ACT_H_

/** linear on x' in float32 (act_q16_round_trip_row): the path of every call the integer GEMV does not take. */
static int linear_q16_round_trip(const LinearParams& p, const Runner& rn) {
  auto trip = [&](int64_t r0, int64_t r1, float* xr) {
    for (int64_t r = r0; r < r1; r++) act_q16_round_trip_row(p.x + r * p.in, p.in, xr + r * p.in);
  };
  return linear_on_round_trip(p, rn, trip);
}

#if (defined(__AVX512BW__) && defined(__AVX512VNNI__)) || defined(__AVX2__) || defined(KVQ_SIMD_NEON_H_)

/** Bytes of one 128-element block of quantized activations: the four code-byte planes (lo even, lo odd, hi even, hi odd). */
static const int64_t kQ16BlockBytes = 256;

/** Code sums per block: x86 16 (vpdpbusd's lanes over a block; AVX2 adds lanes l and l + 8), NEON 4 (q16n_dots' lanes). */
#if defined(KVQ_SIMD_NEON_H_)
static const int kQ16Lanes = 4;
#else
static const int kQ16Lanes = 16;
#endif

/**
 * One row's activations in the integer GEMV's layout: per 128-element block, 64 bytes each of the low bytes of the even
 * elements' codes, of the odd elements', then the high bytes of the even and of the odd ones (byte j of a plane is
 * element 2j or 2j + 1, matching the low / high nibble of packed weight byte j); the kQ16Lanes lane sums of the codes
 * (x86, lane l: elements 8l .. 8l + 7, the ones `vpdpbusd` adds into lane l; NEON: the 32 elements q16n_dots adds into
 * lane l); the block's scale.
 */
struct Q16Row {
  uint8_t* planes;  // [blocks * kQ16BlockBytes]
  int32_t* sums;    // [blocks * kQ16Lanes]
  float* scales;    // [blocks]
};

/**
 * Stores the scale of block b (the 128 activations at x; act_q16_quantize_block's rules) and returns the multiplier
 * 32767 / amax; a block with a NaN or an infinity gets scale NaN and codes and sums 0 (its outputs are NaN), and -1
 * back.
 */
KVQ_I float q16_block_scale(const float* x, const Q16Row& q, int64_t b) {
  bool finite = true;
  const float amax = i8x_amax(x, 128, &finite);
  if (!finite) {
    q.scales[b] = NAN;
    memset(q.planes + b * kQ16BlockBytes, 0, kQ16BlockBytes);
    memset(q.sums + b * kQ16Lanes, 0, kQ16Lanes * sizeof(int32_t));
    return -1.0f;
  }
  const float inv = act_q16_inv(amax);
  q.scales[b] = act_q16_scale(amax, inv);
  return inv;
}

#endif

#if defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define KVQ_Q16_INT 1

typedef __m512 Q16F;
KVQ_I Q16F q16_zero() { return _mm512_setzero_ps(); }
KVQ_I float q16_sum(Q16F a, Q16F b) { return _mm512_reduce_add_ps(_mm512_add_ps(a, b)); }

/**
 * Quantize one block of 128 activations as act_q16_quantize_block does (the same float operations: RNE by the
 * conversion's default rounding, clamping before it) into the planes, lane sums and scale at block b of `q`.
 */
KVQ_I void q16_block(const float* x, const Q16Row& q, int64_t b) {
  const float inv = q16_block_scale(x, q, b);
  if (inv < 0.0f) return;
  uint8_t* pl = q.planes + b * kQ16BlockBytes;
  const __m512 vs = _mm512_set1_ps(inv), lo = _mm512_set1_ps(-32767.0f), hi = _mm512_set1_ps(32767.0f);
  const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odds = _mm512_add_epi32(evens, _mm512_set1_epi32(1));
  for (int j = 0; j < 128; j += 32) {
    const __m512 x0 = _mm512_loadu_ps(x + j), x1 = _mm512_loadu_ps(x + j + 16);
    const __m512 te = _mm512_mul_ps(_mm512_permutex2var_ps(x0, evens, x1), vs), to = _mm512_mul_ps(_mm512_permutex2var_ps(x0, odds, x1), vs);
    const __m512i ce = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(te, lo), hi));  // RNE (MXCSR default)
    const __m512i co = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(to, lo), hi));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(pl + j / 2), _mm512_cvtepi32_epi8(ce));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(pl + 64 + j / 2), _mm512_cvtepi32_epi8(co));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(pl + 128 + j / 2), _mm512_cvtepi32_epi8(_mm512_srai_epi32(ce, 8)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(pl + 192 + j / 2), _mm512_cvtepi32_epi8(_mm512_srai_epi32(co, 8)));
  }
  // Lane sums of the codes through the same instruction: sum(l) + 256 sum(h) over each lane's 8 elements.
  const __m512i ones = _mm512_set1_epi8(1), z = _mm512_setzero_si512();
  const __m512i sl = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(z, _mm512_loadu_si512(pl), ones), _mm512_loadu_si512(pl + 64), ones);
  const __m512i sh = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(z, ones, _mm512_loadu_si512(pl + 128)), ones, _mm512_loadu_si512(pl + 192));
  _mm512_storeu_si512(q.sums + b * kQ16Lanes, _mm512_add_epi32(sl, _mm512_slli_epi32(sh, 8)));
}

/**
 * acc[r] += block b of weight row wr against R rows of quantized activations (planes pl[r], lane sums su[r], scales
 * dx[r]): the exact int32 lanes sum_e c_e * (nibble_e - off), off = 8 + the group's zero point (null for symmetric
 * weights, whose offset 8 is a shift), converted and scaled by the group's weight scale sw times the
 * block's activation scale.
 */
template <int R>
KVQ_I void q16_block_dot(const uint8_t* wr, int64_t b, const uint8_t* const* pl, const int32_t* const* su, const float* const* dx,
                         float sw, const int* off, Q16F* acc) {
  const __m512i nib = _mm512_set1_epi8(0x0F), z = _mm512_setzero_si512();
  vprefetch(wr + b * 64 + kDensePrefetch);
  const __m512i d = _mm512_loadu_si512(wr + b * 64);
  const __m512i lo = _mm512_and_si512(d, nib), hi = _mm512_and_si512(_mm512_srli_epi16(d, 4), nib);
  for (int r = 0; r < R; r++) {
    const uint8_t* p = pl[r] + b * kQ16BlockBytes;
    const __m512i a1 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(z, _mm512_load_si512(p), lo), _mm512_load_si512(p + 64), hi);
    const __m512i a2 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(z, lo, _mm512_load_si512(p + 128)), hi, _mm512_load_si512(p + 192));
    const __m512i sums = _mm512_load_si512(su[r] + b * kQ16Lanes);
    const __m512i corr = off ? _mm512_mullo_epi32(_mm512_set1_epi32(*off), sums) : _mm512_slli_epi32(sums, 3);
    const __m512i t = _mm512_sub_epi32(_mm512_add_epi32(_mm512_slli_epi32(a2, 8), a1), corr);
    acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), _mm512_set1_ps(sw * dx[r][b]), acc[r]);
  }
}

#elif defined(__AVX2__)
#define KVQ_Q16_INT 1

typedef __m256 Q16F;
KVQ_I Q16F q16_zero() { return _mm256_setzero_ps(); }
KVQ_I float q16_sum(Q16F a, Q16F b) {
  const __m256 s = _mm256_add_ps(a, b);
  __m128 t = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  t = _mm_add_ps(t, _mm_movehl_ps(t, t));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

/** Byte 0 of each of the 8 int32 lanes of v, in lane order, as the low 8 bytes of the result. */
KVQ_I __m128i q16_low_bytes(__m256i v) {
  const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1,
                                        -1, -1, -1, -1, -1);
  const __m256i t = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(v, pick), _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1));
  return _mm256_castsi256_si128(t);
}

/** The int32 lane sums of 32 bytes: u8 planes (signedLanes false) or s8 planes (true), 4 bytes per lane. */
KVQ_I __m256i q16_lane_sums(__m256i v, bool signedLanes) {
  const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
  return _mm256_madd_epi16(signedLanes ? _mm256_maddubs_epi16(ones8, v) : _mm256_maddubs_epi16(v, ones8), ones16);
}

/** q16_block on AVX2: the same float operations as act_q16_quantize_block (RNE conversion, clamping before it). */
KVQ_I void q16_block(const float* x, const Q16Row& q, int64_t b) {
  const float inv = q16_block_scale(x, q, b);
  if (inv < 0.0f) return;
  uint8_t* pl = q.planes + b * kQ16BlockBytes;
  const __m256 vs = _mm256_set1_ps(inv), lo = _mm256_set1_ps(-32767.0f), hi = _mm256_set1_ps(32767.0f);
  for (int j = 0; j < 128; j += 16) {
    const __m256 x0 = _mm256_loadu_ps(x + j), x1 = _mm256_loadu_ps(x + j + 8);
    // [x0 0 2, x1 0 2 | x0 4 6, x1 4 6] -> elements 0 2 4 .. 14 of the 16 (and the odd ones) by a 64-bit lane swap.
    const __m256 ev = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(x0, x1, 0x88)), 0xD8));
    const __m256 od = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(x0, x1, 0xDD)), 0xD8));
    const __m256i ce = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(ev, vs), lo), hi));  // RNE (MXCSR default)
    const __m256i co = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(od, vs), lo), hi));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(pl + j / 2), q16_low_bytes(ce));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(pl + 64 + j / 2), q16_low_bytes(co));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(pl + 128 + j / 2), q16_low_bytes(_mm256_srai_epi32(ce, 8)));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(pl + 192 + j / 2), q16_low_bytes(_mm256_srai_epi32(co, 8)));
  }
  // Lane sums of the codes: sum(l) + 256 sum(h) over each lane's 8 elements (lanes 0-7 from bytes 0-31, 8-15 from 32-63).
  for (int h = 0; h < 2; h++) {
    auto ld = [&](int plane) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pl + plane * 64 + h * 32)); };
    const __m256i sl = _mm256_add_epi32(q16_lane_sums(ld(0), false), q16_lane_sums(ld(1), false));
    const __m256i sh = _mm256_add_epi32(q16_lane_sums(ld(2), true), q16_lane_sums(ld(3), true));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q.sums + b * kQ16Lanes + h * 8), _mm256_add_epi32(sl, _mm256_slli_epi32(sh, 8)));
  }
}

/**
 * acc[r] += block b of weight row wr against R rows of quantized activations, as the AVX-512 q16_block_dot: the
 * block's two 32-byte halves' `vpmaddubsw` pairs summed in int16 (at most 4 x 255 x 15 = 15300 for the low bytes,
 * 4 x 128 x 15 for the high ones), widened once, so lane l holds the sums of lanes l and l + 8 of the 512-bit layout.
 */
template <int R>
KVQ_I void q16_block_dot(const uint8_t* wr, int64_t b, const uint8_t* const* pl, const int32_t* const* su, const float* const* dx,
                         float sw, const int* off, Q16F* acc) {
  const __m256i nib = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1), k256 = _mm256_set1_epi16(256);
  vprefetch(wr + b * 64 + kDensePrefetch);
  const __m256i d0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr + b * 64));
  const __m256i d1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr + b * 64 + 32));
  const __m256i lo0 = _mm256_and_si256(d0, nib), hi0 = _mm256_and_si256(_mm256_srli_epi16(d0, 4), nib);
  const __m256i lo1 = _mm256_and_si256(d1, nib), hi1 = _mm256_and_si256(_mm256_srli_epi16(d1, 4), nib);
  for (int r = 0; r < R; r++) {
    const uint8_t* p = pl[r] + b * kQ16BlockBytes;
    auto ld = [&](int off) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(p + off)); };
    const __m256i l16 = _mm256_add_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(ld(0), lo0), _mm256_maddubs_epi16(ld(64), hi0)),
                                         _mm256_add_epi16(_mm256_maddubs_epi16(ld(32), lo1), _mm256_maddubs_epi16(ld(96), hi1)));
    const __m256i h16 = _mm256_add_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(lo0, ld(128)), _mm256_maddubs_epi16(hi0, ld(192))),
                                         _mm256_add_epi16(_mm256_maddubs_epi16(lo1, ld(160)), _mm256_maddubs_epi16(hi1, ld(224))));
    const __m256i sums = _mm256_add_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(su[r] + b * kQ16Lanes)),
                                          _mm256_load_si256(reinterpret_cast<const __m256i*>(su[r] + b * kQ16Lanes + 8)));
    const __m256i corr = off ? _mm256_mullo_epi32(_mm256_set1_epi32(*off), sums) : _mm256_slli_epi32(sums, 3);
    const __m256i t = _mm256_sub_epi32(_mm256_add_epi32(_mm256_madd_epi16(l16, ones), _mm256_madd_epi16(h16, k256)), corr);
    acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t), _mm256_set1_ps(sw * dx[r][b]), acc[r]);
  }
}

#elif defined(KVQ_SIMD_NEON_H_)
#define KVQ_Q16_INT 1

typedef float32x4_t Q16F;
KVQ_I Q16F q16_zero() { return vdupq_n_f32(0.0f); }
KVQ_I float q16_sum(Q16F a, Q16F b) { return vaddvq_f32(vaddq_f32(a, b)); }

/**
 * The two exact int32 parts of one block's dot on NEON, 4 lanes each: *dl the lanes of sum(l_e * v_e) over the two
 * low-byte planes (l unsigned), *dh those of sum(v_e * h_e) over the two high-byte planes (h signed); p the block's
 * planes, ve[i] / vo[i] the 4-bit values of the even / odd elements of weight bytes 16i .. 16i + 15 (their low / high
 * nibbles, 0..15). Each lane holds 32 of the 128 elements, the same 32 in both parts (q16_block's lane sums come from
 * this function too). With the dot-product extension: UDOT (low bytes x nibbles) and SDOT (nibbles as int8 x high
 * bytes), 4 products into each int32 lane. Without: UMULL / UMLAL2 into uint16 lanes (at most 16 x 255 x 15 = 61200 <
 * 2^16 per lane) and SMULL / SMLAL2 into int16 lanes (at most 16 x 128 x 15 = 30720 < 2^15), each widened once by
 * UADDLP / SADDLP. The even and the odd planes accumulate apart (two dependency chains per part), added at the end.
 */
KVQ_I void q16n_dots(const uint8_t* p, const uint8x16_t* ve, const uint8x16_t* vo, int32x4_t* dl, int32x4_t* dh) {
  const int8_t* ps = reinterpret_cast<const int8_t*>(p);
#if defined(__ARM_FEATURE_DOTPROD)
  uint32x4_t le = vdupq_n_u32(0), lo = le;
  int32x4_t he = vdupq_n_s32(0), ho = he;
  for (int i = 0; i < 4; i++) {
    le = vdotq_u32(le, vld1q_u8(p + 16 * i), ve[i]);
    lo = vdotq_u32(lo, vld1q_u8(p + 64 + 16 * i), vo[i]);
    he = vdotq_s32(he, vreinterpretq_s8_u8(ve[i]), vld1q_s8(ps + 128 + 16 * i));
    ho = vdotq_s32(ho, vreinterpretq_s8_u8(vo[i]), vld1q_s8(ps + 192 + 16 * i));
  }
  *dl = vreinterpretq_s32_u32(vaddq_u32(le, lo));
  *dh = vaddq_s32(he, ho);
#else
  uint16x8_t le = vdupq_n_u16(0), lo = le;
  int16x8_t he = vdupq_n_s16(0), ho = he;
  for (int i = 0; i < 4; i++) {
    const uint8x16_t a = vld1q_u8(p + 16 * i), b = vld1q_u8(p + 64 + 16 * i);
    const int8x16_t c = vld1q_s8(ps + 128 + 16 * i), d = vld1q_s8(ps + 192 + 16 * i);
    const int8x16_t se = vreinterpretq_s8_u8(ve[i]), so = vreinterpretq_s8_u8(vo[i]);
    le = vmlal_high_u8(vmlal_u8(le, vget_low_u8(a), vget_low_u8(ve[i])), a, ve[i]);
    lo = vmlal_high_u8(vmlal_u8(lo, vget_low_u8(b), vget_low_u8(vo[i])), b, vo[i]);
    he = vmlal_high_s8(vmlal_s8(he, vget_low_s8(se), vget_low_s8(c)), se, c);
    ho = vmlal_high_s8(vmlal_s8(ho, vget_low_s8(so), vget_low_s8(d)), so, d);
  }
  *dl = vreinterpretq_s32_u32(vpaddlq_u16(vaddq_u16(le, lo)));
  *dh = vpaddlq_s16(vaddq_s16(he, ho));
#endif
}

/**
 * q16_block on NEON: the same float operations as act_q16_quantize_block (FMUL, clamping by FMAX / FMIN, then FCVTNS:
 * round to nearest, ties to even, as nearbyintf in the default rounding mode). LD2 splits the even and odd elements;
 * each code's low and high bytes are the even and odd bytes of its int16 (UZP1 / UZP2).
 */
KVQ_I void q16_block(const float* x, const Q16Row& q, int64_t b) {
  const float inv = q16_block_scale(x, q, b);
  if (inv < 0.0f) return;
  uint8_t* pl = q.planes + b * kQ16BlockBytes;
  const float32x4_t vs = vdupq_n_f32(inv), lo = vdupq_n_f32(-32767.0f), hi = vdupq_n_f32(32767.0f);
  auto codes = [&](float32x4_t v) { return vmovn_s32(vcvtnq_s32_f32(vminq_f32(vmaxq_f32(vmulq_f32(v, vs), lo), hi))); };
  for (int j = 0; j < 128; j += 32) {
    int16x8_t c[2][2];  // [even, odd][plane bytes j / 2 + 8h .. + 7]
    for (int h = 0; h < 2; h++) {
      const float32x4x2_t x0 = vld2q_f32(x + j + 16 * h), x1 = vld2q_f32(x + j + 16 * h + 8);
      for (int eo = 0; eo < 2; eo++) c[eo][h] = vcombine_s16(codes(x0.val[eo]), codes(x1.val[eo]));
    }
    for (int eo = 0; eo < 2; eo++) {
      const uint8x16_t c0 = vreinterpretq_u8_s16(c[eo][0]), c1 = vreinterpretq_u8_s16(c[eo][1]);
      vst1q_u8(pl + 64 * eo + j / 2, vuzp1q_u8(c0, c1));
      vst1q_u8(pl + 128 + 64 * eo + j / 2, vuzp2q_u8(c0, c1));
    }
  }
  // Lane sums of the codes through the same lanes as the dots: sum(l) + 256 sum(h), all weights 1.
  const uint8x16_t one = vdupq_n_u8(1);
  const uint8x16_t ones[4] = {one, one, one, one};
  int32x4_t sl, sh;
  q16n_dots(pl, ones, ones, &sl, &sh);
  vst1q_s32(q.sums + b * kQ16Lanes, vaddq_s32(sl, vshlq_n_s32(sh, 8)));
}

/**
 * acc[r] += block b of weight row wr against R rows of quantized activations, as the AVX-512 q16_block_dot: per row
 * the two parts of q16n_dots, dl + 256 dh minus off times the lane sums. Each lane sums 32 products c_e * (v_e - off)
 * with |c_e| <= 32767 and |v_e - off| <= 15 (zero points in [-8, 7]): at most 15728160 < 2^24, exact in int32 and in
 * its float conversion.
 */
template <int R>
KVQ_I void q16_block_dot(const uint8_t* wr, int64_t b, const uint8_t* const* pl, const int32_t* const* su, const float* const* dx,
                         float sw, const int* off, Q16F* acc) {
  const uint8x16_t nib = vdupq_n_u8(0x0F);
  vprefetch(wr + b * 64 + kDensePrefetch);
  uint8x16_t ve[4], vo[4];
  for (int i = 0; i < 4; i++) {
    const uint8x16_t d = vld1q_u8(wr + b * 64 + 16 * i);
    ve[i] = vandq_u8(d, nib);
    vo[i] = vshrq_n_u8(d, 4);
  }
  for (int r = 0; r < R; r++) {
    int32x4_t dl, dh;
    q16n_dots(pl[r] + b * kQ16BlockBytes, ve, vo, &dl, &dh);
    const int32x4_t sums = vld1q_s32(su[r] + b * kQ16Lanes);
    const int32x4_t corr = off ? vmulq_n_s32(sums, *off) : vshlq_n_s32(sums, 3);
    const int32x4_t t = vsubq_s32(vaddq_s32(vshlq_n_s32(dh, 8), dl), corr);
    acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(t), sw * dx[r][b]);
  }
}

#endif

#ifdef KVQ_Q16_INT

/**
 * y[r, n] for n in [n0, n1), R rows of quantized activations (xq[r]), one weight row at a time, its 128-element blocks
 * alternating between two sets of float accumulators (two independent FMA chains).
 */
template <int R>
static void gemv_q16(const LinearParams& p, const Q16Row* xq, int64_t n0, int64_t n1) {
  const WeightRef& w = p.w;
  const int64_t K = p.in, N = p.out, ng = K / w.group_size, nb = K / 128, bpg = w.group_size / 128;
  const int gshift = (bpg & (bpg - 1)) == 0 ? __builtin_ctzll((unsigned long long)bpg) : -1;  // group of block b: b >> gshift
  const uint8_t* pl[R];
  const int32_t* su[R];
  const float* dx[R];
  for (int r = 0; r < R; r++) pl[r] = xq[r].planes, su[r] = xq[r].sums, dx[r] = xq[r].scales;
  for (int64_t n = n0; n < n1; n++) {
    const uint8_t* wr = static_cast<const uint8_t*>(w.data) + n * (K / 2);
    const float* sr = w.scale + n * ng;
    const int8_t* zr = w.zero_point ? w.zero_point + n * ng : nullptr;
    Q16F a0[R], a1[R];
    for (int r = 0; r < R; r++) a0[r] = a1[r] = q16_zero();
    auto block = [&](int64_t b, Q16F* acc) {
      const int64_t g = gshift >= 0 ? b >> gshift : b / bpg;
      const int off = zr ? 8 + zr[g] : 8;
      q16_block_dot<R>(wr, b, pl, su, dx, sr[g], zr ? &off : nullptr, acc);
    };
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) block(b, a0), block(b + 1, a1);
    if (b < nb) block(b, a0);
    for (int r = 0; r < R; r++) p.y[r * N + n] = q16_sum(a0[r], a1[r]) + (p.bias ? p.bias[n] : 0.0f);
  }
}

/** The integer GEMV: each activation row quantized once into the layout (Q16Row), then output rows over the threads. */
static int qgemv_q16(const LinearParams& p, const Runner& rn) {
  const int64_t K = p.in, blocks = K / 128;
  const size_t perRow = (size_t)round_up(blocks * (kQ16BlockBytes + kQ16Lanes * 4 + 4), 64);  // rows start on 64 bytes
  uint8_t* buf = static_cast<uint8_t*>(scratch_alloc(perRow * (size_t)p.rows));
  if (!buf) return kOutOfMemory;
  Q16Row xq[4];
  for (int64_t r = 0; r < p.rows; r++) {
    uint8_t* base = buf + perRow * (size_t)r;  // planes (64-byte multiples), then sums, then scales
    xq[r] = Q16Row{base, reinterpret_cast<int32_t*>(base + blocks * kQ16BlockBytes),
                   reinterpret_cast<float*>(base + blocks * (kQ16BlockBytes + kQ16Lanes * 4))};
    for (int64_t b = 0; b < blocks; b++) q16_block(p.x + r * K + b * 128, xq[r], b);
  }
  auto body = [&](int64_t n0, int64_t n1) { with_rows((int)p.rows, [&](auto R) { gemv_q16<decltype(R)::value>(p, xq, n0, n1); }); };
  gemv_split(p, rn, body);
  alignedFree(buf);
  return kOk;
}

#endif

/**
 * linear on an int4 weight with 16-bit activations: the integer GEMV for decode rows on groups of whole 128-element
 * blocks (AVX-512 VNNI, AVX2 and NEON builds), else float32 on x'.
 */
static int linear_q16act(const LinearParams& p, const Runner& rn) {
#ifdef KVQ_Q16_INT
  if (p.rows <= 4 && p.w.group_size % 128 == 0) return qgemv_q16(p, rn);
#endif
  return linear_q16_round_trip(p, rn);
}

#endif  // KVQ_WQUANT_Q16ACT_H_
