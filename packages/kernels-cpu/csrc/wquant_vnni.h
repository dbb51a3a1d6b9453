// SPDX-License-Identifier: Apache-2.0
//
// The int8 block dots of the GGML dtypes in 512-bit registers with AVX-512 VNNI (the avx512 tier): the decode GEMV
// and the int8 prefill GEMM of wquant_impl.h's "8-bit activations" section, 64 weights per instruction instead of 32.
// Part of wquant_impl.h (same rules); compiled only where the build has AVX512BW and AVX512VNNI.
//
// The sums are the same integers as the 256-bit dots (Q8Direct); only the order of the float additions differs
// (16 lanes instead of 8), well inside the parity tolerances of the int8 path.
//
// - K-quants (256-element blocks, one activation scale per block): the unsigned codes of 64 consecutive elements in
//   one register, `vpmaddubsw` with x (int16 pair sums, at most 2 x 63 x 127), then `vpdpwssd` with the sub-block
//   scales (int16, broadcast per sub-block by one `vpermw`), so a block's integer sum is formed in one int32
//   accumulator and converted once. Minimums and Q6_K's -32 go through the 16-element sums of x (s16), as in Q8Direct.
// - 32-element types: two blocks per register, `vpdpbusd` of the unsigned codes (q8_0's w + 128, the nibbles, or the
//   5-bit codes) with x, started from a per-call int32 lane term -k * (sum of the lane's 4 x) that removes the code
//   offset k (128, 8, 16); q4_1 / q5_1 add m * dx * sum(x) per lane in float. Scales: one f16 pair per two blocks.
//   An odd last block runs the 256-bit dot.

#if defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define KVQ_Q8_VNNI 1

/** 16 float lanes: a for lanes 0-7, b for lanes 8-15. */
KVQ_I __m512 vnni_pair_ps(float a, float b) { return _mm512_insertf32x8(_mm512_set1_ps(a), _mm256_set1_ps(b), 1); }

/** 64 bytes from two 32-byte loads (at a: bytes 0-31, at b: 32-63). */
KVQ_I __m512i vnni_ld2x32(const uint8_t* a, const uint8_t* b) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a))),
                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b)), 1);
}

/** The 64 nibble codes of two 16-byte runs (blocks A at a, B at b) in element order: A 0-31, then B 0-31. */
KVQ_I __m512i vnni_nibbles2(const uint8_t* a, const uint8_t* b) {
  const __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a))),
                                            _mm_loadu_si128(reinterpret_cast<const __m128i*>(b)), 1);
  const __m256i m = _mm256_set1_epi8(0x0F);
  // [A lo, B lo | A hi, B hi] in 128-bit lanes, then lanes 0, 2, 1, 3.
  const __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(v, m)), _mm256_and_si256(_mm256_srli_epi16(v, 4), m), 1);
  return _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(3, 1, 2, 0));
}

/** Word indices for vpermw: table c has 32 words, in runs of `len` equal words: step * c, step * c + 1, ... */
struct VnniIdx {
  alignas(64) int16_t v[4][32];
};
constexpr VnniIdx vnni_idx(int step, int len) {
  VnniIdx t{};
  for (int c = 0; c < 4; c++)
    for (int i = 0; i < 32; i++) t.v[c][i] = (int16_t)(step * c + i / len);
  return t;
}
static constexpr VnniIdx kVnniK45 = vnni_idx(2, 16);  // sub-blocks 2c, 2c + 1 (32 elements = 16 words each)
static constexpr VnniIdx kVnniQ6 = vnni_idx(4, 8);    // groups 4c .. 4c + 3 (16 elements = 8 words each)

template <int DT>
struct Q8Vnni;

/**
 * Byte layout of a 32-element GGML block (q8_0 / q4_0 / q4_1 / q5_0 / q5_1): f16 d at 0, f16 m at 2 (kMin), the 32
 * fifth bits qh at kQhOff (kFive), the codes at kQsOff.
 */
template <int DT>
struct Block32Layout {
  typedef QB<DT> B;
  static constexpr bool kMin = DT == kQ4_1 || DT == kQ5_1;
  static constexpr bool kFive = DT == kQ5_0 || DT == kQ5_1;
  static constexpr int kQhOff = 2 + (kMin ? 2 : 0);
  static constexpr int kQsOff = kQhOff + (kFive ? 4 : 0);
};

