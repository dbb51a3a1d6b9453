// SPDX-License-Identifier: Apache-2.0
//
// The CUDA simulator's scheduler and runtime (see cuda_sim.h for what it models and what it does not).
//
// Scheduling: a block's threads are fibers run round-robin by one OS thread (on x86-64 a six-register stack switch
// of our own; elsewhere ucontext, whose signal-mask system call per switch makes it several times slower). A fiber
// runs until it reaches a synchronization point; the last thread to arrive completes it (a barrier releases its waiters, a
// shuffle computes every lane's result) and goes on without switching. When no fiber can run but some have not
// finished, the block is deadlocked: the launch fails with a description of who waits where.
#include "cuda_sim.h"

// The built-in variable names are fields here, not the running thread's values.
#undef threadIdx
#undef blockIdx
#undef blockDim
#undef gridDim

#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#if defined(__x86_64__) && defined(__linux__)
#define KVQ_SIM_FAST_SWITCH 1
// kvq_sim_switch(save, load): push the System V callee-saved registers, store the stack pointer in *save, switch
// to the stack `load` and pop the same registers from it. A new fiber's stack is prepared so that the final `ret`
// enters its entry function as if it had been called.
extern "C" void kvq_sim_switch(void** save, void* load);
asm(R"(
  .text
  .globl kvq_sim_switch
  .hidden kvq_sim_switch
  .type kvq_sim_switch, @function
kvq_sim_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size kvq_sim_switch, .-kvq_sim_switch
)");
#else
#define KVQ_SIM_FAST_SWITCH 0
#endif

