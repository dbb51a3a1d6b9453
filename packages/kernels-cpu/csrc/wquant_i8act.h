// SPDX-License-Identifier: Apache-2.0
//
// compressed-tensors W8A8 on the CPU: `linear` on int8 weights with `activations: 'q8'` (LinearParams::xq). Each
// activation row is quantized to int8 with one scale (act_q8.h act_i8_quantize_row: vLLM's scaled_int8_quant,
// dynamic per row or static), then:
// - decode (rows <= 4): integer dot products of the codes with the stored int8 weight rows, y = dot * (sx * sw[n]):
//   `vpmaddwd` on int16-widened codes and weights (512-bit on AVX-512, 256-bit on AVX2; exact for every code, -128
//   included); other ISAs an int32 loop;
// - prefill (rows > 4): the same in tasks of 64 activation rows x 32 weight rows (weights read from cache by each
//   group of 4 activation rows), on VNNI builds with `vpdpbusd` on u8 = code + 128 (the offset taken back with the
//   row's weight sum, a second `vpdpbusd` against ones: both exact in int32 for K < 2^18).
// Part of kernels_impl.h (inside namespace kvq::KVQ_NS, after wquant_impl.h).
#ifndef KVQ_WQUANT_I8ACT_H_
#define KVQ_WQUANT_I8ACT_H_

/**
 * max |x[j]| over j in [0, K) with AVX-512 / AVX2 / NEON vectors where built (act_i8_amax for the tail and elsewhere:
 * the same value); clears *finite on a NaN or an infinity.
 */
KVQ_I float i8x_amax(const float* x, int64_t K, bool* finite) {
  int64_t j = 0;
  float amax = 0.0f;
#if defined(__AVX512F__)
  __m512 am = _mm512_setzero_ps();
  __mmask16 bad = 0;
  const __m512 big = _mm512_set1_ps(3.402823466e38f);
  const __m512 absMask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  for (; j + 16 <= K; j += 16) {
    const __m512 a = _mm512_and_ps(_mm512_loadu_ps(x + j), absMask);
    bad |= _mm512_cmp_ps_mask(a, big, _CMP_NLE_UQ);  // !(a <= FLT_MAX): NaN or infinity
    am = _mm512_max_ps(am, a);
  }
  amax = _mm512_reduce_max_ps(am);
  if (bad) *finite = false;
#elif defined(__AVX2__)
  __m256 am = _mm256_setzero_ps();
  int bad = 0;
  const __m256 big = _mm256_set1_ps(3.402823466e38f);
  const __m256 absMask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (; j + 8 <= K; j += 8) {
    const __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + j), absMask);
    bad |= _mm256_movemask_ps(_mm256_cmp_ps(a, big, _CMP_NLE_UQ));
    am = _mm256_max_ps(am, a);
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, am);
  for (int l = 0; l < 8; l++) amax = lanes[l] > amax ? lanes[l] : amax;
  if (bad) *finite = false;
#elif defined(KVQ_SIMD_NEON_H_)
  float32x4_t am = vdupq_n_f32(0.0f);
  uint32x4_t ok = vdupq_n_u32(0xFFFFFFFFu);
  const float32x4_t big = vdupq_n_f32(3.402823466e38f);
  for (; j + 4 <= K; j += 4) {
    const float32x4_t a = vabsq_f32(vld1q_f32(x + j));
    ok = vandq_u32(ok, vcleq_f32(a, big));  // a <= FLT_MAX: neither NaN nor infinity
    am = vmaxq_f32(am, a);                  // FMAX (a NaN propagates, but then *finite is cleared)
  }
  amax = vmaxvq_f32(am);
  if (vminvq_u32(ok) == 0) *finite = false;
#endif
  return act_i8_amax(x, j, K, amax, finite);
}

/**
 * act_i8_quantize_row with AVX-512 / AVX2 vectors where built (bit-identical: the same float operations, RNE by
 * the conversion's default rounding, clamping before it), the scalar code elsewhere. Returns the row's scale.
 */
