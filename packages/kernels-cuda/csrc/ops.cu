// SPDX-License-Identifier: Apache-2.0
//
// Every op of the contract except attention (attention.cu) and linear / embedding on quantized weights (wquant.cu,
// which linear() and embedding() hand those dtypes to): linear (GEMV for decode, tiled GEMM or cuBLAS SGEMM
// for prefill), RMSNorm, add, SiLU-mul, GELU-tanh-mul, embedding, RoPE, softmax, KV-cache writes with FP8 quantization, amax
// reductions, bulk FP8 quantize / dequantize. Each host entry copies its inputs to scratch device buffers, runs on
// the context stream, copies the outputs back and synchronizes.
//
// Numerics follow @kvq/kernels-cpu (and so the reference within the contract's tolerances): float32 math with
// IEEE division (nvcc -prec-div=true, no fast math), sums of squares reduced in float64, RoPE in float64, FP8 /
// bf16 / f16 conversions from the shared csrc/fp8.h (bit-exact with @kvq/fp8 and CUDA).
#include "common.cuh"

#include <algorithm>
#include <functional>
#include <vector>

namespace kvq {
namespace gpu {

static const int kThreads = 256;

// ------------------------------------------------------------------------------------------------
// element-wise
// ------------------------------------------------------------------------------------------------

__global__ void add_kernel(const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    y[i] = a[i] + b[i];
  }
}

__global__ void silu_mul_kernel(const float* g, const float* u, float* y, int64_t n) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float x = g[i];
    y[i] = (x / (1.0f + expf(-x))) * u[i];
  }
}

// gelu_tanh(g) * u = g * u / (1 + exp(-2 sqrt(2/pi) (g + 0.044715 g^3)))  (0.5 (1 + tanh t) = 1 / (1 + exp(-2t)))
__global__ void gelu_tanh_mul_kernel(const float* g, const float* u, float* y, int64_t n) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float x = g[i];
    const float t2 = -1.5957691216057308f * x * fmaf(0.044715f * x, x, 1.0f);
    y[i] = (x * u[i]) / (1.0f + expf(t2));
  }
}

enum class Eltwise { kAdd, kSiluMul, kGeluTanhMul };

static bool eltwise(Context* ctx, const EltwiseArgs& a, Eltwise op, Status* st) {
  if (a.n == 0) return true;
  KVQ_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
  const size_t bytes = (size_t)a.n * 4;
  void *da, *db, *dy;
  if (!put(ctx, kS0, a.a, bytes, &da, st) || !put(ctx, kS1, a.b, bytes, &db, st)) return false;
  if (!scratch(ctx, kS2, bytes, &dy, st)) return false;
  const unsigned grid = grid_1d(a.n, kThreads);
  const float *fa = (const float*)da, *fb = (const float*)db;
  switch (op) {
    case Eltwise::kAdd:
      KVQ_LAUNCH(grid, kThreads, 0, ctx->stream, add_kernel)(fa, fb, (float*)dy, a.n);
      KVQ_LAUNCHED("add kernel");
      break;
    case Eltwise::kSiluMul:
      KVQ_LAUNCH(grid, kThreads, 0, ctx->stream, silu_mul_kernel)(fa, fb, (float*)dy, a.n);
      KVQ_LAUNCHED("siluAndMul kernel");
      break;
    case Eltwise::kGeluTanhMul:
      KVQ_LAUNCH(grid, kThreads, 0, ctx->stream, gelu_tanh_mul_kernel)(fa, fb, (float*)dy, a.n);
      KVQ_LAUNCHED("geluTanhAndMul kernel");
      break;
  }
  return get(ctx, a.y, dy, bytes, st) && finish(ctx, st);
}

bool add(Context* ctx, const EltwiseArgs& a, Status* st) { return eltwise(ctx, a, Eltwise::kAdd, st); }
bool silu_and_mul(Context* ctx, const EltwiseArgs& a, Status* st) { return eltwise(ctx, a, Eltwise::kSiluMul, st); }
bool gelu_tanh_and_mul(Context* ctx, const EltwiseArgs& a, Status* st) { return eltwise(ctx, a, Eltwise::kGeluTanhMul, st); }

// ------------------------------------------------------------------------------------------------
// RMSNorm, softmax (one block per row)
// ------------------------------------------------------------------------------------------------

__global__ void rms_norm_kernel(const float* x, const float* w, float* y, int64_t hidden, float eps) {
  __shared__ double red[32];
  const float* xr = x + (int64_t)blockIdx.x * hidden;
  float* yr = y + (int64_t)blockIdx.x * hidden;
  float acc = 0.0f;
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) acc = fmaf(xr[c], xr[c], acc);
  const double ms = block_sum<double>((double)acc, red) / (double)hidden;
  const float inv = (float)(1.0 / sqrt(ms + (double)eps));
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x) yr[c] = (xr[c] * inv) * w[c];
}

bool rms_norm(Context* ctx, const RmsNormArgs& a, Status* st) {
  KVQ_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
  const size_t bytes = (size_t)(a.rows * a.hidden) * 4;
  void *dx, *dw, *dy;
  if (!put(ctx, kS0, a.x, bytes, &dx, st) || !put_keyed(ctx, a.w, (size_t)a.hidden * 4, &dw, st)) return false;
  if (!scratch(ctx, kS2, bytes, &dy, st)) return false;
  KVQ_LAUNCH((unsigned)a.rows, kThreads, 0, ctx->stream, rms_norm_kernel)((const float*)dx, (const float*)dw, (float*)dy, a.hidden,
                                                                   a.eps);
  KVQ_LAUNCHED("rmsNorm kernel");
  return get(ctx, a.y, dy, bytes, st) && finish(ctx, st);
}

