// SPDX-License-Identifier: Apache-2.0
//
// The "amx" kernel table: the avx512 kernels, with the prefill GEMM of every GGML weight type with GGML 8-bit
// activations on Intel AMX tiles (TMUL `tdpbssd`: a 16 x 16 int32 tile += 16 x G int8 by G x 16 int8; Sapphire
// Rapids and later). Included by kernels_avx512.cc only, inside namespace kvq::avx512, after kernels_impl.h. Linux with
// GCC/Clang only: the process must ask the kernel for the tile state first (arch_prctl ARCH_REQ_XCOMP_PERM, done by
// the addon's dispatcher before it offers this table); elsewhere kernels_amx() is null and the tier is never usable.
//
// The sums are the ones of the int8 GEMV / VNNI GEMM: per weight group (32 weights; 16 for q6_k, whose scales cover
// 16), the exact int32 dot of the weight codes (QB<DT>::decode, the codes the other paths use) with the activation
// codes, times (group scale x activation scale), plus, for the types with offsets (q4_1, q5_1, q4_k, q5_k: weight =
// s q + o), the offset times (activation scale x sum of the group's activation codes); accumulated in float32. Only
// the order of the float additions differs from the other ISAs (group by group, one FMA each).
//
// Per task (16 weight rows): the rows' groups are decoded once into the tiles' "VNNI" B layout (G/4 rows of 64 bytes
// per group: row kk holds codes 4kk..4kk+3 of each of the 16 weight rows), with their scales and offsets as float32.
// Then for each 16 activation rows, group by group: A = 16 rows x G codes straight from the quantized activations
// (row stride K), C = A.B in a tile, C stored to L1 and folded into 16 float32 accumulators (one zmm per row). Two
// tile sets alternate between even and odd groups, so the folding of one overlaps the tile product of the next.
#if defined(KVQ_AMX)

#define KVQ_AMX_FN __attribute__((target("amx-tile,amx-int8"))) static

/** The 64-byte tile configuration (palette 1) of `ldtilecfg`. */
struct alignas(64) AmxTileConfig {
  uint8_t palette;
  uint8_t startRow;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

/**
 * Tiles 0-1: A (even/odd group), 16 rows x G int8; 2-3: B, G/4 rows x 64 bytes; 4-5: C, 16 x 16 int32. G = 32, or 16
 * for q6_k (its scales cover 16 weights).
 */
KVQ_AMX_FN void amx_config(int G) {
  AmxTileConfig c;
  memset(&c, 0, sizeof c);
  c.palette = 1;
  for (int t = 0; t < 2; t++) c.rows[t] = 16, c.colsb[t] = (uint16_t)G;
  for (int t = 2; t < 4; t++) c.rows[t] = (uint8_t)(G / 4), c.colsb[t] = 64;
  for (int t = 4; t < 6; t++) c.rows[t] = 16, c.colsb[t] = 64;
  _tile_loadconfig(&c);
}

static const int64_t kAmxTile = 16;

/**
 * Repack weight rows [n0, n0 + 16) of a GGML matrix (rows past N as zeros) into B tiles, one per group of G weights
 * (16 G bytes: row kk holds codes 4kk..4kk+3 of each of the 16 rows), with the groups' scales ws[g][16] and, for the
 * types with offsets (weight = s q + o), the offsets wo[g][16]. QB<DT>::decode gives the int8 codes.
 */
template <int DT>
static inline void amx_pack(const uint8_t* w, int64_t N, int64_t K, int64_t n0, int32_t* pk, float* ws, float* wo) {
  typedef QB<DT> B;
  constexpr int G = B::kGroup, NG = B::kElems / G;
  const int64_t nb = K / B::kElems;
  int8_t q[B::kElems];
  float sc[NG], of[NG];
  for (int64_t n = 0; n < kAmxTile; n++) {
    const bool real = n0 + n < N;
    for (int64_t b = 0; b < nb; b++) {
      if (real) {
        B::decode(w + ((n0 + n) * nb + b) * B::kBytes, q, sc, of);
      } else {
        memset(q, 0, sizeof q);
        for (int g = 0; g < NG; g++) sc[g] = 0.0f, of[g] = 0.0f;
      }
      for (int g = 0; g < NG; g++) {
        const int64_t gg = b * NG + g;
        ws[gg * kAmxTile + n] = sc[g];
        if (B::kOffset) wo[gg * kAmxTile + n] = of[g];
        int32_t* dst = pk + gg * (G / 4) * 16 + n;
        for (int kk = 0; kk < G / 4; kk++) memcpy(dst + kk * 16, q + g * G + 4 * kk, 4);
      }
    }
  }
}

/**
 * acc[r] += float(c[r]) * (ws * xs[r * ng]) (+ wo * xo[r * ng] for offset types) for the 16 rows of a stored C tile:
 * xs the activation row's scale for this group, xo that scale times the sum of the group's activation codes.
 */
template <bool Offset>
static inline void amx_fold(const int32_t* c, __m512 ws, __m512 wo, const float* xs, const float* xo, int64_t ng, __m512* acc) {
  for (int r = 0; r < 16; r++) {
    const __m512 s = _mm512_mul_ps(ws, _mm512_set1_ps(xs[r * ng]));
    acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c + 16 * r)), s, acc[r]);
    if (Offset) acc[r] = _mm512_fmadd_ps(wo, _mm512_set1_ps(xo[r * ng]), acc[r]);
  }
}

