// SPDX-License-Identifier: Apache-2.0
//
// Runtime side of the GPU backend: capability probing, contexts (device, stream, scratch buffers, cuBLAS loaded
// with dlopen), resident buffers, and the device-side checks of the shared FP8 header against the vendor's own
// conversions. Compiled by nvcc (CUDA) or hipcc (HIP) through vendor.h.
#include "common.cuh"

#include <dlfcn.h>
#include <stdlib.h>

#include <algorithm>
#include <vector>

#if !KVQ_IS_HIP && !KVQ_IS_SIM
#include <cuda_fp8.h>
#endif

#define KVQ_STR2(x) #x
#define KVQ_STR(x) KVQ_STR2(x)
#ifndef KVQ_TARGETS
#define KVQ_TARGETS unknown
#endif

namespace kvq {
namespace gpu {

const char* vendor() { return KVQ_VENDOR_NAME; }
const char* compiled_targets() { return KVQ_STR(KVQ_TARGETS); }

static void fill_props(int dev, DeviceProps* p) {
  cudaDeviceProp prop;
  memset(p, 0, sizeof(*p));
  p->ordinal = dev;
  if (cudaGetDeviceProperties(&prop, dev) != cudaSuccess) {
    (void)cudaGetLastError();
    snprintf(p->name, sizeof(p->name), "device %d (properties unavailable)", dev);
    return;
  }
  snprintf(p->name, sizeof(p->name), "%s", prop.name);
#if KVQ_IS_HIP
  snprintf(p->arch, sizeof(p->arch), "%s", prop.gcnArchName);
#elif KVQ_IS_SIM
  snprintf(p->arch, sizeof(p->arch), "sim-w%d", KVQ_SIM_WARP);
#else
  snprintf(p->arch, sizeof(p->arch), "sm_%d%d", prop.major, prop.minor);
#endif
  p->major = prop.major;
  p->minor = prop.minor;
  p->multiProcessors = prop.multiProcessorCount;
  p->warpSize = prop.warpSize;
  p->totalMemory = (int64_t)prop.totalGlobalMem;
  p->l2Bytes = (int64_t)prop.l2CacheSize;
#if KVQ_IS_HIP
  p->sharedPerBlockOptin = (int64_t)prop.sharedMemPerBlock;
#else
  p->sharedPerBlockOptin = (int64_t)(prop.sharedMemPerBlockOptin > prop.sharedMemPerBlock ? prop.sharedMemPerBlockOptin
                                                                                          : prop.sharedMemPerBlock);
#endif
  int clk = 0, bus = 0;
  if (cudaDeviceGetAttribute(&clk, cudaDevAttrMemoryClockRate, dev) != cudaSuccess) clk = 0;
  if (cudaDeviceGetAttribute(&bus, cudaDevAttrGlobalMemoryBusWidth, dev) != cudaSuccess) bus = 0;
  (void)cudaGetLastError();
  p->memoryClockKHz = clk;
  p->busWidthBits = bus;
  // Double data rate: two transfers per clock.
  p->peakBandwidthGBs = 2.0 * (double)clk * 1e3 * ((double)bus / 8.0) / 1e9;
}

bool probe(RuntimeInfo* info, DeviceProps* props, int maxProps, int* nProps, Status* st) {
  memset(info, 0, sizeof(*info));
  *nProps = 0;
  (void)cudaRuntimeGetVersion(&info->runtimeVersion);
  const cudaError_t de = cudaDriverGetVersion(&info->driverVersion);
  (void)cudaGetLastError();
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    st->code = kNoDevice;
    snprintf(st->message, sizeof(st->message), "no usable %s device: %s failed with %s (%s)%s",
             KVQ_IS_HIP ? "HIP" : KVQ_IS_SIM ? "simulated" : "CUDA", KVQ_IS_HIP ? "hipGetDeviceCount" : "cudaGetDeviceCount", cudaGetErrorName(e), cudaGetErrorString(e),
             (de == cudaSuccess && info->driverVersion == 0) ? "; no driver is installed" : "");
    (void)cudaGetLastError();
    return false;
  }
  info->deviceCount = n;
  if (n == 0) {
    st->code = kNoDevice;
    snprintf(st->message, sizeof(st->message), "the %s runtime sees no device", KVQ_IS_HIP ? "HIP" : "CUDA");
    return false;
  }
  for (int d = 0; d < n && d < maxProps; d++) fill_props(d, &props[(*nProps)++]);
  return true;
}

// ---- cuBLAS (dlopen) ---------------------------------------------------------------------------------------

static void load_cublas(Context* ctx) {
#if KVQ_IS_SIM
  snprintf(ctx->gemmNote, sizeof(ctx->gemmNote), "CPU simulator: built-in GEMM kernels");
#else
  // KVQ_CUBLAS (CUDA) / KVQ_HIPBLAS (HIP): a library path, or 0 for the built-in GEMM kernels.
  const char* envName = KVQ_IS_HIP ? "KVQ_HIPBLAS" : "KVQ_CUBLAS";
  const char* libLabel = KVQ_IS_HIP ? "hipBLAS" : "cuBLAS";
  const char* off = getenv(envName);
  if (off && strcmp(off, "0") == 0) {
    snprintf(ctx->gemmNote, sizeof(ctx->gemmNote), "%s=0: built-in GEMM kernels", envName);
    return;
  }
#if KVQ_IS_HIP
  const char* names[] = {off && *off ? off : nullptr, "libhipblas.so.2", "libhipblas.so.1", "libhipblas.so.0", "libhipblas.so"};
  const char* syms[] = {"hipblasCreate", "hipblasDestroy", "hipblasSetStream", "hipblasSgemm"};
#else
  const char* names[] = {off && *off ? off : nullptr, "libcublas.so.13", "libcublas.so.12", "libcublas.so"};
  const char* syms[] = {"cublasCreate_v2", "cublasDestroy_v2", "cublasSetStream_v2", "cublasSgemm_v2"};
#endif
  void* lib = nullptr;
  const char* err = "";
  for (const char* name : names) {
    if (!name) continue;
    lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (lib) break;
    err = dlerror();
  }
  if (!lib) {
    snprintf(ctx->gemmNote, sizeof(ctx->gemmNote), "%s not found (%s); built-in GEMM kernels", libLabel, err ? err : "");
    return;
  }
  Cublas& c = ctx->cublas;
  c.create = reinterpret_cast<int (*)(void**)>(dlsym(lib, syms[0]));
  c.destroy = reinterpret_cast<int (*)(void*)>(dlsym(lib, syms[1]));
  c.setStream = reinterpret_cast<int (*)(void*, cudaStream_t)>(dlsym(lib, syms[2]));
  c.sgemm = reinterpret_cast<decltype(c.sgemm)>(dlsym(lib, syms[3]));
#if KVQ_IS_HIP
  c.opN = 111;  // HIPBLAS_OP_N
  c.opT = 112;  // HIPBLAS_OP_T
  const bool haveMathMode = true;  // hipBLAS's default math is IEEE float32 (no XF32 unless asked for)
#else
  c.setMathMode = reinterpret_cast<int (*)(void*, int)>(dlsym(lib, "cublasSetMathMode"));
  c.opN = 0;  // CUBLAS_OP_N
  c.opT = 1;  // CUBLAS_OP_T
  const bool haveMathMode = c.setMathMode != nullptr;
#endif
  if (!c.create || !c.destroy || !c.setStream || !c.sgemm || !haveMathMode) {
    snprintf(ctx->gemmNote, sizeof(ctx->gemmNote), "%s lacks the entry points kvq uses; built-in GEMM kernels", libLabel);
    dlclose(lib);
    c = Cublas{};
    return;
  }
  int s = c.create(&c.handle);
  if (s == 0) s = c.setStream(c.handle, ctx->stream);
  // CUBLAS_DEFAULT_MATH (0): float32 SGEMM without TF32 (the contract accumulates in float32 or better).
  if (s == 0 && c.setMathMode) s = c.setMathMode(c.handle, 0);
  if (s != 0) {
    snprintf(ctx->gemmNote, sizeof(ctx->gemmNote), "%s initialisation failed (status %d); built-in GEMM kernels", libLabel, s);
    if (c.handle) c.destroy(c.handle);
    dlclose(lib);
    c = Cublas{};
    return;
  }
  c.lib = lib;
  Dl_info dl{};
  if (dladdr(reinterpret_cast<void*>(c.sgemm), &dl) && dl.dli_fname) {
    snprintf(ctx->gemmNote, sizeof(ctx->gemmNote), "%s SGEMM from %s", libLabel, dl.dli_fname);
  }
#endif
}

// ---- contexts ------------------------------------------------------------------------------------------------

Context* context_create(int device, Status* st) {
  RuntimeInfo info;
  DeviceProps props[16];
  int n = 0;
  if (!probe(&info, props, 16, &n, st)) return nullptr;
  if (device < 0 || device >= info.deviceCount) {
    st->code = kNoDevice;
    snprintf(st->message, sizeof(st->message), "device %d does not exist (%d device%s)", device, info.deviceCount,
             info.deviceCount == 1 ? "" : "s");
    return nullptr;
  }
  if (!ok(cudaSetDevice(device), "cudaSetDevice", st)) return nullptr;
  Context* ctx = new Context();
  ctx->device = device;
  fill_props(device, &ctx->props);
  if (!ok(cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking), "cudaStreamCreate", st)) {
    delete ctx;
    return nullptr;
  }
  load_cublas(ctx);
  return ctx;
}