__global__ void softmax_kernel(const float* x, float* y, int64_t cols) {
  __shared__ float redf[32];
  __shared__ double redd[32];
  const float* xr = x + (int64_t)blockIdx.x * cols;
  float* yr = y + (int64_t)blockIdx.x * cols;
  float m = -INFINITY;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) m = fmaxf(m, xr[c]);
  const float mx = block_max(m, redf);
  float acc = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float e = expf(xr[c] - mx);
    yr[c] = e;
    acc += e;
  }
  const float sum = (float)block_sum<double>((double)acc, redd);
  const float inv = 1.0f / sum;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) yr[c] = yr[c] * inv;
}

bool softmax(Context* ctx, const SoftmaxArgs& a, Status* st) {
  if (a.rows == 0) return true;
  KVQ_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
  const size_t bytes = (size_t)(a.rows * a.cols) * 4;
  void *dx, *dy;
  if (!put(ctx, kS0, a.x, bytes, &dx, st) || !scratch(ctx, kS1, bytes, &dy, st)) return false;
  KVQ_LAUNCH((unsigned)a.rows, kThreads, 0, ctx->stream, softmax_kernel)((const float*)dx, (float*)dy, a.cols);
  KVQ_LAUNCHED("softmax kernel");
  return get(ctx, a.y, dy, bytes, st) && finish(ctx, st);
}

// ------------------------------------------------------------------------------------------------
// argmax (one block per row)
// ------------------------------------------------------------------------------------------------

/** Whether (v, j) beats (bv, bj): NaN beats every number, then the larger value, then (ties, two NaNs) the smaller index. */
__device__ __forceinline__ bool argmax_better(float v, int64_t j, float bv, int64_t bj) {
  const bool n = v != v, bn = bv != bv;
  if (n != bn) return n;
  if (!n && v != bv) return v > bv;
  return j < bj;
}

__global__ void argmax_kernel(const float* x, int32_t* out, int64_t cols) {
  __shared__ float sv[kThreads];
  __shared__ int64_t si[kThreads];
  const float* xr = x + (int64_t)blockIdx.x * cols;
  float bv = -INFINITY;
  int64_t bj = cols;  // past the row: any element beats it
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    if (argmax_better(xr[c], c, bv, bj)) {
      bv = xr[c];
      bj = c;
    }
  }
  sv[threadIdx.x] = bv;
  si[threadIdx.x] = bj;
  __syncthreads();
  for (int s = (int)blockDim.x / 2; s > 0; s >>= 1) {
    if ((int)threadIdx.x < s && argmax_better(sv[threadIdx.x + s], si[threadIdx.x + s], sv[threadIdx.x], si[threadIdx.x])) {
      sv[threadIdx.x] = sv[threadIdx.x + s];
      si[threadIdx.x] = si[threadIdx.x + s];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = (int32_t)si[0];
}

bool argmax(Context* ctx, const ArgmaxParams& a, Status* st) {
  if (a.rows == 0) return true;
  KVQ_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
  const size_t bytes = (size_t)(a.rows * a.cols) * 4, outBytes = (size_t)a.rows * 4;
  void *dx, *dy;
  if (!put(ctx, kS0, a.x, bytes, &dx, st) || !scratch(ctx, kS1, outBytes, &dy, st)) return false;
  KVQ_LAUNCH((unsigned)a.rows, kThreads, 0, ctx->stream, argmax_kernel)((const float*)dx, (int32_t*)dy, a.cols);
  KVQ_LAUNCHED("argmax kernel");
  return get(ctx, a.out, dy, outBytes, st) && finish(ctx, st);
}

// ------------------------------------------------------------------------------------------------
// embedding
// ------------------------------------------------------------------------------------------------

/** y[t, c] = table[ids ? ids[t] : t, c] as float32. */
template <int DT>
__global__ void embedding_kernel(const void* table, const int32_t* ids, float* y, int64_t numTokens, int64_t hidden) {
  const int64_t n = numTokens * hidden;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t t = i / hidden, c = i % hidden;
    const int64_t row = ids ? (int64_t)ids[t] : t;
    y[i] = load_elem<DT>(table, row * hidden + c);
  }
}

