// SPDX-License-Identifier: Apache-2.0
//
// Self-test of the CUDA simulator (cuda_sim.h / cuda_sim.cc): small kernels that prove its model is right (warp
// shuffles, __syncthreads, static and dynamic shared memory, 2-D/3-D blocks, atomics) and that each of its checks
// fires (divergent __syncthreads vs shuffle, shuffles with exited lanes, a shuffle from a lane that does not exist,
// invalid launch configurations, too much dynamic shared memory, sticky errors and their recovery). Without the
// last group the kernel tests on the simulator could pass with checks that never trigger.
//
//   g++ -std=c++17 -O1 -DKVQ_SIM=1 -DKVQ_SIM_WARP=32 -Wno-unknown-pragmas csrc/sim/selftest.cc csrc/sim/cuda_sim.cc
//       -o selftest && ./selftest
//
// Prints one JSON line per case on stdout: {"case": name, "ok": bool, "detail": string}; exits 0 when every case
// is ok, 1 otherwise. src/sim-selftest.test.ts builds and runs it for warp 32 and 64.
#ifndef KVQ_SIM
#error "selftest.cc is for the simulator: compile with -DKVQ_SIM=1 -DKVQ_SIM_WARP=32 (or 64)"
#endif

#include "../vendor.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

static_assert(KVQ_WARP == KVQ_SIM_WARP, "vendor.h's KVQ_WARP is the simulated warp width");

namespace {

constexpr int W = KVQ_SIM_WARP;
constexpr unsigned kFull = 0xffffffffu;

// ---- kernels -----------------------------------------------------------------------------------------------------

/** (a) Butterfly sum over the whole warp: every lane ends with its warp's sum. */
__global__ void warp_xor_sum(const float* in, float* out) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  float v = in[t];
  for (int o = KVQ_WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  out[t] = v;
}

/** (a) The same with 8-byte values through vendor.h's KVQ_SHFL_XOR, and a max reduction. */
__global__ void warp_xor_f64(const double* in, double* sum, double* mx) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  double s = in[t], m = in[t];
  for (int o = KVQ_WARP / 2; o > 0; o >>= 1) {
    s += KVQ_SHFL_XOR(s, o);
    const double other = KVQ_SHFL_XOR(m, o);
    m = other > m ? other : m;
  }
  sum[t] = s;
  mx[t] = m;
}

/** (a) __shfl_sync broadcast from `src` over the warp and within 16-lane segments. */
__global__ void warp_broadcast(const int* in, int* full, int* seg16, int src) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  full[t] = __shfl_sync(kFull, in[t], src);
  seg16[t] = __shfl_sync(kFull, in[t], src, 16);
}

/** (a) __shfl_xor_sync within 16-lane segments: partners inside the segment, and partners in the next segment. */
__global__ void warp_xor_width16(const int* in, int* inside, int* across) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  inside[t] = __shfl_xor_sync(kFull, in[t], 5, 16);
  across[t] = __shfl_xor_sync(kFull, in[t], 16, 16);
}

/** (a) __shfl_down_sync: a shift by 3 (lanes past the end keep their value) and a tree sum into lane 0. */
__global__ void warp_down(const int* in, int* shifted, int* total) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  const int v = in[t];
  shifted[t] = __shfl_down_sync(kFull, v, 3);
  int s = v;
  for (int o = KVQ_WARP / 2; o > 0; o >>= 1) s += __shfl_down_sync(kFull, s, (unsigned)o);
  if (threadIdx.x % KVQ_WARP == 0) total[t / KVQ_WARP] = s;
}

/** (b) Per-block sums in a 2-D grid: a shared-memory tree and a warp-shuffle + shared two-level reduction. */
__global__ void block_reduce_2d(const int* in, int* treeSum, float* warpSum, int* ids) {
  __shared__ int buf[256];
  __shared__ float partial[256 / 32];
  const int t = threadIdx.x;
  const int b = blockIdx.y * gridDim.x + blockIdx.x;
  const int v = in[b * blockDim.x + t];
  buf[t] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (t < s) buf[t] += buf[t + s];
    __syncthreads();
  }
  if (t == 0) treeSum[b] = buf[0];
  float f = (float)v;
  for (int o = KVQ_WARP / 2; o > 0; o >>= 1) f += __shfl_xor_sync(kFull, f, o);
  if (t % KVQ_WARP == 0) partial[t / KVQ_WARP] = f;
  __syncthreads();
  if (t == 0) {
    float s = 0;
    for (int w = 0; w < (int)(blockDim.x / KVQ_WARP); w++) s += partial[w];
    warpSum[b] = s;
    ids[b] = (int)(blockIdx.x + 10 * blockIdx.y + 100 * blockIdx.z + 1000 * gridDim.x + 10000 * gridDim.y + 100000 * gridDim.z);
  }
}

/** (c) Dynamic shared memory: what it holds before any write, then values written by others across barriers. */
__global__ void dyn_smem(unsigned* before, float* after1, float* after2) {
  KVQ_DYNAMIC_SHARED(float, sm);
  const int t = threadIdx.x, n = blockDim.x;
  const int g = blockIdx.x * n + t;
  before[g] = __float_as_uint(sm[t]) ^ (isnan(sm[t]) ? 0u : 1u);  // 0xFFFFFFFF only when all bits set and NaN
  __syncthreads();  // everyone has read before anyone writes
  sm[t] = (float)(t * 3 + 1000 * (int)blockIdx.x);
  __syncthreads();
  after1[g] = sm[(t + 17) % n];
  __syncthreads();
  after2[g] = sm[n - 1 - t];
}