void context_destroy(Context* ctx) {
  if (!ctx) return;
  (void)cudaSetDevice(ctx->device);
  (void)cudaStreamSynchronize(ctx->stream);
  if (ctx->cublas.handle) ctx->cublas.destroy(ctx->cublas.handle);
  if (ctx->cublas.lib) dlclose(ctx->cublas.lib);
  for (int i = 0; i < kNumSlots; i++)
    if (ctx->scratch[i]) (void)cudaFree(ctx->scratch[i]);
  for (auto& c : ctx->cached)
    if (c.dev) (void)cudaFree(c.dev);
  for (auto& e : ctx->keyed) (void)cudaFree(e.second.dev);
  free(ctx->hostStage);
  (void)cudaStreamDestroy(ctx->stream);
  (void)cudaGetLastError();
  delete ctx;
}

const DeviceProps& context_props(const Context* ctx) { return ctx->props; }
const char* context_gemm(const Context* ctx) { return ctx->cublas.lib ? (KVQ_IS_HIP ? "hipblas" : "cublas") : "builtin"; }
const char* context_gemm_note(const Context* ctx) { return ctx->gemmNote; }

bool context_mem_info(Context* ctx, int64_t* freeBytes, int64_t* totalBytes, Status* st) {
  KVQ_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
  size_t f = 0, t = 0;
  KVQ_TRY(cudaMemGetInfo(&f, &t), "cudaMemGetInfo");
  *freeBytes = (int64_t)f;
  *totalBytes = (int64_t)t;
  return true;
}

