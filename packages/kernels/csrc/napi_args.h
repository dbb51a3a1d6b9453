// SPDX-License-Identifier: Apache-2.0
//
// The N-API argument readers of every native kvq addon (@kvq/kernels-cpu's and the GPU addon of
// @kvq/kernels-cuda / -rocm, simulator included): each op's positional arguments (typed arrays zero-copy, sizes,
// dtype and format codes) checked and unpacked into the op's parameter struct (ops.h). They are the second line
// of defence behind the TypeScript facade (@kvq/kernels/native), so a direct call with bad input throws a JS
// `Error` with `code` (a KernelErrorCode string) and `argument` instead of crashing.
//
// Host only: include it from the addon glue (addon.cc), never from kernels or .cu files. Needs node-addon-api
// with C++ exceptions (NODE_ADDON_API_CPP_EXCEPTIONS).
//
// Positional signatures (indices into info[]) are those of `NativeKernelOps` in src/native/ops.ts; resident
// device buffers of the GPU addon come after them and are read by that addon.
#ifndef KVQ_NAPI_ARGS_H_
#define KVQ_NAPI_ARGS_H_

#include <napi.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "fp8.h"
#include "ops.h"

namespace kvq {
namespace napi_args {

/**
 * ABI of the shared op signatures (and of each addon's own methods): bumped whenever a reader's argument order or a
 * method signature changes, together with NATIVE_ABI in src/native/ops.ts. The facades refuse a mismatching binary.
 */
constexpr int kAbi = 5;

/** Throw a JS Error with `code` and (when not empty) `argument`. */
[[noreturn]] inline void fail(Napi::Env env, const char* code, const std::string& argument, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  if (!argument.empty()) e.Set("argument", Napi::String::New(env, argument));
  throw e;
}

inline const char* typedArrayName(napi_typedarray_type t) {
  switch (t) {
    case napi_int8_array: return "Int8Array";
    case napi_uint8_array: return "Uint8Array";
    case napi_uint8_clamped_array: return "Uint8ClampedArray";
    case napi_int16_array: return "Int16Array";
    case napi_uint16_array: return "Uint16Array";
    case napi_int32_array: return "Int32Array";
    case napi_uint32_array: return "Uint32Array";
    case napi_float32_array: return "Float32Array";
    case napi_float64_array: return "Float64Array";
    case napi_bigint64_array: return "BigInt64Array";
    case napi_biguint64_array: return "BigUint64Array";
    default: return "typed array";
  }
}

template <class T>
struct ArrayOf;
template <>
struct ArrayOf<float> {
  static constexpr napi_typedarray_type kind = napi_float32_array;
};
template <>
struct ArrayOf<uint16_t> {
  static constexpr napi_typedarray_type kind = napi_uint16_array;
};
template <>
struct ArrayOf<uint8_t> {
  static constexpr napi_typedarray_type kind = napi_uint8_array;
};
template <>
struct ArrayOf<int8_t> {
  static constexpr napi_typedarray_type kind = napi_int8_array;
};
template <>
struct ArrayOf<int32_t> {
  static constexpr napi_typedarray_type kind = napi_int32_array;
};
template <>
struct ArrayOf<double> {
  static constexpr napi_typedarray_type kind = napi_float64_array;
};

/** Typed array argument `i` of element type T with at least `need` elements (or, when exact, exactly). */
template <class T>
T* arrayArg(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t need, bool exact = false,
            int64_t* lengthOut = nullptr) {
  napi_env env = info.Env();
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  if (i >= info.Length() || napi_get_typedarray_info(env, info[i], &type, &length, &data, nullptr, nullptr) != napi_ok) {
    fail(info.Env(), "WRONG_ARRAY_TYPE", name, std::string(name) + " must be a " + typedArrayName(ArrayOf<T>::kind));
  }
  if (type != ArrayOf<T>::kind) {
    fail(info.Env(), "WRONG_ARRAY_TYPE", name,
         std::string(name) + " must be a " + typedArrayName(ArrayOf<T>::kind) + ", got " + typedArrayName(type));
  }
  if ((int64_t)length < need || (exact && (int64_t)length != need)) {
    fail(info.Env(), "SHAPE_MISMATCH", name,
         std::string(name) + " has " + std::to_string(length) + " elements but the stated shape needs " +
             (exact ? "exactly " : "") + std::to_string(need));
  }
  if (lengthOut) *lengthOut = (int64_t)length;
  if (length == 0) {
    static T empty[1];
    return empty;
  }
  return static_cast<T*>(data);
}

/**
 * Hook of an addon whose ops accept device-resident arrays in place of typed arrays (the GPU addon sets it in its
 * module init; the CPU addon never does): for a JS value that is not a typed array, returns the device pointer of the
 * array it stands for, with `*kind` its element type and `*length` its element count, or nullptr when the value is
 * no such array. The GPU runtime recognizes those pointers (they are its own allocations) and neither uploads nor
 * downloads them.
 */
using DeviceArrayResolver = void* (*)(napi_env env, napi_value value, napi_typedarray_type* kind, size_t* length);
inline DeviceArrayResolver& deviceArrayResolver() {
  static DeviceArrayResolver resolver = nullptr;
  return resolver;
}

/**
 * An activation argument: a typed array as in arrayArg, or (in an addon with a device-array resolver) a device
 * array of the same element type, checked the same way (kind, then length).
 */
template <class T>
T* activationArg(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t need, bool exact = false) {
  DeviceArrayResolver resolve = deviceArrayResolver();
  if (resolve != nullptr && i < info.Length() && !info[i].IsTypedArray()) {
    napi_typedarray_type kind;
    size_t length = 0;
    void* p = resolve(info.Env(), info[i], &kind, &length);
    if (p != nullptr) {
      if (kind != ArrayOf<T>::kind) {
        fail(info.Env(), "WRONG_ARRAY_TYPE", name,
             std::string(name) + " must be a " + typedArrayName(ArrayOf<T>::kind) + " (host or device), got a device " + typedArrayName(kind));
      }
      if ((int64_t)length < need || (exact && (int64_t)length != need)) {
        fail(info.Env(), "SHAPE_MISMATCH", name,
             std::string(name) + " (device) has " + std::to_string(length) + " elements but the stated shape needs " +
                 (exact ? "exactly " : "") + std::to_string(need));
      }
      return static_cast<T*>(p);
    }
  }
  return arrayArg<T>(info, i, name, need, exact);
}

/** Like arrayArg but `null` / `undefined` give nullptr. */
template <class T>
T* optionalArrayArg(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t need) {
  if (i >= info.Length() || info[i].IsNull() || info[i].IsUndefined()) return nullptr;
  return arrayArg<T>(info, i, name, need);
}

/** Integer argument in [lo, hi]. */
inline int64_t intArg(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t lo, int64_t hi = INT32_MAX) {
  if (i >= info.Length() || !info[i].IsNumber()) fail(info.Env(), "INVALID_ARGUMENT", name, std::string(name) + " must be a number");
  const double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v >= (double)lo && v <= (double)hi) || v != std::floor(v)) {
    fail(info.Env(), "INVALID_ARGUMENT", name,
         std::string(name) + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return (int64_t)v;
}

inline double numberArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsNumber()) fail(info.Env(), "INVALID_ARGUMENT", name, std::string(name) + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

inline bool boolArg(const Napi::CallbackInfo& info, size_t i) { return i < info.Length() && info[i].ToBoolean().Value(); }

/** Checked product of non-negative sizes (rejects anything past 2^53). */
inline int64_t mul(const Napi::CallbackInfo& info, const char* what, std::initializer_list<int64_t> xs) {
  double p = 1;
  int64_t r = 1;
  for (int64_t x : xs) {
    p *= (double)x;
    r *= x;
  }
  if (p > 9007199254740991.0) fail(info.Env(), "INVALID_ARGUMENT", what, std::string(what) + " is too large");
  return r;
}

/**
 * Every index v[t], t < n, in [lo, hi); else OUT_OF_RANGE naming `name[t]`, its value and `where` ("... is outside
 * <where>").
 */
inline void checkIndexes(const Napi::CallbackInfo& info, const int32_t* v, int64_t n, const char* name, int64_t lo, int64_t hi,
                         const char* where) {
  for (int64_t t = 0; t < n; t++) {
    if (v[t] < lo || v[t] >= hi) {
      const std::string a = std::string(name) + "[" + std::to_string(t) + "]";
      fail(info.Env(), "OUT_OF_RANGE", a, a + " = " + std::to_string(v[t]) + " is outside " + where);
    }
  }
}

inline void checkScales(const Napi::CallbackInfo& info, const float* s, int64_t n, const char* name) {
  for (int64_t i = 0; i < n; i++) {
    if (!(s[i] > 0.0f) || !std::isfinite(s[i])) {
      fail(info.Env(), "INVALID_SCALE", std::string(name) + "[" + std::to_string(i) + "]",
           std::string(name) + "[" + std::to_string(i) + "] must be finite and > 0, got " + std::to_string(s[i]));
    }
  }
}

}  // namespace napi_args
}  // namespace kvq

