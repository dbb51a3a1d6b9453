// SPDX-License-Identifier: Apache-2.0
//
// `linear` and `embedding` on quantized weights (GGML q8_0 .. q6_k blocks, compressed-tensors fp8_e4m3 / int8 /
// int4), computed on the stored form: no dequantized copy of a matrix is ever made. The block decoders are
// wquant.cuh's, shared by every kernel here.
//
// - Decode GEMV (rows <= kQGemvMaxRows): one warp per output feature streams its weight row once. GGML: each lane
//   takes whole 32-element groups (a block of q8_0..q5_1, a sub-block of a K-quant), dequantizes the quants in
//   registers, accumulates sum(q * x) (and sum(x) for the types with a min) and applies the group's scale once;
//   fp8 / int8: lanes stride over the row, the row scale is applied once at the end; int4: group by group, the
//   group's scale (and zero point) once per group. Float32 accumulation, warp-shuffle reduction.
// - Batched rows (prefill): 64 x 64 output tiles through shared memory like ops.cu's GEMM, the weight tile
//   dequantized element by element (wq_elem) as it is loaded.
// - Embedding: the looked-up rows dequantized with wq_elem, bit-exact with the reference `dequantizeRow`.
//
// Numerics: linear matches the reference within the contract's linear tolerance (float32 accumulation in another
// order); embedding is bit-exact.
#include "wquant.cuh"

#include "act_q8.h"

