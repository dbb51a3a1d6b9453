// SPDX-License-Identifier: Apache-2.0
//
// pagedAttention over a KV cache whose V pool has another dtype than its K pool (KvCacheRef.vdtype != dtype, e.g.
// K int8_per_token_head with V int4_g32_f16, or K bf16 with V e4m3fn): each tile's K rows are dequantized into the
// L1 tile with K's row decoder and its V rows with V's (the very decoders of the uniform paths: convert_row with
// dequant_mul for the dense and FP8 dtypes, dq_row for the write-time-scaled ones), then the float32 attn_scores /
// softmax_update / attn_pv of every other path. The decoders are chosen at run time (a function pointer per pool),
// so the instantiations stay one per dtype, not one per (K, V) pair. Uniform caches never come here.
//
// Included by kernels_impl.h inside namespace kvq::KVQ_NS, after kvquant_impl.h and paged_attention_run; the same
// rules hold: everything `static`, no STL, no allocation. Written against the vector layer only.
#ifndef KVQ_KVMIXED_IMPL_H_
#define KVQ_KVMIXED_IMPL_H_

struct KvPoolRows;
/** Dequantize one row (one token, one kv head) of a pool: codes `row`, scales `sc`; D values, zero padded to dp. */
typedef void (*KvRowDecoder)(const KvPoolRows& pr, const uint8_t* row, const uint8_t* sc, int64_t D, int64_t dp, float* dst);

/** Rows of a tile of one pool: code and scale byte offsets of nt keys (co, so), and of the next tile's nn (for prefetch). */
struct KvTileRows {
  const int64_t* co;
  const int64_t* so;
  int nt;
  const int64_t* nco;
  const int64_t* nso;
  int nn;
};
/** The fused decode stages of one pool (R query rows attending every key of a tile, compile-time head size). */
typedef void (*KvScoresFn)(const KvPoolRows& pr, const KvTileRows& t, const float* Q, int64_t dp, float* S);
typedef void (*KvPvFn)(const KvPoolRows& pr, const KvTileRows& t, const float* P, float* acc, int64_t dp);

/** One pool of a mixed cache, for one kv head: its byte layout, its scales, and its row decoder. */
struct KvPoolRows {
  const uint8_t* base;    // the pool
  int64_t blockBytes;     // bytes of one cache block
  int64_t rowBytes;       // code bytes of one (token, kv head) row
  int64_t scalesOffset;   // write-time-scaled dtypes: where a block's scales start; else 0
  int64_t scaleRowBytes;  // write-time-scaled dtypes: scale bytes of one row; else 0
  KvQuantLayout L;        // write-time-scaled dtypes: the block layout
  DequantMul mul;         // FP8: the multipliers giving fround(decode(q) * scale) for this head; else {1, 0}
  float tensor;           // nvfp4: the tensor scale; else 1
  KvRowDecoder decode;
  // The fused decode stages for 1, 2 and 4 query rows (head sizes 64 and 128), or null where this pool cannot take
  // them (another head size; an FP8 scale needing two multiplies for fround(decode * scale)).
  KvScoresFn scores[3];
  KvPvFn pv[3];
};

/** A dense pool's tile rows as element offsets (its kernels index by element), this tile's and the next one's. */
template <class T>
struct KvDenseRows {
  int64_t idx[kTile];
  int64_t nidx[kTile];
  explicit KvDenseRows(const KvTileRows& t) {
    for (int j = 0; j < t.nt; j++) idx[j] = t.co[j] / (int64_t)sizeof(T);
    for (int j = 0; j < t.nn; j++) nidx[j] = t.nco[j] / (int64_t)sizeof(T);
  }
};

/** nvfp4's E4M3 scale table, null for the other write-time-scaled dtypes (as attn_task_q passes it). */
template <int DT>
KVQ_I const float* kv_fused_e4m3() {
  return DT == kKvNvfp4 ? kvq_e4m3_table() : nullptr;
}

