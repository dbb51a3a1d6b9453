// SPDX-License-Identifier: Apache-2.0
//
// Device decoders of the quantized weight dtypes (ops.h codes 16..26): the GGML blocks q8_0, q4_0, q4_1, q5_0,
// q5_1, q4_k, q5_k, q6_k (raw, as stored in GGUF files) and the compressed-tensors fp8_e4m3, int8 and int4 (with a
// per-tensor / per-row / per-group scale and int4's optional zero point). One set of decoders for every quantized
// kernel of wquant.cu: the decode GEMV, the tiled GEMM and the embedding gather.
//
// Layouts and formulas: docs/spec/quantized-weights.md, and the executable spec `dequantizeRow` of
// @kvq/kernels (src/quant/dequantize.ts). A dequantized element is computed with the same float32 operations in
// the same order as there (explicitly rounded multiplies and adds: no FMA contraction), so `wq_elem` is bit-exact
// with the reference; e.g. q6_k is (d * sc) * q, q4_k / q5_k are (dl * q) - ml with dl = d * sc, ml = dmin * m.
// The GEMV instead factors the scale out of each 32-element group (sum of q * x, times the scale once).
#ifndef KVQ_WQUANT_CUH_
#define KVQ_WQUANT_CUH_

#include "common.cuh"