namespace kvq {
namespace gpu {

static const int kQThreads = 256;
static const int kQGemvMaxRows = 8;

// ------------------------------------------------------------------------------------------------
// decode GEMV
// ------------------------------------------------------------------------------------------------

/** y[r, o] = sum_k x[r, k] * W[o, k] (+ bias[o]) for rows <= MAXR; one warp per output feature o. */
template <int DT, int MAXR>
__global__ void gemv_q_kernel(const float* x, const WQ w, const float* bias, float* y, int rows, int64_t K, int64_t N) {
  const int lane = threadIdx.x % KVQ_WARP, warp = threadIdx.x / KVQ_WARP;
  const int nw = blockDim.x / KVQ_WARP;
  for (int64_t o = (int64_t)blockIdx.x * nw + warp; o < N; o += (int64_t)gridDim.x * nw) {
    float acc[MAXR];
#pragma unroll
    for (int r = 0; r < MAXR; r++) acc[r] = 0.0f;
    const uint8_t* rowp = w.data + o * w.rowBytes;
    if constexpr (DT >= kQ8_0 && DT <= kQ6_K) {
      // Lane l takes elements 4 (l % 8) .. + 3 of 32-element group g + l / 8: a warp covers 4 groups per step with
      // neighbouring lanes on neighbouring bytes (coalesced) and one scale decode per 4 elements. (q6_k's 16-element
      // halves fall on whole lanes: lanes 0-3 / 4-7 of a group.)
      constexpr int BE = ggml_block_elems<DT>();
      constexpr int BB = ggml_block_bytes<DT>();
      constexpr int GPB = BE / 32;  // 32-element groups per block
      constexpr int GPW = KVQ_WARP / 8;  // groups per warp step
      const int sub = lane % 8;
      const int64_t groups = K / 32;
      for (int64_t g = lane / 8; g < groups; g += GPW) {
        const uint8_t* b = rowp + (g / GPB) * BB;
        const int e = (int)(g % GPB) * 32 + 4 * sub;
        float D, M;
        ggml_dm<DT>(b, e, &D, &M);
        float q[4];
#pragma unroll
        for (int i = 0; i < 4; i++) q[i] = (float)ggml_q<DT>(b, e + i);
        const int64_t k0 = g * 32 + 4 * sub;
#pragma unroll
        for (int r = 0; r < MAXR; r++) {
          if (r < rows) {
            const float4 xv = *reinterpret_cast<const float4*>(x + r * K + k0);
            float sq = q[0] * xv.x;
            sq = fmaf(q[1], xv.y, sq);
            sq = fmaf(q[2], xv.z, sq);
            sq = fmaf(q[3], xv.w, sq);
            acc[r] = fmaf(D, sq, acc[r]);
            if constexpr (ggml_has_min<DT>()) acc[r] = fmaf(M, (xv.x + xv.y) + (xv.z + xv.w), acc[r]);
          }
        }
      }
    } else if constexpr (DT == kWFp8E4M3 || DT == kWInt8) {
      // 4 bytes per lane and step when rows are 4-byte aligned (K % 4 == 0), else byte by byte.
      const int64_t k4 = K % 4 == 0 ? K : 0;
      for (int64_t k = 4 * lane; k < k4; k += 4 * KVQ_WARP) {
        const uint32_t word = *reinterpret_cast<const uint32_t*>(rowp + k);
        float q[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
          const uint8_t c = (uint8_t)(word >> (8 * i));
          q[i] = DT == kWInt8 ? (float)(int8_t)c : fp8_decode<kE4M3FN>(c);
        }
#pragma unroll
        for (int r = 0; r < MAXR; r++) {
          if (r < rows) {
            const float* xr = x + r * K + k;
            acc[r] = fmaf(q[0], xr[0], acc[r]);
            acc[r] = fmaf(q[1], xr[1], acc[r]);
            acc[r] = fmaf(q[2], xr[2], acc[r]);
            acc[r] = fmaf(q[3], xr[3], acc[r]);
          }
        }
      }
      for (int64_t k = k4 + lane; k < K; k += KVQ_WARP) {
        const float q = DT == kWInt8 ? (float)(int8_t)rowp[k] : fp8_decode<kE4M3FN>(rowp[k]);
#pragma unroll
        for (int r = 0; r < MAXR; r++)
          if (r < rows) acc[r] = fmaf(q, x[r * K + k], acc[r]);
      }
      const float s = wq_row_scale(w, o);
#pragma unroll
      for (int r = 0; r < MAXR; r++) acc[r] *= s;
    } else if (w.groupSize % 8 == 0) {  // kWInt4, 8 nibbles (one aligned word, one group) per lane and step
      const int64_t gs = w.groupSize, groups = K / gs;
      for (int64_t k = 8 * lane; k < K; k += 8 * KVQ_WARP) {
        const uint32_t word = *reinterpret_cast<const uint32_t*>(rowp + k / 2);
        const int64_t gi = o * groups + k / gs;
        const int z = w.zeroPoint ? (int)w.zeroPoint[gi] : 0;
        const float s = w.scale[gi];
#pragma unroll
        for (int r = 0; r < MAXR; r++) {
          if (r < rows) {
            const float* xr = x + r * K + k;
            float part = 0.0f;
#pragma unroll
            for (int i = 0; i < 8; i++) part = fmaf((float)((int)((word >> (4 * i)) & 15u) - 8 - z), xr[i], part);
            acc[r] = fmaf(s, part, acc[r]);
          }
        }
      }
    } else {  // kWInt4 with a group size that is not a multiple of 8: group by group
      const int64_t gs = w.groupSize, groups = K / gs;
      for (int64_t g = 0; g < groups; g++) {
        const int64_t gi = o * groups + g;
        const int z = w.zeroPoint ? (int)w.zeroPoint[gi] : 0;
        float part[MAXR];
#pragma unroll
        for (int r = 0; r < MAXR; r++) part[r] = 0.0f;
        for (int64_t k = g * gs + lane; k < (g + 1) * gs; k += KVQ_WARP) {
          const float q = (float)(int4_q(rowp, k) - z);
#pragma unroll
          for (int r = 0; r < MAXR; r++)
            if (r < rows) part[r] = fmaf(q, x[r * K + k], part[r]);
        }
        const float s = w.scale[gi];
#pragma unroll
        for (int r = 0; r < MAXR; r++) acc[r] = fmaf(s, part[r], acc[r]);
      }
    }
#pragma unroll
    for (int r = 0; r < MAXR; r++) acc[r] = warp_sum(acc[r]);
    if (lane == 0) {
      const float bv = bias ? bias[o] : 0.0f;
#pragma unroll
      for (int r = 0; r < MAXR; r++)
        if (r < rows) y[r * N + o] = bias ? acc[r] + bv : acc[r];
    }
  }
}

// ------------------------------------------------------------------------------------------------
// batched rows: tiled GEMM dequantizing the weight tile as it loads
// ------------------------------------------------------------------------------------------------

static const int kQBM = 64, kQBN = 64, kQBK = 16;

/** 64 x 64 output tiles, 256 threads with 4 x 4 outputs each, k blocks of 16 through shared memory. */
template <int DT>
__global__ void __launch_bounds__(256) gemm_q_kernel(const float* x, const WQ w, const float* bias, float* y, int64_t M,
                                                     int64_t K, int64_t N) {
  __shared__ float As[kQBK][kQBM + 4];
  __shared__ float Bs[kQBK][kQBN + 4];
  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  const int64_t m0 = (int64_t)blockIdx.y * kQBM, n0 = (int64_t)blockIdx.x * kQBN;
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
  for (int64_t k0 = 0; k0 < K; k0 += kQBK) {
#pragma unroll
    for (int l = 0; l < 4; l++) {
      const int e = tid + l * 256;  // 0 .. 1023 over a 64 x 16 tile
      const int row = e / kQBK, kk = e % kQBK;
      const int64_t gk = k0 + kk;
      const int64_t gm = m0 + row, gn = n0 + row;
      As[kk][row] = (gm < M && gk < K) ? x[gm * K + gk] : 0.0f;
      Bs[kk][row] = (gn < N && gk < K) ? wq_elem<DT>(w, gn, gk) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kQBK; kk++) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; i++) a[i] = As[kk][ty * 4 + i];
#pragma unroll
      for (int j = 0; j < 4; j++) b[j] = Bs[kk][tx * 4 + j];
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int64_t gm = m0 + ty * 4 + i;
    if (gm >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int64_t gn = n0 + tx * 4 + j;
      if (gn < N) y[gm * N + gn] = bias ? acc[i][j] + bias[gn] : acc[i][j];
    }
  }
}

// ------------------------------------------------------------------------------------------------
// embedding
// ------------------------------------------------------------------------------------------------

/** y[t, c] = W[ids ? ids[t] : t, c] dequantized (bit-exact with the reference). */
template <int DT>
__global__ void embedding_q_kernel(const WQ w, const int32_t* ids, float* y, int64_t numTokens, int64_t hidden) {
  const int64_t n = numTokens * hidden;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t t = i / hidden, c = i % hidden;
    const int64_t row = ids ? (int64_t)ids[t] : t;
    y[i] = wq_elem<DT>(w, row, c);
  }
}