KVQ_I float i8x_quantize_row(const float* x, int64_t K, float staticScale, int8_t* q) {
#if defined(__AVX512F__) || defined(__AVX2__)
  bool finite = true;
  const float amax = i8x_amax(x, K, &finite);
  if (!finite) {
    for (int64_t e = 0; e < K; e++) q[e] = 0;
    return NAN;
  }
  const bool isStatic = staticScale > 0.0f;
  const float inv = act_i8_inv(amax);
  int64_t j = 0;
#if defined(__AVX512F__)
  const __m512 vs = _mm512_set1_ps(isStatic ? staticScale : inv), lo = _mm512_set1_ps(-128.0f), hi = _mm512_set1_ps(127.0f);
  for (; j + 16 <= K; j += 16) {
    const __m512 v = _mm512_loadu_ps(x + j);
    const __m512 t = isStatic ? _mm512_div_ps(v, vs) : _mm512_mul_ps(v, vs);
    const __m512i c = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(t, lo), hi));  // RNE (MXCSR default)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + j), _mm512_cvtepi32_epi8(c));
  }
#else
  const __m256 vs = _mm256_set1_ps(isStatic ? staticScale : inv), lo = _mm256_set1_ps(-128.0f), hi = _mm256_set1_ps(127.0f);
  for (; j + 8 <= K; j += 8) {
    const __m256 v = _mm256_loadu_ps(x + j);
    const __m256 t = isStatic ? _mm256_div_ps(v, vs) : _mm256_mul_ps(v, vs);
    const __m256i c = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(t, lo), hi));  // RNE (MXCSR default)
    const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + j), _mm_packs_epi16(w16, w16));
  }
#endif
  for (; j < K; j++) q[j] = act_i8_code_of(x[j], staticScale, inv);
  return act_i8_scale(staticScale, amax);
#else
  return act_i8_quantize_row(x, K, staticScale, q);
#endif
}

// Activation layouts: int16 codes for the vpmaddwd dot (AVX2; 512-bit on AVX-512), u8 code + 128 for the VNNI dot,
// int8 codes for the int32 loop of the other ISAs.
#if defined(__AVX2__)
#define KVQ_I8_MADD 1
#else
#define KVQ_I8_MADD 0
#endif
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#define KVQ_I8_VNNI 1
#else
#define KVQ_I8_VNNI 0
#endif

/** Activation layout: int16 codes (vpmaddwd), u8 code + 128 (vpdpbusd), int8 codes (the loop). */
enum I8Layout { kI8Int16, kI8U8, kI8Int8 };
/** The decode GEMV's layout on this ISA. */
static const I8Layout kI8GemvLayout = KVQ_I8_MADD ? kI8Int16 : kI8Int8;
/** The prefill GEMM's layout on this ISA. */
static const I8Layout kI8GemmLayout = KVQ_I8_VNNI ? kI8U8 : kI8GemvLayout;

/** The quantized activation rows of one decode call: codes in the layout the ISA's dot reads, and row scales. */
struct I8X {
  const void* q;    // codes in one I8Layout, rows KP elements apart
  const float* s;   // [rows] row scales
  int64_t KP;       // row stride of q, in elements
};

/** Weight row n's scale (per tensor or per output row). */
KVQ_I float i8w_scale(const WeightRef& w, int64_t n) { return w.scale_len == 1 ? w.scale[0] : w.scale[n]; }

