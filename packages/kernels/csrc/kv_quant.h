// SPDX-License-Identifier: Apache-2.0
//
// The scalar codecs of the KV-cache dtypes scaled when written (docs/spec/kv-dtypes.md: fp8/int8/int4_per_token_head,
// int4_g16/32/64, nvfp4, q4_0, int4_g32_f16), written once for every native backend: the CPU kernels (@kvq/kernels-cpu kvquant_impl.h)
// and the GPU kernels (@kvq/kernels-cuda kvquant.cu) include this header. Bit-exact with @kvq/cache's kv-quant.ts
// (`quantizeKvHead`, the reference): the parity suite compares the pool bytes of every backend with it.
//
// Every function is KVQ_HOST_DEVICE (fp8.h): `__host__ __device__` under nvcc / hipcc, `static inline` elsewhere.
#ifndef KVQ_KV_QUANT_H_
#define KVQ_KV_QUANT_H_

#include <math.h>
#include <stdint.h>

#include "fp8.h"
#include "ops.h"

namespace kvq {

/** A float32 stored little-endian at p (the scales of a block; p is 4-byte aligned in the layouts, not assumed). */
KVQ_HOST_DEVICE float kv_load_f32le(const uint8_t* p) {
  return bits_as_f32((uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24));
}

KVQ_HOST_DEVICE void kv_store_f32le(uint8_t* p, float v) {
  const uint32_t b = f32_as_bits(v);
  p[0] = (uint8_t)b;
  p[1] = (uint8_t)(b >> 8);
  p[2] = (uint8_t)(b >> 16);
  p[3] = (uint8_t)(b >> 24);
}

/** amax over the finite values of x[0, n), or the canonical quiet NaN (0x7FC00000) when one of them is NaN. */
KVQ_HOST_DEVICE float kv_group_amax(const float* x, int n) {
  float amax = 0.0f;
  bool nan = false;
  for (int i = 0; i < n; i++) {
    const float v = x[i];
    nan |= v != v;
    const uint32_t a = f32_as_bits(v) & 0x7FFFFFFFu;
    amax = (bits_as_f32(a) > amax && a != 0x7F800000u) ? bits_as_f32(a) : amax;
  }
  return nan ? bits_as_f32(0x7FC00000u) : amax;
}

/** Integer code of v = fround(x / scale): nearest, ties to even, saturated to ±qmax (±Inf too). */
KVQ_HOST_DEVICE int kv_int_code(float v, int qmax) {
  if (v >= (float)qmax) return qmax;
  if (v <= -(float)qmax) return -qmax;
  return (int)rintf(v);
}

/**
 * E2M1 code (sign in bit 3) of v: nearest of ±{0, 0.5, 1, 1.5, 2, 3, 4, 6}, ties to the even code, saturating at 6;
 * zero and anything rounding to it is code 0. The comparisons are @kvq/cache encodeE2m1's (a NaN gives 7).
 */
KVQ_HOST_DEVICE uint32_t kv_e2m1_code(float v) {
  const float m = bits_as_f32(f32_as_bits(v) & 0x7FFFFFFFu);
  uint32_t c;
  if (m <= 0.25f) c = 0;
  else if (m < 0.75f) c = 1;
  else if (m <= 1.25f) c = 2;
  else if (m < 1.75f) c = 3;
  else if (m <= 2.5f) c = 4;
  else if (m < 3.5f) c = 5;
  else if (m <= 5.0f) c = 6;
  else c = 7;
  return c != 0 && v < 0.0f ? (c | 8u) : c;
}

/** The value of an int4 nibble (two's complement). */
KVQ_HOST_DEVICE int kv_int4_value(uint32_t nib) { return nib < 8 ? (int)nib : (int)nib - 16; }

/** Twice the value of an E2M1 code (an integer: exact in any type; halve it for the value). */
KVQ_HOST_DEVICE int kv_e2m1_twice(uint32_t nib) {
  const int m = (int)(nib & 7u);
  const int v = m < 4 ? m : m == 4 ? 4 : m == 5 ? 6 : m == 6 ? 8 : 12;
  return (nib & 8u) ? -v : v;
}

/**
 * Codes and scale of one *_per_token_head row (fp8: e4m3fn codes of fround(x / scale), satfinite; int8: -127..127),
 * scale = amax / 448 or / 127 (NaN: NaN scale, zero codes; scale 0: zero codes).
 */
KVQ_HOST_DEVICE void kv_quantize_head_8bit(bool fp8, const float* x, int D, uint8_t* codes, uint8_t* sc) {
  const float amax = kv_group_amax(x, D);
  const float scale = amax != amax ? amax : amax / (fp8 ? 448.0f : 127.0f);
  kv_store_f32le(sc, scale);
  for (int i = 0; i < D; i++) {
    if (!(scale > 0.0f)) codes[i] = 0;
    else if (fp8) codes[i] = fp8_encode<kE4M3FN, true>(x[i] / scale);
    else codes[i] = (uint8_t)(int8_t)kv_int_code(x[i] / scale, 127);
  }
}

/**
 * Codes and scales of one row of a 4-bit dtype (int4_* or nvfp4), group by group: int4 scale = amax / 7 (float32,
 * little-endian); nvfp4 scale = the E4M3FN code of (amax / 6) / tensor, used as fround(decode(code) * tensor). A NaN
 * group gets a NaN scale and zero codes, a zero scale zero codes. `tensor`: nvfp4's per-tensor scale.
 */
KVQ_HOST_DEVICE void kv_quantize_head_4bit(bool nvfp4, const KvQuantLayout& L, const float* x, uint8_t* codes, uint8_t* sc,
                                           float tensor) {
  const int G = L.groupSize;
  for (int g = 0; g < L.groupsPerHead; g++) {
    const float* xg = x + (int64_t)g * G;
    uint8_t* cg = codes + (int64_t)g * G / 2;
    const float amax = kv_group_amax(xg, G);
    float S;
    if (nvfp4) {
      uint32_t s8;
      if (amax != amax) {
        s8 = 0x7Fu;  // E4M3FN NaN
        S = amax;
      } else {
        s8 = fp8_encode<kE4M3FN, true>((amax / 6.0f) / tensor);
        S = fp8_decode<kE4M3FN>(s8) * tensor;
      }
      sc[g] = (uint8_t)s8;
    } else {
      S = amax != amax ? amax : amax / 7.0f;
      kv_store_f32le(sc + 4 * g, S);
    }
    for (int i = 0; i < G; i += 2) {
      uint32_t lo = 0, hi = 0;
      if (S > 0.0f) {
        lo = nvfp4 ? kv_e2m1_code(xg[i] / S) : (uint32_t)kv_int_code(xg[i] / S, 7) & 0xFu;
        hi = nvfp4 ? kv_e2m1_code(xg[i + 1] / S) : (uint32_t)kv_int_code(xg[i + 1] / S, 7) & 0xFu;
      }
      cg[i / 2] = (uint8_t)(lo | (hi << 4));
    }
  }
}

/** The bits of the f16 scale (little-endian) of group g of a row whose scales start at sc (q4_0, int4_g32_f16). */
KVQ_HOST_DEVICE uint16_t kv_f16le_bits(const uint8_t* sc, int g) { return (uint16_t)(sc[2 * g] | (sc[2 * g + 1] << 8)); }

/** That f16 scale as float32. */
KVQ_HOST_DEVICE float kv_load_f16le(const uint8_t* sc, int g) { return f16_to_f32(kv_f16le_bits(sc, g)); }

/**
 * The f16 bits stored for a finite group scale d (q4_0, int4_g32_f16; @kvq/cache f16ScaleBits): round to nearest
 * even, ±65504 where that overflows (|d| >= 65520), +0 for ±0.
 */
KVQ_HOST_DEVICE uint32_t kv_f16_scale_bits(float d) {
  uint32_t h = f32_to_f16(d);
  if ((h & 0x7C00u) == 0x7C00u) h = d < 0.0f ? 0xFBFFu : 0x7BFFu;
  return (h & 0x7FFFu) == 0u ? 0u : h;
}

/**
 * a * b rounded to float32 and never fused into a following add: nvcc and hipcc contract `a * b + c` into an FMA by
 * default (different rounding from the reference); host builds compile with -ffp-contract=off.
 */
KVQ_HOST_DEVICE float kv_mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

/** Store an f16 scale (bits h, little-endian) and 32 4-bit codes (q[i] & 0xF; element 2i in the low nibble). */
KVQ_HOST_DEVICE void kv_store_f16_group(uint32_t h, const uint32_t* q, uint8_t* codes, uint8_t* sc) {
  sc[0] = (uint8_t)h;
  sc[1] = (uint8_t)(h >> 8);
  for (int i = 0; i < 32; i += 2) codes[i / 2] = (uint8_t)((q[i] & 0xFu) | ((q[i + 1] & 0xFu) << 4));
}

/**
 * One 32-value q4_0 group (ggml's quantize_row_q4_0_ref; @kvq/cache quantizeQ4_0Group): max = the finite value of
 * largest magnitude (first on ties), d = max / -8 stored as f16 (saturated to ±65504, then quantized against it),
 * codes min(15, trunc(x * id + 8.5)) in float32 steps with id = 1 / d, stored minus 8 as nibbles. NaN group: f16 NaN
 * scale and zero codes; an f16 scale of ±0: +0 and zero codes.
 */
KVQ_HOST_DEVICE void kv_quantize_q4_0_group(const float* x, uint8_t* codes, uint8_t* sc) {
  float amax = 0.0f, max = 0.0f;
  bool nan = false;
  for (int i = 0; i < 32; i++) {
    const float v = x[i];
    nan |= v != v;
    const uint32_t a = f32_as_bits(v) & 0x7FFFFFFFu;
    if (bits_as_f32(a) > amax && a != 0x7F800000u) {
      amax = bits_as_f32(a);
      max = v;
    }
  }
  const float d = max / -8.0f;
  const uint32_t h = nan ? 0x7E00u : kv_f16_scale_bits(d);  // +0 where ggml stores -0 (d = 0 / -8)
  const bool zero = nan || h == 0u;
  // ggml's id is 1 / d of the unrounded d; where d overflowed f16, of the saturated scale the codes decode with.
  const float id = zero ? 0.0f : fabsf(d) >= 65520.0f ? 1.0f / f16_to_f32((uint16_t)h) : 1.0f / d;
  uint32_t q[32];
  for (int i = 0; i < 32; i++) {
    const float t = kv_mul_rn(x[i], id) + 8.5f;
    q[i] = zero ? 0u : (t >= 15.0f ? 15u : t <= 0.0f ? 0u : (uint32_t)t) ^ 8u;
  }
  kv_store_f16_group(h, q, codes, sc);
}

/**
 * One 32-value int4_g32_f16 group (@kvq/cache int4F16GroupScale / quantizeInt4F16Group): with p the largest finite
 * value (>= 0) and n the smallest (<= 0), dPos = max(-n / 8, p / 7), dNeg = max(p / 8, -n / 7); d = dPos when
 * dPos <= dNeg, else -dNeg; stored as f16 (saturated to ±65504; ±0 stored +0). Codes clamp(rint(x / d), -8, 7) against
 * the stored d. NaN group: f16 NaN and zero codes; zero scale: zero codes.
 */
KVQ_HOST_DEVICE void kv_quantize_int4_f16_group(const float* x, uint8_t* codes, uint8_t* sc) {
  float p = 0.0f, n = 0.0f;
  bool nan = false;
  for (int i = 0; i < 32; i++) {
    const float v = x[i];
    nan |= v != v;
    const uint32_t a = f32_as_bits(v) & 0x7FFFFFFFu;
    if (a != 0x7F800000u) {
      p = v > p ? v : p;
      n = v < n ? v : n;
    }
  }
  uint32_t h = 0x7E00u;
  if (!nan) {
    const float a1 = -n / 8.0f, b1 = p / 7.0f, a2 = p / 8.0f, b2 = -n / 7.0f;
    const float dPos = a1 > b1 ? a1 : b1, dNeg = a2 > b2 ? a2 : b2;
    h = kv_f16_scale_bits(dPos <= dNeg ? dPos : -dNeg);
  }
  const float d = f16_to_f32((uint16_t)h);
  const bool zero = nan || d == 0.0f;
  uint32_t q[32];
  for (int i = 0; i < 32; i++) {
    const float v = zero ? 0.0f : x[i] / d;
    q[i] = (uint32_t)(v >= 7.0f ? 7 : v <= -8.0f ? -8 : (int)rintf(v));
  }
  kv_store_f16_group(h, q, codes, sc);
}

/** One head row of any write-time-scaled dtype `dt` into its codes and scales (`tensor`: nvfp4's per-tensor scale). */
KVQ_HOST_DEVICE void kv_quantize_head(int dt, const KvQuantLayout& L, const float* x, int D, uint8_t* codes, uint8_t* sc, float tensor) {
  if (dt == kKvFp8PerTokenHead || dt == kKvInt8PerTokenHead) {
    kv_quantize_head_8bit(dt == kKvFp8PerTokenHead, x, D, codes, sc);
  } else if (dt == kKvQ4_0) {
    for (int g = 0; g < D / 32; g++) kv_quantize_q4_0_group(x + 32 * g, codes + 16 * g, sc + 2 * g);
  } else if (dt == kKvInt4G32F16) {
    for (int g = 0; g < D / 32; g++) kv_quantize_int4_f16_group(x + 32 * g, codes + 16 * g, sc + 2 * g);
  } else {
    kv_quantize_head_4bit(dt == kKvNvfp4, L, x, codes, sc, tensor);
  }
}

/** Byte offsets of the codes and scales of (slot, kv head) in a pool of blocks of layout L. */
KVQ_HOST_DEVICE void kv_row_offsets(const KvQuantLayout& L, int64_t slot, int blockSize, int numKvHeads, int h, int64_t* codeOff,
                                    int64_t* scaleOff) {
  const int64_t base = slot / blockSize * L.blockBytes;
  const int64_t row = slot % blockSize * numKvHeads + h;
  *codeOff = base + row * L.codeBytesPerHead;
  *scaleOff = base + L.scalesOffset + row * L.groupsPerHead * L.scaleBytes;
}

}  // namespace kvq

#endif  // KVQ_KV_QUANT_H_