/** q8_0 / q4_0 / q4_1 / q5_0 / q5_1: blocks A (at a) and B (at a + kBytes), R rows of x; acc[r] gets lanes. */
template <int DT>
struct Q8VnniPair : Block32Layout<DT> {
  typedef Block32Layout<DT> L;
  typedef typename L::B B;
  static constexpr bool kMin = L::kMin, kFive = L::kFive;
  /** The 64 unsigned codes of blocks A and B in element order. */
  KVQ_I __m512i codes(const uint8_t* a) {
    const uint8_t* b = a + B::kBytes;
    if (DT == kQ8_0) return _mm512_xor_si512(vnni_ld2x32(a + L::kQsOff, b + L::kQsOff), _mm512_set1_epi8((char)0x80));
    __m512i w = vnni_nibbles2(a + L::kQsOff, b + L::kQsOff);
    if (kFive) {
      // Bit e of a block's little-endian qh is element e's fifth bit: the two blocks' qh words are the byte mask of
      // the 64 codes directly (+16 where set; the nibbles are below 16).
      uint32_t ha, hb;
      memcpy(&ha, a + L::kQhOff, 4);
      memcpy(&hb, b + L::kQhOff, 4);
      w = _mm512_mask_add_epi8(w, (__mmask64)ha | ((__mmask64)hb << 32), w, _mm512_set1_epi8(16));
    }
    return w;
  }
  /**
   * NW weight rows side by side (the pair of each at a[j]), R rows of x; acc[j * R + r] gets lanes. ini / dxl / xsl:
   * this pair's 16 lanes of row r's lane terms (xq8_terms in wquant_impl.h), loaded once for the NW weight rows.
   */
  template <int R, int NW>
  KVQ_I void dot(const uint8_t* const* a, const int8_t* const* x, const int32_t* const* ini, const float* const* dxl,
                 const float* const* xsl, __m512* acc) {
    __m512i w[NW];
    __m512 dv[NW], mv[NW];
    for (int j = 0; j < NW; j++) {
      const uint8_t* b = a[j] + B::kBytes;
      w[j] = codes(a[j]);
      dv[j] = vnni_pair_ps(ld_f16x(a[j]), ld_f16x(b));
      mv[j] = kMin ? vnni_pair_ps(ld_f16x(a[j] + 2), ld_f16x(b + 2)) : _mm512_setzero_ps();
    }
    for (int r = 0; r < R; r++) {
      const __m512i xv = _mm512_loadu_si512(x[r]);
      const __m512i s0 = kMin ? _mm512_setzero_si512() : _mm512_loadu_si512(ini[r]);
      const __m512 dl = _mm512_loadu_ps(dxl[r]);
      const __m512 xs = kMin ? _mm512_loadu_ps(xsl[r]) : _mm512_setzero_ps();
      for (int j = 0; j < NW; j++) {
        const __m512i pj = _mm512_dpbusd_epi32(s0, w[j], xv);
        acc[j * R + r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pj), _mm512_mul_ps(dv[j], dl), acc[j * R + r]);
        if (kMin) acc[j * R + r] = _mm512_fmadd_ps(mv[j], xs, acc[j * R + r]);
      }
    }
  }
};

/**
 * q4_k / q5_k, one 256-element block: sum over sub-blocks j of d sc_j sum(q x) - dmin m_j sum(x). acc[r] gets the
 * scaled sums (16 lanes), accm[r] the minimum terms (8 lanes).
 */
