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

#include "act_q8.h"
#include "gpu.h"
#include "napi_args.h"

namespace kvq {
namespace {

using gpu::Status;


// ---- argument helpers: @kvq/kernels' csrc/napi_args.h (shared with @kvq/kernels-cpu's addon) ---------------

using namespace napi_args;

[[noreturn]] void failStatus(Napi::Env env, const Status& st, const char* op) {
  const char* code = "BACKEND_UNAVAILABLE";
  if (st.code == gpu::kOutOfMemory || st.code == gpu::kUnsupported) code = "UNSUPPORTED";
  fail(env, code, "", std::string(op) + ": " + st.message);
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

  void init(std::shared_ptr<Holder> h, void* p, size_t bytes, napi_typedarray_type kind) {
    holder_ = std::move(h);
    ptr_ = p;
    bytes_ = bytes;
    kind_ = kind;
  }
  void* ptr() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  /** Element type (the typed array it was uploaded from, or the kind it was allocated as). */
  napi_typedarray_type kind() const { return kind_; }
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
  napi_typedarray_type kind_ = napi_uint8_array;
};

size_t elementBytes(napi_typedarray_type t) {
  switch (t) {
    case napi_float32_array:
    case napi_int32_array:
    case napi_uint32_array: return 4;
    case napi_uint16_array:
    case napi_int16_array: return 2;
    case napi_float64_array:
    case napi_bigint64_array:
    case napi_biguint64_array: return 8;
    default: return 1;
  }
}

/**
 * napi_args' device-array resolver: a DeviceBuffer passed where an op takes an activation array stands for its device
 * memory (the runtime then neither uploads nor downloads it). Freed buffers are an error, not a fallback.
 */
void* resolveDeviceArray(napi_env env, napi_value value, napi_typedarray_type* kind, size_t* length) {
  Napi::Value v(env, value);
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(DeviceBuffer::ctor(env).Value())) return nullptr;
  DeviceBuffer* b = DeviceBuffer::Unwrap(v.As<Napi::Object>());
  if (!b->ptr()) fail(env, "INVALID_ARGUMENT", "", "a device array passed to an op has been freed");
  *kind = b->kind();
  *length = b->bytes() / elementBytes(b->kind());
  return b->ptr();
}

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
                           InstanceMethod<&Context::TransferStats>("transferStats"),
                           InstanceMethod<&Context::Upload>("upload"),
                           InstanceMethod<&Context::Download>("download"),
                           InstanceMethod<&Context::Alloc>("alloc"),
                           InstanceMethod<&Context::Write>("write"),
                           InstanceMethod<&Context::Read>("read"),
                           InstanceMethod<&Context::Copy>("copy"),
                           InstanceMethod<&Context::Fp8VendorCheck>("fp8VendorCheck"),
                           InstanceMethod<&Context::BenchAttention>("benchAttention"),
                           InstanceMethod<&Context::BenchCopy>("benchCopy"),
                           InstanceMethod<&Context::BenchLinear>("benchLinear"),
                           // The kernel ops (napi_args.h): Linear, ..., EncodeFp8Bits and the standard ops' Op_* methods.
                           KVQ_NAPI_KERNEL_METHODS
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

  /** transferStats() -> cumulative host<->device bytes and copies of this context. */
  Napi::Value TransferStats(const Napi::CallbackInfo& info) {
    uint64_t v[5];
    gpu::transfer_stats(ctx(info), v);
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("hostToDeviceBytes", (double)v[0]);
    o.Set("deviceToHostBytes", (double)v[1]);
    o.Set("hostToDeviceCopies", (double)v[2]);
    o.Set("deviceToHostCopies", (double)v[3]);
    o.Set("waits", (double)v[4]);
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
    return wrapBuffer(info.Env(), p, bytes, a.TypedArrayType());
  }

  Napi::Object wrapBuffer(Napi::Env env, void* p, size_t bytes, napi_typedarray_type kind) {
    Napi::Object obj = DeviceBuffer::ctor(env).New({});
    DeviceBuffer::Unwrap(obj)->init(holder_, p, bytes, kind);
    return obj;
  }

