// SPDX-License-Identifier: Apache-2.0
//
// Vendor shim: the kernels of @kvq/kernels-cuda are written once against the CUDA runtime API and compiled
// either by nvcc (NVIDIA) or by hipcc with HIP_PLATFORM=amd (@kvq/kernels-rocm), which sees the HIP names below.
// Only the names kvq uses are mapped; anything else is a compile error on the HIP side, which is what we want.
//
// Also defines, for device code:
//   KVQ_WARP             the warp / wavefront width of the target being compiled (32 on NVIDIA; 64 on CDNA,
//                        32 on RDNA, from the compiler's __AMDGCN_WAVEFRONT_SIZE)
//   KVQ_SHFL_XOR(v, m)   butterfly shuffle over the whole warp
//   KVQ_SHFL(v, lane)    broadcast from a lane
//   KVQ_LAUNCH(grid, block, smem, stream, kernel)(args...)
//                        a kernel launch (`kernel<<<grid, block, smem, stream>>>(args...)`); the kernel comes last
//                        so template arguments with commas need no parentheses
//   KVQ_DYNAMIC_SHARED(T, name)  the block's dynamic shared memory as `T* name` (`extern __shared__ T name[]`)
//
// A third target, KVQ_SIM (csrc/sim/), compiles the same kernels with the host C++ compiler and runs them on the
// CPU: every CUDA thread a fiber, __syncthreads and warp shuffles as real barriers, warp width 32 or 64
// (KVQ_SIM_WARP). It is how the kernels' logic is tested on machines without a GPU; it says nothing of speed.
// Host code must not use KVQ_WARP for launch decisions (a HIP host pass cannot know the device's width):
// it reads the device's warpSize at run time.
#ifndef KVQ_VENDOR_H_
#define KVQ_VENDOR_H_

#if defined(KVQ_SIM)
#include "sim/cuda_sim.h"

#define KVQ_IS_HIP 0
#define KVQ_IS_SIM 1
#define KVQ_VENDOR_NAME "sim"
#define KVQ_WARP KVQ_SIM_WARP
#define KVQ_SHFL_XOR(v, m) __shfl_xor_sync(0xffffffffu, (v), (m))
#define KVQ_SHFL(v, lane) __shfl_sync(0xffffffffu, (v), (lane))
#define KVQ_LAUNCH(g, b, s, st, ...) ::kvq_sim::Launch((g), (b), (s), (st), #__VA_ARGS__).bind(__VA_ARGS__)
#define KVQ_DYNAMIC_SHARED(T, name) T* const name = static_cast<T*>(::kvq_sim::dynamic_shared())

#elif defined(__HIPCC__) || defined(__HIP_PLATFORM_AMD__) || defined(KVQ_HIP)
#include <hip/hip_runtime.h>

#define KVQ_IS_HIP 1
#define KVQ_IS_SIM 0
#define KVQ_VENDOR_NAME "hip"

#define cudaError_t hipError_t
#define cudaSuccess hipSuccess
#define cudaErrorMemoryAllocation hipErrorOutOfMemory
#define cudaGetErrorString hipGetErrorString
#define cudaGetErrorName hipGetErrorName
#define cudaGetLastError hipGetLastError
#define cudaPeekAtLastError hipPeekAtLastError
#define cudaMalloc hipMalloc
#define cudaFree hipFree
#define cudaMemcpy hipMemcpy
#define cudaMemcpyAsync hipMemcpyAsync
#define cudaMemsetAsync hipMemsetAsync
#define cudaMemcpyHostToDevice hipMemcpyHostToDevice
#define cudaMemcpyDeviceToHost hipMemcpyDeviceToHost
#define cudaMemcpyDeviceToDevice hipMemcpyDeviceToDevice
#define cudaMemGetInfo hipMemGetInfo
#define cudaStream_t hipStream_t
#define cudaStreamCreateWithFlags hipStreamCreateWithFlags
#define cudaStreamNonBlocking hipStreamNonBlocking
#define cudaStreamSynchronize hipStreamSynchronize
#define cudaStreamDestroy hipStreamDestroy
#define cudaEvent_t hipEvent_t
#define cudaEventCreate hipEventCreate
#define cudaEventRecord hipEventRecord
#define cudaEventSynchronize hipEventSynchronize
#define cudaEventElapsedTime hipEventElapsedTime
#define cudaEventDestroy hipEventDestroy
#define cudaSetDevice hipSetDevice
#define cudaGetDevice hipGetDevice
#define cudaGetDeviceCount hipGetDeviceCount
#define cudaDeviceProp hipDeviceProp_t
#define cudaGetDeviceProperties hipGetDeviceProperties
#define cudaDeviceGetAttribute hipDeviceGetAttribute
#define cudaDevAttrMemoryClockRate hipDeviceAttributeMemoryClockRate
#define cudaDevAttrGlobalMemoryBusWidth hipDeviceAttributeMemoryBusWidth
#define cudaDeviceSynchronize hipDeviceSynchronize
#define cudaRuntimeGetVersion hipRuntimeGetVersion
#define cudaDriverGetVersion hipDriverGetVersion
#define cudaFuncSetAttribute(f, attr, v) hipFuncSetAttribute(reinterpret_cast<const void*>(f), attr, v)
#define cudaFuncAttributeMaxDynamicSharedMemorySize hipFuncAttributeMaxDynamicSharedMemorySize
#define cudaOccupancyMaxActiveBlocksPerMultiprocessor hipOccupancyMaxActiveBlocksPerMultiprocessor

#if defined(__AMDGCN_WAVEFRONT_SIZE)
#define KVQ_WARP __AMDGCN_WAVEFRONT_SIZE
#elif defined(__HIP_DEVICE_COMPILE__)
#define KVQ_WARP 64
#else
#define KVQ_WARP 32  // host pass: never used for launch decisions
#endif
// ROCm < 6.2 has no *_sync shuffles; the plain ones act on the whole wavefront.
#define KVQ_SHFL_XOR(v, m) __shfl_xor((v), (m))
#define KVQ_SHFL(v, lane) __shfl((v), (lane))

#else  // NVIDIA
#include <cuda_runtime.h>

#define KVQ_IS_HIP 0
#define KVQ_IS_SIM 0
#define KVQ_VENDOR_NAME "cuda"
#define KVQ_WARP 32
#define KVQ_SHFL_XOR(v, m) __shfl_xor_sync(0xffffffffu, (v), (m))
#define KVQ_SHFL(v, lane) __shfl_sync(0xffffffffu, (v), (lane))
#endif

#if !KVQ_IS_SIM
#define KVQ_LAUNCH(g, b, s, st, ...) __VA_ARGS__<<<(g), (b), (s), (st)>>>
#define KVQ_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif

#endif  // KVQ_VENDOR_H_
