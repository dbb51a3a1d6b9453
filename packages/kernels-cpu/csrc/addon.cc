// SPDX-License-Identifier: Apache-2.0
//
// N-API glue of @kvq/kernels-cpu: a `Context` class (thread pool + chosen ISA) whose methods take typed arrays
// zero-copy and positional numbers, check every length, index and kind (second line of defence behind the
// TypeScript facade, so a direct call with bad input throws instead of crashing), and call the kernels.
// The shape of this module is declared once in src/addon-types.ts; keep them in sync (bump kAbi on change).
//
// Errors are JS `Error`s with `code` (a KernelErrorCode string) and `argument` properties.
#include <napi.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "fp8.h"
#include "kernels.h"
#include "threadpool.h"

namespace kvq {
namespace {

/** Bumped whenever the method signatures below change; the facade refuses a mismatching binary. */
constexpr int kAbi = 1;

// ---- CPU features and ISA choice -------------------------------------------------------------------

struct CpuFeatures {
  bool sse42 = false, avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512vbmi = false, avx512bf16 = false, avx512fp16 = false, avx512vnni = false;
};

CpuFeatures detectCpu() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  f.sse42 = __builtin_cpu_supports("sse4.2");
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.f16c = __builtin_cpu_supports("f16c");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512dq = __builtin_cpu_supports("avx512dq");
  f.avx512vbmi = __builtin_cpu_supports("avx512vbmi");
  f.avx512bf16 = __builtin_cpu_supports("avx512bf16");
  f.avx512fp16 = __builtin_cpu_supports("avx512fp16");
  f.avx512vnni = __builtin_cpu_supports("avx512vnni");
#endif
  return f;
}

bool isaSupported(const CpuFeatures& f, const std::string& isa) {
  if (isa == "scalar") return true;
#if defined(__x86_64__) || defined(_M_X64)
  const bool avx2 = f.avx2 && f.fma && f.f16c;
  if (isa == "avx2") return avx2;
  // The AVX-512 tier is the Ice Lake / Zen 4 level: F, BW, VL, DQ and VBMI (byte-table FP8 decode). Older
  // AVX-512 parts (Skylake-SP, Cascade Lake) run the AVX2 kernels.
  if (isa == "avx512") return avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vbmi;
#else
  (void)f;
#endif
  return false;
}

const KernelTable* tableFor(const std::string& isa) {
#if defined(__x86_64__) || defined(_M_X64)
  if (isa == "avx512") return kernels_avx512();
  if (isa == "avx2") return kernels_avx2();
#endif
  return kernels_scalar();
}

/** ISAs usable on this CPU, best first. */
std::vector<std::string> usableIsas(const CpuFeatures& f) {
  std::vector<std::string> out;
  for (const char* isa : {"avx512", "avx2", "scalar"})
    if (isaSupported(f, isa)) out.emplace_back(isa);
  return out;
}

// ---- argument helpers ---------------------------------------------------------------------------

[[noreturn]] void fail(Napi::Env env, const char* code, const std::string& argument, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  if (!argument.empty()) e.Set("argument", Napi::String::New(env, argument));
  throw e;
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
  if (i >= info.Length() ||
      napi_get_typedarray_info(env, info[i], &type, &length, &data, nullptr, nullptr) != napi_ok) {
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

/** Like arrayArg but `null` / `undefined` give nullptr. */
template <class T>
T* optionalArrayArg(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t need) {
  if (i >= info.Length() || info[i].IsNull() || info[i].IsUndefined()) return nullptr;
  return arrayArg<T>(info, i, name, need);
}

/** Integer argument in [lo, hi]. */
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

/** Checked product of non-negative sizes (rejects anything past 2^53). */
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

void checkStatus(Napi::Env env, int status) {
  if (status == kOutOfMemory) fail(env, "UNSUPPORTED", "", "out of memory for kernel scratch");
}

// ---- parsed arguments (shared by sync and async entry points) -----------------------------------

/** Parse the cache fields at info[i..i+8]: dtype, key, value, numBlocks, blockSize, numKvHeads, headSize, kScale, vScale. */
KvCacheRef cacheArgs(const Napi::CallbackInfo& info, size_t i) {
  KvCacheRef c{};
  c.dtype = (int)intArg(info, i, "cache.dtype", kF32, kFp8E5M2FNUZ);
  c.numBlocks = intArg(info, i + 3, "cache.numBlocks", 1, INT32_MAX);
  c.blockSize = (int)intArg(info, i + 4, "cache.blockSize", 1, INT32_MAX);
  c.numKvHeads = (int)intArg(info, i + 5, "cache.numKvHeads", 1, INT32_MAX);
  c.headSize = (int)intArg(info, i + 6, "cache.headSize", 1, INT32_MAX);
  const int64_t n = mul(info, "cache", {c.numBlocks, c.blockSize, c.numKvHeads, c.headSize});
  if (c.dtype == kF32) {
    c.k = arrayArg<float>(info, i + 1, "cache.key", n, true);
    c.v = arrayArg<float>(info, i + 2, "cache.value", n, true);
  } else if (c.dtype == kBF16 || c.dtype == kF16) {
    c.k = arrayArg<uint16_t>(info, i + 1, "cache.key", n, true);
    c.v = arrayArg<uint16_t>(info, i + 2, "cache.value", n, true);
  } else {
    c.k = arrayArg<uint8_t>(info, i + 1, "cache.key", n, true);
    c.v = arrayArg<uint8_t>(info, i + 2, "cache.value", n, true);
  }
  if (c.dtype >= kFp8E4M3FN) {
    int64_t kl = 0, vl = 0;
    c.kScale = arrayArg<float>(info, i + 7, "cache.kScale", 1, false, &kl);
    c.vScale = arrayArg<float>(info, i + 8, "cache.vScale", 1, false, &vl);
    if ((kl != 1 && kl != c.numKvHeads) || vl != kl) {
      fail(info.Env(), "INVALID_SCALE", "cache.kScale",
           "cache.kScale and cache.vScale must both have length 1 or numKvHeads");
    }
    checkScales(info, c.kScale, kl, "cache.kScale");
    checkScales(info, c.vScale, vl, "cache.vScale");
    c.scaleLen = (int)kl;
  } else {
    c.kScale = c.vScale = nullptr;
    c.scaleLen = 0;
  }
  return c;
}

LinearParams linearArgs(const Napi::CallbackInfo& info) {
  // (x, wData, wDtype, rows, in, out, bias|null, y)
  LinearParams p{};
  p.wdtype = (int)intArg(info, 2, "weight.dtype", kF32, kF16);
  p.rows = intArg(info, 3, "rows", 1);
  p.in = intArg(info, 4, "weight.cols", 1);
  p.out = intArg(info, 5, "weight.rows", 1);
  p.x = arrayArg<float>(info, 0, "x", mul(info, "x", {p.rows, p.in}));
  const int64_t wn = mul(info, "weight", {p.out, p.in});
  if (p.wdtype == kF32) {
    p.w = arrayArg<float>(info, 1, "weight.data", wn, true);
  } else {
    p.w = arrayArg<uint16_t>(info, 1, "weight.data", wn, true);
  }
  p.bias = optionalArrayArg<float>(info, 6, "bias", p.out);
  p.y = arrayArg<float>(info, 7, "out", mul(info, "out", {p.rows, p.out}));
  return p;
}

struct AttentionArgs {
  AttentionParams p{};
  std::vector<float> qScaleKv;
};

void attentionArgs(const Napi::CallbackInfo& info, AttentionArgs& a) {
  // (query, out, cache[dtype, key, value, numBlocks, blockSize, numKvHeads, headSize, kScale, vScale] (2..10),
  //  queryStartLoc, seqLens, blockTables, maxBlocksPerSeq, numSeqs, numHeads, softmaxScale, slidingWindow,
  //  fp8Query (0 off, 1 satfinite, 2 nosat), qScale)
  AttentionParams& p = a.p;
  p.cache = cacheArgs(info, 2);
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
  p.q = arrayArg<float>(info, 0, "query", qn);
  p.out = arrayArg<float>(info, 1, "out", qn);
  if (p.fp8Query != 0) {
    if (c.dtype < kFp8E4M3FN) fail(info.Env(), "INVALID_ARGUMENT", "fp8Query", "fp8Query needs an FP8 cache");
    int64_t ql = 0;
    const float* qs = arrayArg<float>(info, 20, "cache.qScale", 1, false, &ql);
    if (ql != 1 && ql != p.numHeads) {
      fail(info.Env(), "INVALID_SCALE", "cache.qScale", "cache.qScale must have length 1 or numHeads");
    }
    checkScales(info, qs, ql, "cache.qScale");
    const int g = p.numHeads / c.numKvHeads;
    a.qScaleKv.assign(c.numKvHeads, 0.0f);
    for (int h = 0; h < c.numKvHeads; h++) {
      float m = qs[0];
      if (ql != 1) {
        m = qs[h * g];
        for (int i = 1; i < g; i++) m = qs[h * g + i] > m ? qs[h * g + i] : m;
      }
      a.qScaleKv[h] = m;
    }
    p.qScaleKv = a.qScaleKv.data();
  }
}

// ---- async support ------------------------------------------------------------------------------

class Context;

/**
 * Runs one kernel call on a libuv worker thread. Keeps the JS arguments (typed arrays) and the context object
 * alive meanwhile, and shares ownership of the pool, so neither GC nor dispose() can free what it uses.
 */
class KernelWorker : public Napi::AsyncWorker {
 public:
  KernelWorker(Napi::Env env, const Napi::CallbackInfo& info, std::shared_ptr<ThreadPool> pool, std::function<int()> job)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), pool_(std::move(pool)), job_(std::move(job)) {
    refs_.emplace_back(Napi::Persistent(info.This().As<Napi::Object>()));
    for (size_t i = 0; i < info.Length(); i++)
      if (info[i].IsObject()) refs_.emplace_back(Napi::Persistent(info[i].As<Napi::Object>()));
  }
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    std::lock_guard<std::mutex> lock(pool_->opMutex());
    status_ = job_();
  }
  void OnOK() override {
    if (status_ != kOk) {
      Napi::Error e = Napi::Error::New(Env(), "out of memory for kernel scratch");
      e.Set("code", Napi::String::New(Env(), "UNSUPPORTED"));
      deferred_.Reject(e.Value());
      return;
    }
    deferred_.Resolve(Env().Undefined());
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<ThreadPool> pool_;
  std::function<int()> job_;
  std::vector<Napi::ObjectReference> refs_;
  int status_ = kOk;
};

// ---- the Context class --------------------------------------------------------------------------

class Context : public Napi::ObjectWrap<Context> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Context",
                       {
                           InstanceAccessor<&Context::GetIsa>("isa"),
                           InstanceAccessor<&Context::GetThreads>("threads"),
                           InstanceAccessor<&Context::GetVectorWidth>("vectorWidth"),
                           InstanceMethod<&Context::SetSpinMicros>("setSpinMicros"),
                           InstanceMethod<&Context::Dispose>("dispose"),
                           InstanceMethod<&Context::Linear>("linear"),
                           InstanceMethod<&Context::LinearAsync>("linearAsync"),
                           InstanceMethod<&Context::RmsNorm>("rmsNorm"),
                           InstanceMethod<&Context::Add>("add"),
                           InstanceMethod<&Context::SiluAndMul>("siluAndMul"),
                           InstanceMethod<&Context::Embedding>("embedding"),
                           InstanceMethod<&Context::Rope>("rope"),
                           InstanceMethod<&Context::Softmax>("softmax"),
                           InstanceMethod<&Context::ReshapeAndCache>("reshapeAndCache"),
                           InstanceMethod<&Context::PagedAttention>("pagedAttention"),
                           InstanceMethod<&Context::PagedAttentionAsync>("pagedAttentionAsync"),
                           InstanceMethod<&Context::AmaxTensor>("amaxTensor"),
                           InstanceMethod<&Context::AmaxPerHead>("amaxPerHead"),
                           InstanceMethod<&Context::QuantizeFp8>("quantizeFp8"),
                           InstanceMethod<&Context::DequantizeFp8>("dequantizeFp8"),
                           InstanceMethod<&Context::EncodeFp8Bits>("encodeFp8Bits"),
                       });
  }

  /** new Context(threads, isa, spinMicros) */
  explicit Context(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Context>(info) {
    const int64_t threads = intArg(info, 0, "threads", 1, 1024);
    if (info.Length() < 2 || !info[1].IsString()) fail(info.Env(), "INVALID_ARGUMENT", "isa", "isa must be a string");
    std::string isa = info[1].As<Napi::String>().Utf8Value();
    const int64_t spin = intArg(info, 2, "spinMicros", 0, 1000000);
    const CpuFeatures f = detectCpu();
    if (isa == "auto") isa = usableIsas(f).front();
    if (isa != "scalar" && isa != "avx2" && isa != "avx512") {
      fail(info.Env(), "INVALID_ARGUMENT", "isa", "isa must be 'auto', 'scalar', 'avx2' or 'avx512', got '" + isa + "'");
    }
    if (!isaSupported(f, isa)) fail(info.Env(), "UNSUPPORTED", "isa", "this CPU does not support the " + isa + " kernels");
    table_ = tableFor(isa);
    pool_ = std::make_shared<ThreadPool>((int)threads, (int)spin);
  }

 private:
  ThreadPool& pool(const Napi::CallbackInfo& info) {
    if (!pool_) fail(info.Env(), "BACKEND_UNAVAILABLE", "", "this kvq CPU context has been disposed");
    return *pool_;
  }

  Napi::Value GetIsa(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), table_->isa); }
  Napi::Value GetThreads(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), pool_ ? pool_->threads() : 0);
  }
  Napi::Value GetVectorWidth(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), table_->vectorWidth); }
  void SetSpinMicros(const Napi::CallbackInfo& info) { pool(info).setSpinMicros((int)intArg(info, 0, "spinMicros", 0, 1000000)); }
  void Dispose(const Napi::CallbackInfo&) {
    // In-flight async ops hold their own reference; the threads stop when the last user lets go.
    pool_.reset();
  }

  template <class F>
  int runLocked(const Napi::CallbackInfo& info, F&& f) {
    ThreadPool& tp = pool(info);
    std::lock_guard<std::mutex> lock(tp.opMutex());
    const Runner r = tp.runner();
    return f(r);
  }

  void Linear(const Napi::CallbackInfo& info) {
    const LinearParams p = linearArgs(info);
    checkStatus(info.Env(), runLocked(info, [&](const Runner& r) { return table_->linear(p, r); }));
  }

  Napi::Value LinearAsync(const Napi::CallbackInfo& info) {
    const LinearParams p = linearArgs(info);
    ThreadPool* tp = &pool(info);
    const KernelTable* k = table_;
    auto* w = new KernelWorker(info.Env(), info, pool_, [p, tp, k]() { return k->linear(p, tp->runner()); });
    Napi::Promise promise = w->Promise();
    w->Queue();
    return promise;
  }

  void RmsNorm(const Napi::CallbackInfo& info) {
    // (x, weight, out, rows, hidden, eps)
    RmsNormParams p{};
    p.rows = intArg(info, 3, "rows", 1);
    p.hidden = intArg(info, 4, "hidden", 1);
    const int64_t n = mul(info, "x", {p.rows, p.hidden});
    p.x = arrayArg<float>(info, 0, "x", n);
    p.w = arrayArg<float>(info, 1, "weight", p.hidden);
    p.y = arrayArg<float>(info, 2, "out", n);
    const double eps = numberArg(info, 5, "eps");
    if (!(eps >= 0) || !std::isfinite(eps)) fail(info.Env(), "INVALID_ARGUMENT", "eps", "eps must be finite and >= 0");
    p.eps = (float)eps;
    checkStatus(info.Env(), runLocked(info, [&](const Runner& r) { return table_->rmsNorm(p, r); }));
  }

  EltwiseParams eltwise(const Napi::CallbackInfo& info, const char* a, const char* b) {
    // (a, b, out, n)
    EltwiseParams p{};
    p.n = intArg(info, 3, "length", 0, INT64_C(1) << 50);
    p.a = arrayArg<float>(info, 0, a, p.n);
    p.b = arrayArg<float>(info, 1, b, p.n);
    p.y = arrayArg<float>(info, 2, "out", p.n);
    return p;
  }
  void Add(const Napi::CallbackInfo& info) {
    const EltwiseParams p = eltwise(info, "a", "b");
    checkStatus(info.Env(), runLocked(info, [&](const Runner& r) { return table_->add(p, r); }));
  }
  void SiluAndMul(const Napi::CallbackInfo& info) {
    const EltwiseParams p = eltwise(info, "gate", "up");
    checkStatus(info.Env(), runLocked(info, [&](const Runner& r) { return table_->siluAndMul(p, r); }));
  }

  void Embedding(const Napi::CallbackInfo& info) {
    // (tableData, dtype, vocab, hidden, ids, out, numTokens)
    EmbeddingParams p{};
    p.dtype = (int)intArg(info, 1, "table.dtype", kF32, kF16);
    const int64_t vocab = intArg(info, 2, "table.rows", 1);
    p.hidden = intArg(info, 3, "table.cols", 1);
    const int64_t tn = mul(info, "table", {vocab, p.hidden});
    if (p.dtype == kF32) {
      p.table = arrayArg<float>(info, 0, "table.data", tn, true);
    } else {
      p.table = arrayArg<uint16_t>(info, 0, "table.data", tn, true);
    }
    p.numTokens = intArg(info, 6, "numTokens", 0);
    p.ids = arrayArg<int32_t>(info, 4, "ids", p.numTokens);
    p.y = arrayArg<float>(info, 5, "out", mul(info, "out", {p.numTokens, p.hidden}));
    for (int64_t t = 0; t < p.numTokens; t++) {
      if (p.ids[t] < 0 || p.ids[t] >= vocab) {
        const std::string a = "ids[" + std::to_string(t) + "]";
        fail(info.Env(), "OUT_OF_RANGE", a, a + " = " + std::to_string(p.ids[t]) + " is outside the table");
      }
    }
    checkStatus(info.Env(), runLocked(info, [&](const Runner& r) { return table_->embedding(p, r); }));
  }

  void Rope(const Napi::CallbackInfo& info) {
    // (query, key, positions, numTokens, numHeads, numKvHeads, headSize, rotaryDim, maxPositions, cos, sin, interleaved)
    RopeParams p{};
    p.numTokens = intArg(info, 3, "numTokens", 0);
    p.numHeads = (int)intArg(info, 4, "numHeads", 1);
    p.numKvHeads = (int)intArg(info, 5, "numKvHeads", 1);
    p.headSize = (int)intArg(info, 6, "headSize", 2);
    p.rotaryDim = (int)intArg(info, 7, "table.rotaryDim", 2, p.headSize);
    if (p.rotaryDim % 2 != 0) fail(info.Env(), "INVALID_ARGUMENT", "table.rotaryDim", "table.rotaryDim must be even");
    const int64_t maxPos = intArg(info, 8, "table.maxPositions", 1);
    p.q = arrayArg<float>(info, 0, "query", mul(info, "query", {p.numTokens, p.numHeads, p.headSize}));
    p.k = arrayArg<float>(info, 1, "key", mul(info, "key", {p.numTokens, p.numKvHeads, p.headSize}));
    p.pos = arrayArg<int32_t>(info, 2, "positions", p.numTokens);
    const int64_t tn = mul(info, "table", {maxPos, p.rotaryDim / 2});
    p.cos = arrayArg<float>(info, 9, "table.cos", tn);
    p.sin = arrayArg<float>(info, 10, "table.sin", tn);
    p.interleaved = boolArg(info, 11);
    for (int64_t t = 0; t < p.numTokens; t++) {
      if (p.pos[t] < 0 || p.pos[t] >= maxPos) {
        const std::string a = "positions[" + std::to_string(t) + "]";
        fail(info.Env(), "OUT_OF_RANGE", a, a + " = " + std::to_string(p.pos[t]) + " is outside the rope table");
      }
    }
    checkStatus(info.Env(), runLocked(info, [&](const Runner& r) { return table_->rope(p, r); }));
  }

  void Softmax(const Napi::CallbackInfo& info) {
    // (x, out, rows, cols)
    SoftmaxParams p{};
    p.rows = intArg(info, 2, "rows", 0);
    p.cols = intArg(info, 3, "cols", 1);
    const int64_t n = mul(info, "x", {p.rows, p.cols});
    p.x = arrayArg<float>(info, 0, "x", n);
    p.y = arrayArg<float>(info, 1, "out", n);
    checkStatus(info.Env(), runLocked(info, [&](const Runner& r) { return table_->softmax(p, r); }));
  }

  void ReshapeAndCache(const Napi::CallbackInfo& info) {
    // (key, value, slotMapping, numTokens, cache[dtype, key, value, numBlocks, blockSize, numKvHeads, headSize, kScale, vScale] (4..12))
    CacheWriteParams p{};
    p.cache = cacheArgs(info, 4);
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
    checkStatus(info.Env(), runLocked(info, [&](const Runner& r) { return table_->reshapeAndCache(p, r); }));
  }

  void PagedAttention(const Napi::CallbackInfo& info) {
    AttentionArgs a;
    attentionArgs(info, a);
    checkStatus(info.Env(), runLocked(info, [&](const Runner& r) { return table_->pagedAttention(a.p, r); }));
  }

  Napi::Value PagedAttentionAsync(const Napi::CallbackInfo& info) {
    auto a = std::make_shared<AttentionArgs>();
    attentionArgs(info, *a);
    if (a->p.fp8Query) a->p.qScaleKv = a->qScaleKv.data();
    ThreadPool* tp = &pool(info);
    const KernelTable* k = table_;
    auto* w = new KernelWorker(info.Env(), info, pool_, [a, tp, k]() { return k->pagedAttention(a->p, tp->runner()); });
    Napi::Promise promise = w->Promise();
    w->Queue();
    return promise;
  }

  Napi::Value AmaxTensor(const Napi::CallbackInfo& info) {
    // (x, length)
    const int64_t n = intArg(info, 1, "length", 0, INT64_C(1) << 50);
    const float* x = arrayArg<float>(info, 0, "x", n);
    float result = 0;
    runLocked(info, [&](const Runner& r) {
      result = table_->amaxTensor(x, n, r);
      return kOk;
    });
    return Napi::Number::New(info.Env(), result);
  }

  void AmaxPerHead(const Napi::CallbackInfo& info) {
    // (x, out, numTokens, numHeads, headSize, accumulate)
    AmaxParams p{};
    p.numTokens = intArg(info, 2, "numTokens", 0);
    p.numHeads = (int)intArg(info, 3, "numHeads", 1);
    p.headSize = (int)intArg(info, 4, "headSize", 1);
    p.x = arrayArg<float>(info, 0, "x", mul(info, "x", {p.numTokens, p.numHeads, p.headSize}));
    p.out = arrayArg<float>(info, 1, "out", p.numHeads);
    p.accumulate = boolArg(info, 5);
    checkStatus(info.Env(), runLocked(info, [&](const Runner& r) { return table_->amaxPerHead(p, r); }));
  }

  QuantParams quantArgs(const Napi::CallbackInfo& info, bool quantize) {
    // quantize: (src f32, out u8, length, scales, runLength, period, format, saturate)
    // dequantize: (src u8, out f32, length, scales, runLength, period, format)
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
    int64_t sl = 0;
    p.scales = arrayArg<float>(info, 3, "scales", needScales, false, &sl);
    checkScales(info, p.scales, sl < needScales ? sl : needScales, "scales");
    return p;
  }
  void QuantizeFp8(const Napi::CallbackInfo& info) {
    const QuantParams p = quantArgs(info, true);
    checkStatus(info.Env(), runLocked(info, [&](const Runner& r) { return table_->quantizeFp8(p, r); }));
  }
  void DequantizeFp8(const Napi::CallbackInfo& info) {
    const QuantParams p = quantArgs(info, false);
    checkStatus(info.Env(), runLocked(info, [&](const Runner& r) { return table_->dequantizeFp8(p, r); }));
  }

  void EncodeFp8Bits(const Napi::CallbackInfo& info) {
    // (firstBits, count, out, format, saturate)
    const int64_t first = intArg(info, 0, "firstBits", 0, INT64_C(0xFFFFFFFF));
    const int64_t count = intArg(info, 1, "count", 0, INT64_C(0x100000000) - first);
    uint8_t* out = arrayArg<uint8_t>(info, 2, "out", count);
    const int format = (int)intArg(info, 3, "format", kE4M3FN, kE5M2FNUZ);
    const bool sat = boolArg(info, 4);
    checkStatus(info.Env(), runLocked(info, [&](const Runner& r) {
                  return table_->encodeFp8Bits((uint32_t)first, count, out, format, sat, r);
                }));
  }

  const KernelTable* table_ = nullptr;
  // Shared with in-flight async workers: dispose() drops this reference; the pool dies with the last user.
  std::shared_ptr<ThreadPool> pool_;
};

