// SPDX-License-Identifier: Apache-2.0
//
// The vectorizable steps of sampling's vocabulary pass (sample_buckets.h): the largest logit, the top-k floor, every
// candidate's float32 weight summed into its bucket's float64 mass, and the listing of one bucket's candidates.
// Compiled once per ISA inside kernels_impl.h (namespace KVQ_NS): AVX-512 and AVX2 run 8 / 4 float64 lanes, the
// others the scalar loops. Every lane performs the float64 operations of @kvq/kernels' sampleWeight, unfused (the
// kernels are compiled with -ffp-contract=off) and in the same order, then rounds once to float32, so all paths give
// the reference's bits; masses are added in ascending id order. No STL here (see kernels.h).
#ifndef KVQ_SAMPLE_WEIGH_H_
#define KVQ_SAMPLE_WEIGH_H_

// Included inside namespace kvq::KVQ_NS by kernels_impl.h, after its simd_<isa>.h (which brings the intrinsics).

/** ln 2 split (fdlibm's ln2_hi, 32 significant bits, and the rest), log2(e), and 1.5 * 2^52 (adding it rounds). */
static const double kSwLn2Hi = 6.93147180369123816490e-1;
static const double kSwLn2Lo = 1.90821492927058770002e-10;
static const double kSwL2E = 1.4426950408889634;  // Math.LOG2E
static const double kSwRounder = 6755399441055744.0;

/** sampleWeight (sample-buckets.ts): e^-q for q in [0, 86), the reference's float64 operations, rounded to float32. */
static inline float sw_weight_scalar(double q) {
  const double x = -q;
  const double n = x * kSwL2E + kSwRounder - kSwRounder;
  const double r = x - n * kSwLn2Hi - n * kSwLn2Lo;
  const double p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120 + r * (1.0 / 720 + r * (1.0 / 5040)))))));
  // 2^n from its exponent bits (n in [-125, 0]: normal).
  const int64_t bits = ((int64_t)n + 1023) << 52;
  double e;
  __builtin_memcpy(&e, &bits, 8);
  return (float)(p * e);
}

/** q of logit l when l is a candidate of `r` (else -1); the weight into *w. */
static inline double sw_candidate_scalar(const SampleRule& r, float l, float* w) {
  if (!((double)l >= r.floor)) return -1.0;
  const double q = (r.max - (double)l) * r.invT;
  if (!(q >= 0.0 && q < (double)kSampleMaxNats)) return -1.0;
  *w = sw_weight_scalar(q);
  return *w >= r.minWeight ? q : -1.0;
}

/**
 * Scalar weigh of ids [i0, p.n): the loop every ISA finishes its tail with; candidates recorded from index `recorded`
 * of p.out when it is set. Returns the candidates counted.
 */
static inline int64_t sw_weigh_scalar(const SampleWeighParams& p, int64_t i0, int64_t recorded) {
  int64_t count = 0;
  for (int64_t i = i0; i < p.n; i++) {
    float w = 0.0f;
    const double q = sw_candidate_scalar(p.rule, p.rule.logits[i], &w);
    if (q < 0.0) continue;
    const int32_t b = (int32_t)(q * 16.0);
    p.mass[b] += (double)w;
    if (p.out.ids) {
      p.out.ids[recorded + count] = (int32_t)i;
      p.out.bucket[recorded + count] = b;
      p.out.weight[recorded + count] = w;
    }
    count++;
  }
  return count;
}

/** Scalar pick of the recorded candidates [j0, count) of `bucket` (-1: all), from index m of ids / weight; returns the new m. */
static inline int64_t sw_pick_scalar(const SampleCandidates& c, int64_t j0, int64_t count, int32_t bucket, int32_t* ids, float* weight, int64_t m) {
  for (int64_t j = j0; j < count; j++) {
    if (bucket >= 0 && c.bucket[j] != bucket) continue;
    ids[m] = c.ids[j];
    weight[m++] = c.weight[j];
  }
  return m;
}

/** Scalar listing of ids [i0, p.n) (candidates from ids[count] on). Returns the new count. */
static inline int64_t sw_list_scalar(const SampleListParams& p, int64_t i0, int64_t count) {
  for (int64_t i = i0; i < p.n; i++) {
    float w = 0.0f;
    const double q = sw_candidate_scalar(p.rule, p.rule.logits[i], &w);
    if (q < 0.0 || (p.bucket >= 0 && (int32_t)(q * 16.0) != p.bucket)) continue;
    p.weight[i] = (double)w;
    p.ids[count++] = (int32_t)i;
  }
  return count;
}