/** (g) Touches the last float of a dynamic shared memory of `bytes` bytes. */
__global__ void smem_edge(unsigned* bits, size_t bytes) {
  KVQ_DYNAMIC_SHARED(float, sm);
  const size_t last = bytes / sizeof(float) - 1;
  if (threadIdx.x == 0) {
    bits[0] = __float_as_uint(sm[last]);
    sm[last] = 1.5f;
    bits[1] = __float_as_uint(sm[last]);
  }
}

/** (d) Lanes 0..15 of every warp call __syncthreads, the others a full-warp shuffle (the barrier is reached first). */
__global__ void syncthreads_vs_shuffle(float* out) {
  const int lane = threadIdx.x % KVQ_WARP;
  float v = (float)threadIdx.x;
  if (lane < 16) {
    __syncthreads();
  } else {
    v = __shfl_xor_sync(kFull, v, 1);
  }
  out[threadIdx.x] = v;
}

/** (d) The other order: lanes 0..15 wait in the shuffle when the others reach __syncthreads. */
__global__ void shuffle_vs_syncthreads(float* out) {
  const int lane = threadIdx.x % KVQ_WARP;
  float v = (float)threadIdx.x;
  if (lane < 16) {
    v = __shfl_xor_sync(kFull, v, 1);
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = v;
}

/** (e) Odd lanes return early; the even ones do a full-warp shuffle. */
__global__ void odd_lanes_exit_then_shuffle(float* out) {
  const int lane = threadIdx.x % KVQ_WARP;
  if (lane & 1) return;
  out[threadIdx.x] = __shfl_xor_sync(kFull, (float)threadIdx.x, 2);
}

/** (e) Lanes 0..15 return early (before any lane shuffles); the others do a full-warp shuffle. */
__global__ void low_lanes_exit_then_shuffle(float* out) {
  const int lane = threadIdx.x % KVQ_WARP;
  if (lane < 16) return;
  out[threadIdx.x] = __shfl_xor_sync(kFull, (float)threadIdx.x, 1);
}

/** (f) Threads outside [lo, hi) return at once; the rest meet at __syncthreads (exited threads count as arrived). */
__global__ void early_exit_then_syncthreads(const int* in, int* out1, int* out2, int* wsum, int lo, int hi, int shuffle) {
  __shared__ int buf[1024];
  const int t = threadIdx.x;
  if (t < lo || t >= hi) return;
  const int n = hi - lo, i = t - lo;
  buf[i] = in[t] * 2;
  __syncthreads();
  out1[t] = buf[n - 1 - i];
  __syncthreads();
  buf[i] = out1[t] + 1;
  __syncthreads();
  out2[t] = buf[(i + 1) % n];
  if (shuffle) {
    int s = in[t];
    for (int o = KVQ_WARP / 2; o > 0; o >>= 1) s += __shfl_xor_sync(kFull, s, o);
    wsum[t] = s;
  }
}

/** (g), (h) A kernel that marks that it ran. */
__global__ void mark(int* flag, int value) {
  if (blockIdx.x == 0 && threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) flag[0] = value;
}

/** (h) Writes its global thread index everywhere, after a barrier and a warp reduction. */
__global__ void iota_after_sync(int* out) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  __syncthreads();
  int s = 1;
  for (int o = KVQ_WARP / 2; o > 0; o >>= 1) s += __shfl_xor_sync(kFull, s, o);
  out[t] = t + 1000000 * (s - KVQ_WARP);  // s == KVQ_WARP when the warp reduction is right
}

/** (i) Atomics from every thread of several blocks, interleaved by a barrier. */
__global__ void atomics(unsigned* counter, float* fsum, int* tickets, int* seen, int* imax) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  atomicAdd(counter, 1u);
  const int ticket = atomicAdd(tickets, 1);
  atomicAdd(&seen[ticket], 1);
  __syncthreads();
  atomicAdd(fsum, 0.5f);
  atomicMax(imax, (t * 37) % 1001);
}

