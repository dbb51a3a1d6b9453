// SPDX-License-Identifier: Apache-2.0
//
// compressed-tensors W8A8 on the CPU: `linear` on int8 weights with `activations: 'q8'` (LinearParams::xq). Each
// activation row is quantized to int8 with one scale (act_q8.h act_i8_quantize_row: vLLM's scaled_int8_quant,
// dynamic per row or static), then:
// - decode (rows <= 4): integer dot products of the codes with the stored int8 weight rows, y = dot * (sx * sw[n]):
//   AVX-512 VNNI `vpdpbusd` on u8 = code + 128 (the offset taken back with the row's weight sum, a second `vpdpbusd`
//   against ones: both exact in int32 for K < 2^18), AVX2 `vpmaddwd` on int16-widened codes and weights (exact for
//   every code, -128 included); other ISAs an int32 loop;
// - prefill (rows > 4): the float GEMM on the round trip x' = code * scale (the same function).
// Part of kernels_impl.h (inside namespace kvq::KVQ_NS, after wquant_impl.h).
#ifndef KVQ_WQUANT_I8ACT_H_
#define KVQ_WQUANT_I8ACT_H_

/**
 * act_i8_quantize_row with AVX-512 / AVX2 vectors where built (bit-identical: the same float operations, RNE by
 * the conversion's default rounding, clamping before it), the scalar code elsewhere. Returns the row's scale.
 */
KVQ_I float i8x_quantize_row(const float* x, int64_t K, float staticScale, int8_t* q) {
#if defined(__AVX512F__)
  __m512 am = _mm512_setzero_ps();
  __mmask16 bad = 0;
  const __m512 big = _mm512_set1_ps(3.402823466e38f);
  const __m512 absMask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  int64_t j = 0;
  for (; j + 16 <= K; j += 16) {
    const __m512 a = _mm512_and_ps(_mm512_loadu_ps(x + j), absMask);
    bad |= _mm512_cmp_ps_mask(a, big, _CMP_NLE_UQ);  // !(a <= FLT_MAX): NaN or infinity
    am = _mm512_max_ps(am, a);
  }
  float amax = _mm512_reduce_max_ps(am);
  bool finite = bad == 0;
  for (; j < K; j++) {
    const float a = fabsf(x[j]);
    if (!(a <= 3.402823466e38f)) finite = false;
    amax = a > amax ? a : amax;
  }
  if (!finite) {
    for (int64_t e = 0; e < K; e++) q[e] = 0;
    return NAN;
  }
  const bool isStatic = staticScale > 0.0f;
  const float inv = amax == 0.0f ? 0.0f : 127.0f / amax;
  const __m512 vs = _mm512_set1_ps(isStatic ? staticScale : inv), lo = _mm512_set1_ps(-128.0f), hi = _mm512_set1_ps(127.0f);
  j = 0;
  for (; j + 16 <= K; j += 16) {
    const __m512 v = _mm512_loadu_ps(x + j);
    const __m512 t = isStatic ? _mm512_div_ps(v, vs) : _mm512_mul_ps(v, vs);
    const __m512i c = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(t, lo), hi));  // RNE (MXCSR default)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + j), _mm512_cvtepi32_epi8(c));
  }
  for (; j < K; j++) q[j] = act_i8_code(isStatic ? x[j] / staticScale : x[j] * inv);
  return isStatic ? staticScale : amax / 127.0f;
#elif defined(__AVX2__)
  __m256 am = _mm256_setzero_ps();
  int bad = 0;
  const __m256 big = _mm256_set1_ps(3.402823466e38f);
  const __m256 absMask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  int64_t j = 0;
  for (; j + 8 <= K; j += 8) {
    const __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + j), absMask);
    bad |= _mm256_movemask_ps(_mm256_cmp_ps(a, big, _CMP_NLE_UQ));
    am = _mm256_max_ps(am, a);
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, am);
  float amax = 0.0f;
  for (int l = 0; l < 8; l++) amax = lanes[l] > amax ? lanes[l] : amax;
  bool finite = bad == 0;
  for (; j < K; j++) {
    const float a = fabsf(x[j]);
    if (!(a <= 3.402823466e38f)) finite = false;
    amax = a > amax ? a : amax;
  }
  if (!finite) {
    for (int64_t e = 0; e < K; e++) q[e] = 0;
    return NAN;
  }
  const bool isStatic = staticScale > 0.0f;
  const float inv = amax == 0.0f ? 0.0f : 127.0f / amax;
  const __m256 vs = _mm256_set1_ps(isStatic ? staticScale : inv), lo = _mm256_set1_ps(-128.0f), hi = _mm256_set1_ps(127.0f);
  j = 0;
  for (; j + 8 <= K; j += 8) {
    const __m256 v = _mm256_loadu_ps(x + j);
    const __m256 t = isStatic ? _mm256_div_ps(v, vs) : _mm256_mul_ps(v, vs);
    const __m256i c = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(t, lo), hi));  // RNE (MXCSR default)
    const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + j), _mm_packs_epi16(w16, w16));
  }
  for (; j < K; j++) q[j] = act_i8_code(isStatic ? x[j] / staticScale : x[j] * inv);
  return isStatic ? staticScale : amax / 127.0f;
