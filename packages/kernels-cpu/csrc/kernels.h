// SPDX-License-Identifier: Apache-2.0
//
// The interface between the N-API glue (addon.cc, compiled for baseline x86-64) and the kernels, which are
// compiled once per ISA (kernels_scalar.cc, kernels_avx2.cc, kernels_avx512.cc, kernels_neon.cc) from kernels_impl.h.
// Plain C structs of pointers and sizes (ops.h): no STL crosses this boundary, so the ISA translation units never
// instantiate a template another TU could pick up with the wrong instruction set.
//
// NOTE: kernels trust these structs. The glue validates every size, index and array length before calling.
#ifndef KVQ_KERNELS_H_
#define KVQ_KERNELS_H_

#include <stddef.h>
#include <stdint.h>

// The op parameter structs and dtype codes, shared with the GPU backends (@kvq/kernels csrc/ops.h).
#include "ops.h"

namespace kvq {

/** Status codes a kernel returns. */
enum Status : int { kOk = 0, kOutOfMemory = 1 };

/**
 * Parallel executor handed to kernels (implemented by the thread pool, type-erased so kernels need no STL).
 * `run(self, n, fn, ctx)` calls fn(ctx, i, tid) for every i in [0, n), spread over `threads` threads
 * (tid in [0, threads)), and returns when all calls have returned.
 * `scratch(self, tid)` is the calling thread's scratch buffer, at least the size last reserved.
 */
struct Runner {
  void* self;
  int threads;
  void (*run)(void* self, int64_t n, void (*fn)(void* ctx, int64_t i, int tid), void* ctx);
  /** Make every thread's scratch at least `bytes` (64-byte aligned). Returns false when out of memory. */
  bool (*reserve)(void* self, size_t bytes);
  void* (*scratch)(void* self, int tid);
  /**
   * One buffer of at least `bytes` (64-byte aligned) for all threads of the current op (e.g. the quantized
   * activations every task reads), kept and reused across ops so large per-call buffers cost no page faults; valid
   * until the next call of shared(). Null when out of memory.
   */
  void* (*shared)(void* self, size_t bytes);