/** (j) Built-in indices of 2-D / 3-D blocks and which threads share a warp. */
__global__ void block_nd(int* tx, int* ty, int* tz, int* ysum, int* lane0) {
  const int linear = (int)(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
  const int g = (int)(blockIdx.x * blockDim.x * blockDim.y * blockDim.z) + linear;
  tx[g] = (int)threadIdx.x;
  ty[g] = (int)threadIdx.y;
  tz[g] = (int)threadIdx.z;
  int y = (int)threadIdx.y;
  for (int o = KVQ_WARP / 2; o > 0; o >>= 1) y += __shfl_xor_sync(kFull, y, o);
  ysum[g] = y;
  lane0[g] = __shfl_sync(kFull, linear, 0);
}

/** (k) Shuffles in a block whose last warp has 16 lanes: 16-lane butterflies work; reading lane `src` may not. */
__global__ void partial_warp(int* sum16, int* got, int src) {
  const int t = threadIdx.x;
  int s = t;
  for (int o = 8; o > 0; o >>= 1) s += __shfl_xor_sync(kFull, s, o);
  sum16[t] = s;
  if (src >= 0) got[t] = __shfl_sync(kFull, t, src);
}

/** (l) __syncwarp between two writes to shared memory by different lanes of the warp. */
__global__ void syncwarp_exchange(int* out) {
  __shared__ int buf[1024];
  const int t = threadIdx.x;
  const int base = t - t % KVQ_WARP;
  buf[t] = t * 5;
  __syncwarp();
  out[t] = buf[base + (t % KVQ_WARP + 1) % KVQ_WARP];
}

// ---- host helpers ------------------------------------------------------------------------------------------------

struct Result {
  bool ok;
  std::string detail;
};

/** Collects failed expectations (the first few, with what was seen). */
struct Check {
  std::string fails;
  int failed = 0;
  void expect(bool cond, const std::string& what) {
    if (cond) return;
    if (failed < 6) fails += (fails.empty() ? "" : "; ") + what;
    failed++;
  }
  Result result(const std::string& okDetail) const {
    if (failed == 0) return {true, okDetail};
    return {false, fails + (failed > 6 ? "; ... (" + std::to_string(failed) + " failures)" : "")};
  }
};

std::string errText(cudaError_t e) { return std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")"; }

template <class T>
T* dalloc(size_t n) {
  void* p = nullptr;
  if (cudaMalloc(&p, n * sizeof(T)) != cudaSuccess) {
    fprintf(stderr, "cudaMalloc failed\n");
    exit(2);
  }
  return static_cast<T*>(p);
}

template <class T>
T* upload(const std::vector<T>& h) {
  T* d = dalloc<T>(h.size());
  cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
  return d;
}

template <class T>
std::vector<T> download(const T* d, size_t n) {
  std::vector<T> h(n);
  const cudaError_t e = cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
  if (e != cudaSuccess) fprintf(stderr, "cudaMemcpy: %s\n", errText(e).c_str());
  return h;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::string at(const char* what, size_t i, double got, double want) {
  char buf[160];
  snprintf(buf, sizeof(buf), "%s[%zu] = %.17g, expected %.17g", what, i, got, want);
  return buf;
}

/** Expect the last launch to have succeeded; returns the error text otherwise. */
void expectClean(Check& c, const char* launch) {
  const cudaError_t e = cudaGetLastError();
  c.expect(e == cudaSuccess, std::string(launch) + ": " + errText(e));
}

/** Expect the last launch to have failed with `code` and a message naming `kernel` and containing `part`. */
std::string expectFailure(Check& c, cudaError_t code, const char* kernel, const std::string& part) {
  const cudaError_t peek = cudaPeekAtLastError();
  const cudaError_t e = cudaGetLastError();
  const std::string msg = cudaGetErrorString(e);
  c.expect(peek == e, std::string("cudaPeekAtLastError gave ") + cudaGetErrorName(peek) + ", cudaGetLastError " + cudaGetErrorName(e));
  c.expect(e == code, std::string(kernel) + ": expected " + cudaGetErrorName(code) + ", got " + errText(e));
  c.expect(contains(msg, kernel), std::string("the message does not name the kernel ") + kernel + ": " + msg);
  if (!part.empty()) c.expect(contains(msg, part), "the message does not mention '" + part + "': " + msg);
  const cudaError_t again = cudaGetLastError();
  c.expect(again == cudaSuccess, std::string("cudaGetLastError did not clear the error: ") + cudaGetErrorName(again));
  return msg;
}

// ---- cases -------------------------------------------------------------------------------------------------------

Result warpXorSum(int threads) {
  Check c;
  const int blocks = 2, n = blocks * threads;
  std::vector<float> in(n);
  for (int i = 0; i < n; i++) in[i] = (float)((i * 7) % 13 + 1 + (i % 3) * 100);
  float* din = upload(in);
  float* dout = dalloc<float>(n);
  KVQ_LAUNCH(blocks, threads, 0, nullptr, warp_xor_sum)(din, dout);
  expectClean(c, "warp_xor_sum");
  const std::vector<float> out = download(dout, n);
  for (int i = 0; i < n; i++) {
    const int base = i - i % W;
    float want = 0;
    for (int l = 0; l < W; l++) want += in[base + l];
    c.expect(out[i] == want, at("sum", i, out[i], want));
  }
  cudaFree(din);
  cudaFree(dout);
  return c.result(std::to_string(blocks) + " blocks of " + std::to_string(threads) + " threads, " + std::to_string(threads / W) +
                  " warps of " + std::to_string(W) + " lanes each: every lane has its warp's sum");
}

Result warpXorF64() {
  Check c;
  const int threads = 128, n = threads;
  std::vector<double> in(n);
  for (int i = 0; i < n; i++) in[i] = 1.0 / 3.0 * ((i * 11) % 17) + 1e10 * (i % 5 == 2);
  double* din = upload(in);
  double* dsum = dalloc<double>(n);
  double* dmax = dalloc<double>(n);
  KVQ_LAUNCH(1, threads, 0, nullptr, warp_xor_f64)(din, dsum, dmax);
  expectClean(c, "warp_xor_f64");
  const std::vector<double> sum = download(dsum, n), mx = download(dmax, n);
  for (int i = 0; i < n; i++) {
    const int base = i - i % W;
    double want = 0, wmax = in[base];
    for (int l = 0; l < W; l++) wmax = in[base + l] > wmax ? in[base + l] : wmax;
    // The butterfly adds in a fixed tree: compute the same tree on the host for an exact comparison.
    std::vector<double> v(in.begin() + base, in.begin() + base + W);
    for (int o = W / 2; o > 0; o >>= 1) {
      std::vector<double> next(W);
      for (int l = 0; l < W; l++) next[l] = v[l] + v[l ^ o];
      v = next;
    }
    want = v[i % W];
    c.expect(sum[i] == want, at("sum", i, sum[i], want));
    c.expect(mx[i] == wmax, at("max", i, mx[i], wmax));
  }
  cudaFree(din);
  cudaFree(dsum);
  cudaFree(dmax);
  return c.result("8-byte values through KVQ_SHFL_XOR: butterfly sums bit-exact and warp maxima right");
}

Result warpBroadcast() {
  Check c;
  const int threads = 256, n = threads;
  std::vector<int> in(n);
  for (int i = 0; i < n; i++) in[i] = i * 31 + 7;
  int* din = upload(in);
  int* dfull = dalloc<int>(n);
  int* dseg = dalloc<int>(n);
  for (const int src : {0, 5, W - 1, W + 3, -1}) {
    KVQ_LAUNCH(1, threads, 0, nullptr, warp_broadcast)(din, dfull, dseg, src);
    expectClean(c, "warp_broadcast");
    const std::vector<int> full = download(dfull, n), seg = download(dseg, n);
    for (int i = 0; i < n; i++) {
      const int want = in[i - i % W + ((src % W) + W) % W];
      const int want16 = in[i - i % 16 + ((src % 16) + 16) % 16];
      c.expect(full[i] == want, "src " + std::to_string(src) + ": " + at("full", i, full[i], want));
      c.expect(seg[i] == want16, "src " + std::to_string(src) + ": " + at("seg16", i, seg[i], want16));
    }
  }
  cudaFree(din);
  cudaFree(dfull);
  cudaFree(dseg);
  return c.result("__shfl_sync from lanes 0, 5, W-1, W+3 (wraps), -1 (wraps), over the warp and within width 16");
}

Result warpXorWidth16() {
  Check c;
  const int threads = 128, n = threads;
  std::vector<int> in(n);
  for (int i = 0; i < n; i++) in[i] = i * 11 + 3;
  int* din = upload(in);
  int* dinside = dalloc<int>(n);
  int* dacross = dalloc<int>(n);
  KVQ_LAUNCH(1, threads, 0, nullptr, warp_xor_width16)(din, dinside, dacross);
  expectClean(c, "warp_xor_width16");
  const std::vector<int> inside = download(dinside, n), across = download(dacross, n);
  for (int i = 0; i < n; i++) {
    c.expect(inside[i] == in[i ^ 5], at("xor 5 width 16", i, inside[i], in[i ^ 5]));
    if ((i & 16) == 0) {
      // The partner lane i ^ 16 is in the next 16-lane segment: CUDA and HIP return the caller's own value.
      c.expect(across[i] == in[i], at("xor 16 width 16 (partner in a later segment)", i, across[i], in[i]));
    } else {
      // The partner is in the previous segment: CUDA and HIP return the partner's value (the CUDA programming
      // guide: groups "are able to access elements from earlier groups").
      c.expect(across[i] == in[i ^ 16], at("xor 16 width 16 (partner in an earlier segment)", i, across[i], in[i ^ 16]));
    }
  }
  cudaFree(din);
  cudaFree(dinside);
  cudaFree(dacross);
  return c.result("width 16: xor 5 stays in the segment; xor 16 returns the own value toward a later segment and the partner's toward an earlier one");
}

Result warpDown() {
  Check c;
  const int threads = 128, n = threads;
  std::vector<int> in(n);
  for (int i = 0; i < n; i++) in[i] = i * 7 + i % 5 - 100;  // all distinct: a wrong source lane shows
  int* din = upload(in);
  int* dshift = dalloc<int>(n);
  int* dtotal = dalloc<int>(n / W);
  KVQ_LAUNCH(1, threads, 0, nullptr, warp_down)(din, dshift, dtotal);
  expectClean(c, "warp_down");
  const std::vector<int> shifted = download(dshift, n), total = download(dtotal, n / W);
  for (int i = 0; i < n; i++) {
    const int want = i % W + 3 < W ? in[i + 3] : in[i];
    c.expect(shifted[i] == want, at("shifted", i, shifted[i], want));
  }
  for (int w = 0; w < n / W; w++) {
    int want = 0;
    for (int l = 0; l < W; l++) want += in[w * W + l];
    c.expect(total[w] == want, at("total", w, total[w], want));
  }
  cudaFree(din);
  cudaFree(dshift);
  cudaFree(dtotal);
  return c.result("__shfl_down_sync by 3 keeps the last 3 lanes' own values; tree sum into lane 0 of each warp");
}

Result blockReduce2d() {
  Check c;
  const dim3 grid(3, 2);
  const int threads = 256, nb = 6, n = nb * threads;
  std::vector<int> in(n);
  for (int i = 0; i < n; i++) in[i] = (i * 37) % 101 - 50 + (i / threads) * 1000;
  int* din = upload(in);
  int* dtree = dalloc<int>(nb);
  float* dwarp = dalloc<float>(nb);
  int* dids = dalloc<int>(nb);
  KVQ_LAUNCH(grid, threads, 0, nullptr, block_reduce_2d)(din, dtree, dwarp, dids);
  expectClean(c, "block_reduce_2d");
  const std::vector<int> tree = download(dtree, nb), ids = download(dids, nb);
  const std::vector<float> warp = download(dwarp, nb);
  for (int b = 0; b < nb; b++) {
    int want = 0;
    for (int t = 0; t < threads; t++) want += in[b * threads + t];
    c.expect(tree[b] == want, at("tree", b, tree[b], want));
    c.expect(warp[b] == (float)want, at("warp+shared", b, warp[b], want));
    const int wantId = b % 3 + 10 * (b / 3) + 3000 + 20000 + 100000;
    c.expect(ids[b] == wantId, at("blockIdx/gridDim code", b, ids[b], wantId));
  }
  cudaFree(din);
  cudaFree(dtree);
  cudaFree(dwarp);
  cudaFree(dids);
  return c.result("grid 3x2 of 256 threads: static __shared__ tree and shuffle+shared sums right for every (blockIdx.x, blockIdx.y)");
}

Result dynamicShared() {
  Check c;
  const int threads = 128, blocks = 2, n = threads * blocks;
  unsigned* dbefore = dalloc<unsigned>(n);
  float* dafter1 = dalloc<float>(n);
  float* dafter2 = dalloc<float>(n);
  KVQ_LAUNCH(blocks, threads, threads * sizeof(float), nullptr, dyn_smem)(dbefore, dafter1, dafter2);
  expectClean(c, "dyn_smem");
  const std::vector<unsigned> before = download(dbefore, n);
  const std::vector<float> after1 = download(dafter1, n), after2 = download(dafter2, n);
  for (int i = 0; i < n; i++) {
    const int b = i / threads, t = i % threads;
    c.expect(before[i] == 0xFFFFFFFFu, at("unwritten bits (xor 1 unless NaN)", i, before[i], 0xFFFFFFFFu));
    const float w1 = (float)(((t + 17) % threads) * 3 + 1000 * b), w2 = (float)((threads - 1 - t) * 3 + 1000 * b);
    c.expect(after1[i] == w1, at("after1", i, after1[i], w1));
    c.expect(after2[i] == w2, at("after2", i, after2[i], w2));
  }
  cudaFree(dbefore);
  cudaFree(dafter1);
  cudaFree(dafter2);
  return c.result("KVQ_DYNAMIC_SHARED reads 0xFFFFFFFF (NaN) before written in each block; values of other threads hold across __syncthreads");
}

Result mallocFill() {
  Check c;
  const size_t bytes = 1000;
  unsigned char* d = dalloc<unsigned char>(bytes);
  const std::vector<unsigned char> h = download(d, bytes);
  size_t bad = 0;
  for (unsigned char v : h) bad += v != 0xFF;
  c.expect(bad == 0, std::to_string(bad) + " of " + std::to_string(bytes) + " bytes of a fresh cudaMalloc are not 0xFF");
  c.expect(((uintptr_t)d & 255) == 0, "cudaMalloc is not 256-byte aligned");
  cudaFree(d);
  return c.result("fresh cudaMalloc memory is 0xFF bytes, 256-byte aligned");
}

Result syncthreadsVsShuffle(bool barrierFirst, int threads) {
  Check c;
  float* dout = dalloc<float>(threads);
  std::string msg;
  if (barrierFirst) {
    KVQ_LAUNCH(1, threads, 0, nullptr, syncthreads_vs_shuffle)(dout);
    msg = expectFailure(c, cudaErrorLaunchFailure, "syncthreads_vs_shuffle", "");
  } else {
    KVQ_LAUNCH(1, threads, 0, nullptr, shuffle_vs_syncthreads)(dout);
    msg = expectFailure(c, cudaErrorLaunchFailure, "shuffle_vs_syncthreads", "__syncthreads");
  }
  cudaFree(dout);
  return c.result("cudaErrorLaunchFailure: " + msg);
}

Result exitedLanes(bool odd) {
  Check c;
  const int threads = 2 * W;
  float* dout = dalloc<float>(threads);
  std::string msg;
  if (odd) {
    KVQ_LAUNCH(1, threads, 0, nullptr, odd_lanes_exit_then_shuffle)(dout);
    msg = expectFailure(c, cudaErrorLaunchFailure, "odd_lanes_exit_then_shuffle", "exited");
  } else {
    KVQ_LAUNCH(1, threads, 0, nullptr, low_lanes_exit_then_shuffle)(dout);
    msg = expectFailure(c, cudaErrorLaunchFailure, "low_lanes_exit_then_shuffle", "exited");
  }
  cudaFree(dout);
  return c.result("cudaErrorLaunchFailure: " + msg);
}

Result earlyExitBarrier(int threads, int lo, int hi, bool shuffle) {
  Check c;
  std::vector<int> in(threads);
  for (int i = 0; i < threads; i++) in[i] = i * 3 + 1;
  int* din = upload(in);
  int* d1 = dalloc<int>(threads);
  int* d2 = dalloc<int>(threads);
  int* dw = dalloc<int>(threads);
  KVQ_LAUNCH(1, threads, 0, nullptr, early_exit_then_syncthreads)(din, d1, d2, dw, lo, hi, shuffle ? 1 : 0);
  expectClean(c, "early_exit_then_syncthreads");
  const std::vector<int> o1 = download(d1, threads), o2 = download(d2, threads), ws = download(dw, threads);
  const int n = hi - lo;
  for (int t = 0; t < threads; t++) {
    if (t < lo || t >= hi) {
      c.expect(o1[t] == -1 && o2[t] == -1, at("exited thread wrote out", t, o1[t], -1));
      continue;
    }
    const int i = t - lo;
    const int w1 = in[lo + n - 1 - i] * 2;
    const int j = (i + 1) % n;
    const int w2 = in[lo + n - 1 - j] * 2 + 1;
    c.expect(o1[t] == w1, at("out1", t, o1[t], w1));
    c.expect(o2[t] == w2, at("out2", t, o2[t], w2));
    if (shuffle) {
      int want = 0;
      for (int l = 0; l < W; l++) want += in[t - t % W + l];
      c.expect(ws[t] == want, at("warp sum", t, ws[t], want));
    }
  }
  cudaFree(din);
  cudaFree(d1);
  cudaFree(d2);
  cudaFree(dw);
  return c.result(std::to_string(threads) + " threads, only [" + std::to_string(lo) + ", " + std::to_string(hi) +
                  ") stay: three __syncthreads complete without error, results right" + (shuffle ? ", whole surviving warps shuffle" : ""));
}

Result invalidConfig() {
  Check c;
  int* flag = dalloc<int>(1);
  struct Bad {
    dim3 grid, block;
    const char* what;
  };
  const Bad bad[] = {
      {dim3(1), dim3(0), "0 threads"},
      {dim3(1), dim3(2000), "2000 threads"},
      {dim3(1), dim3(32, 32, 2), "32x32x2 = 2048 threads"},
      {dim3(0), dim3(64), "0 blocks"},
  };
  std::string msgs;
  for (const Bad& b : bad) {
    int sentinel = -7;
    cudaMemcpy(flag, &sentinel, sizeof(int), cudaMemcpyHostToDevice);
    KVQ_LAUNCH(b.grid, b.block, 0, nullptr, mark)(flag, 1);
    const cudaError_t e = cudaGetLastError();
    c.expect(e == cudaErrorInvalidConfiguration, std::string(b.what) + ": expected cudaErrorInvalidConfiguration, got " + errText(e));
    c.expect(contains(cudaGetErrorString(e), "mark"), std::string(b.what) + ": the message does not name the kernel: " + cudaGetErrorString(e));
    c.expect(download(flag, 1)[0] == -7, std::string(b.what) + ": the kernel ran");
    if (msgs.empty()) msgs = cudaGetErrorString(e);
  }
  // Largest valid blocks.
  KVQ_LAUNCH(1, 1024, 0, nullptr, mark)(flag, 2);
  expectClean(c, "1024 threads");
  c.expect(download(flag, 1)[0] == 2, "a 1024-thread launch did not run");
  KVQ_LAUNCH(1, dim3(1, 1, 1), 0, nullptr, mark)(flag, 3);
  expectClean(c, "1 thread");
  c.expect(download(flag, 1)[0] == 3, "a 1-thread launch did not run");
  cudaFree(flag);
  return c.result("0 threads, 2000 threads, 2048 threads (3-D), 0 blocks -> cudaErrorInvalidConfiguration, kernel not run; 1 and 1024 threads run. " + msgs);
}

Result sharedLimit() {
  Check c;
  const size_t limit = kvq_sim::shared_limit();
  const size_t want = W == 64 ? 64 * 1024 : 48 * 1024;
  c.expect(limit == want, "shared_limit() = " + std::to_string(limit) + ", expected " + std::to_string(want));
  unsigned* bits = dalloc<unsigned>(2);
  std::vector<unsigned> zero{0, 0};
  cudaMemcpy(bits, zero.data(), 8, cudaMemcpyHostToDevice);
  KVQ_LAUNCH(1, 64, limit + 1, nullptr, smem_edge)(bits, limit + 1);
  const cudaError_t e = cudaGetLastError();
  const std::string msg = cudaGetErrorString(e);
  c.expect(e != cudaSuccess, "a launch with shared_limit()+1 bytes of dynamic shared memory did not fail");
  c.expect(contains(msg, "smem_edge"), "the message does not name the kernel: " + msg);
  c.expect(download(bits, 2)[0] == 0, "the kernel ran despite too much shared memory");
  c.expect(cudaGetLastError() == cudaSuccess, "the error was not cleared");
  KVQ_LAUNCH(1, 64, limit, nullptr, smem_edge)(bits, limit);
  expectClean(c, "smem_edge at shared_limit()");
  const std::vector<unsigned> got = download(bits, 2);
  c.expect(got[0] == 0xFFFFFFFFu, at("last float of shared_limit() bytes before written", 0, got[0], 0xFFFFFFFFu));
  c.expect(got[1] == __float_as_uint(1.5f), at("last float after written", 1, got[1], __float_as_uint(1.5f)));
  c.expect(cudaFuncSetAttribute(smem_edge, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)limit) == cudaSuccess,
           "cudaFuncSetAttribute(shared_limit()) failed");
  c.expect(cudaFuncSetAttribute(smem_edge, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)limit + 1) == cudaErrorInvalidValue,
           "cudaFuncSetAttribute(shared_limit()+1) did not fail with cudaErrorInvalidValue");
  cudaFree(bits);
  return c.result("limit " + std::to_string(limit) + " bytes: limit+1 -> " + cudaGetErrorName(e) + " (" + msg +
                  "), exactly the limit runs and its last float reads NaN bits");
}