#else
  return act_i8_quantize_row(x, K, staticScale, q);
#endif
}

/** The quantized activation rows of one decode call: codes in the layout the ISA's dot reads, and row scales. */
struct I8X {
  const void* q;    // AVX-512: u8 code + 128, rows padded to KP; AVX2: int16 codes, KP; else int8 codes, K
  const float* s;   // [rows] row scales
  int64_t KP;       // row stride of q, in elements
};

/** Weight row n's scale (per tensor or per output row). */
KVQ_I float i8w_scale(const WeightRef& w, int64_t n) { return w.scale_len == 1 ? w.scale[0] : w.scale[n]; }

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
/**
 * y rows [n0, n1) of R activation rows: vpdpbusd on 64 weights a step (masked tail), the offset removed per row.
 * One weight row at a time: two rows side by side (30-32 GB/s) and four accumulators per row (37-38) both measured
 * slower than this loop (37-50) on the 2-core Zen 5.
 */
template <int R>
static void gemv_i8act(const LinearParams& p, const I8X& xa, int64_t n0, int64_t n1) {
  const int64_t K = p.in, N = p.out;
  const int8_t* base = static_cast<const int8_t*>(p.w.data);
  const uint8_t* xu = static_cast<const uint8_t*>(xa.q);
  const __m512i ones = _mm512_set1_epi8(1);
  const int64_t K64 = K & ~(int64_t)63;
  const __mmask64 tail = K64 < K ? (~(__mmask64)0 >> (64 - (K - K64))) : 0;
  for (int64_t n = n0; n < n1; n++) {
    const int8_t* wr = base + n * K;
    __m512i acc[R], ws = _mm512_setzero_si512();
    for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_si512();
    for (int64_t e = 0; e < K64; e += 64) {
      vprefetch(wr + e + kDensePrefetch);
      const __m512i w = _mm512_loadu_si512(wr + e);
      ws = _mm512_dpbusd_epi32(ws, ones, w);
      for (int r = 0; r < R; r++) acc[r] = _mm512_dpbusd_epi32(acc[r], _mm512_loadu_si512(xu + r * xa.KP + e), w);
    }
    if (tail) {
      const __m512i w = _mm512_maskz_loadu_epi8(tail, wr + K64);
      ws = _mm512_dpbusd_epi32(ws, ones, w);
      for (int r = 0; r < R; r++) acc[r] = _mm512_dpbusd_epi32(acc[r], _mm512_maskz_loadu_epi8(tail, xu + r * xa.KP + K64), w);
    }
    const int32_t wsum = _mm512_reduce_add_epi32(ws);
    const float sw = i8w_scale(p.w, n);
    for (int r = 0; r < R; r++) {
      const int32_t dot = _mm512_reduce_add_epi32(acc[r]) - 128 * wsum;
      p.y[r * N + n] = (float)dot * (xa.s[r] * sw) + (p.bias ? p.bias[n] : 0.0f);
    }
  }
}
#elif defined(__AVX2__)
/** y rows [n0, n1) of R activation rows: vpmaddwd on 16 int16-widened weights a step (scalar tail). */
template <int R>
static void gemv_i8act(const LinearParams& p, const I8X& xa, int64_t n0, int64_t n1) {
  const int64_t K = p.in, N = p.out;
  const int8_t* base = static_cast<const int8_t*>(p.w.data);
  const int16_t* x16 = static_cast<const int16_t*>(xa.q);
  const int64_t K16 = K & ~(int64_t)15;
  for (int64_t n = n0; n < n1; n++) {
    const int8_t* wr = base + n * K;
    __m256i acc[R];
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_si256();
    for (int64_t e = 0; e < K16; e += 16) {
      vprefetch(wr + e + kDensePrefetch);
      const __m256i w = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wr + e)));
      for (int r = 0; r < R; r++) {
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x16 + r * xa.KP + e));
        acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(xv, w));
      }
    }
    const float sw = i8w_scale(p.w, n);
    for (int r = 0; r < R; r++) {
      const __m128i h = _mm_add_epi32(_mm256_castsi256_si128(acc[r]), _mm256_extracti128_si256(acc[r], 1));
      const __m128i h2 = _mm_add_epi32(h, _mm_unpackhi_epi64(h, h));
      int32_t dot = _mm_cvtsi128_si32(_mm_add_epi32(h2, _mm_shuffle_epi32(h2, 1)));
      for (int64_t e = K16; e < K; e++) dot += (int32_t)x16[r * xa.KP + e] * (int32_t)wr[e];
      p.y[r * N + n] = (float)dot * (xa.s[r] * sw) + (p.bias ? p.bias[n] : 0.0f);
    }
  }
}
#else
/** y rows [n0, n1) of R activation rows: an int32 loop (compilers vectorize it, e.g. NEON smlal). */
template <int R>
static void gemv_i8act(const LinearParams& p, const I8X& xa, int64_t n0, int64_t n1) {
  const int64_t K = p.in, N = p.out;
  const int8_t* base = static_cast<const int8_t*>(p.w.data);
  const int8_t* xq = static_cast<const int8_t*>(xa.q);
  for (int64_t n = n0; n < n1; n++) {
    const int8_t* wr = base + n * K;
    const float sw = i8w_scale(p.w, n);
    for (int r = 0; r < R; r++) {
      const int8_t* xr = xq + r * xa.KP;
      int32_t dot = 0;
      for (int64_t e = 0; e < K; e++) dot += (int32_t)xr[e] * (int32_t)wr[e];
      p.y[r * N + n] = (float)dot * (xa.s[r] * sw) + (p.bias ? p.bias[n] : 0.0f);
    }
  }
}
#endif

