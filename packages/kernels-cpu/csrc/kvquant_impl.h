// SPDX-License-Identifier: Apache-2.0
//
// CPU kernels of the KV-cache dtypes scaled when written (docs/spec/kv-dtypes.md): fp8/int8/int4_per_token_head,
// int4_g16/32/64, nvfp4, q4_0 and int4_g32_f16. `reshapeAndCache` computes each group's scale and codes exactly as
// @kvq/cache's `quantizeKvHead` (same bytes); `pagedAttention` decodes codes x scale (`fround(value * scale)`, the reference's
// dequantized values) in registers, 32 elements at a time, straight into the float32 dot products and P.V sums on
// the decode path, or into an L1 tile for the general path (prefill, causal edges, any head size).
//
// Included by kernels_impl.h inside namespace kvq::KVQ_NS, after the attention helpers (AttnScratch,
// softmax_update, attn_scores, attn_pv); the same rules hold: everything `static`, no STL, no allocation.
// Written against the vector layer only (vcvt_i8, vload_fp8, unpack_nib_pairs, vmul, vfma), so it compiles for
// every ISA tier.
#ifndef KVQ_KVQUANT_IMPL_H_
#define KVQ_KVQUANT_IMPL_H_

// ---- scalar codecs: @kvq/kernels' csrc/kv_quant.h (kv_group_amax, kv_int_code, kv_e2m1_code, kv_quantize_head;
// shared with the GPU kernels, bit-exact with @kvq/cache kv-quant.ts) --------------------------------------------

