// SPDX-License-Identifier: Apache-2.0
//
// Kernel templates, written once against the vector layer (simd_<isa>.h) and compiled once per ISA.
// The including TU defines KVQ_NS (scalar / avx2 / avx512) and includes its simd header first.
//
// Rules for this file (it is compiled with different -m flags in different TUs):
// - everything is in namespace kvq::KVQ_NS and `static`, and no STL is used, so no out-of-line copy
//   compiled for one ISA can be picked by the linker for another;
// - kernels never allocate except through Runner::reserve/scratch or plain malloc (checked), and never throw.
#ifndef KVQ_NS
#error "define KVQ_NS and include a simd_<isa>.h before kernels_impl.h"
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "act_q8.h"
#include "fp8.h"
#include "kernels.h"
#include "kv_quant.h"
#include "portable.h"

namespace kvq {
namespace KVQ_NS {

#define KVQ_I static KVQ_ALWAYS_INLINE

KVQ_I int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
KVQ_I int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
KVQ_I int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
KVQ_I int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

#include "sample_weigh.h"

static const float kNegInf = -kvq_inff();

/** Scalar exp with the vector layer's algorithm (so every path rounds the same way). */
KVQ_I float sexp(float x) {
  float t[W];
  vstore(t, vexp(vset1(x)));
  return t[0];
}

/**
 * A kernel's per-call buffer of `bytes` (at least one 64-byte line) on a 64-byte boundary, nullptr when out of
 * memory; free it with alignedFree. (No RAII holder: a destructor would add exception landing pads, whose personality
 * reference every ISA unit would export, see isa-units.test.ts.)
 * NOTE: malloc's 16-byte alignment made every 64-byte vector load from a buffer a GEMV reads back in its inner loop
 * span two cache lines: the int4 W4A16 GEMV's reordered activations streamed 19 GB/s a core against 24-30 aligned
 * (2-core Zen 5, 2026-12-07), whatever the loop around them.
 */
KVQ_I void* scratch_alloc(size_t bytes) { return alignedAlloc(64, bytes == 0 ? 64 : (bytes + 63) & ~(size_t)63); }

/** Element-wise work below this many elements runs on the calling thread only. */
static const int64_t kParallelMin = 1 << 15;

// ------------------------------------------------------------------------------------------------
// Typed loads: Load<DT>::load(p, mul) gives W float32 lanes (FP8: decoded value * mul, see simd layer).
// ------------------------------------------------------------------------------------------------
template <int DT>
struct Load;

// load/loadn decode exactly; loadf/loadnf may misdecode FP8 NaN codes (only used after any_nan() said there are
// none); kHasFast says whether loadf differs from load at all.
template <>
struct Load<kF32> {
  typedef float T;
  static constexpr bool kHasFast = false;
  KVQ_I VF load(const T* p, VF) { return vload(p); }
  KVQ_I VF loadn(const T* p, int n, VF) { return vloadn(p, n); }
  KVQ_I VF loadf(const T* p, VF m) { return load(p, m); }
  KVQ_I VF loadnf(const T* p, int n, VF m) { return loadn(p, n, m); }
  KVQ_I bool any_nan(const T*, int64_t) { return false; }
  KVQ_I float konst() { return 1.0f; }
};
template <>
struct Load<kBF16> {
  typedef uint16_t T;
  static constexpr bool kHasFast = false;
  KVQ_I VF load(const T* p, VF) { return vload_bf16(p); }
  KVQ_I VF loadn(const T* p, int n, VF) { return vloadn_bf16(p, n); }
  KVQ_I VF loadf(const T* p, VF m) { return load(p, m); }
  KVQ_I VF loadnf(const T* p, int n, VF m) { return loadn(p, n, m); }
  KVQ_I bool any_nan(const T*, int64_t) { return false; }
  KVQ_I float konst() { return 1.0f; }
};
template <>
struct Load<kF16> {
  typedef uint16_t T;
  static constexpr bool kHasFast = false;
  KVQ_I VF load(const T* p, VF) { return vload_f16(p); }
  KVQ_I VF loadn(const T* p, int n, VF) { return vloadn_f16(p, n); }
  KVQ_I VF loadf(const T* p, VF m) { return load(p, m); }
  KVQ_I VF loadnf(const T* p, int n, VF m) { return loadn(p, n, m); }
  KVQ_I bool any_nan(const T*, int64_t) { return false; }
  KVQ_I float konst() { return 1.0f; }
};
template <int F>
struct LoadFp8 {
  typedef uint8_t T;
  static constexpr bool kHasFast = F != kE5M2 && W > 1;
  KVQ_I VF load(const T* p, VF mul) { return vload_fp8<F>(p, mul); }
  KVQ_I VF loadn(const T* p, int n, VF mul) { return vloadn_fp8<F>(p, n, mul); }
  KVQ_I VF loadf(const T* p, VF mul) { return vload_fp8_fast<F>(p, mul); }
  KVQ_I VF loadnf(const T* p, int n, VF mul) { return vloadn_fp8_fast<F>(p, n, mul); }
  KVQ_I bool any_nan(const T* p, int64_t n) { return fp8_any_nan<F>(p, n); }
  /** Multiplier giving the exact decoded value. */
  KVQ_I float konst() { return fp8_load_const<F>(); }
};
template <>
struct Load<kFp8E4M3FN> : LoadFp8<kE4M3FN> {};
template <>
struct Load<kFp8E5M2> : LoadFp8<kE5M2> {};
template <>
struct Load<kFp8E4M3FNUZ> : LoadFp8<kE4M3FNUZ> {};
template <>
struct Load<kFp8E5M2FNUZ> : LoadFp8<kE5M2FNUZ> {};

/**
 * Multipliers that turn raw FP8 lanes into `fround(decode(q) * scale)`: one multiply by konst*scale when that
 * product is a finite normal float (then it is exact and the single rounding equals the reference's), else two
 * (konst, exact; then scale). For 16/32-bit dtypes both are 1 and unused.
 */
struct DequantMul {
  float mul1;
  float mul2;  // 0 = no second multiply
};
template <int DT>
KVQ_I DequantMul dequant_mul(float scale) {
  const float k = Load<DT>::konst();
  if (DT < kFp8E4M3FN) return DequantMul{1.0f, 0.0f};
  const float folded = k * scale;
  const uint32_t e = (f32_as_bits(folded) >> 23) & 0xFFu;
  if (e != 0u && e != 0xFFu) return DequantMul{folded, 0.0f};
  return DequantMul{k, scale};
}

/** One vector of a row: exact, or fast (NaN-free rows only). */
template <int DT, bool kFast>
KVQ_I VF kv_load(const typename Load<DT>::T* p, VF mul) {
  if constexpr (kFast) {
    return Load<DT>::loadf(p, mul);
  } else {
    return Load<DT>::load(p, mul);
  }
}
template <int DT, bool kFast>
KVQ_I VF kv_loadn(const typename Load<DT>::T* p, int n, VF mul) {
  if constexpr (kFast) {
    return Load<DT>::loadnf(p, n, mul);
  } else {
    return Load<DT>::loadn(p, n, mul);
  }
}

/** Convert `d` elements of one row to float32 (dequantized), writing round_up(d, W) floats (zero padded). */
template <int DT, bool kFast = false>
KVQ_I void convert_row(const typename Load<DT>::T* src, int64_t d, float* dst, DequantMul m) {
  const VF mul = vset1(m.mul1);
  int64_t c = 0;
  if (m.mul2 == 0.0f) {
    for (; c + W <= d; c += W) vstore(dst + c, kv_load<DT, kFast>(src + c, mul));
    if (c < d) vstore(dst + c, kv_loadn<DT, kFast>(src + c, (int)(d - c), mul));
  } else {
    const VF mul2 = vset1(m.mul2);
    for (; c + W <= d; c += W) vstore(dst + c, vmul(kv_load<DT, kFast>(src + c, mul), mul2));
    if (c < d) vstore(dst + c, vmul(kv_loadn<DT, kFast>(src + c, (int)(d - c), mul), mul2));
  }
}

// ------------------------------------------------------------------------------------------------
// linear: y[r, o] = sum_i x[r, i] * w[o, i] (+ bias[o])
// ------------------------------------------------------------------------------------------------

/**
 * How far ahead (bytes) the bf16 / f16 decode GEMV prefetches each weight row. Measured 2026-12-05 on the 2-core Zen
 * 5 (avx512 kernels, 2 threads), the 84 GEMVs of a 768-wide, 12-layer decode step from DRAM, builds alternated (a
 * noisy shared machine: +-20 % run to run): faster in 12 of 13 pairs, mean f16 5.1 -> 4.3 ms, bf16 5.4 -> 4.7 ms
 * (1-2 KiB ahead: no gain). Rows of 768-2048 elements are too short for the hardware prefetcher to ramp up.
 */
static const int64_t kDensePrefetch = 4096;

/** MR x NR dot products of length k: out[i * NR + j] = dot(x row i, w row j). Weights converted in registers. */
template <int MR, int NR, int DT>
static void dot_tile(const float* x, int64_t ldx, const typename Load<DT>::T* w, int64_t ldw, int64_t k, float* out) {
  VF acc[MR][NR];
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NR; j++) acc[i][j] = vzero();
  const VF one = vset1(1.0f);
  // bf16 / f16 weights come straight from memory (the decode GEMV; the GEMM runs on f32 panels): prefetch each
  // row's line kDensePrefetch bytes ahead (measured below).
  constexpr int64_t lineE = 64 / (int64_t)sizeof(typename Load<DT>::T);
  constexpr int64_t aheadE = kDensePrefetch / (int64_t)sizeof(typename Load<DT>::T);
  int64_t c = 0;
  for (; c + W <= k; c += W) {
    if (DT != kF32 && (c % lineE) == 0)
      for (int j = 0; j < NR; j++) vprefetch(w + j * ldw + c + aheadE);
    VF wv[NR];
    for (int j = 0; j < NR; j++) wv[j] = Load<DT>::load(w + j * ldw + c, one);
    for (int i = 0; i < MR; i++) {
      const VF xv = vload(x + i * ldx + c);
      for (int j = 0; j < NR; j++) acc[i][j] = vfma(xv, wv[j], acc[i][j]);
    }
  }
  if (c < k) {
    const int n = (int)(k - c);
    VF wv[NR];
    for (int j = 0; j < NR; j++) wv[j] = Load<DT>::loadn(w + j * ldw + c, n, one);
    for (int i = 0; i < MR; i++) {
      const VF xv = vloadn(x + i * ldx + c, n);
      for (int j = 0; j < NR; j++) acc[i][j] = vfma(xv, wv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MR; i++) {
    if (NR == 4) {
      vhsum4(acc[i][0], acc[i][1 % NR], acc[i][2 % NR], acc[i][3 % NR], out + i * NR);
    } else {
      for (int j = 0; j < NR; j++) out[i * NR + j] = vhsum(acc[i][j]);
    }
  }
}

/**
 * The streamed row dot of the decode GEMVs: out[i] = sum_e x[i * ldx + e] * w_e over k elements of ONE weight row w
 * (kElemBytes bytes an element) read front to back, MR rows of x. Steps of kStep elements (a multiple of W): each line of
 * the step prefetched kDensePrefetch bytes ahead, then pre(c) (any check the caller keeps), then vector j of the step,
 * full(c + j * W), adds into accumulator j % U of each x row
 * (U = 4 / MR, at least 1: 4 FMA chains in flight); the tail, tail(c, n) with n < W valid lanes, into the first.
 * NOTE: one row at a time was measured against four rows side by side (four streams per thread) on the 2-core Zen 5,
 * 4096 x 4096 copies past the caches, 2 threads (2026-12-07): the streams, not the decode, cost (docs/benchmarks.md).
 */
template <int MR, int64_t kStep, int64_t kElemBytes, class Full, class Tail, class Pre>
KVQ_I void row_stream_dot(const float* x, int64_t ldx, int64_t k, const void* w, const Full& full, const Tail& tail, const Pre& pre,
                          float* out) {
  constexpr int U = MR >= 4 ? 1 : 4 / MR;
  static_assert(kStep % W == 0, "a step is whole vectors");
  const char* wb = static_cast<const char*>(w) + kDensePrefetch;
  VF acc[U][MR];
  for (int u = 0; u < U; u++)
    for (int i = 0; i < MR; i++) acc[u][i] = vzero();
  int64_t c = 0;
  for (; c + kStep <= k; c += kStep) {
    for (int64_t o = 0; o < kStep * kElemBytes; o += 64) vprefetch(wb + c * kElemBytes + o);
    pre(c);
    for (int j = 0; j < (int)(kStep / W); j++) {
      const VF v = full(c + j * W);
      for (int i = 0; i < MR; i++) acc[j % U][i] = vfma(vload(x + i * ldx + c + j * W), v, acc[j % U][i]);
    }
  }
  for (; c < k; c += W) {
    const int n = (int)(k - c < W ? k - c : W);
    const VF v = tail(c, n);
    for (int i = 0; i < MR; i++) acc[0][i] = vfma(vloadn(x + i * ldx + c, n), v, acc[0][i]);
  }
  for (int i = 0; i < MR; i++) {
    VF a = acc[0][i];
    for (int u = 1; u < U; u++) a = vadd(a, acc[u][i]);
    out[i] = vhsum(a);
  }
}

/** row_stream_dot of one bf16 / f16 weight row: U vectors a step, each of its lines prefetched kDensePrefetch bytes ahead. */
template <int MR, int DT>
static void dot_row_stream(const float* x, int64_t ldx, const typename Load<DT>::T* w, int64_t k, float* out) {
  constexpr int64_t S = (MR >= 4 ? 1 : 4 / MR) * W;  // elements per step
  const VF one = vset1(1.0f);
  row_stream_dot<MR, S, (int64_t)sizeof(typename Load<DT>::T)>(
      x, ldx, k, w, [&](int64_t e) { return Load<DT>::load(w + e, one); },
      [&](int64_t c, int n) { return Load<DT>::loadn(w + c, n, one); }, [](int64_t) {}, out);
}

/** y[m0.., n0..n1) (+)= x[m0..m0+mr) . w[n0..n1)^T over k columns; `assign` overwrites instead of adding. */
template <int MR, int DT>
static void tile_rows(const float* x, int64_t ldx, const typename Load<DT>::T* w, int64_t ldw, int64_t k, int64_t n0,
                      int64_t n1, float* y, int64_t ldy, bool assign) {
  float t[MR * 4];
  int64_t n = n0;
  if (DT != kF32) {  // bf16 / f16: the decode GEMV's weights, one row at a time (f32 comes from the GEMM's panels)
    for (; n < n1; n++) {
      dot_row_stream<MR, DT>(x, ldx, w + (n - n0) * ldw, k, t);
      for (int i = 0; i < MR; i++) {
        float* dst = y + i * ldy + n;
        *dst = assign ? t[i] : *dst + t[i];
      }
    }
    return;
  }
  for (; n + 4 <= n1; n += 4) {
    dot_tile<MR, 4, DT>(x, ldx, w + (n - n0) * ldw, ldw, k, t);
    for (int i = 0; i < MR; i++)
      for (int j = 0; j < 4; j++) {
        float* dst = y + i * ldy + n + j;
        *dst = assign ? t[i * 4 + j] : *dst + t[i * 4 + j];
      }
  }
  for (; n < n1; n++) {
    dot_tile<MR, 1, DT>(x, ldx, w + (n - n0) * ldw, ldw, k, t);
    for (int i = 0; i < MR; i++) {
      float* dst = y + i * ldy + n;
      *dst = assign ? t[i] : *dst + t[i];
    }
  }
}

template <int DT>
static void tile_rows_rt(int mr, const float* x, int64_t ldx, const typename Load<DT>::T* w, int64_t ldw, int64_t k,
                         int64_t n0, int64_t n1, float* y, int64_t ldy, bool assign) {
  switch (mr) {
    case 1: tile_rows<1, DT>(x, ldx, w, ldw, k, n0, n1, y, ldy, assign); break;
    case 2: tile_rows<2, DT>(x, ldx, w, ldw, k, n0, n1, y, ldy, assign); break;
    case 3: tile_rows<3, DT>(x, ldx, w, ldw, k, n0, n1, y, ldy, assign); break;
    default: tile_rows<4, DT>(x, ldx, w, ldw, k, n0, n1, y, ldy, assign); break;
  }
}

static const int64_t kGemmMB = 64;   // rows of x per task
static const int64_t kGemmNB = 64;   // rows of w per task
static const int64_t kGemmKC = 256;  // k block (w block of NB x KC floats stays in L2)

/**
 * Decode GEMV work split: output rows [n0, n1) per task (at least 16, about 8 tasks per thread), body(n0, n1) on the
 * pool; one task on the calling thread for small problems.
 */
template <class F>
static void gemv_split(const LinearParams& p, const Runner& rn, F& body) {
  const int64_t N = p.out;
  int64_t nb = round_up(ceil_div(N, (int64_t)rn.threads * 8), 4);
  if (nb < 16) nb = 16;
  const int64_t tasks = (p.rows * p.in * N < kParallelMin || rn.threads == 1) ? 1 : ceil_div(N, nb);
  if (tasks == 1) nb = N;
  auto task = [&](int64_t t, int) { body(t * nb, imin(N, t * nb + nb)); };
  rn.parallel_for(tasks, task);
}

/**
 * Work split of the int8-activation prefill GEMMs: prep(m0, m1, tid) over blocks of MB activation rows (quantize them
 * once), then tile(m0, m1, n0, n1) over the (MB activation rows x NB weight rows) tiles; both on the calling thread
 * alone for small problems.
 */
template <int64_t MB, int64_t NB, class Prep, class Tile>
static void gemm_act_q8_split(const LinearParams& p, const Runner& rn, Prep& prep, Tile& tile) {
  const int64_t rows = p.rows, N = p.out;
  const int64_t mblocks = ceil_div(rows, MB), nblocks = ceil_div(N, NB);
  const bool serial = rows * p.in * N < kParallelMin || rn.threads == 1;
  auto each = [&](int64_t n, auto& f) {
    if (serial) {
      for (int64_t t = 0; t < n; t++) f(t, 0);
    } else {
      rn.parallel_for(n, f);
    }
  };
  auto quant = [&](int64_t t, int tid) { prep(t * MB, imin(rows, t * MB + MB), tid); };
  each(mblocks, quant);
  auto body = [&](int64_t t, int) {
    const int64_t m0 = (t / nblocks) * MB, n0 = (t % nblocks) * NB;
    tile(m0, imin(rows, m0 + MB), n0, imin(N, n0 + NB));
  };
  each(mblocks * nblocks, body);
}

/**
 * Prefill GEMM: tasks are (m block, n block). Each k block of the task's weight rows is turned into a contiguous
 * float32 panel (ld = KC, L2-resident) once by fill(n, k0, kc, dst) (convert, copy or dequantize; it may write up
 * to round_up(kc, W) floats) and reused by all rows of the m block through the f32 micro-kernel.
 */
template <class Fill>
static int linear_gemm(const LinearParams& p, const Runner& rn, Fill& fill) {
  const int64_t rows = p.rows, K = p.in, N = p.out;
  if (!rn.reserve(rn.self, (size_t)(kGemmNB * kGemmKC) * sizeof(float) + 64)) return kOutOfMemory;
  const int64_t mblocks = ceil_div(rows, kGemmMB), nblocks = ceil_div(N, kGemmNB);
  const int64_t tasks = (rows * K * N < kParallelMin) ? 1 : mblocks * nblocks;
  auto body = [&](int64_t t, int tid) {
    int64_t m0, m1, n0, n1;
    if (tasks == 1) {
      m0 = 0, m1 = rows, n0 = 0, n1 = N;
    } else {
      const int64_t mb = t / nblocks, nbk = t % nblocks;
      m0 = mb * kGemmMB, m1 = imin(rows, m0 + kGemmMB);
      n0 = nbk * kGemmNB, n1 = imin(N, n0 + kGemmNB);
    }
    float* panel = static_cast<float*>(rn.scratch(rn.self, tid));
    for (int64_t nn0 = n0; nn0 < n1; nn0 += kGemmNB) {
      const int64_t nn1 = imin(n1, nn0 + kGemmNB);
      for (int64_t k0 = 0; k0 < K; k0 += kGemmKC) {
        const int64_t kc = imin(kGemmKC, K - k0);
        for (int64_t n = nn0; n < nn1; n++) fill(n, k0, kc, panel + (n - nn0) * kGemmKC);
        for (int64_t m = m0; m < m1; m += 4) {
          tile_rows_rt<kF32>((int)imin(4, m1 - m), p.x + m * K + k0, K, panel, kGemmKC, kc, nn0, nn1, p.y + m * N, N,
                             k0 == 0);
        }
      }
      if (p.bias)
        for (int64_t m = m0; m < m1; m++)
          for (int64_t n = nn0; n < nn1; n++) p.y[m * N + n] += p.bias[n];
    }
  };
  rn.parallel_for(tasks, body);
  return kOk;
}

template <int DT>
static int linear_t(const LinearParams& p, const Runner& rn) {
  typedef typename Load<DT>::T T;
  const T* w = static_cast<const T*>(p.w.data);
  const int64_t rows = p.rows, K = p.in, N = p.out;
  if (rows <= 4) {
    // Decode GEMV: stream the weights once, every x row reused from registers/L1.
    auto body = [&](int64_t n0, int64_t n1) {
      tile_rows_rt<DT>((int)rows, p.x, K, w + n0 * K, K, K, n0, n1, p.y, N, true);
      if (p.bias)
        for (int64_t r = 0; r < rows; r++)
          for (int64_t n = n0; n < n1; n++) p.y[r * N + n] += p.bias[n];
    };
    gemv_split(p, rn, body);
    return kOk;
  }
  // bf16/f16 rows converted, f32 rows copied into the panel.
  auto fill = [&](int64_t n, int64_t k0, int64_t kc, float* dst) {
    convert_row<DT>(w + n * K + k0, kc, dst, DequantMul{1.0f, 0.0f});
  };
  return linear_gemm(p, rn, fill);
}

// Quantized weights (GGML blocks, compressed-tensors): GEMV, dequantized panels, embedding rows.
#include "wquant_impl.h"
#include "wquant_i8act.h"
#include "wquant_q16act.h"

static int linear_dispatch(const LinearParams& p, const Runner& rn) {
  switch (p.w.dtype) {
    case kF32: return linear_t<kF32>(p, rn);
    case kBF16: return linear_t<kBF16>(p, rn);
    case kF16: return linear_t<kF16>(p, rn);
    default:
      if (p.xq == 2) return linear_q16act(p, rn);
      return !p.xq ? linear_quant(p, rn) : p.w.dtype == kWInt8 ? linear_i8act(p, rn) : linear_q8act(p, rn);
  }
}

/**
 * y = x W^T (+ bias). A decode GEMV (up to 4 rows) whose x does not start on a 64-byte boundary reads a copy that
 * does: its inner loops load x a vector at a time from L1 for every weight vector, and an x spanning two cache lines
 * per load cost the in-cache bf16 GEMV 1.2x its time (2-core Zen 5, 2026-12-07); the copy (16 KiB for one 4096-wide
 * row) takes well under a microsecond.
 */
static int linear(const LinearParams& p, const Runner& rn) {
  const bool misaligned = (reinterpret_cast<uintptr_t>(p.x) & 63) != 0;
  if (p.rows > 4 || !misaligned) return linear_dispatch(p, rn);
  const size_t bytes = (size_t)(p.rows * p.in) * sizeof(float);
  float* x = static_cast<float*>(scratch_alloc(bytes));
  if (!x) return kOutOfMemory;
  memcpy(x, p.x, bytes);
  LinearParams q = p;
  q.x = x;
  const int rc = linear_dispatch(q, rn);
  alignedFree(x);
  return rc;
}

// ------------------------------------------------------------------------------------------------
// element-wise ops
// ------------------------------------------------------------------------------------------------

/** Split [0, n) into chunks of `chunk` and run body(i0, i1) in parallel when n is large. */
template <class F>
static void for_chunks(const Runner& rn, int64_t n, int64_t chunk, F& body) {
  if (n <= 0) return;
  const int64_t tasks = (n < kParallelMin || rn.threads == 1) ? 1 : ceil_div(n, chunk);
  if (tasks == 1) {
    body((int64_t)0, n);
    return;
  }
  auto task = [&](int64_t t, int) { body(t * chunk, imin(n, (t + 1) * chunk)); };
  rn.parallel_for(tasks, task);
}

static int add(const EltwiseParams& p, const Runner& rn) {
  auto body = [&](int64_t i0, int64_t i1) {
    int64_t i = i0;
    for (; i + W <= i1; i += W) vstore(p.y + i, vadd(vload(p.a + i), vload(p.b + i)));
    if (i < i1) vstoren(p.y + i, vadd(vloadn(p.a + i, (int)(i1 - i)), vloadn(p.b + i, (int)(i1 - i))), (int)(i1 - i));
  };
  for_chunks(rn, p.n, 1 << 14, body);
  return kOk;
}

KVQ_I VF silu_mul(VF g, VF u) {
  const VF one = vset1(1.0f);
  return vmul(vdiv(g, vadd(one, vexp(vsub(vzero(), g)))), u);
}

// gelu_tanh(g) * u = g * u / (1 + exp(-2 sqrt(2/pi) (g + 0.044715 g^3)))  (0.5 (1 + tanh t) = 1 / (1 + exp(-2t)))
KVQ_I VF gelu_tanh_mul(VF g, VF u) {
  const VF one = vset1(1.0f);
  const VF t2 = vmul(vmul(vset1(-1.5957691216057308f), g), vfma(vmul(vset1(0.044715f), g), g, one));  // -2 t
  return vdiv(vmul(g, u), vadd(one, vexp(t2)));
}

/** y = f(a, b) element-wise (the gated activations), in chunks over the pool. */
template <class F>
static int gated(const EltwiseParams& p, const Runner& rn, F f) {
  auto body = [&](int64_t i0, int64_t i1) {
    int64_t i = i0;
    for (; i + W <= i1; i += W) vstore(p.y + i, f(vload(p.a + i), vload(p.b + i)));
    if (i < i1) {
      const int n = (int)(i1 - i);
      vstoren(p.y + i, f(vloadn(p.a + i, n), vloadn(p.b + i, n)), n);
    }
  };
  for_chunks(rn, p.n, 1 << 13, body);
  return kOk;
}

static int siluAndMul(const EltwiseParams& p, const Runner& rn) {
  return gated(p, rn, [](VF g, VF u) { return silu_mul(g, u); });
}

static int geluTanhAndMul(const EltwiseParams& p, const Runner& rn) {
  return gated(p, rn, [](VF g, VF u) { return gelu_tanh_mul(g, u); });
}

static int rmsNorm(const RmsNormParams& p, const Runner& rn) {
  const int64_t h = p.hidden;
  auto row = [&](int64_t r, int) {
    const float* x = p.x + r * h;
    float* y = p.y + r * h;
    VF a0 = vzero(), a1 = vzero();
    int64_t c = 0;
    for (; c + 2 * W <= h; c += 2 * W) {
      const VF v0 = vload(x + c), v1 = vload(x + c + W);
      a0 = vfma(v0, v0, a0);
      a1 = vfma(v1, v1, a1);
    }
    for (; c + W <= h; c += W) {
      const VF v = vload(x + c);
      a0 = vfma(v, v, a0);
    }
    if (c < h) {
      const VF v = vloadn(x + c, (int)(h - c));
      a1 = vfma(v, v, a1);
    }
    const double ms = (double)vhsum(vadd(a0, a1)) / (double)h;
    const VF inv = vset1((float)(1.0 / kvq_sqrt(ms + (double)p.eps)));
    c = 0;
    for (; c + W <= h; c += W) vstore(y + c, vmul(vmul(vload(x + c), inv), vload(p.w + c)));
    if (c < h) {
      const int n = (int)(h - c);
      vstoren(y + c, vmul(vmul(vloadn(x + c, n), inv), vloadn(p.w + c, n)), n);
    }
  };
  const int64_t tasks = p.rows;
  if (p.rows * h < kParallelMin || rn.threads == 1) {
    for (int64_t r = 0; r < tasks; r++) row(r, 0);
  } else {
    rn.parallel_for(tasks, row);
  }
  return kOk;
}

static int softmax(const SoftmaxParams& p, const Runner& rn) {
  const int64_t cols = p.cols;
  auto row = [&](int64_t r, int) {
    const float* x = p.x + r * cols;
    float* y = p.y + r * cols;
    VF m = vset1(kNegInf);
    int64_t c = 0;
    for (; c + W <= cols; c += W) m = vmax(vload(x + c), m);
    float mx = vhmax(m);
    for (; c < cols; c++) mx = x[c] > mx ? x[c] : mx;
    const VF mv = vset1(mx);
    VF s = vzero();
    c = 0;
    for (; c + W <= cols; c += W) {
      const VF e = vexp(vsub(vload(x + c), mv));
      vstore(y + c, e);
      s = vadd(s, e);
    }
    float sum = vhsum(s);
    for (; c < cols; c++) {
      const float e = sexp(x[c] - mx);
      y[c] = e;
      sum += e;
    }
    // NaN anywhere (or a row of -inf) makes the sum NaN, and with it the whole row, as the contract says.
    const VF inv = vset1(1.0f / sum);
    c = 0;
    for (; c + W <= cols; c += W) vstore(y + c, vmul(vload(y + c), inv));
    for (; c < cols; c++) y[c] = y[c] * (1.0f / sum);
  };
  if (p.rows * cols < kParallelMin || rn.threads == 1) {
    for (int64_t r = 0; r < p.rows; r++) row(r, 0);
  } else {
    rn.parallel_for(p.rows, row);
  }
  return kOk;
}

/** Like convert_row but writes exactly d floats (no padding), for outputs that are packed back to back. */
template <int DT>
KVQ_I void convert_row_exact(const typename Load<DT>::T* src, int64_t d, float* dst) {
  const VF one = vset1(1.0f);
  int64_t c = 0;
  for (; c + W <= d; c += W) vstore(dst + c, Load<DT>::load(src + c, one));
  if (c < d) vstoren(dst + c, Load<DT>::loadn(src + c, (int)(d - c), one), (int)(d - c));
}

static int embedding(const EmbeddingParams& p, const Runner& rn) {
  const int64_t h = p.hidden;
  auto row = [&](int64_t t, int) {
    const int64_t id = p.ids[t];
    float* y = p.y + t * h;
    switch (p.table.dtype) {
      case kBF16: convert_row_exact<kBF16>(static_cast<const uint16_t*>(p.table.data) + id * h, h, y); break;
      case kF16: convert_row_exact<kF16>(static_cast<const uint16_t*>(p.table.data) + id * h, h, y); break;
      case kF32: memcpy(y, static_cast<const float*>(p.table.data) + id * h, (size_t)h * sizeof(float)); break;
      default: dequant_segment(p.table, id, 0, h, y); break;
    }
  };
  if (p.numTokens * h < kParallelMin || rn.threads == 1) {
    for (int64_t t = 0; t < p.numTokens; t++) row(t, 0);
  } else {
    rn.parallel_for(p.numTokens, row);
  }
  return kOk;
}

// rope: rotation computed in float64 from float32 inputs and rounded once to float32, which is exactly what
// the reference's `Math.fround(a * cos - b * sin)` does (products of two floats are exact in a double).
static void rope_head(float* x, const float* cs, const float* sn, int half, bool interleaved) {
  if (interleaved) {
    for (int i = 0; i < half; i++) {
      const double a = x[2 * i], b = x[2 * i + 1], c = cs[i], s = sn[i];
      x[2 * i] = (float)(a * c - b * s);
      x[2 * i + 1] = (float)(b * c + a * s);
    }
  } else {
    float* lo = x;
    float* hi = x + half;
    for (int i = 0; i < half; i++) {
      const double a = lo[i], b = hi[i], c = cs[i], s = sn[i];
      lo[i] = (float)(a * c - b * s);
      hi[i] = (float)(b * c + a * s);
    }
  }
}

static int rope(const RopeParams& p, const Runner& rn) {
  const int half = p.rotaryDim / 2;
  auto tok = [&](int64_t t, int) {
    const int64_t pos = p.pos[t];
    const float* cs = p.cos + pos * half;
    const float* sn = p.sin + pos * half;
    for (int h = 0; h < p.numHeads; h++)
      rope_head(p.q + (t * p.numHeads + h) * p.headSize, cs, sn, half, p.interleaved);
    for (int h = 0; h < p.numKvHeads; h++)
      rope_head(p.k + (t * p.numKvHeads + h) * p.headSize, cs, sn, half, p.interleaved);
  };
  if (p.numTokens * (p.numHeads + p.numKvHeads) * p.headSize < kParallelMin || rn.threads == 1) {
    for (int64_t t = 0; t < p.numTokens; t++) tok(t, 0);
  } else {
    rn.parallel_for(p.numTokens, tok);
  }
  return kOk;
}

// ------------------------------------------------------------------------------------------------
// FP8 quantization (bit-exact) and dequantization
// ------------------------------------------------------------------------------------------------

/** codes[i] = encode(fround(x[i] / scale)); a branch-free loop the compiler vectorizes. */
template <int F, bool kSat>
static void quantize_run(const float* x, uint8_t* codes, int64_t n, float scale) {
  for (int64_t i = 0; i < n; i++) codes[i] = (uint8_t)fp8_encode_bits<F, kSat>(f32_as_bits(x[i] / scale));
}

template <int F>
static void quantize_run_rt(const float* x, uint8_t* codes, int64_t n, float scale, bool sat) {
  if (sat) {
    quantize_run<F, true>(x, codes, n, scale);
  } else {
    quantize_run<F, false>(x, codes, n, scale);
  }
}

static void quantize_any(int format, bool sat, const float* x, uint8_t* codes, int64_t n, float scale) {
  switch (format) {
    case kE4M3FN: quantize_run_rt<kE4M3FN>(x, codes, n, scale, sat); break;
    case kE5M2: quantize_run_rt<kE5M2>(x, codes, n, scale, sat); break;
    case kE4M3FNUZ: quantize_run_rt<kE4M3FNUZ>(x, codes, n, scale, sat); break;
    default: quantize_run_rt<kE5M2FNUZ>(x, codes, n, scale, sat); break;
  }
}

/** dst[i] = fround(decode(codes[i]) * scale). */
template <int DT>
static void dequantize_run(const uint8_t* codes, float* dst, int64_t n, float scale) {
  const DequantMul m = dequant_mul<DT>(scale);
  const VF mul = vset1(m.mul1);
  int64_t i = 0;
  if (m.mul2 == 0.0f) {
    for (; i + W <= n; i += W) vstore(dst + i, Load<DT>::load(codes + i, mul));
    if (i < n) vstoren(dst + i, Load<DT>::loadn(codes + i, (int)(n - i), mul), (int)(n - i));
  } else {
    const VF mul2 = vset1(m.mul2);
    for (; i + W <= n; i += W) vstore(dst + i, vmul(Load<DT>::load(codes + i, mul), mul2));
    if (i < n) vstoren(dst + i, vmul(Load<DT>::loadn(codes + i, (int)(n - i), mul), mul2), (int)(n - i));
  }
}

static void dequantize_any(int format, const uint8_t* codes, float* dst, int64_t n, float scale) {
  switch (format) {
    case kE4M3FN: dequantize_run<kFp8E4M3FN>(codes, dst, n, scale); break;
    case kE5M2: dequantize_run<kFp8E5M2>(codes, dst, n, scale); break;
    case kE4M3FNUZ: dequantize_run<kFp8E4M3FNUZ>(codes, dst, n, scale); break;
    default: dequantize_run<kFp8E5M2FNUZ>(codes, dst, n, scale); break;
  }
}

/** Walk [i0, i1) in maximal pieces that share one scale; body(start, end, scale). */
template <class F>
static void for_scale_runs(const QuantParams& p, int64_t i0, int64_t i1, F& body) {
  int64_t i = i0;
  while (i < i1) {
    const int64_t run = i / p.runLength;
    const int64_t end = imin(i1, (run + 1) * p.runLength);
    const float s = p.scales[p.period ? run % p.period : run];
    body(i, end, s);
    i = end;
  }
}

static int quantizeFp8(const QuantParams& p, const Runner& rn) {
  auto chunk = [&](int64_t i0, int64_t i1) {
    auto piece = [&](int64_t a, int64_t b, float s) { quantize_any(p.format, p.sat, p.src + a, p.codes + a, b - a, s); };
    for_scale_runs(p, i0, i1, piece);
  };
  for_chunks(rn, p.n, 1 << 16, chunk);
  return kOk;
}

static int dequantizeFp8(const QuantParams& p, const Runner& rn) {
  auto chunk = [&](int64_t i0, int64_t i1) {
    auto piece = [&](int64_t a, int64_t b, float s) { dequantize_any(p.format, p.codes + a, p.dst + a, b - a, s); };
    for_scale_runs(p, i0, i1, piece);
  };
  for_chunks(rn, p.n, 1 << 16, chunk);
  return kOk;
}

template <int F, bool kSat>
static void encode_bits_run(uint32_t first, int64_t n, uint8_t* out) {
  for (int64_t i = 0; i < n; i++) out[i] = (uint8_t)fp8_encode_bits<F, kSat>(first + (uint32_t)i);
}

static int encodeFp8Bits(uint32_t first, int64_t count, uint8_t* out, int format, bool sat, const Runner& rn) {
  auto chunk = [&](int64_t i0, int64_t i1) {
    const uint32_t b = first + (uint32_t)i0;
    const int64_t n = i1 - i0;
    uint8_t* o = out + i0;
    switch (format * 2 + (sat ? 1 : 0)) {
      case kE4M3FN * 2 + 1: encode_bits_run<kE4M3FN, true>(b, n, o); break;
      case kE4M3FN * 2: encode_bits_run<kE4M3FN, false>(b, n, o); break;
      case kE5M2 * 2 + 1: encode_bits_run<kE5M2, true>(b, n, o); break;
      case kE5M2 * 2: encode_bits_run<kE5M2, false>(b, n, o); break;
      case kE4M3FNUZ * 2 + 1: encode_bits_run<kE4M3FNUZ, true>(b, n, o); break;
      case kE4M3FNUZ * 2: encode_bits_run<kE4M3FNUZ, false>(b, n, o); break;
      case kE5M2FNUZ * 2 + 1: encode_bits_run<kE5M2FNUZ, true>(b, n, o); break;
      default: encode_bits_run<kE5M2FNUZ, false>(b, n, o); break;
    }
  };
  for_chunks(rn, count, 1 << 18, chunk);
  return kOk;
}

// ------------------------------------------------------------------------------------------------
// amax
// ------------------------------------------------------------------------------------------------

/** max |x[i]| over n elements; NaN if any element is NaN; 0 for n == 0. */
static float amax_range(const float* x, int64_t n) {
  VF m0 = vzero(), m1 = vzero();
  bool nan = false;
  int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    const VF a = vload(x + i), b = vload(x + i + W);
    nan |= vhasnan(vadd(a, b));
    m0 = vmax(vabs(a), m0);
    m1 = vmax(vabs(b), m1);
  }
  for (; i + W <= n; i += W) {
    const VF a = vload(x + i);
    nan |= vhasnan(a);
    m0 = vmax(vabs(a), m0);
  }
  if (i < n) {
    const VF a = vloadn(x + i, (int)(n - i));
    nan |= vhasnan(a);
    m1 = vmax(vabs(a), m1);
  }
  if (nan) {
    // a + b is also NaN for inf + -inf; confirm element-wise.
    for (int64_t j = 0; j < n; j++)
      if (x[j] != x[j]) return bits_as_f32(0x7FC00000u);
  }
  return vhmax(vmax(m0, m1));
}

static float amaxTensor(const float* x, int64_t n, const Runner& rn) {
  if (n < kParallelMin || rn.threads == 1) return amax_range(x, n);
  const int64_t chunk = 1 << 16;
  const int64_t tasks = ceil_div(n, chunk);
  float* parts = static_cast<float*>(malloc((size_t)tasks * sizeof(float)));
  if (!parts) return amax_range(x, n);
  auto task = [&](int64_t t, int) { parts[t] = amax_range(x + t * chunk, imin(chunk, n - t * chunk)); };
  rn.parallel_for(tasks, task);
  float m = 0.0f;
  bool nan = false;
  for (int64_t t = 0; t < tasks; t++) {
    nan |= parts[t] != parts[t];
    m = parts[t] > m ? parts[t] : m;
  }
  free(parts);
  return nan ? bits_as_f32(0x7FC00000u) : m;
}

static int amaxPerHead(const AmaxParams& p, const Runner& rn) {
  auto head = [&](int64_t h, int) {
    float m = 0.0f;
    bool nan = false;
    for (int64_t t = 0; t < p.numTokens; t++) {
      const float v = amax_range(p.x + (t * p.numHeads + h) * p.headSize, p.headSize);
      nan |= v != v;
      m = v > m ? v : m;
    }
    if (p.accumulate) {
      const float old = p.out[h];
      nan |= old != old;
      m = old > m ? old : m;
    }
    p.out[h] = nan ? bits_as_f32(0x7FC00000u) : m;
  };
  if (p.numTokens * p.numHeads * p.headSize < kParallelMin || rn.threads == 1) {
    for (int64_t h = 0; h < p.numHeads; h++) head(h, 0);
  } else {
    rn.parallel_for(p.numHeads, head);
  }
  return kOk;
}

// ------------------------------------------------------------------------------------------------
// reshapeAndCache
// ------------------------------------------------------------------------------------------------

template <int DT>
static void write_head(const float* src, void* cache, int64_t dstIndex, int64_t d, float scale) {
  if constexpr (DT == kF32) {
    memcpy(static_cast<float*>(cache) + dstIndex, src, (size_t)d * sizeof(float));
  } else if constexpr (DT == kBF16) {
    uint16_t* dst = static_cast<uint16_t*>(cache) + dstIndex;
    for (int64_t i = 0; i < d; i++) dst[i] = f32_to_bf16(src[i]);
  } else if constexpr (DT == kF16) {
    uint16_t* dst = static_cast<uint16_t*>(cache) + dstIndex;
    for (int64_t i = 0; i < d; i++) dst[i] = f32_to_f16(src[i]);
  } else {
    quantize_run<DT - kFp8E4M3FN, true>(src, static_cast<uint8_t*>(cache) + dstIndex, d, scale);
  }
}

/** Which pools a cache write fills (a mixed cache writes each pool with its own dtype's writer). */
enum KvPools : int { kPoolK = 1, kPoolV = 2, kPoolKV = 3 };

/** Write the tokens' K and / or V heads (`pools`) into a cache of dense or FP8 dtype DT (the pools' dtype). */
template <int DT>
static int reshape_and_cache_t(const CacheWriteParams& p, const Runner& rn, int pools = kPoolKV) {
  const KvCacheRef& c = p.cache;
  const int64_t hd = (int64_t)c.numKvHeads * c.headSize;
  auto tok = [&](int64_t t, int) {
    const int64_t slot = p.slots[t];
    if (slot < 0) return;
    for (int h = 0; h < c.numKvHeads; h++) {
      const int64_t si = t * hd + (int64_t)h * c.headSize;
      const int64_t di = slot * hd + (int64_t)h * c.headSize;
      const float ks = (DT >= kFp8E4M3FN) ? c.kScale[c.scaleLen == 1 ? 0 : h] : 1.0f;
      const float vs = (DT >= kFp8E4M3FN) ? c.vScale[c.scaleLen == 1 ? 0 : h] : 1.0f;
      if (pools & kPoolK) write_head<DT>(p.key + si, c.k, di, c.headSize, ks);
      if (pools & kPoolV) write_head<DT>(p.value + si, c.v, di, c.headSize, vs);
    }
  };
  if (p.numTokens * hd < kParallelMin || rn.threads == 1) {
    for (int64_t t = 0; t < p.numTokens; t++) tok(t, 0);
  } else {
    rn.parallel_for(p.numTokens, tok);
  }
  return kOk;
}

static int reshape_and_cache_q(const CacheWriteParams& p, const Runner& rn, int pools = kPoolKV);  // kvquant_impl.h

/** Write `pools` of a cache whose pools (those written) have dtype p.cache.dtype. */
static int reshape_and_cache_pools(const CacheWriteParams& p, const Runner& rn, int pools) {
  if (is_kv_quant_dtype(p.cache.dtype)) return reshape_and_cache_q(p, rn, pools);
  switch (p.cache.dtype) {
    case kBF16: return reshape_and_cache_t<kBF16>(p, rn, pools);
    case kF16: return reshape_and_cache_t<kF16>(p, rn, pools);
    case kFp8E4M3FN: return reshape_and_cache_t<kFp8E4M3FN>(p, rn, pools);
    case kFp8E5M2: return reshape_and_cache_t<kFp8E5M2>(p, rn, pools);
    case kFp8E4M3FNUZ: return reshape_and_cache_t<kFp8E4M3FNUZ>(p, rn, pools);
    case kFp8E5M2FNUZ: return reshape_and_cache_t<kFp8E5M2FNUZ>(p, rn, pools);
    default: return reshape_and_cache_t<kF32>(p, rn, pools);
  }
}

/**
 * reshapeAndCache: a uniform cache writes both pools in one pass; a mixed one (vdtype != dtype) writes K with its
 * dtype's writer, then V with vdtype's (the same writers, each on the pool of its dtype: the bytes of a uniform cache
 * of that dtype).
 */
static int reshapeAndCache(const CacheWriteParams& p, const Runner& rn) {
  if (p.cache.vdtype == p.cache.dtype) return reshape_and_cache_pools(p, rn, kPoolKV);
  // Each pass sees its pool's scales in both slots (the other pool's may be absent: a pool without scales).
  CacheWriteParams pk = p;
  pk.cache.vScale = p.cache.kScale;
  const int st = reshape_and_cache_pools(pk, rn, kPoolK);
  if (st != kOk) return st;
  CacheWriteParams pv = p;
  pv.cache.dtype = p.cache.vdtype;
  pv.cache.kScale = p.cache.vScale;
  return reshape_and_cache_pools(pv, rn, kPoolV);
}

// ------------------------------------------------------------------------------------------------
// pagedAttention (flash-attention style online softmax over key tiles, K/V dequantized per tile in L1)
// ------------------------------------------------------------------------------------------------

static const int kTile = 64;       // keys per tile
static const int kRowTarget = 16;  // query rows (tokens x GQA heads) per task

struct AttnTask {
  int32_t seq, kvh;
  int32_t t0, t1;      // query tokens [t0, t1) of the sequence
  int32_t k0, k1;      // key positions [k0, k1) of this split
  int32_t split;       // index of this split, nsplit splits in all
  int32_t nsplit;
  int64_t partial;     // first partial row (split tasks) or -1
};

/** Per-thread scratch layout of one attention task. */
struct AttnScratch {
  float* q;     // [rmax, dp]
  float* k;     // [kTile, dp]
  float* v;     // [kTile, dp]
  float* s;     // [rmax, kTile]
  float* acc;   // [rmax, dp]
  float* m;     // [rmax]
  float* l;
  float* mul;
  int32_t* lo;  // [rmax]
  int32_t* hi;
  int64_t* idx; // [2 * kTile]: this tile's and the next tile's row offsets
};

KVQ_I size_t attn_scratch_bytes(int64_t rmax, int64_t dp) {
  return sizeof(float) * (size_t)(rmax * dp * 2 + 2 * kTile * dp + rmax * kTile + 3 * rmax) +
         sizeof(int32_t) * (size_t)(2 * rmax) + sizeof(int64_t) * 2 * kTile + 256;
}

static AttnScratch attn_scratch(void* base, int64_t rmax, int64_t dp) {
  AttnScratch s;
  float* f = static_cast<float*>(base);
  s.q = f;
  f += rmax * dp;
  s.k = f;
  f += kTile * dp;
  s.v = f;
  f += kTile * dp;
  s.s = f;
  f += rmax * kTile;
  s.acc = f;
  f += rmax * dp;
  s.m = f;
  f += rmax;
  s.l = f;
  f += rmax;
  s.mul = f;
  f += rmax;
  int64_t* i64 = reinterpret_cast<int64_t*>(round_up(reinterpret_cast<uintptr_t>(f), 8));
  s.idx = i64;
  i64 += 2 * kTile;
  s.lo = reinterpret_cast<int32_t*>(i64);
  s.hi = s.lo + rmax;
  return s;
}

/** S[r, j] = dot(Q[r], K[j]) for rows [r0, r1), keys [0, nt) (nt rounded up to 4; K rows past nt are zero). */
static void attn_scores(const float* Q, const float* K, float* S, int r0, int r1, int nt, int64_t dp) {
  const int nq = (int)round_up(nt, 4);
  int r = r0;
  for (; r + 2 <= r1; r += 2) {
    const float* q0 = Q + r * dp;
    const float* q1 = q0 + dp;
    for (int j = 0; j < nq; j += 4) {
      const float* k0 = K + j * dp;
      VF a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
      VF b0 = vzero(), b1 = vzero(), b2 = vzero(), b3 = vzero();
      for (int64_t c = 0; c < dp; c += W) {
        const VF x0 = vload(q0 + c), x1 = vload(q1 + c);
        const VF y0 = vload(k0 + c), y1 = vload(k0 + dp + c), y2 = vload(k0 + 2 * dp + c), y3 = vload(k0 + 3 * dp + c);
        a0 = vfma(x0, y0, a0);
        a1 = vfma(x0, y1, a1);
        a2 = vfma(x0, y2, a2);
        a3 = vfma(x0, y3, a3);
        b0 = vfma(x1, y0, b0);
        b1 = vfma(x1, y1, b1);
        b2 = vfma(x1, y2, b2);
        b3 = vfma(x1, y3, b3);
      }
      vhsum4(a0, a1, a2, a3, S + r * kTile + j);
      vhsum4(b0, b1, b2, b3, S + (r + 1) * kTile + j);
    }
  }
  for (; r < r1; r++) {
    const float* q0 = Q + r * dp;
    for (int j = 0; j < nq; j += 4) {
      const float* k0 = K + j * dp;
      VF a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
      for (int64_t c = 0; c < dp; c += W) {
        const VF x0 = vload(q0 + c);
        a0 = vfma(x0, vload(k0 + c), a0);
        a1 = vfma(x0, vload(k0 + dp + c), a1);
        a2 = vfma(x0, vload(k0 + 2 * dp + c), a2);
        a3 = vfma(x0, vload(k0 + 3 * dp + c), a3);
      }
      vhsum4(a0, a1, a2, a3, S + r * kTile + j);
    }
  }
}

/** acc[r] += sum_{j in [j0, j1)} P[r, j] * V[j] for rows [r0, r0 + RB). */
template <int RB>
static void attn_pv(const float* P, const float* V, float* acc, int r0, int j0, int j1, int64_t dp) {
  int64_t c = 0;
  for (; c + 2 * W <= dp; c += 2 * W) {
    VF a[RB][2];
    for (int i = 0; i < RB; i++) {
      a[i][0] = vload(acc + (r0 + i) * dp + c);
      a[i][1] = vload(acc + (r0 + i) * dp + c + W);
    }
    for (int j = j0; j < j1; j++) {
      const VF v0 = vload(V + j * dp + c), v1 = vload(V + j * dp + c + W);
      for (int i = 0; i < RB; i++) {
        const VF pj = vset1(P[(r0 + i) * kTile + j]);
        a[i][0] = vfma(pj, v0, a[i][0]);
        a[i][1] = vfma(pj, v1, a[i][1]);
      }
    }
    for (int i = 0; i < RB; i++) {
      vstore(acc + (r0 + i) * dp + c, a[i][0]);
      vstore(acc + (r0 + i) * dp + c + W, a[i][1]);
    }
  }
  for (; c < dp; c += W) {
    VF a[RB];
    for (int i = 0; i < RB; i++) a[i] = vload(acc + (r0 + i) * dp + c);
    for (int j = j0; j < j1; j++) {
      const VF v0 = vload(V + j * dp + c);
      for (int i = 0; i < RB; i++) a[i] = vfma(vset1(P[(r0 + i) * kTile + j]), v0, a[i]);
    }
    for (int i = 0; i < RB; i++) vstore(acc + (r0 + i) * dp + c, a[i]);
  }
}

/** The log-sum-exp of a row's scores from its running max `m` and sum `l` of e^(s - m) (-inf for no keys). */
KVQ_I float attn_lse(float m, float l) {
  if (m == kNegInf) return kNegInf;
  return (float)((double)m + log((double)l));
}

/** Shared, read-only state of one pagedAttention call. */
struct AttnCtx {
  const AttentionParams* p;
  const AttnTask* tasks;
  float* partials;  // [rows of split tasks, dp + 2]: m, l, acc
  int64_t dp, rmax;
  int group;
};

/**
 * Rows of the next tile to prefetch while this one is computed: the score loop touches the next tile's K rows
 * and the P.V loop its V rows, a few lines per key, so the misses overlap the arithmetic instead of stalling on
 * a burst of prefetches that overflows the miss buffers (the blocks are scattered; no hardware prefetcher
 * predicts them).
 */
struct NextRows {
  const char* base;     // K or V pool (bytes)
  const int64_t* idx;   // element offsets of the next tile's rows
  int n;                // rows in the next tile (0 = none)
  int64_t elemBytes;    // bytes per element

