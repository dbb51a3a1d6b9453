// SPDX-License-Identifier: Apache-2.0
//
// The int8 block dots of the GGML weight types with GGML's 8-bit activations on NEON (AArch64): included by
// wquant_impl.h inside namespace kvq::neon, after arm_neon.h (simd_neon.h). The same integer sums as the AVX2 dots
// (Q8Direct in wquant_impl.h) and the same operations per block: an integer dot of the block's codes with the
// activation codes, scaled once by d * dx into a float accumulator, plus the types' offsets (minimums, q5_0's -16,
// q6_k's -32) through the activations' block sums. Four float lanes accumulate where AVX2 has eight, so the sums of
// the float terms differ in order (within the parity tolerances; the integer parts are exact).
//
// Instructions: SMULL / SMLAL2 (8 int8 x int8 products into int16 lanes; |x| <= 127 from the activation rounding and
// |w| <= 128, so the two products a lane holds stay within int16), SADALP / SADDLP (pairwise widening adds into int32),
// SCVTF + FMLA for the scaled float accumulation, FCVTL for the f16 block scales. Where the compiler targets the dot
// product extension (__ARM_FEATURE_DOTPROD: Apple Silicon's default target, and kernels_neon_dotprod.cc, the Linux neon-dotprod tier) SDOT replaces
// the SMULL / SMLAL2 / SADALP sequence (16 products into 4 int32 lanes in one instruction): the same integers.
#ifndef KVQ_WQUANT_NEON_Q8_H_
#define KVQ_WQUANT_NEON_Q8_H_

/** The int8 dots' float accumulator: 4 lanes. */
typedef float32x4_t Q8Acc;
KVQ_I Q8Acc q8_acc_zero() { return vdupq_n_f32(0.0f); }
KVQ_I float q8_acc_sum(Q8Acc v) { return vaddvq_f32(v); }

/** The little-endian f16 at p as float (FCVTL: exact). */
KVQ_I float ld_f16x(const uint8_t* p) {
  const float16x4_t h = vreinterpret_f16_u16(vdup_n_u16((uint16_t)(p[0] | (p[1] << 8))));
  return vgetq_lane_f32(vcvt_f32_f16(h), 0);
}

/** 4 int32 lane sums of the 16 products w * x, added to `acc` (lane i: 4 of the products). */
KVQ_I int32x4_t q8n_dot16(int32x4_t acc, int8x16_t w, int8x16_t x) {
#if defined(__ARM_FEATURE_DOTPROD)
  return vdotq_s32(acc, w, x);
#else
  int16x8_t p = vmull_s8(vget_low_s8(w), vget_low_s8(x));
  p = vmlal_high_s8(p, w, x);
  return vpadalq_s16(acc, p);
#endif
}

/** The integer dot of 32 codes (w0: elements 0..15, w1: 16..31) with the 32 activation codes at x, as 4 lanes. */
KVQ_I int32x4_t q8n_dot32(int8x16_t w0, int8x16_t w1, const int8_t* x) {
  return q8n_dot16(q8n_dot16(vdupq_n_s32(0), w0, vld1q_s8(x)), w1, vld1q_s8(x + 16));
}

/** acc += lanes * s (the block's integer dot scaled by d * dx). */
KVQ_I Q8Acc q8n_scale_add(Q8Acc acc, int32x4_t lanes, float s) { return vfmaq_n_f32(acc, vcvtq_f32_s32(lanes), s); }

/** The 32 nibbles of 16 bytes as bytes: low nibbles (elements 0..15) in lo, high nibbles (16..31) in hi. */
KVQ_I void q8n_nibbles(const uint8_t* p, int8x16_t* lo, int8x16_t* hi) {
  const uint8x16_t v = vld1q_u8(p);
  *lo = vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F)));
  *hi = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
}

/** Byte i = 0x10 where bit i of the little-endian uint32 at p is set, else 0 (q5_0 / q5_1's fifth bits): 0..15 / 16..31. */
KVQ_I void q8n_bit5(const uint8_t* p, uint8x16_t* lo, uint8x16_t* hi) {
  const uint8x16_t bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040201008040201ull));
  const uint8x16_t sixteen = vdupq_n_u8(0x10);
  *lo = vandq_u8(vtstq_u8(vcombine_u8(vdup_n_u8(p[0]), vdup_n_u8(p[1])), bit), sixteen);
  *hi = vandq_u8(vtstq_u8(vcombine_u8(vdup_n_u8(p[2]), vdup_n_u8(p[3])), bit), sixteen);
}

