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

/**
 * Runs the pass with the kernels of `k` (its ISA's sampleMax and sampleWeigh); writes {count, total, max} to
 * `result`. Scratch (candidate ids and buckets in ascending id order) is thread_local and grows to the largest
 * vocabulary seen.
 */
inline void sample_buckets(const SampleBucketsParams& p, const KernelTable& k, double* result) {
  static const SamplePow2Table pow2;
  thread_local std::vector<int32_t> candIds, candBucket, cursorStore;
  thread_local std::vector<float> heapStore;
  if ((int64_t)candIds.size() < p.n) {
    candIds.resize((size_t)p.n);
    candBucket.resize((size_t)p.n);
  }
  cursorStore.resize(kSampleBuckets);
  // Raw pointers: a thread_local in a dlopen'ed addon is reached through __tls_get_addr, a call per access.
  int32_t* cids = candIds.data();
  int32_t* cbucket = candBucket.data();
  int32_t* start = p.start;
  double* mass = p.mass;
  for (int b = 0; b <= kSampleBuckets; b++) start[b] = 0;
  for (int b = 0; b < kSampleBuckets; b++) mass[b] = 0.0;
  double max = k.sampleMax(p.logits, p.n);
  if (max == 0) {
    // The vector max may end on the other zero than the reference's first-found one; the sign reaches `max`.
    max = -INFINITY;
    for (int64_t i = 0; i < p.n; i++) max = p.logits[i] > max ? p.logits[i] : max;
  }
  double floor = p.lower;
  if (p.topK > 0 && p.topK < p.n) {
    if ((int64_t)heapStore.size() < p.topK) heapStore.resize((size_t)p.topK);
    const double kth = k.sampleKth(p.logits, p.n, p.topK, heapStore.data());
    floor = kth > floor ? kth : floor;
  }
  if (p.pruneNats < INFINITY && max > -INFINITY) {
    const double f = max - p.pruneNats * p.temperature;
    floor = f > floor ? f : floor;
  }
  SampleWeighParams w{};
  w.logits = p.logits;
  w.n = p.n;
  w.floor = floor;
  w.max = max;
  w.temperature = p.temperature;
  w.bucketsPerNat = kSampleBucketsPerNat;
  w.lastBucket = kSampleBuckets - 1;
  w.frac = p.expFrac;
  w.ints = pow2.v;
  w.weight = p.weight;
  w.cids = cids;
  w.cbucket = cbucket;
  const int64_t live = k.sampleWeigh(w);
  // Counts and masses in ascending id order; the total is the masses' sum, bucket 0 first. Buckets above the last
  // used one (`hi`) stay empty: their zero masses leave the total's bits alone, so the bucket loops stop at `hi`.
  const double* weight = p.weight;
  int32_t hi = -1;
  for (int64_t j = 0; j < live; j++) {
    const int32_t b = cbucket[j];
    hi = b > hi ? b : hi;
    start[b + 1]++;
    mass[b] += weight[cids[j]];
  }
  double total = 0.0;
  for (int b = 0; b <= hi; b++) total += mass[b];
  for (int b = 0; b <= hi; b++) start[b + 1] += start[b];
  for (int b = hi + 1; b < kSampleBuckets; b++) start[b + 1] = start[b];
  int32_t* cursor = cursorStore.data();
  for (int b = 0; b <= hi; b++) cursor[b] = start[b];
  int32_t* ids = p.ids;
  for (int64_t j = 0; j < live; j++) ids[cursor[cbucket[j]]++] = cids[j];
  result[0] = (double)live;
  result[1] = total;
  result[2] = max;
}

}  // namespace kvq

#endif  // KVQ_SAMPLE_BUCKETS_H_