/** Replaces the smallest of the min-heap `heap[0..k)` by `w` (> heap[0]) and sifts it down; returns the new heap[0]. */
static inline float sw_heap_push(float* heap, int32_t k, float w) {
  int32_t c = 0;
  for (;;) {
    const int32_t l = 2 * c + 1;
    if (l >= k) break;
    const int32_t s = l + 1 < k && heap[l + 1] < heap[l] ? l + 1 : l;
    if (!(heap[s] < w)) break;
    heap[c] = heap[s];
    c = s;
  }
  heap[c] = w;
  return heap[0];
}

/** The heap's start: k floats of -inf (the floor). */
static inline float sw_kth_init(float* heap, int32_t k) {
  for (int32_t j = 0; j < k; j++) heap[j] = -kvq_inff();
  return -kvq_inff();
}

/** Push x[b] for each set bit b of `m` (lanes a vector compare found above the floor) still above it. */
static inline float sw_kth_mask(const float* x, unsigned m, float* heap, int32_t k, float floor) {
  while (m) {
    const int b = __builtin_ctz(m);
    m &= m - 1;
    if (x[b] > floor) floor = sw_heap_push(heap, k, x[b]);
  }
  return floor;
}

/** The k-th largest of x[i0, n) joined to the heap (floor = heap[0]): the scalar loop every ISA finishes with. */
static inline float sw_kth_scalar(const float* x, int64_t i0, int64_t n, int32_t k, float* heap, float floor) {
  for (int64_t i = i0; i < n; i++)
    if (x[i] > floor) floor = sw_heap_push(heap, k, x[i]);
  return floor;
}

#if defined(__AVX512F__)

/** sw_weight_scalar of 8 lanes (float64 operations, rounded to float32 at the end). */
static KVQ_ALWAYS_INLINE __m256 sw_weight8(__m512d q) {
  const __m512d x = _mm512_sub_pd(_mm512_setzero_pd(), q);
  const __m512d R = _mm512_set1_pd(kSwRounder);
  const __m512d n = _mm512_sub_pd(_mm512_add_pd(_mm512_mul_pd(x, _mm512_set1_pd(kSwL2E)), R), R);
  const __m512d r = _mm512_sub_pd(_mm512_sub_pd(x, _mm512_mul_pd(n, _mm512_set1_pd(kSwLn2Hi))), _mm512_mul_pd(n, _mm512_set1_pd(kSwLn2Lo)));
  __m512d p = _mm512_add_pd(_mm512_set1_pd(1.0 / 720), _mm512_mul_pd(r, _mm512_set1_pd(1.0 / 5040)));
  p = _mm512_add_pd(_mm512_set1_pd(1.0 / 120), _mm512_mul_pd(r, p));
  p = _mm512_add_pd(_mm512_set1_pd(1.0 / 24), _mm512_mul_pd(r, p));
  p = _mm512_add_pd(_mm512_set1_pd(1.0 / 6), _mm512_mul_pd(r, p));
  p = _mm512_add_pd(_mm512_set1_pd(0.5), _mm512_mul_pd(r, p));
  p = _mm512_add_pd(_mm512_set1_pd(1.0), _mm512_mul_pd(r, p));
  p = _mm512_add_pd(_mm512_set1_pd(1.0), _mm512_mul_pd(r, p));
  const __m512i e = _mm512_slli_epi64(_mm512_add_epi64(_mm512_cvtepi32_epi64(_mm512_cvtpd_epi32(n)), _mm512_set1_epi64(1023)), 52);
  return _mm512_cvtpd_ps(_mm512_mul_pd(p, _mm512_castsi512_pd(e)));
}

