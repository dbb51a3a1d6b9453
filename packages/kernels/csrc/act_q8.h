// SPDX-License-Identifier: Apache-2.0
//
// GGML's 8-bit activation quantization, the `activations: 'q8'` mode of `linear` on GGML weights (LinearArgs in
// src/contract.ts; the TypeScript twin is src/quant/activations.ts, bit-identical). llama.cpp's CPU backend and
// vLLM's GGUF kernels quantize the activations this way before their integer dot products; with this mode kvq
// computes the same function: y = sum_e w_e * x'_e with x' the round trip of x through:
// - Q8_0 (blocks of 32; the vec_dot_type of q8_0, q4_0, q5_0, and with the same values of q4_1 / q5_1):
//   d = amax / 127, id = d ? 1 / d : 0, q = roundf(x * id) (half away from zero), stored scale f16(d),
//   x' = q * f16(d) (exact in float32). ggml-quants.c quantize_row_q8_0_ref / quantize_row_q8_1_ref.
// - Q8_K (blocks of 256; the k-quants): max = the element of largest |x| (first one), iscale = -127 / max,
//   q = min(127, nearest_int(iscale * x)) (half to even), d = 1 / iscale (float32), x' = q * d.
//   ggml-quants.c quantize_row_q8_K_ref.
// A block holding a NaN or an infinity gets scale NaN (x' = NaN): its outputs are NaN, as with float activations.
// A block so small that the reciprocal scale overflows float32 (amax below ~3.7e-37: id = 1 / d or iscale = -127 / max
// is infinite; ggml's roundf / nearest_int of an infinity is undefined there) gets codes 0 and scale 0: x' = 0, the
// value the stored scale gives any codes.
// Plain C++ (no STL, no vendor headers): included by the CPU kernels and the GPU kernels (act_q8_quantize_block is
// KVQ_HOST_DEVICE: the GPU rounds device-resident activations on the device, wquant.cu).
#ifndef KVQ_ACT_Q8_H_
#define KVQ_ACT_Q8_H_

#include <math.h>
#include <stdint.h>

#include "fp8.h"
#include "ops.h"