bool embedding(Context* ctx, const EmbeddingArgs& a, Status* st, const WeightAuxDev& aux) {
  if (a.numTokens == 0) return true;
  if (a.table.dtype > kF16) return embedding_quant(ctx, a, aux, st);
  KVQ_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
  const size_t eb = dtype_bytes(a.table.dtype);
  const size_t rowBytes = (size_t)a.hidden * eb;
  const size_t outBytes = (size_t)(a.numTokens * a.hidden) * 4;
  const void* table;
  const int32_t* ids = nullptr;
  void* dy;
  if (a.tableDev) {
    void* di;
    if (!put_cached(ctx, kCIds, a.ids, (size_t)a.numTokens * 4, &di, st)) return false;
    table = a.tableDev;
    ids = (const int32_t*)di;
  } else {
    // Only the rows asked for travel: gather them on the host, convert on the device.
    void* stage;
    if (!host_stage(ctx, rowBytes * (size_t)a.numTokens, &stage, st)) return false;
    for (int64_t t = 0; t < a.numTokens; t++) {
      memcpy(static_cast<char*>(stage) + (size_t)t * rowBytes, static_cast<const char*>(a.table.data) + (size_t)a.ids[t] * rowBytes,
             rowBytes);
    }
    void* dt;
    if (!put(ctx, kS1, stage, rowBytes * (size_t)a.numTokens, &dt, st)) return false;
    table = dt;
  }
  if (!scratch(ctx, kS2, outBytes, &dy, st)) return false;
  const unsigned grid = grid_1d(a.numTokens * a.hidden, kThreads);
  with_dtype(a.table.dtype, [&](auto c) {
    constexpr int DT = decltype(c)::value;
    if constexpr (DT <= kF16) KVQ_LAUNCH(grid, kThreads, 0, ctx->stream, embedding_kernel<DT>)(table, ids, (float*)dy, a.numTokens, a.hidden);
    return true;
  });
  KVQ_LAUNCHED("embedding kernel");
  if (!get(ctx, a.y, dy, outBytes, st) || !finish(ctx, st)) return false;
  return true;
}

// ------------------------------------------------------------------------------------------------
// RoPE (float64 arithmetic on float32 inputs, rounded once, like the reference)
// ------------------------------------------------------------------------------------------------

__global__ void rope_kernel(float* q, float* k, const int32_t* pos, const float* cosT, const float* sinT, int numHeads,
                            int numKvHeads, int headSize, int half, bool interleaved) {
  const int64_t t = blockIdx.x;
  const int64_t p = pos[t];
  const float* cs = cosT + p * half;
  const float* sn = sinT + p * half;
  const int total = (numHeads + numKvHeads) * half;
  for (int i = threadIdx.x; i < total; i += blockDim.x) {
    const int h = i / half, j = i % half;
    float* x = h < numHeads ? q + (t * numHeads + h) * headSize : k + (t * numKvHeads + (h - numHeads)) * headSize;
    float* lo = interleaved ? x + 2 * j : x + j;
    float* hi = interleaved ? x + 2 * j + 1 : x + j + half;
    // float x float products are exact in float64, so contraction into FMA cannot change the result.
    const double a = *lo, b = *hi, c = cs[j], s = sn[j];
    *lo = (float)(a * c - b * s);
    *hi = (float)(b * c + a * s);
  }
}

bool rope(Context* ctx, const RopeArgs& a, Status* st) {
  if (a.numTokens == 0) return true;
  KVQ_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
  const size_t qb = (size_t)(a.numTokens * a.numHeads * a.headSize) * 4;
  const size_t kb = (size_t)(a.numTokens * a.numKvHeads * a.headSize) * 4;
  const int half = a.rotaryDim / 2;
  void *dq, *dk, *dp, *dc, *ds;
  if (!put(ctx, kS0, a.q, qb, &dq, st) || !put(ctx, kS1, a.k, kb, &dk, st)) return false;
  const size_t rowB = (size_t)half * 4;
  const size_t tableB = (size_t)a.maxPositions * rowB;
  if (is_device(ctx, a.cos, tableB) && is_device(ctx, a.sin, tableB)) {
    // A resident table: only the positions travel.
    dc = const_cast<float*>(a.cos);
    ds = const_cast<float*>(a.sin);
    if (!put_cached(ctx, kCRopePos, a.pos, (size_t)a.numTokens * 4, &dp, st)) return false;
  } else {
    // The table can be large (maxPositions 128k): upload only its rows [minPos, maxPos].
    int32_t lo = a.pos[0], hi = a.pos[0];
    for (int64_t t = 1; t < a.numTokens; t++) {
      lo = std::min(lo, a.pos[t]);
      hi = std::max(hi, a.pos[t]);
    }
    const size_t spanB = (size_t)(hi - lo + 1) * rowB;
    if (!put_cached(ctx, kCRopeCos, a.cos + (int64_t)lo * half, spanB, &dc, st) ||
        !put_cached(ctx, kCRopeSin, a.sin + (int64_t)lo * half, spanB, &ds, st))
      return false;
    // Positions relative to lo.
    std::vector<int32_t> rel((size_t)a.numTokens);
    for (int64_t t = 0; t < a.numTokens; t++) rel[(size_t)t] = a.pos[t] - lo;
    if (!put_cached(ctx, kCRopePos, rel.data(), rel.size() * 4, &dp, st)) return false;
  }
  KVQ_LAUNCH((unsigned)a.numTokens, 128, 0, ctx->stream, rope_kernel)((float*)dq, (float*)dk, (const int32_t*)dp, (const float*)dc,
                                                               (const float*)ds, a.numHeads, a.numKvHeads, a.headSize, half,
                                                               a.interleaved);
  KVQ_LAUNCHED("rope kernel");
  return get(ctx, a.q, dq, qb, st) && get(ctx, a.k, dk, kb, st) && finish(ctx, st);
}

// ------------------------------------------------------------------------------------------------
// amax: max |x| as the max of the magnitude bit patterns (monotone for non-negative floats; any NaN pattern is
// larger than +inf's, so NaN propagates without a separate flag)
// ------------------------------------------------------------------------------------------------

__global__ void amax_kernel(const float* x, int64_t n, unsigned* out) {
  unsigned m = 0;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const unsigned b = f32_as_bits(x[i]) & 0x7FFFFFFFu;
    m = b > m ? b : m;
  }
  m = warp_max_u32(m);
  if (threadIdx.x % KVQ_WARP == 0 && m != 0) atomicMax(out, m);
}