#if defined(__AVX512BW__)
/** y rows [n0, n1) of R activation rows (int16 layout): 512-bit vpmaddwd on 32 int16-widened weights a step (scalar tail). */
template <int R>
static void gemv_i8act_dot(const LinearParams& p, const I8X& xa, int64_t n0, int64_t n1) {
  const int64_t K = p.in, N = p.out;
  const int8_t* base = static_cast<const int8_t*>(p.w.data);
  const int16_t* x16 = static_cast<const int16_t*>(xa.q);
  const int64_t K32 = K & ~(int64_t)31;
  for (int64_t n = n0; n < n1; n++) {
    const int8_t* wr = base + n * K;
    __m512i acc[R];
    for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_si512();
    for (int64_t e = 0; e < K32; e += 32) {
      if ((e & 63) == 0) vprefetch(wr + e + kDensePrefetch);
      const __m512i w = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr + e)));
      for (int r = 0; r < R; r++) acc[r] = _mm512_add_epi32(acc[r], _mm512_madd_epi16(_mm512_loadu_si512(x16 + r * xa.KP + e), w));
    }
    const float sw = i8w_scale(p.w, n);
    for (int r = 0; r < R; r++) {
      int32_t dot = _mm512_reduce_add_epi32(acc[r]);
      for (int64_t e = K32; e < K; e++) dot += (int32_t)x16[r * xa.KP + e] * (int32_t)wr[e];
      p.y[r * N + n] = (float)dot * (xa.s[r] * sw) + (p.bias ? p.bias[n] : 0.0f);
    }
  }
}
#elif defined(__AVX2__)
/** y rows [n0, n1) of R activation rows (int16 layout): vpmaddwd on 16 int16-widened weights a step (scalar tail). */
template <int R>
static void gemv_i8act_dot(const LinearParams& p, const I8X& xa, int64_t n0, int64_t n1) {
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
/** y rows [n0, n1) of R activation rows (int8 layout): an int32 loop (compilers vectorize it, e.g. NEON smlal). */
template <int R>
static void gemv_i8act_dot(const LinearParams& p, const I8X& xa, int64_t n0, int64_t n1) {
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

#if KVQ_I8_VNNI
/**
 * y rows [n0, n1) of R activation rows (u8 layout: code + 128): vpdpbusd on 64 weights a step (masked tail), the
 * offset removed per row through the weight sum. The prefill GEMM's dot on VNNI builds: 392-461 GOP/s against 250-269
 * for the 512-bit vpmaddwd dot (512 rows, 768-2048 x 2048-5632, 2-core Zen 5); as a streaming decode GEMV it was
 * the slower one (42-50 against 60-64 GB/s).
 */
template <int R>
static void gemv_i8act_vnni(const LinearParams& p, const I8X& xa, int64_t n0, int64_t n1) {
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
#endif

/** y rows [n0, n1) of R activation rows in layout L. */
template <I8Layout L, int R>
KVQ_I void gemv_i8act(const LinearParams& p, const I8X& xa, int64_t n0, int64_t n1) {
#if KVQ_I8_VNNI
  if constexpr (L == kI8U8) {
    gemv_i8act_vnni<R>(p, xa, n0, n1);
    return;
  }
#endif
  gemv_i8act_dot<R>(p, xa, n0, n1);
}

/** Bytes of one activation row of K codes in layout L, padded to 64. */
KVQ_I int64_t i8x_row_bytes(I8Layout L, int64_t K) { return L == kI8Int16 ? ((K + 31) & ~(int64_t)31) * 2 : (K + 63) & ~(int64_t)63; }

/** Element stride of layout L for rows of `rb` bytes. */
KVQ_I int64_t i8x_stride(I8Layout L, int64_t rb) { return L == kI8Int16 ? rb / 2 : rb; }

/** Quantize row r of x into layout L at dst, its scale into s[r]; q: K bytes of scratch. */
KVQ_I void i8x_row(I8Layout L, const LinearParams& p, int64_t r, int8_t* q, uint8_t* dst, float* s) {
  const int64_t K = p.in;
  s[r] = i8x_quantize_row(p.x + r * K, K, p.xScale, q);
  if (L == kI8Int16) {
    int16_t* d16 = reinterpret_cast<int16_t*>(dst);
    for (int64_t e = 0; e < K; e++) d16[e] = q[e];
  } else {
    const int off = L == kI8U8 ? 128 : 0;
    for (int64_t e = 0; e < K; e++) dst[e] = (uint8_t)(q[e] + off);
  }
}

/**
 * The rows' codes in layout L (rows x rb bytes) and their scales (rows floats), carved from the pool's shared buffer,
 * plus `extra` bytes after them; null when out of memory.
 */
KVQ_I uint8_t* i8x_alloc(const Runner& rn, int64_t rows, int64_t rb, int64_t extra, float** s) {
  uint8_t* m = static_cast<uint8_t*>(rn.shared(rn.self, (size_t)(rows * rb + rows * (int64_t)sizeof(float) + extra)));
  if (m) *s = reinterpret_cast<float*>(m + rows * rb);
  return m;
}

/** The decode GEMV (rows <= 4): quantize the rows once into the ISA's layout, then output rows over the threads. */
static int qgemv_i8act(const LinearParams& p, const Runner& rn) {
  constexpr I8Layout L = kI8GemvLayout;
  const int64_t K = p.in, rows = p.rows, rb = i8x_row_bytes(L, K);
  float* s = nullptr;
  uint8_t* m = i8x_alloc(rn, rows, rb, K, &s);
  if (!m) return kOutOfMemory;
  int8_t* q = reinterpret_cast<int8_t*>(s + rows);
  for (int64_t r = 0; r < rows; r++) i8x_row(L, p, r, q, m + r * rb, s);
  const I8X xa{m, s, i8x_stride(L, rb)};
  auto body = [&](int64_t n0, int64_t n1) { with_rows((int)rows, [&](auto r) { gemv_i8act<L, decltype(r)::value>(p, xa, n0, n1); }); };
  gemv_split(p, rn, body);
  return kOk;
}

static const int64_t kI8GemmMB = 64;  // activation rows per task (their codes stay in L2)
static const int64_t kI8GemmNB = 32;  // weight rows per task (read from L2 by every group of 4 activation rows)

/**
 * The int8 GEMM (prefill, rows > 4): every row quantized once into the ISA's layout (over the threads, each with K
 * bytes of its own scratch), then tasks of (64 activation rows, 32 weight rows) running the GEMV dot four activation
 * rows at a time, so each weight row is streamed from memory once per task and read from cache by the other row
 * groups. The same integer sums as the GEMV.
 */
static int qgemm_i8act(const LinearParams& p, const Runner& rn) {
  constexpr I8Layout L = kI8GemmLayout;
  const int64_t K = p.in, N = p.out, rb = i8x_row_bytes(L, K);
  float* s = nullptr;
  uint8_t* m = i8x_alloc(rn, p.rows, rb, 0, &s);
  if (!m || !rn.reserve(rn.self, (size_t)K)) return kOutOfMemory;
  auto quant = [&](int64_t m0, int64_t m1, int tid) {
    int8_t* q = static_cast<int8_t*>(rn.scratch(rn.self, tid));
    for (int64_t r = m0; r < m1; r++) i8x_row(L, p, r, q, m + r * rb, s);
  };
  auto tile = [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    for (int64_t r = m0; r < m1; r += 4) {
      LinearParams pm = p;
      pm.y = p.y + r * N;
      const I8X xa{m + r * rb, s + r, i8x_stride(L, rb)};
      with_rows((int)imin(4, m1 - r), [&](auto R) { gemv_i8act<L, decltype(R)::value>(pm, xa, n0, n1); });
    }
  };
  gemm_act_q8_split<kI8GemmMB, kI8GemmNB>(p, rn, quant, tile);
  return kOk;
}

/** linear on an int8 weight with int8 activations (W8A8): the integer GEMV for up to 4 rows, else the int8 GEMM. */
static int linear_i8act(const LinearParams& p, const Runner& rn) { return p.rows <= 4 ? qgemv_i8act(p, rn) : qgemm_i8act(p, rn); }

#endif  // KVQ_WQUANT_I8ACT_H_
