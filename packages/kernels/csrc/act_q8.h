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
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < n; j++) q[j] = (int8_t)roundf(x[j] * id);
    return f16_to_f32(f32_to_f16(d));
  }
  if (amax == 0.0f) {
    for (int j = 0; j < n; j++) q[j] = 0;
    return 0.0f;
  }
  const float iscale = -127.0f / max;
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

/** x' of `rows` rows of K activations into out[rows * K] (the round trip; the path of every kernel without int8 dots). */
static inline void act_q8_round_trip(int dt, const float* x, int64_t rows, int64_t K, float* out) {
  const int64_t n = act_q8_block(dt);
  int8_t q[256];
  for (int64_t r = 0; r < rows; r++)
    for (int64_t b = 0; b < K / n; b++) {
      const float* xb = x + r * K + b * n;
      float* ob = out + r * K + b * n;
      const float s = act_q8_quantize_block(xb, (int)n, q);
      for (int64_t j = 0; j < n; j++) ob[j] = (float)q[j] * s;
    }
}

}  // namespace kvq

#endif  // KVQ_ACT_Q8_H_