// ------------------------------------------------------------------------------------------------
// host entries
// ------------------------------------------------------------------------------------------------

/** Elements of a compressed-tensors weight's scale array (0 for GGML: the scales live in the blocks). */
static int64_t scale_elems(const WeightRef& r) { return r.dtype >= kWFp8E4M3 ? r.scale_len : 0; }

/** The device view of a weight whose block bytes are at `data` (scale / zero point uploaded unless resident). */
static bool device_weight(Context* ctx, const WeightRef& r, const void* data, const WeightAuxDev& aux, int scaleSlot,
                          int zpSlot, WQ* w, Status* st) {
  w->data = static_cast<const uint8_t*>(data);
  w->rows = r.rows;
  w->cols = r.cols;
  w->rowBytes = weight_row_bytes(r.dtype, r.cols);
  w->groupSize = r.dtype == kWInt4 ? r.group_size : 0;
  w->scalePerRow = r.scale_len != 1;
  w->scale = nullptr;
  w->zeroPoint = nullptr;
  const int64_t ns = scale_elems(r);
  if (ns > 0) {
    void* ds;
    if (aux.scale) ds = const_cast<void*>(aux.scale);
    else if (!put(ctx, scaleSlot, r.scale, (size_t)ns * 4, &ds, st)) return false;
    w->scale = static_cast<const float*>(ds);
  }
  if (r.dtype == kWInt4 && r.zero_point) {
    void* dz;
    if (aux.zeroPoint) dz = const_cast<void*>(aux.zeroPoint);
    else if (!put(ctx, zpSlot, r.zero_point, (size_t)ns, &dz, st)) return false;
    w->zeroPoint = static_cast<const int8_t*>(dz);
  }
  return true;
}

