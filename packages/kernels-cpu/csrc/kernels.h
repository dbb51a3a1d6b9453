// SPDX-License-Identifier: Apache-2.0
//
// The interface between the N-API glue (addon.cc, compiled for baseline x86-64) and the kernels, which are
// compiled once per ISA (kernels_scalar.cc, kernels_avx2.cc, kernels_avx512.cc) from kernels_impl.h.
// Plain C structs of pointers and sizes: no STL crosses this boundary, so the ISA translation units never
// instantiate a template another TU could pick up with the wrong instruction set.
//
// NOTE: kernels trust these structs. The glue validates every size, index and array length before calling.
#ifndef KVQ_KERNELS_H_
#define KVQ_KERNELS_H_

#include <stddef.h>
#include <stdint.h>

namespace kvq {

/** Storage dtype codes shared by weights and KV caches (FP8 formats are kvq::Fp8Format + 3). */
enum DtypeCode : int {
  kF32 = 0,
  kBF16 = 1,
  kF16 = 2,
  kFp8E4M3FN = 3,
  kFp8E5M2 = 4,
  kFp8E4M3FNUZ = 5,
  kFp8E5M2FNUZ = 6,
};

/** Status codes a kernel returns. */
enum Status : int { kOk = 0, kOutOfMemory = 1 };

/**
 * Parallel executor handed to kernels (implemented by the thread pool, type-erased so kernels need no STL).
 * `run(self, n, fn, ctx)` calls fn(ctx, i, tid) for every i in [0, n), spread over `threads` threads
 * (tid in [0, threads)), and returns when all calls have returned.
 * `scratch(self, tid)` is the calling thread's scratch buffer, at least the size last reserved.
 */
struct Runner {
  void* self;
  int threads;
  void (*run)(void* self, int64_t n, void (*fn)(void* ctx, int64_t i, int tid), void* ctx);
  /** Make every thread's scratch at least `bytes` (64-byte aligned). Returns false when out of memory. */
  bool (*reserve)(void* self, size_t bytes);
  void* (*scratch)(void* self, int tid);

  template <class F>
  void parallel_for(int64_t n, F& f) const {
    run(self, n, [](void* c, int64_t i, int tid) { (*static_cast<F*>(c))(i, tid); }, &f);
  }
};

struct LinearParams {
  const float* x;      // [rows, in]
  const void* w;       // [out, in], f32 / bf16 / f16 bits
  int wdtype;          // kF32 / kBF16 / kF16
  const float* bias;   // [out] or null
  float* y;            // [rows, out]
  int64_t rows, in, out;
};

struct RmsNormParams {
  const float* x;
  const float* w;
  float* y;
  int64_t rows, hidden;
  float eps;
};

struct EltwiseParams {
  const float* a;
  const float* b;
  float* y;
  int64_t n;
};

struct EmbeddingParams {
  const void* table;   // [vocab, hidden]
  int dtype;
  const int32_t* ids;  // [numTokens], validated in range
  float* y;            // [numTokens, hidden]
  int64_t numTokens, hidden;
};

struct RopeParams {
  float* q;              // [numTokens, numHeads, headSize]
  float* k;              // [numTokens, numKvHeads, headSize]
  const int32_t* pos;    // [numTokens], validated < maxPositions
  const float* cos;      // [maxPositions, rotaryDim/2]
  const float* sin;
  int64_t numTokens;
  int numHeads, numKvHeads, headSize, rotaryDim;
  bool interleaved;
};

struct SoftmaxParams {
  const float* x;
  float* y;
  int64_t rows, cols;
};

/** A paged KV layer cache, [numBlocks, blockSize, numKvHeads, headSize] per pool. */
struct KvCacheRef {
  int dtype;
  void* k;
  void* v;
  int64_t numBlocks;
  int blockSize, numKvHeads, headSize;
  const float* kScale;  // FP8 only; length scaleLen (1 or numKvHeads)
  const float* vScale;
  int scaleLen;
};

struct CacheWriteParams {
  const float* key;        // [numTokens, numKvHeads, headSize]
  const float* value;
  const int32_t* slots;    // [numTokens], < numBlocks*blockSize (negative = skip)
  int64_t numTokens;
  KvCacheRef cache;
};

struct AttentionParams {
  const float* q;          // [numTokens, numHeads, headSize]
  float* out;
  KvCacheRef cache;
  const int32_t* qsl;      // [numSeqs + 1]
  const int32_t* seqLens;  // [numSeqs]
  const int32_t* blockTables;
  int maxBlocksPerSeq;
  int numSeqs, numHeads;
  float softmaxScale;
  int slidingWindow;       // 0 = none
  int fp8Query;            // 0 = off, 1 = satfinite, 2 = nosat
  const float* qScaleKv;   // [numKvHeads] (already reduced over GQA groups); fp8Query only
};

struct AmaxParams {
  const float* x;
  float* out;              // per head (amaxPerHead)
  int64_t numTokens;
  int numHeads, headSize;
  bool accumulate;
};

/** Runs of `runLength` elements; run r uses scales[period ? r % period : r]. */
struct QuantParams {
  const float* src;
  uint8_t* codes;
  float* dst;
  int64_t n;
  const float* scales;
  int64_t runLength, period;
  int format;  // kvq::Fp8Format
  bool sat;
};

/** The kernels of one ISA. */
struct KernelTable {
  const char* isa;
  int vectorWidth;
  int (*linear)(const LinearParams&, const Runner&);
  int (*rmsNorm)(const RmsNormParams&, const Runner&);
  int (*add)(const EltwiseParams&, const Runner&);
  int (*siluAndMul)(const EltwiseParams&, const Runner&);
  int (*embedding)(const EmbeddingParams&, const Runner&);
  int (*rope)(const RopeParams&, const Runner&);
  int (*softmax)(const SoftmaxParams&, const Runner&);
  int (*reshapeAndCache)(const CacheWriteParams&, const Runner&);
  int (*pagedAttention)(const AttentionParams&, const Runner&);
  float (*amaxTensor)(const float* x, int64_t n, const Runner&);
  int (*amaxPerHead)(const AmaxParams&, const Runner&);
  int (*quantizeFp8)(const QuantParams&, const Runner&);
  int (*dequantizeFp8)(const QuantParams&, const Runner&);
  /** Encode float32 bit patterns first..first+count-1 (no scale) — the CUDA-oracle check. */
  int (*encodeFp8Bits)(uint32_t first, int64_t count, uint8_t* out, int format, bool sat, const Runner&);
};

const KernelTable* kernels_scalar();
#if defined(__x86_64__) || defined(_M_X64)
const KernelTable* kernels_avx2();
const KernelTable* kernels_avx512();
#endif

}  // namespace kvq

#endif  // KVQ_KERNELS_H_