// ---- module functions ---------------------------------------------------------------------------

Napi::Value CpuInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const CpuFeatures f = detectCpu();
  Napi::Object o = Napi::Object::New(env);
  Napi::Object feats = Napi::Object::New(env);
  feats.Set("sse42", f.sse42);
  feats.Set("avx2", f.avx2);
  feats.Set("fma", f.fma);
  feats.Set("f16c", f.f16c);
  feats.Set("avx512f", f.avx512f);
  feats.Set("avx512bw", f.avx512bw);
  feats.Set("avx512vl", f.avx512vl);
  feats.Set("avx512dq", f.avx512dq);
  feats.Set("avx512vbmi", f.avx512vbmi);
  feats.Set("avx512bf16", f.avx512bf16);
  feats.Set("avx512fp16", f.avx512fp16);
  feats.Set("avx512vnni", f.avx512vnni);
  o.Set("features", feats);
  const std::vector<std::string> isas = usableIsas(f);
  Napi::Array arr = Napi::Array::New(env, isas.size());
  for (size_t i = 0; i < isas.size(); i++) arr.Set((uint32_t)i, isas[i]);
  o.Set("isas", arr);
  o.Set("cpus", availableCpus());
  return o;
}

/** fp8Decode(code, format) and fp8Encode(x, format, saturate): the shared header's scalar functions. */
Napi::Value Fp8Decode(const Napi::CallbackInfo& info) {
  const int64_t code = intArg(info, 0, "code", 0, 255);
  const int format = (int)intArg(info, 1, "format", kE4M3FN, kE5M2FNUZ);
  return Napi::Number::New(info.Env(), fp8_decode_rt((uint32_t)code, format));
}

Napi::Value Fp8Encode(const Napi::CallbackInfo& info) {
  const double x = numberArg(info, 0, "x");
  const int format = (int)intArg(info, 1, "format", kE4M3FN, kE5M2FNUZ);
  return Napi::Number::New(info.Env(), fp8_encode_rt((float)x, format, boolArg(info, 2)));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("abi", Napi::Number::New(env, kAbi));
  exports.Set("Context", Context::Define(env));
  exports.Set("cpuInfo", Napi::Function::New(env, CpuInfo));
  exports.Set("fp8Decode", Napi::Function::New(env, Fp8Decode));
  exports.Set("fp8Encode", Napi::Function::New(env, Fp8Encode));
  return exports;
}

}  // namespace
}  // namespace kvq

static Napi::Object KvqInit(Napi::Env env, Napi::Object exports) { return kvq::Init(env, exports); }

NODE_API_MODULE(kvq_cpu, KvqInit)