namespace kvq {

/** Elements per activation block for GGML weight dtype `dt`: 256 (Q8_K) for the k-quants, 32 (Q8_0) otherwise. */
KVQ_HOST_DEVICE int64_t act_q8_block(int dt) { return dt >= kQ4_K && dt <= kQ6_K ? 256 : 32; }

/** ggml's nearest_int: round half to even (|v| < 2^22). */
KVQ_HOST_DEVICE int act_q8_nearest_even(float v) { return (int)nearbyintf(v); }

/**
 * Quantize one activation block of n (32 or 256) floats: q[n] and the block's scale (f16-rounded for n = 32,
 * float32 for n = 256), so that x' = q * scale. Returns the scale (NaN for a block with a non-finite value).
 */
KVQ_HOST_DEVICE float act_q8_quantize_block(const float* x, int n, int8_t* q) {
  float amax = 0.0f, max = 0.0f;
  bool finite = true;
  for (int j = 0; j < n; j++) {
    const float a = fabsf(x[j]);
    if (!(a <= 3.402823466e38f)) finite = false;
    if (a > amax) amax = a, max = x[j];
  }
  if (!finite) {
    for (int j = 0; j < n; j++) q[j] = 0;
    return NAN;
  }
  if (n == 32) {
    const float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    if (!(id <= 3.402823466e38f)) id = 0.0f;  // 1 / d overflowed: codes 0 (f16(d) is 0 too)
    for (int j = 0; j < n; j++) q[j] = (int8_t)roundf(x[j] * id);
    return f16_to_f32(f32_to_f16(d));
  }
  const float iscale = amax != 0.0f ? -127.0f / max : 0.0f;
  if (!(fabsf(iscale) <= 3.402823466e38f) || iscale == 0.0f) {  // a zero block, or -127 / max overflowed
    for (int j = 0; j < n; j++) q[j] = 0;
    return 0.0f;
  }
  for (int j = 0; j < n; j++) {
    const int v = act_q8_nearest_even(iscale * x[j]);
    q[j] = (int8_t)(v < 127 ? v : 127);
  }
  return 1.0f / iscale;
}

/** Quantize a row of K activations (K a multiple of act_q8_block(dt)): q[K], scales[K / block]. */
static inline void act_q8_quantize_row(int dt, const float* x, int64_t K, int8_t* q, float* scales) {
  const int64_t n = act_q8_block(dt);
  for (int64_t b = 0; b < K / n; b++) scales[b] = act_q8_quantize_block(x + b * n, (int)n, q + b * n);
}

/** x' of one activation block of n (32 or 256) floats into out[n]: q * scale (exact in float32). */
KVQ_HOST_DEVICE void act_q8_round_trip_block(const float* x, int n, float* out) {
  int8_t q[256];
  const float s = act_q8_quantize_block(x, n, q);
  for (int j = 0; j < n; j++) out[j] = (float)q[j] * s;
}

/** x' of `rows` rows of K activations into out[rows * K] (the round trip; the path of every kernel without int8 dots). */
static inline void act_q8_round_trip(int dt, const float* x, int64_t rows, int64_t K, float* out) {
  const int64_t n = act_q8_block(dt);
  for (int64_t b = 0; b < rows * K / n; b++) act_q8_round_trip_block(x + b * n, (int)n, out + b * n);
}

// ------------------------------------------------------------------------------------------------
// compressed-tensors W8A8: `activations: 'q8'` on int8 weights (src/quant/activations.ts quantizeActivationRowInt8,
// bit-identical). vLLM's scaled_int8_quant (csrc/quantization/compressed_tensors/int8_quant_kernels.cu), symmetric:
// dynamic per row: amax = max |x|, scale = amax / 127, codes = sat(rne(x * (amax == 0 ? 0 : 127 / amax)));
// static: codes = sat(rne(x / s)). rne rounds half to even (CUDA cvt.rni), sat clamps to [-128, 127]. A row with a
// NaN or an infinity gets codes 0 and scale NaN (x' NaN: its outputs are NaN, as with float activations).
// ------------------------------------------------------------------------------------------------

/** sat(rne(v)): round half to even, clamp to [-128, 127] (v not NaN). */
KVQ_HOST_DEVICE int8_t act_i8_code(float v) {
  const float r = nearbyintf(v < -128.0f ? -128.0f : v > 127.0f ? 127.0f : v);
  return (int8_t)(int)r;
}

/** max(amax, |x[j]|) over j in [j0, K); clears *finite on a NaN or an infinity. */
KVQ_HOST_DEVICE float act_i8_amax(const float* x, int64_t j0, int64_t K, float amax, bool* finite) {
  for (int64_t j = j0; j < K; j++) {
    const float a = fabsf(x[j]);
    if (!(a <= 3.402823466e38f)) *finite = false;
    amax = a > amax ? a : amax;
  }
  return amax;
}

/** The dynamic multiplier 127 / amax (0 for a zero row). */
KVQ_HOST_DEVICE float act_i8_inv(float amax) { return amax == 0.0f ? 0.0f : 127.0f / amax; }

/** The code of one activation: x / staticScale when static (> 0), else x * inv. */
KVQ_HOST_DEVICE int8_t act_i8_code_of(float x, float staticScale, float inv) { return act_i8_code(staticScale > 0.0f ? x / staticScale : x * inv); }

/** The row's scale: staticScale when > 0, else amax / 127. */
KVQ_HOST_DEVICE float act_i8_scale(float staticScale, float amax) { return staticScale > 0.0f ? staticScale : amax / 127.0f; }

/**
 * Quantize one row of K activations into q[K]; returns its scale (x' = q * scale): `staticScale` when > 0, else the
 * dynamic amax / 127 (0 for a zero row); NaN for a row with a non-finite value.
 */
KVQ_HOST_DEVICE float act_i8_quantize_row(const float* x, int64_t K, float staticScale, int8_t* q) {
  bool finite = true;
  const float amax = act_i8_amax(x, 0, K, 0.0f, &finite);
  if (!finite) {
    for (int64_t j = 0; j < K; j++) q[j] = 0;
    return NAN;
  }
  const float inv = act_i8_inv(amax);
  for (int64_t j = 0; j < K; j++) q[j] = act_i8_code_of(x[j], staticScale, inv);
  return act_i8_scale(staticScale, amax);
}

/** x' of one row of K activations into out[K]: code * scale (exact in float32), the codes of act_i8_quantize_row. */
KVQ_HOST_DEVICE void act_i8_round_trip_row(const float* x, int64_t K, float staticScale, float* out) {
  bool finite = true;
  const float amax = act_i8_amax(x, 0, K, 0.0f, &finite);
  const float inv = act_i8_inv(amax), s = finite ? act_i8_scale(staticScale, amax) : NAN;
  for (int64_t j = 0; j < K; j++) out[j] = finite ? (float)act_i8_code_of(x[j], staticScale, inv) * s : NAN;
}

// ------------------------------------------------------------------------------------------------
// 16-bit activations: `activations: 'q16'` on int4 weights (compressed-tensors W4A16; src/quant/activations.ts
// quantizeActivationBlockQ16, bit-identical). Each row in blocks of kActQ16Block consecutive elements (a row's last
// block may be shorter), symmetric: amax = max |x|, inv = 32767 / amax (0 for a zero block, and for a block so small
// that it overflows float32), codes = sat(rne(x * inv)) in [-32767, 32767], scale = amax / 32767 (0 where inv is 0);
// x' = code * scale. A block with a NaN or an infinity gets codes 0 and scale NaN (x' NaN). The error of x' is at most
// amax / 65534 per element; the CPU's int4 GEMV multiplies the codes by the 4-bit values in exact int32 sums (VNNI,
// AVX2, NEON).
// ------------------------------------------------------------------------------------------------

/** Elements per 16-bit activation block. */
constexpr int kActQ16Block = 128;

/** sat(rne(v)): round half to even, clamp to [-32767, 32767] (v not NaN). */
KVQ_HOST_DEVICE int16_t act_q16_code(float v) {
  return (int16_t)(int)nearbyintf(v < -32767.0f ? -32767.0f : v > 32767.0f ? 32767.0f : v);
}

/** The multiplier 32767 / amax of a block: 0 for a zero block and where it overflows float32. */
KVQ_HOST_DEVICE float act_q16_inv(float amax) {
  const float inv = amax == 0.0f ? 0.0f : 32767.0f / amax;
  return inv <= 3.402823466e38f ? inv : 0.0f;
}

/** A block's scale from its amax and act_q16_inv(amax): amax / 32767, 0 where the multiplier is 0. */
KVQ_HOST_DEVICE float act_q16_scale(float amax, float inv) { return inv == 0.0f ? 0.0f : amax / 32767.0f; }

/**
 * Quantize one block of n (1..kActQ16Block) activations into q[n]; returns the block's scale (x' = q * scale):
 * amax / 32767, 0 for a zero (or vanishingly small) block, NaN for a block with a non-finite value.
 */
KVQ_HOST_DEVICE float act_q16_quantize_block(const float* x, int n, int16_t* q) {
  bool finite = true;
  const float amax = act_i8_amax(x, 0, n, 0.0f, &finite);
  if (!finite) {
    for (int j = 0; j < n; j++) q[j] = 0;
    return NAN;
  }
  const float inv = act_q16_inv(amax);
  for (int j = 0; j < n; j++) q[j] = act_q16_code(x[j] * inv);
  return act_q16_scale(amax, inv);
}

/** x' of one block of n (1..kActQ16Block) activations into out[n]: code * scale. */
KVQ_HOST_DEVICE void act_q16_round_trip_block(const float* x, int n, float* out) {
  int16_t q[kActQ16Block];
  const float s = act_q16_quantize_block(x, n, q);
  for (int j = 0; j < n; j++) out[j] = (float)q[j] * s;
}

/** x' of one row of K activations into out[K] (blocks of kActQ16Block from the row's start; the last may be shorter). */
KVQ_HOST_DEVICE void act_q16_round_trip_row(const float* x, int64_t K, float* out) {
  for (int64_t c = 0; c < K; c += kActQ16Block) act_q16_round_trip_block(x + c, (int)(K - c < kActQ16Block ? K - c : kActQ16Block), out + c);
}

}  // namespace kvq

#endif  // KVQ_ACT_Q8_H_
