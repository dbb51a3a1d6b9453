// SPDX-License-Identifier: Apache-2.0
//
// The vocabulary pass of token sampling (@kvq/kernels src/sample-buckets.ts, `sampleBuckets`): weigh every candidate
// logit after temperature and group the candidates by weight bucket (a counting sort). The same double-precision
// operations in the same order as the TypeScript reference (the addon is compiled with -ffp-contract=off), so the
// weights, masses and totals are the same bits. The largest logit and the weighing run in the chosen ISA's kernels
// (sample_weigh.h); the counting and grouping here, in the addon itself.
#ifndef KVQ_SAMPLE_BUCKETS_H_
#define KVQ_SAMPLE_BUCKETS_H_

#include <stdint.h>

#include <cmath>
#include <new>
#include <vector>

#include "kernels.h"

namespace kvq {

static const int kSampleBuckets = 4096;
static const double kSampleBucketsPerNat = 16.0;

/** Inputs and outputs of sample_buckets (see SampleBucketsArgs). */
struct SampleBucketsParams {
  const float* logits;
  int64_t n;
  double temperature, lower, pruneNats;
  int32_t topK;     // > 0 and < n: the floor is also the topK-th largest logit
  double* weight;   // [n], by token id
  int32_t* ids;     // [n], grouped by bucket
  int32_t* start;   // [kSampleBuckets + 1]
  double* mass;     // [kSampleBuckets]
  const double* expFrac;  // [64]: 2^(j/64) exactly as the TypeScript reference computed them (V8's pow and the C
                          // library's differ in the last bit for some j, so the table comes from JavaScript)
};

/** 2^m for m = -1099..0 (0 below 2^-1074): the exact powers of two expNonPositive scales by. */
struct SamplePow2Table {
  SamplePow2Table() {
    for (int i = 0; i < 1100; i++) v[i] = std::ldexp(1.0, i - 1099);
  }
  double v[1100];
};

/** Ids per chunk of the masses' summation (SAMPLE_CHUNK of sample-buckets.ts): chunks are weighed in parallel. */
static const int64_t kSampleChunk = 8192;
/** Top-k at most this large runs the chunks on the calling thread (few candidates: little work per chunk). */
static const int32_t kSampleSerialTopK = 4096;

/**
 * The state of one pass shared by its chunk tasks. Chunk c covers ids [c * kSampleChunk, ...); its candidates go to
 * cids / cbucket from index c * kSampleChunk on (no compaction across chunks), its per-bucket counts and masses to
 * rows c of `count` / `cmass` (buckets 0..top only: no candidate lies above `top`).
 */
struct SamplePass {
  const SampleBucketsParams* p;
  const KernelTable* k;
  SampleWeighParams w;  // the chunk-independent fields
  int32_t top;          // highest bucket a candidate can have
  int32_t* cids;
  int32_t* cbucket;
  int64_t* live;    // [chunks] candidates of each chunk
  int32_t* hi;      // [chunks] highest bucket used by each chunk (-1: none)
  int32_t* count;   // [chunks][top + 1] candidates per bucket, then (scatter) each chunk's next slot per bucket
  double* cmass;    // [chunks][top + 1]
};

/** Task c, weigh: the chunk's weights, candidates (ascending ids) and per-bucket counts and masses (ascending ids). */
inline void sample_weigh_chunk(SamplePass& s, int64_t c) {
  const int64_t rowLen = (int64_t)s.top + 1;
  SampleWeighParams w = s.w;
  w.begin = c * kSampleChunk;
  w.n = w.begin + kSampleChunk < s.p->n ? w.begin + kSampleChunk : s.p->n;
  w.cids = s.cids + w.begin;
  w.cbucket = s.cbucket + w.begin;
  const int64_t live = s.k->sampleWeigh(w);
  int32_t* count = s.count + c * rowLen;
  double* mass = s.cmass + c * rowLen;
  for (int64_t b = 0; b < rowLen; b++) count[b] = 0;
  for (int64_t b = 0; b < rowLen; b++) mass[b] = 0.0;
  const double* weight = s.p->weight;
  int32_t hi = -1;
  for (int64_t j = 0; j < live; j++) {
    const int32_t b = w.cbucket[j];
    hi = b > hi ? b : hi;
    count[b]++;
    mass[b] += weight[w.cids[j]];
  }
  s.live[c] = live;
  s.hi[c] = hi;
}

/** Task c, scatter: the chunk's candidates to their buckets' slots (`count` holds the chunk's first slot per bucket). */
inline void sample_scatter_chunk(SamplePass& s, int64_t c) {
  int32_t* next = s.count + c * ((int64_t)s.top + 1);
  const int32_t* cids = s.cids + c * kSampleChunk;
  const int32_t* cbucket = s.cbucket + c * kSampleChunk;
  int32_t* ids = s.p->ids;
  for (int64_t j = 0; j < s.live[c]; j++) ids[next[cbucket[j]]++] = cids[j];
}

/** The largest logit (NaN ignored; -inf when none), with the reference's sign when it is a zero. */
inline double sample_max(const SampleBucketsParams& p, const KernelTable& k) {
  const double max = k.sampleMax(p.logits, p.n);
  if (max != 0) return max;
  // The vector max may end on the other zero than the reference's running max, which keeps the first zero it meets
  // (no value is above 0; the sign reaches the weights through `max`): that first zero.
  for (int64_t i = 0; i < p.n; i++)
    if (p.logits[i] == 0) return p.logits[i];
  return max;
}

/**
 * Runs the pass with the kernels of `k` (its ISA's sampleMax, sampleKth and sampleWeigh) and the threads of `r`
 * (chunks of kSampleChunk ids weighed and scattered in parallel; the same bits on any number of threads); writes
 * {count, total, max} to `result`. Scratch is thread_local to the calling thread and grows to the largest vocabulary
 * seen. False when out of memory.
 */
inline bool sample_buckets(const SampleBucketsParams& p, const KernelTable& k, const Runner& r, double* result) {
  static const SamplePow2Table pow2;
  thread_local std::vector<int32_t> candIds, candBucket, countStore, hiStore;
  thread_local std::vector<int64_t> liveStore;
  thread_local std::vector<double> massStore;
  thread_local std::vector<float> heapStore;
  const int64_t chunks = (p.n + kSampleChunk - 1) / kSampleChunk;
  int32_t* start = p.start;
  double* mass = p.mass;
  for (int b = 0; b <= kSampleBuckets; b++) start[b] = 0;
  for (int b = 0; b < kSampleBuckets; b++) mass[b] = 0.0;
  const double max = sample_max(p, k);
  double floor = p.lower;
  try {
    if (p.topK > 0 && p.topK < p.n) {
      if ((int64_t)heapStore.size() < p.topK) heapStore.resize((size_t)p.topK);
      const double kth = k.sampleKth(p.logits, p.n, p.topK, heapStore.data());
      floor = kth > floor ? kth : floor;
    }
    if ((int64_t)candIds.size() < p.n) {
      candIds.resize((size_t)p.n);
      candBucket.resize((size_t)p.n);
    }
  } catch (const std::bad_alloc&) {
    return false;
  }
  if (p.pruneNats < INFINITY && max > -INFINITY) {
    const double f = max - p.pruneNats * p.temperature;
    floor = f > floor ? f : floor;
  }
  SamplePass s{};
  s.p = &p;
  s.k = &k;
  s.w.logits = p.logits;
  s.w.floor = floor;
  s.w.max = max;
  s.w.temperature = p.temperature;
  s.w.bucketsPerNat = kSampleBucketsPerNat;
  s.w.lastBucket = kSampleBuckets - 1;
  s.w.frac = p.expFrac;
  s.w.ints = pow2.v;
  s.w.weight = p.weight;
  // The reference's bound: floor((max - floor) * 16 / T) below the last bucket, else the last bucket (also for NaN:
  // no finite floor); a candidate's (max - l) * 16 / T is at most that (l >= floor; rounding is monotonic).
  const double reach = (max - floor) * (kSampleBucketsPerNat / p.temperature);
  s.top = reach < kSampleBuckets - 1 ? (reach >= 0 ? (int32_t)reach : 0) : kSampleBuckets - 1;
  const int64_t rowLen = (int64_t)s.top + 1;
  try {
    countStore.resize((size_t)(chunks * rowLen));
    massStore.resize((size_t)(chunks * rowLen));
    liveStore.resize((size_t)chunks);
    hiStore.resize((size_t)chunks);
  } catch (const std::bad_alloc&) {
    return false;
  }
  // Raw pointers: a thread_local in a dlopen'ed addon is reached through __tls_get_addr, a call per access (and the
  // pool's workers must see the calling thread's buffers, not their own).
  s.cids = candIds.data();
  s.cbucket = candBucket.data();
  s.count = countStore.data();
  s.cmass = massStore.data();
  s.live = liveStore.data();
  s.hi = hiStore.data();
  // Top-k leaves few candidates: the chunks then cost a compare per id, less than handing them to (possibly
  // sleeping) workers. Either way the bits are the same.
  const bool parallel = chunks > 1 && r.threads > 1 && !(p.topK > 0 && p.topK <= kSampleSerialTopK);
  auto weigh = [&s](int64_t c, int) { sample_weigh_chunk(s, c); };
  if (parallel) r.parallel_for(chunks, weigh);
  else
    for (int64_t c = 0; c < chunks; c++) sample_weigh_chunk(s, c);
  // Masses chunk by chunk (chunk 0 from 0), counts to bucket starts, and each chunk's first slot in every bucket:
  // bucket b holds chunk 0's candidates, then chunk 1's, ... (ascending ids). Buckets above the last used one (`hi`)
  // stay empty: their zero masses leave the total's bits alone.
  int32_t hi = -1;
  int64_t live = 0;
  for (int64_t c = 0; c < chunks; c++) {
    hi = s.hi[c] > hi ? s.hi[c] : hi;
    live += s.live[c];
  }
  for (int64_t c = 0; c < chunks; c++) {
    const double* cm = s.cmass + c * rowLen;
    for (int b = 0; b <= s.hi[c]; b++) mass[b] += cm[b];
  }
  int32_t slot = 0;
  for (int b = 0; b <= hi; b++) {
    start[b] = slot;
    for (int64_t c = 0; c < chunks; c++) {
      int32_t* cnt = s.count + c * rowLen + b;
      const int32_t m = *cnt;
      *cnt = slot;
      slot += m;
    }
  }
  for (int b = hi + 1; b <= kSampleBuckets; b++) start[b] = slot;
  double total = 0.0;
  for (int b = 0; b <= hi; b++) total += mass[b];
  auto scatter = [&s](int64_t c, int) { sample_scatter_chunk(s, c); };
  if (parallel) r.parallel_for(chunks, scatter);
  else
    for (int64_t c = 0; c < chunks; c++) sample_scatter_chunk(s, c);
  result[0] = (double)live;
  result[1] = total;
  result[2] = max;
  return true;
}

}  // namespace kvq

#endif  // KVQ_SAMPLE_BUCKETS_H_