Result stickyAndRecovery() {
  Check c;
  const int threads = 2 * W, n = threads;
  float* dbad = dalloc<float>(threads);
  int* flag = dalloc<int>(1);
  int* dout = dalloc<int>(n);
  int sentinel = -7;
  cudaMemcpy(flag, &sentinel, sizeof(int), cudaMemcpyHostToDevice);
  KVQ_LAUNCH(1, threads, 0, nullptr, odd_lanes_exit_then_shuffle)(dbad);
  c.expect(cudaPeekAtLastError() == cudaErrorLaunchFailure, "the faulting launch left no error");
  c.expect(cudaDeviceSynchronize() == cudaErrorLaunchFailure, "cudaDeviceSynchronize does not report the sticky error");
  // While the error is pending nothing runs and copies fail, like a faulted context.
  KVQ_LAUNCH(1, 32, 0, nullptr, mark)(flag, 1);
  c.expect(cudaPeekAtLastError() == cudaErrorLaunchFailure, "the sticky error changed on the next launch");
  const std::string msg = cudaGetErrorString(cudaErrorLaunchFailure);
  c.expect(contains(msg, "odd_lanes_exit_then_shuffle"), "the first error is not the one kept: " + msg);
  int copied = 123;
  c.expect(cudaMemcpy(&copied, flag, sizeof(int), cudaMemcpyDeviceToHost) == cudaErrorLaunchFailure && copied == 123,
           "cudaMemcpy ran while the error was pending");
  c.expect(cudaGetLastError() == cudaErrorLaunchFailure, "cudaGetLastError did not return the pending error");
  c.expect(cudaGetLastError() == cudaSuccess, "cudaGetLastError did not clear the error");
  c.expect(download(flag, 1)[0] == -7, "a launch ran while the error was pending");
  // Recovered: launches run again.
  KVQ_LAUNCH(1, threads, 0, nullptr, iota_after_sync)(dout);
  expectClean(c, "iota_after_sync after the error was cleared");
  const std::vector<int> first = download(dout, n);
  for (int i = 0; i < n; i++) c.expect(first[i] == i, at("first out", i, first[i], i));
  int* dout3 = dalloc<int>(3 * n);
  KVQ_LAUNCH(3, threads, 0, nullptr, iota_after_sync)(dout3);
  expectClean(c, "second launch after recovery");
  const std::vector<int> out = download(dout3, 3 * n);
  for (int i = 0; i < 3 * n; i++) c.expect(out[i] == i, at("out", i, out[i], i));
  KVQ_LAUNCH(1, 32, 0, nullptr, mark)(flag, 5);
  expectClean(c, "mark after recovery");
  c.expect(download(flag, 1)[0] == 5, "mark did not run after recovery");
  c.expect(cudaDeviceSynchronize() == cudaSuccess, "cudaDeviceSynchronize still reports an error");
  cudaFree(dbad);
  cudaFree(flag);
  cudaFree(dout);
  cudaFree(dout3);
  return c.result("the error stays (peek, device sync, skipped launches, failed copies) until cudaGetLastError; then launches run right");
}