/** Bytes of one activation row in the ISA's layout (see I8X::q), padded to 64. */
KVQ_I int64_t i8x_row_bytes(int64_t K) {
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
  return (K + 63) & ~(int64_t)63;
#elif defined(__AVX2__)
  return ((K + 31) & ~(int64_t)31) * 2;
#else
  return (K + 63) & ~(int64_t)63;
#endif
}

/** The decode GEMV (rows <= 4): quantize the rows once into the ISA's layout, then output rows over the threads. */
static int qgemv_i8act(const LinearParams& p, const Runner& rn) {
  const int64_t K = p.in, rows = p.rows, rb = i8x_row_bytes(K);
  uint8_t* m = static_cast<uint8_t*>(malloc((size_t)(rows * rb + rows * (int64_t)sizeof(float) + K)));
  if (!m) return kOutOfMemory;
  float* s = reinterpret_cast<float*>(m + rows * rb);
  int8_t* q = reinterpret_cast<int8_t*>(m + rows * rb + rows * (int64_t)sizeof(float));
  for (int64_t r = 0; r < rows; r++) {
    s[r] = i8x_quantize_row(p.x + r * K, K, p.xScale, q);
    uint8_t* dst = m + r * rb;
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
    for (int64_t e = 0; e < K; e++) dst[e] = (uint8_t)(q[e] + 128);
#elif defined(__AVX2__)
    int16_t* d16 = reinterpret_cast<int16_t*>(dst);
    for (int64_t e = 0; e < K; e++) d16[e] = q[e];
#else
    for (int64_t e = 0; e < K; e++) dst[e] = (uint8_t)q[e];
#endif
  }
#if defined(__AVX2__) && !(defined(__AVX512VNNI__) && defined(__AVX512BW__))
  const I8X xa{m, s, rb / 2};  // int16 elements
#else
  const I8X xa{m, s, rb};
#endif
  auto body = [&](int64_t n0, int64_t n1) { with_rows((int)rows, [&](auto r) { gemv_i8act<decltype(r)::value>(p, xa, n0, n1); }); };
  gemv_split(p, rn, body);
  free(m);
  return kOk;
}

/** Prefill (rows > 4): the float kernels on the round trip x' (rows over the threads, 16 per task). */
static int linear_i8act_round_trip(const LinearParams& p, const Runner& rn) {
  const int64_t K = p.in;
  float* xr = static_cast<float*>(malloc((size_t)(p.rows * K) * sizeof(float)));
  if (!xr) return kOutOfMemory;
  const int64_t chunk = 16, tasks = ceil_div(p.rows, chunk);
  bool oom = false;
  auto quant = [&](int64_t t, int) {
    int8_t* q = static_cast<int8_t*>(malloc((size_t)K));
    if (!q) {
      oom = true;
      return;
    }
    for (int64_t r = t * chunk; r < imin(p.rows, t * chunk + chunk); r++) {
      const float s = i8x_quantize_row(p.x + r * K, K, p.xScale, q);
      for (int64_t e = 0; e < K; e++) xr[r * K + e] = (float)q[e] * s;
    }
    free(q);
  };
  if (tasks > 1) {
    rn.parallel_for(tasks, quant);
  } else {
    quant(0, 0);
  }
  int rc = kOutOfMemory;
  if (!oom) {
    LinearParams rt = p;
    rt.x = xr;
    rt.xq = 0;
    rt.xScale = 0.0f;
    rc = linear_quant(rt, rn);
  }
  free(xr);
  return rc;
}

/** linear on an int8 weight with int8 activations (W8A8): the integer GEMV for up to 4 rows, else the round trip. */
static int linear_i8act(const LinearParams& p, const Runner& rn) {
  return p.rows <= 4 ? qgemv_i8act(p, rn) : linear_i8act_round_trip(p, rn);
}

#endif  // KVQ_WQUANT_I8ACT_H_