bool scratch(Context* ctx, int slot, size_t bytes, void** out, Status* st) {
  if (bytes == 0) bytes = 16;
  if (ctx->scratchBytes[slot] < bytes) {
    if (ctx->scratch[slot]) {
      // The stream may still use the old buffer.
      KVQ_TRY(cudaStreamSynchronize(ctx->stream), "cudaStreamSynchronize");
      (void)cudaFree(ctx->scratch[slot]);
      ctx->scratch[slot] = nullptr;
      ctx->scratchBytes[slot] = 0;
    }
    size_t want = bytes + bytes / 4;
    want = (want + 255) & ~(size_t)255;
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, want);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      want = (bytes + 255) & ~(size_t)255;
      e = cudaMalloc(&p, want);
    }
    if (!ok(e, "cudaMalloc (scratch)", st)) return false;
    ctx->scratch[slot] = p;
    ctx->scratchBytes[slot] = want;
  }
  *out = ctx->scratch[slot];
  return true;
}

bool host_stage(Context* ctx, size_t bytes, void** out, Status* st) {
  if (ctx->hostStageBytes < bytes) {
    KVQ_TRY(cudaStreamSynchronize(ctx->stream), "cudaStreamSynchronize");
    free(ctx->hostStage);
    ctx->hostStage = malloc(bytes);
    ctx->hostStageBytes = ctx->hostStage ? bytes : 0;
    if (!ctx->hostStage) return fail_status(st, kOutOfMemory, "out of host memory for a staging buffer");
  }
  *out = ctx->hostStage;
  return true;
}