  /** Prefetch row j (RB = bytes per row, a compile-time constant in the kernels). */
  template <int64_t RB>
  KVQ_ALWAYS_INLINE void touch(int j) const {
    if (j >= n) return;
    const char* a = base + idx[j] * elemBytes;
    for (int64_t b = 0; b < RB; b += 64) vprefetch(a + b);
    // A row that does not start on a cache line ends in one more line.
    if (((reinterpret_cast<uintptr_t>(a) & 63) != 0) || (RB % 64) != 0) vprefetch(a + RB - 1);
  }
  /** Touch the rows [from, n) not reached by a loop over the first `from` keys. */
  template <int64_t RB>
  KVQ_ALWAYS_INLINE void rest(int from) const {
    for (int j = from; j < n; j++) touch<RB>(j);
  }
};

/**
 * Keys [*lo, *hi) that query token ti of task tk attends: the causal edge at its position, the sliding window, and
 * the task's split [k0, k1) (an empty range has *hi == *lo).
 */
KVQ_I void attn_row_range(const AttentionParams& p, const AttnTask& tk, int ti, int32_t* lo, int32_t* hi) {
  const int qLen = p.qsl[tk.seq + 1] - p.qsl[tk.seq];
  const int pos = p.seqLens[tk.seq] - qLen + tk.t0 + ti;
  int32_t l = p.slidingWindow > 0 ? pos - p.slidingWindow + 1 : 0;
  l = l > tk.k0 ? l : tk.k0;
  int32_t h = pos + 1 < tk.k1 ? pos + 1 : tk.k1;
  *lo = l;
  *hi = h < l ? l : h;
}

/**
 * Row r of the scratch starts a fresh online softmax over keys [lo, hi) (m = -inf, l = 0, acc = 0 over dp), and the
 * task's key span [*kb, *ke) grows to cover that range when it is not empty.
 */
KVQ_I void attn_row_begin(AttnScratch& s, int r, int64_t dp, int32_t lo, int32_t hi, int32_t* kb, int32_t* ke) {
  s.lo[r] = lo;
  s.hi[r] = hi;
  s.m[r] = kNegInf;
  s.l[r] = 0.0f;
  for (int64_t d = 0; d < dp; d++) s.acc[r * dp + d] = 0.0f;
  if (lo < hi) {
    *kb = lo < *kb ? lo : *kb;
    *ke = hi > *ke ? hi : *ke;
  }
}

/**
 * The query rows of task tk as plain float32 copies (zero padded to dp), each row's key range [lo, hi) (causal edge,
 * sliding window, the task's split), multiplier softmaxScale and a fresh online softmax; [*kb, *ke) gets the union
 * of the rows' ranges (empty: *kb >= *ke). The write-time-scaled and mixed-cache tasks load their rows this way.
 */
static void attn_rows_plain(const AttnCtx& ctx, const AttnTask& tk, AttnScratch& s, int32_t* kb, int32_t* ke) {
  const AttentionParams& p = *ctx.p;
  const int64_t D = p.cache.headSize, dp = ctx.dp;
  const int G = ctx.group;
  const int qStart = p.qsl[tk.seq];
  const int h = tk.kvh;
  *kb = tk.k1;
  *ke = tk.k0;
  for (int ti = 0; ti < tk.t1 - tk.t0; ti++) {
    const int token = qStart + tk.t0 + ti;
    int32_t lo, hi;
    attn_row_range(p, tk, ti, &lo, &hi);
    for (int g = 0; g < G; g++) {
      const int r = ti * G + g;
      memcpy(s.q + r * dp, p.q + ((int64_t)token * p.numHeads + (int64_t)h * G + g) * D, (size_t)D * sizeof(float));
      for (int64_t d = D; d < dp; d++) s.q[r * dp + d] = 0.0f;
      s.mul[r] = p.softmaxScale;
      attn_row_begin(s, r, dp, lo, hi, kb, ke);
    }
  }
}

/** Write task tk's rows: the output (acc / l, and the lse when asked for), or the (m, l, acc) partials of a split. */
static void attn_rows_store(const AttnCtx& ctx, const AttnTask& tk, const AttnScratch& s) {
  const AttentionParams& p = *ctx.p;
  const int64_t D = p.cache.headSize, dp = ctx.dp;
  const int G = ctx.group;
  const int qStart = p.qsl[tk.seq];
  const int R = (tk.t1 - tk.t0) * G;
  const int h = tk.kvh;
  for (int r = 0; r < R; r++) {
    const int ti = r / G, g = r % G;
    const int token = qStart + tk.t0 + ti;
    const float* a = s.acc + r * dp;
    if (tk.nsplit == 1) {
      float* o = p.out + ((int64_t)token * p.numHeads + (int64_t)h * G + g) * D;
      const float inv = 1.0f / s.l[r];
      for (int64_t d = 0; d < D; d++) o[d] = a[d] * inv;
      if (p.lse) p.lse[(int64_t)token * p.numHeads + (int64_t)h * G + g] = attn_lse(s.m[r], s.l[r]);
    } else {
      float* part = ctx.partials + (tk.partial + (int64_t)tk.split * R + r) * (dp + 2);
      part[0] = s.m[r];
      part[1] = s.l[r];
      memcpy(part + 2, a, (size_t)dp * sizeof(float));
    }
  }
}

// ---- fused decode path: K/V dequantized in registers, straight into the dot products -------------------
// Used for tiles where every one of the R <= 4 query rows attends every key (decode), with a compile-time head
// size HS (a multiple of W), so all loops over the head unroll.

/** S[r, j] = dot(Q[r], dequant(K[j])) for r < R, j < nt. */
template <int DT, int HS, int R, bool kFast>
static void scores_fused(const typename Load<DT>::T* kc, const int64_t* idx, int nt, const float* Q, int64_t dp,
                         float* S, VF mul, const NextRows& next) {
  constexpr int NC = HS / W;
  constexpr int KB = (W >= 16 || R <= 2) ? 4 : 2;  // keys per step (accumulators R x KB stay in registers)
  int j = 0;
  for (; j + KB <= nt; j += KB) {
    for (int b = 0; b < KB; b++) next.touch<HS * sizeof(typename Load<DT>::T)>(j + b);
    VF acc[R][KB];
    for (int r = 0; r < R; r++)
      for (int b = 0; b < KB; b++) acc[r][b] = vzero();
    for (int c = 0; c < NC; c++) {
      VF kv[KB];
      for (int b = 0; b < KB; b++) kv[b] = kv_load<DT, kFast>(kc + idx[j + b] + c * W, mul);
      for (int r = 0; r < R; r++) {
        const VF q = vload(Q + r * dp + c * W);
        for (int b = 0; b < KB; b++) acc[r][b] = vfma(q, kv[b], acc[r][b]);
      }
    }
    for (int r = 0; r < R; r++) {
      if constexpr (KB == 4) {
        vhsum4(acc[r][0], acc[r][1 % KB], acc[r][2 % KB], acc[r][3 % KB], S + r * kTile + j);
      } else {
        for (int b = 0; b < KB; b++) S[r * kTile + j + b] = vhsum(acc[r][b]);
      }
    }
  }
  next.rest<HS * sizeof(typename Load<DT>::T)>(j);
  for (; j < nt; j++) {
    VF acc[R];
    for (int r = 0; r < R; r++) acc[r] = vzero();
    for (int c = 0; c < NC; c++) {
      const VF kv = kv_load<DT, kFast>(kc + idx[j] + c * W, mul);
      for (int r = 0; r < R; r++) acc[r] = vfma(vload(Q + r * dp + c * W), kv, acc[r]);
    }
    for (int r = 0; r < R; r++) S[r * kTile + j] = vhsum(acc[r]);
  }
}

/** acc[r] += sum_{j < nt} P[r, j] * dequant(V[j]) for r < R. */
template <int DT, int HS, int R, bool kFast>
static void pv_fused(const typename Load<DT>::T* vc, const int64_t* idx, int nt, const float* P, float* acc, int64_t dp,
                     VF mul, const NextRows& next) {
  constexpr int NC = HS / W;
  constexpr int kRegs = W >= 16 ? 16 : 8;
  constexpr int CG0 = kRegs / R < 1 ? 1 : kRegs / R;
  constexpr int CG = CG0 > NC ? NC : CG0;  // chunks per pass: R x CG accumulators
  static_assert(NC % CG == 0, "head chunks must split evenly into passes");
  for (int cg = 0; cg < NC; cg += CG) {
    VF a[R][CG];
    for (int r = 0; r < R; r++)
      for (int c = 0; c < CG; c++) a[r][c] = vload(acc + r * dp + (cg + c) * W);
    for (int j = 0; j < nt; j++) {
      if (cg == 0) next.touch<HS * sizeof(typename Load<DT>::T)>(j);
      VF pj[R];
      for (int r = 0; r < R; r++) pj[r] = vset1(P[r * kTile + j]);
      for (int c = 0; c < CG; c++) {
        const VF v = kv_load<DT, kFast>(vc + idx[j] + (cg + c) * W, mul);
        for (int r = 0; r < R; r++) a[r][c] = vfma(pj[r], v, a[r][c]);
      }
    }
    for (int r = 0; r < R; r++)
      for (int c = 0; c < CG; c++) vstore(acc + r * dp + (cg + c) * W, a[r][c]);
  }
  next.rest<HS * sizeof(typename Load<DT>::T)>(nt);
}

// ---- byte-table (LUT) variants: rows in the table decode's order (see lut_perm), raw decoded values ------------

/** S[r, j] = dot(Q[r], decode(K[j])) for r < R, j < nt, K decoded 64 codes at a time through the table. */
template <int HS, int R>
static void scores_lut(const uint8_t* kc, const int64_t* idx, int nt, const float* Q, int64_t dp, float* S,
                       const Fp8Lut& lut, const NextRows& next) {
  // KB keys per step (R x KB accumulators; decoded blocks may spill for R = 4, which measured faster than KB = 2).
  constexpr int KB = 4;
  for (int j = 0; j < nt; j += KB) {
    for (int b = 0; b < KB; b++) next.touch<HS>(j + b);
    VF acc[R][KB];
    for (int r = 0; r < R; r++)
      for (int b = 0; b < KB; b++) acc[r][b] = vzero();
    for (int blk = 0; blk < HS / 64; blk++) {
      VF kv[KB][4];
      // Keys past nt read row j (always valid); their scores are masked later.
      for (int b = 0; b < KB; b++) fp8_lut_decode64(kc + idx[j + b < nt ? j + b : j] + blk * 64, lut, kv[b]);
      for (int r = 0; r < R; r++) {
        for (int c = 0; c < 4; c++) {
          const VF q = vload(Q + r * dp + blk * 64 + c * W);
          for (int b = 0; b < KB; b++) acc[r][b] = vfma(q, kv[b][c], acc[r][b]);
        }
      }
    }
    // j + KB <= kTile always; entries past nt are masked by softmax_update.
    for (int r = 0; r < R; r++) {
      if constexpr (KB == 4) {
        vhsum4(acc[r][0], acc[r][1 % KB], acc[r][2 % KB], acc[r][3 % KB], S + r * kTile + j);
      } else {
        for (int b = 0; b < KB; b++) S[r * kTile + j + b] = vhsum(acc[r][b]);
      }
    }
  }
  next.rest<HS>((int)round_up(nt, KB));
}

/** acc[r] += sum_{j < nt} P[r, j] * decode(V[j]) for r < R (one 64-element block per pass). */
template <int HS, int R>
static void pv_lut(const uint8_t* vc, const int64_t* idx, int nt, const float* P, float* acc, int64_t dp,
                   const Fp8Lut& lut, const NextRows& next) {
  for (int blk = 0; blk < HS / 64; blk++) {
    VF a[R][4];
    for (int r = 0; r < R; r++)
      for (int c = 0; c < 4; c++) a[r][c] = vload(acc + r * dp + blk * 64 + c * W);
    for (int j = 0; j < nt; j++) {
      if (blk == 0) next.touch<HS>(j);
      VF v[4];
      fp8_lut_decode64(vc + idx[j] + blk * 64, lut, v);
      for (int r = 0; r < R; r++) {
        const VF pj = vset1(P[r * kTile + j]);
        for (int c = 0; c < 4; c++) a[r][c] = vfma(pj, v[c], a[r][c]);
      }
    }
    for (int r = 0; r < R; r++)
      for (int c = 0; c < 4; c++) vstore(acc + r * dp + blk * 64 + c * W, a[r][c]);
  }
  next.rest<HS>(nt);
}

/** Decode one row of HS codes into dst in table order: through the table, or exactly (NaN codes present). */
template <int DT, int HS>
static void convert_row_lut(const uint8_t* src, float* dst, const Fp8Lut& lut, bool fast) {
  for (int blk = 0; blk < HS / 64; blk++) {
    if (fast) {
      VF v[4];
      fp8_lut_decode64(src + blk * 64, lut, v);
      for (int c = 0; c < 4; c++) vstore(dst + blk * 64 + c * W, v[c]);
    } else {
      float tmp[64];
      const VF one = vset1(Load<DT>::konst());
      for (int c = 0; c < 64; c += W) vstore(tmp + c, Load<DT>::load(src + blk * 64 + c, one));
      for (int e = 0; e < 64; e++) dst[blk * 64 + lut_perm(e)] = tmp[e];
    }
  }
}

/** Online-softmax update of rows [ra, rb) from the raw scores of one tile (see attn_task). */
static void softmax_update(AttnScratch& s, int ra, int rb, int32_t j0, int nt, int64_t dp) {
  for (int r = ra; r < rb; r++) {
    float* srow = s.s + r * kTile;
    const int jl = (int)imax(s.lo[r] - j0, 0), jh = (int)imin(s.hi[r] - j0, nt);
    const VF mul = vset1(s.mul[r]);
    for (int j = 0; j < jl; j++) srow[j] = kNegInf;
    for (int j = jh; j < kTile; j++) srow[j] = kNegInf;
    VF mv = vset1(kNegInf);
    for (int j = 0; j < kTile; j += W) {
      const VF v = vmul(vload(srow + j), mul);
      vstore(srow + j, v);
      mv = vmax(v, mv);
    }
    const float mt = vhmax(mv);
    const float mOld = s.m[r];
    const float mNew = mt > mOld ? mt : mOld;
    if (mNew == kNegInf) {
      // Nothing attended yet (all scores -inf): weights of this tile are all zero.
      for (int j = 0; j < kTile; j += W) vstore(srow + j, vzero());
      continue;
    }
    const float corr = sexp(mOld - mNew);
    const VF mn = vset1(mNew);
    VF sum = vzero();
    for (int j = 0; j < kTile; j += W) {
      const VF e = vexp(vsub(vload(srow + j), mn));
      vstore(srow + j, e);
      sum = vadd(sum, e);
    }
    s.l[r] = s.l[r] * corr + vhsum(sum);
    s.m[r] = mNew;
    if (corr != 1.0f) {
      const VF cv = vset1(corr);
      float* a = s.acc + r * dp;
      for (int64_t d = 0; d < dp; d += W) vstore(a + d, vmul(vload(a + d), cv));
    }
  }
}

/** Scores, softmax and P.V of one uniform tile through the fused kernels (R' = R rounded up to 1, 2 or 4). */
/**
 * The scores of an L1 tile: rows nt.. of the K tile zeroed up to a multiple of 4 keys, S = Q.K for rows [ra, rb),
 * then the online softmax update (the K tile's nt rows already dequantized into s.k).
 */
static void attn_tile_scores(AttnScratch& s, int ra, int rb, int32_t j0, int nt, int64_t dp) {
  for (int j = nt; j < (int)round_up(nt, 4); j++)
    for (int64_t d = 0; d < dp; d++) s.k[j * dp + d] = 0.0f;
  attn_scores(s.q, s.k, s.s, ra, rb, nt, dp);
  softmax_update(s, ra, rb, j0, nt, dp);
}

/**
 * acc += P.V over an L1 V tile (nt rows in s.v) for rows [ra, rb): 4, 2, then 1 rows at a time when every row
 * attends every key of the tile (`uniform`); at a causal or window edge each row sums only its own keys (a masked
 * key's V never meets a zero weight).
 */
static void attn_tile_pv(AttnScratch& s, int ra, int rb, int32_t j0, int nt, int64_t dp, bool uniform) {
  if (uniform) {
    int r = ra;
    for (; r + 4 <= rb; r += 4) attn_pv<4>(s.s, s.v, s.acc, r, 0, nt, dp);
    for (; r + 2 <= rb; r += 2) attn_pv<2>(s.s, s.v, s.acc, r, 0, nt, dp);
    for (; r < rb; r++) attn_pv<1>(s.s, s.v, s.acc, r, 0, nt, dp);
  } else {
    for (int r = ra; r < rb; r++) {
      const int jl = (int)imax(s.lo[r] - j0, 0), jh = (int)imin(s.hi[r] - j0, nt);
      if (jl < jh) attn_pv<1>(s.s, s.v, s.acc, r, jl, jh, dp);
    }
  }
}

template <int DT, int HS, int RR, bool kFast>
static void tile_fused(AttnScratch& s, const typename Load<DT>::T* kc, const typename Load<DT>::T* vc, int R, int32_t j0,
                       int nt, int64_t dp, float kmul, float vmul, const NextRows& nk, const NextRows& nv) {
  scores_fused<DT, HS, RR, kFast>(kc, s.idx, nt, s.q, dp, s.s, vset1(kmul), nk);
  softmax_update(s, 0, R, j0, nt, dp);
  pv_fused<DT, HS, RR, kFast>(vc, s.idx, nt, s.s, s.acc, dp, vset1(vmul), nv);
}

template <int DT, int HS, bool kFast>
static void tile_fused_rt(AttnScratch& s, const typename Load<DT>::T* kc, const typename Load<DT>::T* vc, int R, int32_t j0,
                          int nt, int64_t dp, float kmul, float vmul, const NextRows& nk, const NextRows& nv) {
  if constexpr (HS > 0) {
    switch (R) {
      case 1: tile_fused<DT, HS, 1, kFast>(s, kc, vc, R, j0, nt, dp, kmul, vmul, nk, nv); break;
      case 2: tile_fused<DT, HS, 2, kFast>(s, kc, vc, R, j0, nt, dp, kmul, vmul, nk, nv); break;
      default: tile_fused<DT, HS, 4, kFast>(s, kc, vc, R, j0, nt, dp, kmul, vmul, nk, nv); break;
    }
  }
}

/**
 * One task: query rows of tokens [t0, t1) of a sequence for one kv head (rows token-major, then GQA head), keys
 * [k0, k1). Online softmax over tiles of kTile keys; K/V dequantized per tile (fused into registers on the decode
 * path, else into L1 scratch), never as a whole.
 */
template <int DT, int HS>
static void attn_task(const AttnCtx& ctx, const AttnTask& tk, void* scratchBase) {
  typedef typename Load<DT>::T T;
  const AttentionParams& p = *ctx.p;
  const KvCacheRef& c = p.cache;
  const int64_t D = c.headSize, dp = ctx.dp;
  const int G = ctx.group;
  AttnScratch s = attn_scratch(scratchBase, ctx.rmax, dp);
  const int qStart = p.qsl[tk.seq];
  const int R = (tk.t1 - tk.t0) * G;
  const int h = tk.kvh;
  const float kScale = (DT >= kFp8E4M3FN) ? c.kScale[c.scaleLen == 1 ? 0 : h] : 1.0f;
  const float vScale = (DT >= kFp8E4M3FN) ? c.vScale[c.scaleLen == 1 ? 0 : h] : 1.0f;
  // K is dequantized as fround(decode * kScale) (reference semantics), or to the raw decoded value in FP8-query
  // mode where kScale moves into the score multiplier.
  // Byte-table mode (AVX-512 VBMI, FP8 cache, head size a multiple of 64): K and V decode to raw values in the
  // table's order; kScale is folded into the query rows (or the FP8-query multiplier), vScale into the output.
  constexpr bool kLut = kHasFp8Lut && DT >= kFp8E4M3FN && HS > 0 && HS % 64 == 0;
  const DequantMul kMul =
      (p.fp8Query || kLut) ? DequantMul{Load<DT>::konst(), 0.0f} : dequant_mul<DT>(kScale);
  const DequantMul vMul = kLut ? DequantMul{Load<DT>::konst(), 0.0f} : dequant_mul<DT>(vScale);
  const bool fusedOk = HS > 0 && R <= 4 && kMul.mul2 == 0.0f && vMul.mul2 == 0.0f;
  Fp8Lut lut{};
  if constexpr (kLut) lut = fp8_lut<DT - kFp8E4M3FN>();

  // Query rows, their key ranges and score multipliers.
  int32_t kb = tk.k1, ke = tk.k0;
  for (int ti = 0; ti < tk.t1 - tk.t0; ti++) {
    const int token = qStart + tk.t0 + ti;
    int32_t lo, hi;
    attn_row_range(p, tk, ti, &lo, &hi);
    for (int g = 0; g < G; g++) {
      const int r = ti * G + g;
      const float* src = p.q + ((int64_t)token * p.numHeads + (int64_t)h * G + g) * D;
      float* dst = s.q + r * dp;
      if (p.fp8Query) {
        // q8 = encode(fround(q / qScale)); scores use decode(q8) (exact), scaled by qScale*kScale*softmaxScale.
        const float qs = p.qScaleKv[h];
        const int fmt = DT - kFp8E4M3FN;
        for (int64_t d = 0; d < D; d++) dst[d] = fp8_decode_rt(fp8_encode_rt(src[d] / qs, fmt, p.fp8Query == 1), fmt);
        s.mul[r] = (float)((double)qs * (double)kScale * (double)p.softmaxScale);
      } else if constexpr (kLut) {
        for (int64_t d = 0; d < D; d++) dst[d] = src[d] * kScale;
        s.mul[r] = p.softmaxScale;
      } else {
        memcpy(dst, src, (size_t)D * sizeof(float));
        s.mul[r] = p.softmaxScale;
      }
      for (int64_t d = D; d < dp; d++) dst[d] = 0.0f;
      if constexpr (kLut) {
        float tmp[64];
        for (int64_t b0 = 0; b0 < D; b0 += 64) {
          memcpy(tmp, dst + b0, sizeof(tmp));
          for (int e = 0; e < 64; e++) dst[b0 + lut_perm(e)] = tmp[e];
        }
      }
      attn_row_begin(s, r, dp, lo, hi, &kb, &ke);
    }
  }
  // The fused kernels run 1, 2 or 4 rows; a 3-row task gets a zero 4th query row (its results are ignored).
  if (fusedOk && R == 3) {
    for (int64_t d = 0; d < dp; d++) s.q[3 * dp + d] = 0.0f;
    for (int64_t d = 0; d < dp; d++) s.acc[3 * dp + d] = 0.0f;
  }

  const T* kc = static_cast<const T*>(c.k);
  const T* vc = static_cast<const T*>(c.v);
  const int32_t* bt = p.blockTables + (int64_t)tk.seq * p.maxBlocksPerSeq;
  const int bs = c.blockSize;
  const int64_t rowStride = (int64_t)c.numKvHeads * D;

  // Element offsets of the K/V rows of keys [j0, j0 + n) (the block table walked, not divided, per key).
  auto rowOffsets = [&](int32_t j0, int n, int64_t* idx) {
    int64_t blkPos = j0 / bs;
    int off = j0 % bs;
    int64_t base = (int64_t)bt[blkPos] * bs;
    for (int j = 0; j < n; j++) {
      idx[j] = (base + off) * rowStride + (int64_t)h * D;
      if (++off == bs && j + 1 < n) {
        off = 0;
        base = (int64_t)bt[++blkPos] * bs;
      }
    }
  };
  // Touch every cache line of the K/V rows of a tile, so the next tile's rows (scattered over blocks the hardware
  // prefetcher cannot predict) are in flight while this one is computed.
  const int64_t rowBytes = D * (int64_t)sizeof(T);
  auto prefetchRows = [&](const int64_t* idx, int n) {
    for (int j = 0; j < n; j++) {
      const char* kr = reinterpret_cast<const char*>(kc + idx[j]);
      const char* vr = reinterpret_cast<const char*>(vc + idx[j]);
      for (int64_t b = 0; b < rowBytes; b += 64) {
        vprefetch(kr + b);
        vprefetch(vr + b);
      }
    }
  };
  int64_t* idxNext = s.idx + kTile;
  if (kb < ke) {
    rowOffsets(kb, (int)imin(kTile, ke - kb), s.idx);
    prefetchRows(s.idx, (int)imin(kTile, ke - kb));
  }
  for (int32_t j0 = kb; j0 < ke; j0 += kTile) {
    const int nt = (int)imin(kTile, ke - j0);
    const int nn = j0 + kTile < ke ? (int)imin(kTile, ke - j0 - kTile) : 0;
    if (nn > 0) rowOffsets(j0 + kTile, nn, idxNext);
    // The fused paths prefetch the next tile while they compute (NextRows); the others in one burst here.
    const NextRows nextK{reinterpret_cast<const char*>(kc), idxNext, nn, (int64_t)sizeof(T)};
    const NextRows nextV{reinterpret_cast<const char*>(vc), idxNext, nn, (int64_t)sizeof(T)};
    // Active rows: key ranges are monotone in r, so they form one contiguous run.
    int ra = 0, rb = R;
    while (ra < R && !(s.lo[ra] < j0 + nt && s.hi[ra] > j0)) ra++;
    while (rb > ra && !(s.lo[rb - 1] < j0 + nt && s.hi[rb - 1] > j0)) rb--;
    bool uniform = ra < rb;
    for (int r = ra; r < rb; r++) uniform = uniform && s.lo[r] <= j0 && s.hi[r] >= j0 + nt;
    // FP8 formats whose fast lanes misdecode NaN codes: use them only when this tile holds none.
    bool fast = false;
    if constexpr (kLut) {
      // The tables decode every code exactly except FNUZ's NaN code 0x80.
      fast = true;
      if constexpr (DT == kFp8E4M3FNUZ || DT == kFp8E5M2FNUZ) {
        for (int j = 0; j < nt && fast; j++) fast = !Load<DT>::any_nan(kc + s.idx[j], D) && !Load<DT>::any_nan(vc + s.idx[j], D);
      }
    } else if constexpr (Load<DT>::kHasFast) {
      fast = true;
      for (int j = 0; j < nt && fast; j++) fast = !Load<DT>::any_nan(kc + s.idx[j], D) && !Load<DT>::any_nan(vc + s.idx[j], D);
    }

    if (kLut && fast && ra < rb && fusedOk && uniform && ra == 0 && rb == R) {
      if constexpr (kLut) {
        switch (R) {
          case 1: scores_lut<HS, 1>(kc, s.idx, nt, s.q, dp, s.s, lut, nextK); break;
          case 2: scores_lut<HS, 2>(kc, s.idx, nt, s.q, dp, s.s, lut, nextK); break;
          default: scores_lut<HS, 4>(kc, s.idx, nt, s.q, dp, s.s, lut, nextK); break;
        }
        softmax_update(s, 0, R, j0, nt, dp);
        switch (R) {
          case 1: pv_lut<HS, 1>(vc, s.idx, nt, s.s, s.acc, dp, lut, nextV); break;
          case 2: pv_lut<HS, 2>(vc, s.idx, nt, s.s, s.acc, dp, lut, nextV); break;
          default: pv_lut<HS, 4>(vc, s.idx, nt, s.s, s.acc, dp, lut, nextV); break;
        }
      }
    } else if (!kLut && ra < rb && fusedOk && uniform && ra == 0 && rb == R) {
      if (fast) {
        tile_fused_rt<DT, HS, true>(s, kc, vc, R, j0, nt, dp, kMul.mul1, vMul.mul1, nextK, nextV);
      } else {
        tile_fused_rt<DT, HS, false>(s, kc, vc, R, j0, nt, dp, kMul.mul1, vMul.mul1, nextK, nextV);
      }
    } else if (ra < rb) {
      prefetchRows(idxNext, nn);
      // Dequantize the K tile into L1 (zero rows up to a multiple of 4 keys), score, softmax.
      for (int j = 0; j < nt; j++) {
        if constexpr (kLut) {
          convert_row_lut<DT, HS>(reinterpret_cast<const uint8_t*>(kc + s.idx[j]), s.k + j * dp, lut, fast);
        } else if (fast) {
          convert_row<DT, true>(kc + s.idx[j], D, s.k + j * dp, kMul);
        } else {
          convert_row<DT, false>(kc + s.idx[j], D, s.k + j * dp, kMul);
        }
      }
      attn_tile_scores(s, ra, rb, j0, nt, dp);
      // Dequantize the V tile and accumulate P.V.
      for (int j = 0; j < nt; j++) {
        if constexpr (kLut) {
          convert_row_lut<DT, HS>(reinterpret_cast<const uint8_t*>(vc + s.idx[j]), s.v + j * dp, lut, fast);
        } else if (fast) {
          convert_row<DT, true>(vc + s.idx[j], D, s.v + j * dp, vMul);
        } else {
          convert_row<DT, false>(vc + s.idx[j], D, s.v + j * dp, vMul);
        }
      }
      attn_tile_pv(s, ra, rb, j0, nt, dp, uniform);
    }
    int64_t* t = s.idx;
    s.idx = idxNext;
    idxNext = t;
  }

  if constexpr (kLut) {
    // Back to natural order, with vScale applied (the table decoded raw values).
    for (int r = 0; r < R; r++) {
      float* a = s.acc + r * dp;
      float tmp[64];
      for (int64_t b0 = 0; b0 < D; b0 += 64) {
        for (int e = 0; e < 64; e++) tmp[e] = a[b0 + lut_perm(e)] * vScale;
        memcpy(a + b0, tmp, sizeof(tmp));
      }
    }
  }
  attn_rows_store(ctx, tk, s);
}

// The write-time-scaled KV dtypes (reshape_and_cache_q, attn_task_q, attn_task_any).
#include "kvquant_impl.h"

/**
 * pagedAttention's driver, shared by every cache kind: tasks (sequence x query block x kv head, keys split
 * flash-decoding style when there are fewer tasks than threads), `task(ctx, tk, scratch)` run for each on the pool,
 * then the splits combined. `task` is attn_task_any<DT, HS> for a uniform cache, attn_task_mixed for a mixed one.
 */
template <class Task>
static int paged_attention_run(const AttentionParams& p, const Runner& rn, Task& task) {
  const KvCacheRef& c = p.cache;
  const int G = p.numHeads / c.numKvHeads;
  const int64_t dp = round_up(c.headSize, W);
  const int qb = G >= kRowTarget ? 1 : kRowTarget / G;
  const int64_t rmax = (int64_t)qb * G;

  // Count base tasks (sequence x query block x kv head) and decide key splits (flash-decoding) so that a
  // handful of long sequences still keeps every thread busy.
  int64_t base = 0;
  for (int s = 0; s < p.numSeqs; s++) base += ceil_div(p.qsl[s + 1] - p.qsl[s], qb) * c.numKvHeads;
  if (base == 0) return kOk;
  const int64_t want = base >= rn.threads ? 1 : ceil_div(rn.threads, base);
  int64_t ntasks = 0, partialRows = 0;
  // First pass: count; second pass: fill.
  AttnTask* tasks = nullptr;
  for (int pass = 0; pass < 2; pass++) {
    int64_t nt = 0, prow = 0;
    for (int s = 0; s < p.numSeqs; s++) {
      const int qLen = p.qsl[s + 1] - p.qsl[s];
      const int ctxLen = p.seqLens[s];
      for (int t0 = 0; t0 < qLen; t0 += qb) {
        const int t1 = (int)imin(qLen, t0 + qb);
        const int pFirst = ctxLen - qLen + t0, pLast = ctxLen - qLen + t1 - 1;
        const int32_t klo = p.slidingWindow > 0 ? (int32_t)imax(0, pFirst - p.slidingWindow + 1) : 0;
        const int32_t khi = pLast + 1;
        const int64_t nk = khi - klo;
        int64_t nsplit = imin(want, ceil_div(nk, 256));
        if (nsplit < 1) nsplit = 1;
        const int64_t step = ceil_div(nk, nsplit);
        nsplit = ceil_div(nk, step);
        const int rows = (t1 - t0) * G;
        for (int h = 0; h < c.numKvHeads; h++) {
          for (int64_t sp = 0; sp < nsplit; sp++) {
            if (pass == 1) {
              AttnTask& tk = tasks[nt];
              tk.seq = s;
              tk.kvh = h;
              tk.t0 = t0;
              tk.t1 = t1;
              tk.k0 = (int32_t)(klo + sp * step);
              tk.k1 = (int32_t)imin(khi, klo + (sp + 1) * step);
              tk.split = (int32_t)sp;
              tk.nsplit = (int32_t)nsplit;
              tk.partial = nsplit > 1 ? prow : -1;
            }
            nt++;
          }
          if (nsplit > 1) prow += nsplit * rows;
        }
      }
    }
    if (pass == 0) {
      ntasks = nt;
      partialRows = prow;
      tasks = static_cast<AttnTask*>(malloc((size_t)ntasks * sizeof(AttnTask)));
      if (!tasks) return kOutOfMemory;
    }
  }
  float* partials = nullptr;
  if (partialRows > 0) {
    partials = static_cast<float*>(malloc((size_t)partialRows * (size_t)(dp + 2) * sizeof(float)));
    if (!partials) {
      free(tasks);
      return kOutOfMemory;
    }
  }
  if (!rn.reserve(rn.self, attn_scratch_bytes(rmax, dp))) {
    free(tasks);
    free(partials);
    return kOutOfMemory;
  }
  AttnCtx ctx{&p, tasks, partials, dp, rmax, G};
  auto body = [&](int64_t i, int tid) { task(ctx, tasks[i], rn.scratch(rn.self, tid)); };
  rn.parallel_for(ntasks, body);

  if (partialRows > 0) {
    // Combine splits: out = sum_i acc_i * e^(m_i - M) / sum_i l_i * e^(m_i - M).
    auto combine = [&](int64_t i, int) {
      const AttnTask& tk = tasks[i];
      if (tk.nsplit == 1 || tk.split != 0) return;
      const int R = (tk.t1 - tk.t0) * G;
      const int qStart = p.qsl[tk.seq];
      for (int r = 0; r < R; r++) {
        float M = kNegInf;
        for (int sp = 0; sp < tk.nsplit; sp++) {
          const float m = partials[(tk.partial + (int64_t)sp * R + r) * (dp + 2)];
          M = m > M ? m : M;
        }
        const int ti = r / G, g = r % G;
        float* o = p.out + ((int64_t)(qStart + tk.t0 + ti) * p.numHeads + (int64_t)tk.kvh * G + g) * c.headSize;
        float L = 0.0f;
        for (int64_t d = 0; d < c.headSize; d++) o[d] = 0.0f;
        for (int sp = 0; sp < tk.nsplit; sp++) {
          const float* part = partials + (tk.partial + (int64_t)sp * R + r) * (dp + 2);
          if (part[0] == kNegInf) continue;
          const float wgt = sexp(part[0] - M);
          L += part[1] * wgt;
          for (int64_t d = 0; d < c.headSize; d++) o[d] += part[2 + d] * wgt;
        }
        const float inv = 1.0f / L;
        for (int64_t d = 0; d < c.headSize; d++) o[d] *= inv;
        if (p.lse) p.lse[(int64_t)(qStart + tk.t0 + ti) * p.numHeads + (int64_t)tk.kvh * G + g] = attn_lse(M, L);
      }
    };
    rn.parallel_for(ntasks, combine);
  }
  free(tasks);
  free(partials);
  return kOk;
}

/** pagedAttention over a uniform cache of dtype DT. */
template <int DT>
static int paged_attention_t(const AttentionParams& p, const Runner& rn) {
  // Common head sizes get a compile-time size (unrolled, register-resident decode path).
  const int hs = p.cache.headSize;
  auto task = [hs](const AttnCtx& ctx, const AttnTask& tk, void* scratch) {
    if (hs == 64 && 64 % W == 0) {
      attn_task_any<DT, 64>(ctx, tk, scratch);
    } else if (hs == 128 && 128 % W == 0) {
      attn_task_any<DT, 128>(ctx, tk, scratch);
    } else {
      attn_task_any<DT, 0>(ctx, tk, scratch);
    }
  };
  return paged_attention_run(p, rn, task);
}

// Caches whose K and V dtypes differ (attn_task_mixed, paged_attention_mixed).
#include "kvmixed_impl.h"

static int pagedAttention(const AttentionParams& p, const Runner& rn) {
  if (p.cache.vdtype != p.cache.dtype) return paged_attention_mixed(p, rn);
  switch (p.cache.dtype) {
    case kBF16: return paged_attention_t<kBF16>(p, rn);
    case kF16: return paged_attention_t<kF16>(p, rn);
    case kFp8E4M3FN: return paged_attention_t<kFp8E4M3FN>(p, rn);
    case kFp8E5M2: return paged_attention_t<kFp8E5M2>(p, rn);
    case kFp8E4M3FNUZ: return paged_attention_t<kFp8E4M3FNUZ>(p, rn);
    case kFp8E5M2FNUZ: return paged_attention_t<kFp8E5M2FNUZ>(p, rn);
    case kKvFp8PerTokenHead: return paged_attention_t<kKvFp8PerTokenHead>(p, rn);
    case kKvInt8PerTokenHead: return paged_attention_t<kKvInt8PerTokenHead>(p, rn);
    case kKvInt4PerTokenHead: return paged_attention_t<kKvInt4PerTokenHead>(p, rn);
    case kKvInt4G16: return paged_attention_t<kKvInt4G16>(p, rn);
    case kKvInt4G32: return paged_attention_t<kKvInt4G32>(p, rn);
    case kKvInt4G64: return paged_attention_t<kKvInt4G64>(p, rn);
    case kKvNvfp4: return paged_attention_t<kKvNvfp4>(p, rn);
    case kKvQ4_0: return paged_attention_t<kKvQ4_0>(p, rn);
    case kKvInt4G32F16: return paged_attention_t<kKvQ4_0>(p, rn);  // the same storage and decode as q4_0
    default: return paged_attention_t<kF32>(p, rn);
  }
}

// ------------------------------------------------------------------------------------------------
// argmax: the first index of each row's maximum; NaN counts as the maximum (its first occurrence wins).
// ------------------------------------------------------------------------------------------------

static int argmax(const ArgmaxParams& p, const Runner& rn) {
  auto row = [&](int64_t r, int) {
    const float* x = p.x + r * p.cols;
    int64_t best = 0;
    float m = x[0];
    if (m == m) {
      for (int64_t j = 1; j < p.cols; j++) {
        const float v = x[j];
        if (v != v) {
          best = j;
          break;
        }
        if (v > m) {
          m = v;
          best = j;
        }
      }
    }
    p.out[r] = (int32_t)best;
  };
  if (p.rows * p.cols < kParallelMin || rn.threads == 1) {
    for (int64_t r = 0; r < p.rows; r++) row(r, 0);
  } else {
    rn.parallel_for(p.rows, row);
  }
  return kOk;
}

#undef KVQ_I

static const KernelTable kTable = {
    kIsaName,    W,           linear,        embedding,     reshapeAndCache, pagedAttention,
    amaxTensor,  amaxPerHead, quantizeFp8,   dequantizeFp8, encodeFp8Bits, quantizeActQ8,
    sampleMax,   sampleWeigh,   sampleList,    samplePick,    sampleKth,
#define KVQ_TABLE_INIT(js, cpuFn, gpuFn, P, read) cpuFn,
    KVQ_STANDARD_OPS(KVQ_TABLE_INIT)
#undef KVQ_TABLE_INIT
};

}  // namespace KVQ_NS
}  // namespace kvq
