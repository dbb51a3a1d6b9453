// SPDX-License-Identifier: Apache-2.0
//
// The two vectorizable steps of sampling's vocabulary pass (sample_buckets.h): the largest logit, and every
// candidate's weight e^((l - max) / T) and bucket. Compiled once per ISA inside kernels_impl.h (namespace KVQ_NS):
// AVX-512 and AVX2 run 8 / 4 float64 lanes, the others the scalar loop. Every lane performs the very float64
// operations of the scalar expNonPositive (@kvq/kernels sample-buckets.ts), unfused and in the same order, so all
// paths give the same bits as the TypeScript reference. No STL here (see kernels.h).
#ifndef KVQ_SAMPLE_WEIGH_H_
#define KVQ_SAMPLE_WEIGH_H_

// Included inside namespace kvq::KVQ_NS by kernels_impl.h, after its simd_<isa>.h (which brings the intrinsics).

/** ln 2 / 64 split for an exact product with |n| < 2^21 (fdlibm's ln2_hi has 32 significant bits) plus the rest. */
static const double kSwLn2Hi = 6.93147180369123816490e-1 / 64.0;
static const double kSwLn2Lo = 1.90821492927058770002e-10 / 64.0;
static const double kSwC64 = 64.0 / 0.6931471805599453;

/** expNonPositive (sample-buckets.ts) of one value: e^x for x <= 0; `ints[m + 1099]` = 2^m, `frac[j]` = 2^(j/64). */
static inline double sw_exp_scalar(double x, const double* frac, const double* ints) {
  if (!(x > -745.2)) return x == x ? 0.0 : x;
  const int32_t n = (int32_t)(x * kSwC64 - 0.5);
  const double r = x - n * kSwLn2Hi - n * kSwLn2Lo;
  const double p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0)))));
  return ints[(n >> 6) + 1099] * (frac[n & 63] * p);
}

/** Scalar weigh of ids [i0, n) (candidates from cids[live] on): the loop every ISA finishes its tail with. Returns the new candidate count. */
static inline int64_t sw_weigh_scalar(const SampleWeighParams& p, int64_t i0, int64_t live) {
  const double invT = 1.0 / p.temperature;
  const double scale = p.bucketsPerNat / p.temperature;
  for (int64_t i = i0; i < p.n; i++) {
    const double l = p.logits[i];
    if (!(l >= p.floor)) continue;
    const double w = sw_exp_scalar((l - p.max) * invT, p.frac, p.ints);
    p.weight[i] = w;
    if (w > 0) {
      const double d = (p.max - l) * scale;
      p.cids[live] = (int32_t)i;
      p.cbucket[live++] = d < p.lastBucket ? (int32_t)d : p.lastBucket;
    }
  }
  return live;
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

/** Set bits of an 8-bit mask. */
static KVQ_ALWAYS_INLINE int sw_popcount8(unsigned m) {
  m = m - ((m >> 1) & 0x55u);
  m = (m & 0x33u) + ((m >> 2) & 0x33u);
  return (int)((m + (m >> 4)) & 0x0Fu);
}

/** 8 weights (lanes of `x`, NaN-free where `ok`): the scalar operations lane by lane. */
static KVQ_ALWAYS_INLINE __m512d sw_exp8(__m512d x, const __m512d* F, const double* ints) {
  const __mmask8 ok = _mm512_cmp_pd_mask(x, _mm512_set1_pd(-745.2), _CMP_GT_OQ);
  const __m256i n = _mm256_maskz_mov_epi32(ok, _mm512_cvttpd_epi32(_mm512_sub_pd(_mm512_mul_pd(x, _mm512_set1_pd(kSwC64)), _mm512_set1_pd(0.5))));
  const __m512d nd = _mm512_cvtepi32_pd(n);
  const __m512d r = _mm512_sub_pd(_mm512_sub_pd(x, _mm512_mul_pd(nd, _mm512_set1_pd(kSwLn2Hi))), _mm512_mul_pd(nd, _mm512_set1_pd(kSwLn2Lo)));
  __m512d q = _mm512_add_pd(_mm512_set1_pd(1.0 / 24.0), _mm512_mul_pd(r, _mm512_set1_pd(1.0 / 120.0)));
  q = _mm512_add_pd(_mm512_set1_pd(1.0 / 6.0), _mm512_mul_pd(r, q));
  q = _mm512_add_pd(_mm512_set1_pd(0.5), _mm512_mul_pd(r, q));
  q = _mm512_add_pd(_mm512_set1_pd(1.0), _mm512_mul_pd(r, q));
  q = _mm512_add_pd(_mm512_set1_pd(1.0), _mm512_mul_pd(r, q));
  // 2^((n & 63) / 64) from the 64-entry table in 8 registers: bits 0-3 pick within a pair, bits 4-5 the pair.
  const __m512i j = _mm512_cvtepi32_epi64(_mm256_and_si256(n, _mm256_set1_epi32(63)));
  const __m512d f01 = _mm512_permutex2var_pd(F[0], j, F[1]);
  const __m512d f23 = _mm512_permutex2var_pd(F[2], j, F[3]);
  const __m512d f45 = _mm512_permutex2var_pd(F[4], j, F[5]);
  const __m512d f67 = _mm512_permutex2var_pd(F[6], j, F[7]);
  const __mmask8 b4 = _mm512_test_epi64_mask(j, _mm512_set1_epi64(16));
  const __mmask8 b5 = _mm512_test_epi64_mask(j, _mm512_set1_epi64(32));
  const __m512d f = _mm512_mask_mov_pd(_mm512_mask_mov_pd(f01, b4, f23), b5, _mm512_mask_mov_pd(f45, b4, f67));
  // 2^(n >> 6): built from its exponent bits while normal; the table (subnormals, 0) below 2^-1022.
  const __m256i m = _mm256_srai_epi32(n, 6);
  __m512d e;
  if (_mm256_movemask_epi8(_mm256_cmpgt_epi32(_mm256_set1_epi32(-1022), m)) != 0) {
    e = _mm512_i32gather_pd(_mm256_add_epi32(m, _mm256_set1_epi32(1099)), ints, 8);
  } else {
    e = _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_cvtepi32_epi64(_mm256_add_epi32(m, _mm256_set1_epi32(1023))), 52));
  }
  const __m512d w = _mm512_mul_pd(e, _mm512_mul_pd(f, q));
  // !(x > -745.2): 0, or x itself when NaN.
  const __mmask8 nan = _mm512_cmp_pd_mask(x, x, _CMP_UNORD_Q);
  return _mm512_mask_mov_pd(_mm512_mask_mov_pd(w, (__mmask8)~ok, _mm512_setzero_pd()), nan, x);
}