/** Count one copy each way (transfer_stats). */
static void count_h2d(Context* ctx, size_t bytes) {
  ctx->h2dBytes += bytes;
  ctx->h2dCopies++;
}
static void count_d2h(Context* ctx, size_t bytes) {
  ctx->d2hBytes += bytes;
  ctx->d2hCopies++;
}

void transfer_stats(const Context* ctx, uint64_t out[5]) {
  out[0] = ctx->h2dBytes;
  out[1] = ctx->d2hBytes;
  out[2] = ctx->h2dCopies;
  out[3] = ctx->d2hCopies;
  out[4] = ctx->waits;
}

bool is_device(const Context* ctx, const void* p, size_t bytes) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = ctx->deviceRanges.upper_bound(a);
  if (it == ctx->deviceRanges.begin()) return false;
  --it;
  return a >= it->first && a - it->first <= it->second && bytes <= it->second - (a - it->first);
}

bool put(Context* ctx, int slot, const void* host, size_t bytes, void** dev, Status* st) {
  if (bytes > 0 && is_device(ctx, host, bytes)) {
    *dev = const_cast<void*>(host);
    return true;
  }
  if (!scratch(ctx, slot, bytes, dev, st)) return false;
  if (bytes > 0) {
    KVQ_TRY(cudaMemcpyAsync(*dev, host, bytes, cudaMemcpyHostToDevice, ctx->stream), "cudaMemcpy host->device");
    count_h2d(ctx, bytes);
  }
  return true;
}

bool get(Context* ctx, void* host, const void* dev, size_t bytes, Status* st) {
  if (bytes == 0) return true;
  if (is_device(ctx, host, bytes)) {
    if (host != dev) KVQ_TRY(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToDevice, ctx->stream), "cudaMemcpy device->device");
    return true;
  }
  KVQ_TRY(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, ctx->stream), "cudaMemcpy device->host");
  count_d2h(ctx, bytes);
  ctx->hostPending = true;
  return true;
}

bool sync(Context* ctx, Status* st) {
  ctx->hostPending = false;
  ctx->waits++;
  KVQ_TRY(cudaStreamSynchronize(ctx->stream), "kernel execution (cudaStreamSynchronize)");
  return true;
}

bool finish(Context* ctx, Status* st) { return ctx->hostPending ? sync(ctx, st) : true; }

/** Upload `host` into `c` (growing it), copying only what differs from its last contents. */
static bool upload_changed(Context* ctx, CachedUpload& c, const void* host, size_t bytes, void** dev, Status* st) {
  const unsigned char* h = static_cast<const unsigned char*>(host);
  if (c.dev && c.host.size() == bytes && (bytes == 0 || memcmp(c.host.data(), h, bytes) == 0)) {
    *dev = c.dev;
    return true;
  }
  size_t from = 0, to = bytes;  // the byte span to copy
  if (c.dev && c.host.size() == bytes) {
    while (from < bytes && c.host[from] == h[from]) from++;
    while (to > from && c.host[to - 1] == h[to - 1]) to--;
  }
  if (c.cap < bytes || !c.dev) {
    if (c.dev) {
      KVQ_TRY(cudaStreamSynchronize(ctx->stream), "cudaStreamSynchronize");
      (void)cudaFree(c.dev);
      c.dev = nullptr;
      c.cap = 0;
    }
    const size_t want = ((bytes < 256 ? 256 : bytes + bytes / 2) + 255) & ~(size_t)255;
    KVQ_TRY(cudaMalloc(&c.dev, want), "cudaMalloc (metadata)");
    c.cap = want;
    from = 0;
    to = bytes;
  }
  if (to > from) {
    KVQ_TRY(cudaMemcpyAsync(static_cast<char*>(c.dev) + from, h + from, to - from, cudaMemcpyHostToDevice, ctx->stream),
            "cudaMemcpy host->device");
    count_h2d(ctx, to - from);
  }
  c.host.assign(h, h + bytes);
  *dev = c.dev;
  return true;
}

bool put_cached(Context* ctx, int key, const void* host, size_t bytes, void** dev, Status* st) {
  return upload_changed(ctx, ctx->cached[key], host, bytes, dev, st);
}