  /** alloc(kind, length) -> DeviceBuffer of `length` elements (kind: 0 f32, 1 i32, 2 u16, 3 u8, 4 i8), contents undefined. */
  Napi::Value Alloc(const Napi::CallbackInfo& info) {
    gpu::Context* c = ctx(info);
    static const napi_typedarray_type kinds[] = {napi_float32_array, napi_int32_array, napi_uint16_array, napi_uint8_array, napi_int8_array};
    const napi_typedarray_type kind = kinds[intArg(info, 0, "kind", 0, 4)];
    const int64_t length = intArg(info, 1, "length", 1, INT64_C(1) << 40);
    const size_t bytes = (size_t)length * elementBytes(kind);
    Status st;
    void* p = gpu::buffer_alloc(c, bytes, &st);
    if (!p) failStatus(info.Env(), st, "alloc");
    return wrapBuffer(info.Env(), p, bytes, kind);
  }

  /** The typed array at info[i], which must have the buffer's element type; its bytes and data. */
  static void* sameKindArray(const Napi::CallbackInfo& info, size_t i, const DeviceBuffer* b, size_t* bytes) {
    if (info.Length() <= i || !info[i].IsTypedArray()) fail(info.Env(), "WRONG_ARRAY_TYPE", "array", "needs a typed array");
    Napi::TypedArray a = info[i].As<Napi::TypedArray>();
    if (a.TypedArrayType() != b->kind()) {
      fail(info.Env(), "WRONG_ARRAY_TYPE", "array",
           std::string("the device array holds ") + typedArrayName(b->kind()) + " elements, got a " + typedArrayName(a.TypedArrayType()));
    }
    *bytes = a.ByteLength();
    return static_cast<char*>(a.ArrayBuffer().Data()) + a.ByteOffset();
  }

  /** Byte offset of element `offset` (info[i]) such that `bytes` more fit in b. */
  static size_t rangeArg(const Napi::CallbackInfo& info, size_t i, const DeviceBuffer* b, size_t bytes) {
    const size_t eb = elementBytes(b->kind());
    const int64_t offset = intArg(info, i, "offset", 0, INT64_C(1) << 40);
    if ((size_t)offset * eb + bytes > b->bytes()) {
      fail(info.Env(), "OUT_OF_RANGE", "offset",
           "elements [" + std::to_string(offset) + ", " + std::to_string(offset + (int64_t)(bytes / eb)) + ") are outside the device array of " +
               std::to_string(b->bytes() / eb));
    }
    return (size_t)offset * eb;
  }

  /** write(buffer, typedArray, offset): host -> device into elements [offset, offset + array.length). */
  void Write(const Napi::CallbackInfo& info) {
    gpu::Context* c = ctx(info);
    DeviceBuffer* b = bufferArg(info, 0, "buffer", 0);
    if (!b) fail(info.Env(), "INVALID_ARGUMENT", "buffer", "write needs a DeviceBuffer");
    size_t bytes = 0;
    const void* src = sameKindArray(info, 1, b, &bytes);
    const size_t at = rangeArg(info, 2, b, bytes);
    Status st;
    if (!gpu::buffer_upload(c, static_cast<char*>(b->ptr()) + at, src, bytes, &st)) failStatus(info.Env(), st, "write");
  }

  /** read(buffer, typedArray, offset): device -> host from elements [offset, offset + array.length); waits for the device. */
  void Read(const Napi::CallbackInfo& info) {
    gpu::Context* c = ctx(info);
    DeviceBuffer* b = bufferArg(info, 0, "buffer", 0);
    if (!b) fail(info.Env(), "INVALID_ARGUMENT", "buffer", "read needs a DeviceBuffer");
    size_t bytes = 0;
    void* dst = sameKindArray(info, 1, b, &bytes);
    const size_t at = rangeArg(info, 2, b, bytes);
    Status st;
    if (!gpu::buffer_download(c, dst, static_cast<const char*>(b->ptr()) + at, bytes, &st)) failStatus(info.Env(), st, "read");
  }