// The readers of the standard ops (KVQ_STANDARD_OPS) live beside their structs in ops.h, compiled there only when
// KVQ_NAPI_READERS is defined, i.e. here, after the argument helpers above.
#define KVQ_NAPI_READERS 1
#include "ops.h"  // NOLINT(build/include): second inclusion, for its N-API readers

namespace kvq {
namespace napi_args {

// ---- readers of the ops every addon registers by hand (resident buffers, async twins, backend limits) ---------

/**
 * The cache fields at info[i..i+8]: dtype, key, value, numBlocks, blockSize, numKvHeads, headSize, kScale, vScale.
 * `dtype` is the K pool's KV dtype code, or for a cache whose V pool has another dtype the packed code
 * `kCode | ((vCode + 1) << 8)` (nativeKvCacheCode in src/native/ops.ts; a plain code = both pools). Each pool is checked
 * against its own dtype: array kind and exact length (Float32Array / Uint16Array / Uint8Array of
 * numBlocks*blockSize*numKvHeads*headSize elements, or for the write-time-scaled dtypes a byte pool of
 * numBlocks x kv_quant_layout().blockBytes). Scales are read for the pools that use them: an FP8 pool's scale has
 * length 1 or numKvHeads (kScale and vScale of equal lengths when both pools are FP8), an nvfp4 pool's exactly 1
 * (its tensor scale); their entries finite and > 0.
 * `kvQuant`: whether the calling addon has kernels for the write-time-scaled KV dtypes (codes 32..40); an addon
 * without them answers UNSUPPORTED for those codes. `mixed`: whether it has kernels for caches whose K and V dtypes
 * differ; an addon without them answers UNSUPPORTED on `cache.valueDtype`.
 */
inline KvCacheRef readCache(const Napi::CallbackInfo& info, size_t i, bool kvQuant = false, bool mixed = false) {
  const Napi::Env env = info.Env();
  KvCacheRef c{};
  const int64_t packed = intArg(info, i, "cache.dtype", kF32, kKvInt4G32F16 | ((int64_t)(kKvInt4G32F16 + 1) << 8));
  c.dtype = (int)(packed & 0xFF);
  c.vdtype = packed >> 8 == 0 ? c.dtype : (int)(packed >> 8) - 1;
  // Each code a KV dtype this addon has kernels for.
  auto checkCode = [&](int dt, const char* arg) {
    const bool q = is_kv_quant_dtype(dt);
    if ((dt < kF32 || dt > kFp8E5M2FNUZ) && !q) {
      fail(env, "INVALID_ARGUMENT", arg, std::string(arg) + " = " + std::to_string(dt) + " is not a KV dtype code");
    }
    if (q && !kvQuant) {
      fail(env, "UNSUPPORTED", arg, "KV-cache dtype code " + std::to_string(dt) + " (scaled when written) has no kernels in this backend");
    }
  };
  checkCode(c.dtype, "cache.dtype");
  if (c.vdtype != c.dtype) {
    checkCode(c.vdtype, "cache.valueDtype");
    if (!mixed) {
      fail(env, "UNSUPPORTED", "cache.valueDtype",
           "a cache whose V pool (dtype code " + std::to_string(c.vdtype) + ") differs from its K pool (dtype code " +
               std::to_string(c.dtype) + ") has no kernels in this backend");
    }
  }
  c.numBlocks = intArg(info, i + 3, "cache.numBlocks", 1, INT32_MAX);
  c.blockSize = (int)intArg(info, i + 4, "cache.blockSize", 1, INT32_MAX);
  c.numKvHeads = (int)intArg(info, i + 5, "cache.numKvHeads", 1, INT32_MAX);
  c.headSize = (int)intArg(info, i + 6, "cache.headSize", 1, INT32_MAX);
  // One pool: its array kind and exact length follow its dtype.
  auto readPool = [&](int dt, size_t at, const char* name) -> void* {
    if (is_kv_quant_dtype(dt)) {
      KvQuantLayout l;
      mul(info, "cache", {c.blockSize, c.numKvHeads, c.headSize});
      if (!kv_quant_layout(dt, c.blockSize, c.numKvHeads, c.headSize, &l)) {
        fail(env, "INVALID_ARGUMENT", "cache.headSize",
             "cache.headSize = " + std::to_string(c.headSize) + " does not fit KV dtype code " + std::to_string(dt));
      }
      return arrayArg<uint8_t>(info, at, name, mul(info, "cache", {c.numBlocks, l.blockBytes}), true);
    }
    const int64_t n = mul(info, "cache", {c.numBlocks, c.blockSize, c.numKvHeads, c.headSize});
    if (dt == kF32) return arrayArg<float>(info, at, name, n, true);
    if (dt == kBF16 || dt == kF16) return arrayArg<uint16_t>(info, at, name, n, true);
    return arrayArg<uint8_t>(info, at, name, n, true);
  };
  c.k = readPool(c.dtype, i + 1, "cache.key");
  c.v = readPool(c.vdtype, i + 2, "cache.value");
  const bool kFp8 = c.dtype >= kFp8E4M3FN && c.dtype <= kFp8E5M2FNUZ, vFp8 = c.vdtype >= kFp8E4M3FN && c.vdtype <= kFp8E5M2FNUZ;
  if (c.dtype == c.vdtype) {
    if (c.dtype == kKvNvfp4) {
      c.kScale = arrayArg<float>(info, i + 7, "cache.kScale", 1, true);
      c.vScale = arrayArg<float>(info, i + 8, "cache.vScale", 1, true);
      checkScales(info, c.kScale, 1, "cache.kScale");
      checkScales(info, c.vScale, 1, "cache.vScale");
      c.scaleLen = 1;
    } else if (kFp8) {
      int64_t kl = 0, vl = 0;
      c.kScale = arrayArg<float>(info, i + 7, "cache.kScale", 1, false, &kl);
      c.vScale = arrayArg<float>(info, i + 8, "cache.vScale", 1, false, &vl);
      if ((kl != 1 && kl != c.numKvHeads) || vl != kl) {
        fail(env, "INVALID_SCALE", "cache.kScale", "cache.kScale and cache.vScale must both have length 1 or numKvHeads");
      }
      checkScales(info, c.kScale, kl, "cache.kScale");
      checkScales(info, c.vScale, vl, "cache.vScale");
      c.scaleLen = (int)kl;
    }
    return c;
  }
  // A mixed cache: each pool's scales as its dtype needs them.
  int64_t lens[2] = {0, 0};
  const int dts[2] = {c.dtype, c.vdtype};
  const char* names[2] = {"cache.kScale", "cache.vScale"};
  const float* scales[2] = {nullptr, nullptr};
  for (int pi = 0; pi < 2; pi++) {
    const int dt = dts[pi];
    if (dt == kKvNvfp4) {
      scales[pi] = arrayArg<float>(info, i + 7 + pi, names[pi], 1, true, &lens[pi]);
    } else if (dt >= kFp8E4M3FN && dt <= kFp8E5M2FNUZ) {
      scales[pi] = arrayArg<float>(info, i + 7 + pi, names[pi], 1, false, &lens[pi]);
      if (lens[pi] != 1 && lens[pi] != c.numKvHeads) {
        fail(env, "INVALID_SCALE", names[pi], std::string(names[pi]) + " must have length 1 or numKvHeads");
      }
    } else {
      continue;
    }
    checkScales(info, scales[pi], lens[pi], names[pi]);
  }
  if (kFp8 && vFp8 && lens[0] != lens[1]) {
    fail(env, "INVALID_SCALE", "cache.vScale", "cache.kScale and cache.vScale must have the same length (1 or numKvHeads)");
  }
  c.kScale = scales[0];
  c.vScale = scales[1];
  c.scaleLen = (int)(kFp8 ? lens[0] : vFp8 ? lens[1] : (lens[0] | lens[1]) != 0 ? 1 : 0);
  return c;
}

/**
 * Positional arguments of a weight: info[i..i+6] = (data, dtype, rows, cols, scale|null, zeroPoint|null, groupSize).
 * The data array kind follows the dtype (Float32Array for f32; Uint16Array for bf16 / f16; Int8Array for int8;
 * Uint8Array for the GGML blocks, fp8 codes and packed int4) and its length must be exactly the stored bytes
 * (elements); `scale` (compressed-tensors dtypes only) has length 1 or rows (fp8_e4m3, int8) or rows * cols /
 * groupSize (int4), `zeroPoint` (int4 only, optional) rows * cols / groupSize. Every other combination is refused,
 * so kernels never read out of bounds.
 */
constexpr size_t kWeightArgc = 7;
inline WeightRef readWeight(const Napi::CallbackInfo& info, size_t i, const std::string& name) {
  const Napi::Env env = info.Env();
  const std::string dn = name + ".dtype", rn = name + ".rows", cn = name + ".cols", an = name + ".data";
  const std::string sn = name + ".scale", zn = name + ".zeroPoint", gn = name + ".groupSize";
  WeightRef w{};
  w.dtype = (int)intArg(info, i + 1, dn.c_str(), kF32, kWInt4);
  if (!is_weight_dtype(w.dtype)) fail(env, "INVALID_ARGUMENT", dn, dn + " = " + std::to_string(w.dtype) + " is not a weight dtype code");
  w.rows = intArg(info, i + 2, rn.c_str(), 1);
  w.cols = intArg(info, i + 3, cn.c_str(), 1);
  const int64_t rowBytes = weight_row_bytes(w.dtype, w.cols);
  if (rowBytes < 0) {
    fail(env, "SHAPE_MISMATCH", cn,
         cn + " = " + std::to_string(w.cols) + " must be a multiple of " +
             std::to_string(w.dtype == kWInt4 ? 2 : weight_block_elems(w.dtype)) + " for dtype code " + std::to_string(w.dtype));
  }
  const int64_t rb = mul(info, name.c_str(), {w.rows, rowBytes});
  const int64_t elems = mul(info, name.c_str(), {w.rows, w.cols});
  switch (w.dtype) {
    case kF32: w.data = arrayArg<float>(info, i, an.c_str(), elems, true); break;
    case kBF16:
    case kF16: w.data = arrayArg<uint16_t>(info, i, an.c_str(), elems, true); break;
    case kWInt8: w.data = arrayArg<int8_t>(info, i, an.c_str(), rb, true); break;
    default: w.data = arrayArg<uint8_t>(info, i, an.c_str(), rb, true); break;
  }
  const bool hasScale = w.dtype >= kWFp8E4M3;
  const bool argScale = i + 4 < info.Length() && !info[i + 4].IsNull() && !info[i + 4].IsUndefined();
  const bool argZero = i + 5 < info.Length() && !info[i + 5].IsNull() && !info[i + 5].IsUndefined();
  if (!hasScale) {
    if (argScale) fail(env, "INVALID_ARGUMENT", sn, sn + " is only used by the compressed-tensors dtypes (fp8_e4m3, int8, int4)");
    if (argZero) fail(env, "INVALID_ARGUMENT", zn, zn + " is only used by int4");
    return w;
  }
  if (!argScale) fail(env, "INVALID_SCALE", sn, sn + " is required for dtype code " + std::to_string(w.dtype));
  w.scale = arrayArg<float>(info, i + 4, sn.c_str(), 1, false, &w.scale_len);
  if (w.dtype == kWInt4) {
    w.group_size = intArg(info, i + 6, gn.c_str(), 1);
    if (w.cols % w.group_size != 0) {
      fail(env, "SHAPE_MISMATCH", gn, gn + " = " + std::to_string(w.group_size) + " does not divide " + cn + " = " + std::to_string(w.cols));
    }
    const int64_t groups = mul(info, sn.c_str(), {w.rows, w.cols / w.group_size});
    if (w.scale_len != groups) {
      fail(env, "SHAPE_MISMATCH", sn, sn + " has " + std::to_string(w.scale_len) + " elements but rows * cols / groupSize = " + std::to_string(groups));
    }
    if (argZero) w.zero_point = arrayArg<int8_t>(info, i + 5, zn.c_str(), groups, true);
  } else {
    if (w.scale_len != 1 && w.scale_len != w.rows) {
      fail(env, "SHAPE_MISMATCH", sn, sn + " has " + std::to_string(w.scale_len) + " elements but must have 1 or rows = " + std::to_string(w.rows));
    }
    if (argZero) fail(env, "INVALID_ARGUMENT", zn, zn + " is only used by int4");
  }
  return w;
}

/**
 * linear(x, rows, weight (2..8: see readWeight), bias|null, out, activations (0 float32, 1 q8: GGML and int8 weights, 2 q16: int4),
 * activationScale (int8 weights with q8: the static scale, or 0 = dynamic)); arguments past kLinearArgc are the
 * addon's own.
 */
constexpr size_t kLinearArgc = 2 + kWeightArgc + 4;
inline LinearParams readLinear(const Napi::CallbackInfo& info) {
  LinearParams p{};
  p.rows = intArg(info, 1, "rows", 1);
  p.w = readWeight(info, 2, "weight");
  p.in = p.w.cols;
  p.out = p.w.rows;
  p.x = activationArg<float>(info, 0, "x", mul(info, "x", {p.rows, p.in}));
  p.bias = optionalArrayArg<float>(info, 2 + kWeightArgc, "bias", p.out);
  p.y = activationArg<float>(info, 3 + kWeightArgc, "out", mul(info, "out", {p.rows, p.out}));
  p.xq = (int)intArg(info, 4 + kWeightArgc, "activations", 0, 2);
  if (p.xq == 1 && !is_ggml_dtype(p.w.dtype) && p.w.dtype != kWInt8) {
    fail(info.Env(), "INVALID_ARGUMENT", "activations", "activations 'q8' (code 1) needs a GGML or int8 weight dtype, got dtype code " + std::to_string(p.w.dtype));
  }
  if (p.xq == 2 && p.w.dtype != kWInt4) {
    fail(info.Env(), "INVALID_ARGUMENT", "activations", "activations 'q16' (code 2) needs an int4 weight dtype, got dtype code " + std::to_string(p.w.dtype));
  }
  const double xs = numberArg(info, 5 + kWeightArgc, "activationScale");
  const float xf = (float)xs;
  if (xs != 0 && (!(xf > 0) || !(xf <= 3.402823466e38f) || !p.xq || p.w.dtype != kWInt8)) {
    fail(info.Env(), "INVALID_ARGUMENT", "activationScale", "activationScale must be 0 (dynamic) or a finite float32 > 0 with activations 'q8' on an int8 weight");
  }
  p.xScale = xf;
  return p;
}

/** embedding(table (0..6: see readWeight), ids, out, numTokens); arguments past kEmbeddingArgc are the addon's own. */
constexpr size_t kEmbeddingArgc = kWeightArgc + 3;
inline EmbeddingParams readEmbedding(const Napi::CallbackInfo& info) {
  EmbeddingParams p{};
  p.table = readWeight(info, 0, "table");
  p.vocab = p.table.rows;
  p.hidden = p.table.cols;
  p.numTokens = intArg(info, kWeightArgc + 2, "numTokens", 0);
  p.ids = arrayArg<int32_t>(info, kWeightArgc, "ids", p.numTokens);
  p.y = activationArg<float>(info, kWeightArgc + 1, "out", mul(info, "out", {p.numTokens, p.hidden}));
  checkIndexes(info, p.ids, p.numTokens, "ids", 0, p.vocab, "the table");
  return p;
}

/** reshapeAndCache(key, value, slotMapping, numTokens, cache (4..12)); `kvQuant` and `mixed` as in readCache. */
inline CacheWriteParams readCacheWrite(const Napi::CallbackInfo& info, bool kvQuant = false, bool mixed = false) {
  CacheWriteParams p{};
  p.cache = readCache(info, 4, kvQuant, mixed);
  p.numTokens = intArg(info, 3, "numTokens", 0);
  const int64_t n = mul(info, "key", {p.numTokens, p.cache.numKvHeads, p.cache.headSize});
  p.key = activationArg<float>(info, 0, "key", n);
  p.value = activationArg<float>(info, 1, "value", n);
  p.slots = arrayArg<int32_t>(info, 2, "slotMapping", p.numTokens);
  // Negative slots are skipped (padding), so only the upper bound is checked.
  checkIndexes(info, p.slots, p.numTokens, "slotMapping", INT32_MIN, p.cache.numBlocks * p.cache.blockSize, "the cache's slots");
  return p;
}

/** pagedAttention's parameters plus the storage its `qScaleKv` points into (keep them together). */
struct AttentionInput {
  AttentionParams p{};
  std::vector<float> qScaleKv;
};

/**
 * pagedAttention(query, out, cache (2..10), queryStartLoc, seqLens, blockTables, maxBlocksPerSeq, numSeqs, numHeads,
 * softmaxScale, slidingWindow, fp8Query (0 off, 1 satfinite, 2 nosat), qScale). Fills `a` in place (so `p.qScaleKv`
 * points into `a.qScaleKv`; re-point it after copying `a`). `kvQuant` and `mixed` as in readCache; the FP8 query
 * needs a uniform FP8 cache.
 */
inline void readAttention(const Napi::CallbackInfo& info, AttentionInput& a, bool kvQuant = false, bool mixed = false) {
  AttentionParams& p = a.p;
  p.cache = readCache(info, 2, kvQuant, mixed);
  const KvCacheRef& c = p.cache;
  p.maxBlocksPerSeq = (int)intArg(info, 14, "maxBlocksPerSeq", 1);
  p.numSeqs = (int)intArg(info, 15, "numSeqs", 1);
  p.numHeads = (int)intArg(info, 16, "numHeads", 1);
  if (p.numHeads % c.numKvHeads != 0) {
    fail(info.Env(), "SHAPE_MISMATCH", "numHeads", "numHeads must be a multiple of cache.numKvHeads");
  }
  const double scale = numberArg(info, 17, "softmaxScale");
  if (!(scale > 0) || !std::isfinite(scale) || !std::isfinite((float)scale)) {
    fail(info.Env(), "INVALID_ARGUMENT", "softmaxScale", "softmaxScale must be finite and > 0");
  }
  p.softmaxScale = (float)scale;
  p.slidingWindow = (int)intArg(info, 18, "slidingWindow", 0);
  p.fp8Query = (int)intArg(info, 19, "fp8Query", 0, 2);
  p.qsl = arrayArg<int32_t>(info, 11, "queryStartLoc", (int64_t)p.numSeqs + 1);
  p.seqLens = arrayArg<int32_t>(info, 12, "seqLens", p.numSeqs);
  p.blockTables = arrayArg<int32_t>(info, 13, "blockTables", mul(info, "blockTables", {p.numSeqs, p.maxBlocksPerSeq}));
  if (p.qsl[0] != 0) fail(info.Env(), "INVALID_ARGUMENT", "queryStartLoc[0]", "queryStartLoc[0] must be 0");
  for (int s = 0; s < p.numSeqs; s++) {
    const int64_t qLen = (int64_t)p.qsl[s + 1] - p.qsl[s];
    const std::string idx = std::to_string(s);
    if (qLen < 0) fail(info.Env(), "INVALID_ARGUMENT", "queryStartLoc[" + std::to_string(s + 1) + "]", "queryStartLoc must be non-decreasing");
    if (p.seqLens[s] < qLen) fail(info.Env(), "INVALID_ARGUMENT", "seqLens[" + idx + "]", "seqLens[" + idx + "] is less than the query length");
    const int64_t blocks = ((int64_t)p.seqLens[s] + c.blockSize - 1) / c.blockSize;
    if (blocks > p.maxBlocksPerSeq) fail(info.Env(), "OUT_OF_RANGE", "seqLens[" + idx + "]", "seqLens[" + idx + "] needs more than maxBlocksPerSeq blocks");
    for (int64_t b = 0; b < blocks; b++) {
      const int64_t e = (int64_t)s * p.maxBlocksPerSeq + b;
      const int32_t id = p.blockTables[e];
      if (id < 0 || id >= c.numBlocks) {
        fail(info.Env(), "OUT_OF_RANGE", "blockTables[" + std::to_string(e) + "]",
             "blockTables[" + std::to_string(e) + "] = " + std::to_string(id) + " is outside the cache's blocks");
      }
    }
  }
  const int64_t numTokens = p.qsl[p.numSeqs];
  const int64_t qn = mul(info, "query", {numTokens, p.numHeads, c.headSize});
  p.q = activationArg<float>(info, 0, "query", qn);
  p.out = activationArg<float>(info, 1, "out", qn);
  if (p.fp8Query != 0) {
    if (c.dtype < kFp8E4M3FN || c.dtype > kFp8E5M2FNUZ) fail(info.Env(), "INVALID_ARGUMENT", "fp8Query", "fp8Query needs an FP8 cache");
    if (c.vdtype != c.dtype) {
      fail(info.Env(), "INVALID_ARGUMENT", "fp8Query", "fp8Query needs K and V in one FP8 dtype (cache.valueDtype differs from cache.dtype)");
    }
    int64_t ql = 0;
    const float* qs = arrayArg<float>(info, 20, "cache.qScale", 1, false, &ql);
    if (ql != 1 && ql != p.numHeads) fail(info.Env(), "INVALID_SCALE", "cache.qScale", "cache.qScale must have length 1 or numHeads");
    checkScales(info, qs, ql, "cache.qScale");
    const int g = p.numHeads / c.numKvHeads;
    a.qScaleKv.assign((size_t)c.numKvHeads, 0.0f);
    for (int h = 0; h < c.numKvHeads; h++) {
      float m = qs[0];
      if (ql != 1) {
        m = qs[h * g];
        for (int i = 1; i < g; i++) m = qs[h * g + i] > m ? qs[h * g + i] : m;
      }
      a.qScaleKv[(size_t)h] = m;
    }
    p.qScaleKv = a.qScaleKv.data();
  }
  // 21: lse (Float32Array [numTokens, numHeads]) or null.
  if (info.Length() > 21 && !info[21].IsNull() && !info[21].IsUndefined()) {
    p.lse = arrayArg<float>(info, 21, "lse", mul(info, "lse", {numTokens, p.numHeads}));
  }
}

/** amaxTensor(x, length): returns x; `*n` = length. */
inline const float* readAmaxTensor(const Napi::CallbackInfo& info, int64_t* n) {
  *n = intArg(info, 1, "length", 0, INT64_C(1) << 50);
  return arrayArg<float>(info, 0, "x", *n);
}

/** amaxPerHead(x, out, numTokens, numHeads, headSize, accumulate); `maxHeads` is the backend's limit. */
inline AmaxParams readAmaxPerHead(const Napi::CallbackInfo& info, int64_t maxHeads = INT32_MAX) {
  AmaxParams p{};
  p.numTokens = intArg(info, 2, "numTokens", 0);
  p.numHeads = (int)intArg(info, 3, "numHeads", 1, maxHeads);
  p.headSize = (int)intArg(info, 4, "headSize", 1);
  p.x = arrayArg<float>(info, 0, "x", mul(info, "x", {p.numTokens, p.numHeads, p.headSize}));
  p.out = arrayArg<float>(info, 1, "out", p.numHeads);
  p.accumulate = boolArg(info, 5);
  return p;
}

/**
 * quantizeFp8(src f32, out u8, length, scales, runLength, period, format, saturate) or
 * dequantizeFp8(src u8, out f32, length, scales, runLength, period, format).
 */
inline QuantParams readQuant(const Napi::CallbackInfo& info, bool quantize) {
  QuantParams p{};
  p.n = intArg(info, 2, "length", 0, INT64_C(1) << 50);
  p.runLength = intArg(info, 4, "runLength", 1, INT64_C(1) << 50);
  p.period = intArg(info, 5, "period", 0, INT64_C(1) << 50);
  p.format = (int)intArg(info, 6, "format", kE4M3FN, kE5M2FNUZ);
  p.sat = quantize ? boolArg(info, 7) : true;
  if (quantize) {
    p.src = arrayArg<float>(info, 0, "src", p.n);
    p.codes = arrayArg<uint8_t>(info, 1, "out", p.n);
  } else {
    p.codes = arrayArg<uint8_t>(info, 0, "src", p.n);
    p.dst = arrayArg<float>(info, 1, "out", p.n);
  }
  const int64_t runs = p.n == 0 ? 0 : (p.n + p.runLength - 1) / p.runLength;
  const int64_t needScales = p.period ? (runs < p.period ? (runs == 0 ? 1 : runs) : p.period) : (runs == 0 ? 1 : runs);
  p.scales = arrayArg<float>(info, 3, "scales", needScales);
  checkScales(info, p.scales, needScales, "scales");
  p.numScales = needScales;
  return p;
}

/** encodeFp8Bits(firstBits, count, out, format, saturate). */
struct EncodeBitsParams {
  uint32_t first;
  int64_t count;
  uint8_t* out;
  int format;
  bool sat;
};
inline EncodeBitsParams readEncodeBits(const Napi::CallbackInfo& info) {
  EncodeBitsParams p{};
  const int64_t first = intArg(info, 0, "firstBits", 0, INT64_C(0xFFFFFFFF));
  p.first = (uint32_t)first;
  p.count = intArg(info, 1, "count", 0, INT64_C(0x100000000) - first);
  p.out = arrayArg<uint8_t>(info, 2, "out", p.count);
  p.format = (int)intArg(info, 3, "format", kE4M3FN, kE5M2FNUZ);
  p.sat = boolArg(info, 4);
  return p;
}

}  // namespace napi_args
}  // namespace kvq

