// SPDX-License-Identifier: Apache-2.0
//
// The parameter structs of the kernel ops, defined once for every native backend: the CPU kernels of
// @kvq/kernels-cpu (csrc/kernels.h) and the GPU kernels of @kvq/kernels-cuda / -rocm (csrc/gpu.h, also compiled
// by the CUDA simulator). Plain structs of host pointers and sizes; no STL, no vendor or Node headers, so .cu
// files, the simulator and the ISA-specific CPU translation units can all include it.
//
// Filled by the N-API argument readers of both addons, which validate every size, index and array length first:
// kernels trust these structs. The readers of the standard ops (KVQ_STANDARD_OPS) are at the end of this file,
// compiled only inside napi_args.h (which includes this file a second time with KVQ_NAPI_READERS defined, after
// its argument helpers); the others are in napi_args.h.
//
// `...Dev` pointers are resident device buffers of the GPU backends (null = upload the host array); the CPU
// kernels never read them.
//
// NOTE: the argument order a reader expects is the op's positional signature: for a standard op, what its entry
// of STANDARD_NATIVE_OPS (src/validate.ts) returns; for the others, NativeKernelOps in src/native/ops.ts. Bump
// the ABI (napi_args.h kAbi, NATIVE_ABI) when a struct or signature changes.
#ifndef KVQ_OPS_H_
#define KVQ_OPS_H_

#include <stddef.h>
#include <stdint.h>