template <int DT>
struct Q8Direct;

template <>
struct Q8Direct<kQ8_0> {
  template <int R>
  KVQ_I void dot(const uint8_t* b, const int8_t* const* x, const float* dx, const float*, const int16_t* const*, Q8Acc* acc, float*) {
    const float d = ld_f16x(b);
    const int8x16_t w0 = vld1q_s8(reinterpret_cast<const int8_t*>(b + 2)), w1 = vld1q_s8(reinterpret_cast<const int8_t*>(b + 18));
    for (int r = 0; r < R; r++) acc[r] = q8n_scale_add(acc[r], q8n_dot32(w0, w1, x[r]), d * dx[r]);
  }
};

template <>
struct Q8Direct<kQ4_0> {
  // w = nibble - 8 in [-8, 7], then the signed dot.
  template <int R>
  KVQ_I void dot(const uint8_t* b, const int8_t* const* x, const float* dx, const float*, const int16_t* const*, Q8Acc* acc, float*) {
    const float d = ld_f16x(b);
    int8x16_t w0, w1;
    q8n_nibbles(b + 2, &w0, &w1);
    w0 = vsubq_s8(w0, vdupq_n_s8(8));
    w1 = vsubq_s8(w1, vdupq_n_s8(8));
    for (int r = 0; r < R; r++) acc[r] = q8n_scale_add(acc[r], q8n_dot32(w0, w1, x[r]), d * dx[r]);
  }
};

/**
 * The 32-element types with unsigned codes q (0..15 or 0..31): w = d q + c with c = m (q4_1, q5_1) or c = -16 d
 * (q5_0): d dx sum(q x) plus c dx sum(x) in the row's scalar accumulator (xs[r] = dx sum(x) of the block).
 */
template <int DT>
struct Q8DirectU32 {
  static constexpr bool kMin = DT == kQ4_1 || DT == kQ5_1;   // an f16 minimum after d
  static constexpr bool kFive = DT == kQ5_0 || DT == kQ5_1;  // four bytes of fifth bits before the nibbles
  template <int R>
  KVQ_I void dot(const uint8_t* b, const int8_t* const* x, const float* dx, const float* xs, const int16_t* const*, Q8Acc* acc, float* accs) {
    const float d = ld_f16x(b);
    const float c = kMin ? ld_f16x(b + 2) : -16.0f * d;
    const uint8_t* qs = b + 2 + (kMin ? 2 : 0) + (kFive ? 4 : 0);
    int8x16_t w0, w1;
    q8n_nibbles(qs, &w0, &w1);
    if (kFive) {
      uint8x16_t h0, h1;
      q8n_bit5(b + 2 + (kMin ? 2 : 0), &h0, &h1);
      w0 = vreinterpretq_s8_u8(vorrq_u8(vreinterpretq_u8_s8(w0), h0));
      w1 = vreinterpretq_s8_u8(vorrq_u8(vreinterpretq_u8_s8(w1), h1));
    }
    for (int r = 0; r < R; r++) {
      acc[r] = q8n_scale_add(acc[r], q8n_dot32(w0, w1, x[r]), d * dx[r]);
      accs[r] += c * xs[r];
    }
  }
};
template <>
struct Q8Direct<kQ4_1> : Q8DirectU32<kQ4_1> {};
template <>
struct Q8Direct<kQ5_0> : Q8DirectU32<kQ5_0> {};
template <>
struct Q8Direct<kQ5_1> : Q8DirectU32<kQ5_1> {};

/**
 * q4_k / q5_k: sum over sub-blocks j of d sc_j sum(q x) - dmin m_j sum(x); q unsigned (nibbles, plus q5_k's fifth
 * bits from qh), the 6-bit scales and mins from k_scale_min.
 */
