// SPDX-License-Identifier: Apache-2.0
//
// AArch64 Advanced SIMD (NEON) vector layer: 4 float32 lanes (one 128-bit register).
// Included only by kernels_neon.cc. AArch64 always has Advanced SIMD with FP16 conversions (FCVTL), so the
// translation unit needs no -m flag and this tier is the baseline of every arm64 build (Linux and Apple Silicon).
//
// Instruction choices (README "ARM NEON tier" has the table):
// - FMA: vfmaq_f32 / vfmsq_f32 (FMLA / FMLS), fused like the x86 layers' vfmadd.
// - max / min: compare + select (FCMGT + BSL), not FMAX / FMIN, so a NaN operand gives the second operand exactly
//   as x86's maxps / minps do (kernels rely on that rule: a NaN score never becomes a row's running maximum).
// - horizontal sums: vaddvq_f32 (FADDP across the register), vpaddq_f32 for four vectors at once.
// - f16 -> f32: vcvt_f32_f16 (FCVTL); bf16 -> f32: vshll_n_u16(v, 16) (USHLL #16, one instruction).
// - FP8 decode: a table lookup (vqtbl1q_u8, TBL) moves each code into the top byte of its 32-bit lane (indexes out
//   of range give the zero bytes), an arithmetic shift right (SSHR) sign-extends it and lines its exponent and
//   mantissa up with float32's, a mask (AND) keeps sign, exponent and mantissa, and one multiply by a power of two
//   (folded into the caller's scale) rebias the exponent: exact for every code, subnormals included. e5m2 is the
//   top byte of an IEEE half, so TBL builds the halves and FCVTL widens them. NaN codes: compare + BSL.
// - int8 / int4 / 5-bit weights: AND / USHR for nibbles, ZIP1 / ZIP2 to interleave, TBL + CMTST for GGML's fifth
//   bits, SXTL + SCVTF to float.
// Everything lives in namespace kvq::KVQ_NS and is `static inline`, so no symbol can leak into another ISA's TU.
#ifndef KVQ_SIMD_NEON_H_
#define KVQ_SIMD_NEON_H_

#include <arm_neon.h>
#include <stdint.h>
#include <string.h>

#include "fp8.h"
#include "portable.h"

namespace kvq {
namespace KVQ_NS {

#define KVQ_SI static KVQ_ALWAYS_INLINE

typedef float32x4_t VF;
static const int W = 4;
#if defined(KVQ_NEON_ISA_NAME)
static const char* const kIsaName = KVQ_NEON_ISA_NAME;  // kernels_neon_dotprod.cc: "neon-dotprod"
#else
static const char* const kIsaName = "neon";
#endif

KVQ_SI VF vzero() { return vdupq_n_f32(0.0f); }
KVQ_SI VF vset1(float x) { return vdupq_n_f32(x); }
KVQ_SI VF vload(const float* p) { return vld1q_f32(p); }
/** The first n (< W) floats at p, the other lanes 0 (never reads past p + n). */
KVQ_SI VF vloadn(const float* p, int n) {
  float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int i = 0; i < n; i++) t[i] = p[i];
  return vld1q_f32(t);
}
KVQ_SI void vstore(float* p, VF v) { vst1q_f32(p, v); }
/** Stores the first n (< W) lanes (never writes past p + n). */
KVQ_SI void vstoren(float* p, VF v, int n) {
  float t[4];
  vst1q_f32(t, v);
  for (int i = 0; i < n; i++) p[i] = t[i];
}
KVQ_SI VF vadd(VF a, VF b) { return vaddq_f32(a, b); }
KVQ_SI VF vsub(VF a, VF b) { return vsubq_f32(a, b); }
KVQ_SI VF vmul(VF a, VF b) { return vmulq_f32(a, b); }
KVQ_SI VF vdiv(VF a, VF b) { return vdivq_f32(a, b); }
/** a * b + c (fused: FMLA). */
KVQ_SI VF vfma(VF a, VF b, VF c) { return vfmaq_f32(c, a, b); }
/** max(a, b); when either is NaN returns b (x86 maxps's rule; FMAX would return the NaN). */
KVQ_SI VF vmax(VF a, VF b) { return vbslq_f32(vcgtq_f32(a, b), a, b); }
/** min(a, b); when either is NaN returns b (x86 minps's rule). */
KVQ_SI VF vmin(VF a, VF b) { return vbslq_f32(vcltq_f32(a, b), a, b); }
KVQ_SI VF vabs(VF a) { return vabsq_f32(a); }
KVQ_SI float vhsum(VF v) { return vaddvq_f32(v); }
/** Largest lane (callers' vectors hold no NaN: vmax above never keeps one). */
KVQ_SI float vhmax(VF v) { return vmaxvq_f32(v); }
KVQ_SI bool vhasnan(VF v) { return vminvq_u32(vceqq_f32(v, v)) == 0; }
KVQ_SI void vprefetch(const void* p) { KVQ_PREFETCH(p); }

/** Horizontal sums of four vectors into out[0..3] (three pairwise adds, FADDP). */
KVQ_SI void vhsum4(VF a, VF b, VF c, VF d, float* out) {
  vst1q_f32(out, vpaddq_f32(vpaddq_f32(a, b), vpaddq_f32(c, d)));
}

/** exp(x), same reduction, polynomial and limits as the x86 layers (NaN propagates, >88.376 -> inf, <-87.336 -> 0). */
KVQ_SI VF vexp(VF x) {
  const VF hi = vdupq_n_f32(88.3762626647949f);
  const VF lo = vdupq_n_f32(-87.3365478515625f);
  const uint32x4_t over = vcgtq_f32(x, hi);   // false for NaN
  const uint32x4_t under = vcltq_f32(x, lo);  // false for NaN
  VF xc = vminq_f32(x, hi);                   // FMIN / FMAX keep a NaN x
  xc = vmaxq_f32(xc, lo);
  const VF n = vrndnq_f32(vmulq_f32(xc, vdupq_n_f32(1.44269504088896341f)));  // FRINTN: nearest, ties to even
  VF r = vfmsq_f32(xc, n, vdupq_n_f32(0.693359375f));
  r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
  VF p = vdupq_n_f32(1.9875691500E-4f);
  p = vfmaq_f32(vdupq_n_f32(1.3981999507E-3f), p, r);
  p = vfmaq_f32(vdupq_n_f32(8.3334519073E-3f), p, r);
  p = vfmaq_f32(vdupq_n_f32(4.1665795894E-2f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.6666665459E-1f), p, r);
  p = vfmaq_f32(vdupq_n_f32(5.0000001201E-1f), p, r);
  p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), p, vmulq_f32(r, r));
  const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
  VF y = vmulq_f32(p, vreinterpretq_f32_s32(e));
  y = vbslq_f32(over, vdupq_n_f32(kvq_inff()), y);
  y = vbslq_f32(under, vdupq_n_f32(0.0f), y);
  return y;
}

