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
#include "sample_buckets.h"
#include "sample_draw.h"
#include "napi_args.h"
#include "portable.h"
#include "threadpool.h"

#if defined(__linux__) && (defined(__x86_64__) || defined(_M_X64))
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__linux__) && defined(__aarch64__)
#include <sys/auxv.h>
#endif

namespace kvq {
namespace {


// ---- CPU features and ISA choice -------------------------------------------------------------------

/** What the CPU (and OS) supports: portable.h's detection (__builtin_cpu_supports, or CPUID + XGETBV on Windows). */
using CpuFeatures = X86Features;

CpuFeatures detectCpu() { return detectX86(); }

/**
 * AArch64: the dot-product extension (SDOT / UDOT). Linux reports it as HWCAP_ASIMDDP (bit 20 of AT_HWCAP, the
 * kernel's arch/arm64 uapi hwcap.h); other systems answer false, where the neon-dotprod tier is not built anyway.
 */
bool armDotprod() {
#if defined(__linux__) && defined(__aarch64__)
  const unsigned long kHwcapAsimddp = 1UL << 20;
  return (getauxval(AT_HWCAP) & kHwcapAsimddp) != 0;
#else
  return false;
#endif
}

#if defined(__x86_64__) || defined(_M_X64)
/**
 * Linux only: asks the kernel, once per process, for the AMX tile data state (arch_prctl ARCH_REQ_XCOMP_PERM,
 * XFEATURE_XTILEDATA; Linux 5.16+). Without it the first tile instruction would kill the process (SIGILL).
 */
bool amxPermitted() {
#if defined(__linux__)
  static const bool ok = [] {
    const long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
#else
  return false;
#endif
}
#endif

bool isaSupported(const CpuFeatures& f, const std::string& isa) {
  if (isa == "scalar") return true;
#if defined(__x86_64__) || defined(_M_X64)
  const bool avx2 = f.avx2 && f.fma && f.f16c;
  if (isa == "avx2") return avx2;
  // The AVX-512 tier is the Ice Lake / Zen 4 level: F, BW, VL, DQ, VBMI (byte-table FP8 decode) and VNNI (int8
  // dots of the quantized weights). Older AVX-512 parts (Skylake-SP, Cascade Lake; Cannon Lake, which lacks VNNI)
  // run the AVX2 kernels.
  if (isa == "avx512") return avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vbmi && f.avx512vnni;
  // The avx512 kernels plus AMX tiles for the GGML prefill GEMMs: the CPU has AMX-INT8, the build has the table
  // (Linux, GCC/Clang) and the kernel grants this process the tile state.
  if (isa == "amx") return isaSupported(f, "avx512") && f.amxInt8 && kernels_amx() != nullptr && amxPermitted();
#else
  (void)f;
#endif
#if defined(__aarch64__)
  // Advanced SIMD (NEON) is part of the AArch64 baseline: every arm64 CPU runs the neon kernels.
  if (isa == "neon") return true;
  // The same kernels with SDOT int8 dots: Linux builds, CPUs with the dot-product extension.
  if (isa == "neon-dotprod") return kernels_neon_dotprod() != nullptr && armDotprod();
#endif
  return false;
}

const KernelTable* tableFor(const std::string& isa) {
#if defined(__x86_64__) || defined(_M_X64)
  if (isa == "amx") return kernels_amx();
  if (isa == "avx512") return kernels_avx512();
  if (isa == "avx2") return kernels_avx2();
#endif
#if defined(__aarch64__)
  if (isa == "neon-dotprod") return kernels_neon_dotprod();
  if (isa == "neon") return kernels_neon();
#endif
  return kernels_scalar();
}

/** ISAs usable on this CPU, best first. */
std::vector<std::string> usableIsas(const CpuFeatures& f) {
  std::vector<std::string> out;
  for (const char* isa : {"amx", "avx512", "avx2", "neon-dotprod", "neon", "scalar"})
    if (isaSupported(f, isa)) out.emplace_back(isa);
  return out;
}

// ---- argument helpers: @kvq/kernels' csrc/napi_args.h (shared with the GPU addon) ------------------

using namespace napi_args;

void checkStatus(Napi::Env env, int status) {
  if (status == kOutOfMemory) fail(env, "UNSUPPORTED", "", "out of memory for kernel scratch");
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
                           InstanceMethod<&Context::LinearAsync>("linearAsync"),
                           InstanceMethod<&Context::PagedAttentionAsync>("pagedAttentionAsync"),
                           InstanceMethod<&Context::ReadBytes>("readBytes"),
                           InstanceMethod<&Context::QuantizeActivationsQ8>("quantizeActivationsQ8"),
                           InstanceMethod<&Context::SampleBuckets>("sampleBuckets"),
                           InstanceMethod<&Context::SampleBucketIds>("sampleBucketIds"),
                           InstanceMethod<&Context::SampleDraw>("sampleDraw"),
                           // The kernel ops (napi_args.h): Linear, ..., EncodeFp8Bits and the standard ops' Op_* methods.
                           KVQ_NAPI_KERNEL_METHODS
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
    if (isa != "scalar" && isa != "avx2" && isa != "avx512" && isa != "amx" && isa != "neon" && isa != "neon-dotprod") {
      fail(info.Env(), "INVALID_ARGUMENT", "isa",
           "isa must be 'auto', 'scalar', 'avx2', 'avx512', 'amx', 'neon' or 'neon-dotprod', got '" + isa + "'");
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

  // Each op: the shared reader (napi_args.h), then the kernel of the chosen ISA on the pool.

  void Linear(const Napi::CallbackInfo& info) {
    const LinearParams p = readLinear(info);
    checkStatus(info.Env(), runLocked(info, [&](const Runner& r) { return table_->linear(p, r); }));
  }

  Napi::Value LinearAsync(const Napi::CallbackInfo& info) {
    const LinearParams p = readLinear(info);
    ThreadPool* tp = &pool(info);
    const KernelTable* k = table_;
    auto* w = new KernelWorker(info.Env(), info, pool_, [p, tp, k]() { return k->linear(p, tp->runner()); });
    Napi::Promise promise = w->Promise();
    w->Queue();
    return promise;
  }

  // The standard ops (ops.h KVQ_STANDARD_OPS): read the arguments, run the kernel of the chosen ISA on the pool.
#define KVQ_METHOD(js, cpuFn, gpuFn, P, read)                                                           \
  void Op_##cpuFn(const Napi::CallbackInfo& info) {                                                      \
    const P p = read(info);                                                                              \
    checkStatus(info.Env(), runLocked(info, [&](const Runner& r) { return table_->cpuFn(p, r); }));      \
  }
  KVQ_STANDARD_OPS(KVQ_METHOD)
#undef KVQ_METHOD

  /**
   * sampleBuckets(logits, temperature, lower, pruneNats, topK, minWeight, mass, result): the vocabulary pass of
   * sampling (sample_buckets.h) on the pool: chunks of 8192 ids weighed in parallel. `result` gets
   * {count, total, max, floor}.
   */
  void SampleBuckets(const Napi::CallbackInfo& info) {
    SampleBucketsParams p{};
    int64_t n = 0;
    p.logits = arrayArg<float>(info, 0, "logits", 1, false, &n);
    p.n = n;
    p.temperature = numberArg(info, 1, "temperature");
    p.lower = numberArg(info, 2, "lower");
    p.pruneNats = numberArg(info, 3, "pruneNats");
    const double topK = numberArg(info, 4, "topK");
    p.minWeight = numberArg(info, 5, "minWeight");
    checkTemperature(info, p.temperature);
    if (std::isnan(p.lower)) fail(info.Env(), "INVALID_ARGUMENT", "lower", "lower must be a number");
    if (!(p.pruneNats >= 0)) fail(info.Env(), "INVALID_ARGUMENT", "pruneNats", "pruneNats must be >= 0");
    checkTopK(info, topK);
    checkMinWeight(info, p.minWeight);
    p.topK = (int32_t)topK;
    p.mass = arrayArg<double>(info, 6, "mass", kSampleBuckets);
    double* result = arrayArg<double>(info, 7, "result", 4);
    checkStatus(info.Env(), runLocked(info, [&](const Runner& r) { return sample_buckets(p, *table_, r, result) ? kOk : kOutOfMemory; }));
  }

  /**
   * sampleBucketIds(logits, temperature, max, floor, minWeight, bucket, ids, weight): the candidates of one bucket
   * (sample_buckets.h), on the calling thread; returns how many.
   */
  Napi::Value SampleBucketIds(const Napi::CallbackInfo& info) {
    SampleBucketIdsParams p{};
    int64_t n = 0;
    p.logits = arrayArg<float>(info, 0, "logits", 1, false, &n);
    p.n = n;
    p.temperature = numberArg(info, 1, "temperature");
    p.max = numberArg(info, 2, "max");
    p.floor = numberArg(info, 3, "floor");
    p.minWeight = numberArg(info, 4, "minWeight");
    const double bucket = numberArg(info, 5, "bucket");
    checkTemperature(info, p.temperature);
    if (std::isnan(p.max)) fail(info.Env(), "INVALID_ARGUMENT", "max", "max must be a number");
    if (std::isnan(p.floor)) fail(info.Env(), "INVALID_ARGUMENT", "floor", "floor must be a number");
    checkMinWeight(info, p.minWeight);
    if (!(bucket >= -1 && bucket < kSampleBuckets) || bucket != std::floor(bucket)) {
      fail(info.Env(), "INVALID_ARGUMENT", "bucket", "bucket must be an integer in [-1, " + std::to_string(kSampleBuckets) + ")");
    }
    p.bucket = (int32_t)bucket;
    p.ids = arrayArg<int32_t>(info, 6, "ids", n);
    p.weight = arrayArg<double>(info, 7, "weight", n);
    int64_t count = 0;
    checkStatus(info.Env(), runLocked(info, [&](const Runner&) {
      count = sample_bucket_ids(p, *table_);
      return kOk;
    }));
    return Napi::Number::New(info.Env(), (double)count);
  }

  /**
   * sampleDraw(logits, temperature, topK, topP, minWeight, pruneNats, u): the token `u` draws (sample_draw.h; the
   * vocabulary pass on the pool, the rest on the calling thread); -1 when the row has no candidate.
   */
  Napi::Value SampleDraw(const Napi::CallbackInfo& info) {
    SampleDrawParams p{};
    int64_t n = 0;
    p.logits = arrayArg<float>(info, 0, "logits", 1, false, &n);
    p.n = n;
    p.temperature = numberArg(info, 1, "temperature");
    const double topK = numberArg(info, 2, "topK");
    p.topP = numberArg(info, 3, "topP");
    p.minWeight = numberArg(info, 4, "minWeight");
    p.pruneNats = numberArg(info, 5, "pruneNats");
    p.u = numberArg(info, 6, "u");
    checkTemperature(info, p.temperature);
    checkTopK(info, topK);
    if (!(p.topP > 0 && p.topP <= 1)) fail(info.Env(), "INVALID_ARGUMENT", "topP", "topP must be in (0, 1]");
    checkMinWeight(info, p.minWeight);
    if (!(p.pruneNats >= 0)) fail(info.Env(), "INVALID_ARGUMENT", "pruneNats", "pruneNats must be >= 0");
    if (!(p.u >= 0 && p.u < 1)) fail(info.Env(), "INVALID_ARGUMENT", "u", "u must be in [0, 1)");
    p.topK = (int32_t)topK;
    int32_t token = -1;
    checkStatus(info.Env(), runLocked(info, [&](const Runner& r) { return sample_draw(p, *table_, r, &token) ? kOk : kOutOfMemory; }));
    return Napi::Number::New(info.Env(), (double)token);
  }

  static void checkTopK(const Napi::CallbackInfo& info, double topK) {
    if (!(topK >= 0 && topK < 2147483648.0) || topK != std::floor(topK)) fail(info.Env(), "INVALID_ARGUMENT", "topK", "topK must be an integer in [0, 2^31)");
  }

  static void checkTemperature(const Napi::CallbackInfo& info, double t) {
    if (!(t > 0) || !std::isfinite(t)) fail(info.Env(), "INVALID_ARGUMENT", "temperature", "temperature must be finite and > 0");
  }

  static void checkMinWeight(const Napi::CallbackInfo& info, double m) {
    if (!(m >= 0 && m <= 1)) fail(info.Env(), "INVALID_ARGUMENT", "minWeight", "minWeight must be in [0, 1]");
  }

  void Embedding(const Napi::CallbackInfo& info) {
    const EmbeddingParams p = readEmbedding(info);
    checkStatus(info.Env(), runLocked(info, [&](const Runner& r) { return table_->embedding(p, r); }));
  }

  void ReshapeAndCache(const Napi::CallbackInfo& info) {
    const CacheWriteParams p = readCacheWrite(info, /*kvQuant=*/true, /*mixed=*/true);
    checkStatus(info.Env(), runLocked(info, [&](const Runner& r) { return table_->reshapeAndCache(p, r); }));
  }

  void PagedAttention(const Napi::CallbackInfo& info) {
    AttentionInput a;
    readAttention(info, a, /*kvQuant=*/true, /*mixed=*/true);
    checkStatus(info.Env(), runLocked(info, [&](const Runner& r) { return table_->pagedAttention(a.p, r); }));
  }

  Napi::Value PagedAttentionAsync(const Napi::CallbackInfo& info) {
    auto a = std::make_shared<AttentionInput>();
    readAttention(info, *a, /*kvQuant=*/true, /*mixed=*/true);
    ThreadPool* tp = &pool(info);
    const KernelTable* k = table_;
    auto* w = new KernelWorker(info.Env(), info, pool_, [a, tp, k]() { return k->pagedAttention(a->p, tp->runner()); });
    Napi::Promise promise = w->Promise();
    w->Queue();
    return promise;
  }

  Napi::Value AmaxTensor(const Napi::CallbackInfo& info) {
    int64_t n = 0;
    const float* x = readAmaxTensor(info, &n);
    float result = 0;
    runLocked(info, [&](const Runner& r) {
      result = table_->amaxTensor(x, n, r);
      return kOk;
    });
    return Napi::Number::New(info.Env(), result);
  }

  void AmaxPerHead(const Napi::CallbackInfo& info) {
    const AmaxParams p = readAmaxPerHead(info);
    checkStatus(info.Env(), runLocked(info, [&](const Runner& r) { return table_->amaxPerHead(p, r); }));
  }

  void QuantizeFp8(const Napi::CallbackInfo& info) {
    const QuantParams p = readQuant(info, true);
    checkStatus(info.Env(), runLocked(info, [&](const Runner& r) { return table_->quantizeFp8(p, r); }));
  }
  void DequantizeFp8(const Napi::CallbackInfo& info) {
    const QuantParams p = readQuant(info, false);
    checkStatus(info.Env(), runLocked(info, [&](const Runner& r) { return table_->dequantizeFp8(p, r); }));
  }

  void EncodeFp8Bits(const Napi::CallbackInfo& info) {
    const EncodeBitsParams p = readEncodeBits(info);
    checkStatus(info.Env(), runLocked(info, [&](const Runner& r) {
                  return table_->encodeFp8Bits(p.first, p.count, p.out, p.format, p.sat, r);
                }));
  }

  /**
   * readBytes(data: Uint8Array, length): stream `length` bytes once on the pool's threads (64-bit word sums, 1 MiB
   * chunks, 8 x 64-bit lane sums) and return a checksum: the memory-read baseline of the weight-GEMV bandwidth benchmark.
   */
  Napi::Value ReadBytes(const Napi::CallbackInfo& info) {
    const int64_t n = intArg(info, 1, "length", 0, INT64_C(1) << 50);
    const uint8_t* d = arrayArg<uint8_t>(info, 0, "data", n);
    const int64_t chunk = INT64_C(1) << 20, tasks = (n + chunk - 1) / chunk;
    std::vector<uint64_t> parts((size_t)(tasks > 0 ? tasks : 1), 0);
    runLocked(info, [&](const Runner& r) {
      auto body = [&](int64_t t, int) {
        const int64_t i0 = t * chunk, i1 = i0 + chunk < n ? i0 + chunk : n;
        uint64_t a[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // vectorized by the compiler (16-byte loads at baseline)
        int64_t i = i0;
        for (; i + 64 <= i1; i += 64) {
          uint64_t w[8];
          std::memcpy(w, d + i, 64);
          for (int k = 0; k < 8; k++) a[k] += w[k];
        }
        for (; i < i1; i++) a[0] += d[i];
        uint64_t x = 0;
        for (int k = 0; k < 8; k++) x ^= a[k];
        parts[(size_t)t] = x;
      };
      r.parallel_for(tasks, body);
      return kOk;
    });
    uint64_t x = 0;
    for (uint64_t v : parts) x ^= v;
    return Napi::Number::New(info.Env(), (double)(x & 0xFFFFFFFFu));
  }

  /**
   * quantizeActivationsQ8(x: Float32Array, rows, cols, block: 32 | 256, q: Int8Array, scales: Float32Array): GGML's
   * 8-bit activation quantization (the first step of linear with activations 'q8') on this context's ISA, so tests
   * can hold the vector code bit-exactly to the reference (@kvq/kernels quantizeActivationBlockQ8).
   */
  void QuantizeActivationsQ8(const Napi::CallbackInfo& info) {
    const int64_t rows = intArg(info, 1, "rows", 0), cols = intArg(info, 2, "cols", 0);
    const int64_t block = intArg(info, 3, "block", 32, 256);
    if (block != 32 && block != 256) fail(info.Env(), "INVALID_ARGUMENT", "block", "block must be 32 or 256, got " + std::to_string(block));
    if (cols % block != 0) fail(info.Env(), "SHAPE_MISMATCH", "cols", "cols (" + std::to_string(cols) + ") must be a multiple of block (" + std::to_string(block) + ")");
    const float* x = arrayArg<float>(info, 0, "x", rows * cols);
    int8_t* q = arrayArg<int8_t>(info, 4, "q", rows * cols);
    float* scales = arrayArg<float>(info, 5, "scales", rows * cols / block);
    const int dt = block == 256 ? kQ4_K : kQ8_0;
    checkStatus(info.Env(), runLocked(info, [&](const Runner& r) { return table_->quantizeActQ8(dt, x, rows, cols, q, scales, r); }));
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
  feats.Set("amxInt8", f.amxInt8);
  feats.Set("dotprod", armDotprod());
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
  // The kernels read the write-time-scaled KV dtypes (ops.h kKvFp8PerTokenHead..kKvInt4G32F16; docs/spec/kv-dtypes.md).
  exports.Set("kvQuantKernels", Napi::Boolean::New(env, true));
  // The kernels read caches whose V pool has another dtype than the K pool (ops.h KvCacheRef.vdtype; kvmixed_impl.h).
  exports.Set("mixedKvKernels", Napi::Boolean::New(env, true));
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