/** The lanes of 8 logits at l that pass the floor and lie under kSampleMaxNats (mask), and their q. */
static KVQ_ALWAYS_INLINE __mmask8 sw_in_range8(const SampleRule& r, const float* l, __m512d* q) {
  const __m512d x = _mm512_cvtps_pd(_mm256_loadu_ps(l));
  const __mmask8 m = _mm512_cmp_pd_mask(x, _mm512_set1_pd(r.floor), _CMP_GE_OQ);
  if (!m) return 0;
  *q = _mm512_mul_pd(_mm512_sub_pd(_mm512_set1_pd(r.max), x), _mm512_set1_pd(r.invT));
  return _mm512_mask_cmp_pd_mask(_mm512_mask_cmp_pd_mask(m, *q, _mm512_setzero_pd(), _CMP_GE_OQ), *q, _mm512_set1_pd((double)kSampleMaxNats), _CMP_LT_OQ);
}

/** Lanes of m whose float32 weight passes the min weight. */
static KVQ_ALWAYS_INLINE __mmask8 sw_min_weight8(__mmask8 m, __m256 w, float minWeight) {
  return m & (__mmask8)_mm256_movemask_ps(_mm256_cmp_ps(w, _mm256_set1_ps(minWeight), _CMP_GE_OQ));
}

/** Candidates staged (weights and buckets, ascending ids) before their masses are added: see sampleWeigh. */
static const int kSwStage = 512;

static int64_t sampleWeigh(const SampleWeighParams& p) {
  // The candidates are compressed into a staging buffer and added to the masses a few hundred at a time: scalar loads
  // straight after each vector store measured ~30% slower (the loads wait for the wide store to retire). Recording
  // candidates (p.out), the staging buffer is the record itself.
  alignas(64) float wl[kSwStage];
  alignas(64) int32_t kl[kSwStage];
  const bool record = p.out.ids != nullptr;
  float* const W = record ? p.out.weight : wl;
  int32_t* const K = record ? p.out.bucket : kl;
  int64_t staged = 0;  // entries of W / K written
  int64_t added = 0;   // entries of W / K added to the masses
  int64_t count = 0;   // candidates before W[0] (not recording: flushed batches)
  int64_t i = p.begin;
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (; i + 8 <= p.n; i += 8) {
    // 16 logits under the floor (top-k's usual case) skipped with one float32 compare.
    if (((i - p.begin) & 15) == 0 && i + 16 <= p.n &&
        !_mm512_cmp_ps_mask(_mm512_loadu_ps(p.rule.logits + i), _mm512_set1_ps(p.rule.below), _CMP_GE_OQ)) {
      i += 8;
      continue;
    }
    __m512d q;
    __mmask8 m = sw_in_range8(p.rule, p.rule.logits + i, &q);
    if (!m) continue;
    const __m256 w = sw_weight8(q);
    m = sw_min_weight8(m, w, p.rule.minWeight);
    _mm256_storeu_ps(W + staged, _mm256_maskz_compress_ps(m, w));
    _mm256_storeu_si256((__m256i*)(K + staged), _mm256_maskz_compress_epi32(m, _mm512_cvttpd_epi32(_mm512_mul_pd(q, _mm512_set1_pd(16.0)))));
    if (record) _mm256_storeu_si256((__m256i*)(p.out.ids + staged), _mm256_maskz_compress_epi32(m, _mm256_add_epi32(lane, _mm256_set1_epi32((int32_t)i))));
    staged += __builtin_popcount(m);
    if (staged - added > kSwStage - 8) {
      for (int64_t j = added; j < staged; j++) p.mass[K[j]] += (double)W[j];
      added = staged;
      if (!record) {
        count += staged;
        staged = added = 0;
      }
    }
  }
  for (int64_t j = added; j < staged; j++) p.mass[K[j]] += (double)W[j];
  count += staged;
  return count + sw_weigh_scalar(p, i, count);
}

/** The recorded candidates of `bucket` (-1: all), 16 a compare (see KernelTable::samplePick). */
static int64_t samplePick(const SampleCandidates& c, int64_t count, int32_t bucket, int32_t* ids, float* weight) {
  int64_t m = 0, j = 0;
  for (; j + 16 <= count; j += 16) {
    const __mmask16 hit = bucket < 0 ? (__mmask16)0xFFFF : _mm512_cmpeq_epi32_mask(_mm512_loadu_si512(c.bucket + j), _mm512_set1_epi32(bucket));
    if (!hit) continue;
    _mm512_storeu_si512(ids + m, _mm512_maskz_compress_epi32(hit, _mm512_loadu_si512(c.ids + j)));
    _mm512_storeu_ps(weight + m, _mm512_maskz_compress_ps(hit, _mm512_loadu_ps(c.weight + j)));
    m += __builtin_popcount(hit);
  }
  return sw_pick_scalar(c, j, count, bucket, ids, weight, m);
}