/**
 * The fused stages of a pool of dtype DT: the uniform paths' register-resident kernels (scores_q / pv_q for the
 * write-time-scaled dtypes, scores_fused / pv_fused with exact lanes for the dense and FP8 ones), called with this
 * pool's row offsets, so a mixed cache scores with K's kernel and sums P.V with V's.
 */
template <int DT, int HS, int R>
static void kv_fused_scores(const KvPoolRows& pr, const KvTileRows& t, const float* Q, int64_t dp, float* S) {
  if constexpr (is_kv_quant_dtype(DT)) {
    const NextQ next{pr.base, t.nco, t.nso, t.nn, (int)pr.rowBytes};
    scores_q<DT, HS, R>(pr.base, t.co, t.so, t.nt, pr.L.groupsPerHead, pr.tensor, kv_fused_e4m3<DT>(), Q, dp, S, next);
  } else {
    typedef typename Load<DT>::T T;
    const KvDenseRows<T> rows(t);
    const NextRows next{reinterpret_cast<const char*>(pr.base), rows.nidx, t.nn, (int64_t)sizeof(T)};
    scores_fused<DT, HS, R, false>(reinterpret_cast<const T*>(pr.base), rows.idx, t.nt, Q, dp, S, vset1(pr.mul.mul1), next);
  }
}

template <int DT, int HS, int R>
static void kv_fused_pv(const KvPoolRows& pr, const KvTileRows& t, const float* P, float* acc, int64_t dp) {
  if constexpr (is_kv_quant_dtype(DT)) {
    const NextQ next{pr.base, t.nco, t.nso, t.nn, (int)pr.rowBytes};
    pv_q<DT, HS, R>(pr.base, t.co, t.so, t.nt, pr.L.groupsPerHead, pr.tensor, kv_fused_e4m3<DT>(), P, acc, dp, next);
  } else {
    typedef typename Load<DT>::T T;
    const KvDenseRows<T> rows(t);
    const NextRows next{reinterpret_cast<const char*>(pr.base), rows.nidx, t.nn, (int64_t)sizeof(T)};
    pv_fused<DT, HS, R, false>(reinterpret_cast<const T*>(pr.base), rows.idx, t.nt, P, acc, dp, vset1(pr.mul.mul1), next);
  }
}

/** Fill pr's fused stages for dtype DT at head size hs (64 or 128, when the vector width divides it; else none). */
template <int DT>
static void kv_fused_stages(KvPoolRows& pr, int hs) {
  if (hs == 64 && 64 % W == 0) {
    pr.scores[0] = kv_fused_scores<DT, 64, 1>;
    pr.scores[1] = kv_fused_scores<DT, 64, 2>;
    pr.scores[2] = kv_fused_scores<DT, 64, 4>;
    pr.pv[0] = kv_fused_pv<DT, 64, 1>;
    pr.pv[1] = kv_fused_pv<DT, 64, 2>;
    pr.pv[2] = kv_fused_pv<DT, 64, 4>;
  } else if (hs == 128 && 128 % W == 0) {
    pr.scores[0] = kv_fused_scores<DT, 128, 1>;
    pr.scores[1] = kv_fused_scores<DT, 128, 2>;
    pr.scores[2] = kv_fused_scores<DT, 128, 4>;
    pr.pv[0] = kv_fused_pv<DT, 128, 1>;
    pr.pv[1] = kv_fused_pv<DT, 128, 2>;
    pr.pv[2] = kv_fused_pv<DT, 128, 4>;
  }
}

/** A dense or FP8 row: convert_row's exact lanes (NaN codes decode to NaN), dequant_mul folded in. */
template <int DT>
static void kv_decode_dense(const KvPoolRows& pr, const uint8_t* row, const uint8_t*, int64_t D, int64_t, float* dst) {
  convert_row<DT, false>(reinterpret_cast<const typename Load<DT>::T*>(row), D, dst, pr.mul);
}