bool put_keyed(Context* ctx, const void* host, size_t bytes, void** dev, Status* st) {
  if (ctx->keyed.size() >= 4096 && ctx->keyed.find(host) == ctx->keyed.end()) {
    // Bounded: forget them all (their buffers may still be read by queued kernels).
    KVQ_TRY(cudaStreamSynchronize(ctx->stream), "cudaStreamSynchronize");
    for (auto& e : ctx->keyed) (void)cudaFree(e.second.dev);
    ctx->keyed.clear();
  }
  return upload_changed(ctx, ctx->keyed[host], host, bytes, dev, st);
}

// ---- resident buffers --------------------------------------------------------------------------------------

void* buffer_alloc(Context* ctx, size_t bytes, Status* st) {
  if (!ok(cudaSetDevice(ctx->device), "cudaSetDevice", st)) return nullptr;
  void* p = nullptr;
  if (!ok(cudaMalloc(&p, bytes == 0 ? 16 : bytes), "cudaMalloc", st)) return nullptr;
  ctx->deviceRanges[reinterpret_cast<uintptr_t>(p)] = bytes == 0 ? 16 : bytes;
  return p;
}

void buffer_free(Context* ctx, void* p) {
  if (!p) return;
  ctx->deviceRanges.erase(reinterpret_cast<uintptr_t>(p));
  (void)cudaSetDevice(ctx->device);
  (void)cudaStreamSynchronize(ctx->stream);
  (void)cudaFree(p);
  (void)cudaGetLastError();
}

bool buffer_upload(Context* ctx, void* dst, const void* src, size_t bytes, Status* st) {
  KVQ_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
  if (bytes > 0) {
    KVQ_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ctx->stream), "cudaMemcpy host->device");
    count_h2d(ctx, bytes);
  }
  return finish(ctx, st);  // a copy from pageable host memory has read its source when it returns
}

bool buffer_copy(Context* ctx, void* dst, const void* src, size_t bytes, Status* st) {
  KVQ_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
  if (bytes > 0) KVQ_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ctx->stream), "cudaMemcpy device->device");
  return true;
}

bool buffer_download(Context* ctx, void* dst, const void* src, size_t bytes, Status* st) {
  KVQ_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
  if (bytes > 0) {
    KVQ_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ctx->stream), "cudaMemcpy device->host");
    count_d2h(ctx, bytes);
  }
  return sync(ctx, st);
}

// ---- FP8 header vs the vendor's conversions --------------------------------------------------------------------

#if !KVQ_IS_HIP && !KVQ_IS_SIM
template <int F, bool kSat>
__global__ void fp8_vendor_encode_check(unsigned long long* mismatches, unsigned* first) {
  unsigned long long local = 0;
  unsigned firstLocal = 0xFFFFFFFFu;
  const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
  for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (1ull << 32); i += stride) {
    const uint32_t b = (uint32_t)i;
    const uint32_t ours = fp8_encode_bits<F, kSat>(b);
    const __nv_fp8_storage_t theirs =
        __nv_cvt_float_to_fp8(__uint_as_float(b), kSat ? __NV_SATFINITE : __NV_NOSAT, F == kE4M3FN ? __NV_E4M3 : __NV_E5M2);
    if (ours != (uint32_t)theirs) {
      local++;
      firstLocal = b < firstLocal ? b : firstLocal;
    }
  }
  if (local) {
    atomicAdd(mismatches, local);
    atomicMin(first, firstLocal);
  }
}

template <int F>
__global__ void fp8_vendor_decode_check(unsigned* mismatches) {
  const unsigned code = threadIdx.x;
  const uint32_t ours = fp8_decode_bits<F>(code);
  const __half_raw h = __nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)code, F == kE4M3FN ? __NV_E4M3 : __NV_E5M2);
  const uint32_t theirs = __float_as_uint(__half2float(__half(h)));
  if (ours != theirs) atomicAdd(mismatches, 1u);
}
#endif