  template <class F>
  void parallel_for(int64_t n, F& f) const {
    run(self, n, [](void* c, int64_t i, int tid) { (*static_cast<F*>(c))(i, tid); }, &f);
  }
};

/** Sampling's candidates lie under this many nats below the most likely token (SAMPLE_MAX_NATS). */
static const int kSampleMaxNats = 86;
/** Weight buckets, 1/16 nat each (SAMPLE_BUCKETS). */
static const int kSampleBuckets = kSampleMaxNats * 16;

/**
 * The candidate rule of sampling's vocabulary pass (@kvq/kernels sample-buckets.ts), shared by its two vectorizable
 * steps (sample_weigh.h): id i is a candidate when `logits[i] >= floor`, q = (max - logits[i]) * invT (float64) lies
 * in [0, kSampleMaxNats) and its float32 weight sampleWeight(q) >= minWeight; its bucket is (int)(16 q).
 */
struct SampleRule {
  const float* logits;
  double floor;     // the pass's logit floor
  double max;       // the largest logit
  double invT;      // 1 / temperature
  float minWeight;  // the least float32 at or above the pass's minWeight (weights are float32)
  float below;      // a float32 at or below `floor` (-inf when it is): 16 logits a compare skip what lies under it
};

/**
 * Candidates recorded by a weighing, in ascending id order from index 0: their ids, buckets and float32 weights. Each
 * array has room for the ids weighed plus kSampleSlack entries (vector stores write whole vectors past the count).
 */
struct SampleCandidates {
  int32_t* ids;
  int32_t* bucket;
  float* weight;
};
/** Entries past the count a recording or a pick may write (SampleCandidates). */
static const int64_t kSampleSlack = 16;

/**
 * Weigh ids [begin, n): each candidate's weight added (as float64, ascending ids) to `mass[bucket]`; when `out.ids` is
 * set, the candidates are also recorded there (SampleCandidates).
 */
struct SampleWeighParams {
  SampleRule rule;
  int64_t begin, n;
  double* mass;          // [kSampleBuckets] this chunk's bucket masses
  SampleCandidates out;  // {nullptr, ...}: not recorded
};

/** List the candidates of one bucket (`bucket` -1: all): ascending ids into ids[0..), each weight into weight[id]. */
struct SampleListParams {
  SampleRule rule;
  int64_t n;
  int32_t bucket;
  float lo, hi;     // a logit outside [lo, hi] is not in the bucket (a float32 prefilter; -inf, inf for all)
  int32_t* ids;     // [n]
  double* weight;   // [n], by id
};

/** The kernels of one ISA. */
struct KernelTable {
  const char* isa;
  int vectorWidth;
  int (*linear)(const LinearParams&, const Runner&);
  int (*embedding)(const EmbeddingParams&, const Runner&);
  int (*reshapeAndCache)(const CacheWriteParams&, const Runner&);
  int (*pagedAttention)(const AttentionParams&, const Runner&);
  float (*amaxTensor)(const float* x, int64_t n, const Runner&);
  int (*amaxPerHead)(const AmaxParams&, const Runner&);
  int (*quantizeFp8)(const QuantParams&, const Runner&);
  int (*dequantizeFp8)(const QuantParams&, const Runner&);
  /** Encode float32 bit patterns first..first+count-1 (no scale) — the CUDA-oracle check. */
  int (*encodeFp8Bits)(uint32_t first, int64_t count, uint8_t* out, int format, bool sat, const Runner&);
  /** GGML's 8-bit activation quantization (act_q8.h) of `rows` rows of K for weight dtype `dt`: q[rows * K], scales. */
  int (*quantizeActQ8)(int dt, const float* x, int64_t rows, int64_t K, int8_t* q, float* scales, const Runner&);
  /** Sampling's vocabulary pass, vectorizable steps (sample_weigh.h): the largest of x (NaN ignored), and the weighing. */
  double (*sampleMax)(const float* x, int64_t n);
  /** Returns the number of candidates among ids [p.begin, p.n). */
  int64_t (*sampleWeigh)(const SampleWeighParams& p);
  /** The candidates of one bucket (see SampleListParams); returns how many. */
  int64_t (*sampleList)(const SampleListParams& p);
  /**
   * The recorded candidates `c[0, count)` of `bucket` (-1: all), in their order: ids into ids[0..), weights into
   * weight[0..) (each with kSampleSlack entries of room past the result); returns how many.
   */
  int64_t (*samplePick)(const SampleCandidates& c, int64_t count, int32_t bucket, int32_t* ids, float* weight);
  /** Top-k's floor: the k-th largest of x (1 <= k <= n; NaN never counts; -inf when fewer than k are above -inf). */
  double (*sampleKth)(const float* x, int64_t n, int32_t k, float* heap);
  // The standard ops of ops.h (KVQ_STANDARD_OPS), in that list's order: `int fn(const P&, const Runner&)`.
#define KVQ_TABLE_MEMBER(js, cpuFn, gpuFn, P, read) int (*cpuFn)(const P&, const Runner&);
  KVQ_STANDARD_OPS(KVQ_TABLE_MEMBER)
#undef KVQ_TABLE_MEMBER
};

const KernelTable* kernels_scalar();
#if defined(__x86_64__) || defined(_M_X64)
const KernelTable* kernels_avx2();
const KernelTable* kernels_avx512();
/** The avx512 kernels with the GGML prefill GEMMs (8-bit activations) on AMX tiles; null where not built (not Linux + GCC/Clang). */
const KernelTable* kernels_amx();
#endif
#if defined(__aarch64__)
const KernelTable* kernels_neon();
/** The neon kernels built for armv8-a+dotprod (SDOT int8 dots); null where not built (every OS but Linux). */
const KernelTable* kernels_neon_dotprod();
#endif

}  // namespace kvq

#endif  // KVQ_KERNELS_H_
