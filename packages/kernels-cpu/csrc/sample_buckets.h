// SPDX-License-Identifier: Apache-2.0
//
// The vocabulary pass of token sampling (@kvq/kernels src/sample-buckets.ts, `sampleBuckets`): weigh every candidate
// logit after temperature and group the candidates by weight bucket (a counting sort). The same double-precision
// operations in the same order as the TypeScript reference (the addon is compiled with -ffp-contract=off), so the
// weights, masses and totals are the same bits. ISA-independent; compiled into the addon itself.
#ifndef KVQ_SAMPLE_BUCKETS_H_
#define KVQ_SAMPLE_BUCKETS_H_

#include <stdint.h>

#include <cmath>
#include <vector>

namespace kvq {

static const int kSampleBuckets = 4096;
static const double kSampleBucketsPerNat = 16.0;

/** Inputs and outputs of sample_buckets (see SampleBucketsArgs). */
struct SampleBucketsParams {
  const float* logits;
  int64_t n;
  double temperature, lower, pruneNats;
  double* weight;   // [n], by token id
  int32_t* ids;     // [n], grouped by bucket
  int32_t* start;   // [kSampleBuckets + 1]
  double* mass;     // [kSampleBuckets]
  const double* expFrac;  // [64]: 2^(j/64) exactly as the TypeScript reference computed them (V8's pow and the C
                          // library's differ in the last bit for some j, so the table comes from JavaScript)
};

/** expNonPositive of sample-buckets.ts: e^x for x <= 0, the same operations in the same order. */
class ExpNonPositive {
 public:
  ExpNonPositive() {
    for (int i = 0; i < 1100; i++) int_[i] = std::ldexp(1.0, i - 1099);  // exact powers of two (0 below 2^-1074)
  }
  inline double operator()(double x, const double* frac_) const {
    if (!(x > -745.2)) return x == x ? 0.0 : x;
    const int32_t n = (int32_t)(x * (64.0 / 0.6931471805599453) - 0.5);
    const double r = x - n * kHi - n * kLo;
    const double p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0)))));
    return int_[(n >> 6) + 1099] * (frac_[n & 63] * p);
  }

 private:
  static constexpr double kHi = 6.93147180369123816490e-1 / 64.0;
  static constexpr double kLo = 1.90821492927058770002e-10 / 64.0;
  double int_[1100];
};

/**
 * Runs the pass; writes {count, total, max} to `result`. Scratch (candidate ids and buckets in ascending id order)
 * is thread_local and grows to the largest vocabulary seen.
 */
inline void sample_buckets(const SampleBucketsParams& p, double* result) {
  static const ExpNonPositive expnp;
  thread_local std::vector<int32_t> candIds, candBucket;
  if ((int64_t)candIds.size() < p.n) {
    candIds.resize((size_t)p.n);
    candBucket.resize((size_t)p.n);
  }
  for (int k = 0; k <= kSampleBuckets; k++) p.start[k] = 0;
  for (int k = 0; k < kSampleBuckets; k++) p.mass[k] = 0.0;
  double max = -INFINITY;
  for (int64_t i = 0; i < p.n; i++) {
    const double v = p.logits[i];
    if (v > max) max = v;
  }
  double floor = p.lower;
  if (p.pruneNats < INFINITY && max > -INFINITY) {
    const double f = max - p.pruneNats * p.temperature;
    floor = f > floor ? f : floor;
  }
  // Raw pointers: a thread_local in a dlopen'ed addon is reached through __tls_get_addr, a call per access.
  int32_t* cids = candIds.data();
  int32_t* cbucket = candBucket.data();
  const double* frac = p.expFrac;
  double* weight = p.weight;
  int32_t* startp = p.start;
  double* massp = p.mass;
  const float* logits = p.logits;
  const double invT = 1.0 / p.temperature;
  const double scale = kSampleBucketsPerNat / p.temperature;
  int32_t live = 0;
  double total = 0.0;
  for (int64_t i = 0; i < p.n; i++) {
    const double l = logits[i];
    if (!(l >= floor)) continue;
    const double w = expnp((l - max) * invT, frac);
    weight[i] = w;
    if (w > 0) {
      const double d = (max - l) * scale;
      const int k = d < kSampleBuckets - 1 ? (int)d : kSampleBuckets - 1;
      cids[live] = (int32_t)i;
      cbucket[live++] = k;
      startp[k + 1]++;
      massp[k] += w;
      total += w;
    }
  }
  for (int k = 0; k < kSampleBuckets; k++) p.start[k + 1] += p.start[k];
  thread_local std::vector<int32_t> cursorStore;
  cursorStore.assign(p.start, p.start + kSampleBuckets);
  int32_t* cursor = cursorStore.data();
  int32_t* ids = p.ids;
  for (int32_t j = 0; j < live; j++) ids[cursor[cbucket[j]]++] = cids[j];
  result[0] = (double)live;
  result[1] = total;
  result[2] = max;
}

}  // namespace kvq

#endif  // KVQ_SAMPLE_BUCKETS_H_