namespace kvq_sim {

thread_local ThreadState* t_thread = nullptr;

namespace {

constexpr int kWarp = KVQ_SIM_WARP;
constexpr size_t kStackBytes = 256 * 1024;
constexpr int kMaxThreads = 1024;

enum class Wait : int { None, Barrier, Warp, Done };

struct Fiber {
#if KVQ_SIM_FAST_SWITCH
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
  ThreadState ts;
  Wait wait = Wait::None;
  int lane = 0, warp = 0;
};

struct WarpState {
  int lanes = 0;    // threads of the block in this warp
  int live = 0;     // not yet exited
  int arrived = 0;  // waiting in the current exchange
  uint64_t in[kWarp];
  int src[kWarp];
  uint64_t out[kWarp];
};

struct BlockRun {
  std::vector<Fiber> fibers;
  std::vector<WarpState> warps;
#if KVQ_SIM_FAST_SWITCH
  void* sched = nullptr;
#else
  ucontext_t sched;
#endif
  int live = 0;
  int barrierArrived = 0;
  std::vector<unsigned char> smem;
  void (*body)(void*) = nullptr;
  void* arg = nullptr;
  Fiber* current = nullptr;
  bool failed = false;
  std::string error;
};

thread_local BlockRun* t_block = nullptr;
thread_local std::vector<char*>* t_stacks = nullptr;

// Sticky error of the simulated device, with its message.
thread_local cudaError_t t_error = cudaSuccess;
// The last error raised and its text (kept after cudaGetLastError clears t_error, for cudaGetErrorString).
thread_local cudaError_t t_errorCode = cudaSuccess;
thread_local std::string* t_errorText = nullptr;

void set_error(cudaError_t e, const std::string& msg) {
  if (t_error != cudaSuccess) return;  // keep the first
  t_error = e;
  t_errorCode = e;
  if (!t_errorText) t_errorText = new std::string();
  *t_errorText = msg;
}

void to_scheduler(Fiber* f, BlockRun* b) {
#if KVQ_SIM_FAST_SWITCH
  kvq_sim_switch(&f->sp, b->sched);
#else
  swapcontext(&f->uc, &b->sched);
#endif
}

void to_fiber(BlockRun* b, Fiber* f) {
#if KVQ_SIM_FAST_SWITCH
  kvq_sim_switch(&b->sched, f->sp);
#else
  swapcontext(&b->sched, &f->uc);
#endif
}

void yield_to_scheduler() {
  BlockRun* b = t_block;
  to_scheduler(b->current, b);
}

void fail_block(const std::string& msg) {
  BlockRun* b = t_block;
  if (!b->failed) {
    b->failed = true;
    b->error = msg;
  }
}

std::string where(const Fiber& f) {
  char buf[96];
  snprintf(buf, sizeof(buf), "thread %u (warp %d, lane %d)", f.ts.threadIdx.x + f.ts.blockDim.x * (f.ts.threadIdx.y + f.ts.blockDim.y * f.ts.threadIdx.z),
           f.warp, f.lane);
  return buf;
}

void release_barrier(BlockRun* b) {
  b->barrierArrived = 0;
  for (Fiber& f : b->fibers)
    if (f.wait == Wait::Barrier) f.wait = Wait::None;
}

void fiber_main() {
  BlockRun* b = t_block;
  b->body(b->arg);
  Fiber* f = b->current;
  f->wait = Wait::Done;
  b->live--;
  WarpState& w = b->warps[f->warp];
  w.live--;
  if (w.arrived > 0) {
    fail_block(where(*f) + " exited while other lanes of its warp wait in a full-warp shuffle");
  }
  if (b->barrierArrived > 0 && b->barrierArrived == b->live) release_barrier(b);
  to_scheduler(f, b);  // never resumed
  abort();
}

/** Make f start at fiber_main on the stack [st, st + bytes). */
void prepare(Fiber& f, char* st, size_t bytes) {
#if KVQ_SIM_FAST_SWITCH
  uintptr_t top = ((uintptr_t)(st + bytes)) & ~(uintptr_t)15;
  void** ret = reinterpret_cast<void**>(top - 16);  // after `ret`, rsp = top - 8: the alignment of a called function
  *ret = reinterpret_cast<void*>(&fiber_main);
  void** regs = ret - 6;  // r15 r14 r13 r12 rbx rbp, popped by kvq_sim_switch
  for (int i = 0; i < 6; i++) regs[i] = nullptr;
  f.sp = regs;
#else
  getcontext(&f.uc);
  f.uc.uc_stack.ss_sp = st;
  f.uc.uc_stack.ss_size = bytes;
  f.uc.uc_link = nullptr;
  makecontext(&f.uc, fiber_main, 0);
#endif
}

char* stack(size_t i) {
  if (!t_stacks) t_stacks = new std::vector<char*>();
  while (t_stacks->size() <= i) {
    char* s = static_cast<char*>(malloc(kStackBytes));
    if (!s) return nullptr;
    t_stacks->push_back(s);
  }
  return (*t_stacks)[i];
}

}  // namespace

void syncthreads() {
  BlockRun* b = t_block;
  Fiber* f = b->current;
  if (b->warps[f->warp].arrived > 0) {
    fail_block(where(*f) + " reached __syncthreads while lanes of its warp wait in a shuffle");
  }
  f->wait = Wait::Barrier;
  if (++b->barrierArrived == b->live) {
    release_barrier(b);
    return;
  }
  yield_to_scheduler();
}

uint64_t warp_exchange(uint64_t bits, int src) {
  BlockRun* b = t_block;
  Fiber* f = b->current;
  WarpState& w = b->warps[f->warp];
  w.in[f->lane] = bits;
  w.src[f->lane] = src;
  f->wait = Wait::Warp;
  if (++w.arrived == w.live) {
    if (w.live != w.lanes) fail_block(where(*f) + ": a full-warp shuffle with exited lanes");
    const size_t base = (size_t)f->warp * kWarp;
    for (int l = 0; l < w.lanes; l++) {
      const int s = w.src[l];
      if (s < 0 || s >= w.lanes) {
        fail_block("a shuffle in warp " + std::to_string(f->warp) + " reads lane " + std::to_string(s) + ", which does not exist");
        w.out[l] = 0;
      } else {
        w.out[l] = w.in[s];
      }
      if (b->fibers[base + l].wait != Wait::Done) b->fibers[base + l].wait = Wait::None;
    }
    w.arrived = 0;
  } else {
    yield_to_scheduler();
  }
  return w.out[f->lane];
}

void syncwarp() { (void)warp_exchange(0, lane_id()); }

void* dynamic_shared() { return t_block->smem.empty() ? nullptr : t_block->smem.data(); }

int lane_id() { return t_block->current->lane; }

size_t shared_limit() { return KVQ_SIM_WARP == 64 ? 64 * 1024 : 48 * 1024; }

int occupancy_blocks(int threads, size_t smem) {
  // A small device (see cudaGetDeviceProperties): 2 blocks of <= 256 threads per multiprocessor, fewer if the
  // shared memory does not fit twice. Small numbers make the planners split work the way they do on big GPUs.
  if (threads > 256 || smem * 2 > shared_limit()) return 1;
  return 2;
}

void run_kernel(dim3 grid, dim3 block, size_t smem, const char* name, void (*body)(void*), void* arg) {
  if (t_error != cudaSuccess) return;  // a faulted device runs nothing more until the error is read
  const uint64_t threads = (uint64_t)block.x * block.y * block.z;
  const uint64_t blocks = (uint64_t)grid.x * grid.y * grid.z;
  if (threads == 0 || threads > kMaxThreads || blocks == 0 || grid.y > 65535 || grid.z > 65535) {
    set_error(cudaErrorInvalidConfiguration, std::string("launch of ") + name + ": invalid grid " + std::to_string(grid.x) + "x" +
                                                 std::to_string(grid.y) + "x" + std::to_string(grid.z) + " / block " +
                                                 std::to_string(threads) + " threads");
    return;
  }
  if (smem > shared_limit()) {
    set_error(cudaErrorInvalidValue, std::string("launch of ") + name + ": " + std::to_string(smem) +
                                         " bytes of dynamic shared memory, more than the simulated device's " +
                                         std::to_string(shared_limit()));
    return;
  }
  BlockRun b;
  b.body = body;
  b.arg = arg;
  b.fibers.resize(threads);
  const int nwarps = (int)((threads + kWarp - 1) / kWarp);
  b.warps.resize(nwarps);
  BlockRun* outer = t_block;
  ThreadState* outerThread = t_thread;
  t_block = &b;
  for (uint64_t bi = 0; bi < blocks && !b.failed; bi++) {
    const uint3 bidx{(unsigned)(bi % grid.x), (unsigned)((bi / grid.x) % grid.y), (unsigned)(bi / ((uint64_t)grid.x * grid.y))};
    b.smem.assign(smem, 0xFF);
    b.live = (int)threads;
    b.barrierArrived = 0;
    for (int w = 0; w < nwarps; w++) {
      WarpState& ws = b.warps[w];
      ws.lanes = (int)std::min<uint64_t>(kWarp, threads - (uint64_t)w * kWarp);
      ws.live = ws.lanes;
      ws.arrived = 0;
    }
    for (uint64_t t = 0; t < threads; t++) {
      Fiber& f = b.fibers[t];
      f.ts.threadIdx = uint3{(unsigned)(t % block.x), (unsigned)((t / block.x) % block.y), (unsigned)(t / ((uint64_t)block.x * block.y))};
      f.ts.blockIdx = bidx;
      f.ts.blockDim = block;
      f.ts.gridDim = grid;
      f.wait = Wait::None;
      f.warp = (int)(t / kWarp);
      f.lane = (int)(t % kWarp);
      char* st = stack(t);
      if (!st) {
        b.failed = true;
        b.error = "out of host memory for simulated thread stacks";
        break;
      }
      prepare(f, st, kStackBytes);
    }
    while (b.live > 0 && !b.failed) {
      bool ran = false;
      for (Fiber& f : b.fibers) {
        if (f.wait != Wait::None) continue;
        b.current = &f;
        t_thread = &f.ts;
        to_fiber(&b, &f);
        ran = true;
        if (b.failed) break;
      }
      if (!ran && !b.failed) {
        std::string who;
        int listed = 0;
        for (const Fiber& f : b.fibers) {
          if (f.wait == Wait::Done || listed >= 4) continue;
          who += (listed++ ? "; " : "") + where(f) + (f.wait == Wait::Barrier ? " waits at __syncthreads" : " waits in a shuffle");
        }
        b.failed = true;
        b.error = "deadlock: " + who;
      }
    }
    if (b.failed) {
      set_error(cudaErrorLaunchFailure, std::string("kernel ") + name + ", block (" + std::to_string(bidx.x) + "," +
                                            std::to_string(bidx.y) + "," + std::to_string(bidx.z) + "): " + b.error);
    }
  }
  t_block = outer;
  t_thread = outerThread;
}

}  // namespace kvq_sim