template <bool kFive>
struct Q8DirectK45 {
  template <int R>
  KVQ_I void dot(const uint8_t* b, const int8_t* const* x, const float* dx, const float*, const int16_t* const* s16, Q8Acc* acc, float*) {
    const float d = ld_f16x(b), dmin = ld_f16x(b + 2);
    int sc[8], mn[8];
    for (int j = 0; j < 8; j++) k_scale_min(j, b + 4, &sc[j], &mn[j]);
    const uint8_t* qs = b + (kFive ? 48 : 16);
    int8x16_t q[8][2];  // sub-block j's 32 codes
    for (int jj = 0; jj < 4; jj++) {
      for (int h = 0; h < 2; h++) {
        const uint8x16_t v = vld1q_u8(qs + 32 * jj + 16 * h);
        uint8x16_t lo = vandq_u8(v, vdupq_n_u8(0x0F)), hi = vshrq_n_u8(v, 4);
        if (kFive) {
          const uint8x16_t qh = vld1q_u8(b + 16 + 16 * h);
          lo = vorrq_u8(lo, vshlq_n_u8(vandq_u8(vshlq_u8(qh, vdupq_n_s8((int8_t)(-2 * jj))), vdupq_n_u8(1)), 4));
          hi = vorrq_u8(hi, vshlq_n_u8(vandq_u8(vshlq_u8(qh, vdupq_n_s8((int8_t)(-2 * jj - 1))), vdupq_n_u8(1)), 4));
        }
        q[2 * jj][h] = vreinterpretq_s8_u8(lo);
        q[2 * jj + 1][h] = vreinterpretq_s8_u8(hi);
      }
    }
    for (int r = 0; r < R; r++) {
      int32x4_t sum = vdupq_n_s32(0);
      int32_t mins = 0;
      for (int j = 0; j < 8; j++) {
        sum = vmlaq_n_s32(sum, q8n_dot32(q[j][0], q[j][1], x[r] + 32 * j), sc[j]);
        mins += mn[j] * (s16[r][2 * j] + s16[r][2 * j + 1]);
      }
      acc[r] = q8n_scale_add(acc[r], sum, d * dx[r]);
      acc[r] = vsetq_lane_f32(vgetq_lane_f32(acc[r], 0) + (float)mins * (-dmin * dx[r]), acc[r], 0);
    }
  }
};
template <>
struct Q8Direct<kQ4_K> : Q8DirectK45<false> {};
template <>
struct Q8Direct<kQ5_K> : Q8DirectK45<true> {};

template <>
struct Q8Direct<kQ6_K> {
  // q = (ql nibble | qh 2 bits << 4) - 32 in groups of 16 with int8 scales: sum(sc q x) over unsigned q, minus
  // 32 sum_g sc_g sum_g(x).
  template <int R>
  KVQ_I void dot(const uint8_t* b, const int8_t* const* x, const float* dx, const float*, const int16_t* const* s16, Q8Acc* acc, float*) {
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
    const float d = ld_f16x(b + 208);
    const uint8x16_t m4 = vdupq_n_u8(0x0F), m2 = vdupq_n_u8(0x03);
    int8x16_t q[16];  // 16-element group g (elements 16g .. 16g + 15)
    for (int n = 0; n < 2; n++) {
      for (int h = 0; h < 2; h++) {
        const uint8x16_t L = vld1q_u8(b + 64 * n + 16 * h), L2 = vld1q_u8(b + 64 * n + 32 + 16 * h);
        const uint8x16_t H = vld1q_u8(b + 128 + 32 * n + 16 * h);
        // Chunk c = 4n + k (32 elements) is groups 2c (h = 0) and 2c + 1 (h = 1).
        q[2 * (4 * n + 0) + h] = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(L, m4), vshlq_n_u8(vandq_u8(H, m2), 4)));
        q[2 * (4 * n + 1) + h] = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(L2, m4), vshlq_n_u8(vandq_u8(vshrq_n_u8(H, 2), m2), 4)));
        q[2 * (4 * n + 2) + h] = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(L, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(H, 4), m2), 4)));
        q[2 * (4 * n + 3) + h] = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(L2, 4), vshlq_n_u8(vshrq_n_u8(H, 6), 4)));
      }
    }
    for (int r = 0; r < R; r++) {
      int32x4_t sum = vdupq_n_s32(0);
      int32_t corr = 0;
      for (int g = 0; g < 16; g++) {
        sum = vmlaq_n_s32(sum, q8n_dot16(vdupq_n_s32(0), q[g], vld1q_s8(x[r] + 16 * g)), sc[g]);
        corr += sc[g] * s16[r][g];
      }
      // sum((q - 32) sc x) = sum(q sc x) - 32 sum_g sc_g sum_g(x).
      acc[r] = q8n_scale_add(acc[r], vsubq_s32(sum, vsetq_lane_s32(32 * corr, vdupq_n_s32(0), 0)), d * dx[r]);
    }
  }
};

#endif  // KVQ_WQUANT_NEON_Q8_H_
