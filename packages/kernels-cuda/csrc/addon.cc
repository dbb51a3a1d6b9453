// SPDX-License-Identifier: Apache-2.0
//
// N-API glue of @kvq/kernels-cuda and @kvq/kernels-rocm (the same file, linked with the CUDA or the HIP build of
// the kernels). Vendor neutral: no CUDA / HIP header is included here; everything GPU goes through gpu.h.
//
// - `probe()`: runtime and device properties without creating a context (what the child-process probe calls).
// - `Context`: one device, stream and set of scratch buffers; methods take typed arrays and positional numbers
//   (the same signatures as @kvq/kernels-cpu's addon, plus optional resident DeviceBuffers), re-check every length,
//   index and kind (second line of defence behind the TypeScript facade), copy to the device, run, copy back.
// - `DeviceBuffer`: device memory holding a copy of a typed array (resident weights / caches), freed when
//   garbage-collected or on `free()`; it keeps its context alive.
//
// The shape of this module is declared once in src/addon-types.ts; keep them in sync (bump kAbi on change).
// Errors are JS `Error`s with `code` (a KernelErrorCode string) and `argument` properties.
#include <napi.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gpu.h"

namespace kvq {
namespace {

using gpu::Status;

/** Bumped whenever the method signatures below change; the facade refuses a mismatching binary. */
constexpr int kAbi = 1;

// ---- argument helpers ---------------------------------------------------------------------------------------

[[noreturn]] void fail(Napi::Env env, const char* code, const std::string& argument, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  if (!argument.empty()) e.Set("argument", Napi::String::New(env, argument));
  throw e;
}

[[noreturn]] void failStatus(Napi::Env env, const Status& st, const char* op) {
  const char* code = "BACKEND_UNAVAILABLE";
  if (st.code == gpu::kOutOfMemory || st.code == gpu::kUnsupported) code = "UNSUPPORTED";
  fail(env, code, "", std::string(op) + ": " + st.message);
}

const char* typedArrayName(napi_typedarray_type t) {
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
struct ArrayOf<int32_t> {
  static constexpr napi_typedarray_type kind = napi_int32_array;
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

template <class T>
T* optionalArrayArg(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t need) {
  if (i >= info.Length() || info[i].IsNull() || info[i].IsUndefined()) return nullptr;
  return arrayArg<T>(info, i, name, need);
}

int64_t intArg(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t lo, int64_t hi = INT32_MAX) {
  if (i >= info.Length() || !info[i].IsNumber()) fail(info.Env(), "INVALID_ARGUMENT", name, std::string(name) + " must be a number");
  const double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v >= (double)lo && v <= (double)hi) || v != std::floor(v)) {
    fail(info.Env(), "INVALID_ARGUMENT", name,
         std::string(name) + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return (int64_t)v;
}

double numberArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsNumber()) fail(info.Env(), "INVALID_ARGUMENT", name, std::string(name) + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

bool boolArg(const Napi::CallbackInfo& info, size_t i) { return i < info.Length() && info[i].ToBoolean().Value(); }

int64_t mul(const Napi::CallbackInfo& info, const char* what, std::initializer_list<int64_t> xs) {
  double p = 1;
  int64_t r = 1;
  for (int64_t x : xs) {
    p *= (double)x;
    r *= x;
  }
  if (p > 9007199254740991.0) fail(info.Env(), "INVALID_ARGUMENT", what, std::string(what) + " is too large");
  return r;
}

void checkScales(const Napi::CallbackInfo& info, const float* s, int64_t n, const char* name) {
  for (int64_t i = 0; i < n; i++) {
    if (!(s[i] > 0.0f) || !std::isfinite(s[i])) {
      fail(info.Env(), "INVALID_SCALE", std::string(name) + "[" + std::to_string(i) + "]",
           std::string(name) + "[" + std::to_string(i) + "] must be finite and > 0, got " + std::to_string(s[i]));
    }
  }
}

// ---- context lifetime -----------------------------------------------------------------------------------------

/** Owns a gpu::Context; shared by the JS Context and every DeviceBuffer made from it. */
struct Holder {
  gpu::Context* ctx;
  explicit Holder(gpu::Context* c) : ctx(c) {}
  ~Holder() { gpu::context_destroy(ctx); }
};

class DeviceBuffer : public Napi::ObjectWrap<DeviceBuffer> {
 public:
  /** The DeviceBuffer constructor of this environment (instance data, so worker threads each have their own). */
  static Napi::FunctionReference& ctor(Napi::Env env) { return *env.GetInstanceData<Napi::FunctionReference>(); }
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "DeviceBuffer",
                       {InstanceAccessor<&DeviceBuffer::GetBytes>("byteLength"),
                        InstanceMethod<&DeviceBuffer::Free>("free")});
  }
  explicit DeviceBuffer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeviceBuffer>(info) {}
  ~DeviceBuffer() override { release(); }

  void init(std::shared_ptr<Holder> h, void* p, size_t bytes) {
    holder_ = std::move(h);
    ptr_ = p;
    bytes_ = bytes;
  }
  void* ptr() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  const std::shared_ptr<Holder>& holder() const { return holder_; }

 private:
  void release() {
    if (ptr_ && holder_) gpu::buffer_free(holder_->ctx, ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
    holder_.reset();
  }
  Napi::Value GetBytes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), (double)bytes_); }
  void Free(const Napi::CallbackInfo&) { release(); }