Result atomicsCase() {
  Check c;
  const int blocks = 6, threads = 200, n = blocks * threads;
  unsigned* counter = dalloc<unsigned>(1);
  float* fsum = dalloc<float>(1);
  int* tickets = dalloc<int>(1);
  int* seen = dalloc<int>(n);
  int* imax = dalloc<int>(1);
  const unsigned zu = 0;
  const float zf = 0;
  const int zi = 0, neg = -1;
  cudaMemcpy(counter, &zu, 4, cudaMemcpyHostToDevice);
  cudaMemcpy(fsum, &zf, 4, cudaMemcpyHostToDevice);
  cudaMemcpy(tickets, &zi, 4, cudaMemcpyHostToDevice);
  cudaMemcpy(imax, &neg, 4, cudaMemcpyHostToDevice);
  cudaMemsetAsync(seen, 0, n * sizeof(int));
  KVQ_LAUNCH(blocks, threads, 0, nullptr, atomics)(counter, fsum, tickets, seen, imax);
  expectClean(c, "atomics");
  const unsigned cnt = download(counter, 1)[0];
  const float fs = download(fsum, 1)[0];
  const int tk = download(tickets, 1)[0];
  const int mx = download(imax, 1)[0];
  const std::vector<int> s = download(seen, n);
  c.expect(cnt == (unsigned)n, at("counter", 0, cnt, n));
  c.expect(fs == 0.5f * n, at("float sum", 0, fs, 0.5 * n));
  c.expect(tk == n, at("tickets", 0, tk, n));
  int wantMax = -1;
  for (int t = 0; t < n; t++) wantMax = std::max(wantMax, (t * 37) % 1001);
  c.expect(mx == wantMax, at("atomicMax", 0, mx, wantMax));
  for (int i = 0; i < n; i++) c.expect(s[i] == 1, at("ticket seen", i, s[i], 1));
  cudaFree(counter);
  cudaFree(fsum);
  cudaFree(tickets);
  cudaFree(seen);
  cudaFree(imax);
  return c.result("6 blocks x 200 threads: atomicAdd (unsigned, int, float) and atomicMax exact; every old value returned once");
}