__global__ void amax_head_kernel(const float* x, int64_t numTokens, int numHeads, int headSize, unsigned* out) {
  const int h = blockIdx.y;
  const int64_t n = numTokens * headSize;
  unsigned m = 0;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t t = i / headSize, d = i % headSize;
    const unsigned b = f32_as_bits(x[(t * numHeads + h) * headSize + d]) & 0x7FFFFFFFu;
    m = b > m ? b : m;
  }
  m = warp_max_u32(m);
  if (threadIdx.x % KVQ_WARP == 0 && m != 0) atomicMax(out + h, m);
}

static float bits_to_amax(unsigned b) { return b > 0x7F800000u ? bits_as_f32(0x7FC00000u) : bits_as_f32(b); }

bool amax_tensor(Context* ctx, const float* x, int64_t n, float* result, Status* st) {
  if (n == 0) {
    *result = 0.0f;
    return true;
  }
  KVQ_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
  void *dx, *dout;
  if (!put(ctx, kS0, x, (size_t)n * 4, &dx, st) || !scratch(ctx, kS1, 4, &dout, st)) return false;
  KVQ_TRY(cudaMemsetAsync(dout, 0, 4, ctx->stream), "cudaMemset");
  KVQ_LAUNCH(grid_1d(n, kThreads, (int64_t)ctx->props.multiProcessors * 8), kThreads, 0, ctx->stream, amax_kernel)((const float*)dx, n,
                                                                                                          (unsigned*)dout);
  KVQ_LAUNCHED("amax kernel");
  unsigned b = 0;
  if (!get(ctx, &b, dout, 4, st) || !sync(ctx, st)) return false;
  *result = bits_to_amax(b);
  return true;
}

bool amax_per_head(Context* ctx, const AmaxArgs& a, Status* st) {
  KVQ_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
  const int64_t per = a.numTokens * a.headSize;
  std::vector<unsigned> bits((size_t)a.numHeads, 0u);
  if (per > 0) {
    void *dx, *dout;
    if (!put(ctx, kS0, a.x, (size_t)(per * a.numHeads) * 4, &dx, st) || !scratch(ctx, kS1, (size_t)a.numHeads * 4, &dout, st))
      return false;
    KVQ_TRY(cudaMemsetAsync(dout, 0, (size_t)a.numHeads * 4, ctx->stream), "cudaMemset");
    const dim3 grid(grid_1d(per, kThreads, 64), (unsigned)a.numHeads);
    KVQ_LAUNCH(grid, kThreads, 0, ctx->stream, amax_head_kernel)((const float*)dx, a.numTokens, a.numHeads, a.headSize,
                                                          (unsigned*)dout);
    KVQ_LAUNCHED("amaxPerHead kernel");
    if (!get(ctx, bits.data(), dout, bits.size() * 4, st) || !sync(ctx, st)) return false;
  }
  for (int h = 0; h < a.numHeads; h++) {
    float m = bits_to_amax(bits[(size_t)h]);
    bool nan = m != m;
    if (a.accumulate) {
      const float old = a.out[h];
      nan |= old != old;
      m = old > m ? old : m;
    }
    a.out[h] = nan ? bits_as_f32(0x7FC00000u) : m;
  }
  return true;
}

// ------------------------------------------------------------------------------------------------
// bulk FP8 quantize / dequantize
// ------------------------------------------------------------------------------------------------

template <int F, bool kSat>
__global__ void quantize_kernel(const float* src, uint8_t* codes, int64_t n, const float* scales, int64_t runLength,
                                int64_t period) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t run = i / runLength;
    const float s = scales[period ? run % period : run];
    codes[i] = (uint8_t)fp8_encode_bits<F, kSat>(f32_as_bits(src[i] / s));
  }
}

template <int F>
__global__ void dequantize_kernel(const uint8_t* codes, float* dst, int64_t n, const float* scales, int64_t runLength,
                                  int64_t period) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t run = i / runLength;
    const float s = scales[period ? run % period : run];
    dst[i] = fp8_decode<F>(codes[i]) * s;
  }
}

bool quantize_fp8(Context* ctx, const QuantArgs& a, Status* st) {
  if (a.n == 0) return true;
  KVQ_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
  void *ds, *dc, *dsc;
  if (!put(ctx, kS0, a.src, (size_t)a.n * 4, &ds, st) || !put(ctx, kS1, a.scales, (size_t)a.numScales * 4, &dsc, st) ||
      !scratch(ctx, kS2, (size_t)a.n, &dc, st))
    return false;
  const unsigned grid = grid_1d(a.n, kThreads);
  with_format(a.format, [&](auto c) {
    constexpr int F = decltype(c)::value;
    if (a.sat) {
      KVQ_LAUNCH(grid, kThreads, 0, ctx->stream, quantize_kernel<F, true>)((const float*)ds, (uint8_t*)dc, a.n, (const float*)dsc,
                                                                    a.runLength, a.period);
    } else {
      KVQ_LAUNCH(grid, kThreads, 0, ctx->stream, quantize_kernel<F, false>)((const float*)ds, (uint8_t*)dc, a.n, (const float*)dsc,
                                                                     a.runLength, a.period);
    }
    return true;
  });
  KVQ_LAUNCHED("quantizeFp8 kernel");
  return get(ctx, a.codes, dc, (size_t)a.n, st) && finish(ctx, st);
}

