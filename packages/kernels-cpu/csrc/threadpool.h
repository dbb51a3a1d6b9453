// SPDX-License-Identifier: Apache-2.0
//
// A persistent thread pool: `threads - 1` workers plus the calling thread. Jobs are a task count and a
// function; tasks are handed out dynamically (one atomic counter), so uneven tasks balance themselves.
// Idle workers spin for a short while (decode loops call ops back to back) and then sleep on a condition
// variable. One job runs at a time; concurrent callers (an async op and a sync op) queue on a mutex.
#ifndef KVQ_THREADPOOL_H_
#define KVQ_THREADPOOL_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "kernels.h"

namespace kvq {

class ThreadPool {
 public:
  /** `threads` >= 1 in total (the caller counts as one); `spinMicros` idle spin before sleeping. */
  ThreadPool(int threads, int spinMicros);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return threads_; }
  void setSpinMicros(int us) { spinMicros_.store(us < 0 ? 0 : us, std::memory_order_relaxed); }
  int spinMicros() const { return spinMicros_.load(std::memory_order_relaxed); }

  /** Runs fn(ctx, i, tid) for i in [0, n); returns when all have returned. */
  void run(int64_t n, void (*fn)(void*, int64_t, int), void* ctx);
  /** Makes every thread's scratch at least `bytes` long; false when out of memory. */
  bool reserve(size_t bytes);
  void* scratch(int tid) { return scratch_[tid].ptr; }
  /** The op-wide shared buffer, grown to at least `bytes` (Runner::shared); null when out of memory. */
  void* shared(size_t bytes);

  /** The kernel-facing view of this pool. */
  Runner runner();

  /** Serializes whole ops (an op = reserve + run + run...), so async and sync callers never interleave. */
  std::mutex& opMutex() { return opMutex_; }

 private:
  struct Scratch {
    void* ptr = nullptr;
    size_t size = 0;
  };
  /** Makes `s` at least `bytes` long (rounded up to 64, 64-byte aligned; contents not kept); false when out of memory. */
  static bool grow(Scratch& s, size_t bytes);
  void workerLoop(int tid);
  void work(int tid);

  const int threads_;
  std::atomic<int> spinMicros_;
  std::vector<std::thread> workers_;
  std::vector<Scratch> scratch_;
  Scratch shared_;
  std::mutex opMutex_;

  // Current job, published by bumping generation_.
  void (*fn_)(void*, int64_t, int) = nullptr;
  void* ctx_ = nullptr;
  int64_t ntasks_ = 0;
  std::atomic<int64_t> next_{0};
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> generation_{0};

  std::mutex sleepMutex_;
  std::condition_variable wake_;
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
};

/** Number of CPUs this process may run on (affinity mask / cgroup aware where the OS tells), >= 1. */
int availableCpus();

}  // namespace kvq

#endif  // KVQ_THREADPOOL_H_
