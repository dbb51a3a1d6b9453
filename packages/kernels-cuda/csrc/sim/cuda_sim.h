// SPDX-License-Identifier: Apache-2.0
//
// kvq's CUDA simulator: just enough of the CUDA language and runtime for the kernels in csrc/ to compile with the
// host C++ compiler (vendor.h includes this when KVQ_SIM is defined) and run on the CPU, so their logic is tested
// on machines without a GPU. It is an executable model of the programming model, not of a GPU's speed:
//
// - A launch runs its blocks one after another. Each CUDA thread of a block is a fiber (its own stack); fibers
//   switch only at synchronization points, so a block's threads run as a real SIMT program would be allowed to.
// - __syncthreads() is a barrier over the block's non-exited threads. Warp shuffles are barriers over the whole
//   warp that exchange values; a full-mask shuffle that some lane of the warp never reaches (it exited or waits
//   elsewhere) is reported as an error, as is any deadlock. The warp width is KVQ_SIM_WARP (32: NVIDIA, 64: AMD
//   CDNA wavefronts).
// - Dynamic shared memory and fresh device allocations are filled with 0xFF bytes (float NaN), so reading memory no
//   thread wrote shows up in results. Device memory is host memory: the simulator cannot catch a host pointer
//   passed to a kernel.
// - Errors are sticky until cudaGetLastError(), like asynchronous kernel faults, and name the kernel.
// - Atomics are plain read-modify-writes (one OS thread runs everything).
#ifndef KVQ_CUDA_SIM_H_
#define KVQ_CUDA_SIM_H_

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <tuple>
#include <type_traits>
#include <utility>

#ifndef KVQ_SIM_WARP
#define KVQ_SIM_WARP 32
#endif
#if KVQ_SIM_WARP != 32 && KVQ_SIM_WARP != 64
#error "KVQ_SIM_WARP must be 32 or 64"
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Blocks run one at a time, so a function-local static is exactly one block's shared array.
#define __shared__ static

namespace kvq_sim {

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x, y, z;
};
struct alignas(8) uint2 {
  unsigned x, y;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
inline uint2 make_uint2(unsigned x, unsigned y) { return uint2{x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

/** What a simulated thread sees as its built-in variables. */
struct ThreadState {
  uint3 threadIdx;
  uint3 blockIdx;
  dim3 blockDim;
  dim3 gridDim;
};

/** The running simulated thread (valid inside a kernel only). */
extern thread_local ThreadState* t_thread;

void syncthreads();
void syncwarp();
/** Exchange 8 bytes across the warp: returns what lane `src` passed (src is already reduced to a lane index). */
uint64_t warp_exchange(uint64_t bits, int src);
void* dynamic_shared();
/** Lane of the running thread in its warp. */
int lane_id();

template <class T>
inline T shuffle_from(T v, int src) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "simulated shuffles move at most 8 bytes");
  uint64_t bits = 0;
  memcpy(&bits, &v, sizeof(T));
  bits = warp_exchange(bits, src);
  T out;
  memcpy(&out, &bits, sizeof(T));
  return out;
}

// ---- launches --------------------------------------------------------------------------------------------------

/** Run one launch: `body(arg)` on every thread of every block. Errors become the sticky error. */
void run_kernel(dim3 grid, dim3 block, size_t smem, const char* name, void (*body)(void*), void* arg);

template <class... P>
struct BoundLaunch {
  dim3 grid, block;
  size_t smem;
  const char* name;
  void (*kernel)(P...);

  template <class... A>
  void operator()(A&&... a) const {
    static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong number of arguments");
    // Parameters are copied once per launch, like CUDA's parameter buffer, and passed by value to every thread.
    struct Frame {
      void (*kernel)(P...);
      std::tuple<typename std::decay<P>::type...> args;
    } frame{kernel, std::tuple<typename std::decay<P>::type...>(std::forward<A>(a)...)};
    run_kernel(grid, block, smem, name, [](void* f) {
      Frame* fr = static_cast<Frame*>(f);
      std::apply(fr->kernel, fr->args);
    }, &frame);
  }
};

struct Launch {
  dim3 grid, block;
  size_t smem;
  const char* name;
  Launch(dim3 g, dim3 b, size_t s, const void* /*stream*/, const char* n) : grid(g), block(b), smem(s), name(n) {}
  template <class... P>
  BoundLaunch<P...> bind(void (*kernel)(P...)) const {
    return BoundLaunch<P...>{grid, block, smem, name, kernel};
  }
};

}  // namespace kvq_sim