bool fp8_vendor_check(Context* ctx, Fp8VendorCheck* c, Status* st) {
#if KVQ_IS_HIP || KVQ_IS_SIM
  (void)ctx;
  (void)c;
  return fail_status(st, kUnsupported, KVQ_IS_SIM ? "the CPU simulator has no vendor FP8 conversion to compare with"
                                                  : "this HIP build has no vendor FP8 conversion to compare with");
#else
  if (c->format != kE4M3FN && c->format != kE5M2) {
    return fail_status(st, kUnsupported, "CUDA has no conversion for FNUZ formats");
  }
  KVQ_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
  void* d = nullptr;
  if (!scratch(ctx, kS0, 64, &d, st)) return false;
  unsigned long long* mism = static_cast<unsigned long long*>(d);
  unsigned* first = reinterpret_cast<unsigned*>(static_cast<char*>(d) + 8);
  unsigned* dec = reinterpret_cast<unsigned*>(static_cast<char*>(d) + 12);
  KVQ_TRY(cudaMemsetAsync(d, 0, 16, ctx->stream), "cudaMemset");
  KVQ_TRY(cudaMemsetAsync(first, 0xFF, 4, ctx->stream), "cudaMemset");
  cudaEvent_t e0, e1;
  KVQ_TRY(cudaEventCreate(&e0), "cudaEventCreate");
  KVQ_TRY(cudaEventCreate(&e1), "cudaEventCreate");
  (void)cudaEventRecord(e0, ctx->stream);
  const unsigned grid = (unsigned)ctx->props.multiProcessors * 8;
  if (c->format == kE4M3FN) {
    if (c->sat) KVQ_LAUNCH(grid, 256, 0, ctx->stream, fp8_vendor_encode_check<kE4M3FN, true>)(mism, first);
    else KVQ_LAUNCH(grid, 256, 0, ctx->stream, fp8_vendor_encode_check<kE4M3FN, false>)(mism, first);
    KVQ_LAUNCH(1, 256, 0, ctx->stream, fp8_vendor_decode_check<kE4M3FN>)(dec);
  } else {
    if (c->sat) KVQ_LAUNCH(grid, 256, 0, ctx->stream, fp8_vendor_encode_check<kE5M2, true>)(mism, first);
    else KVQ_LAUNCH(grid, 256, 0, ctx->stream, fp8_vendor_encode_check<kE5M2, false>)(mism, first);
    KVQ_LAUNCH(1, 256, 0, ctx->stream, fp8_vendor_decode_check<kE5M2>)(dec);
  }
  KVQ_LAUNCHED("fp8 vendor check launch");
  (void)cudaEventRecord(e1, ctx->stream);
  unsigned char host[16];
  if (!get(ctx, host, d, 16, st) || !sync(ctx, st)) return false;
  float ms = 0;
  (void)cudaEventElapsedTime(&ms, e0, e1);
  (void)cudaEventDestroy(e0);
  (void)cudaEventDestroy(e1);
  memcpy(&c->encodeMismatches, host, 8);
  memcpy(&c->firstEncodeMismatch, host + 8, 4);
  memcpy(&c->decodeMismatches, host + 12, 4);
  c->ms = ms;
  return true;
#endif
}

// ---- copy bandwidth ------------------------------------------------------------------------------------------

bool bench_copy(Context* ctx, int64_t bytes, int iters, double* gbps, Status* st) {
  KVQ_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
  void* a = nullptr;
  void* b = nullptr;
  if (!scratch(ctx, kS0, (size_t)bytes, &a, st) || !scratch(ctx, kS1, (size_t)bytes, &b, st)) return false;
  KVQ_TRY(cudaMemsetAsync(a, 0x5A, (size_t)bytes, ctx->stream), "cudaMemset");
  cudaEvent_t e0, e1;
  KVQ_TRY(cudaEventCreate(&e0), "cudaEventCreate");
  KVQ_TRY(cudaEventCreate(&e1), "cudaEventCreate");
  std::vector<float> times;
  for (int i = 0; i < iters + 2; i++) {
    (void)cudaEventRecord(e0, ctx->stream);
    KVQ_TRY(cudaMemcpyAsync(b, a, (size_t)bytes, cudaMemcpyDeviceToDevice, ctx->stream), "cudaMemcpy device->device");
    (void)cudaEventRecord(e1, ctx->stream);
    KVQ_TRY(cudaEventSynchronize(e1), "cudaEventSynchronize");
    float ms = 0;
    (void)cudaEventElapsedTime(&ms, e0, e1);
    if (i >= 2) times.push_back(ms);
  }
  (void)cudaEventDestroy(e0);
  (void)cudaEventDestroy(e1);
  std::sort(times.begin(), times.end());
  const double med = times[times.size() / 2];
  *gbps = 2.0 * (double)bytes / (med * 1e-3) / 1e9;
  return true;
}

}  // namespace gpu
}  // namespace kvq
