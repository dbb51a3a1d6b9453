// SPDX-License-Identifier: Apache-2.0
//
// One token drawn from a logits row (@kvq/kernels src/sample-draw.ts, `sampleDraw`): the vocabulary pass
// (sample_buckets.h), top-p's cut and the draw, walking whole weight buckets by their masses and listing only the
// bucket each lands in, whose crossing token a quickselect descent finds (src/sample-crossing.ts). The same float64
// operations in the same order as the TypeScript reference (compiled with -ffp-contract=off), and the same partition
// steps, so the same `u` draws the same token. One call instead of the pass, two listings and the JavaScript between
// them.
#ifndef KVQ_SAMPLE_DRAW_H_
#define KVQ_SAMPLE_DRAW_H_

#include <stdint.h>
#include <string.h>

#include <new>
#include <vector>

#include "sample_buckets.h"

namespace kvq {

/** Inputs of sample_draw (see SampleDrawArgs). */
struct SampleDrawParams {
  const float* logits;
  int64_t n;
  double temperature, pruneNats, minWeight;
  double topP;  // (0, 1]
  double u;     // [0, 1)
  int32_t topK;
};

/** At most this many candidates are listed at once instead of bucket by bucket (SAMPLE_SMALL_SET). */
static const int64_t kSampleSmallSet = 1024;
/** Below this many tokens a descent sorts the rest by insertion and walks it (SMALL of sample-crossing.ts). */
static const int64_t kCrossingSmall = 16;

/** Result of sample_first_crossing: the index of the crossing token (-1: none) and the weight walked before it. */
struct SampleCrossing {
  int64_t at;
  double before;
};

/** Token (id a, weight wa) comes before (b, wb) in the walk (desc: weight descending, lower id first; asc: the reverse). */
inline bool sample_precedes(float wa, int32_t a, float wb, int32_t b, bool desc) {
  return desc ? (wa > wb || (wa == wb && a < b)) : (wa < wb || (wa == wb && a > b));
}

/**
 * firstCrossing of sample-crossing.ts, step for step, over members held as parallel arrays (ids[j], their float32
 * weights w[j]; the reference's float64 weights are these values): the first token of [from, to) in the walk's order
 * whose cumulative weight exceeds `target`, by Lomuto partitions around the middle element, sums in float64.
 * Reorders both arrays alike.
 */
inline SampleCrossing sample_first_crossing(int32_t* ids, float* w, int64_t from, int64_t to, double target, bool desc) {
  int64_t lo = from, hi = to;
  double before = 0.0;
  auto swap = [&](int64_t a, int64_t b) {
    const int32_t id = ids[a];
    ids[a] = ids[b];
    ids[b] = id;
    const float x = w[a];
    w[a] = w[b];
    w[b] = x;
  };
  while (hi - lo > kCrossingSmall) {
    swap(lo + ((hi - lo) >> 1), hi - 1);  // the middle element as pivot, moved to the end
    const int32_t pivot = ids[hi - 1];
    const float pw = w[hi - 1];
    int64_t store = lo;
    double sum = 0.0;
    for (int64_t j = lo; j < hi - 1; j++) {
      if (sample_precedes(w[j], ids[j], pw, pivot, desc)) {
        sum += (double)w[j];
        swap(j, store++);
      }
    }
    swap(hi - 1, store);
    if (store > lo && before + sum > target) {
      hi = store;
    } else if (before + sum + (double)pw > target) {
      return SampleCrossing{store, before + sum};
    } else {
      before += sum + (double)pw;
      lo = store + 1;
    }
  }
  for (int64_t j = lo + 1; j < hi; j++) {
    const int32_t t = ids[j];
    const float tw = w[j];
    int64_t i = j - 1;
    while (i >= lo && sample_precedes(tw, t, w[i], ids[i], desc)) {
      ids[i + 1] = ids[i];
      w[i + 1] = w[i];
      i--;
    }
    ids[i + 1] = t;
    w[i + 1] = tw;
  }
  for (int64_t j = lo; j < hi; j++) {
    if (before + (double)w[j] > target) return SampleCrossing{j, before};
    before += (double)w[j];
  }
  return SampleCrossing{-1, before};
}

/**
 * The draw's scratch, thread_local to the calling thread: the pass's recorded candidates (kSampleChunkStride entries a
 * chunk) and chunk counts, the listed members and the cut bucket's kept tail (ids and weights), the bucket masses.
 */
struct SampleDrawScratch {
  std::vector<int32_t> recIds, recBucket, ids, tailIds;
  std::vector<float> recWeight, w, tailW;
  std::vector<int64_t> chunkCounts;
  std::vector<double> mass;
};

/** drawFromAll of sample-draw.ts: the cut and the draw over all m candidates (ids, w), their mass `total`. */
inline int32_t sample_draw_from_all(int32_t* ids, float* w, int64_t m, double total, double topP, double u) {
  int64_t from = 0;
  if (topP < 1 && m > 1) {
    const SampleCrossing x = sample_first_crossing(ids, w, 0, m, (1 - topP) * total, false);
    from = x.at < 0 ? m - 1 : x.at;
  }
  double keptTotal = 0.0;
  for (int64_t j = from; j < m; j++) keptTotal += (double)w[j];
  const SampleCrossing x = sample_first_crossing(ids, w, from, m, u * keptTotal, true);
  return ids[x.at < 0 ? m - 1 : x.at];
}

/**
 * sampleDrawReference of sample-draw.ts: the token `u` draws (into *token; -1 when there is no candidate). The pass runs
 * on the threads of `r` (sample_buckets) and records its candidates; the listings pick from that record (ascending ids,
 * the reference's order and weights), the rest runs on the calling thread. False when out of memory.
 */
inline bool sample_draw(const SampleDrawParams& p, const KernelTable& k, const Runner& r, int32_t* token) {
  thread_local SampleDrawScratch s;
  const int64_t chunks = (p.n + kSampleChunk - 1) / kSampleChunk;
  try {
    const size_t rec = (size_t)(chunks * kSampleChunkStride);
    if (s.recIds.size() < rec) {
      s.recIds.resize(rec);
      s.recBucket.resize(rec);
      s.recWeight.resize(rec);
    }
    const size_t room = (size_t)(p.n + kSampleSlack);
    if (s.ids.size() < room) {
      s.ids.resize(room);
      s.w.resize(room);
      s.tailIds.resize(room);
      s.tailW.resize(room);
    }
    if ((int64_t)s.chunkCounts.size() < chunks) s.chunkCounts.resize((size_t)chunks);
    s.mass.resize((size_t)kSampleBuckets);
  } catch (const std::bad_alloc&) {
    return false;
  }
  double* mass = s.mass.data();
  int32_t* ids = s.ids.data();
  float* w = s.w.data();
  const int64_t* counts = s.chunkCounts.data();
  const SampleCandidates record{s.recIds.data(), s.recBucket.data(), s.recWeight.data()};
  double c[4];
  if (!sample_buckets(SampleBucketsParams{p.logits, p.n, p.temperature, -INFINITY, p.pruneNats, p.minWeight, p.topK, mass, record, s.chunkCounts.data()}, k, r, c)) return false;
  const int64_t count = (int64_t)c[0];
  const double total = c[1];
  *token = -1;
  if (count == 0) return true;
  // The candidates of `bucket` (-1: all) into (into, intoW), ascending ids, chunk after chunk; returns how many.
  auto load = [&](int32_t bucket, int32_t* into, float* intoW) {
    int64_t m = 0;
    for (int64_t ch = 0; ch < chunks; ch++) {
      m += k.samplePick(sample_record_chunk(record, ch), counts[ch], bucket, into + m, intoW + m);
    }
    return m;
  };
  if (count <= kSampleSmallSet) {
    *token = sample_draw_from_all(ids, w, load(-1, ids, w), total, p.topP, p.u);
    return true;
  }
  // Top-p's cut: lastBucket is the least likely bucket kept; tailCount the tokens kept of it when it is cut (in
  // tailIds / tailW), -1 when it is whole and not listed yet.
  int32_t* tailIds = s.tailIds.data();
  float* tailW = s.tailW.data();
  int32_t lastBucket = kSampleBuckets - 1;
  while (lastBucket > 0 && mass[lastBucket] == 0) lastBucket--;
  int64_t tailCount = -1;
  if (p.topP < 1 && count > 1) {
    const double limit = (1 - p.topP) * total;
    double cumulative = 0.0;
    for (int32_t b = lastBucket; b >= 0; b--) {
      if (mass[b] == 0) continue;
      if (b > 0 && cumulative + mass[b] <= limit * (1 - 1e-9)) {
        cumulative += mass[b];
        continue;
      }
      const int64_t m = load(b, ids, w);
      const SampleCrossing x = sample_first_crossing(ids, w, 0, m, limit - cumulative, false);
      if (x.at < 0 && b > 0) {
        cumulative += x.before;  // the whole bucket went; the cut continues above it
        continue;
      }
      // The crossing token and every token after it in the walk stay (none crossed in bucket 0: its most likely token).
      const int64_t from = x.at < 0 ? m - 1 : x.at;
      memcpy(tailIds, ids + from, (size_t)(m - from) * sizeof(int32_t));
      memcpy(tailW, w + from, (size_t)(m - from) * sizeof(float));
      tailCount = m - from;
      lastBucket = b;
      break;
    }
  }
  double keptTotal = 0.0;
  for (int32_t b = 0; b < lastBucket; b++) keptTotal += mass[b];
  if (tailCount < 0) keptTotal += mass[lastBucket];
  else
    for (int64_t j = 0; j < tailCount; j++) keptTotal += (double)tailW[j];
  // The draw: whole buckets, most likely first; in the bucket it lands in, the first token whose cumulative weight
  // exceeds what is left of the draw.
  double t = p.u * keptTotal;
  for (int32_t b = 0; b < lastBucket; b++) {
    if (mass[b] == 0 || t - mass[b] >= 0) {
      t -= mass[b];
      continue;
    }
    const int64_t m = load(b, ids, w);
    const SampleCrossing x = sample_first_crossing(ids, w, 0, m, t, true);
    if (x.at >= 0) {
      *token = ids[x.at];
      return true;
    }
    t -= x.before;  // rounding: the bucket's mass and its walk differ in the last bits
  }
  if (tailCount < 0) tailCount = load(lastBucket, tailIds, tailW);
  const SampleCrossing x = sample_first_crossing(tailIds, tailW, 0, tailCount, t, true);
  *token = tailIds[x.at < 0 ? tailCount - 1 : x.at];
  return true;
}

}  // namespace kvq

#endif  // KVQ_SAMPLE_DRAW_H_