namespace kvq {

/**
 * Storage dtype codes shared by weights and KV caches (FP8 KV formats are kvq::Fp8Format + 3; DTYPE_CODE in TS).
 * Codes 16..26 are weight-only: GGML blocks (raw, as stored in GGUF files) and the compressed-tensors types
 * (block layouts and semantics: docs/spec/quantized-weights.md; the TS side: WeightDtype in src/contract.ts).
 */
enum DtypeCode : int {
  kF32 = 0,
  kBF16 = 1,
  kF16 = 2,
  kFp8E4M3FN = 3,
  kFp8E5M2 = 4,
  kFp8E4M3FNUZ = 5,
  kFp8E5M2FNUZ = 6,
  // GGML block types: `data` = rows x (cols / blockElems) blocks, rows contiguous, little-endian.
  kQ8_0 = 16,  // 32 elems, 34 bytes: f16 d, int8 qs[32]
  kQ4_0 = 17,  // 32 elems, 18 bytes: f16 d, qs[16] (nibbles, minus 8)
  kQ4_1 = 18,  // 32 elems, 20 bytes: f16 d, f16 m, qs[16]
  kQ5_0 = 19,  // 32 elems, 22 bytes: f16 d, qh[4], qs[16] (5-bit, minus 16)
  kQ5_1 = 20,  // 32 elems, 24 bytes: f16 d, f16 m, qh[4], qs[16]
  kQ4_K = 21,  // 256 elems, 144 bytes: f16 d, f16 dmin, scales[12], qs[128]
  kQ5_K = 22,  // 256 elems, 176 bytes: f16 d, f16 dmin, scales[12], qh[32], qs[128]
  kQ6_K = 23,  // 256 elems, 210 bytes: ql[128], qh[64], int8 scales[16], f16 d
  // compressed-tensors types (scale / zero_point / group_size in WeightRef).
  kWFp8E4M3 = 24,  // e4m3fn codes [rows, cols]; scale [1] or [rows]
  kWInt8 = 25,     // int8 [rows, cols]; scale [1] or [rows]
  kWInt4 = 26,     // packed nibbles [rows, cols / 2] (element 2j low, unsigned q + 8); scale [rows, cols / group]
  // KV-cache dtypes scaled when written (docs/spec/kv-dtypes.md; `KV_QUANT_DTYPE_CODE` in src/native/ops.ts): byte
  // pools of whole blocks, each block its codes then its scales (kv_quant_layout). Only backends that declare them
  // (the CPU addon) accept these codes; the others answer UNSUPPORTED.
  kKvFp8PerTokenHead = 32,   // e4m3fn codes, float32 scale per token per kv head
  kKvInt8PerTokenHead = 33,  // int8 codes -127..127, float32 scale per token per kv head
  kKvInt4PerTokenHead = 34,  // two's complement nibbles -7..7 (element 2i low), float32 scale per token per kv head
  kKvInt4G16 = 35,           // nibbles, float32 scale per 16 values
  kKvInt4G32 = 36,           // nibbles, float32 scale per 32 values
  kKvInt4G64 = 37,           // nibbles, float32 scale per 64 values
  kKvNvfp4 = 38,             // E2M1 nibbles, E4M3FN scale per 16 values, float32 per-tensor scale (kScale[0] / vScale[0])
  kKvQ4_0 = 39,              // nibbles -8..7 (ggml q4_0's values), f16 scale per 32 values
  kKvInt4G32F16 = 40,        // the same storage, kvq's scale rule (both extremes fit, nearest codes)
};

/** Whether `dt` is a write-time-scaled KV dtype (kKvFp8PerTokenHead..kKvInt4G32F16). */
constexpr bool is_kv_quant_dtype(int dt) { return dt >= kKvFp8PerTokenHead && dt <= kKvInt4G32F16; }

/** Whether a write-time-scaled KV dtype stores f16 scales per 32 values (q4_0, int4_g32_f16: the same decode). */
constexpr bool is_kv_f16_scaled(int dt) { return dt == kKvQ4_0 || dt == kKvInt4G32F16; }

/** Byte layout of one block of one pool of a write-time-scaled KV dtype (`@kvq/cache` `kvBlockLayout`). */
struct KvQuantLayout {
  int groupSize;         // values per scale (headSize for the *_per_token_head dtypes)
  int groupsPerHead;     // headSize / groupSize
  int bits;              // 8 or 4 bits per code
  int codeBytesPerHead;  // headSize or headSize / 2
  int scaleBytes;        // 4 (float32 little-endian), 2 (f16 little-endian, q4_0 / int4_g32_f16) or 1 (E4M3FN, nvfp4)
  int64_t scalesOffset;  // code bytes of a block, padded to a multiple of 4
  int64_t blockBytes;    // scales end, padded to a multiple of 4
};

/**
 * The block layout of write-time-scaled KV dtype `dt` (docs/spec/kv-dtypes.md §3); false (and `*l` untouched) when
 * `dt` is not such a dtype or `headSize` does not fit it (not a multiple of the group size, odd for 4-bit).
 */
inline bool kv_quant_layout(int dt, int64_t blockSize, int64_t numKvHeads, int64_t headSize, KvQuantLayout* l) {
  if (!is_kv_quant_dtype(dt) || headSize < 1) return false;
  const int64_t g = dt == kKvInt4G16 || dt == kKvNvfp4 ? 16 : dt == kKvInt4G32 || is_kv_f16_scaled(dt) ? 32 : dt == kKvInt4G64 ? 64 : headSize;
  const int bits = dt == kKvFp8PerTokenHead || dt == kKvInt8PerTokenHead ? 8 : 4;
  if (headSize % g != 0 || (bits == 4 && headSize % 2 != 0)) return false;
  KvQuantLayout r;
  r.groupSize = (int)g;
  r.groupsPerHead = (int)(headSize / g);
  r.bits = bits;
  r.codeBytesPerHead = (int)(bits == 8 ? headSize : headSize / 2);
  r.scaleBytes = dt == kKvNvfp4 ? 1 : is_kv_f16_scaled(dt) ? 2 : 4;
  r.scalesOffset = (blockSize * numKvHeads * r.codeBytesPerHead + 3) / 4 * 4;
  r.blockBytes = (r.scalesOffset + blockSize * numKvHeads * r.groupsPerHead * r.scaleBytes + 3) / 4 * 4;
  *l = r;
  return true;
}

/** Bytes of one element of a dense or FP8 KV dtype (codes 0..6). */
inline size_t dtype_bytes(int dt) { return dt == kF32 ? 4 : (dt <= kF16 ? 2 : 1); }

/** Whether `dt` is a GGML block type (kQ8_0..kQ6_K). */
inline bool is_ggml_dtype(int dt) { return dt >= kQ8_0 && dt <= kQ6_K; }

/** Whether `dt` is a weight dtype: dense (kF32..kF16), GGML or compressed-tensors. */
inline bool is_weight_dtype(int dt) { return (dt >= kF32 && dt <= kF16) || (dt >= kQ8_0 && dt <= kWInt4); }

/** Elements per block of a GGML dtype (32, or 256 for the K-quants); 1 for every other dtype. */
inline int64_t weight_block_elems(int dt) { return dt >= kQ4_K && dt <= kQ6_K ? 256 : (is_ggml_dtype(dt) ? 32 : 1); }

/** Bytes per block of a GGML dtype, else bytes per element (int4: see weight_row_bytes). */
inline int64_t weight_block_bytes(int dt) {
  switch (dt) {
    case kQ8_0: return 34;
    case kQ4_0: return 18;
    case kQ4_1: return 20;
    case kQ5_0: return 22;
    case kQ5_1: return 24;
    case kQ4_K: return 144;
    case kQ5_K: return 176;
    case kQ6_K: return 210;
    case kF32: return 4;
    case kBF16:
    case kF16: return 2;
    default: return 1;
  }
}

/**
 * Bytes of one stored row of `cols` columns of weight dtype `dt`, or -1 when `cols` does not fit the dtype (not a
 * multiple of the GGML block size, or odd for int4).
 */
inline int64_t weight_row_bytes(int dt, int64_t cols) {
  if (dt == kWInt4) return cols % 2 == 0 ? cols / 2 : -1;
  const int64_t be = weight_block_elems(dt);
  if (cols % be != 0) return -1;
  return cols / be * weight_block_bytes(dt);
}

/**
 * A weight matrix `[rows, cols]` (linear: [out, in]; embedding: [vocab, hidden]) in its stored form: kernels compute
 * on it directly (never a dequantized copy of the whole matrix).
 * NOTE: filled by napi_args.h's readWeight, which checks every length below; kernels trust it.
 */
struct WeightRef {
  const void* data;          // dense elements, GGML blocks, fp8 codes, int8 values or packed int4 nibbles
  int dtype;                 // DtypeCode: kF32/kBF16/kF16, or kQ8_0=16,kQ4_0=17,kQ4_1=18,kQ5_0=19,kQ5_1=20,
                             //   kQ4_K=21,kQ5_K=22,kQ6_K=23,kWFp8E4M3=24,kWInt8=25,kWInt4=26
  int64_t rows, cols;        // [out, in]
  const float* scale;        // compressed-tensors dtypes ([1] / [rows] / [rows, cols/group]); else nullptr
  int64_t scale_len;
  const int8_t* zero_point;  // int4 asymmetric [rows, cols/group], or nullptr
  int64_t group_size;        // int4: columns per group; else 0
};

/** Bytes of a weight's `data`: rows * weight_row_bytes(dtype, cols). */
inline int64_t weight_data_bytes(const WeightRef& w) { return w.rows * weight_row_bytes(w.dtype, w.cols); }

/** `linear`: y = x W^T (+ bias). */
struct LinearParams {
  const float* x;     // [rows, in]
  WeightRef w;        // [out, in], any weight dtype (host); w.rows == out, w.cols == in
  const void* wDev;   // resident device copy of w.data, or null (GPU only)
  const float* bias;  // [out] or null
  float* y;           // [rows, out]
  int64_t rows, in, out;
  int xq;             // activations: 0 = float32, 1 = 8-bit round trip (act_q8.h; GGML weights: GGML's blocks,
                      // int8 weights: compressed-tensors W8A8 per-row int8), 2 = 16-bit blocks of 128 (int4 weights)
  float xScale;       // int8 weights with xq: the static activation scale (> 0), or 0 = dynamic per-row scales
};

/** `rmsNorm`: y = x / rms(x) * w, row by row. */
struct RmsNormParams {
  const float* x;   // [rows, hidden]
  const float* w;   // [hidden]
  float* y;         // [rows, hidden]; may alias x
  int64_t rows, hidden;
  float eps;
};

/** Element-wise ops of two inputs (`add`, `siluAndMul`, `geluTanhAndMul`). */
struct EltwiseParams {
  const float* a;
  const float* b;
  float* y;  // may alias a or b
  int64_t n;
};

/** `embedding`: y[t, :] = table[ids[t], :], dequantized to float32. */
struct EmbeddingParams {
  WeightRef table;       // [vocab, hidden], any weight dtype (host); table.rows == vocab, table.cols == hidden
  const void* tableDev;  // resident device copy of table.data, or null (GPU only)
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

/**
 * A paged KV layer cache, [numBlocks, blockSize, numKvHeads, headSize] per pool. K and V may be stored in different
 * KV dtypes (`dtype` for the K pool, `vdtype` for the V pool; equal for a uniform cache): each pool then has its own
 * layout (kv_quant_layout of its dtype, or dtype_bytes per element) and is written and read exactly as a uniform
 * cache of its dtype would be (K with kScale, V with vScale). Only addons that declare mixed kernels accept such a
 * cache (napi_args.h readCache); the others see `vdtype == dtype` always.
 */
struct KvCacheRef {
  int dtype;   // DtypeCode of the K pool (and of the V pool of a uniform cache)
  int vdtype;  // DtypeCode of the V pool: == dtype for a uniform cache
  void* k;     // host pools (always valid)
  void* v;
  void* kDev;  // resident device pools, or null (GPU only)
  void* vDev;
  int deviceOnly;  // GPU: the resident pools are the only copy; writes leave the host pools as they are
  int64_t numBlocks;
  int blockSize, numKvHeads, headSize;
  const float* kScale;  // an FP8 K pool: length scaleLen (1 or numKvHeads); an nvfp4 K pool: the tensor scale, [0]; else unused
  const float* vScale;  // the same for the V pool (its own dtype)
  int scaleLen;         // length of the FP8 pools' scales (both pools FP8: kScale and vScale have this length)
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
  float* lse = nullptr;   // optional [numTokens, numHeads]: ln(sum_j e^score_j) per query row
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
 * N-API reader (the end of this file). Adding such an op touches six files: here its struct (or an existing one),
 * its line below and its reader; its CPU kernel (kernels-cpu csrc/kernels_impl.h) and GPU kernel (kernels-cuda
 * csrc/ops.cu); and in TypeScript its contract (src/contract.ts), its validation and positional arguments
 * (src/validate.ts, STANDARD_NATIVE_OPS) and its reference (src/reference/backend.ts). Every addon, kernel table
 * and native backend class registers it from these lists.
 * Ops with extra arguments (resident buffers, async twins, backend limits) are registered by hand in each addon.
 */
#define KVQ_STANDARD_OPS(X)                                                   \
  X("rmsNorm", rmsNorm, rms_norm, RmsNormParams, readRmsNorm)                 \
  X("add", add, add, EltwiseParams, readAdd)                                  \
  X("siluAndMul", siluAndMul, silu_and_mul, EltwiseParams, readSiluAndMul)    \
  X("geluTanhAndMul", geluTanhAndMul, gelu_tanh_and_mul, EltwiseParams, readGeluTanhAndMul) \
  X("rope", rope, rope, RopeParams, readRope)                                 \
  X("softmax", softmax, softmax, SoftmaxParams, readSoftmax)                  \
  X("argmax", argmax, argmax, ArgmaxParams, readArgmax)

#endif  // KVQ_OPS_H_

// ---- N-API readers of the standard ops -----------------------------------------------------------------------
// Each reads the op's positional arguments (the tuple its STANDARD_NATIVE_OPS entry in src/validate.ts returns),
// checks every size, index and length, and fills the op's struct; a bad argument throws a JS Error with `code` and
// `argument`. Compiled only inside napi_args.h (node-addon-api and its argument helpers).
#if defined(KVQ_NAPI_READERS) && !defined(KVQ_OPS_READERS_)
#define KVQ_OPS_READERS_

namespace kvq {
namespace napi_args {

/** rmsNorm(x, weight, out, rows, hidden, eps). */
inline RmsNormParams readRmsNorm(const Napi::CallbackInfo& info) {
  RmsNormParams p{};
  p.rows = intArg(info, 3, "rows", 1);
  p.hidden = intArg(info, 4, "hidden", 1);
  const int64_t n = mul(info, "x", {p.rows, p.hidden});
  p.x = activationArg<float>(info, 0, "x", n);
  p.w = arrayArg<float>(info, 1, "weight", p.hidden);
  p.y = activationArg<float>(info, 2, "out", n);
  const double eps = numberArg(info, 5, "eps");
  if (!(eps >= 0) || !std::isfinite(eps)) fail(info.Env(), "INVALID_ARGUMENT", "eps", "eps must be finite and >= 0");
  p.eps = (float)eps;
  return p;
}

/** add(a, b, out, length) / siluAndMul(gate, up, out, length): `a` and `b` name the inputs in messages. */
inline EltwiseParams readEltwise(const Napi::CallbackInfo& info, const char* a, const char* b) {
  EltwiseParams p{};
  p.n = intArg(info, 3, "length", 0, INT64_C(1) << 50);
  p.a = activationArg<float>(info, 0, a, p.n);
  p.b = activationArg<float>(info, 1, b, p.n);
  p.y = activationArg<float>(info, 2, "out", p.n);
  return p;
}

/** add(a, b, out, length). */
inline EltwiseParams readAdd(const Napi::CallbackInfo& info) { return readEltwise(info, "a", "b"); }

/** siluAndMul(gate, up, out, length). */
inline EltwiseParams readSiluAndMul(const Napi::CallbackInfo& info) { return readEltwise(info, "gate", "up"); }

/** geluTanhAndMul(gate, up, out, length). */
inline EltwiseParams readGeluTanhAndMul(const Napi::CallbackInfo& info) { return readEltwise(info, "gate", "up"); }

/** rope(query, key, positions, numTokens, numHeads, numKvHeads, headSize, rotaryDim, maxPositions, cos, sin, interleaved). */
inline RopeParams readRope(const Napi::CallbackInfo& info) {
  RopeParams p{};
  p.numTokens = intArg(info, 3, "numTokens", 0);
  p.numHeads = (int)intArg(info, 4, "numHeads", 1);
  p.numKvHeads = (int)intArg(info, 5, "numKvHeads", 1);
  p.headSize = (int)intArg(info, 6, "headSize", 2);
  p.rotaryDim = (int)intArg(info, 7, "table.rotaryDim", 2, p.headSize);
  if (p.rotaryDim % 2 != 0) fail(info.Env(), "INVALID_ARGUMENT", "table.rotaryDim", "table.rotaryDim must be even");
  p.maxPositions = intArg(info, 8, "table.maxPositions", 1);
  p.q = activationArg<float>(info, 0, "query", mul(info, "query", {p.numTokens, p.numHeads, p.headSize}));
  p.k = activationArg<float>(info, 1, "key", mul(info, "key", {p.numTokens, p.numKvHeads, p.headSize}));
  p.pos = arrayArg<int32_t>(info, 2, "positions", p.numTokens);
  const int64_t tn = mul(info, "table", {p.maxPositions, p.rotaryDim / 2});
  // The table may be resident on a GPU (a device array of the addon with a resolver): it never changes.
  p.cos = activationArg<float>(info, 9, "table.cos", tn);
  p.sin = activationArg<float>(info, 10, "table.sin", tn);
  p.interleaved = boolArg(info, 11);
  checkIndexes(info, p.pos, p.numTokens, "positions", 0, p.maxPositions, "the rope table");
  return p;
}

/** softmax(x, out, rows, cols). */
inline SoftmaxParams readSoftmax(const Napi::CallbackInfo& info) {
  SoftmaxParams p{};
  p.rows = intArg(info, 2, "rows", 0);
  p.cols = intArg(info, 3, "cols", 1);
  const int64_t n = mul(info, "x", {p.rows, p.cols});
  p.x = activationArg<float>(info, 0, "x", n);
  p.y = activationArg<float>(info, 1, "out", n);
  return p;
}

/** argmax(x, out, rows, cols). */
inline ArgmaxParams readArgmax(const Napi::CallbackInfo& info) {
  ArgmaxParams p{};
  p.rows = intArg(info, 2, "rows", 0);
  p.cols = intArg(info, 3, "cols", 1);
  p.x = activationArg<float>(info, 0, "x", mul(info, "x", {p.rows, p.cols}));
  p.out = arrayArg<int32_t>(info, 1, "out", p.rows);
  return p;
}

}  // namespace napi_args
}  // namespace kvq

#endif  // KVQ_NAPI_READERS