/** Lists the candidates of p's bucket among the 8 logits from i (ids from count on); returns the new count. */
static KVQ_ALWAYS_INLINE int64_t sw_list8(const SampleListParams& p, int64_t i, int64_t count) {
  // The bucket test first: the weights only where a lane is in the bucket.
  __m512d q;
  __mmask8 m = sw_in_range8(p.rule, p.rule.logits + i, &q);
  if (m && p.bucket >= 0) m = _mm256_mask_cmpeq_epi32_mask(m, _mm512_cvttpd_epi32(_mm512_mul_pd(q, _mm512_set1_pd(16.0))), _mm256_set1_epi32(p.bucket));
  if (!m) return count;
  const __m256 w = sw_weight8(q);
  m = sw_min_weight8(m, w, p.rule.minWeight);
  _mm512_mask_storeu_pd(p.weight + i, m, _mm512_cvtps_pd(w));
  // count + 8 <= i + 8 <= n: the full-width store stays inside ids.
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  _mm256_storeu_si256((__m256i*)(p.ids + count), _mm256_maskz_compress_epi32(m, _mm256_add_epi32(lane, _mm256_set1_epi32((int32_t)i))));
  return count + __builtin_popcount(m);
}

static int64_t sampleList(const SampleListParams& p) {
  int64_t count = 0;
  int64_t i = 0;
  // 16 logits a step against the float32 bounds; the exact test only where one lies in them.
  for (; i + 16 <= p.n; i += 16) {
    const __m512 l = _mm512_loadu_ps(p.rule.logits + i);
    const __mmask16 in = _mm512_cmp_ps_mask(l, _mm512_set1_ps(p.lo), _CMP_GE_OQ) & _mm512_cmp_ps_mask(l, _mm512_set1_ps(p.hi), _CMP_LE_OQ);
    if (!in) continue;
    if (in & 0xFF) count = sw_list8(p, i, count);
    if (in >> 8) count = sw_list8(p, i + 8, count);
  }
  return sw_list_scalar(p, i, count);
}

/** The largest of 16 logits, NaN ignored (-inf when all are NaN). */
static KVQ_ALWAYS_INLINE float sw_block_max16(const float* x) {
  const __m512 v = _mm512_loadu_ps(x);
  return _mm512_mask_reduce_max_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v);
}

/**
 * Top-k's floor by a min-heap of the k largest (`heap`: k floats of scratch); 16 logits tested per compare. With at
 * least 4k blocks of 16, a first pass takes the k-th largest of the blocks' maxima: k distinct logits are at or above
 * it, so it bounds the k-th largest from below and the second pass pushes only logits at or above it (a logit row
 * after a forward pass pushed thousands of values into the heap otherwise).
 */
static double sampleKth(const float* x, int64_t n, int32_t k, float* heap) {
  const int64_t blocks = n / 16;
  float bound = -kvq_inff();
  if (blocks >= 4 * (int64_t)k) {
    float floor = sw_kth_init(heap, k);
    for (int64_t b = 0; b < blocks; b++) {
      const float m = sw_block_max16(x + 16 * b);
      if (m > floor) floor = sw_heap_push(heap, k, m);
    }
    bound = floor;
  }
  float floor = sw_kth_init(heap, k);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    // NaN: never; -inf bound: every value above the heap's floor.
    const unsigned m = _mm512_mask_cmp_ps_mask(_mm512_cmp_ps_mask(v, _mm512_set1_ps(bound), _CMP_GE_OQ), v, _mm512_set1_ps(floor), _CMP_GT_OQ);
    floor = sw_kth_mask(x + i, m, heap, k, floor);
  }
  return sw_kth_scalar(x, i, n, k, heap, floor);
}

static double sampleMax(const float* x, int64_t n) {
  __m512 m = _mm512_set1_ps(-kvq_inff());
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) m = _mm512_max_ps(_mm512_loadu_ps(x + i), m);  // a NaN lane keeps m (2nd operand)
  float r = _mm512_reduce_max_ps(m);
  for (; i < n; i++) r = x[i] > r ? x[i] : r;
  return r;
}