/** The activations as the tile loop reads them: codes (rows padded to 16 with zeros) and per-group terms. */
struct AmxActs {
  const int8_t* q;  // [Mp, K]
  const float* xs;  // [Mp, K / G]: the scale of the activation block holding the group
  const float* xo;  // [Mp, K / G]: xs times the sum of the group's codes (offset types only)
};

/**
 * Output rows [m0, m0 + 16) x weight rows [n0, n0 + 16) of y (rows past M / N not written) from the packed tile of
 * weights; cbuf: 2 KiB of 64-byte aligned L1 staging. Groups alternate between two tile sets.
 */
template <int DT>
KVQ_AMX_FN void amx_tile(const LinearParams& p, const AmxActs& x, const int32_t* pk, const float* ws, const float* wo,
                         int64_t m0, int64_t n0, int32_t* cbuf) {
  constexpr int G = QB<DT>::kGroup;
  constexpr bool Off = QB<DT>::kOffset;
  const int64_t K = p.in, N = p.out, ng = K / G;
  __m512 acc[16];
  for (int r = 0; r < 16; r++) acc[r] = _mm512_setzero_ps();
  const int8_t* a = x.q + m0 * K;
  const float* xs = x.xs + m0 * ng;
  const float* xo = Off ? x.xo + m0 * ng : nullptr;
  const __m512 zero = _mm512_setzero_ps();
  auto wof = [&](int64_t g) { return Off ? _mm512_loadu_ps(wo + g * kAmxTile) : zero; };
  // The tile numbers are spelled out: GCC's tile intrinsics paste them into the instruction text, so they cannot be
  // template or function parameters.
  int64_t g = 0;
  for (; g + 2 <= ng; g += 2) {
    _tile_loadd(0, a + g * G, K);
    _tile_loadd(2, pk + g * (G / 4) * 16, 64);
    _tile_zero(4);
    _tile_dpbssd(4, 0, 2);
    _tile_loadd(1, a + (g + 1) * G, K);
    _tile_loadd(3, pk + (g + 1) * (G / 4) * 16, 64);
    _tile_zero(5);
    _tile_dpbssd(5, 1, 3);
    _tile_stored(4, cbuf, 64);
    amx_fold<Off>(cbuf, _mm512_loadu_ps(ws + g * kAmxTile), wof(g), xs + g, Off ? xo + g : nullptr, ng, acc);
    _tile_stored(5, cbuf + 256, 64);
    amx_fold<Off>(cbuf + 256, _mm512_loadu_ps(ws + (g + 1) * kAmxTile), wof(g + 1), xs + g + 1, Off ? xo + g + 1 : nullptr, ng, acc);
  }
  if (g < ng) {
    _tile_loadd(0, a + g * G, K);
    _tile_loadd(2, pk + g * (G / 4) * 16, 64);
    _tile_zero(4);
    _tile_dpbssd(4, 0, 2);
    _tile_stored(4, cbuf, 64);
    amx_fold<Off>(cbuf, _mm512_loadu_ps(ws + g * kAmxTile), wof(g), xs + g, Off ? xo + g : nullptr, ng, acc);
  }
  const int64_t nv = N - n0 < 16 ? N - n0 : 16;
  const __mmask16 mask = (__mmask16)((1u << nv) - 1);
  const __m512 bias = p.bias ? _mm512_maskz_loadu_ps(mask, p.bias + n0) : _mm512_setzero_ps();
  for (int r = 0; r < 16 && m0 + r < p.rows; r++) _mm512_mask_storeu_ps(p.y + (m0 + r) * N + n0, mask, _mm512_add_ps(acc[r], bias));
}

/** Weight rows [n0, n0 + 16) of y for every 16 activation rows (Mp of them, padded): configures and releases the tiles. */
template <int DT>
KVQ_AMX_FN void amx_columns(const LinearParams& p, const AmxActs& x, const int32_t* pk, const float* ws, const float* wo, int64_t Mp,
                            int64_t n0, int32_t* cbuf) {
  amx_config(QB<DT>::kGroup);
  for (int64_t m0 = 0; m0 < Mp; m0 += kAmxTile) amx_tile<DT>(p, x, pk, ws, wo, m0, n0, cbuf);
  _tile_release();
}