// ---- 16-bit loads ------------------------------------------------------------------------------
KVQ_SI uint16x4_t load16n(const uint16_t* p, int n) {
  uint16_t t[4] = {0, 0, 0, 0};
  for (int i = 0; i < n; i++) t[i] = p[i];
  return vld1_u16(t);
}
/** bf16 is the top half of a float32: USHLL #16 widens and shifts in one instruction. */
KVQ_SI VF vload_bf16(const uint16_t* p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }
KVQ_SI VF vloadn_bf16(const uint16_t* p, int n) { return vreinterpretq_f32_u32(vshll_n_u16(load16n(p, n), 16)); }
KVQ_SI VF vload_f16(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
KVQ_SI VF vloadn_f16(const uint16_t* p, int n) { return vcvt_f32_f16(vreinterpret_f16_u16(load16n(p, n))); }
/** One f16 (bits) widened to float32 (FCVTL, exact). */
KVQ_SI float f16_scalar(uint16_t h) { return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0); }

// ---- block unpacking (quantized weights) -------------------------------------------------------------
// Each writes whole 16-byte vectors, so the int8 loads that follow forward from the stores.

/** 16 packed bytes -> 32 int8: out[j] = (b[j] & 15) - bias, out[j + 16] = (b[j] >> 4) - bias (GGML q4_0 / q4_1). */
KVQ_SI void unpack_nib_halves(const uint8_t* b, int bias, int8_t* out) {
  const uint8x16_t v = vld1q_u8(b);
  const int8x16_t bv = vdupq_n_s8((int8_t)bias);
  vst1q_s8(out, vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(15))), bv));
  vst1q_s8(out + 16, vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), bv));
}

/** 16 packed bytes -> 32 int8 interleaved: out[2j] = (b[j] & 15) - bias, out[2j + 1] = (b[j] >> 4) - bias (int4). */
KVQ_SI void unpack_nib_pairs(const uint8_t* b, int bias, int8_t* out) {
  const uint8x16_t v = vld1q_u8(b);
  const int8x16_t bv = vdupq_n_s8((int8_t)bias);
  const int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(15))), bv);
  const int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), bv);
  vst1q_s8(out, vzip1q_s8(lo, hi));
  vst1q_s8(out + 16, vzip2q_s8(lo, hi));
}

