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

// Dtype codes (kF32 ... kFp8E5M2FNUZ), dtype_bytes() and the op parameter structs, shared with @kvq/kernels-cpu.
#include "ops.h"

namespace kvq {
namespace gpu {

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
/**
 * Host<->device traffic of a context since it was created: out[0] host->device bytes, out[1] device->host bytes,
 * out[2] / out[3] the number of copies each way (every cudaMemcpy of inputs, outputs and resident uploads/downloads),
 * out[4] the number of times the host waited for the device (op results, reads).
 */
void transfer_stats(const Context* ctx, uint64_t out[5]);

// ---- resident device buffers --------------------------------------------------------------------------------
void* buffer_alloc(Context* ctx, size_t bytes, Status* st);
void buffer_free(Context* ctx, void* p);
bool buffer_upload(Context* ctx, void* dst, const void* src, size_t bytes, Status* st);
bool buffer_download(Context* ctx, void* dst, const void* src, size_t bytes, Status* st);
/** Device -> device copy, queued on the context stream. */
bool buffer_copy(Context* ctx, void* dst, const void* src, size_t bytes, Status* st);

// ---- ops ----------------------------------------------------------------------------------------------------
// The op parameter structs are @kvq/kernels' csrc/ops.h (one definition for the CPU and the GPU kernels); the
// GPU code knows them by these names.
using LinearArgs = kvq::LinearParams;
using RmsNormArgs = kvq::RmsNormParams;
using EltwiseArgs = kvq::EltwiseParams;
using EmbeddingArgs = kvq::EmbeddingParams;
using RopeArgs = kvq::RopeParams;
using SoftmaxArgs = kvq::SoftmaxParams;
using CacheRef = kvq::KvCacheRef;
using CacheWriteArgs = kvq::CacheWriteParams;
using AttentionArgs = kvq::AttentionParams;
using AmaxArgs = kvq::AmaxParams;
using QuantArgs = kvq::QuantParams;

/**
 * Resident device copies of a compressed-tensors weight's `scale` (float32) and int4 `zero_point` (int8) arrays,
 * next to LinearArgs::wDev / EmbeddingArgs::tableDev (the block bytes); null = upload the host array per call.
 */
struct WeightAuxDev {
  const void* scale = nullptr;
  const void* zeroPoint = nullptr;
};

/** y = x W^T (+ bias) for every weight dtype (dense, GGML blocks, compressed-tensors; quantized: wquant.cu). */
bool linear(Context* ctx, const LinearArgs& a, Status* st, const WeightAuxDev& aux = WeightAuxDev{});
// The standard ops of ops.h (KVQ_STANDARD_OPS), with their gpuFn names (rms_norm, add, silu_and_mul, ...).
#define KVQ_GPU_DECLARE(js, cpuFn, gpuFn, P, read) bool gpuFn(Context* ctx, const P& a, Status* st);
KVQ_STANDARD_OPS(KVQ_GPU_DECLARE)
#undef KVQ_GPU_DECLARE
/** y[t] = table[ids[t]] as float32 for every weight dtype (quantized: bit-exact with the reference, wquant.cu). */
bool embedding(Context* ctx, const EmbeddingArgs& a, Status* st, const WeightAuxDev& aux = WeightAuxDev{});
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