// ---- runtime API -------------------------------------------------------------------------------------------------

using kvq_sim::set_error;
using kvq_sim::t_error;
using kvq_sim::t_errorCode;
using kvq_sim::t_errorText;

struct kvq_sim_stream {
  int unused;
};
struct kvq_sim_event {
  std::chrono::steady_clock::time_point at;
};

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t e) {
  if (e != cudaSuccess && e == t_errorCode && t_errorText) return t_errorText->c_str();
  return e == cudaSuccess ? "no error" : "simulated device error";
}

cudaError_t cudaGetLastError() {
  const cudaError_t e = t_error;
  t_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return t_error; }

// Simulated device allocations (start -> bytes), so copies can check their direction as a real device would fail
// them: a host pointer where device memory is expected (or the reverse) is an error here, not a silent memmove.
std::mutex g_allocMu;
std::map<uintptr_t, size_t> g_allocs;

bool sim_is_device(const void* p, size_t bytes) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> lock(g_allocMu);
  auto it = g_allocs.upper_bound(a);
  if (it == g_allocs.begin()) return false;
  --it;
  return a - it->first < it->second && bytes <= it->second - (a - it->first);
}

cudaError_t cudaMalloc(void** p, size_t bytes) {
  const size_t n = ((bytes ? bytes : 1) + 255) & ~(size_t)255;
  *p = aligned_alloc(256, n);
  if (!*p) return cudaErrorMemoryAllocation;
  memset(*p, 0xFF, n);  // never-written device memory reads as NaN
  std::lock_guard<std::mutex> lock(g_allocMu);
  g_allocs[reinterpret_cast<uintptr_t>(*p)] = n;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  if (p) {
    std::lock_guard<std::mutex> lock(g_allocMu);
    g_allocs.erase(reinterpret_cast<uintptr_t>(p));
  }
  free(p);
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (t_error != cudaSuccess) return t_error;
  if (bytes) {
    const bool dDev = sim_is_device(dst, bytes), sDev = sim_is_device(src, bytes);
    const bool wantD = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    const bool wantS = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    if (dDev != wantD || sDev != wantS) {
      set_error(cudaErrorInvalidValue, "cudaMemcpy: a pointer is not where the copy kind says (host vs device memory)");
      const cudaError_t e = t_error;
      t_error = cudaSuccess;  // not sticky: the call fails, the context stays usable
      return e;
    }
    memmove(dst, src, bytes);
  }
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
  return cudaMemcpy(dst, src, bytes, kind);
}
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t) {
  if (t_error != cudaSuccess) return t_error;
  if (bytes) memset(dst, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* freeBytes, size_t* totalBytes) {
  *freeBytes = *totalBytes = (size_t)8 << 30;
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  *s = new kvq_sim_stream();
  return cudaSuccess;
}
// Everything runs synchronously: a stream is always idle; it reports the sticky error like a real sync would.
cudaError_t cudaStreamSynchronize(cudaStream_t) { return t_error; }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete s;
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new kvq_sim_event();
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  e->at = std::chrono::steady_clock::now();
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return t_error; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  *ms = std::chrono::duration<float, std::milli>(b->at - a->at).count();
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d) {
  if (d != 0) return cudaErrorInvalidDevice;
  memset(p, 0, sizeof(*p));
  snprintf(p->name, sizeof(p->name), "kvq CUDA simulator on the CPU (warp %d)", KVQ_SIM_WARP);
  p->multiProcessorCount = 4;
  p->warpSize = KVQ_SIM_WARP;
  p->totalGlobalMem = (size_t)8 << 30;
  p->l2CacheSize = 4 << 20;
  p->sharedMemPerBlock = kvq_sim::shared_limit();
  p->sharedMemPerBlockOptin = kvq_sim::shared_limit();
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr, int) {
  *v = 0;  // memory clock / bus width: a simulator has no peak bandwidth
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return t_error; }
cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 0;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  *v = 0;
  return cudaSuccess;
}