/** Twice the E2M1 value of each code (integers, so the int8 lanes convert exactly; halved after conversion). */
static const int8_t kE2m1Twice[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/** The two's complement value of each int4 nibble. */
static const int8_t kInt4Values[16] = {0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1};

/** Values per scale of a dtype known at compile time; 0 = the whole head (the *_per_token_head dtypes). */
template <int DT>
KVQ_I constexpr int kvq_group() {
  return DT == kKvInt4G16 || DT == kKvNvfp4 ? 16 : DT == kKvInt4G32 || is_kv_f16_scaled(DT) ? 32 : DT == kKvInt4G64 ? 64 : 0;
}

/**
 * Quantize one head vector x[0, D) into its codes and scales (docs/spec/kv-dtypes.md §2; @kvq/cache
 * quantizeKvHead): the shared kv_quantize_head, with the fp8 codes of fp8_per_token_head through the vector encoder
 * (the same bytes). `tensor` is nvfp4's per-tensor scale (unused otherwise).
 */
static void quantize_head_q(int dt, const KvQuantLayout& L, const float* x, int D, uint8_t* codes, uint8_t* sc, float tensor) {
  if (dt != kKvFp8PerTokenHead) {
    kv_quantize_head(dt, L, x, D, codes, sc, tensor);
    return;
  }
  const float amax = kv_group_amax(x, D);
  const float scale = amax != amax ? amax : amax / 448.0f;
  kv_store_f32le(sc, scale);
  if (!(scale > 0.0f)) memset(codes, 0, (size_t)D);
  else quantize_run<kE4M3FN, true>(x, codes, D, scale);
}

/** Write the tokens' K and / or V heads (`pools`, KvPools) into the pools of write-time-scaled dtype p.cache.dtype. */
static int reshape_and_cache_q(const CacheWriteParams& p, const Runner& rn, int pools) {
  const KvCacheRef& c = p.cache;
  KvQuantLayout L{};
  if (!kv_quant_layout(c.dtype, c.blockSize, c.numKvHeads, c.headSize, &L)) return kOk;  // the glue checked it
  const int64_t hd = (int64_t)c.numKvHeads * c.headSize;
  const float kt = c.dtype == kKvNvfp4 ? c.kScale[0] : 1.0f;
  const float vt = c.dtype == kKvNvfp4 ? c.vScale[0] : 1.0f;
  uint8_t* kp = static_cast<uint8_t*>(c.k);
  uint8_t* vp = static_cast<uint8_t*>(c.v);
  auto tok = [&](int64_t t, int) {
    const int64_t slot = p.slots[t];
    if (slot < 0) return;
    for (int h = 0; h < c.numKvHeads; h++) {
      int64_t co, so;
      kv_row_offsets(L, slot, c.blockSize, c.numKvHeads, h, &co, &so);
      const int64_t si = t * hd + (int64_t)h * c.headSize;
      if (pools & kPoolK) quantize_head_q(c.dtype, L, p.key + si, c.headSize, kp + co, kp + so, kt);
      if (pools & kPoolV) quantize_head_q(c.dtype, L, p.value + si, c.headSize, vp + co, vp + so, vt);
    }
  };
  if (p.numTokens * hd < kParallelMin / 4 || rn.threads == 1) {
    for (int64_t t = 0; t < p.numTokens; t++) tok(t, 0);
  } else {
    rn.parallel_for(p.numTokens, tok);
  }
  return kOk;
}

// ---- decoding -------------------------------------------------------------------------------------

/** The exact value of every E4M3FN code (nvfp4's block scales), filled on first use. */
static const float* kvq_e4m3_table() {
  struct Table {
    float v[256];
    Table() {
      for (int c = 0; c < 256; c++) v[c] = fp8_decode<kE4M3FN>((uint32_t)c);
    }
  };
  static const Table t;
  return t.v;
}

/**
 * The scale of group g of a row whose scales start at `sc` (nvfp4: fround(e4m3 x tensor), `e4m3` = kvq_e4m3_table();
 * q4_0 / int4_g32_f16: the f16 d, widened by the vector layer's f16_scalar).
 */
template <int DT>
KVQ_I float kvq_scale(const uint8_t* sc, int g, float tensor, const float* e4m3 = nullptr) {
  if constexpr (DT == kKvNvfp4) {
    return (e4m3 ? e4m3[sc[g]] : fp8_decode<kE4M3FN>(sc[g])) * tensor;
  } else if constexpr (is_kv_f16_scaled(DT)) {
    return f16_scalar(kv_f16le_bits(sc, g));  // F16C / FCVTL: one instruction
  } else {
    return kv_load_f32le(sc + 4 * g);
  }
}

/**
 * Elements [e0, e0 + 32) of a row (e0 a multiple of 32), dequantized exactly (`fround(value * scale)`) into
 * 32 / W vectors. `bsc` holds the scales of the block's groups: bsc[0] (and bsc[1], 16-value groups).
 * kRaw (the *_per_token_head dtypes only): the unscaled values; the caller applies the row's one scale to the sums.
 */
template <int DT, bool kRaw = false>
KVQ_I void dq32(const uint8_t* codes, const float* bsc, int e0, VF* out) {
  constexpr int NB = 32 / W;
  constexpr int kG = kvq_group<DT>();
  static_assert(!kRaw || kG == 0, "raw values only for one scale per row");
  if constexpr (DT == kKvFp8PerTokenHead) {
    const VF one = vset1(fp8_load_const<kE4M3FN>());
    const VF s = vset1(bsc[0]);
    for (int k = 0; k < NB; k++) {
      const VF v = vload_fp8<kE4M3FN>(codes + e0 + k * W, one);
      out[k] = kRaw ? v : vmul(v, s);
    }
  } else if constexpr (DT == kKvInt8PerTokenHead) {
    const VF s = vset1(bsc[0]);
    const int8_t* q = reinterpret_cast<const int8_t*>(codes) + e0;
    for (int k = 0; k < NB; k++) out[k] = kRaw ? vcvt_i8(q + k * W) : vmul(vcvt_i8(q + k * W), s);
  } else if constexpr (kRaw) {
    int8_t q[32];
    unpack_nib_pairs_lut(codes + e0 / 2, kInt4Values, q);
    for (int k = 0; k < NB; k++) out[k] = vcvt_i8(q + k * W);
  } else {
    // Nibbles through a 16-entry table (whole-vector stores, so the int8 loads below forward from them).
    int8_t q[32];
    unpack_nib_pairs_lut(codes + e0 / 2, DT == kKvNvfp4 ? kE2m1Twice : kInt4Values, q);
    for (int k = 0; k < NB; k++) {
      const VF s = vset1(bsc[kG == 16 ? (k * W) / 16 : 0]);
      VF v = vcvt_i8(q + k * W);
      if constexpr (DT == kKvNvfp4) v = vmul(v, vset1(0.5f));  // exact: halves small integers
      out[k] = vmul(v, s);
    }
  }
}

/** The group scales of one row into gs[0, groups) (nvfp4: through the E4M3 table `e4m3`). */
template <int DT>
KVQ_I void kvq_row_scales(const uint8_t* sc, int groups, float tensor, float* gs, const float* e4m3) {
  for (int g = 0; g < groups; g++) gs[g] = kvq_scale<DT>(sc, g, tensor, e4m3);
}

/**
 * The next tile's K or V rows, touched a row per key of the current tile inside the fused loops (see NextRows: a
 * burst of prefetches at the start of a tile overflows the miss buffers): the row's code lines and its scales' line.
 */
struct NextQ {
  const uint8_t* base;   // pool
  const int64_t* cidx;   // code byte offsets of the next tile's rows
  const int64_t* sidx;   // scale byte offsets
  int n;                 // rows in the next tile (0 = none)
  int codeBytes;         // code bytes per row

  KVQ_ALWAYS_INLINE void touch(int j) const {
    if (j >= n) return;
    const uint8_t* a = base + cidx[j];
    for (int b = 0; b < codeBytes; b += 64) vprefetch(a + b);
    vprefetch(a + codeBytes - 1);
    vprefetch(base + sidx[j]);
  }
  KVQ_ALWAYS_INLINE void rest(int from) const {
    for (int j = from; j < n; j++) touch(j);
  }
};

/** The scales of the groups of the 32-block at e0 within a row's scales gs (see dq32). */
template <int DT>
KVQ_I const float* kvq_block_scales(const float* gs, int e0) {
  constexpr int kG = kvq_group<DT>();
  return kG ? gs + e0 / kG : gs;
}

/** Element i of a row, dequantized with its group's scale s (the scalar form of dq32). */
template <int DT>
KVQ_I float dq1(const uint8_t* codes, float s, int64_t i) {
  if constexpr (DT == kKvFp8PerTokenHead) {
    return fp8_decode<kE4M3FN>(codes[i]) * s;
  } else if constexpr (DT == kKvInt8PerTokenHead) {
    return (float)(int8_t)codes[i] * s;
  } else {
    const uint32_t n = (i & 1) ? (uint32_t)codes[i >> 1] >> 4 : (uint32_t)codes[i >> 1] & 0xFu;
    if constexpr (DT == kKvNvfp4) return (float)kE2m1Twice[n] * 0.5f * s;
    return (float)(((int32_t)n ^ 8) - 8) * s;
  }
}

/** Dequantize a row of D elements into dst (exact values), zero padding to dp. */
template <int DT>
KVQ_I void dq_row(const uint8_t* codes, const uint8_t* sc, const KvQuantLayout& L, int64_t D, int64_t dp, float tensor,
                  float* dst) {
  constexpr int kG = kvq_group<DT>();
  if (D % 32 == 0) {
    float bsc[2] = {kvq_scale<DT>(sc, 0, tensor), 0.0f};
    for (int64_t e = 0; e < D; e += 32) {
      if (kG) {
        bsc[0] = kvq_scale<DT>(sc, (int)(e / kG), tensor);
        if (kG == 16) bsc[1] = kvq_scale<DT>(sc, (int)(e / kG) + 1, tensor);
      }
      VF v[32 / W];
      dq32<DT>(codes, bsc, (int)e, v);
      for (int k = 0; k < 32 / W; k++) vstore(dst + e + k * W, v[k]);
    }
  } else {
    const int G = L.groupSize;
    for (int g = 0; g < L.groupsPerHead; g++) {
      const float s = kvq_scale<DT>(sc, g, tensor);
      for (int64_t i = (int64_t)g * G; i < (int64_t)(g + 1) * G; i++) dst[i] = dq1<DT>(codes, s, i);
    }
  }
  for (int64_t e = D; e < dp; e++) dst[e] = 0.0f;
}

// ---- fused decode kernels (head size HS, a multiple of 32; R <= 4 query rows attending every key) ----------

/**
 * S[r, j] = dot(Q[r], dequant(K[j])) for r < R, j < nt; K rows decoded 32 elements at a time in registers, KB keys
 * per step (their R x KB sums reduced four at a time). The *_per_token_head dtypes sum q x value and apply the row's
 * scale to the sum; the grouped ones multiply each value by its group's scale first. Entries past nt (up to a
 * multiple of KB, within kTile) are computed from key j and masked by softmax_update.
 */
template <int DT, int HS, int R>
static void scores_q(const uint8_t* kc, const int64_t* cidx, const int64_t* sidx, int nt, int groups, float tensor,
                     const float* e4m3, const float* Q, int64_t dp, float* S, const NextQ& next) {
  constexpr int NB = 32 / W;
  constexpr bool kHead = kvq_group<DT>() == 0;
  constexpr int kGroups = kHead ? 1 : HS / kvq_group<DT>();
  constexpr int KB = (W >= 16 || R <= 2) ? 4 : 2;
  (void)groups;
  for (int j = 0; j < nt; j += KB) {
    const uint8_t* rows[KB];
    float gs[KB][kGroups];
    for (int b = 0; b < KB; b++) {
      next.touch(j + b);
      const int jb = j + b < nt ? j + b : j;
      rows[b] = kc + cidx[jb];
      kvq_row_scales<DT>(kc + sidx[jb], kGroups, tensor, gs[b], e4m3);
    }
    VF acc[R][KB];
    for (int r = 0; r < R; r++)
      for (int b = 0; b < KB; b++) acc[r][b] = vzero();
    for (int e0 = 0; e0 < HS; e0 += 32) {
      VF kv[KB][NB];
      for (int b = 0; b < KB; b++) dq32<DT, kHead>(rows[b], kvq_block_scales<DT>(gs[b], e0), e0, kv[b]);
      for (int k = 0; k < NB; k++) {
        for (int r = 0; r < R; r++) {
          const VF q = vload(Q + r * dp + e0 + k * W);
          for (int b = 0; b < KB; b++) acc[r][b] = vfma(q, kv[b][k], acc[r][b]);
        }
      }
    }
    for (int r = 0; r < R; r++) {
      float* out = S + r * kTile + j;
      if constexpr (KB == 4) {
        vhsum4(acc[r][0], acc[r][1 % KB], acc[r][2 % KB], acc[r][3 % KB], out);
      } else {
        for (int b = 0; b < KB; b++) out[b] = vhsum(acc[r][b]);
      }
      if constexpr (kHead) {
        for (int b = 0; b < KB; b++) out[b] *= gs[b][0];
      }
    }
  }
  next.rest((int)round_up(nt, KB));
}

/**
 * acc[r] += sum_{j < nt} P[r, j] * dequant(V[j]) for r < R; accumulators in registers, a few 32-blocks per pass.
 * The *_per_token_head dtypes fold the row's scale into P[r, j]; the grouped ones scale each value.
 */
template <int DT, int HS, int R>
static void pv_q(const uint8_t* vc, const int64_t* cidx, const int64_t* sidx, int nt, int groups, float tensor,
                 const float* e4m3, const float* P, float* acc, int64_t dp, const NextQ& next) {
  constexpr int NB = 32 / W;
  constexpr int kRegs = W >= 16 ? 16 : 8;
  constexpr int BPP0 = kRegs / (R * NB) < 1 ? 1 : kRegs / (R * NB);
  constexpr int BPP = BPP0 > HS / 32 ? HS / 32 : BPP0;  // 32-element blocks per pass
  static_assert((HS / 32) % BPP == 0, "blocks must split evenly into passes");
  constexpr bool kHead = kvq_group<DT>() == 0;
  constexpr int kGroups = kHead ? 1 : HS / kvq_group<DT>();
  (void)groups;
  for (int pb = 0; pb < HS / 32; pb += BPP) {
    VF a[R][BPP * NB];
    for (int r = 0; r < R; r++)
      for (int k = 0; k < BPP * NB; k++) a[r][k] = vload(acc + r * dp + pb * 32 + k * W);
    for (int j = 0; j < nt; j++) {
      if (pb == 0) next.touch(j);
      float gs[kGroups];
      kvq_row_scales<DT>(vc + sidx[j], kGroups, tensor, gs, e4m3);
      VF pj[R];
      for (int r = 0; r < R; r++) pj[r] = vset1(kHead ? P[r * kTile + j] * gs[0] : P[r * kTile + j]);
      for (int b = 0; b < BPP; b++) {
        VF v[NB];
        dq32<DT, kHead>(vc + cidx[j], kvq_block_scales<DT>(gs, (pb + b) * 32), (pb + b) * 32, v);
        for (int k = 0; k < NB; k++)
          for (int r = 0; r < R; r++) a[r][b * NB + k] = vfma(pj[r], v[k], a[r][b * NB + k]);
      }
    }
    for (int r = 0; r < R; r++)
      for (int k = 0; k < BPP * NB; k++) vstore(acc + r * dp + pb * 32 + k * W, a[r][k]);
  }
  next.rest(nt);
}

template <int DT, int HS, int RR>
static void tile_q(AttnScratch& s, const uint8_t* kc, const uint8_t* vc, const int64_t* cidx, const int64_t* sidx, int R,
                   int32_t j0, int nt, int groups, float kt, float vt, const float* e4m3, int64_t dp, const NextQ& nk,
                   const NextQ& nv) {
  scores_q<DT, HS, RR>(kc, cidx, sidx, nt, groups, kt, e4m3, s.q, dp, s.s, nk);
  softmax_update(s, 0, R, j0, nt, dp);
  pv_q<DT, HS, RR>(vc, cidx, sidx, nt, groups, vt, e4m3, s.s, s.acc, dp, nv);
}

/**
 * One attention task (see attn_task) over a write-time-scaled cache: query rows of tokens [t0, t1) for one kv head,
 * keys [k0, k1), online softmax over tiles of kTile keys. Uniform tiles of <= 4 rows with HS > 0 take the fused
 * kernels; the others dequantize the K and V tiles into L1 scratch and use the float32 tile kernels.
 */
template <int DT, int HS>
static void attn_task_q(const AttnCtx& ctx, const AttnTask& tk, void* scratchBase) {
  const AttentionParams& p = *ctx.p;
  const KvCacheRef& c = p.cache;
  const int64_t D = c.headSize, dp = ctx.dp;
  const int G = ctx.group;
  KvQuantLayout L{};
  kv_quant_layout(DT, c.blockSize, c.numKvHeads, c.headSize, &L);
  AttnScratch s = attn_scratch(scratchBase, ctx.rmax, dp);
  const int R = (tk.t1 - tk.t0) * G;
  const int h = tk.kvh;
  const float kt = DT == kKvNvfp4 ? c.kScale[0] : 1.0f;
  const float vt = DT == kKvNvfp4 ? c.vScale[0] : 1.0f;
  const bool fusedOk = HS > 0 && R <= 4;
  const float* e4m3 = DT == kKvNvfp4 ? kvq_e4m3_table() : nullptr;

  int32_t kb, ke;
  attn_rows_plain(ctx, tk, s, &kb, &ke);
  // The fused kernels run 1, 2 or 4 rows; a 3-row task gets a zero 4th query row (its results are ignored).
  if (fusedOk && R == 3) {
    for (int64_t d = 0; d < dp; d++) s.q[3 * dp + d] = 0.0f;
    for (int64_t d = 0; d < dp; d++) s.acc[3 * dp + d] = 0.0f;
  }

  const uint8_t* kc = static_cast<const uint8_t*>(c.k);
  const uint8_t* vc = static_cast<const uint8_t*>(c.v);
  const int32_t* bt = p.blockTables + (int64_t)tk.seq * p.maxBlocksPerSeq;
  const int bs = c.blockSize;
  // Byte offsets of the codes and of the scales of the rows of keys [j0, j0 + n).
  auto rowOffsets = [&](int32_t j0, int n, int64_t* cidx, int64_t* sidx) {
    int64_t blkPos = j0 / bs;
    int off = j0 % bs;
    int64_t base = (int64_t)bt[blkPos] * L.blockBytes;
    for (int j = 0; j < n; j++) {
      const int64_t row = (int64_t)off * c.numKvHeads + h;
      cidx[j] = base + row * L.codeBytesPerHead;
      sidx[j] = base + L.scalesOffset + row * L.groupsPerHead * L.scaleBytes;
      if (++off == bs && j + 1 < n) {
        off = 0;
        base = (int64_t)bt[++blkPos] * L.blockBytes;
      }
    }
  };
  // Touch the code and scale lines of a tile's rows so they are in flight while the previous tile computes.
  auto prefetchRows = [&](const int64_t* cidx, const int64_t* sidx, int n) {
    for (int j = 0; j < n; j++) {
      for (int64_t b = 0; b < L.codeBytesPerHead; b += 64) {
        vprefetch(kc + cidx[j] + b);
        vprefetch(vc + cidx[j] + b);
      }
      vprefetch(kc + cidx[j] + L.codeBytesPerHead - 1);
      vprefetch(vc + cidx[j] + L.codeBytesPerHead - 1);
      vprefetch(kc + sidx[j]);
      vprefetch(vc + sidx[j]);
    }
  };
  int64_t sA[kTile], sB[kTile];
  int64_t* cidx = s.idx;
  int64_t* cnext = s.idx + kTile;
  int64_t* sidx = sA;
  int64_t* snext = sB;
  if (kb < ke) rowOffsets(kb, (int)imin(kTile, ke - kb), cidx, sidx);
  for (int32_t j0 = kb; j0 < ke; j0 += kTile) {
    const int nt = (int)imin(kTile, ke - j0);
    const int nn = j0 + kTile < ke ? (int)imin(kTile, ke - j0 - kTile) : 0;
    if (nn > 0) rowOffsets(j0 + kTile, nn, cnext, snext);
    int ra = 0, rb = R;
    while (ra < R && !(s.lo[ra] < j0 + nt && s.hi[ra] > j0)) ra++;
    while (rb > ra && !(s.lo[rb - 1] < j0 + nt && s.hi[rb - 1] > j0)) rb--;
    bool uniform = ra < rb;
    for (int r = ra; r < rb; r++) uniform = uniform && s.lo[r] <= j0 && s.hi[r] >= j0 + nt;

    if (ra < rb && fusedOk && uniform && ra == 0 && rb == R) {
      // The fused kernels touch the next tile's rows as they go; the L1-tile path prefetches them in one burst.
      const NextQ nk{kc, cnext, snext, nn, L.codeBytesPerHead};
      const NextQ nv{vc, cnext, snext, nn, L.codeBytesPerHead};
      if constexpr (HS > 0 && HS % 32 == 0) {
        switch (R) {
          case 1: tile_q<DT, HS, 1>(s, kc, vc, cidx, sidx, R, j0, nt, L.groupsPerHead, kt, vt, e4m3, dp, nk, nv); break;
          case 2: tile_q<DT, HS, 2>(s, kc, vc, cidx, sidx, R, j0, nt, L.groupsPerHead, kt, vt, e4m3, dp, nk, nv); break;
          default: tile_q<DT, HS, 4>(s, kc, vc, cidx, sidx, R, j0, nt, L.groupsPerHead, kt, vt, e4m3, dp, nk, nv); break;
        }
      }
    } else if (ra < rb) {
      prefetchRows(cnext, snext, nn);
      for (int j = 0; j < nt; j++) dq_row<DT>(kc + cidx[j], kc + sidx[j], L, D, dp, kt, s.k + j * dp);
      attn_tile_scores(s, ra, rb, j0, nt, dp);
      for (int j = 0; j < nt; j++) dq_row<DT>(vc + cidx[j], vc + sidx[j], L, D, dp, vt, s.v + j * dp);
      attn_tile_pv(s, ra, rb, j0, nt, dp, uniform);
    }
    int64_t* t = cidx;
    cidx = cnext;
    cnext = t;
    t = sidx;
    sidx = snext;
    snext = t;
  }

  attn_rows_store(ctx, tk, s);
}

/** The attention task of any KV dtype: attn_task_q for the write-time-scaled ones, attn_task for the others. */
template <int DT, int HS>
static void attn_task_any(const AttnCtx& ctx, const AttnTask& tk, void* scratchBase) {
  if constexpr (is_kv_quant_dtype(DT)) {
    attn_task_q<DT, HS>(ctx, tk, scratchBase);
  } else {
    attn_task<DT, HS>(ctx, tk, scratchBase);
  }
}

#endif  // KVQ_KVQUANT_IMPL_H_