template <bool kFive>
struct Q8VnniK45 {
  template <int R>
  KVQ_I void dot(const uint8_t* b, const int8_t* const* x, const float* dx, const int16_t* const* s16, __m512* acc, __m256* accm) {
    const float d = ld_f16x(b), dmin = ld_f16x(b + 2);
    uint32_t w0, w1, w2;
    memcpy(&w0, b + 4, 4);
    memcpy(&w1, b + 8, 4);
    memcpy(&w2, b + 12, 4);
    const __m128i sm = _mm_setr_epi32((int)(w0 & 0x3f3f3f3fu), (int)((w2 & 0x0f0f0f0fu) | (((w0 >> 6) & 0x03030303u) << 4)),
                                      (int)(w1 & 0x3f3f3f3fu), (int)(((w2 >> 4) & 0x0f0f0f0fu) | (((w1 >> 6) & 0x03030303u) << 4)));
    const __m512i sc16 = _mm512_castsi128_si512(_mm_cvtepu8_epi16(sm));  // words 0-7: the 8 sub-block scales
    const __m256i mins16 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(sm, _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15)));
    const uint8_t* qs = b + (kFive ? 48 : 16);
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512i w[4], s[4];
    __m512i qh2;
    if (kFive) {
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16));
      qh2 = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 1), 1);
    }
    for (int t = 0; t < 2; t++) {
      // qs[64t .. 64t + 63]: low nibbles = sub-blocks 4t, 4t + 2; high = 4t + 1, 4t + 3 (256-bit halves).
      const __m512i q = _mm512_loadu_si512(qs + 64 * t);
      const __m512i lo = _mm512_and_si512(q, m4), hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
      w[2 * t] = _mm512_shuffle_i64x2(lo, hi, _MM_SHUFFLE(1, 0, 1, 0));      // sub-blocks 4t, 4t + 1
      w[2 * t + 1] = _mm512_shuffle_i64x2(lo, hi, _MM_SHUFFLE(3, 2, 3, 2));  // 4t + 2, 4t + 3
    }
    for (int c = 0; c < 4; c++) {
      if (kFive) {
        // Chunk c = sub-blocks 2c, 2c + 1: fifth bits are bits 2c (first 32 bytes) and 2c + 1 (last 32, already
        // shifted down by one in qh2) of qh: a byte mask of bit 2c, then +16 on those bytes (two instructions).
        const __mmask64 h = _mm512_test_epi8_mask(qh2, _mm512_set1_epi8((char)(1 << (2 * c))));
        w[c] = _mm512_mask_add_epi8(w[c], h, w[c], _mm512_set1_epi8(16));
      }
      s[c] = _mm512_permutexvar_epi16(_mm512_load_si512(kVnniK45.v[c]), sc16);
    }
    for (int r = 0; r < R; r++) {
      // One chain of four dpwssd (two chains of two measured slower on Zen 5: the extra add outweighs the latency).
      __m512i sum = _mm512_setzero_si512();
      for (int c = 0; c < 4; c++) sum = _mm512_dpwssd_epi32(sum, _mm512_maddubs_epi16(w[c], _mm512_loadu_si512(x[r] + 64 * c)), s[c]);
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(d * dx[r]), acc[r]);
      const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s16[r]));
      accm[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(mins16, bs)), _mm256_set1_ps(-dmin * dx[r]), accm[r]);
    }
  }
};
template <>
struct Q8Vnni<kQ4_K> : Q8VnniK45<false> {};
template <>
struct Q8Vnni<kQ5_K> : Q8VnniK45<true> {};

/** q6_k, one 256-element block: sum((q - 32) sc x) = sum(q sc x) - 32 sum_g sc_g sum_g(x). accm is not used. */
template <>
struct Q8Vnni<kQ6_K> {
  template <int R>
  KVQ_I void dot(const uint8_t* b, const int8_t* const* x, const float* dx, const int16_t* const* s16, __m512* acc, __m256*) {
    const float d = ld_f16x(b + 208);
    const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(0x03);
    __m512i w[4], s[4];
    for (int n = 0; n < 2; n++) {
      // Half n (elements 128n ..): ql[64n .. 64n + 63], qh[32n .. 32n + 31]. Elements 0-63 take the low nibbles and
      // qh bits 0-1 (bytes 0-31) / 2-3 (bytes 32-63); elements 64-127 the high nibbles and bits 4-5 / 6-7.
      const __m512i L = _mm512_loadu_si512(b + 64 * n);
      const __m256i H = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 128 + 32 * n));
      const __m512i H2 = _mm512_inserti64x4(_mm512_castsi256_si512(H), _mm256_srli_epi16(H, 2), 1);
      w[2 * n] = _mm512_or_si512(_mm512_and_si512(L, m4), _mm512_slli_epi16(_mm512_and_si512(H2, m2), 4));
      w[2 * n + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(L, 4), m4),
                                     _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(H2, 4), m2), 4));
    }
    const __m256i sc256 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 192)));
    const __m512i sc16 = _mm512_castsi256_si512(sc256);
    for (int c = 0; c < 4; c++) s[c] = _mm512_permutexvar_epi16(_mm512_load_si512(kVnniQ6.v[c]), sc16);  // groups 4c .. 4c + 3
    for (int r = 0; r < R; r++) {
      // One chain of four dpwssd (two chains of two measured slower on Zen 5: the extra add outweighs the latency).
      __m512i sum = _mm512_setzero_si512();
      for (int c = 0; c < 4; c++) sum = _mm512_dpwssd_epi32(sum, _mm512_maddubs_epi16(w[c], _mm512_loadu_si512(x[r] + 64 * c)), s[c]);
      const __m256i corr = _mm256_madd_epi16(sc256, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s16[r])));
      sum = _mm512_sub_epi32(sum, _mm512_zextsi256_si512(_mm256_slli_epi32(corr, 5)));
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(d * dx[r]), acc[r]);
    }
  }
};

