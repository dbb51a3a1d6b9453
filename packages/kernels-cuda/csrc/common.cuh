// SPDX-License-Identifier: Apache-2.0
//
// Shared by the GPU translation units (runtime.cu, ops.cu, attention.cu): the Context, scratch buffers, error
// helpers, and device-side helpers (typed loads, warp/block reductions) written once for CUDA and HIP.
#ifndef KVQ_COMMON_CUH_
#define KVQ_COMMON_CUH_

#include "vendor.h"
// The FP8 / bf16 / f16 conversions are shared with @kvq/kernels-cpu: the CPU tests that prove them bit-exact
// against CUDA's conversions cover this device code too (one header, no copy). It is @kvq/kernels's csrc/fp8.h,
// found through package resolution (scripts/gpu-build.mjs kernelsIncludeDir passes -I<@kvq/kernels>/csrc).
#include "fp8.h"
#include "gpu.h"

#include <stdio.h>
#include <functional>
#include <map>
#include <string.h>
#include <unordered_map>
#include <vector>

#include <type_traits>

namespace kvq {
namespace gpu {

/** Scratch slots of a context (device buffers that grow and are reused across calls). */
enum Slot : int {
  kS0 = 0, kS1, kS2, kS3, kS4, kS5, kS6, kS7, kS8, kS9, kS10, kS11, kS12, kS13,
  kNumSlots
};

/**
 * Per-step metadata uploaded through put_cached: each key keeps its device copy and the host bytes it was made from,
 * so the layers of one step (and the next step, for what did not change) upload nothing new.
 */
enum CachedKey : int {
  kCQsl = 0, kCSeqLens, kCBlockTables, kCTasks, kCCombine, kCRopePos, kCRopeCos, kCRopeSin, kCSlots, kCIds, kCQScale,
  kNumCached
};

/** One content-checked upload: the device buffer and the host bytes it holds. */
struct CachedUpload {
  void* dev = nullptr;
  size_t cap = 0;
  std::vector<unsigned char> host;
};

/**
 * The vendor BLAS's SGEMM, loaded with dlopen (no build-time dependency): cuBLAS v2 on NVIDIA, hipBLAS on AMD (the
 * same C signatures; the operation enums differ: cuBLAS N = 0 / T = 1, hipBLAS N = 111 / T = 112).
 */
struct Cublas {
  void* lib = nullptr;
  void* handle = nullptr;
  int (*create)(void**) = nullptr;
  int (*destroy)(void*) = nullptr;
  int (*setStream)(void*, cudaStream_t) = nullptr;
  int (*setMathMode)(void*, int) = nullptr;  // cuBLAS only
  int (*sgemm)(void*, int, int, int, int, int, const float*, const float*, int, const float*, int, const float*,
               float*, int) = nullptr;
  int opN = 0, opT = 1;
};

struct Context {
  int device = 0;
  cudaStream_t stream = nullptr;
  DeviceProps props{};
  void* scratch[kNumSlots] = {};
  size_t scratchBytes[kNumSlots] = {};
  void* hostStage = nullptr;  // plain host staging for gathers
  size_t hostStageBytes = 0;
  uint64_t h2dBytes = 0, d2hBytes = 0, h2dCopies = 0, d2hCopies = 0;  // transfer_stats
  uint64_t waits = 0;  // host waits for the stream (sync), transfer_stats
  /** Device buffers of buffer_alloc (start -> bytes): pointers in them are device arrays, never copied. */
  std::map<uintptr_t, size_t> deviceRanges;
  /** A device -> host copy was queued since the last synchronization (finish() must wait for it). */
  bool hostPending = false;
  CachedUpload cached[kNumCached];
  /** Small host arrays (cache scales) uploaded through put_keyed, by host address, contents checked on every use. */
  std::unordered_map<const void*, CachedUpload> keyed;
  Cublas cublas;
  char gemmNote[256] = {0};
};

/** Fill st with a fixed message; returns false. */
inline bool fail_status(Status* st, int code, const char* msg) {
  st->code = code;
  snprintf(st->message, sizeof(st->message), "%s", msg);
  return false;
}

/** Check a runtime call; on error fill st ("what: name (message)") and return false. */
inline bool ok(cudaError_t e, const char* what, Status* st) {
  if (e == cudaSuccess) return true;
  st->code = e == cudaErrorMemoryAllocation ? kOutOfMemory : kRuntimeError;
  snprintf(st->message, sizeof(st->message), "%s failed: %s (%s)", what, cudaGetErrorName(e), cudaGetErrorString(e));
  (void)cudaGetLastError();  // clear the sticky-free error state where possible
  return false;
}

#define KVQ_TRY(expr, what)              \
  do {                                   \
    if (!ok((expr), (what), st)) return false; \
  } while (0)

/** After a launch: report configuration errors (the launch itself is asynchronous). */
#define KVQ_LAUNCHED(what) KVQ_TRY(cudaGetLastError(), what)

/** Device scratch `slot` with at least `bytes` (grown geometrically, contents not preserved). */
bool scratch(Context* ctx, int slot, size_t bytes, void** out, Status* st);
/** Host staging buffer with at least `bytes`. */
bool host_stage(Context* ctx, size_t bytes, void** out, Status* st);
/** Whether [p, p + bytes) lies inside one device buffer of this context (a device array the caller passed). */
bool is_device(const Context* ctx, const void* p, size_t bytes);
/**
 * An op input on the device: a device array is used where it is (*dev = host, nothing copied); a host array is
 * copied into scratch `slot`. bytes may be 0.
 */
bool put(Context* ctx, int slot, const void* host, size_t bytes, void** dev, Status* st);
/**
 * Upload per-step metadata (block tables, sequence lengths, positions, slots, the attention work list) under `key`:
 * nothing is copied when the bytes equal the last upload under that key (the other layers of a step), only the span
 * that differs when the size is the same (block-table deltas), else everything.
 */
bool put_cached(Context* ctx, int key, const void* host, size_t bytes, void** dev, Status* st);
/**
 * put_cached keyed by the host array's address, contents checked on every use: the small float arrays that differ per
 * layer and rarely change (cache scales, norm weights, biases; bounded to 4096 arrays).
 */
bool put_keyed(Context* ctx, const void* host, size_t bytes, void** dev, Status* st);
/**
 * An op output: into a device array, a device-to-device copy (none when `dev` is that array); into a host array, a
 * device -> host copy queued on the stream (finish() waits for it).
 */
bool get(Context* ctx, void* host, const void* dev, size_t bytes, Status* st);
/** Wait for the context stream and report asynchronous errors. */
bool sync(Context* ctx, Status* st);
/**
 * The end of an op: waits for the stream only when a result is coming to host memory; an op whose outputs are all
 * device arrays returns as soon as its kernels are queued (asynchronous submission; errors surface at the next wait).
 */
bool finish(Context* ctx, Status* st);

/** reshapeAndCache / pagedAttention on a write-time-scaled KV dtype (kKvFp8PerTokenHead..kKvInt4G32F16; kvquant.cu). */
bool reshape_and_cache_quant(Context* ctx, const CacheWriteArgs& a, Status* st);
bool paged_attention_quant(Context* ctx, const AttentionArgs& a, Status* st);
/**
 * reshapeAndCache / pagedAttention on a cache whose V pool has another dtype than its K pool (CacheRef.vdtype != dtype;
 * kvquant.cu): each pool written and decoded by its own dtype, run-time dtype switches, correctness first.
 */
bool reshape_and_cache_mixed(Context* ctx, const CacheWriteArgs& a, Status* st);
bool paged_attention_mixed(Context* ctx, const AttentionArgs& a, Status* st);
/** `linear` / `embedding` on a quantized weight dtype (kQ8_0..kWInt4; wquant.cu): what linear() / embedding() call. */
bool linear_quant(Context* ctx, const LinearArgs& a, const WeightAuxDev& aux, Status* st);
bool embedding_quant(Context* ctx, const EmbeddingArgs& a, const WeightAuxDev& aux, Status* st);
/** Median time (ms) of `iters` runs of `launch` on the context stream, after 3 warm-up runs (CUDA events). */
bool time_median_ms(Context* ctx, int iters, const std::function<bool(Status*)>& launch, double* msMedian, Status* st);
/** Fill p[0..n) with deterministic pseudo-random floats in [-0.5, 0.5) (benchmark inputs; ops.cu). */
__global__ void fill_random_f32(float* p, int64_t n, uint32_t seed);
/**
 * bench_linear on a quantized weight dtype (wquant.cu): random device-resident blocks [out, in] (in % 256 == 0;
 * fp8 / int8 per-channel scales, int4 groups of 128, symmetric), the kernel linear() runs for `rows` rows.
 */
bool bench_linear_quant(Context* ctx, int wdtype, int64_t rows, int64_t in, int64_t out, int iters, double* msMedian,
                        Status* st);

/**
 * The switch cases of the dense and FP8 dtype codes, each returning f(std::integral_constant<int, DT>): one list for
 * the host dispatcher with_dtype and kvquant.cu's device one (with_pool_dtype), which cannot share a function (a
 * __host__ __device__ template may not call the kernels' __device__ lambdas).
 */
#define KVQ_DENSE_FP8_CASES(f)                                                     \
  case kF32: return f(std::integral_constant<int, kF32>{});                     \
  case kBF16: return f(std::integral_constant<int, kBF16>{});                   \
  case kF16: return f(std::integral_constant<int, kF16>{});                     \
  case kFp8E4M3FN: return f(std::integral_constant<int, kFp8E4M3FN>{});         \
  case kFp8E5M2: return f(std::integral_constant<int, kFp8E5M2>{});             \
  case kFp8E4M3FNUZ: return f(std::integral_constant<int, kFp8E4M3FNUZ>{});     \
  case kFp8E5M2FNUZ: return f(std::integral_constant<int, kFp8E5M2FNUZ>{});

/** Call f(std::integral_constant<int, DT>) for a runtime dtype code (any other code: as kFp8E5M2FNUZ). */
template <class F>
inline bool with_dtype(int dt, F&& f) {
  switch (dt) {
    KVQ_DENSE_FP8_CASES(f)
    default: return f(std::integral_constant<int, kFp8E5M2FNUZ>{});
  }
}

/** Call f(std::integral_constant<int, F>) for a runtime kvq::Fp8Format. */
template <class Fn>
inline bool with_format(int format, Fn&& f) {
  switch (format) {
    case kE4M3FN: return f(std::integral_constant<int, kE4M3FN>{});
    case kE5M2: return f(std::integral_constant<int, kE5M2>{});
    case kE4M3FNUZ: return f(std::integral_constant<int, kE4M3FNUZ>{});
    default: return f(std::integral_constant<int, kE5M2FNUZ>{});
  }
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline unsigned grid_1d(int64_t n, int threads, int64_t cap = 65535LL * 16) {
  int64_t g = ceil_div(n, threads);
  if (g < 1) g = 1;
  if (g > cap) g = cap;
  return (unsigned)g;
}

// ------------------------------------------------------------------------------------------------
// device helpers
// ------------------------------------------------------------------------------------------------

#define KVQ_DI __device__ __forceinline__

/** Element of a cache/weight array as float32 (FP8: exact decoded value, unscaled). */
template <int DT>
KVQ_DI float load_elem(const void* p, int64_t i) {
  if constexpr (DT == kF32) {
    return static_cast<const float*>(p)[i];
  } else if constexpr (DT == kBF16) {
    return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
  } else if constexpr (DT == kF16) {
    return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
  } else {
    return fp8_decode<DT - kFp8E4M3FN>(static_cast<const uint8_t*>(p)[i]);
  }
}

/** Store a float32 into a cache array (FP8: encode(fround(x / scale)) satfinite). */
template <int DT>
KVQ_DI void store_elem(void* p, int64_t i, float x, float scale) {
  if constexpr (DT == kF32) {
    static_cast<float*>(p)[i] = x;
  } else if constexpr (DT == kBF16) {
    static_cast<uint16_t*>(p)[i] = f32_to_bf16(x);
  } else if constexpr (DT == kF16) {
    static_cast<uint16_t*>(p)[i] = f32_to_f16(x);
  } else {
    static_cast<uint8_t*>(p)[i] = (uint8_t)fp8_encode_bits<DT - kFp8E4M3FN, true>(f32_as_bits(x / scale));
  }
}

template <class T>
KVQ_DI T warp_sum(T v) {
#pragma unroll
  for (int o = KVQ_WARP / 2; o > 0; o >>= 1) v += KVQ_SHFL_XOR(v, o);
  return v;
}

/** Max ignoring NaN lanes unless all are NaN (fmaxf); callers handle NaN separately where it matters. */
KVQ_DI float warp_max(float v) {
#pragma unroll
  for (int o = KVQ_WARP / 2; o > 0; o >>= 1) v = fmaxf(v, KVQ_SHFL_XOR(v, o));
  return v;
}

KVQ_DI unsigned warp_max_u32(unsigned v) {
#pragma unroll
  for (int o = KVQ_WARP / 2; o > 0; o >>= 1) {
    const unsigned w = KVQ_SHFL_XOR(v, o);
    v = w > v ? w : v;
  }
  return v;
}

/** Sum over the block (any blockDim that is a multiple of the warp width, <= 1024). Result in every thread. */
template <class T>
KVQ_DI T block_sum(T v, T* shared /* >= 32 elements */) {
  const int lane = threadIdx.x % KVQ_WARP, warp = threadIdx.x / KVQ_WARP;
  const int nwarps = (blockDim.x + KVQ_WARP - 1) / KVQ_WARP;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  T r = 0;
  for (int i = 0; i < nwarps; i++) r += shared[i];
  return r;
}

/** Max over the block (fmaxf semantics). Result in every thread. */
KVQ_DI float block_max(float v, float* shared) {
  const int lane = threadIdx.x % KVQ_WARP, warp = threadIdx.x / KVQ_WARP;
  const int nwarps = (blockDim.x + KVQ_WARP - 1) / KVQ_WARP;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float r = shared[0];
  for (int i = 1; i < nwarps; i++) r = fmaxf(r, shared[i]);
  return r;
}

}  // namespace gpu
}  // namespace kvq

#endif  // KVQ_COMMON_CUH_