  std::shared_ptr<Holder> holder_;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

Napi::Object propsObject(Napi::Env env, const gpu::DeviceProps& p) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("ordinal", p.ordinal);
  o.Set("name", p.name);
  o.Set("arch", p.arch);
  o.Set("computeCapability", std::to_string(p.major) + "." + std::to_string(p.minor));
  o.Set("multiProcessors", p.multiProcessors);
  o.Set("warpSize", p.warpSize);
  o.Set("totalMemory", (double)p.totalMemory);
  o.Set("l2Bytes", (double)p.l2Bytes);
  o.Set("sharedPerBlock", (double)p.sharedPerBlockOptin);
  o.Set("memoryClockKHz", p.memoryClockKHz);
  o.Set("busWidthBits", p.busWidthBits);
  o.Set("peakBandwidthGBs", p.peakBandwidthGBs);
  return o;
}

// ---- the Context class ----------------------------------------------------------------------------------------

class Context : public Napi::ObjectWrap<Context> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Context",
                       {
                           InstanceAccessor<&Context::GetDevice>("device"),
                           InstanceAccessor<&Context::GetGemm>("gemm"),
                           InstanceAccessor<&Context::GetGemmNote>("gemmNote"),
                           InstanceAccessor<&Context::GetDisposed>("disposed"),
                           InstanceMethod<&Context::Dispose>("dispose"),
                           InstanceMethod<&Context::MemInfo>("memInfo"),
                           InstanceMethod<&Context::Upload>("upload"),
                           InstanceMethod<&Context::Download>("download"),
                           InstanceMethod<&Context::Linear>("linear"),
                           InstanceMethod<&Context::RmsNorm>("rmsNorm"),
                           InstanceMethod<&Context::Add>("add"),
                           InstanceMethod<&Context::SiluAndMul>("siluAndMul"),
                           InstanceMethod<&Context::Embedding>("embedding"),
                           InstanceMethod<&Context::Rope>("rope"),
                           InstanceMethod<&Context::Softmax>("softmax"),
                           InstanceMethod<&Context::ReshapeAndCache>("reshapeAndCache"),
                           InstanceMethod<&Context::PagedAttention>("pagedAttention"),
                           InstanceMethod<&Context::AmaxTensor>("amaxTensor"),
                           InstanceMethod<&Context::AmaxPerHead>("amaxPerHead"),
                           InstanceMethod<&Context::QuantizeFp8>("quantizeFp8"),
                           InstanceMethod<&Context::DequantizeFp8>("dequantizeFp8"),
                           InstanceMethod<&Context::EncodeFp8Bits>("encodeFp8Bits"),
                           InstanceMethod<&Context::Fp8VendorCheck>("fp8VendorCheck"),
                           InstanceMethod<&Context::BenchAttention>("benchAttention"),
                           InstanceMethod<&Context::BenchCopy>("benchCopy"),
                           InstanceMethod<&Context::BenchLinear>("benchLinear"),
                       });
  }

  /** new Context(device) */
  explicit Context(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Context>(info) {
    const int device = (int)intArg(info, 0, "device", 0, 1024);
    Status st;
    gpu::Context* c = gpu::context_create(device, &st);
    if (!c) fail(info.Env(), st.code == gpu::kNoDevice ? "BACKEND_UNAVAILABLE" : "UNSUPPORTED", "device", st.message);
    holder_ = std::make_shared<Holder>(c);
  }

 private:
  gpu::Context* ctx(const Napi::CallbackInfo& info) {
    if (!holder_) fail(info.Env(), "BACKEND_UNAVAILABLE", "", std::string("this kvq ") + gpu::vendor() + " context has been disposed");
    return holder_->ctx;
  }

  Napi::Value GetDevice(const Napi::CallbackInfo& info) {
    return propsObject(info.Env(), gpu::context_props(ctx(info)));
  }
  Napi::Value GetGemm(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), gpu::context_gemm(ctx(info))); }
  Napi::Value GetGemmNote(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), gpu::context_gemm_note(ctx(info)));
  }
  Napi::Value GetDisposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !holder_); }
  // Buffers made from this context keep it alive; the device state goes when the last of them is collected.
  void Dispose(const Napi::CallbackInfo&) { holder_.reset(); }

  Napi::Value MemInfo(const Napi::CallbackInfo& info) {
    Status st;
    int64_t f = 0, t = 0;
    if (!gpu::context_mem_info(ctx(info), &f, &t, &st)) failStatus(info.Env(), st, "memInfo");
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("free", (double)f);
    o.Set("total", (double)t);
    return o;
  }

  /** upload(typedArray) -> DeviceBuffer holding a copy. */
  Napi::Value Upload(const Napi::CallbackInfo& info) {
    gpu::Context* c = ctx(info);
    if (info.Length() < 1 || !info[0].IsTypedArray()) fail(info.Env(), "WRONG_ARRAY_TYPE", "array", "upload needs a typed array");
    Napi::TypedArray a = info[0].As<Napi::TypedArray>();
    const size_t bytes = a.ByteLength();
    const void* src = static_cast<const char*>(a.ArrayBuffer().Data()) + a.ByteOffset();
    Status st;
    void* p = gpu::buffer_alloc(c, bytes, &st);
    if (!p) failStatus(info.Env(), st, "upload");
    if (!gpu::buffer_upload(c, p, src, bytes, &st)) {
      gpu::buffer_free(c, p);
      failStatus(info.Env(), st, "upload");
    }
    Napi::Object obj = DeviceBuffer::ctor(info.Env()).New({});
    DeviceBuffer::Unwrap(obj)->init(holder_, p, bytes);
    return obj;
  }

  /** download(buffer, typedArray): copy min(sizes) bytes back. */
  void Download(const Napi::CallbackInfo& info) {
    gpu::Context* c = ctx(info);
    DeviceBuffer* b = bufferArg(info, 0, "buffer", 0);
    if (!b) fail(info.Env(), "INVALID_ARGUMENT", "buffer", "download needs a DeviceBuffer");
    if (info.Length() < 2 || !info[1].IsTypedArray()) fail(info.Env(), "WRONG_ARRAY_TYPE", "array", "download needs a typed array");
    Napi::TypedArray a = info[1].As<Napi::TypedArray>();
    void* dst = static_cast<char*>(a.ArrayBuffer().Data()) + a.ByteOffset();
    Status st;
    const size_t n = a.ByteLength() < b->bytes() ? a.ByteLength() : b->bytes();
    if (!gpu::buffer_download(c, dst, b->ptr(), n, &st)) failStatus(info.Env(), st, "download");
  }

  /** Optional DeviceBuffer argument of this context with at least `needBytes`; null/undefined -> nullptr. */
  DeviceBuffer* bufferArg(const Napi::CallbackInfo& info, size_t i, const char* name, size_t needBytes) {
    if (i >= info.Length() || info[i].IsNull() || info[i].IsUndefined()) return nullptr;
    if (!info[i].IsObject() || !info[i].As<Napi::Object>().InstanceOf(DeviceBuffer::ctor(info.Env()).Value())) {
      fail(info.Env(), "INVALID_ARGUMENT", name, std::string(name) + " must be a DeviceBuffer or null");
    }
    DeviceBuffer* b = DeviceBuffer::Unwrap(info[i].As<Napi::Object>());
    if (!b->ptr()) fail(info.Env(), "INVALID_ARGUMENT", name, std::string(name) + " has been freed");
    if (b->holder() != holder_) fail(info.Env(), "INVALID_ARGUMENT", name, std::string(name) + " belongs to another context");
    if (b->bytes() < needBytes) {
      fail(info.Env(), "SHAPE_MISMATCH", name,
           std::string(name) + " holds " + std::to_string(b->bytes()) + " bytes but " + std::to_string(needBytes) + " are needed");
    }
    return b;
  }

  /** The cache fields at info[i..i+8]: dtype, key, value, numBlocks, blockSize, numKvHeads, headSize, kScale, vScale. */
  gpu::CacheRef cacheArgs(const Napi::CallbackInfo& info, size_t i) {
    gpu::CacheRef c{};
    c.dtype = (int)intArg(info, i, "cache.dtype", gpu::kF32, gpu::kFp8E5M2FNUZ);
    c.numBlocks = intArg(info, i + 3, "cache.numBlocks", 1, INT32_MAX);
    c.blockSize = (int)intArg(info, i + 4, "cache.blockSize", 1, INT32_MAX);
    c.numKvHeads = (int)intArg(info, i + 5, "cache.numKvHeads", 1, INT32_MAX);
    c.headSize = (int)intArg(info, i + 6, "cache.headSize", 1, INT32_MAX);
    const int64_t n = mul(info, "cache", {c.numBlocks, c.blockSize, c.numKvHeads, c.headSize});
    if (c.dtype == gpu::kF32) {
      c.k = arrayArg<float>(info, i + 1, "cache.key", n, true);
      c.v = arrayArg<float>(info, i + 2, "cache.value", n, true);
    } else if (c.dtype == gpu::kBF16 || c.dtype == gpu::kF16) {
      c.k = arrayArg<uint16_t>(info, i + 1, "cache.key", n, true);
      c.v = arrayArg<uint16_t>(info, i + 2, "cache.value", n, true);
    } else {
      c.k = arrayArg<uint8_t>(info, i + 1, "cache.key", n, true);
      c.v = arrayArg<uint8_t>(info, i + 2, "cache.value", n, true);
    }
    if (c.dtype >= gpu::kFp8E4M3FN) {
      int64_t kl = 0, vl = 0;
      c.kScale = arrayArg<float>(info, i + 7, "cache.kScale", 1, false, &kl);
      c.vScale = arrayArg<float>(info, i + 8, "cache.vScale", 1, false, &vl);
      if ((kl != 1 && kl != c.numKvHeads) || vl != kl) {
        fail(info.Env(), "INVALID_SCALE", "cache.kScale", "cache.kScale and cache.vScale must both have length 1 or numKvHeads");
      }
      checkScales(info, c.kScale, kl, "cache.kScale");
      checkScales(info, c.vScale, vl, "cache.vScale");
      c.scaleLen = (int)kl;
    }
    return c;
  }

  /** Resident pools at info[i], info[i+1] (both or neither). */
  void residentCache(const Napi::CallbackInfo& info, size_t i, gpu::CacheRef& c) {
    const size_t bytes = (size_t)c.numBlocks * c.blockSize * c.numKvHeads * c.headSize * gpu::dtype_bytes(c.dtype);
    DeviceBuffer* k = bufferArg(info, i, "cache.key (device)", bytes);
    DeviceBuffer* v = bufferArg(info, i + 1, "cache.value (device)", bytes);
    if ((k == nullptr) != (v == nullptr)) {
      fail(info.Env(), "INVALID_ARGUMENT", "cache", "resident cache pools must be given for both key and value");
    }
    c.kDev = k ? k->ptr() : nullptr;
    c.vDev = v ? v->ptr() : nullptr;
  }

  void Linear(const Napi::CallbackInfo& info) {
    // (x, wData, wDtype, rows, in, out, bias|null, y, wDev?)
    gpu::LinearArgs p{};
    p.wdtype = (int)intArg(info, 2, "weight.dtype", gpu::kF32, gpu::kF16);
    p.rows = intArg(info, 3, "rows", 1);
    p.in = intArg(info, 4, "weight.cols", 1);
    p.out = intArg(info, 5, "weight.rows", 1);
    p.x = arrayArg<float>(info, 0, "x", mul(info, "x", {p.rows, p.in}));
    const int64_t wn = mul(info, "weight", {p.out, p.in});
    if (p.wdtype == gpu::kF32) p.w = arrayArg<float>(info, 1, "weight.data", wn, true);
    else p.w = arrayArg<uint16_t>(info, 1, "weight.data", wn, true);
    p.bias = optionalArrayArg<float>(info, 6, "bias", p.out);
    p.y = arrayArg<float>(info, 7, "out", mul(info, "out", {p.rows, p.out}));
    DeviceBuffer* wd = bufferArg(info, 8, "weight (device)", (size_t)wn * gpu::dtype_bytes(p.wdtype));
    p.wDev = wd ? wd->ptr() : nullptr;
    Status st;
    if (!gpu::linear(ctx(info), p, &st)) failStatus(info.Env(), st, "linear");
  }

  void RmsNorm(const Napi::CallbackInfo& info) {
    // (x, weight, out, rows, hidden, eps)
    gpu::RmsNormArgs p{};
    p.rows = intArg(info, 3, "rows", 1);
    p.hidden = intArg(info, 4, "hidden", 1);
    const int64_t n = mul(info, "x", {p.rows, p.hidden});
    p.x = arrayArg<float>(info, 0, "x", n);
    p.w = arrayArg<float>(info, 1, "weight", p.hidden);
    p.y = arrayArg<float>(info, 2, "out", n);
    const double eps = numberArg(info, 5, "eps");
    if (!(eps >= 0) || !std::isfinite(eps)) fail(info.Env(), "INVALID_ARGUMENT", "eps", "eps must be finite and >= 0");
    p.eps = (float)eps;
    Status st;
    if (!gpu::rms_norm(ctx(info), p, &st)) failStatus(info.Env(), st, "rmsNorm");
  }

  gpu::EltwiseArgs eltwise(const Napi::CallbackInfo& info, const char* a, const char* b) {
    // (a, b, out, n)
    gpu::EltwiseArgs p{};
    p.n = intArg(info, 3, "length", 0, INT64_C(1) << 50);
    p.a = arrayArg<float>(info, 0, a, p.n);
    p.b = arrayArg<float>(info, 1, b, p.n);
    p.y = arrayArg<float>(info, 2, "out", p.n);
    return p;
  }
  void Add(const Napi::CallbackInfo& info) {
    const gpu::EltwiseArgs p = eltwise(info, "a", "b");
    Status st;
    if (!gpu::add(ctx(info), p, &st)) failStatus(info.Env(), st, "add");
  }
  void SiluAndMul(const Napi::CallbackInfo& info) {
    const gpu::EltwiseArgs p = eltwise(info, "gate", "up");
    Status st;
    if (!gpu::silu_and_mul(ctx(info), p, &st)) failStatus(info.Env(), st, "siluAndMul");
  }

  void Embedding(const Napi::CallbackInfo& info) {
    // (tableData, dtype, vocab, hidden, ids, out, numTokens, tableDev?)
    gpu::EmbeddingArgs p{};
    p.dtype = (int)intArg(info, 1, "table.dtype", gpu::kF32, gpu::kF16);
    p.vocab = intArg(info, 2, "table.rows", 1);
    p.hidden = intArg(info, 3, "table.cols", 1);
    const int64_t tn = mul(info, "table", {p.vocab, p.hidden});
    if (p.dtype == gpu::kF32) p.table = arrayArg<float>(info, 0, "table.data", tn, true);
    else p.table = arrayArg<uint16_t>(info, 0, "table.data", tn, true);
    p.numTokens = intArg(info, 6, "numTokens", 0);
    p.ids = arrayArg<int32_t>(info, 4, "ids", p.numTokens);
    p.y = arrayArg<float>(info, 5, "out", mul(info, "out", {p.numTokens, p.hidden}));
    for (int64_t t = 0; t < p.numTokens; t++) {
      if (p.ids[t] < 0 || p.ids[t] >= p.vocab) {
        const std::string a = "ids[" + std::to_string(t) + "]";
        fail(info.Env(), "OUT_OF_RANGE", a, a + " = " + std::to_string(p.ids[t]) + " is outside the table");
      }
    }
    DeviceBuffer* td = bufferArg(info, 7, "table (device)", (size_t)tn * gpu::dtype_bytes(p.dtype));
    p.tableDev = td ? td->ptr() : nullptr;
    Status st;
    if (!gpu::embedding(ctx(info), p, &st)) failStatus(info.Env(), st, "embedding");
  }

  void Rope(const Napi::CallbackInfo& info) {
    // (query, key, positions, numTokens, numHeads, numKvHeads, headSize, rotaryDim, maxPositions, cos, sin, interleaved)
    gpu::RopeArgs p{};
    p.numTokens = intArg(info, 3, "numTokens", 0);
    p.numHeads = (int)intArg(info, 4, "numHeads", 1);
    p.numKvHeads = (int)intArg(info, 5, "numKvHeads", 1);
    p.headSize = (int)intArg(info, 6, "headSize", 2);
    p.rotaryDim = (int)intArg(info, 7, "table.rotaryDim", 2, p.headSize);
    if (p.rotaryDim % 2 != 0) fail(info.Env(), "INVALID_ARGUMENT", "table.rotaryDim", "table.rotaryDim must be even");
    p.maxPositions = intArg(info, 8, "table.maxPositions", 1);
    p.q = arrayArg<float>(info, 0, "query", mul(info, "query", {p.numTokens, p.numHeads, p.headSize}));
    p.k = arrayArg<float>(info, 1, "key", mul(info, "key", {p.numTokens, p.numKvHeads, p.headSize}));
    p.pos = arrayArg<int32_t>(info, 2, "positions", p.numTokens);
    const int64_t tn = mul(info, "table", {p.maxPositions, p.rotaryDim / 2});
    p.cos = arrayArg<float>(info, 9, "table.cos", tn);
    p.sin = arrayArg<float>(info, 10, "table.sin", tn);
    p.interleaved = boolArg(info, 11);
    for (int64_t t = 0; t < p.numTokens; t++) {
      if (p.pos[t] < 0 || p.pos[t] >= p.maxPositions) {
        const std::string a = "positions[" + std::to_string(t) + "]";
        fail(info.Env(), "OUT_OF_RANGE", a, a + " = " + std::to_string(p.pos[t]) + " is outside the rope table");
      }
    }
    Status st;
    if (!gpu::rope(ctx(info), p, &st)) failStatus(info.Env(), st, "rope");
  }

  void Softmax(const Napi::CallbackInfo& info) {
    // (x, out, rows, cols)
    gpu::SoftmaxArgs p{};
    p.rows = intArg(info, 2, "rows", 0);
    p.cols = intArg(info, 3, "cols", 1);
    const int64_t n = mul(info, "x", {p.rows, p.cols});
    p.x = arrayArg<float>(info, 0, "x", n);
    p.y = arrayArg<float>(info, 1, "out", n);
    Status st;
    if (!gpu::softmax(ctx(info), p, &st)) failStatus(info.Env(), st, "softmax");
  }

  void ReshapeAndCache(const Napi::CallbackInfo& info) {
    // (key, value, slotMapping, numTokens, cache[dtype, key, value, numBlocks, blockSize, numKvHeads, headSize, kScale,
    //  vScale] (4..12), kDev?, vDev? (13, 14))
    gpu::CacheWriteArgs p{};
    p.cache = cacheArgs(info, 4);
    residentCache(info, 13, p.cache);
    p.numTokens = intArg(info, 3, "numTokens", 0);
    const int64_t n = mul(info, "key", {p.numTokens, p.cache.numKvHeads, p.cache.headSize});
    p.key = arrayArg<float>(info, 0, "key", n);
    p.value = arrayArg<float>(info, 1, "value", n);
    p.slots = arrayArg<int32_t>(info, 2, "slotMapping", p.numTokens);
    const int64_t slots = p.cache.numBlocks * p.cache.blockSize;
    for (int64_t t = 0; t < p.numTokens; t++) {
      if (p.slots[t] >= slots) {
        const std::string a = "slotMapping[" + std::to_string(t) + "]";
        fail(info.Env(), "OUT_OF_RANGE", a, a + " = " + std::to_string(p.slots[t]) + " is outside the cache's slots");
      }
    }
    Status st;
    if (!gpu::reshape_and_cache(ctx(info), p, &st)) failStatus(info.Env(), st, "reshapeAndCache");
  }

  void PagedAttention(const Napi::CallbackInfo& info) {
    // (query, out, cache[dtype, key, value, numBlocks, blockSize, numKvHeads, headSize, kScale, vScale] (2..10),
    //  queryStartLoc, seqLens, blockTables, maxBlocksPerSeq, numSeqs, numHeads, softmaxScale, slidingWindow,
    //  fp8Query (0 off, 1 satfinite, 2 nosat), qScale, kDev?, vDev? (21, 22))
    gpu::AttentionArgs p{};
    p.cache = cacheArgs(info, 2);
    residentCache(info, 21, p.cache);
    const gpu::CacheRef& c = p.cache;
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
    p.q = arrayArg<float>(info, 0, "query", qn);
    p.out = arrayArg<float>(info, 1, "out", qn);
    std::vector<float> qScaleKv;
    if (p.fp8Query != 0) {
      if (c.dtype < gpu::kFp8E4M3FN) fail(info.Env(), "INVALID_ARGUMENT", "fp8Query", "fp8Query needs an FP8 cache");
      int64_t ql = 0;
      const float* qs = arrayArg<float>(info, 20, "cache.qScale", 1, false, &ql);
      if (ql != 1 && ql != p.numHeads) fail(info.Env(), "INVALID_SCALE", "cache.qScale", "cache.qScale must have length 1 or numHeads");
      checkScales(info, qs, ql, "cache.qScale");
      const int g = p.numHeads / c.numKvHeads;
      qScaleKv.assign((size_t)c.numKvHeads, 0.0f);
      for (int h = 0; h < c.numKvHeads; h++) {
        float m = qs[0];
        if (ql != 1) {
          m = qs[h * g];
          for (int i = 1; i < g; i++) m = qs[h * g + i] > m ? qs[h * g + i] : m;
        }
        qScaleKv[(size_t)h] = m;
      }
      p.qScaleKv = qScaleKv.data();
    }
    Status st;
    if (!gpu::paged_attention(ctx(info), p, &st)) failStatus(info.Env(), st, "pagedAttention");
  }

  Napi::Value AmaxTensor(const Napi::CallbackInfo& info) {
    // (x, length)
    const int64_t n = intArg(info, 1, "length", 0, INT64_C(1) << 50);
    const float* x = arrayArg<float>(info, 0, "x", n);
    float result = 0;
    Status st;
    if (!gpu::amax_tensor(ctx(info), x, n, &result, &st)) failStatus(info.Env(), st, "amaxTensor");
    return Napi::Number::New(info.Env(), result);
  }

  void AmaxPerHead(const Napi::CallbackInfo& info) {
    // (x, out, numTokens, numHeads, headSize, accumulate)
    gpu::AmaxArgs p{};
    p.numTokens = intArg(info, 2, "numTokens", 0);
    p.numHeads = (int)intArg(info, 3, "numHeads", 1, 65535);
    p.headSize = (int)intArg(info, 4, "headSize", 1);
    p.x = arrayArg<float>(info, 0, "x", mul(info, "x", {p.numTokens, p.numHeads, p.headSize}));
    p.out = arrayArg<float>(info, 1, "out", p.numHeads);
    p.accumulate = boolArg(info, 5);
    Status st;
    if (!gpu::amax_per_head(ctx(info), p, &st)) failStatus(info.Env(), st, "amaxPerHead");
  }

  gpu::QuantArgs quantArgs(const Napi::CallbackInfo& info, bool quantize) {
    // quantize: (src f32, out u8, length, scales, runLength, period, format, saturate)
    // dequantize: (src u8, out f32, length, scales, runLength, period, format)
    gpu::QuantArgs p{};
    p.n = intArg(info, 2, "length", 0, INT64_C(1) << 50);
    p.runLength = intArg(info, 4, "runLength", 1, INT64_C(1) << 50);
    p.period = intArg(info, 5, "period", 0, INT64_C(1) << 50);
    p.format = (int)intArg(info, 6, "format", 0, 3);
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
    int64_t sl = 0;
    p.scales = arrayArg<float>(info, 3, "scales", needScales, false, &sl);
    checkScales(info, p.scales, needScales, "scales");
    p.numScales = needScales;
    return p;
  }
  void QuantizeFp8(const Napi::CallbackInfo& info) {
    const gpu::QuantArgs p = quantArgs(info, true);
    Status st;
    if (!gpu::quantize_fp8(ctx(info), p, &st)) failStatus(info.Env(), st, "quantizeFp8");
  }
  void DequantizeFp8(const Napi::CallbackInfo& info) {
    const gpu::QuantArgs p = quantArgs(info, false);
    Status st;
    if (!gpu::dequantize_fp8(ctx(info), p, &st)) failStatus(info.Env(), st, "dequantizeFp8");
  }

  void EncodeFp8Bits(const Napi::CallbackInfo& info) {
    // (firstBits, count, out, format, saturate)
    const int64_t first = intArg(info, 0, "firstBits", 0, INT64_C(0xFFFFFFFF));
    const int64_t count = intArg(info, 1, "count", 0, INT64_C(0x100000000) - first);
    uint8_t* out = arrayArg<uint8_t>(info, 2, "out", count);
    const int format = (int)intArg(info, 3, "format", 0, 3);
    Status st;
    if (!gpu::encode_fp8_bits(ctx(info), (uint32_t)first, count, out, format, boolArg(info, 4), &st)) {
      failStatus(info.Env(), st, "encodeFp8Bits");
    }
  }

  Napi::Value Fp8VendorCheck(const Napi::CallbackInfo& info) {
    // (format, saturate)
    gpu::Fp8VendorCheck c{};
    c.format = (int)intArg(info, 0, "format", 0, 3);
    c.sat = boolArg(info, 1);
    Status st;
    if (!gpu::fp8_vendor_check(ctx(info), &c, &st)) failStatus(info.Env(), st, "fp8VendorCheck");
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("encodeMismatches", (double)c.encodeMismatches);
    o.Set("firstEncodeMismatch", c.encodeMismatches ? Napi::Value(Napi::Number::New(info.Env(), c.firstEncodeMismatch))
                                                     : info.Env().Null());
    o.Set("decodeMismatches", c.decodeMismatches);
    o.Set("ms", c.ms);
    return o;
  }

  Napi::Value BenchAttention(const Napi::CallbackInfo& info) {
    // ({ dtype, numSeqs, contextLen, numHeads, numKvHeads, headSize, blockSize, fp8Query, warmup, iters })
    if (info.Length() < 1 || !info[0].IsObject()) fail(info.Env(), "INVALID_ARGUMENT", "options", "benchAttention needs an options object");
    Napi::Object o = info[0].As<Napi::Object>();
    auto num = [&](const char* k, int lo, int hi) {
      Napi::Value v = o.Get(k);
      if (!v.IsNumber()) fail(info.Env(), "INVALID_ARGUMENT", k, std::string(k) + " must be a number");
      const double d = v.As<Napi::Number>().DoubleValue();
      if (!(d >= lo && d <= hi) || d != std::floor(d)) fail(info.Env(), "INVALID_ARGUMENT", k, std::string(k) + " is out of range");
      return (int)d;
    };
    gpu::AttentionBench b{};
    b.dtype = num("dtype", 0, 6);
    b.numSeqs = num("numSeqs", 1, 65536);
    b.contextLen = num("contextLen", 1, 1 << 24);
    b.numHeads = num("numHeads", 1, 1024);
    b.numKvHeads = num("numKvHeads", 1, 1024);
    b.headSize = num("headSize", 1, 1024);
    b.blockSize = num("blockSize", 1, 1024);
    b.fp8Query = num("fp8Query", 0, 2);
    b.warmup = num("warmup", 0, 1000);
    b.iters = num("iters", 1, 10000);
    if (b.numHeads % b.numKvHeads != 0) fail(info.Env(), "SHAPE_MISMATCH", "numHeads", "numHeads must be a multiple of numKvHeads");
    if (b.fp8Query && b.dtype < gpu::kFp8E4M3FN) fail(info.Env(), "INVALID_ARGUMENT", "fp8Query", "fp8Query needs an FP8 cache");
    Status st;
    if (!gpu::bench_attention(ctx(info), &b, &st)) failStatus(info.Env(), st, "benchAttention");
    Napi::Object r = Napi::Object::New(info.Env());
    r.Set("msMedian", b.msMedian);
    r.Set("msMin", b.msMin);
    r.Set("bytesMoved", b.bytesMoved);
    r.Set("gbps", b.gbps);
    r.Set("splits", b.splits);
    r.Set("checksum", (double)(b.checksumBits & ((1ull << 53) - 1)));
    r.Set("finite", b.finite);
    return r;
  }

  Napi::Value BenchCopy(const Napi::CallbackInfo& info) {
    // (bytes, iters)
    const int64_t bytes = intArg(info, 0, "bytes", 1, INT64_C(1) << 40);
    const int iters = (int)intArg(info, 1, "iters", 1, 10000);
    double gbps = 0;
    Status st;
    if (!gpu::bench_copy(ctx(info), bytes, iters, &gbps, &st)) failStatus(info.Env(), st, "benchCopy");
    return Napi::Number::New(info.Env(), gbps);
  }

  Napi::Value BenchLinear(const Napi::CallbackInfo& info) {
    // (wdtype, rows, in, out, iters, useCublas)
    const int wdtype = (int)intArg(info, 0, "wdtype", 0, 2);
    const int64_t rows = intArg(info, 1, "rows", 1);
    const int64_t in = intArg(info, 2, "in", 1);
    const int64_t out = intArg(info, 3, "out", 1);
    const int iters = (int)intArg(info, 4, "iters", 1, 10000);
    double ms = 0;
    Status st;
    if (!gpu::bench_linear(ctx(info), wdtype, rows, in, out, iters, boolArg(info, 5), &ms, &st)) {
      failStatus(info.Env(), st, "benchLinear");
    }
    return Napi::Number::New(info.Env(), ms);
  }

  std::shared_ptr<Holder> holder_;
};