/**
 * How far ahead (bytes) the decode GEMV prefetches the weight row it streams. Measured 2026-12-05 on the 2-core Zen
 * 5, the 84 GEMVs of a 768-wide 12-layer decode step from DRAM (2 threads): q8_0 2.45 -> 2.10-2.16 ms, q4_k 1.80-2.04
 * -> 1.45-1.49 ms at 4096 (512: q8_0 slower; 8192: less gain; 16384: none). Short rows (768-2048 elements) leave the
 * hardware prefetcher little time to ramp up; the prefetch of the next rows does it instead.
 */
#ifndef KVQ_Q8_PREFETCH
#define KVQ_Q8_PREFETCH 4096  // overridable at build time (KVQ_NATIVE_FLAGS=-DKVQ_Q8_PREFETCH=N) to tune a machine
#endif
static const int64_t kQ8Prefetch = KVQ_Q8_PREFETCH;

/** Prefetch the `bytes` of weights that lie kQ8Prefetch ahead of p, a line at a time. */
template <int64_t bytes>
KVQ_I void q8_prefetch_ahead(const uint8_t* p) {
  for (int64_t o = 0; o < bytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(p + kQ8Prefetch + o), _MM_HINT_T0);
}

/**
 * y[r, n] for n in [n0, n1) on the VNNI dots: the 256-element types one block at a time, the others in pairs of
 * blocks, NW weight rows side by side (NW = 2 for the prefill GEMM of the 32-element types: each load of x and its
 * lane terms then serves two weight rows; the decode GEMV streams one row at a time, NW = 1). `stream`: the weights
 * come from memory (decode), so prefetch them kQ8Prefetch ahead; a prefill task reads its tile from cache.
 */