using kvq_sim::dim3;
using kvq_sim::float2;
using kvq_sim::float4;
using kvq_sim::make_float2;
using kvq_sim::make_float4;
using kvq_sim::make_uint2;
using kvq_sim::make_uint4;
using kvq_sim::uint3;
using kvq_sim::uint2;
using kvq_sim::uint4;

#define threadIdx (::kvq_sim::t_thread->threadIdx)
#define blockIdx (::kvq_sim::t_thread->blockIdx)
#define blockDim (::kvq_sim::t_thread->blockDim)
#define gridDim (::kvq_sim::t_thread->gridDim)

inline void __syncthreads() { kvq_sim::syncthreads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { kvq_sim::syncwarp(); }

template <class T>
inline T __shfl_sync(unsigned /*mask*/, T v, int srcLane, int width = KVQ_SIM_WARP) {
  const int lane = kvq_sim::lane_id();
  return kvq_sim::shuffle_from(v, (lane / width) * width + ((srcLane % width) + width) % width);
}
template <class T>
inline T __shfl_xor_sync(unsigned /*mask*/, T v, int laneMask, int width = KVQ_SIM_WARP) {
  const int lane = kvq_sim::lane_id();
  int src = lane ^ laneMask;
  if (src / width > lane / width) src = lane;  // a later segment: its own value (an earlier one may be read)
  return kvq_sim::shuffle_from(v, src);
}
template <class T>
inline T __shfl_down_sync(unsigned /*mask*/, T v, unsigned delta, int width = KVQ_SIM_WARP) {
  const int lane = kvq_sim::lane_id();
  const int src = lane % width + (int)delta < width ? lane + (int)delta : lane;
  return kvq_sim::shuffle_from(v, src);
}

template <class T, class U>
inline T atomicAdd(T* p, U v) {
  const T old = *p;
  *p = old + (T)v;
  return old;
}
template <class T, class U>
inline T atomicMax(T* p, U v) {
  const T old = *p;
  if ((T)v > old) *p = (T)v;
  return old;
}
template <class T, class U>
inline T atomicMin(T* p, U v) {
  const T old = *p;
  if ((T)v < old) *p = (T)v;
  return old;
}

inline float __uint_as_float(unsigned u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  memcpy(&u, &f, 4);
  return u;
}
inline float __int_as_float(int i) {
  float f;
  memcpy(&f, &i, 4);
  return f;
}
inline int __float_as_int(float f) {
  int i;
  memcpy(&i, &f, 4);
  return i;
}

// ---- runtime API -------------------------------------------------------------------------------------------------

enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorLaunchFailure = 719,
};
enum cudaMemcpyKind : int {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
};
enum cudaDeviceAttr : int { cudaDevAttrMemoryClockRate = 36, cudaDevAttrGlobalMemoryBusWidth = 37 };
enum cudaFuncAttribute : int { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
static const unsigned cudaStreamNonBlocking = 1;

typedef struct kvq_sim_stream* cudaStream_t;
typedef struct kvq_sim_event* cudaEvent_t;

struct cudaDeviceProp {
  char name[256];
  int major, minor;
  int multiProcessorCount;
  int warpSize;
  size_t totalGlobalMem;
  int l2CacheSize;
  size_t sharedMemPerBlock;
  size_t sharedMemPerBlockOptin;
};

const char* cudaGetErrorName(cudaError_t e);
const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
cudaError_t cudaMalloc(void** p, size_t bytes);
cudaError_t cudaFree(void* p);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s = nullptr);
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t s = nullptr);
cudaError_t cudaMemGetInfo(size_t* freeBytes, size_t* totalBytes);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDevice(int* d);
cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d);
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr attr, int d);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaRuntimeGetVersion(int* v);
cudaError_t cudaDriverGetVersion(int* v);

namespace kvq_sim {
/** Largest dynamic shared memory a launch may ask for, in bytes (the simulated device's opt-in limit). */
size_t shared_limit();
/** Blocks per multiprocessor the simulated device reports for any kernel. */
int occupancy_blocks(int threads, size_t smem);
}  // namespace kvq_sim

template <class F>
inline cudaError_t cudaFuncSetAttribute(F /*kernel*/, cudaFuncAttribute /*attr*/, int value) {
  return value >= 0 && (size_t)value <= kvq_sim::shared_limit() ? cudaSuccess : cudaErrorInvalidValue;
}
template <class F>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, F /*kernel*/, int threads, size_t smem) {
  *n = kvq_sim::occupancy_blocks(threads, smem);
  return cudaSuccess;
}

#endif  // KVQ_CUDA_SIM_H_