bool dequantize_fp8(Context* ctx, const QuantArgs& a, Status* st) {
  if (a.n == 0) return true;
  KVQ_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
  void *dc, *dd, *dsc;
  if (!put(ctx, kS0, a.codes, (size_t)a.n, &dc, st) || !put(ctx, kS1, a.scales, (size_t)a.numScales * 4, &dsc, st) ||
      !scratch(ctx, kS2, (size_t)a.n * 4, &dd, st))
    return false;
  const unsigned grid = grid_1d(a.n, kThreads);
  with_format(a.format, [&](auto c) {
    constexpr int F = decltype(c)::value;
    KVQ_LAUNCH(grid, kThreads, 0, ctx->stream, dequantize_kernel<F>)((const uint8_t*)dc, (float*)dd, a.n, (const float*)dsc,
                                                              a.runLength, a.period);
    return true;
  });
  KVQ_LAUNCHED("dequantizeFp8 kernel");
  return get(ctx, a.dst, dd, (size_t)a.n * 4, st) && finish(ctx, st);
}

template <int F, bool kSat>
__global__ void encode_bits_kernel(uint32_t first, int64_t count, uint8_t* out) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (int64_t)gridDim.x * blockDim.x) {
    out[i] = (uint8_t)fp8_encode_bits<F, kSat>(first + (uint32_t)i);
  }
}

bool encode_fp8_bits(Context* ctx, uint32_t first, int64_t count, uint8_t* out, int format, bool sat, Status* st) {
  if (count == 0) return true;
  KVQ_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
  void* d;
  if (!scratch(ctx, kS0, (size_t)count, &d, st)) return false;
  const unsigned grid = grid_1d(count, kThreads);
  with_format(format, [&](auto c) {
    constexpr int F = decltype(c)::value;
    if (sat) KVQ_LAUNCH(grid, kThreads, 0, ctx->stream, encode_bits_kernel<F, true>)(first, count, (uint8_t*)d);
    else KVQ_LAUNCH(grid, kThreads, 0, ctx->stream, encode_bits_kernel<F, false>)(first, count, (uint8_t*)d);
    return true;
  });
  KVQ_LAUNCHED("encodeFp8Bits kernel");
  return get(ctx, out, d, (size_t)count, st) && finish(ctx, st);
}

// ------------------------------------------------------------------------------------------------
// reshapeAndCache: quantize / convert the new tokens on the device into a compact [numTokens, Hkv, D] buffer (and
// scatter them into resident device pools), copy the compact rows back and scatter them into the host pools by slot
// (in token order, so a repeated slot ends with the last token, as on the CPU)
// ------------------------------------------------------------------------------------------------

template <int DT>
__global__ void cache_write_kernel(const float* key, const float* value, const int32_t* slots, int64_t numTokens, int numKvHeads,
                                   int headSize, const float* kScale, const float* vScale, int scaleLen, void* kOut, void* vOut,
                                   void* kDev, void* vDev) {
  const int64_t per = (int64_t)numKvHeads * headSize;
  const int64_t n = numTokens * per;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t t = i / per, rem = i % per;
    const int64_t slot = slots[t];
    if (slot < 0) continue;
    const int h = (int)(rem / headSize);
    const float ks = DT >= kFp8E4M3FN ? kScale[scaleLen == 1 ? 0 : h] : 1.0f;
    const float vs = DT >= kFp8E4M3FN ? vScale[scaleLen == 1 ? 0 : h] : 1.0f;
    if (kOut) {
      store_elem<DT>(kOut, i, key[i], ks);
      store_elem<DT>(vOut, i, value[i], vs);
    }
    if (kDev) {
      store_elem<DT>(kDev, slot * per + rem, key[i], ks);
      store_elem<DT>(vDev, slot * per + rem, value[i], vs);
    }
  }
}