template <int DT, int R, int NW = 1>
static void gemv_q8_vnni(const LinearParams& p, const XQ8& xa, int64_t n0, int64_t n1, bool stream = false) {
  typedef QB<DT> B;
  constexpr bool kSuper = B::kElems == 256;
  static_assert(NW == 1 || !kSuper, "side-by-side weight rows: 32-element types only");
  constexpr int64_t XB = kSuper ? 256 : 32;
  const int64_t K = p.in, N = p.out, nb = K / B::kElems, nxb = K / XB;
  const int64_t rowBytes = nb * B::kBytes;
  const uint8_t* base = static_cast<const uint8_t*>(p.w.data);
  int64_t n = n0;
  for (; n + NW <= n1; n += NW) {
    __m512 acc[NW * R];
    __m256 acc8[NW * R];
    float accs[NW * R];
    for (int i = 0; i < NW * R; i++) acc[i] = _mm512_setzero_ps(), acc8[i] = _mm256_setzero_ps(), accs[i] = 0.0f;
    int64_t b = 0;
    if constexpr (kSuper) {
      const uint8_t* wr = base + n * rowBytes;
      for (; b < nb; b++) {
        const int64_t e0 = b * 256;
        const int8_t* x[R];
        const int16_t* s16[R];
        float dx[R];
        for (int r = 0; r < R; r++) x[r] = xa.q + r * K + e0, s16[r] = xa.s16 + r * (K / 16) + e0 / 16, dx[r] = xa.d[r * nxb + b];
        if (stream) q8_prefetch_ahead<B::kBytes>(wr + b * B::kBytes);
        Q8Vnni<DT>::template dot<R>(wr + b * B::kBytes, x, dx, s16, acc, acc8);
      }
    } else {
      for (; b + 2 <= nb; b += 2) {
        const int64_t e0 = b * 32;
        const int8_t* x[R];
        const int32_t* ini[R];
        const float *dxl[R], *xsl[R];
        const uint8_t* a[NW];
        for (int j = 0; j < NW; j++) a[j] = base + (n + j) * rowBytes + b * B::kBytes;
        if (stream) q8_prefetch_ahead<2 * B::kBytes>(a[0]);
        for (int r = 0; r < R; r++) {
          x[r] = xa.q + r * K + e0;
          ini[r] = xa.ini + r * (K / 4) + e0 / 4;
          dxl[r] = xa.dxl + r * (K / 4) + e0 / 4;
          xsl[r] = xa.xsl + r * (K / 4) + e0 / 4;
        }
        Q8VnniPair<DT>::template dot<R, NW>(a, x, ini, dxl, xsl, acc);
      }
      if (b < nb) {  // an odd last block: the 256-bit dot
        const int64_t e0 = b * 32;
        const int8_t* x[R];
        const int16_t* s16[R];
        float dx[R], xs[R];
        for (int r = 0; r < R; r++) {
          x[r] = xa.q + r * K + e0;
          s16[r] = xa.s16 + r * (K / 16) + e0 / 16;
          dx[r] = xa.d[r * nxb + b];
          xs[r] = xa.xs[r * nxb + b];
        }
        for (int j = 0; j < NW; j++)
          Q8Direct<DT>::template dot<R>(base + (n + j) * rowBytes + b * B::kBytes, x, dx, xs, s16, acc8 + j * R, accs + j * R);
      }
    }
    for (int j = 0; j < NW; j++)
      for (int r = 0; r < R; r++)
        p.y[r * N + n + j] = _mm512_reduce_add_ps(acc[j * R + r]) + hsum8(acc8[j * R + r]) + accs[j * R + r] + (p.bias ? p.bias[n + j] : 0.0f);
  }
  if (n < n1) gemv_q8_vnni<DT, R, 1>(p, xa, n, n1, stream);  // the odd last weight row
}

// ---- Decode GEMV of the 32-element nibble types, four blocks per step --------------------------------------------
// The pair path above spends most of its instructions per 64 weights on unpacking (two loads, insert, shuffle) and
// on two scalar f16 scales. With four blocks (128 weights) per step, one vpermi2b gathers the 64 code bytes of all
// four blocks from two loads, one vpermt2w gathers their four scales (and minimums), and the low and high nibbles meet
// x in a per-call order (QuadX): in each 128-element group, elements 0-15 of blocks 0..3, then elements 16-31. Lane l
// of a dot then holds 8 elements of block l / 4, so two vpdpbusd give each block's integer sums in 4 lanes.

/** Activations in the quad order, [rows, K] codes and [rows, K / 8] lane terms (ini: -k * lane sum; dxl; xsl). */
struct QuadX {
  int8_t* q = nullptr;
  int32_t* ini = nullptr;
  float* dxl = nullptr;
  float* xsl = nullptr;
};

/** The dtypes of the quad GEMV (the 32-element nibble types); it runs rows of whole 128-element groups. */
template <int DT>
static constexpr bool kQ8Quad = DT == kQ4_0 || DT == kQ4_1 || DT == kQ5_0 || DT == kQ5_1;

/** Row r of the quad activations from the pair path's terms (xq8_terms): codes reordered, lane terms summed in pairs. */
KVQ_I void q8_quad_row(const XQ8& xa, int64_t r, int64_t K, const QuadX& qx) {
  const int8_t* q = xa.q + r * K;
  const int32_t* ini = xa.ini + r * (K / 4);
  const float* xsl = xa.xsl + r * (K / 4);
  for (int64_t g = 0; g < K / 128; g++) {
    int8_t* dq = qx.q + r * K + g * 128;
    for (int j = 0; j < 4; j++) {
      memcpy(dq + 16 * j, q + g * 128 + 32 * j, 16);
      memcpy(dq + 64 + 16 * j, q + g * 128 + 32 * j + 16, 16);
    }
    for (int l = 0; l < 16; l++) {
      // Lane l: elements 4(l % 4) .. + 3 and 16 + 4(l % 4) .. + 3 of block 4g + l / 4 (4-element lanes i and i + 4).
      const int64_t i = (g * 4 + l / 4) * 8 + (l % 4), o = r * (K / 8) + g * 16 + l;
      qx.ini[o] = ini[i] + ini[i + 4];
      qx.xsl[o] = xsl[i] + xsl[i + 4];
      qx.dxl[o] = xa.d[r * (K / 32) + g * 4 + l / 4];
    }
  }
}