// ---- module functions ---------------------------------------------------------------------------------------

/** probe() -> { ok, reason?, vendor, runtimeVersion, driverVersion, deviceCount, devices } (never throws). */
Napi::Value Probe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  gpu::RuntimeInfo ri{};
  gpu::DeviceProps props[16];
  int n = 0;
  Status st;
  const bool good = gpu::probe(&ri, props, 16, &n, &st);
  Napi::Object o = Napi::Object::New(env);
  o.Set("ok", good);
  if (!good) o.Set("reason", st.message);
  o.Set("vendor", gpu::vendor());
  o.Set("targets", gpu::compiled_targets());
  o.Set("runtimeVersion", ri.runtimeVersion);
  o.Set("driverVersion", ri.driverVersion);
  o.Set("deviceCount", ri.deviceCount);
  Napi::Array devs = Napi::Array::New(env, (size_t)n);
  for (int i = 0; i < n; i++) devs.Set((uint32_t)i, propsObject(env, props[i]));
  o.Set("devices", devs);
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  Napi::Function buf = DeviceBuffer::Define(env);
  env.SetInstanceData<Napi::FunctionReference>(new Napi::FunctionReference(Napi::Persistent(buf)));
  exports.Set("abi", Napi::Number::New(env, kAbi));
  exports.Set("vendor", Napi::String::New(env, gpu::vendor()));
  exports.Set("targets", Napi::String::New(env, gpu::compiled_targets()));
  exports.Set("Context", Context::Define(env));
  exports.Set("DeviceBuffer", buf);
  exports.Set("probe", Napi::Function::New(env, Probe));
  return exports;
}

}  // namespace
}  // namespace kvq

static Napi::Object KvqInit(Napi::Env env, Napi::Object exports) { return kvq::Init(env, exports); }

NODE_API_MODULE(kvq_gpu, KvqInit)