  /** copy(dst, dstByteOffset, src, srcByteOffset, bytes): device -> device, queued on the stream. */
  void Copy(const Napi::CallbackInfo& info) {
    gpu::Context* c = ctx(info);
    DeviceBuffer* d = bufferArg(info, 0, "dst", 0);
    DeviceBuffer* s = bufferArg(info, 2, "src", 0);
    if (!d || !s) fail(info.Env(), "INVALID_ARGUMENT", "buffer", "copy needs two DeviceBuffers");
    const int64_t dOff = intArg(info, 1, "dstOffset", 0, INT64_C(1) << 40);
    const int64_t sOff = intArg(info, 3, "srcOffset", 0, INT64_C(1) << 40);
    const int64_t bytes = intArg(info, 4, "bytes", 0, INT64_C(1) << 40);
    if ((size_t)(dOff + bytes) > d->bytes() || (size_t)(sOff + bytes) > s->bytes()) {
      fail(info.Env(), "OUT_OF_RANGE", "bytes", "copy: the byte range is outside a device array");
    }
    Status st;
    if (!gpu::buffer_copy(c, static_cast<char*>(d->ptr()) + dOff, static_cast<const char*>(s->ptr()) + sOff, (size_t)bytes, &st)) {
      failStatus(info.Env(), st, "copy");
    }
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

  /** Bytes of one pool of dtype `dt` of cache `c` (each pool its own: K in c.dtype, V in c.vdtype). */
  static size_t poolBytes(const KvCacheRef& c, int dt) {
    KvQuantLayout l{};
    return kv_quant_layout(dt, c.blockSize, c.numKvHeads, c.headSize, &l)
               ? (size_t)(c.numBlocks * l.blockBytes)
               : (size_t)c.numBlocks * c.blockSize * c.numKvHeads * c.headSize * dtype_bytes(dt);
  }

  /** Resident pools at info[i], info[i+1] (both or neither), each at least its own dtype's pool bytes. */
  void residentCache(const Napi::CallbackInfo& info, size_t i, KvCacheRef& c) {
    DeviceBuffer* k = bufferArg(info, i, "cache.key (device)", poolBytes(c, c.dtype));
    DeviceBuffer* v = bufferArg(info, i + 1, "cache.value (device)", poolBytes(c, c.vdtype));
    if ((k == nullptr) != (v == nullptr)) {
      fail(info.Env(), "INVALID_ARGUMENT", "cache", "resident cache pools must be given for both key and value");
    }
    c.kDev = k ? k->ptr() : nullptr;
    c.vDev = v ? v->ptr() : nullptr;
  }

  // Each op: the shared reader (napi_args.h), then this addon's resident buffers (after the shared arguments).

  /**
   * Resident scale / zero-point buffers of a weight at info[i], info[i+1] (after its data buffer): only for the
   * compressed-tensors dtypes that have them, each at least the host array's size.
   */
  gpu::WeightAuxDev residentWeightAux(const Napi::CallbackInfo& info, size_t i, const WeightRef& w, const std::string& name) {
    gpu::WeightAuxDev aux;
    const std::string sn = name + ".scale (device)", zn = name + ".zeroPoint (device)";
    const bool hasScale = w.dtype >= kWFp8E4M3, hasZero = w.dtype == kWInt4 && w.zero_point;
    DeviceBuffer* s = bufferArg(info, i, sn.c_str(), hasScale ? (size_t)w.scale_len * 4 : 0);
    DeviceBuffer* z = bufferArg(info, i + 1, zn.c_str(), hasZero ? (size_t)w.scale_len : 0);
    if (s && !hasScale) fail(info.Env(), "INVALID_ARGUMENT", sn, sn + " is only used by the compressed-tensors dtypes");
    if (z && !hasZero) fail(info.Env(), "INVALID_ARGUMENT", zn, zn + " is only used by int4 with a zero point");
    aux.scale = s ? s->ptr() : nullptr;
    aux.zeroPoint = z ? z->ptr() : nullptr;
    return aux;
  }

  void Linear(const Napi::CallbackInfo& info) {
    // shared arguments (0..kLinearArgc-1), then weight data, scale, zero point (device)?
    LinearParams p = readLinear(info);
    // 8- or 16-bit activations (p.xq): the GPU rounds x on the device (act_q8.h, the same functions as the CPU's).
    DeviceBuffer* wd = bufferArg(info, kLinearArgc, "weight (device)", (size_t)weight_data_bytes(p.w));
    p.wDev = wd ? wd->ptr() : nullptr;
    const gpu::WeightAuxDev aux = residentWeightAux(info, kLinearArgc + 1, p.w, "weight");
    Status st;
    if (!gpu::linear(ctx(info), p, &st, aux)) failStatus(info.Env(), st, "linear");
  }

  // The standard ops (ops.h KVQ_STANDARD_OPS): read the arguments, run the GPU entry point.
#define KVQ_METHOD(js, cpuFn, gpuFn, P, read)                                \
  void Op_##cpuFn(const Napi::CallbackInfo& info) {                           \
    const P p = read(info);                                                   \
    Status st;                                                                \
    if (!gpu::gpuFn(ctx(info), p, &st)) failStatus(info.Env(), st, js);       \
  }
  KVQ_STANDARD_OPS(KVQ_METHOD)
#undef KVQ_METHOD