/** Launch y = x W^T (+ bias) on the context stream: the GEMV kernel up to kQGemvMaxRows rows, else the tiled GEMM. */
static bool launch_linear_q(Context* ctx, int dtype, const float* x, const WQ& w, const float* bias, float* y, int64_t M,
                            int64_t K, int64_t N, Status* st) {
  if (M <= kQGemvMaxRows) {
    const int nw = kQThreads / ctx->props.warpSize;
    const unsigned grid = grid_1d(N, nw, (int64_t)ctx->props.multiProcessors * 64);
    const int maxr = M <= 1 ? 1 : M <= 2 ? 2 : M <= 4 ? 4 : 8;
    const int rows = (int)M;
    with_wquant(dtype, [&](auto c) {
      constexpr int DT = decltype(c)::value;
      switch (maxr) {
        case 1: KVQ_LAUNCH(grid, kQThreads, 0, ctx->stream, gemv_q_kernel<DT, 1>)(x, w, bias, y, rows, K, N); break;
        case 2: KVQ_LAUNCH(grid, kQThreads, 0, ctx->stream, gemv_q_kernel<DT, 2>)(x, w, bias, y, rows, K, N); break;
        case 4: KVQ_LAUNCH(grid, kQThreads, 0, ctx->stream, gemv_q_kernel<DT, 4>)(x, w, bias, y, rows, K, N); break;
        default: KVQ_LAUNCH(grid, kQThreads, 0, ctx->stream, gemv_q_kernel<DT, 8>)(x, w, bias, y, rows, K, N); break;
      }
      return true;
    });
    KVQ_LAUNCHED("quantized linear GEMV kernel");
    return true;
  }
  const dim3 grid((unsigned)ceil_div(N, kQBN), (unsigned)ceil_div(M, kQBM));
  if (grid.y > 65535) return fail_status(st, kUnsupported, "linear: more than 65535 * 64 rows in one call");
  with_wquant(dtype, [&](auto c) {
    constexpr int DT = decltype(c)::value;
    KVQ_LAUNCH(grid, 256, 0, ctx->stream, gemm_q_kernel<DT>)(x, w, bias, y, M, K, N);
    return true;
  });
  KVQ_LAUNCHED("quantized linear GEMM kernel");
  return true;
}

/** x' = GGML's 8-bit round trip of x (act_q8.h, the same function as the CPU's), one thread per activation block. */
__global__ void act_q8_round_trip_kernel(const float* x, int64_t blocks, int n, float* out) {
  for (int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; b < blocks; b += (int64_t)gridDim.x * blockDim.x)
    act_q8_round_trip_block(x + b * n, n, out + b * n);
}

/**
 * x' = the W8A8 int8 round trip of x (act_q8.h act_i8_round_trip_row: one scale per row, dynamic or static), one
 * thread per row.
 */
__global__ void act_i8_round_trip_kernel(const float* x, int64_t rows, int64_t K, float staticScale, float* out) {
  for (int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; r < rows; r += (int64_t)gridDim.x * blockDim.x)
    act_i8_round_trip_row(x + r * K, K, staticScale, out + r * K);
}

/** x' = the 16-bit round trip of x (act_q8.h act_q16_round_trip_block: int4 weights), one thread per 128-element block. */
__global__ void act_q16_round_trip_kernel(const float* x, int64_t rows, int64_t K, float* out) {
  const int64_t perRow = (K + kActQ16Block - 1) / kActQ16Block;
  for (int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; b < rows * perRow; b += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = b / perRow, c = (b % perRow) * kActQ16Block;
    act_q16_round_trip_block(x + r * K + c, (int)(K - c < kActQ16Block ? K - c : kActQ16Block), out + r * K + c);
  }
}

