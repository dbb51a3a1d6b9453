// SPDX-License-Identifier: Apache-2.0
//
// The parameter structs of the kernel ops, defined once for every native backend: the CPU kernels of
// @kvq/kernels-cpu (csrc/kernels.h) and the GPU kernels of @kvq/kernels-cuda / -rocm (csrc/gpu.h, also compiled
// by the CUDA simulator). Plain structs of host pointers and sizes; no STL, no vendor or Node headers, so .cu
// files, the simulator and the ISA-specific CPU translation units can all include it.
//
// Filled by napi_args.h (the N-API argument readers of both addons), which validates every size, index and
// array length first: kernels trust these structs.
//
// `...Dev` pointers are resident device buffers of the GPU backends (null = upload the host array); the CPU
// kernels never read them.
//
// NOTE: the argument order the readers expect is the op's positional signature in @kvq/kernels/native
// (src/native/ops.ts); bump the ABI of both addons when a struct or signature changes.
#ifndef KVQ_OPS_H_
#define KVQ_OPS_H_

#include <stddef.h>
#include <stdint.h>

namespace kvq {

/** Storage dtype codes shared by weights and KV caches (FP8 formats are kvq::Fp8Format + 3; DTYPE_CODE in TS). */
enum DtypeCode : int {
  kF32 = 0,
  kBF16 = 1,
  kF16 = 2,
  kFp8E4M3FN = 3,
  kFp8E5M2 = 4,
  kFp8E4M3FNUZ = 5,
  kFp8E5M2FNUZ = 6,
};

/** Bytes of one element of a storage dtype. */
inline size_t dtype_bytes(int dt) { return dt == kF32 ? 4 : (dt <= kF16 ? 2 : 1); }

/** `linear`: y = x W^T (+ bias). */
struct LinearParams {
  const float* x;     // [rows, in]
  const void* w;      // [out, in], f32 / bf16 / f16 bits (host)
  const void* wDev;   // resident device copy of w, or null (GPU only)
  int wdtype;         // kF32 / kBF16 / kF16
  const float* bias;  // [out] or null
  float* y;           // [rows, out]
  int64_t rows, in, out;
};

/** `rmsNorm`: y = x / rms(x) * w, row by row. */
struct RmsNormParams {
  const float* x;   // [rows, hidden]
  const float* w;   // [hidden]
  float* y;         // [rows, hidden]; may alias x
  int64_t rows, hidden;
  float eps;
};

/** Element-wise ops of two inputs (`add`, `siluAndMul`). */
struct EltwiseParams {
  const float* a;
  const float* b;
  float* y;  // may alias a or b
  int64_t n;
};

/** `embedding`: y[t, :] = table[ids[t], :]. */
struct EmbeddingParams {
  const void* table;     // [vocab, hidden] (host)
  const void* tableDev;  // resident device copy, or null (GPU only)
  int dtype;
  const int32_t* ids;    // [numTokens], validated in [0, vocab)
  float* y;              // [numTokens, hidden]
  int64_t numTokens, hidden, vocab;
};

/** `rope`: rotate q and k in place. */
struct RopeParams {
  float* q;            // [numTokens, numHeads, headSize]
  float* k;            // [numTokens, numKvHeads, headSize]
  const int32_t* pos;  // [numTokens], validated < maxPositions
  const float* cos;    // [maxPositions, rotaryDim / 2]
  const float* sin;
  int64_t numTokens, maxPositions;
  int numHeads, numKvHeads, headSize, rotaryDim;
  bool interleaved;
};

/** `softmax`, row-wise. */
struct SoftmaxParams {
  const float* x;
  float* y;
  int64_t rows, cols;
};

/** `argmax`, row-wise: out[r] = the first index of the row's maximum (NaN counts as the maximum). */
struct ArgmaxParams {
  const float* x;  // [rows, cols]
  int32_t* out;    // [rows]
  int64_t rows, cols;
};

/** A paged KV layer cache, [numBlocks, blockSize, numKvHeads, headSize] per pool. */
struct KvCacheRef {
  int dtype;
  void* k;     // host pools (always valid)
  void* v;
  void* kDev;  // resident device pools, or null (GPU only)
  void* vDev;
  int64_t numBlocks;
  int blockSize, numKvHeads, headSize;
  const float* kScale;  // FP8 only; length scaleLen (1 or numKvHeads)
  const float* vScale;
  int scaleLen;
};

/** `reshapeAndCache`. */
struct CacheWriteParams {
  const float* key;      // [numTokens, numKvHeads, headSize]
  const float* value;
  const int32_t* slots;  // [numTokens], < numBlocks * blockSize (negative = skip)
  int64_t numTokens;
  KvCacheRef cache;
};

/** `pagedAttention`. */
struct AttentionParams {
  const float* q;  // [numTokens, numHeads, headSize]
  float* out;
  KvCacheRef cache;
  const int32_t* qsl;      // [numSeqs + 1]
  const int32_t* seqLens;  // [numSeqs]
  const int32_t* blockTables;
  int maxBlocksPerSeq;
  int numSeqs, numHeads;
  float softmaxScale;
  int slidingWindow;      // 0 = none
  int fp8Query;           // 0 = off, 1 = satfinite, 2 = nosat
  const float* qScaleKv;  // [numKvHeads] (already reduced over GQA groups); fp8Query only
};

/** `amaxPerHead`. */
struct AmaxParams {
  const float* x;
  float* out;  // [numHeads]
  int64_t numTokens;
  int numHeads, headSize;
  bool accumulate;
};

/** `quantizeFp8` / `dequantizeFp8`: runs of `runLength` elements; run r uses scales[period ? r % period : r]. */
struct QuantParams {
  const float* src;
  uint8_t* codes;
  float* dst;
  int64_t n;
  const float* scales;
  int64_t numScales;
  int64_t runLength, period;
  int format;  // kvq::Fp8Format
  bool sat;
};

}  // namespace kvq

/**
 * The ops with the standard native shape, registered from this one list by every addon and kernel table: the JS
 * method name, the CPU kernel (a `KernelTable` member of @kvq/kernels-cpu, `int fn(const P&, const Runner&)`), the
 * GPU entry point (`bool fn(gpu::Context*, const P&, gpu::Status*)` of csrc/gpu.h), the parameter struct, and its
 * N-API reader (csrc/napi_args.h). Adding such an op: its struct and a line here, its reader, its CPU and GPU
 * kernels, and the TypeScript side (contract, validation, reference, @kvq/kernels/native).
 * Ops with extra arguments (resident buffers, async twins, backend limits) are registered by hand in each addon.
 */
#define KVQ_STANDARD_OPS(X)                                                   \
  X("rmsNorm", rmsNorm, rms_norm, RmsNormParams, readRmsNorm)                 \
  X("add", add, add, EltwiseParams, readAdd)                                  \
  X("siluAndMul", siluAndMul, silu_and_mul, EltwiseParams, readSiluAndMul)    \
  X("rope", rope, rope, RopeParams, readRope)                                 \
  X("softmax", softmax, softmax, SoftmaxParams, readSoftmax)                  \
  X("argmax", argmax, argmax, ArgmaxParams, readArgmax)

#endif  // KVQ_OPS_H_