#elif defined(__AVX2__)

/** sw_weight_scalar of 4 lanes (float64 operations, rounded to float32 at the end). */
static KVQ_ALWAYS_INLINE __m128 sw_weight4(__m256d q) {
  const __m256d x = _mm256_sub_pd(_mm256_setzero_pd(), q);
  const __m256d R = _mm256_set1_pd(kSwRounder);
  const __m256d n = _mm256_sub_pd(_mm256_add_pd(_mm256_mul_pd(x, _mm256_set1_pd(kSwL2E)), R), R);
  const __m256d r = _mm256_sub_pd(_mm256_sub_pd(x, _mm256_mul_pd(n, _mm256_set1_pd(kSwLn2Hi))), _mm256_mul_pd(n, _mm256_set1_pd(kSwLn2Lo)));
  __m256d p = _mm256_add_pd(_mm256_set1_pd(1.0 / 720), _mm256_mul_pd(r, _mm256_set1_pd(1.0 / 5040)));
  p = _mm256_add_pd(_mm256_set1_pd(1.0 / 120), _mm256_mul_pd(r, p));
  p = _mm256_add_pd(_mm256_set1_pd(1.0 / 24), _mm256_mul_pd(r, p));
  p = _mm256_add_pd(_mm256_set1_pd(1.0 / 6), _mm256_mul_pd(r, p));
  p = _mm256_add_pd(_mm256_set1_pd(0.5), _mm256_mul_pd(r, p));
  p = _mm256_add_pd(_mm256_set1_pd(1.0), _mm256_mul_pd(r, p));
  p = _mm256_add_pd(_mm256_set1_pd(1.0), _mm256_mul_pd(r, p));
  const __m256i e = _mm256_slli_epi64(_mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(n)), _mm256_set1_epi64x(1023)), 52);
  return _mm256_cvtpd_ps(_mm256_mul_pd(p, _mm256_castsi256_pd(e)));
}

/** The lanes of 4 logits at l that pass the floor and lie under kSampleMaxNats (bit mask), and their q. */
static KVQ_ALWAYS_INLINE unsigned sw_in_range4(const SampleRule& r, const float* l, __m256d* q) {
  const __m256d x = _mm256_cvtps_pd(_mm_loadu_ps(l));
  const __m256d m = _mm256_cmp_pd(x, _mm256_set1_pd(r.floor), _CMP_GE_OQ);
  if (!_mm256_movemask_pd(m)) return 0;
  *q = _mm256_mul_pd(_mm256_sub_pd(_mm256_set1_pd(r.max), x), _mm256_set1_pd(r.invT));
  return (unsigned)_mm256_movemask_pd(_mm256_and_pd(_mm256_and_pd(m, _mm256_cmp_pd(*q, _mm256_setzero_pd(), _CMP_GE_OQ)), _mm256_cmp_pd(*q, _mm256_set1_pd((double)kSampleMaxNats), _CMP_LT_OQ)));
}

/** Lanes of m whose float32 weight passes the min weight. */
static KVQ_ALWAYS_INLINE unsigned sw_min_weight4(unsigned m, __m128 w, float minWeight) {
  return m & (unsigned)_mm_movemask_ps(_mm_cmp_ps(w, _mm_set1_ps(minWeight), _CMP_GE_OQ));
}

static int64_t sampleWeigh(const SampleWeighParams& p) {
  alignas(16) float wl[4];
  alignas(16) int32_t kl[4];
  int64_t count = 0;
  int64_t i = p.begin;
  for (; i + 4 <= p.n; i += 4) {
    __m256d q;
    unsigned m = sw_in_range4(p.rule, p.rule.logits + i, &q);
    if (!m) continue;
    const __m128 w = sw_weight4(q);
    m = sw_min_weight4(m, w, p.rule.minWeight);
    _mm_store_ps(wl, w);
    _mm_store_si128((__m128i*)kl, _mm256_cvttpd_epi32(_mm256_mul_pd(q, _mm256_set1_pd(16.0))));
    while (m) {
      const int j = __builtin_ctz(m);
      m &= m - 1;
      p.mass[kl[j]] += (double)wl[j];
      if (p.out.ids) {
        p.out.ids[count] = (int32_t)(i + j);
        p.out.bucket[count] = kl[j];
        p.out.weight[count] = wl[j];
      }
      count++;
    }
  }
  return count + sw_weigh_scalar(p, i, count);
}