bool reshape_and_cache(Context* ctx, const CacheWriteArgs& a, Status* st) {
  if (a.numTokens == 0) return true;
  KVQ_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
  if (a.cache.vdtype != a.cache.dtype) return reshape_and_cache_mixed(ctx, a, st);
  if (is_kv_quant_dtype(a.cache.dtype)) return reshape_and_cache_quant(ctx, a, st);
  const CacheRef& c = a.cache;
  const int64_t per = (int64_t)c.numKvHeads * c.headSize;
  const size_t eb = dtype_bytes(c.dtype);
  const size_t inBytes = (size_t)(a.numTokens * per) * 4;
  const size_t outBytes = (size_t)(a.numTokens * per) * eb;
  void *dk, *dv, *ds, *dks = nullptr, *dvs = nullptr, *ok_, *ov;
  if (!put(ctx, kS0, a.key, inBytes, &dk, st) || !put(ctx, kS1, a.value, inBytes, &dv, st) ||
      !put_cached(ctx, kCSlots, a.slots, (size_t)a.numTokens * 4, &ds, st))
    return false;
  // Device-only pools (resident, and this backend their only writer) need no compact copy for the host pools.
  const bool hostCopy = !(c.kDev && c.deviceOnly);
  if (hostCopy && (!scratch(ctx, kS3, outBytes, &ok_, st) || !scratch(ctx, kS4, outBytes, &ov, st))) return false;
  if (!hostCopy) ok_ = ov = nullptr;
  if (c.dtype >= kFp8E4M3FN) {
    if (!put_keyed(ctx, c.kScale, (size_t)c.scaleLen * 4, &dks, st) || !put_keyed(ctx, c.vScale, (size_t)c.scaleLen * 4, &dvs, st))
      return false;
  }
  const unsigned grid = grid_1d(a.numTokens * per, kThreads);
  with_dtype(c.dtype, [&](auto cc) {
    constexpr int DT = decltype(cc)::value;
    KVQ_LAUNCH(grid, kThreads, 0, ctx->stream, cache_write_kernel<DT>)((const float*)dk, (const float*)dv, (const int32_t*)ds,
                                                                a.numTokens, c.numKvHeads, c.headSize, (const float*)dks,
                                                                (const float*)dvs, c.scaleLen, ok_, ov, c.kDev, c.vDev);
    return true;
  });
  KVQ_LAUNCHED("reshapeAndCache kernel");
  if (!hostCopy) return finish(ctx, st);
  void* stage;
  if (!host_stage(ctx, outBytes * 2, &stage, st)) return false;
  char* hk = static_cast<char*>(stage);
  char* hv = hk + outBytes;
  if (!get(ctx, hk, ok_, outBytes, st) || !get(ctx, hv, ov, outBytes, st) || !sync(ctx, st)) return false;
  const size_t rowB = (size_t)per * eb;
  for (int64_t t = 0; t < a.numTokens; t++) {
    const int64_t slot = a.slots[t];
    if (slot < 0) continue;
    memcpy(static_cast<char*>(c.k) + (size_t)slot * rowB, hk + (size_t)t * rowB, rowB);
    memcpy(static_cast<char*>(c.v) + (size_t)slot * rowB, hv + (size_t)t * rowB, rowB);
  }
  return true;
}

// ------------------------------------------------------------------------------------------------
// linear: y[r, o] = sum_i x[r, i] * w[o, i] (+ bias[o])
// ------------------------------------------------------------------------------------------------

/** 16 bytes of weights as float32 lanes. */
template <int DT>
struct WVec;
template <>
struct WVec<kF32> {
  static constexpr int N = 4;
  KVQ_DI static void load(const void* w, int64_t i, float* out) {
    const float4 v = *reinterpret_cast<const float4*>(static_cast<const float*>(w) + i);
    out[0] = v.x, out[1] = v.y, out[2] = v.z, out[3] = v.w;
  }
};
template <int DT>
struct WVec16 {
  static constexpr int N = 8;
  KVQ_DI static void load(const void* w, int64_t i, float* out) {
    const uint4 v = *reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(w) + i);
    const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int j = 0; j < 4; j++) {
      if constexpr (DT == kBF16) {
        out[2 * j] = bf16_to_f32((uint16_t)(u[j] & 0xFFFFu));
        out[2 * j + 1] = bf16_to_f32((uint16_t)(u[j] >> 16));
      } else {
        out[2 * j] = f16_to_f32((uint16_t)(u[j] & 0xFFFFu));
        out[2 * j + 1] = f16_to_f32((uint16_t)(u[j] >> 16));
      }
    }
  }
};
template <>
struct WVec<kBF16> : WVec16<kBF16> {};
template <>
struct WVec<kF16> : WVec16<kF16> {};

/**
 * Decode GEMV (rows <= MAXR): one warp per output feature streams its weight row once; lanes take 16-byte
 * vectors (kVec) or single elements, every x row is reused from L1/L2.
 */
template <int DT, int MAXR, bool kVec>
__global__ void gemv_kernel(const float* x, const void* w, const float* bias, float* y, int rows, int64_t K, int64_t N) {
  const int lane = threadIdx.x % KVQ_WARP, warp = threadIdx.x / KVQ_WARP;
  const int nw = blockDim.x / KVQ_WARP;
  for (int64_t o = (int64_t)blockIdx.x * nw + warp; o < N; o += (int64_t)gridDim.x * nw) {
    float acc[MAXR];
#pragma unroll
    for (int r = 0; r < MAXR; r++) acc[r] = 0.0f;
    const int64_t wrow = o * K;
    if constexpr (kVec) {
      constexpr int V = WVec<DT>::N;
      for (int64_t k = (int64_t)lane * V; k < K; k += (int64_t)KVQ_WARP * V) {
        float wv[V];
        WVec<DT>::load(w, wrow + k, wv);
#pragma unroll
        for (int r = 0; r < MAXR; r++) {
          if (r < rows) {
            const float* xr = x + r * K + k;
#pragma unroll
            for (int j = 0; j < V; j += 4) {
              const float4 xv = *reinterpret_cast<const float4*>(xr + j);
              acc[r] = fmaf(xv.x, wv[j], acc[r]);
              acc[r] = fmaf(xv.y, wv[j + 1], acc[r]);
              acc[r] = fmaf(xv.z, wv[j + 2], acc[r]);
              acc[r] = fmaf(xv.w, wv[j + 3], acc[r]);
            }
          }
        }
      }
    } else {
      for (int64_t k = lane; k < K; k += KVQ_WARP) {
        const float wv = load_elem<DT>(w, wrow + k);
#pragma unroll
        for (int r = 0; r < MAXR; r++)
          if (r < rows) acc[r] = fmaf(x[r * K + k], wv, acc[r]);
      }
    }
#pragma unroll
    for (int r = 0; r < MAXR; r++) acc[r] = warp_sum(acc[r]);
    if (lane == 0) {
      const float b = bias ? bias[o] : 0.0f;
#pragma unroll
      for (int r = 0; r < MAXR; r++)
        if (r < rows) y[r * N + o] = bias ? acc[r] + b : acc[r];
    }
  }
}