bool linear_quant(Context* ctx, const LinearArgs& a, const WeightAuxDev& aux, Status* st) {
  KVQ_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
  const size_t xb = (size_t)(a.rows * a.in) * 4, yb = (size_t)(a.rows * a.out) * 4;
  void *dx, *dy, *dw, *db = nullptr;
  if (!put(ctx, kS0, a.x, xb, &dx, st) || !scratch(ctx, kS2, yb, &dy, st)) return false;
  if (a.xq) {
    // 8- or 16-bit activations: the kernels run on x's round trip x', computed here on the device (GGML's blocks,
    // the W8A8 per-row int8 codes on int8 weights, or the 16-bit blocks of 128 on int4 weights).
    void* dxq;
    if (!scratch(ctx, kS6, xb, &dxq, st)) return false;
    if (a.xq == 2) {
      const int64_t blocks = a.rows * ((a.in + kActQ16Block - 1) / kActQ16Block);
      KVQ_LAUNCH(grid_1d(blocks, 64), 64, 0, ctx->stream, act_q16_round_trip_kernel)(static_cast<const float*>(dx), a.rows, a.in,
                                                                                    static_cast<float*>(dxq));
    } else if (a.w.dtype == kWInt8) {
      KVQ_LAUNCH(grid_1d(a.rows, 64), 64, 0, ctx->stream, act_i8_round_trip_kernel)(static_cast<const float*>(dx), a.rows, a.in, a.xScale,
                                                                                  static_cast<float*>(dxq));
    } else {
      const int n = (int)act_q8_block(a.w.dtype);
      const int64_t blocks = a.rows * a.in / n;
      KVQ_LAUNCH(grid_1d(blocks, 64), 64, 0, ctx->stream, act_q8_round_trip_kernel)(static_cast<const float*>(dx), blocks, n,
                                                                                   static_cast<float*>(dxq));
    }
    KVQ_LAUNCHED("activation round-trip kernel");
    dx = dxq;
  }
  if (a.wDev) {
    dw = const_cast<void*>(a.wDev);
  } else if (!put(ctx, kS1, a.w.data, (size_t)weight_data_bytes(a.w), &dw, st)) {
    return false;
  }
  if (a.bias && !put_keyed(ctx, a.bias, (size_t)a.out * 4, &db, st)) return false;
  WQ w;
  if (!device_weight(ctx, a.w, dw, aux, kS4, kS5, &w, st)) return false;
  if (!launch_linear_q(ctx, a.w.dtype, static_cast<const float*>(dx), w, static_cast<const float*>(db), static_cast<float*>(dy),
                       a.rows, a.in, a.out, st)) {
    return false;
  }
  return get(ctx, a.y, dy, yb, st) && finish(ctx, st);
}

bool bench_linear_quant(Context* ctx, int wdtype, int64_t rows, int64_t in, int64_t out, int iters, double* msMedian,
                        Status* st) {
  KVQ_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
  if (wdtype < kQ8_0 || wdtype > kWInt4) return fail_status(st, kUnsupported, "bench_linear_quant: not a quantized weight dtype");
  const int64_t group = 128;
  if (in % 256 != 0) return fail_status(st, kUnsupported, "bench_linear_quant: in must be a multiple of 256");
  WeightRef r{};
  r.dtype = wdtype;
  r.rows = out;
  r.cols = in;
  r.group_size = wdtype == kWInt4 ? group : 0;
  r.scale_len = wdtype == kWInt4 ? out * (in / group) : out;  // per-channel fp8 / int8, group-wise int4
  const int64_t dataBytes = weight_data_bytes(r);
  const int64_t scaleElems = scale_elems(r);
  void *dx, *dw, *dy, *ds = nullptr;
  if (!scratch(ctx, kS0, (size_t)(rows * in) * 4, &dx, st) || !scratch(ctx, kS1, (size_t)(dataBytes + 3) / 4 * 4, &dw, st) ||
      !scratch(ctx, kS2, (size_t)(rows * out) * 4, &dy, st) || (scaleElems > 0 && !scratch(ctx, kS4, (size_t)scaleElems * 4, &ds, st)))
    return false;
  // Random bits everywhere (GGML blocks' f16 scales included): the kernels' work does not depend on the values.
  KVQ_LAUNCH(grid_1d(rows * in, kQThreads), kQThreads, 0, ctx->stream, fill_random_f32)((float*)dx, rows * in, 1u);
  KVQ_LAUNCH(grid_1d((dataBytes + 3) / 4, kQThreads), kQThreads, 0, ctx->stream, fill_random_f32)((float*)dw, (dataBytes + 3) / 4, 2u);
  if (ds) KVQ_LAUNCH(grid_1d(scaleElems, kQThreads), kQThreads, 0, ctx->stream, fill_random_f32)((float*)ds, scaleElems, 3u);
  KVQ_LAUNCHED("fill kernels");
  WQ w;
  w.data = static_cast<const uint8_t*>(dw);
  w.rows = out;
  w.cols = in;
  w.rowBytes = weight_row_bytes(wdtype, in);
  w.groupSize = r.group_size;
  w.scalePerRow = true;
  w.scale = static_cast<const float*>(ds);
  w.zeroPoint = nullptr;
  return time_median_ms(
      ctx, iters,
      [&](Status* s) { return launch_linear_q(ctx, wdtype, (const float*)dx, w, nullptr, (float*)dy, rows, in, out, s); },
      msMedian, st);
}