  void Embedding(const Napi::CallbackInfo& info) {
    EmbeddingParams p = readEmbedding(info);
    DeviceBuffer* td = bufferArg(info, kEmbeddingArgc, "table (device)", (size_t)weight_data_bytes(p.table));
    p.tableDev = td ? td->ptr() : nullptr;
    const gpu::WeightAuxDev aux = residentWeightAux(info, kEmbeddingArgc + 1, p.table, "table");
    Status st;
    if (!gpu::embedding(ctx(info), p, &st, aux)) failStatus(info.Env(), st, "embedding");
  }

  void ReshapeAndCache(const Napi::CallbackInfo& info) {
    // shared arguments (0..12), then kDev?, vDev? (13, 14); K and V may have different dtypes (kvquant.cu's mixed path)
    CacheWriteParams p = readCacheWrite(info, true, true);
    residentCache(info, 13, p.cache);
    // 15: deviceOnly: the resident pools are the only copy (the host pools are not written).
    p.cache.deviceOnly = p.cache.kDev != nullptr && boolArg(info, 15);
    Status st;
    if (!gpu::reshape_and_cache(ctx(info), p, &st)) failStatus(info.Env(), st, "reshapeAndCache");
  }

  void PagedAttention(const Napi::CallbackInfo& info) {
    // shared arguments (0..21), then kDev?, vDev? (22, 23)
    AttentionInput a;
    readAttention(info, a, true, true);
    residentCache(info, 22, a.p.cache);
    Status st;
    if (!gpu::paged_attention(ctx(info), a.p, &st)) failStatus(info.Env(), st, "pagedAttention");
  }

  Napi::Value AmaxTensor(const Napi::CallbackInfo& info) {
    int64_t n = 0;
    const float* x = readAmaxTensor(info, &n);
    float result = 0;
    Status st;
    if (!gpu::amax_tensor(ctx(info), x, n, &result, &st)) failStatus(info.Env(), st, "amaxTensor");
    return Napi::Number::New(info.Env(), result);
  }

  void AmaxPerHead(const Napi::CallbackInfo& info) {
    const AmaxParams p = readAmaxPerHead(info, 65535);  // one block row per head (grid.y)
    Status st;
    if (!gpu::amax_per_head(ctx(info), p, &st)) failStatus(info.Env(), st, "amaxPerHead");
  }

  void QuantizeFp8(const Napi::CallbackInfo& info) {
    const QuantParams p = readQuant(info, true);
    Status st;
    if (!gpu::quantize_fp8(ctx(info), p, &st)) failStatus(info.Env(), st, "quantizeFp8");
  }
  void DequantizeFp8(const Napi::CallbackInfo& info) {
    const QuantParams p = readQuant(info, false);
    Status st;
    if (!gpu::dequantize_fp8(ctx(info), p, &st)) failStatus(info.Env(), st, "dequantizeFp8");
  }

  void EncodeFp8Bits(const Napi::CallbackInfo& info) {
    const EncodeBitsParams p = readEncodeBits(info);
    Status st;
    if (!gpu::encode_fp8_bits(ctx(info), p.first, p.count, p.out, p.format, p.sat, &st)) failStatus(info.Env(), st, "encodeFp8Bits");
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
    if (b.fp8Query && b.dtype < kFp8E4M3FN) fail(info.Env(), "INVALID_ARGUMENT", "fp8Query", "fp8Query needs an FP8 cache");
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
    const int wdtype = (int)intArg(info, 0, "wdtype", 0, 26);
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
  deviceArrayResolver() = resolveDeviceArray;
  exports.Set("abi", Napi::Number::New(env, kAbi));
  exports.Set("vendor", Napi::String::New(env, gpu::vendor()));
  exports.Set("targets", Napi::String::New(env, gpu::compiled_targets()));
  // Caches whose V pool has another KV dtype than the K pool have kernels (kvquant.cu); binaries built before them
  // lack this flag and the facade refuses such caches before any native call.
  exports.Set("mixedKvKernels", Napi::Boolean::New(env, true));
  exports.Set("Context", Context::Define(env));
  exports.Set("DeviceBuffer", buf);
  exports.Set("probe", Napi::Function::New(env, Probe));
  return exports;
}

}  // namespace
}  // namespace kvq

static Napi::Object KvqInit(Napi::Env env, Napi::Object exports) { return kvq::Init(env, exports); }

NODE_API_MODULE(kvq_gpu, KvqInit)