static const int kBM = 64, kBN = 64, kBK = 16;

/** Prefill GEMM: 64 x 64 output tiles, 256 threads with 4 x 4 outputs each, k blocks of 16 through shared memory. */
template <int DT>
__global__ void __launch_bounds__(256) gemm_kernel(const float* x, const void* w, const float* bias, float* y, int64_t M,
                                                   int64_t K, int64_t N) {
  __shared__ float As[kBK][kBM + 4];
  __shared__ float Bs[kBK][kBN + 4];
  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  const int64_t m0 = (int64_t)blockIdx.y * kBM, n0 = (int64_t)blockIdx.x * kBN;
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
  for (int64_t k0 = 0; k0 < K; k0 += kBK) {
#pragma unroll
    for (int l = 0; l < 4; l++) {
      const int e = tid + l * 256;  // 0 .. 1023 over a 64 x 16 tile
      const int row = e / kBK, kk = e % kBK;
      const int64_t gk = k0 + kk;
      const int64_t gm = m0 + row, gn = n0 + row;
      As[kk][row] = (gm < M && gk < K) ? x[gm * K + gk] : 0.0f;
      Bs[kk][row] = (gn < N && gk < K) ? load_elem<DT>(w, gn * K + gk) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; kk++) {
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

template <int DT>
__global__ void to_f32_kernel(const void* w, float* out, int64_t n) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    out[i] = load_elem<DT>(w, i);
  }
}

__global__ void add_bias_kernel(float* y, const float* bias, int64_t rows, int64_t N) {
  const int64_t n = rows * N;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    y[i] += bias[i % N];
  }
}

static const int kGemvMaxRows = 8;

/** y = x W^T (+ b) with device pointers. Scratch slot kS9 may hold a float32 copy of the weights (cuBLAS path). */
static bool linear_dev(Context* ctx, const float* x, const void* w, int wdtype, const float* bias, float* y, int64_t rows,
                       int64_t K, int64_t N, bool allowCublas, Status* st) {
  const size_t eb = dtype_bytes(wdtype);
  if (rows <= kGemvMaxRows) {
    const int threads = 256;
    const int nw = threads / ctx->props.warpSize;
    const unsigned grid = grid_1d(N, nw, (int64_t)ctx->props.multiProcessors * 64);
    const bool vec = (K * (int64_t)eb) % 16 == 0 && (K % 4) == 0;
    const int maxr = rows <= 1 ? 1 : rows <= 2 ? 2 : rows <= 4 ? 4 : 8;
    with_dtype(wdtype, [&](auto c) {
      constexpr int DT = decltype(c)::value;
      if constexpr (DT <= kF16) {
        auto go = [&](auto r) {
          constexpr int R = decltype(r)::value;
          if (vec) KVQ_LAUNCH(grid, threads, 0, ctx->stream, gemv_kernel<DT, R, true>)(x, w, bias, y, (int)rows, K, N);
          else KVQ_LAUNCH(grid, threads, 0, ctx->stream, gemv_kernel<DT, R, false>)(x, w, bias, y, (int)rows, K, N);
        };
        switch (maxr) {
          case 1: go(std::integral_constant<int, 1>{}); break;
          case 2: go(std::integral_constant<int, 2>{}); break;
          case 4: go(std::integral_constant<int, 4>{}); break;
          default: go(std::integral_constant<int, 8>{}); break;
        }
      }
      return true;
    });
    KVQ_LAUNCHED("linear GEMV kernel");
    return true;
  }
#if !KVQ_IS_SIM
  if (allowCublas && ctx->cublas.lib && K <= INT32_MAX && N <= INT32_MAX && rows <= INT32_MAX) {
    const float* wf = static_cast<const float*>(w);
    if (wdtype != kF32) {
      void* tmp;
      if (!scratch(ctx, kS9, (size_t)(N * K) * 4, &tmp, st)) return false;
      with_dtype(wdtype, [&](auto c) {
        constexpr int DT = decltype(c)::value;
        if constexpr (DT <= kF16) KVQ_LAUNCH(grid_1d(N * K, kThreads), kThreads, 0, ctx->stream, to_f32_kernel<DT>)(w, (float*)tmp, N * K);
        return true;
      });
      KVQ_LAUNCHED("weight conversion kernel");
      wf = static_cast<const float*>(tmp);
    }
    const float one = 1.0f, zero = 0.0f;
    // Row-major Y[rows, N] is column-major Y^T[N, rows] = W[N, K] . X^T: A = W (row-major [N, K] read transposed),
    // B = X^T (column-major [K, rows]).
    const int s = ctx->cublas.sgemm(ctx->cublas.handle, ctx->cublas.opT, ctx->cublas.opN, (int)N, (int)rows, (int)K, &one,
                                    wf, (int)K, x, (int)K, &zero, y, (int)N);
    if (s != 0) {
      st->code = kRuntimeError;
      snprintf(st->message, sizeof(st->message), "%s failed with status %d", KVQ_IS_HIP ? "hipblasSgemm" : "cublasSgemm", s);
      return false;
    }
    if (bias) {
      KVQ_LAUNCH(grid_1d(rows * N, kThreads), kThreads, 0, ctx->stream, add_bias_kernel)(y, bias, rows, N);
      KVQ_LAUNCHED("bias kernel");
    }
    return true;
  }
#else
  (void)allowCublas;
#endif
  const dim3 grid((unsigned)ceil_div(N, kBN), (unsigned)ceil_div(rows, kBM));
  if (grid.y > 65535) return fail_status(st, kUnsupported, "linear: more than 65535 * 64 rows in one call");
  with_dtype(wdtype, [&](auto c) {
    constexpr int DT = decltype(c)::value;
    if constexpr (DT <= kF16) KVQ_LAUNCH(grid, 256, 0, ctx->stream, gemm_kernel<DT>)(x, w, bias, y, rows, K, N);
    return true;
  });
  KVQ_LAUNCHED("linear GEMM kernel");
  return true;
}

