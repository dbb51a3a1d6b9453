// SPDX-License-Identifier: Apache-2.0
#include "threadpool.h"

#include <chrono>
#include <cstdlib>
#include <new>

#include "portable.h"

#if defined(__linux__)
#include <sched.h>
#elif defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>
#endif
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define KVQ_PAUSE() _mm_pause()
#else
#define KVQ_PAUSE() std::this_thread::yield()
#endif

namespace kvq {

int availableCpus() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#elif defined(_WIN32)
  // The processors this process may run on in its processor group (what `start /affinity` or a job object
  // leave it); std::thread::hardware_concurrency counts the whole machine.
  DWORD_PTR process = 0, system = 0;
  if (GetProcessAffinityMask(GetCurrentProcess(), &process, &system) && process != 0) {
    int n = 0;
    for (; process != 0; process &= process - 1) n++;
    return n;
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? (int)n : 1;
}

ThreadPool::ThreadPool(int threads, int spinMicros)
    : threads_(threads < 1 ? 1 : threads), spinMicros_(spinMicros < 0 ? 0 : spinMicros), scratch_(threads_) {
  workers_.reserve(threads_ - 1);
  for (int t = 1; t < threads_; t++) workers_.emplace_back([this, t] { workerLoop(t); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(sleepMutex_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (auto& w : workers_) w.join();
  for (auto& s : scratch_) alignedFree(s.ptr);
  alignedFree(shared_.ptr);
}

void* ThreadPool::shared(size_t bytes) { return grow(shared_, bytes) ? shared_.ptr : nullptr; }

bool ThreadPool::grow(Scratch& s, size_t bytes) {
  bytes = (bytes + 63) & ~(size_t)63;
  if (s.size >= bytes) return true;
  void* p = alignedAlloc(64, bytes);
  if (!p) return false;
  alignedFree(s.ptr);
  s.ptr = p;
  s.size = bytes;
  return true;
}

bool ThreadPool::reserve(size_t bytes) {
  for (auto& s : scratch_)
    if (!grow(s, bytes)) return false;
  return true;
}

void ThreadPool::work(int tid) {
  for (;;) {
    const int64_t i = next_.fetch_add(1, std::memory_order_relaxed);
    if (i >= ntasks_) break;
    fn_(ctx_, i, tid);
  }
}

void ThreadPool::run(int64_t n, void (*fn)(void*, int64_t, int), void* ctx) {
  if (n <= 0) return;
  if (threads_ == 1 || n == 1) {
    for (int64_t i = 0; i < n; i++) fn(ctx, i, 0);
    return;
  }
  fn_ = fn;
  ctx_ = ctx;
  ntasks_ = n;
  next_.store(0, std::memory_order_relaxed);
  pending_.store(threads_ - 1, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_seq_cst);  // publishes the job
  if (sleepers_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard<std::mutex> lock(sleepMutex_);
    wake_.notify_all();
  }
  work(0);
  // Wait for the workers to finish their last task of this job.
  for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; spins++) {
    if (spins < 4096) {
      KVQ_PAUSE();
    } else {
      std::this_thread::yield();
    }
  }
}

void ThreadPool::workerLoop(int tid) {
  uint64_t seen = 0;
  for (;;) {
    // Spin briefly for the next job, then sleep.
    uint64_t gen = generation_.load(std::memory_order_acquire);
    if (gen == seen) {
      const auto deadline =
          std::chrono::steady_clock::now() + std::chrono::microseconds(spinMicros_.load(std::memory_order_relaxed));
      int spins = 0;
      while ((gen = generation_.load(std::memory_order_acquire)) == seen) {
        KVQ_PAUSE();
        if (++spins % 64 == 0 && std::chrono::steady_clock::now() >= deadline) break;
      }
      if (gen == seen) {
        std::unique_lock<std::mutex> lock(sleepMutex_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        wake_.wait(lock, [&] { return (gen = generation_.load(std::memory_order_seq_cst)) != seen; });
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
      }
    }
    seen = gen;
    if (stop_.load(std::memory_order_acquire)) return;
    work(tid);
    pending_.fetch_sub(1, std::memory_order_release);
  }
}

Runner ThreadPool::runner() {
  Runner r;
  r.self = this;
  r.threads = threads_;
  r.run = [](void* self, int64_t n, void (*fn)(void*, int64_t, int), void* ctx) {
    static_cast<ThreadPool*>(self)->run(n, fn, ctx);
  };
  r.reserve = [](void* self, size_t bytes) { return static_cast<ThreadPool*>(self)->reserve(bytes); };
  r.scratch = [](void* self, int tid) { return static_cast<ThreadPool*>(self)->scratch(tid); };
  r.shared = [](void* self, size_t bytes) { return static_cast<ThreadPool*>(self)->shared(bytes); };
  return r;
}

}  // namespace kvq