/** A row of a write-time-scaled dtype: dq_row (codes x their group's scale, exactly). */
template <int DT>
static void kv_decode_q(const KvPoolRows& pr, const uint8_t* row, const uint8_t* sc, int64_t D, int64_t dp, float* dst) {
  dq_row<DT>(row, sc, pr.L, D, dp, pr.tensor, dst);
}

/** Pool `pool` of dtype `dt` (scales `scale`, as readCache gave them) of cache `c`, for kv head h. */
static KvPoolRows kv_pool_rows(const KvCacheRef& c, int dt, const void* pool, const float* scale, int h) {
  KvPoolRows r;
  memset(&r, 0, sizeof(r));
  r.base = static_cast<const uint8_t*>(pool);
  r.mul = DequantMul{1.0f, 0.0f};
  r.tensor = 1.0f;
  if (is_kv_quant_dtype(dt)) {
    kv_quant_layout(dt, c.blockSize, c.numKvHeads, c.headSize, &r.L);  // the glue checked that it fits
    r.blockBytes = r.L.blockBytes;
    r.rowBytes = r.L.codeBytesPerHead;
    r.scalesOffset = r.L.scalesOffset;
    r.scaleRowBytes = (int64_t)r.L.groupsPerHead * r.L.scaleBytes;
    if (dt == kKvNvfp4) r.tensor = scale[0];
  } else {
    const int64_t elemBytes = dt == kF32 ? 4 : dt <= kF16 ? 2 : 1;
    r.rowBytes = (int64_t)c.headSize * elemBytes;
    r.blockBytes = (int64_t)c.blockSize * c.numKvHeads * r.rowBytes;
  }
  const float s = dt >= kFp8E4M3FN && dt <= kFp8E5M2FNUZ ? scale[c.scaleLen == 1 ? 0 : h] : 1.0f;
  const int hs = c.headSize;
  switch (dt) {
    case kBF16: r.decode = kv_decode_dense<kBF16>; kv_fused_stages<kBF16>(r, hs); break;
    case kF16: r.decode = kv_decode_dense<kF16>; kv_fused_stages<kF16>(r, hs); break;
    case kFp8E4M3FN: r.decode = kv_decode_dense<kFp8E4M3FN>; r.mul = dequant_mul<kFp8E4M3FN>(s); kv_fused_stages<kFp8E4M3FN>(r, hs); break;
    case kFp8E5M2: r.decode = kv_decode_dense<kFp8E5M2>; r.mul = dequant_mul<kFp8E5M2>(s); kv_fused_stages<kFp8E5M2>(r, hs); break;
    case kFp8E4M3FNUZ: r.decode = kv_decode_dense<kFp8E4M3FNUZ>; r.mul = dequant_mul<kFp8E4M3FNUZ>(s); kv_fused_stages<kFp8E4M3FNUZ>(r, hs); break;
    case kFp8E5M2FNUZ: r.decode = kv_decode_dense<kFp8E5M2FNUZ>; r.mul = dequant_mul<kFp8E5M2FNUZ>(s); kv_fused_stages<kFp8E5M2FNUZ>(r, hs); break;
    case kKvFp8PerTokenHead: r.decode = kv_decode_q<kKvFp8PerTokenHead>; kv_fused_stages<kKvFp8PerTokenHead>(r, hs); break;
    case kKvInt8PerTokenHead: r.decode = kv_decode_q<kKvInt8PerTokenHead>; kv_fused_stages<kKvInt8PerTokenHead>(r, hs); break;
    case kKvInt4PerTokenHead: r.decode = kv_decode_q<kKvInt4PerTokenHead>; kv_fused_stages<kKvInt4PerTokenHead>(r, hs); break;
    case kKvInt4G16: r.decode = kv_decode_q<kKvInt4G16>; kv_fused_stages<kKvInt4G16>(r, hs); break;
    case kKvInt4G32: r.decode = kv_decode_q<kKvInt4G32>; kv_fused_stages<kKvInt4G32>(r, hs); break;
    case kKvInt4G64: r.decode = kv_decode_q<kKvInt4G64>; kv_fused_stages<kKvInt4G64>(r, hs); break;
    case kKvNvfp4: r.decode = kv_decode_q<kKvNvfp4>; kv_fused_stages<kKvNvfp4>(r, hs); break;
    case kKvQ4_0:
    case kKvInt4G32F16: r.decode = kv_decode_q<kKvQ4_0>; kv_fused_stages<kKvQ4_0>(r, hs); break;  // the same storage and decode
    default: r.decode = kv_decode_dense<kF32>; kv_fused_stages<kF32>(r, hs); break;
  }
  // One multiply must give fround(decode * scale) for the fused dense lanes (as the uniform path requires).
  if (r.mul.mul2 != 0.0f) {
    for (int i = 0; i < 3; i++) {
      r.scores[i] = nullptr;
      r.pv[i] = nullptr;
    }
  }
  return r;
}