bool linear(Context* ctx, const LinearArgs& a, Status* st, const WeightAuxDev& aux) {
  if (a.w.dtype > kF16) return linear_quant(ctx, a, aux, st);
  KVQ_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
  const size_t eb = dtype_bytes(a.w.dtype);
  const size_t xb = (size_t)(a.rows * a.in) * 4, yb = (size_t)(a.rows * a.out) * 4;
  void *dx, *dy, *dw, *db = nullptr;
  if (!put(ctx, kS0, a.x, xb, &dx, st) || !scratch(ctx, kS2, yb, &dy, st)) return false;
  if (a.wDev) {
    dw = const_cast<void*>(a.wDev);
  } else if (!put(ctx, kS1, a.w.data, (size_t)(a.out * a.in) * eb, &dw, st)) {
    return false;
  }
  if (a.bias && !put_keyed(ctx, a.bias, (size_t)a.out * 4, &db, st)) return false;
  if (!linear_dev(ctx, (const float*)dx, dw, a.w.dtype, (const float*)db, (float*)dy, a.rows, a.in, a.out, true, st)) return false;
  return get(ctx, a.y, dy, yb, st) && finish(ctx, st);
}

// ------------------------------------------------------------------------------------------------
// linear benchmark on device-resident random data
// ------------------------------------------------------------------------------------------------

__global__ void fill_random_f32(float* p, int64_t n, uint32_t seed) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    uint32_t h = (uint32_t)i * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    p[i] = (float)(h & 0xFFFFu) / 65536.0f - 0.5f;
  }
}

__global__ void fill_random_u16_bf16(uint16_t* p, int64_t n, uint32_t seed) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    uint32_t h = (uint32_t)i * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    p[i] = f32_to_bf16((float)(h & 0xFFFFu) / 65536.0f - 0.5f);
  }
}

bool time_median_ms(Context* ctx, int iters, const std::function<bool(Status*)>& launch, double* msMedian, Status* st) {
  cudaEvent_t e0, e1;
  KVQ_TRY(cudaEventCreate(&e0), "cudaEventCreate");
  KVQ_TRY(cudaEventCreate(&e1), "cudaEventCreate");
  std::vector<float> times;
  bool good = true;
  for (int i = 0; i < iters + 3 && good; i++) {
    (void)cudaEventRecord(e0, ctx->stream);
    good = launch(st);
    (void)cudaEventRecord(e1, ctx->stream);
    good = good && ok(cudaEventSynchronize(e1), "benchmark", st);
    float ms = 0;
    (void)cudaEventElapsedTime(&ms, e0, e1);
    if (i >= 3) times.push_back(ms);
  }
  (void)cudaEventDestroy(e0);
  (void)cudaEventDestroy(e1);
  if (!good) return false;
  std::sort(times.begin(), times.end());
  *msMedian = times[times.size() / 2];
  return true;
}

bool bench_linear(Context* ctx, int wdtype, int64_t rows, int64_t in, int64_t out, int iters, bool useCublas, double* msMedian,
                  Status* st) {
  KVQ_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
  if (wdtype >= kQ8_0) return bench_linear_quant(ctx, wdtype, rows, in, out, iters, msMedian, st);
  if (wdtype != kF32 && wdtype != kBF16) return fail_status(st, kUnsupported, "bench_linear: f32, bf16 or a quantized weight dtype");
  void *dx, *dw, *dy;
  const size_t eb = dtype_bytes(wdtype);
  if (!scratch(ctx, kS0, (size_t)(rows * in) * 4, &dx, st) || !scratch(ctx, kS1, (size_t)(in * out) * eb, &dw, st) ||
      !scratch(ctx, kS2, (size_t)(rows * out) * 4, &dy, st))
    return false;
  KVQ_LAUNCH(grid_1d(rows * in, kThreads), kThreads, 0, ctx->stream, fill_random_f32)((float*)dx, rows * in, 1u);
  if (wdtype == kF32) KVQ_LAUNCH(grid_1d(in * out, kThreads), kThreads, 0, ctx->stream, fill_random_f32)((float*)dw, in * out, 2u);
  else KVQ_LAUNCH(grid_1d(in * out, kThreads), kThreads, 0, ctx->stream, fill_random_u16_bf16)((uint16_t*)dw, in * out, 2u);
  KVQ_LAUNCHED("fill kernels");
  return time_median_ms(
      ctx, iters,
      [&](Status* s) { return linear_dev(ctx, (const float*)dx, dw, wdtype, nullptr, (float*)dy, rows, in, out, useCublas, s); },
      msMedian, st);
}

}  // namespace gpu
}  // namespace kvq