/** Quantize activation rows [r0, r1) (GGML's rounding for DT) and their per-group terms xs / xo. */
template <int DT>
static inline void amx_acts_rows(const float* x, int64_t K, int64_t r0, int64_t r1, int8_t* q, float* d, float* xs, float* xo) {
  constexpr int G = QB<DT>::kGroup;
  const int64_t xb = act_q8_block(DT), ng = K / G, nxb = K / xb;
  for (int64_t r = r0; r < r1; r++) {
    int8_t* qr = q + r * K;
    xq8_quantize_row(DT, x + r * K, K, qr, d + r * nxb);
    for (int64_t g = 0; g < ng; g++) {
      const float dx = d[r * nxb + g * G / xb];
      xs[r * ng + g] = dx;
      if (QB<DT>::kOffset) {
        int32_t sum = 0;
        for (int i = 0; i < G; i++) sum += qr[g * G + i];
        xo[r * ng + g] = dx * (float)sum;
      }
    }
  }
}

/**
 * linear on a GGML weight with 8-bit activations and more than 4 rows, on AMX tiles: activations quantized once
 * (rows padded to 16 with zeros), then one task per 16 weight rows (pack, then every 16 activation rows).
 * kOutOfMemory when the buffers cannot be had.
 */
template <int DT>
static int amx_qgemm(const LinearParams& p, const Runner& rn) {
  constexpr int G = QB<DT>::kGroup;
  const int64_t K = p.in, N = p.out, M = p.rows, ng = K / G, nxb = K / act_q8_block(DT);
  const int64_t Mp = ceil_div(M, kAmxTile) * kAmxTile;
  auto al = [](int64_t n) { return (size_t)((n + 63) & ~(int64_t)63); };
  const size_t nq = al(Mp * K), nd = al(Mp * nxb * 4), ns = al(Mp * ng * 4);
  uint8_t* m = static_cast<uint8_t*>(rn.shared(rn.self, nq + nd + 2 * ns));
  if (!m) return kOutOfMemory;
  int8_t* q = reinterpret_cast<int8_t*>(m);
  float* d = reinterpret_cast<float*>(m + nq);
  float* xs = reinterpret_cast<float*>(m + nq + nd);
  float* xo = reinterpret_cast<float*>(m + nq + nd + ns);
  memset(q + M * K, 0, (size_t)((Mp - M) * K));
  memset(xs + M * ng, 0, (size_t)((Mp - M) * ng) * 4);
  memset(xo + M * ng, 0, (size_t)((Mp - M) * ng) * 4);
  auto quant = [&](int64_t t, int) { amx_acts_rows<DT>(p.x, K, t * kAmxTile, imin(M, (t + 1) * kAmxTile), q, d, xs, xo); };
  rn.parallel_for(ceil_div(M, kAmxTile), quant);
  const AmxActs acts{q, xs, xo};
  const size_t pkBytes = (size_t)K * 16, wsBytes = (size_t)ng * kAmxTile * 4;
  if (!rn.reserve(rn.self, 2048 + pkBytes + 2 * wsBytes)) return kOutOfMemory;
  const uint8_t* w = static_cast<const uint8_t*>(p.w.data);
  auto body = [&](int64_t t, int tid) {
    uint8_t* s = static_cast<uint8_t*>(rn.scratch(rn.self, tid));
    int32_t* cbuf = reinterpret_cast<int32_t*>(s);  // 64-byte aligned, as the scratch is
    int32_t* pk = reinterpret_cast<int32_t*>(s + 2048);
    float* ws = reinterpret_cast<float*>(s + 2048 + pkBytes);
    float* wo = reinterpret_cast<float*>(s + 2048 + pkBytes + wsBytes);
    amx_pack<DT>(w, N, K, t * kAmxTile, pk, ws, wo);
    amx_columns<DT>(p, acts, pk, ws, wo, Mp, t * kAmxTile, cbuf);
  };
  rn.parallel_for(ceil_div(N, kAmxTile), body);
  return kOk;
}

/** The amx table's linear: the GGML prefill GEMMs with 8-bit activations on the tiles, everything else as avx512. */
static int linear_amx(const LinearParams& p, const Runner& rn) {
  if (!p.xq || p.rows <= 4) return linear(p, rn);
  return with_ggml_dtype(
      p.w.dtype, [&](auto dt) { return amx_qgemm<decltype(dt)::value>(p, rn); }, [&] { return linear(p, rn); });
}

static KernelTable amxTable() {
  KernelTable t = kTable;
  t.isa = "amx";
  t.linear = linear_amx;
  return t;
}

static const KernelTable kAmxTable = amxTable();

#undef KVQ_AMX_FN
#endif  // KVQ_AMX
