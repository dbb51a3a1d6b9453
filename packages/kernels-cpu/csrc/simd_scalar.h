// SPDX-License-Identifier: Apache-2.0
//
// Portable scalar "vector" layer: one float32 lane. Compiles without any -m flag on any C++17 compiler,
// so the same kernel templates (kernels_impl.h) run everywhere; results agree with the SIMD layers up to
// float32 summation order (and bit-exactly for every conversion and FP8 write).
#ifndef KVQ_SIMD_SCALAR_H_
#define KVQ_SIMD_SCALAR_H_

#include <stdint.h>
#include <string.h>

#include "fp8.h"
#include "portable.h"

namespace kvq {
namespace KVQ_NS {

#define KVQ_SI static KVQ_ALWAYS_INLINE

typedef float VF;
static const int W = 1;
static const char* const kIsaName = "scalar";

KVQ_SI VF vzero() { return 0.0f; }
KVQ_SI VF vset1(float x) { return x; }
KVQ_SI VF vload(const float* p) { return *p; }
KVQ_SI VF vloadn(const float* p, int n) { return n > 0 ? *p : 0.0f; }
KVQ_SI void vstore(float* p, VF v) { *p = v; }
KVQ_SI void vstoren(float* p, VF v, int n) {
  if (n > 0) *p = v;
}
KVQ_SI VF vadd(VF a, VF b) { return a + b; }
KVQ_SI VF vsub(VF a, VF b) { return a - b; }
KVQ_SI VF vmul(VF a, VF b) { return a * b; }
KVQ_SI VF vdiv(VF a, VF b) { return a / b; }
/** a * b + c. Two roundings here (a library fmaf call would dominate scalar kernels); the SIMD layers fuse. */
KVQ_SI VF vfma(VF a, VF b, VF c) { return a * b + c; }
/** max(a, b) with the SIMD layers' NaN rule: when either is NaN, returns b. */
KVQ_SI VF vmax(VF a, VF b) { return a > b ? a : b; }
KVQ_SI VF vmin(VF a, VF b) { return a < b ? a : b; }
KVQ_SI VF vabs(VF a) { return bits_as_f32(f32_as_bits(a) & 0x7FFFFFFFu); }
KVQ_SI float vhsum(VF v) { return v; }
KVQ_SI float vhmax(VF v) { return v; }
KVQ_SI bool vhasnan(VF v) { return v != v; }
KVQ_SI void vprefetch(const void* p) { KVQ_PREFETCH(p); }
KVQ_SI void vhsum4(VF a, VF b, VF c, VF d, float* out) {
  out[0] = a;
  out[1] = b;
  out[2] = c;
  out[3] = d;
}

/** exp(x): same reduction and polynomial as the SIMD layers (NaN propagates, >88.376 -> inf, <-87.336 -> 0). */
KVQ_SI VF vexp(VF x) {
  if (x != x) return x;
  if (x > 88.3762626647949f) return kvq_inff();
  if (x < -87.3365478515625f) return 0.0f;
  const float n = kvq_rintf(x * 1.44269504088896341f);
  // Cody-Waite: n * 0.693359375 is exact (few mantissa bits), so x - n*C1 loses nothing.
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500E-4f;
  p = p * r + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  p = p * (r * r) + (r + 1.0f);
  return p * bits_as_f32((uint32_t)((int32_t)n + 127) << 23);
}

KVQ_SI VF vload_bf16(const uint16_t* p) { return bf16_to_f32(*p); }
KVQ_SI VF vloadn_bf16(const uint16_t* p, int n) { return n > 0 ? bf16_to_f32(*p) : 0.0f; }
KVQ_SI VF vload_f16(const uint16_t* p) { return f16_to_f32(*p); }
KVQ_SI VF vloadn_f16(const uint16_t* p, int n) { return n > 0 ? f16_to_f32(*p) : 0.0f; }
/** One f16 (bits) widened to float32 (exact). */
KVQ_SI float f16_scalar(uint16_t h) { return f16_to_f32(h); }

// ---- block unpacking (the SSE versions: simd_unpack_sse.h) ----------------------------------------
/** 16 packed bytes -> 32 int8: out[j] = (b[j] & 15) - bias, out[j + 16] = (b[j] >> 4) - bias (GGML q4_0 / q4_1). */
KVQ_SI void unpack_nib_halves(const uint8_t* b, int bias, int8_t* out) {
  uint8_t v[16];
  memcpy(v, b, 16);
  for (int j = 0; j < 16; j++) out[j] = (int8_t)((v[j] & 15) - bias);
  for (int j = 0; j < 16; j++) out[j + 16] = (int8_t)((v[j] >> 4) - bias);
}
/** 16 packed bytes -> 32 int8 interleaved: out[2j] = (b[j] & 15) - bias, out[2j + 1] = (b[j] >> 4) - bias (int4). */
KVQ_SI void unpack_nib_pairs(const uint8_t* b, int bias, int8_t* out) {
  uint8_t v[16];
  memcpy(v, b, 16);
  for (int j = 0; j < 16; j++) {
    out[2 * j] = (int8_t)((v[j] & 15) - bias);
    out[2 * j + 1] = (int8_t)((v[j] >> 4) - bias);
  }
}
/** 16 packed bytes -> 32 int8 through a 16-entry table: out[2j] = lut[b[j] & 15], out[2j + 1] = lut[b[j] >> 4]. */
KVQ_SI void unpack_nib_pairs_lut(const uint8_t* b, const int8_t* lut, int8_t* out) {
  for (int j = 0; j < 16; j++) {
    out[2 * j] = lut[b[j] & 15];
    out[2 * j + 1] = lut[b[j] >> 4];
  }
}
/** GGML q5_0 / q5_1: out[j] = ((qs[j] & 15) | bit_j(qh) << 4) - bias, out[j + 16] likewise with the high nibble. */
KVQ_SI void unpack_q5_32(const uint8_t* qs, uint32_t qh, int bias, int8_t* out) {
  uint8_t v[16];
  memcpy(v, qs, 16);
  for (int j = 0; j < 16; j++) out[j] = (int8_t)(((v[j] & 15) | (((qh >> j) & 1) << 4)) - bias);
  for (int j = 0; j < 16; j++) out[j + 16] = (int8_t)(((v[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - bias);
}

// ---- int8 loads (quantized weights) ---------------------------------------------------------------
/** W int8 values converted to float32 (exact). */
KVQ_SI VF vcvt_i8(const int8_t* p) { return (float)*p; }
/** The first n (< W) int8 values converted, the other lanes 0. */
KVQ_SI VF vcvtn_i8(const int8_t* p, int n) { return n > 0 ? (float)*p : 0.0f; }
/** W bytes of packed 4-bit values: lo[j] = (p[j] & 15) - bias, hi[j] = (p[j] >> 4) - bias, as float32 (exact). */
KVQ_SI void vcvt_nib(const uint8_t* p, int bias, VF* lo, VF* hi) {
  *lo = (float)((p[0] & 15) - bias);
  *hi = (float)((p[0] >> 4) - bias);
}

template <int F>
KVQ_SI float fp8_load_const() {
  return F == kE4M3FN ? 0x1p120f : F == kE4M3FNUZ ? 0x1p119f : F == kE5M2FNUZ ? 0x1p111f : 1.0f;
}

/** Same lane arithmetic as the SIMD layers: raw pattern times `mul` (which includes fp8_load_const<F>()). */
template <int F>
KVQ_SI VF fp8_lane(uint8_t b, VF mul) {
  if (F == kE5M2) {
    if ((b & 0x7Fu) > 0x7Cu) return bits_as_f32(0x7FFFFFFFu);  // NaN codes: CUDA's pattern
    return f16_to_f32((uint16_t)((uint32_t)b << 8)) * mul;
  }
  const int m = Fp8Traits<F>::kMant;
  const uint32_t magmask = 0x7Fu << (23 - m);
  const uint32_t y = ((uint32_t)(int32_t)(int8_t)b << (23 - m)) & (0x80000000u | magmask);
  const bool nan = Fp8Traits<F>::kFnuz ? (y == 0x80000000u) : ((y & magmask) == magmask);
  return nan ? bits_as_f32(0x7FFFFFFFu) : bits_as_f32(y) * mul;
}
template <int F>
KVQ_SI VF vload_fp8(const uint8_t* p, VF mul) {
  return fp8_lane<F>(*p, mul);
}
template <int F>
KVQ_SI VF vloadn_fp8(const uint8_t* p, int n, VF mul) {
  return n > 0 ? fp8_lane<F>(*p, mul) : 0.0f;
}

template <int F>
KVQ_SI VF vload_fp8_fast(const uint8_t* p, VF mul) {
  return fp8_lane<F>(*p, mul);
}
template <int F>
KVQ_SI VF vloadn_fp8_fast(const uint8_t* p, int n, VF mul) {
  return n > 0 ? fp8_lane<F>(*p, mul) : 0.0f;
}
/** The scalar lanes decode NaN codes exactly, so nothing needs a prescan. */
template <int F>
KVQ_SI bool fp8_any_nan(const uint8_t*, int64_t) {
  return false;
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

#endif  // KVQ_SIMD_SCALAR_H_