/** Byte / word gather indices of the quad dot for a block size and code offset. */
struct QuadIdx {
  alignas(64) uint8_t codes[64];
  alignas(64) uint8_t qh[64];  // bytes 0-7: bits 0-15 of the four qh words, 8-15: bits 16-31 (5-bit types)
  alignas(64) int16_t d[32];
  alignas(64) int16_t m[32];
};
constexpr QuadIdx q8_quad_idx(int blockBytes, int qsOff, int qhOff) {
  QuadIdx t{};
  for (int i = 0; i < 64; i++) t.codes[i] = (uint8_t)((i / 16) * blockBytes + qsOff + i % 16);
  for (int i = 0; i < 16; i++) t.qh[i] = (uint8_t)(((i % 8) / 2) * blockBytes + qhOff + (i / 8) * 2 + i % 2);
  for (int i = 0; i < 32; i++) t.d[i] = (int16_t)(((i / 4) % 4) * (blockBytes / 2)), t.m[i] = (int16_t)(t.d[i] + 1);
  return t;
}

template <int DT>
struct Q8Quad : Block32Layout<DT> {
  typedef Block32Layout<DT> L;
  typedef typename L::B B;
  static constexpr bool kMin = L::kMin, kFive = L::kFive;
  static constexpr QuadIdx kIdx = q8_quad_idx(B::kBytes, L::kQsOff, L::kQhOff);

  /** acc[r] += lanes of the four blocks at a against x group `xq` (row stride K) and its lane terms (stride K / 8). */
  template <int R, bool kMasked>
  KVQ_I void dot(const uint8_t* a, const int8_t* xq, const int32_t* ini, const float* dxl, const float* xsl, int64_t K, __m512* acc,
                 bool lines) {
    // The four blocks span 4 kBytes (72..96) bytes at offset o in their first cache line. Where they end within the
    // next line (and o is even, for the word gathers), both lines are loaded aligned and the gather indices move by o
    // (NOTE: on the 2-core Zen 5, streamed from DRAM, one thread, 2026-12-07: q4_0 23 -> 67 G weights/s, q4_1 19 ->
    // 55; the 64-byte loads split across two lines were the cost). Else two unaligned loads (always at the matrix's
    // first group, `lines` false, so nothing before it is read); the last group masks the second one (kMasked) so
    // nothing past the matrix is read.
    __m512i L0, L1, ci = _mm512_load_si512(kIdx.codes), di = _mm512_load_si512(kIdx.d), mi = _mm512_load_si512(kIdx.m),
            qi = _mm512_load_si512(kIdx.qh);
    const uint8_t* al = reinterpret_cast<const uint8_t*>(reinterpret_cast<uintptr_t>(a) & ~(uintptr_t)63);
    const int o = (int)(a - al);
    if (lines && o + 4 * B::kBytes <= 128 && (o & 1) == 0) {
      L0 = _mm512_load_si512(al);
      L1 = _mm512_load_si512(al + 64);
      ci = _mm512_add_epi8(ci, _mm512_set1_epi8((char)o));
      if (kFive) qi = _mm512_add_epi8(qi, _mm512_set1_epi8((char)o));
      di = _mm512_add_epi16(di, _mm512_set1_epi16((short)(o / 2)));
      mi = _mm512_add_epi16(mi, _mm512_set1_epi16((short)(o / 2)));
    } else {
      L0 = _mm512_loadu_si512(a);
      L1 = kMasked ? _mm512_maskz_loadu_epi8((~(__mmask64)0) >> (128 - 4 * B::kBytes), a + 64) : _mm512_loadu_si512(a + 64);
    }
    const __m512i v = _mm512_permutex2var_epi8(L0, ci, L1);
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    __m512i lo = _mm512_and_si512(v, m4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    if (kFive) {
      // qh bit e of block j: element e; lo holds elements 0-15 of each block, hi 16-31, so the low halves of the
      // four qh words side by side are lo's byte mask and the high halves hi's (one byte gather, no scalar shifts).
      const __m128i h = _mm512_castsi512_si128(_mm512_permutex2var_epi8(L0, qi, L1));
      lo = _mm512_mask_add_epi8(lo, (__mmask64)_mm_cvtsi128_si64(h), lo, _mm512_set1_epi8(16));
      hi = _mm512_mask_add_epi8(hi, (__mmask64)_mm_extract_epi64(h, 1), hi, _mm512_set1_epi8(16));
    }
    // The scales (and minimums) of blocks 2 and 3 lie past byte 64 for q5_0 / q5_1: a two-source word gather.
    const __m512 dv = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutex2var_epi16(L0, di, L1)));
    __m512 mv = _mm512_setzero_ps();
    if (kMin) mv = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutex2var_epi16(L0, mi, L1)));
    for (int r = 0; r < R; r++) {
      const __m512i s0 = kMin ? _mm512_setzero_si512() : _mm512_loadu_si512(ini + r * (K / 8));
      __m512i s = _mm512_dpbusd_epi32(s0, lo, _mm512_loadu_si512(xq + r * K));
      s = _mm512_dpbusd_epi32(s, hi, _mm512_loadu_si512(xq + r * K + 64));
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dv, _mm512_loadu_ps(dxl + r * (K / 8))), acc[r]);
      if (kMin) acc[r] = _mm512_fmadd_ps(mv, _mm512_loadu_ps(xsl + r * (K / 8)), acc[r]);
    }
  }
};