static int64_t sampleWeigh(const SampleWeighParams& p) {
  const __m512d floor = _mm512_set1_pd(p.floor), max = _mm512_set1_pd(p.max), invT = _mm512_set1_pd(1.0 / p.temperature);
  const __m512d scale = _mm512_set1_pd(p.bucketsPerNat / p.temperature), last = _mm512_set1_pd((double)p.lastBucket);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m512d F[8];
  for (int k = 0; k < 8; k++) F[k] = _mm512_loadu_pd(p.frac + 8 * k);
  int64_t live = 0;
  int64_t i = p.begin;
  for (; i + 8 <= p.n; i += 8) {
    const __m512d l = _mm512_cvtps_pd(_mm256_loadu_ps(p.logits + i));
    const __mmask8 cand = _mm512_cmp_pd_mask(l, floor, _CMP_GE_OQ);
    if (!cand) continue;
    const __m512d w = sw_exp8(_mm512_mul_pd(_mm512_sub_pd(l, max), invT), F, p.ints);
    _mm512_mask_storeu_pd(p.weight + i, cand, w);
    const __mmask8 pos = _mm512_mask_cmp_pd_mask(cand, w, _mm512_setzero_pd(), _CMP_GT_OQ);
    if (!pos) continue;
    // d < last ? (int)d : last, d = (max - l) * scale >= 0 and not NaN at a positive weight.
    const __m256i k = _mm512_cvttpd_epi32(_mm512_min_pd(_mm512_mul_pd(_mm512_sub_pd(max, l), scale), last));
    _mm256_mask_compressstoreu_epi32(p.cids + live, pos, _mm256_add_epi32(lane, _mm256_set1_epi32((int32_t)i)));
    _mm256_mask_compressstoreu_epi32(p.cbucket + live, pos, k);
    live += sw_popcount8(pos);
  }
  return sw_weigh_scalar(p, i, live);
}

/** Top-k's floor by a min-heap of the k largest (`heap`: k floats of scratch); 16 logits tested per compare. */
static double sampleKth(const float* x, int64_t n, int32_t k, float* heap) {
  float floor = sw_kth_init(heap, k);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const unsigned m = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i), _mm512_set1_ps(floor), _CMP_GT_OQ);  // NaN: never
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