/** 16 packed bytes -> 32 int8 through a 16-entry table: out[2j] = lut[b[j] & 15], out[2j + 1] = lut[b[j] >> 4] (TBL). */
KVQ_SI void unpack_nib_pairs_lut(const uint8_t* b, const int8_t* lut, int8_t* out) {
  const uint8x16_t v = vld1q_u8(b);
  const int8x16_t t = vld1q_s8(lut);
  const int8x16_t lo = vqtbl1q_s8(t, vandq_u8(v, vdupq_n_u8(15)));
  const int8x16_t hi = vqtbl1q_s8(t, vshrq_n_u8(v, 4));
  vst1q_s8(out, vzip1q_s8(lo, hi));
  vst1q_s8(out + 16, vzip2q_s8(lo, hi));
}

/**
 * GGML q5_0 / q5_1: 16 packed low-nibble bytes and 32 fifth bits (qh, bit j = element j) -> 32 int8:
 * out[j] = ((qs[j] & 15) | bit_j << 4) - bias, out[j + 16] = ((qs[j] >> 4) | bit_{j+16} << 4) - bias.
 */
KVQ_SI void unpack_q5_32(const uint8_t* qs, uint32_t qh, int bias, int8_t* out) {
  const uint8x16_t v = vld1q_u8(qs);
  const int8x16_t bv = vdupq_n_s8((int8_t)bias);
  // Byte j of b0 / b1 = qh's byte j / 8 (b1: + 2) by TBL; CMTST against 1 << (j % 8) gives 0xFF where the bit is set.
  const uint8x16_t h = vreinterpretq_u8_u32(vdupq_n_u32(qh));
  const uint8x16_t b0 = vqtbl1q_u8(h, vcombine_u8(vdup_n_u8(0), vdup_n_u8(1)));
  const uint8x16_t b1 = vqtbl1q_u8(h, vcombine_u8(vdup_n_u8(2), vdup_n_u8(3)));
  const uint8x8_t sel8 = vcreate_u8(0x8040201008040201ULL);
  const uint8x16_t sel = vcombine_u8(sel8, sel8);
  const uint8x16_t x10 = vdupq_n_u8(0x10);
  const uint8x16_t h0 = vandq_u8(vtstq_u8(b0, sel), x10);
  const uint8x16_t h1 = vandq_u8(vtstq_u8(b1, sel), x10);
  vst1q_s8(out, vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vandq_u8(v, vdupq_n_u8(15)), h0)), bv));
  vst1q_s8(out + 16, vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(v, 4), h1)), bv));
}