Result blockNd() {
  Check c;
  std::string shapes;
  for (const dim3 block : {dim3(32, 4, 1), dim3(16, 4, 2), dim3(8, 3, 8)}) {
    const int per = (int)(block.x * block.y * block.z), blocks = 2, n = per * blocks;
    if (per % W != 0) continue;
    int* tx = dalloc<int>(n);
    int* ty = dalloc<int>(n);
    int* tz = dalloc<int>(n);
    int* ys = dalloc<int>(n);
    int* l0 = dalloc<int>(n);
    KVQ_LAUNCH(blocks, block, 0, nullptr, block_nd)(tx, ty, tz, ys, l0);
    expectClean(c, "block_nd");
    const std::vector<int> hx = download(tx, n), hy = download(ty, n), hz = download(tz, n), hs = download(ys, n), h0 = download(l0, n);
    const std::string shape = std::to_string(block.x) + "x" + std::to_string(block.y) + "x" + std::to_string(block.z) + " ";
    for (int g = 0; g < n; g++) {
      const int t = g % per;
      const int wx = t % (int)block.x, wy = t / (int)block.x % (int)block.y, wz = t / (int)(block.x * block.y);
      c.expect(hx[g] == wx, shape + at("threadIdx.x", g, hx[g], wx));
      c.expect(hy[g] == wy, shape + at("threadIdx.y", g, hy[g], wy));
      c.expect(hz[g] == wz, shape + at("threadIdx.z", g, hz[g], wz));
      int want = 0;
      for (int u = t - t % W; u < t - t % W + W; u++) want += u / (int)block.x % (int)block.y;
      c.expect(hs[g] == want, shape + at("warp sum of threadIdx.y", g, hs[g], want));
      c.expect(h0[g] == t - t % W, shape + at("lane 0's linear id", g, h0[g], t - t % W));
    }
    shapes += (shapes.empty() ? "" : ", ") + shape.substr(0, shape.size() - 1);
    cudaFree(tx);
    cudaFree(ty);
    cudaFree(tz);
    cudaFree(ys);
    cudaFree(l0);
  }
  return c.result("blocks " + shapes + ": threadIdx.x/y/z right; warps are runs of " + std::to_string(W) + " linear thread ids (x fastest)");
}