namespace kvq {
namespace gpu {

/** float32 a * b rounded once (never fused with a neighbouring add). */
KVQ_DI float mul_rn(float a, float b) {
#if KVQ_IS_SIM
  return a * b;  // the host compiler in ISO C++ mode does not contract across these calls
#else
  return __fmul_rn(a, b);
#endif
}

/** float32 a + b rounded once (never fused with a neighbouring multiply). */
KVQ_DI float add_rn(float a, float b) {
#if KVQ_IS_SIM
  return a + b;
#else
  return __fadd_rn(a, b);
#endif
}

/** Compile-time helpers usable from host and device code. */
#define KVQ_HDC __host__ __device__ constexpr

/** Elements per GGML block (32, or 256 for the K-quants). */
template <int DT>
KVQ_HDC int ggml_block_elems() {
  return DT >= kQ4_K ? 256 : 32;
}

/** Bytes per GGML block (ggml type_size). */
template <int DT>
KVQ_HDC int ggml_block_bytes() {
  return DT == kQ8_0 ? 34 : DT == kQ4_0 ? 18 : DT == kQ4_1 ? 20 : DT == kQ5_0 ? 22 : DT == kQ5_1 ? 24 : DT == kQ4_K ? 144 : DT == kQ5_K ? 176 : 210;
}

/** Whether the GGML type adds a per-(sub-)block min: q4_1, q5_1 (+m), q4_k, q5_k (-dmin * m). */
template <int DT>
KVQ_HDC bool ggml_has_min() {
  return DT == kQ4_1 || DT == kQ5_1 || DT == kQ4_K || DT == kQ5_K;
}

/** The little-endian f16 at `p` (any alignment) as float32 (exact). */
KVQ_DI float ld_f16(const uint8_t* p) { return f16_to_f32((uint16_t)(p[0] | (p[1] << 8))); }

/** The little-endian uint32 at `p` (any alignment). */
KVQ_DI uint32_t ld_u32(const uint8_t* p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/**
 * The 6-bit scale and min of K-quant sub-block `j` (0..7) from the 12 packed bytes at `s` (ggml get_scale_min_k4):
 * j < 4: low 6 bits of bytes j and j + 4; j >= 4: the low / high nibble of byte j + 4 completed by the top 2 bits
 * of bytes j - 4 / j.
 */
KVQ_DI void kquant_scale_min(const uint8_t* s, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

/**
 * The integer quant of element `e` (0 .. block elems - 1) of GGML block `b`, with the type's offset applied
 * (q4_0: nibble - 8, q5_0: 5 bits - 16, q6_k: 6 bits - 32; the others unsigned or int8).
 */
template <int DT>
KVQ_DI int ggml_q(const uint8_t* b, int e) {
  if constexpr (DT == kQ8_0) {
    return (int)(int8_t)b[2 + e];
  } else if constexpr (DT == kQ4_0 || DT == kQ4_1) {
    const uint8_t* qs = b + (DT == kQ4_1 ? 4 : 2);
    const int nib = e < 16 ? (qs[e] & 0x0F) : (qs[e - 16] >> 4);
    return DT == kQ4_0 ? nib - 8 : nib;
  } else if constexpr (DT == kQ5_0 || DT == kQ5_1) {
    const uint8_t* h = b + (DT == kQ5_1 ? 4 : 2);
    const uint32_t qh = ld_u32(h);
    const uint8_t* qs = h + 4;
    const int nib = e < 16 ? (qs[e] & 0x0F) : (qs[e - 16] >> 4);
    const int v = nib | (int)(((qh >> e) & 1u) << 4);
    return DT == kQ5_0 ? v - 16 : v;
  } else if constexpr (DT == kQ4_K || DT == kQ5_K) {
    // 4 chunks of 64: sub-block s = 2c + half takes the low (half 0) / high (half 1) nibbles of qs[32c .. 32c+32).
    const int s = e >> 5, c = s >> 1, l = e & 31;
    const uint8_t* qs = b + (DT == kQ5_K ? 48 : 16);
    int q = (qs[32 * c + l] >> (4 * (s & 1))) & 0x0F;
    if constexpr (DT == kQ5_K) q |= ((b[16 + l] >> s) & 1) << 4;
    return q;
  } else {  // kQ6_K: ql[128] low nibbles, qh[64] 2-bit pairs, scales[16], d
    const int h = e >> 7, k = (e >> 5) & 3, l = e & 31;
    const int lo = (b[64 * h + 32 * (k & 1) + l] >> (k >= 2 ? 4 : 0)) & 0x0F;
    const int hi = (b[128 + 32 * h + l] >> (2 * k)) & 3;
    return (lo | (hi << 4)) - 32;
  }
}

/**
 * Scale `D` and additive `M` of the (sub-)block holding element `e` of GGML block `b`: the element's value is
 * mul_rn(D, q) (+ M, rounded, when ggml_has_min). q4_k / q5_k: D = d * sc, M = -(dmin * m) (x - y == x + (-y) in
 * IEEE arithmetic); q6_k: D = d * scales[e / 16]; q4_1 / q5_1: M = m; else M = 0.
 */
template <int DT>
KVQ_DI void ggml_dm(const uint8_t* b, int e, float* D, float* M) {
  if constexpr (DT == kQ4_K || DT == kQ5_K) {
    int sc, m;
    kquant_scale_min(b + 4, e >> 5, &sc, &m);
    *D = mul_rn(ld_f16(b), (float)sc);
    *M = -mul_rn(ld_f16(b + 2), (float)m);
  } else if constexpr (DT == kQ6_K) {
    *D = mul_rn(ld_f16(b + 208), (float)(int8_t)b[192 + (e >> 4)]);
    *M = 0.0f;
  } else {
    *D = ld_f16(b);
    *M = (DT == kQ4_1 || DT == kQ5_1) ? ld_f16(b + 2) : 0.0f;
  }
}

/** The dequantized value of quant `q` with (sub-)block parameters D, M: exactly the reference's float32 steps. */
template <int DT>
KVQ_DI float ggml_value(float D, float M, int q) {
  const float v = mul_rn(D, (float)q);
  if constexpr (ggml_has_min<DT>()) return add_rn(v, M);
  (void)M;
  return v;
}

/**
 * A quantized weight matrix [rows, cols] on the device, as the kernels read it. `scalePerRow` (fp8 / int8): the
 * scale array has one value per row (else one for the tensor). int4: `scale` / `zeroPoint` are [rows, cols /
 * groupSize]; `zeroPoint` null for symmetric.
 */
struct WQ {
  const uint8_t* data;
  const float* scale;
  const int8_t* zeroPoint;
  int64_t rows, cols;
  int64_t rowBytes;
  int64_t groupSize;
  int scalePerRow;
};

/** The scale of row `row` of an fp8_e4m3 / int8 weight. */
KVQ_DI float wq_row_scale(const WQ& w, int64_t row) { return w.scale[w.scalePerRow ? row : 0]; }

/** The int4 quant (nibble - 8) of element c of a row starting at `rowp`. */
KVQ_DI int int4_q(const uint8_t* rowp, int64_t c) {
  const uint8_t byte = rowp[c >> 1];
  return ((c & 1) == 0 ? (byte & 0x0F) : (byte >> 4)) - 8;
}

/**
 * Element [row, c] of a quantized weight as float32, bit-exact with the reference `dequantizeRow`: GGML by its
 * block formula; fp8_e4m3 decode(q) * s; int8 q * s; int4 (q - zp) * s with the element's group scale / zero point.
 */
template <int DT>
KVQ_DI float wq_elem(const WQ& w, int64_t row, int64_t c) {
  const uint8_t* rowp = w.data + row * w.rowBytes;
  if constexpr (DT >= kQ8_0 && DT <= kQ6_K) {
    constexpr int BE = ggml_block_elems<DT>();
    const uint8_t* b = rowp + (c / BE) * ggml_block_bytes<DT>();
    const int e = (int)(c % BE);
    float D, M;
    ggml_dm<DT>(b, e, &D, &M);
    return ggml_value<DT>(D, M, ggml_q<DT>(b, e));
  } else if constexpr (DT == kWFp8E4M3) {
    return mul_rn(fp8_decode<kE4M3FN>(rowp[c]), wq_row_scale(w, row));
  } else if constexpr (DT == kWInt8) {
    return mul_rn((float)(int8_t)rowp[c], wq_row_scale(w, row));
  } else {  // kWInt4
    const int64_t gi = row * (w.cols / w.groupSize) + c / w.groupSize;
    const int z = w.zeroPoint ? (int)w.zeroPoint[gi] : 0;
    return mul_rn((float)(int4_q(rowp, c) - z), w.scale[gi]);
  }
}

/** Call f(std::integral_constant<int, DT>) for a quantized weight dtype code (kQ8_0..kWInt4). */
template <class F>
inline bool with_wquant(int dt, F&& f) {
  switch (dt) {
    case kQ8_0: return f(std::integral_constant<int, kQ8_0>{});
    case kQ4_0: return f(std::integral_constant<int, kQ4_0>{});
    case kQ4_1: return f(std::integral_constant<int, kQ4_1>{});
    case kQ5_0: return f(std::integral_constant<int, kQ5_0>{});
    case kQ5_1: return f(std::integral_constant<int, kQ5_1>{});
    case kQ4_K: return f(std::integral_constant<int, kQ4_K>{});
    case kQ5_K: return f(std::integral_constant<int, kQ5_K>{});
    case kQ6_K: return f(std::integral_constant<int, kQ6_K>{});
    case kWFp8E4M3: return f(std::integral_constant<int, kWFp8E4M3>{});
    case kWInt8: return f(std::integral_constant<int, kWInt8>{});
    default: return f(std::integral_constant<int, kWInt4>{});
  }
}

}  // namespace gpu
}  // namespace kvq

#endif  // KVQ_WQUANT_CUH_