/** Byte offsets of the codes (co) and scales (so) of the rows of keys [j0, j0 + n) of pool pr, kv head h. */
static void kv_pool_offsets(const KvPoolRows& pr, const int32_t* bt, int bs, int numKvHeads, int h, int32_t j0, int n,
                            int64_t* co, int64_t* so) {
  int64_t blkPos = j0 / bs;
  int off = j0 % bs;
  int64_t base = (int64_t)bt[blkPos] * pr.blockBytes;
  for (int j = 0; j < n; j++) {
    const int64_t row = (int64_t)off * numKvHeads + h;
    co[j] = base + row * pr.rowBytes;
    so[j] = base + pr.scalesOffset + row * pr.scaleRowBytes;
    if (++off == bs && j + 1 < n) {
      off = 0;
      base = (int64_t)bt[++blkPos] * pr.blockBytes;
    }
  }
}

/** Touch the code lines (and the scales' line) of n rows of pool pr, so they are in flight while a tile computes. */
static void kv_pool_prefetch(const KvPoolRows& pr, const int64_t* co, const int64_t* so, int n) {
  for (int j = 0; j < n; j++) {
    const uint8_t* a = pr.base + co[j];
    for (int64_t b = 0; b < pr.rowBytes; b += 64) vprefetch(a + b);
    vprefetch(a + pr.rowBytes - 1);
    if (pr.scaleRowBytes) vprefetch(pr.base + so[j]);
  }
}

/**
 * One attention task (see attn_task) over a mixed cache: query rows of tokens [t0, t1) for one kv head, keys
 * [k0, k1), online softmax over tiles of kTile keys, each tile's K and V rows dequantized into L1 by their own
 * pool's decoder. Sliding windows, causal edges, GQA, splits and lse as in the uniform paths.
 */