Result partialWarp(bool badLane) {
  Check c;
  const int threads = W + 16;
  int* s16 = dalloc<int>(threads);
  int* got = dalloc<int>(threads);
  if (!badLane) {
    KVQ_LAUNCH(1, threads, 0, nullptr, partial_warp)(s16, got, -1);
    expectClean(c, "partial_warp");
    const std::vector<int> s = download(s16, threads);
    for (int t = 0; t < threads; t++) {
      const int base = t - t % 16, want = 16 * base + 120;
      c.expect(s[t] == want, at("16-lane sum", t, s[t], want));
    }
    cudaFree(s16);
    cudaFree(got);
    return c.result(std::to_string(threads) + " threads (last warp 16 lanes): 16-lane butterflies in every warp are right");
  }
  KVQ_LAUNCH(1, threads, 0, nullptr, partial_warp)(s16, got, 20);
  const std::string msg = expectFailure(c, cudaErrorLaunchFailure, "partial_warp", "does not exist");
  cudaFree(s16);
  cudaFree(got);
  return c.result("reading lane 20 of a 16-lane warp: " + msg);
}

Result syncwarpCase() {
  Check c;
  const int threads = 4 * W;
  int* out = dalloc<int>(threads);
  KVQ_LAUNCH(1, threads, 0, nullptr, syncwarp_exchange)(out);
  expectClean(c, "syncwarp_exchange");
  const std::vector<int> h = download(out, threads);
  for (int t = 0; t < threads; t++) {
    const int want = (t - t % W + (t % W + 1) % W) * 5;
    c.expect(h[t] == want, at("out", t, h[t], want));
  }
  cudaFree(out);
  return c.result("__syncwarp orders shared-memory writes and reads between lanes of a warp");
}