/** The recorded candidates of `bucket` (-1: all), 8 a compare (see KernelTable::samplePick). */
static int64_t samplePick(const SampleCandidates& c, int64_t count, int32_t bucket, int32_t* ids, float* weight) {
  if (bucket < 0) return sw_pick_scalar(c, 0, count, bucket, ids, weight, 0);
  int64_t m = 0, j = 0;
  for (; j + 8 <= count; j += 8) {
    unsigned hit = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_loadu_si256((const __m256i*)(c.bucket + j)), _mm256_set1_epi32(bucket))));
    while (hit) {
      const int b = __builtin_ctz(hit);
      hit &= hit - 1;
      ids[m] = c.ids[j + b];
      weight[m++] = c.weight[j + b];
    }
  }
  return sw_pick_scalar(c, j, count, bucket, ids, weight, m);
}

static int64_t sampleList(const SampleListParams& p) {
  alignas(16) float wl[4];
  int64_t count = 0;
  int64_t i = 0;
  for (; i + 4 <= p.n; i += 4) {
    // The float32 bounds first, then the bucket test: the weights only where a lane is in the bucket.
    const __m128 l = _mm_loadu_ps(p.rule.logits + i);
    if (!_mm_movemask_ps(_mm_and_ps(_mm_cmp_ps(l, _mm_set1_ps(p.lo), _CMP_GE_OQ), _mm_cmp_ps(l, _mm_set1_ps(p.hi), _CMP_LE_OQ)))) continue;
    __m256d q;
    unsigned m = sw_in_range4(p.rule, p.rule.logits + i, &q);
    if (m && p.bucket >= 0) m &= (unsigned)_mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(_mm256_cvttpd_epi32(_mm256_mul_pd(q, _mm256_set1_pd(16.0))), _mm_set1_epi32(p.bucket))));
    if (!m) continue;
    const __m128 w = sw_weight4(q);
    m = sw_min_weight4(m, w, p.rule.minWeight);
    _mm_store_ps(wl, w);
    while (m) {
      const int j = __builtin_ctz(m);
      m &= m - 1;
      p.weight[i + j] = (double)wl[j];
      p.ids[count++] = (int32_t)(i + j);
    }
  }
  return sw_list_scalar(p, i, count);
}

/** Top-k's floor by a min-heap of the k largest (`heap`: k floats of scratch); 8 logits tested per compare. */
static double sampleKth(const float* x, int64_t n, int32_t k, float* heap) {
  float floor = sw_kth_init(heap, k);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const unsigned m = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(floor), _CMP_GT_OQ));  // NaN: never
    floor = sw_kth_mask(x + i, m, heap, k, floor);
  }
  return sw_kth_scalar(x, i, n, k, heap, floor);
}

static double sampleMax(const float* x, int64_t n) {
  __m256 m = _mm256_set1_ps(-kvq_inff());
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(_mm256_loadu_ps(x + i), m);  // a NaN lane keeps m (2nd operand)
  float lanes[8];
  _mm256_storeu_ps(lanes, m);
  float r = lanes[0];
  for (int j = 1; j < 8; j++) r = lanes[j] > r ? lanes[j] : r;
  for (; i < n; i++) r = x[i] > r ? x[i] : r;
  return r;
}

#else

static int64_t sampleWeigh(const SampleWeighParams& p) { return sw_weigh_scalar(p, p.begin, 0); }

static int64_t samplePick(const SampleCandidates& c, int64_t count, int32_t bucket, int32_t* ids, float* weight) {
  return sw_pick_scalar(c, 0, count, bucket, ids, weight, 0);
}

static int64_t sampleList(const SampleListParams& p) { return sw_list_scalar(p, 0, 0); }

static double sampleKth(const float* x, int64_t n, int32_t k, float* heap) { return sw_kth_scalar(x, 0, n, k, heap, sw_kth_init(heap, k)); }

static double sampleMax(const float* x, int64_t n) {
  float r = -kvq_inff();
  for (int64_t i = 0; i < n; i++) r = x[i] > r ? x[i] : r;
  return r;
}

#endif

#endif  // KVQ_SAMPLE_WEIGH_H_
