// SPDX-License-Identifier: Apache-2.0
//
// The vocabulary passes of token sampling (@kvq/kernels src/sample-buckets.ts): `sampleBuckets` sums every candidate's
// float32 weight into its 1/16-nat bucket's float64 mass, and `sampleBucketIds` lists one bucket's candidates. The
// same float32 operations and float64 sums in the same order as the TypeScript references, so the masses, totals and
// weights are the same bits. The vector steps run in the chosen ISA's kernels (sample_weigh.h); the floors, the
// chunking and the sums of the chunks here, in the addon itself.
#ifndef KVQ_SAMPLE_BUCKETS_H_
#define KVQ_SAMPLE_BUCKETS_H_

#include <stdint.h>

#include <string.h>

#include <cmath>
#include <new>
#include <vector>

#include "kernels.h"

namespace kvq {

/** Inputs of sample_buckets (see SampleBucketsArgs). */
struct SampleBucketsParams {
  const float* logits;
  int64_t n;
  double temperature, lower, pruneNats, minWeight;
  int32_t topK;  // > 0 and < n: the floor is also the topK-th largest logit
  double* mass;  // [kSampleBuckets]
  /**
   * Optional ({nullptr, ...}: none): where each chunk c records its candidates (kernels.h SampleCandidates), from
   * entry c * kSampleChunkStride of each array; their counts go to chunkCounts[c].
   */
  SampleCandidates record;
  int64_t* chunkCounts;
};

/** Ids per chunk of the masses' summation (SAMPLE_CHUNK of sample-buckets.ts): chunks are weighed in parallel. */
static const int64_t kSampleChunk = 8192;
/** Entries per chunk of a recording (SampleBucketsParams::record): a chunk's ids plus the vector stores' slack. */
static const int64_t kSampleChunkStride = kSampleChunk + kSampleSlack;
/** Chunk c's part of a recording `r` (SampleBucketsParams::record): each array from entry c * kSampleChunkStride. */
inline SampleCandidates sample_record_chunk(const SampleCandidates& r, int64_t c) {
  const int64_t off = c * kSampleChunkStride;
  return SampleCandidates{r.ids + off, r.bucket + off, r.weight + off};
}
/** Top-k at most this large runs the chunks on the calling thread (few candidates: little work per chunk). */
static const int32_t kSampleSerialTopK = 4096;

/** The least float32 at or above x (x not NaN). */
inline float sample_f32_at_or_above(double x) {
  float f = (float)x;
  if ((double)f < x) f = std::nextafter(f, INFINITY);
  return f;
}

/** The rule of a pass over `logits` (SampleRule). */
inline SampleRule sample_rule(const float* logits, double max, double floor, double temperature, double minWeight) {
  // (float)floor rounds to nearest, so the float32 below it is at most the floor: no candidate is skipped.
  const float below = floor > -INFINITY ? std::nextafter((float)floor, -INFINITY) : -INFINITY;
  return SampleRule{logits, floor, max, 1.0 / temperature, sample_f32_at_or_above(minWeight), below};
}

/** The largest logit (NaN ignored; -inf when none), with the reference's sign when it is a zero. */
inline double sample_max(const float* logits, int64_t n, const KernelTable& k) {
  const double max = k.sampleMax(logits, n);
  if (max != 0) return max;
  // The vector max may end on the other zero than the reference's running max, which keeps the first zero it meets:
  // that first zero (reported as the result's max).
  for (int64_t i = 0; i < n; i++)
    if (logits[i] == 0) return logits[i];
  return max;
}

/**
 * Runs the pass with the kernels of `k` (its ISA's sampleMax, sampleKth and sampleWeigh) and the threads of `r`
 * (chunks of kSampleChunk ids weighed in parallel into their own masses, added in chunk order: the same bits on any
 * number of threads); writes {count, total, max, floor} to `result`. Scratch is thread_local to the calling thread
 * and grows to the largest vocabulary seen. False when out of memory.
 */
inline bool sample_buckets(const SampleBucketsParams& p, const KernelTable& k, const Runner& r, double* result) {
  thread_local std::vector<double> massStore;
  thread_local std::vector<int64_t> countStore;
  thread_local std::vector<float> heapStore;
  const int64_t chunks = (p.n + kSampleChunk - 1) / kSampleChunk;
  const double max = sample_max(p.logits, p.n, k);
  double floor = p.lower;
  try {
    if (p.topK > 0 && p.topK < p.n) {
      if ((int64_t)heapStore.size() < p.topK) heapStore.resize((size_t)p.topK);
      const double kth = k.sampleKth(p.logits, p.n, p.topK, heapStore.data());
      floor = kth > floor ? kth : floor;
    }
    // Chunk 0 sums into the caller's masses; chunks 1.. into rows of their own.
    massStore.resize((size_t)((chunks > 1 ? chunks - 1 : 0) * kSampleBuckets));
    countStore.resize((size_t)chunks);
  } catch (const std::bad_alloc&) {
    return false;
  }
  if (p.pruneNats < INFINITY && max > -INFINITY) {
    const double f = max - p.pruneNats * p.temperature;
    floor = f > floor ? f : floor;
  }
  const SampleRule rule = sample_rule(p.logits, max, floor, p.temperature, p.minWeight);
  // Raw pointers: a thread_local in a dlopen'ed addon is reached through __tls_get_addr, a call per access (and the
  // pool's workers must see the calling thread's buffers, not their own).
  double* rows = massStore.data();
  int64_t* counts = countStore.data();
  double* mass = p.mass;
  const int64_t n = p.n;
  // No candidate lies in a bucket above `top` (l >= floor and the rounding of q is monotonic), so only buckets 0..top
  // are zeroed, summed and added (all of them when the floor is -inf; NaN compares false).
  const double reach = (max - floor) * rule.invT * 16.0;
  const int32_t top = reach < kSampleBuckets - 1 ? (reach >= 0 ? (int32_t)reach : 0) : kSampleBuckets - 1;
  for (int b = top + 1; b < kSampleBuckets; b++) mass[b] = 0.0;
  auto weigh = [&](int64_t c, int) {
    double* m = c == 0 ? mass : rows + (c - 1) * kSampleBuckets;
    for (int b = 0; b <= top; b++) m[b] = 0.0;
    const int64_t begin = c * kSampleChunk;
    const SampleCandidates out = p.record.ids ? sample_record_chunk(p.record, c) : SampleCandidates{nullptr, nullptr, nullptr};
    counts[c] = k.sampleWeigh(SampleWeighParams{rule, begin, begin + kSampleChunk < n ? begin + kSampleChunk : n, m, out});
  };
  // Top-k leaves few candidates: the chunks then cost a compare per id, less than handing them to (possibly
  // sleeping) workers. Either way the bits are the same.
  const bool parallel = chunks > 1 && r.threads > 1 && !(p.topK > 0 && p.topK <= kSampleSerialTopK);
  if (parallel) r.parallel_for(chunks, weigh);
  else
    for (int64_t c = 0; c < chunks; c++) weigh(c, 0);
  int64_t count = 0;
  for (int64_t c = 0; c < chunks; c++) count += counts[c];
  if (p.chunkCounts) memcpy(p.chunkCounts, counts, (size_t)chunks * sizeof(int64_t));
  for (int64_t c = 1; c < chunks; c++) {
    const double* row = rows + (c - 1) * kSampleBuckets;
    for (int b = 0; b <= top; b++) mass[b] += row[b];
  }
  // The reference adds all buckets; the zeros above `top` leave the sum's bits alone.
  double total = 0.0;
  for (int b = 0; b <= top; b++) total += mass[b];
  result[0] = (double)count;
  result[1] = total;
  result[2] = max;
  result[3] = floor;
  return true;
}

/** Inputs of sample_bucket_ids (see SampleBucketIdsArgs). */
struct SampleBucketIdsParams {
  const float* logits;
  int64_t n;
  double temperature, max, floor, minWeight;
  int32_t bucket;   // -1: every candidate
  int32_t* ids;     // [n]
  double* weight;   // [n]
};

/**
 * The logits a bucket's candidates can have, widened to float32 bounds outside of which no logit is in it: bucket k
 * holds k <= 16 (max - l) / T < k + 1, so l lies in [max - (k + 1) T / 16, max - k T / 16] up to the float64 rounding
 * of q (a few ulp, far inside the 1e-9 relative margin). Logits in the bounds take the exact test.
 */
inline void sample_bucket_bounds(const SampleRule& rule, int32_t bucket, float* lo, float* hi) {
  // Every candidate (bucket -1) is at or above the floor (top-k's few candidates are then found at 16 logits a compare).
  if (bucket < 0 || !(rule.invT > 0) || !std::isfinite(rule.invT) || !std::isfinite(rule.max)) {
    *lo = rule.below;
    *hi = INFINITY;
    return;
  }
  const double dlo = bucket / (16.0 * rule.invT), dhi = (bucket + 1) / (16.0 * rule.invT);
  const double eps = 1e-9 * (std::fabs(rule.max) + dhi + 1.0);
  *lo = std::nextafter((float)(rule.max - dhi - eps), -INFINITY);
  *hi = std::nextafter((float)(rule.max - dlo + eps), INFINITY);
}

/** The candidates of one bucket, on the calling thread (one vector pass over the row). Returns how many. */
inline int64_t sample_bucket_ids(const SampleBucketIdsParams& p, const KernelTable& k) {
  SampleListParams l{sample_rule(p.logits, p.max, p.floor, p.temperature, p.minWeight), p.n, p.bucket, 0.0f, 0.0f, p.ids, p.weight};
  sample_bucket_bounds(l.rule, p.bucket, &l.lo, &l.hi);
  return k.sampleList(l);
}

}  // namespace kvq

#endif  // KVQ_SAMPLE_BUCKETS_H_
