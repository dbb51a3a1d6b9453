// SPDX-License-Identifier: Apache-2.0
//
// The interface between the N-API glue (addon.cc, compiled by the host C++ compiler, no vendor headers) and the
// GPU code (runtime.cu, ops.cu, attention.cu, compiled by nvcc or hipcc). Plain structs of host pointers and
// sizes; the GPU side copies inputs to device buffers, runs the kernels on the context's stream, copies outputs
// back and synchronizes, so every op is synchronous for the caller.
//
// `...Dev` pointers, when non-null, are resident device buffers (DeviceBuffer handles in the addon) used instead
// of uploading the matching host array. Host arrays are always valid and are kept up to date by cache writes.
//
// NOTE: the GPU side trusts these structs; addon.cc validates every size, index and array length first.
#ifndef KVQ_GPU_H_
#define KVQ_GPU_H_

#include <stddef.h>
#include <stdint.h>

namespace kvq {
namespace gpu {

/** Storage dtype codes (same numbers as @kvq/kernels-cpu's csrc/kernels.h; FP8 = kvq::Fp8Format + 3). */
enum DtypeCode : int {
  kF32 = 0,
  kBF16 = 1,
  kF16 = 2,
  kFp8E4M3FN = 3,
  kFp8E5M2 = 4,
  kFp8E4M3FNUZ = 5,
  kFp8E5M2FNUZ = 6,
};

inline size_t dtype_bytes(int dt) { return dt == kF32 ? 4 : (dt <= kF16 ? 2 : 1); }

/** Outcome of a GPU call. */
enum StatusCode : int { kOk = 0, kRuntimeError = 1, kOutOfMemory = 2, kUnsupported = 3, kNoDevice = 4 };

struct Status {
  int code = kOk;
  char message[768] = {0};
};

struct DeviceProps {
  int ordinal;
  char name[256];
  /** "sm_90" (NVIDIA) or the gcnArchName, e.g. "gfx942:sramecc+:xnack-" (AMD). */
  char arch[96];
  int major, minor;
  int multiProcessors;
  int warpSize;
  int64_t totalMemory;
  int64_t l2Bytes;
  int64_t sharedPerBlockOptin;
  int memoryClockKHz;
  int busWidthBits;
  /** 2 * memory clock * bus width / 8, in GB/s (10^9 bytes per second); 0 when the device does not say. */
  double peakBandwidthGBs;
};

struct RuntimeInfo {
  int runtimeVersion;
  int driverVersion;
  int deviceCount;
};

/** "cuda" or "hip". */
const char* vendor();
/** The device code targets this binary carries, e.g. "sm_80,sm_89,sm_90,compute_90" (set by the build). */
const char* compiled_targets();
/** Query the runtime and up to maxProps devices without creating a context. false + st when unusable. */
bool probe(RuntimeInfo* info, DeviceProps* props, int maxProps, int* nProps, Status* st);

struct Context;
Context* context_create(int device, Status* st);
void context_destroy(Context* ctx);
const DeviceProps& context_props(const Context* ctx);
/** "cublas" when cuBLAS was loaded for GEMMs, else "builtin"; why cuBLAS is not used (or ""). */
const char* context_gemm(const Context* ctx);
const char* context_gemm_note(const Context* ctx);
/** Free / total device memory in bytes. */
bool context_mem_info(Context* ctx, int64_t* freeBytes, int64_t* totalBytes, Status* st);

// ---- resident device buffers --------------------------------------------------------------------------------
void* buffer_alloc(Context* ctx, size_t bytes, Status* st);
void buffer_free(Context* ctx, void* p);
bool buffer_upload(Context* ctx, void* dst, const void* src, size_t bytes, Status* st);
bool buffer_download(Context* ctx, void* dst, const void* src, size_t bytes, Status* st);

// ---- ops ----------------------------------------------------------------------------------------------------
struct LinearArgs {
  const float* x;  // [rows, in]
  const void* w;   // [out, in] f32 / bf16 / f16 bits (host)
  const void* wDev;
  int wdtype;
  const float* bias;  // [out] or null
  float* y;           // [rows, out]
  int64_t rows, in, out;
};

struct RmsNormArgs {
  const float* x;
  const float* w;
  float* y;
  int64_t rows, hidden;
  float eps;
};

struct EltwiseArgs {
  const float* a;
  const float* b;
  float* y;
  int64_t n;
};

struct EmbeddingArgs {
  const void* table;  // [vocab, hidden] (host)
  const void* tableDev;
  int dtype;
  const int32_t* ids;
  float* y;
  int64_t numTokens, hidden, vocab;
};

struct RopeArgs {
  float* q;
  float* k;
  const int32_t* pos;
  const float* cos;  // [maxPositions, rotaryDim / 2]
  const float* sin;
  int64_t numTokens, maxPositions;
  int numHeads, numKvHeads, headSize, rotaryDim;
  bool interleaved;
};

struct SoftmaxArgs {
  const float* x;
  float* y;
  int64_t rows, cols;
};

/** A paged KV layer cache, [numBlocks, blockSize, numKvHeads, headSize] per pool. */
struct CacheRef {
  int dtype;
  void* k;  // host pools (always valid)
  void* v;
  void* kDev;  // resident device pools, or null
  void* vDev;
  int64_t numBlocks;
  int blockSize, numKvHeads, headSize;
  const float* kScale;  // FP8 only; length scaleLen (1 or numKvHeads)
  const float* vScale;
  int scaleLen;
};

struct CacheWriteArgs {
  const float* key;  // [numTokens, numKvHeads, headSize]
  const float* value;
  const int32_t* slots;  // [numTokens], < numBlocks * blockSize (negative = skip)
  int64_t numTokens;
  CacheRef cache;
};

struct AttentionArgs {
  const float* q;  // [numTokens, numHeads, headSize]
  float* out;
  CacheRef cache;
  const int32_t* qsl;      // [numSeqs + 1]
  const int32_t* seqLens;  // [numSeqs]
  const int32_t* blockTables;
  int maxBlocksPerSeq;
  int numSeqs, numHeads;
  float softmaxScale;
  int slidingWindow;       // 0 = none
  int fp8Query;            // 0 = off, 1 = satfinite, 2 = nosat
  const float* qScaleKv;   // [numKvHeads] (reduced over GQA groups); fp8Query only
};

struct AmaxArgs {
  const float* x;
  float* out;  // [numHeads]
  int64_t numTokens;
  int numHeads, headSize;
  bool accumulate;
};

/** Runs of `runLength` elements; run r uses scales[period ? r % period : r]. */
struct QuantArgs {
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

bool linear(Context* ctx, const LinearArgs& a, Status* st);
bool rms_norm(Context* ctx, const RmsNormArgs& a, Status* st);
bool add(Context* ctx, const EltwiseArgs& a, Status* st);
bool silu_and_mul(Context* ctx, const EltwiseArgs& a, Status* st);
bool embedding(Context* ctx, const EmbeddingArgs& a, Status* st);
bool rope(Context* ctx, const RopeArgs& a, Status* st);
bool softmax(Context* ctx, const SoftmaxArgs& a, Status* st);
bool reshape_and_cache(Context* ctx, const CacheWriteArgs& a, Status* st);
bool paged_attention(Context* ctx, const AttentionArgs& a, Status* st);
bool amax_tensor(Context* ctx, const float* x, int64_t n, float* result, Status* st);
bool amax_per_head(Context* ctx, const AmaxArgs& a, Status* st);
bool quantize_fp8(Context* ctx, const QuantArgs& a, Status* st);
bool dequantize_fp8(Context* ctx, const QuantArgs& a, Status* st);
/** Encode float32 bit patterns first..first+count-1 (no scale) on the device with csrc/fp8.h. */
bool encode_fp8_bits(Context* ctx, uint32_t first, int64_t count, uint8_t* out, int format, bool sat, Status* st);

// ---- device self-checks and benchmarks (gpu-check) ---------------------------------------------------------

/**
 * Compare csrc/fp8.h's encoder with the vendor's own conversion (CUDA: __nv_cvt_float_to_fp8, hardware cvt on
 * sm_89+) for all 2^32 float32 bit patterns, and the decoder for all 256 codes, on the device.
 * Unsupported (kUnsupported) where the vendor has no FP8 conversion for this format.
 */
struct Fp8VendorCheck {
  int format;  // kE4M3FN or kE5M2
  bool sat;
  uint64_t encodeMismatches;
  uint32_t firstEncodeMismatch;  // bit pattern, valid when encodeMismatches > 0
  uint32_t decodeMismatches;
  double ms;
};
bool fp8_vendor_check(Context* ctx, Fp8VendorCheck* c, Status* st);

/** Decode attention on device-resident random data (cache in shuffled blocks); times the kernel only. */
struct AttentionBench {
  int dtype;  // cache dtype
  int numSeqs, contextLen, numHeads, numKvHeads, headSize, blockSize;
  int fp8Query;
  int warmup, iters;
  // results
  double msMedian, msMin;
  double bytesMoved;  // K + V + q + out + block tables read / written once
  double gbps;        // bytesMoved / msMedian
  int splits;         // key splits per (sequence, kv head)
  uint64_t checksumBits;  // sum of output bit patterns (to see the runs computed something)
  bool finite;
};
bool bench_attention(Context* ctx, AttentionBench* b, Status* st);

/** Device-to-device copy of `bytes` (counting read + write), median GB/s over iters. */
bool bench_copy(Context* ctx, int64_t bytes, int iters, double* gbps, Status* st);

/** y = x W^T on device-resident random data: median ms of `iters` runs. */
bool bench_linear(Context* ctx, int wdtype, int64_t rows, int64_t in, int64_t out, int iters, bool useCublas,
                  double* msMedian, Status* st);

}  // namespace gpu
}  // namespace kvq

#endif  // KVQ_GPU_H_