// ---- int8 loads (quantized weights) ---------------------------------------------------------------
/** Exactly 4 bytes at p (no over-read) in the low half of a 64-bit vector. */
KVQ_SI int8x8_t load4_s8(const int8_t* p) {
  uint32_t w;
  memcpy(&w, p, 4);
  return vreinterpret_s8_u32(vdup_n_u32(w));
}
/** W int8 values converted to float32 (exact): SXTL twice, SCVTF. */
KVQ_SI VF vcvt_i8(const int8_t* p) { return vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(load4_s8(p))))); }
/** The first n (< W) int8 values converted, the other lanes 0. */
KVQ_SI VF vcvtn_i8(const int8_t* p, int n) {
  int8_t t[4] = {0, 0, 0, 0};
  for (int i = 0; i < n; i++) t[i] = p[i];
  return vcvt_i8(t);
}
/** W bytes of packed 4-bit values: lo[j] = (p[j] & 15) - bias, hi[j] = (p[j] >> 4) - bias, as float32 (exact): UXTL twice, AND / USHR, SUB, SCVTF. */
KVQ_SI void vcvt_nib(const uint8_t* p, int bias, VF* lo, VF* hi) {
  const uint32x4_t b = vmovl_u16(vget_low_u16(vmovl_u8(vreinterpret_u8_s8(load4_s8(reinterpret_cast<const int8_t*>(p))))));
  const int32x4_t z = vdupq_n_s32(bias);
  *lo = vcvtq_f32_s32(vsubq_s32(vreinterpretq_s32_u32(vandq_u32(b, vdupq_n_u32(15))), z));
  *hi = vcvtq_f32_s32(vsubq_s32(vreinterpretq_s32_u32(vshrq_n_u32(b, 4)), z));
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

/** 4 codes at p (no over-read) as the first 4 bytes of a vector (the TBL table). */
KVQ_SI uint8x16_t load4_u8(const uint8_t* p) {
  uint32_t w;
  memcpy(&w, p, 4);
  return vreinterpretq_u8_u32(vdupq_n_u32(w));
}
KVQ_SI uint8x16_t load4n_u8(const uint8_t* p, int n) {
  uint8_t t[4] = {0, 0, 0, 0};
  for (int i = 0; i < n; i++) t[i] = p[i];
  return load4_u8(t);
}

/** Lane i = code i << 24 (TBL: byte 4i + 3 takes table byte i, index 0xFF gives 0 elsewhere). */
KVQ_SI int32x4_t fp8_top_bytes(uint8x16_t codes) {
  const uint8x16_t idx = vreinterpretq_u8_u32(vcombine_u32(vcreate_u32(0x00FFFFFFu | (0x01FFFFFFULL << 32)),
                                                           vcreate_u32(0x02FFFFFFu | (0x03FFFFFFULL << 32))));
  return vreinterpretq_s32_u8(vqtbl1q_u8(codes, idx));
}

/** e5m2: lane i = f16 bits code i << 8, widened (TBL into the top byte of 16-bit lanes, FCVTL). */
KVQ_SI VF e5m2_halves(uint8x16_t codes) {
  const uint8x8_t idx = vcreate_u8(0x03FF02FF01FF00FFULL);
  return vcvt_f32_f16(vreinterpret_f16_u8(vqtbl1_u8(codes, idx)));
}

/** Raw lanes of the e4m3 / fnuz formats: the code sign-extended to bit 31, exponent and mantissa at float's. */
template <int F>
KVQ_SI uint32x4_t fp8_raw(uint8x16_t codes) {
  const int m = Fp8Traits<F>::kMant;
  // (code << 24) >> (1 + m) arithmetic = (int8)code << (23 - m).
  const int32x4_t y = vshrq_n_s32(fp8_top_bytes(codes), 1 + m);
  return vandq_u32(vreinterpretq_u32_s32(y), vdupq_n_u32(0x80000000u | (0x7Fu << (23 - m))));
}

template <int F>
KVQ_SI VF fp8_lanes(uint8x16_t codes, VF mul) {
  const VF qnan = vreinterpretq_f32_u32(vdupq_n_u32(0x7FFFFFFFu));  // CUDA's NaN pattern
  if (F == kE5M2) {
    const VF v = e5m2_halves(codes);
    return vbslq_f32(vceqq_f32(v, v), vmulq_f32(v, mul), qnan);
  } else {
    const int m = Fp8Traits<F>::kMant;
    const uint32x4_t y = fp8_raw<F>(codes);
    uint32x4_t nan;
    if (Fp8Traits<F>::kFnuz) {
      nan = vceqq_u32(y, vdupq_n_u32(0x80000000u));
    } else {
      const uint32x4_t magmask = vdupq_n_u32(0x7Fu << (23 - m));
      nan = vceqq_u32(vandq_u32(y, magmask), magmask);
    }
    return vbslq_f32(nan, qnan, vmulq_f32(vreinterpretq_f32_u32(y), mul));
  }
}
template <int F>
KVQ_SI VF vload_fp8(const uint8_t* p, VF mul) {
  return fp8_lanes<F>(load4_u8(p), mul);
}
template <int F>
KVQ_SI VF vloadn_fp8(const uint8_t* p, int n, VF mul) {
  return fp8_lanes<F>(load4n_u8(p, n), mul);
}

/** Fast FP8 lanes: like vload_fp8 but NaN codes decode to finite garbage (callers prescan with fp8_any_nan). */
template <int F>
KVQ_SI VF fp8_lanes_fast(uint8x16_t codes, VF mul) {
  if (F == kE5M2) return vmulq_f32(e5m2_halves(codes), mul);
  return vmulq_f32(vreinterpretq_f32_u32(fp8_raw<F>(codes)), mul);
}
template <int F>
KVQ_SI VF vload_fp8_fast(const uint8_t* p, VF mul) {
  return fp8_lanes_fast<F>(load4_u8(p), mul);
}
template <int F>
KVQ_SI VF vloadn_fp8_fast(const uint8_t* p, int n, VF mul) {
  return fp8_lanes_fast<F>(load4n_u8(p, n), mul);
}
/** Whether any of the n codes at p is a NaN code that the fast lanes would misdecode (never for e5m2). */
template <int F>
KVQ_SI bool fp8_any_nan(const uint8_t* p, int64_t n) {
  if (F == kE5M2) return false;
  uint8x16_t hit = vdupq_n_u8(0);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const uint8x16_t b = vld1q_u8(p + i);
    if (Fp8Traits<F>::kFnuz) {
      hit = vorrq_u8(hit, vceqq_u8(b, vdupq_n_u8(0x80)));
    } else {
      hit = vorrq_u8(hit, vceqq_u8(vandq_u8(b, vdupq_n_u8(0x7F)), vdupq_n_u8(0x7F)));
    }
  }
  bool any = vmaxvq_u8(hit) != 0;
  for (; i < n; i++) any |= Fp8Traits<F>::kFnuz ? (p[i] == 0x80) : ((p[i] & 0x7F) == 0x7F);
  return any;
}

// No byte-table FP8 decode on this ISA: the kernels' table path decodes 64 codes into four vectors of 16 lanes
// (AVX-512). With 4 lanes the TBL + shift decode above is already a handful of instructions per vector.
// (Stubs keep the shared kernel templates compiling; never called.)
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

#endif  // KVQ_SIMD_NEON_H_