bool embedding_quant(Context* ctx, const EmbeddingArgs& a, const WeightAuxDev& aux, Status* st) {
  if (a.numTokens == 0) return true;
  KVQ_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
  const WeightRef& t = a.table;
  const size_t rowBytes = (size_t)weight_row_bytes(t.dtype, t.cols);
  const size_t outBytes = (size_t)(a.numTokens * a.hidden) * 4;
  const int32_t* ids = nullptr;
  WQ w;
  if (a.tableDev) {
    void* di;
    if (!put_cached(ctx, kCIds, a.ids, (size_t)a.numTokens * 4, &di, st)) return false;
    ids = static_cast<const int32_t*>(di);
    if (!device_weight(ctx, t, a.tableDev, aux, kS3, kS4, &w, st)) return false;
  } else {
    // Only the rows asked for travel: gather their bytes, and their per-row / per-group scales and zero points,
    // on the host into one staging buffer (each part 16-byte aligned); token t then reads gathered row t.
    const bool rowScales = t.dtype == kWInt4 || (t.dtype >= kWFp8E4M3 && t.scale_len != 1);
    const int64_t perRow = t.dtype == kWInt4 ? t.cols / t.group_size : 1;
    const bool zp = t.dtype == kWInt4 && t.zero_point;
    auto align16 = [](size_t n) { return (n + 15) & ~(size_t)15; };
    const size_t dataBytes = rowBytes * (size_t)a.numTokens;
    const size_t scaleOff = align16(dataBytes);
    const size_t scaleBytes = rowScales ? (size_t)(a.numTokens * perRow) * 4 : 0;
    const size_t zpOff = align16(scaleOff + scaleBytes);
    const size_t zpBytes = zp ? (size_t)(a.numTokens * perRow) : 0;
    const size_t total = zpOff + zpBytes;
    void* stage;
    if (!host_stage(ctx, total, &stage, st)) return false;
    char* sd = static_cast<char*>(stage);
    for (int64_t i = 0; i < a.numTokens; i++) {
      const int64_t id = a.ids[i];
      memcpy(sd + (size_t)i * rowBytes, static_cast<const char*>(t.data) + (size_t)id * rowBytes, rowBytes);
      if (rowScales) memcpy(sd + scaleOff + (size_t)(i * perRow) * 4, t.scale + id * perRow, (size_t)perRow * 4);
      if (zp) memcpy(sd + zpOff + (size_t)(i * perRow), t.zero_point + id * perRow, (size_t)perRow);
    }
    void* dt;
    if (!put(ctx, kS1, stage, total, &dt, st)) return false;
    const char* dc = static_cast<const char*>(dt);
    WeightRef g = t;  // the gathered rows: [numTokens, cols]
    g.rows = a.numTokens;
    if (rowScales) g.scale_len = a.numTokens * perRow;
    WeightAuxDev gathered;
    gathered.scale = rowScales ? dc + scaleOff : nullptr;  // a per-tensor scale is uploaded by device_weight
    gathered.zeroPoint = zp ? dc + zpOff : nullptr;
    if (!device_weight(ctx, g, dt, gathered, kS3, kS4, &w, st)) return false;
  }
  void* dy;
  if (!scratch(ctx, kS2, outBytes, &dy, st)) return false;
  const unsigned grid = grid_1d(a.numTokens * a.hidden, kQThreads);
  with_wquant(t.dtype, [&](auto c) {
    constexpr int DT = decltype(c)::value;
    KVQ_LAUNCH(grid, kQThreads, 0, ctx->stream, embedding_q_kernel<DT>)(w, ids, static_cast<float*>(dy), a.numTokens, a.hidden);
    return true;
  });
  KVQ_LAUNCHED("quantized embedding kernel");
  return get(ctx, a.y, dy, outBytes, st) && finish(ctx, st);
}

}  // namespace gpu
}  // namespace kvq