static KVQ_ALWAYS_INLINE __m256d sw_exp4(__m256d x, const double* frac, const double* ints) {
  const __m256d ok = _mm256_cmp_pd(x, _mm256_set1_pd(-745.2), _CMP_GT_OQ);
  const __m128i n = _mm_and_si128(_mm256_cvttpd_epi32(_mm256_sub_pd(_mm256_mul_pd(x, _mm256_set1_pd(kSwC64)), _mm256_set1_pd(0.5))),
                                  _mm256_cvtpd_epi32(_mm256_and_pd(ok, _mm256_set1_pd(-1.0))));  // 0 where !ok
  const __m256d nd = _mm256_cvtepi32_pd(n);
  const __m256d r = _mm256_sub_pd(_mm256_sub_pd(x, _mm256_mul_pd(nd, _mm256_set1_pd(kSwLn2Hi))), _mm256_mul_pd(nd, _mm256_set1_pd(kSwLn2Lo)));
  __m256d q = _mm256_add_pd(_mm256_set1_pd(1.0 / 24.0), _mm256_mul_pd(r, _mm256_set1_pd(1.0 / 120.0)));
  q = _mm256_add_pd(_mm256_set1_pd(1.0 / 6.0), _mm256_mul_pd(r, q));
  q = _mm256_add_pd(_mm256_set1_pd(0.5), _mm256_mul_pd(r, q));
  q = _mm256_add_pd(_mm256_set1_pd(1.0), _mm256_mul_pd(r, q));
  q = _mm256_add_pd(_mm256_set1_pd(1.0), _mm256_mul_pd(r, q));
  const __m256d all = _mm256_castsi256_pd(_mm256_set1_epi64x(-1));  // (the masked gather: GCC warns on the plain one)
  const __m256d f = _mm256_mask_i32gather_pd(_mm256_setzero_pd(), frac, _mm_and_si128(n, _mm_set1_epi32(63)), all, 8);
  const __m128i m = _mm_srai_epi32(n, 6);
  __m256d e;
  if (_mm_movemask_epi8(_mm_cmpgt_epi32(_mm_set1_epi32(-1022), m)) != 0) {
    e = _mm256_mask_i32gather_pd(_mm256_setzero_pd(), ints, _mm_add_epi32(m, _mm_set1_epi32(1099)), all, 8);
  } else {
    e = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_cvtepi32_epi64(_mm_add_epi32(m, _mm_set1_epi32(1023))), 52));
  }
  const __m256d w = _mm256_and_pd(ok, _mm256_mul_pd(e, _mm256_mul_pd(f, q)));
  return _mm256_blendv_pd(w, x, _mm256_cmp_pd(x, x, _CMP_UNORD_Q));
}

static int64_t sampleWeigh(const SampleWeighParams& p) {
  const __m256d floor = _mm256_set1_pd(p.floor), max = _mm256_set1_pd(p.max), invT = _mm256_set1_pd(1.0 / p.temperature);
  const __m256d scale = _mm256_set1_pd(p.bucketsPerNat / p.temperature), last = _mm256_set1_pd((double)p.lastBucket);
  int64_t live = 0;
  int64_t i = p.begin;
  for (; i + 4 <= p.n; i += 4) {
    const __m256d l = _mm256_cvtps_pd(_mm_loadu_ps(p.logits + i));
    const __m256d candv = _mm256_cmp_pd(l, floor, _CMP_GE_OQ);
    const int cand = _mm256_movemask_pd(candv);
    if (!cand) continue;
    const __m256d w = sw_exp4(_mm256_mul_pd(_mm256_sub_pd(l, max), invT), p.frac, p.ints);
    _mm256_maskstore_pd(p.weight + i, _mm256_castpd_si256(candv), w);
    const int pos = _mm256_movemask_pd(_mm256_and_pd(candv, _mm256_cmp_pd(w, _mm256_setzero_pd(), _CMP_GT_OQ)));
    if (!pos) continue;
    int32_t k[4];
    _mm_storeu_si128((__m128i*)k, _mm256_cvttpd_epi32(_mm256_min_pd(_mm256_mul_pd(_mm256_sub_pd(max, l), scale), last)));
    for (int b = 0; b < 4; b++) {
      if (!((pos >> b) & 1)) continue;
      p.cids[live] = (int32_t)(i + b);
      p.cbucket[live++] = k[b];
    }
  }
  return sw_weigh_scalar(p, i, live);
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

static double sampleKth(const float* x, int64_t n, int32_t k, float* heap) { return sw_kth_scalar(x, 0, n, k, heap, sw_kth_init(heap, k)); }

static double sampleMax(const float* x, int64_t n) {
  float r = -kvq_inff();
  for (int64_t i = 0; i < n; i++) r = x[i] > r ? x[i] : r;
  return r;
}

#endif

#endif  // KVQ_SAMPLE_WEIGH_H_