Result deviceProps() {
  Check c;
  cudaDeviceProp p;
  c.expect(cudaGetDeviceProperties(&p, 0) == cudaSuccess, "cudaGetDeviceProperties failed");
  c.expect(p.warpSize == W, at("warpSize", 0, p.warpSize, W));
  c.expect(p.sharedMemPerBlockOptin == kvq_sim::shared_limit(), at("sharedMemPerBlockOptin", 0, (double)p.sharedMemPerBlockOptin, (double)kvq_sim::shared_limit()));
  c.expect(cudaGetDeviceProperties(&p, 1) == cudaErrorInvalidDevice, "device 1 exists");
  return c.result(std::string(p.name) + ": warpSize " + std::to_string(p.warpSize));
}

std::string jsonString(const std::string& s) {
  std::string o = "\"";
  for (const unsigned char ch : s) {
    switch (ch) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\n': o += "\\n"; break;
      case '\t': o += "\\t"; break;
      default:
        if (ch < 0x20) {
          char buf[8];
          snprintf(buf, sizeof(buf), "\\u%04x", ch);
          o += buf;
        } else {
          o += (char)ch;
        }
    }
  }
  return o + "\"";
}

// The case running now, for the watchdog: a hang (a deadlock the simulator failed to detect) becomes a failed case.
const char* volatile g_running = "none";

void on_alarm(int) {
  const char* parts[] = {"{\"case\": \"", g_running, "\", \"ok\": false, \"detail\": \"hung for 60 s (an undetected deadlock?)\"}\n"};
  for (const char* p : parts) {
    if (write(STDOUT_FILENO, p, strlen(p)) < 0) break;
  }
  _exit(1);
}

}  // namespace

int main() {
  const std::vector<std::pair<std::string, std::function<Result()>>> cases = {
      {"device_properties", deviceProps},
      {"warp_xor_sum_128", [] { return warpXorSum(128); }},
      {"warp_xor_sum_256", [] { return warpXorSum(256); }},
      {"warp_xor_f64_max", warpXorF64},
      {"shfl_sync_broadcast", warpBroadcast},
      {"shfl_xor_sync_width16", warpXorWidth16},
      {"shfl_down_sync", warpDown},
      {"block_reduce_grid_3x2", blockReduce2d},
      {"dynamic_shared_0xff_and_barriers", dynamicShared},
      {"cuda_malloc_0xff", mallocFill},
      {"syncwarp", syncwarpCase},
      {"error_syncthreads_vs_shuffle", [] { return syncthreadsVsShuffle(true, W); }},
      {"error_syncthreads_vs_shuffle_2warps", [] { return syncthreadsVsShuffle(true, 2 * W); }},
      {"error_shuffle_vs_syncthreads", [] { return syncthreadsVsShuffle(false, 2 * W); }},
      {"error_odd_lanes_exited_shuffle", [] { return exitedLanes(true); }},
      {"error_low_lanes_exited_shuffle", [] { return exitedLanes(false); }},
      {"error_shuffle_missing_lane", [] { return partialWarp(true); }},
      {"partial_warp_shuffle", [] { return partialWarp(false); }},
      {"early_exit_high_threads_syncthreads", [] { return earlyExitBarrier(128, 0, 64, true); }},
      {"early_exit_low_threads_syncthreads", [] { return earlyExitBarrier(256, 64, 256, true); }},
      {"early_exit_partial_warp_syncthreads", [] { return earlyExitBarrier(128, 0, 48, false); }},
      {"launch_invalid_configuration", invalidConfig},
      {"launch_dynamic_shared_limit", sharedLimit},
      {"sticky_error_and_recovery", stickyAndRecovery},
      {"atomics", atomicsCase},
      {"block_2d_3d_warps", blockNd},
  };
  int failed = 0;
  signal(SIGALRM, on_alarm);
  for (const auto& kv : cases) {
    cudaGetLastError();  // no case sees another's error
    g_running = kv.first.c_str();
    alarm(60);
    Result r = kv.second();
    alarm(0);
    const cudaError_t left = cudaGetLastError();
    if (left != cudaSuccess) r = {false, r.detail + " [left a pending error: " + errText(left) + "]"};
    if (!r.ok) failed++;
    printf("{\"case\": %s, \"ok\": %s, \"detail\": %s}\n", jsonString(kv.first).c_str(), r.ok ? "true" : "false", jsonString(r.detail).c_str());
    fflush(stdout);
  }
  fprintf(stderr, "simulator self-test, warp %d: %zu cases, %d failed\n", W, cases.size(), failed);
  return failed == 0 ? 0 : 1;
}