/**
 * y[r, n] for n in [n0, n1) by the quad dot (kQ8Quad dtypes, K a multiple of 128), weights streamed from memory (prefetched kQ8Prefetch ahead).
 * NOTE: against the pair path on the 2-core Zen 5 (2026-12-06): in cache, one thread, q4_0 21-25 -> 33-42 G weights/s,
 * q4_1 15-18 -> 26-35, q5_0 18-22 -> 23-30, q5_1 14-17 -> 22-26; from DRAM (4096 x 4096 copies, 2 threads) 52-64% ->
 * 69-77% of the read bandwidth. Building q5's masks from four scalar qh loads instead of the byte gather measured the same.
 * q8_0 does not take it: gathering four 34-byte blocks' codes with two vpermi2b (x in its natural order) measured
 * slower in cache than the pair path (26 vs 30 G weights/s, one thread), whose two-block loads need no shuffle port.
 */
template <int DT, int R>
static void gemv_q8_quad(const LinearParams& p, const QuadX& qx, int64_t n0, int64_t n1) {
  typedef QB<DT> B;
  const int64_t K = p.in, N = p.out, rowBytes = (K / 32) * B::kBytes;
  const uint8_t* base = static_cast<const uint8_t*>(p.w.data);
  for (int64_t n = n0; n < n1; n++) {
    const uint8_t* wr = base + n * rowBytes;
    __m512 acc[R];
    for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
    const int64_t ng = K / 128;
    for (int64_t g = 0; g < ng; g++) {
      const uint8_t* a = wr + g * 4 * B::kBytes;
      q8_prefetch_ahead<4 * B::kBytes>(a);
      if (n + 1 == p.out && g + 1 == ng)
        Q8Quad<DT>::template dot<R, true>(a, qx.q + g * 128, qx.ini + g * 16, qx.dxl + g * 16, qx.xsl + g * 16, K, acc, false);
      else
        Q8Quad<DT>::template dot<R, false>(a, qx.q + g * 128, qx.ini + g * 16, qx.dxl + g * 16, qx.xsl + g * 16, K, acc, n > 0 || g > 0);
    }
    for (int r = 0; r < R; r++) p.y[r * N + n] = _mm512_reduce_add_ps(acc[r]) + (p.bias ? p.bias[n] : 0.0f);
  }
}
#endif  // __AVX512BW__ && __AVX512VNNI__