/**
 * The `InstanceMethod` entries of the kernel ops every addon's `Context` class has (the class must be called
 * `Context`): the standard ops of ops.h as its `Op_<cpuFn>` methods (KVQ_NAPI_STANDARD_METHODS defines them), and
 * the ops each addon implements by hand under these names (their extra arguments differ). Use inside
 * `DefineClass(env, "Context", { ..., KVQ_NAPI_KERNEL_METHODS })`.
 */
#define KVQ_NAPI_REGISTER_STANDARD(js, cpuFn, gpuFn, P, read) InstanceMethod<&Context::Op_##cpuFn>(js),
#define KVQ_NAPI_KERNEL_METHODS                                                                              \
  InstanceMethod<&Context::Linear>("linear"), InstanceMethod<&Context::Embedding>("embedding"),              \
      InstanceMethod<&Context::ReshapeAndCache>("reshapeAndCache"),                                          \
      InstanceMethod<&Context::PagedAttention>("pagedAttention"),                                            \
      InstanceMethod<&Context::AmaxTensor>("amaxTensor"), InstanceMethod<&Context::AmaxPerHead>("amaxPerHead"), \
      InstanceMethod<&Context::QuantizeFp8>("quantizeFp8"),                                                  \
      InstanceMethod<&Context::DequantizeFp8>("dequantizeFp8"),                                              \
      InstanceMethod<&Context::EncodeFp8Bits>("encodeFp8Bits"), KVQ_STANDARD_OPS(KVQ_NAPI_REGISTER_STANDARD)

#endif  // KVQ_NAPI_ARGS_H_