static void attn_task_mixed(const AttnCtx& ctx, const AttnTask& tk, void* scratchBase) {
  const AttentionParams& p = *ctx.p;
  const KvCacheRef& c = p.cache;
  const int64_t D = c.headSize, dp = ctx.dp;
  const int G = ctx.group;
  AttnScratch s = attn_scratch(scratchBase, ctx.rmax, dp);
  const int R = (tk.t1 - tk.t0) * G;
  const int h = tk.kvh;

  // Query rows, their key ranges and score multipliers.
  int32_t kb, ke;
  attn_rows_plain(ctx, tk, s, &kb, &ke);

  const KvPoolRows kp = kv_pool_rows(c, c.dtype, c.k, c.kScale, h);
  const KvPoolRows vp = kv_pool_rows(c, c.vdtype, c.v, c.vScale, h);
  // Decode tiles (<= 4 rows attending every key): K's fused scores kernel, V's fused P.V kernel, when both pools have
  // them; the 1-, 2- and 4-row kernels run, a 3-row task with a zero 4th query row (its results are ignored).
  const int fi = R == 1 ? 0 : R == 2 ? 1 : 2;
  const bool fusedOk = R <= 4 && kp.scores[fi] != nullptr && vp.pv[fi] != nullptr;
  if (fusedOk && R == 3) {
    for (int64_t d = 0; d < dp; d++) s.q[3 * dp + d] = 0.0f;
    for (int64_t d = 0; d < dp; d++) s.acc[3 * dp + d] = 0.0f;
  }
  const int32_t* bt = p.blockTables + (int64_t)tk.seq * p.maxBlocksPerSeq;
  const int bs = c.blockSize;
  // Code and scale offsets of each pool's rows: this tile's [cur], the next tile's [cur ^ 1].
  int64_t kco[2][kTile], kso[2][kTile], vco[2][kTile], vso[2][kTile];
  int cur = 0;
  if (kb < ke) {
    const int n = (int)imin(kTile, ke - kb);
    kv_pool_offsets(kp, bt, bs, c.numKvHeads, h, kb, n, kco[0], kso[0]);
    kv_pool_offsets(vp, bt, bs, c.numKvHeads, h, kb, n, vco[0], vso[0]);
    kv_pool_prefetch(kp, kco[0], kso[0], n);
    kv_pool_prefetch(vp, vco[0], vso[0], n);
  }
  for (int32_t j0 = kb; j0 < ke; j0 += kTile) {
    const int nt = (int)imin(kTile, ke - j0);
    const int nn = j0 + kTile < ke ? (int)imin(kTile, ke - j0 - kTile) : 0;
    const int nx = cur ^ 1;
    if (nn > 0) {
      kv_pool_offsets(kp, bt, bs, c.numKvHeads, h, j0 + kTile, nn, kco[nx], kso[nx]);
      kv_pool_offsets(vp, bt, bs, c.numKvHeads, h, j0 + kTile, nn, vco[nx], vso[nx]);
    }
    // Active rows: key ranges are monotone in r, so they form one contiguous run.
    int ra = 0, rb = R;
    while (ra < R && !(s.lo[ra] < j0 + nt && s.hi[ra] > j0)) ra++;
    while (rb > ra && !(s.lo[rb - 1] < j0 + nt && s.hi[rb - 1] > j0)) rb--;
    bool uniform = ra < rb;
    for (int r = ra; r < rb; r++) uniform = uniform && s.lo[r] <= j0 && s.hi[r] >= j0 + nt;
    if (ra < rb && fusedOk && uniform && ra == 0 && rb == R) {
      // The kernels touch the next tile's rows as they go.
      const KvTileRows kt{kco[cur], kso[cur], nt, kco[nx], kso[nx], nn};
      const KvTileRows vt{vco[cur], vso[cur], nt, vco[nx], vso[nx], nn};
      kp.scores[fi](kp, kt, s.q, dp, s.s);
      softmax_update(s, 0, R, j0, nt, dp);
      vp.pv[fi](vp, vt, s.s, s.acc, dp);
    } else if (ra < rb) {
      kv_pool_prefetch(kp, kco[nx], kso[nx], nn);
      kv_pool_prefetch(vp, vco[nx], vso[nx], nn);
      // The K tile (zero rows up to a multiple of 4 keys), scores, softmax.
      for (int j = 0; j < nt; j++) kp.decode(kp, kp.base + kco[cur][j], kp.base + kso[cur][j], D, dp, s.k + j * dp);
      attn_tile_scores(s, ra, rb, j0, nt, dp);
      // The V tile, P.V.
      for (int j = 0; j < nt; j++) vp.decode(vp, vp.base + vco[cur][j], vp.base + vso[cur][j], D, dp, s.v + j * dp);
      attn_tile_pv(s, ra, rb, j0, nt, dp, uniform);
    }
    cur = nx;
  }

  attn_rows_store(ctx, tk, s);
}

/** pagedAttention over a mixed cache (the FP8 query is refused by the glue: it needs one FP8 dtype for K and V). */
static int paged_attention_mixed(const AttentionParams& p, const Runner& rn) {
  auto task = [](const AttnCtx& ctx, const AttnTask& tk, void* scratch) { attn_task_mixed(ctx, tk, scratch); };
  return paged_attention_run(p, rn, task);
}

#endif  // KVQ_KVMIXED_IMPL_H_
