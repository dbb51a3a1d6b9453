// SPDX-License-Identifier: Apache-2.0
//
// The KV-cache dtypes scaled when written (docs/spec/kv-dtypes.md: fp8/int8/int4_per_token_head, int4_g16/32/64,
// nvfp4, q4_0, int4_g32_f16) on the GPU: reshapeAndCache computes each group's scale and codes exactly as @kvq/cache's
// `quantizeKvHead` (the same bytes as the reference and the CPU kernels), pagedAttention decodes
// `fround(value * scale)` (the reference's dequantized values) inside the attention loop.
//
// Correctness first: one thread quantizes one head row (a few hundred values); attention runs one block per
// (query token, head) with an online softmax over tiles of keys (one key per thread for the scores, one output
// dimension per thread for P.V). It is not the tuned decode kernel of attention.cu: what it proves is the layouts,
// scales and numerics on the device (simulator, both warp widths); a fast path is the next step.
//
// Caches whose V pool has another dtype than the K pool (CacheRef.vdtype != dtype, any pair of dense, FP8 and
// write-time-scaled dtypes) take the same two kernels' shape with a run-time dtype per pool (the end of this file):
// each pool is written by its own dtype's rule (dense / FP8 exactly as ops.cu's writer, write-time-scaled with
// kv_quantize_head) and decoded by its own dtype's element decoder inside attention. One instantiation per kernel,
// not one per (K, V) pair; uniform caches never come here.
#include "common.cuh"
#include "kv_quant.h"

namespace kvq {
namespace gpu {

static const int kQThreads = 128;
/** Output dimensions a thread accumulates: head sizes up to kQThreads * kMaxDimsPerThread. */
static const int kMaxDimsPerThread = 8;

// The codecs (scales, codes, row offsets) are @kvq/kernels' csrc/kv_quant.h, shared with the CPU kernels.

/** Element e of a row: `fround(value * scale)`, the reference's dequantized value. */
template <int DT>
KVQ_DI float q_elem(const KvQuantLayout& L, const uint8_t* codes, const uint8_t* sc, int e, float tensor) {
  if constexpr (DT == kKvFp8PerTokenHead) {
    return fp8_decode<kE4M3FN>(codes[e]) * kv_load_f32le(sc);
  } else if constexpr (DT == kKvInt8PerTokenHead) {
    return (float)(int8_t)codes[e] * kv_load_f32le(sc);
  } else {
    const uint32_t nib = (codes[e / 2] >> (4 * (e & 1))) & 0xFu;
    const int g = e / L.groupSize;
    if constexpr (DT == kKvNvfp4) return ((float)kv_e2m1_twice(nib) * 0.5f) * (fp8_decode<kE4M3FN>(sc[g]) * tensor);
    else if constexpr (DT == kKvQ4_0 || DT == kKvInt4G32F16) return (float)kv_int4_value(nib) * kv_load_f16le(sc, g);
    else return (float)kv_int4_value(nib) * kv_load_f32le(sc + 4 * g);
  }
}

// ---- reshapeAndCache ---------------------------------------------------------------------------------------------

/** One thread per (token, kv head, K or V): quantize the head row into the pool. */
template <int DT>
__global__ void q_cache_write_kernel(const float* key, const float* value, const int32_t* slots, int64_t numTokens, int numKvHeads,
                                     int headSize, int blockSize, KvQuantLayout L, float kTensor, float vTensor, uint8_t* kPool,
                                     uint8_t* vPool) {
  const int64_t n = numTokens * numKvHeads * 2;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const bool isV = (i & 1) != 0;
    const int64_t th = i >> 1;
    const int64_t t = th / numKvHeads;
    const int h = (int)(th % numKvHeads);
    const int64_t slot = slots[t];
    if (slot < 0) continue;
    int64_t co, so;
    kv_row_offsets(L, slot, blockSize, numKvHeads, h, &co, &so);
    const float* x = (isV ? value : key) + th * headSize;
    uint8_t* pool = isV ? vPool : kPool;
    kv_quantize_head(DT, L, x, headSize, pool + co, pool + so, isV ? vTensor : kTensor);
  }
}

/**
 * The switch cases of the write-time-scaled KV dtype codes, each returning f(std::integral_constant<int, DT>), the
 * last one as the default: one list for the host dispatcher (with_kv_quant) and the device one (with_pool_dtype), as
 * KVQ_DENSE_FP8_CASES (common.cuh) is for the dense and FP8 codes.
 */
#define KVQ_KV_QUANT_CASES(f)                                                                \
  case kKvFp8PerTokenHead: return f(std::integral_constant<int, kKvFp8PerTokenHead>{});   \
  case kKvInt8PerTokenHead: return f(std::integral_constant<int, kKvInt8PerTokenHead>{}); \
  case kKvInt4PerTokenHead: return f(std::integral_constant<int, kKvInt4PerTokenHead>{}); \
  case kKvInt4G16: return f(std::integral_constant<int, kKvInt4G16>{});                   \
  case kKvInt4G32: return f(std::integral_constant<int, kKvInt4G32>{});                   \
  case kKvInt4G64: return f(std::integral_constant<int, kKvInt4G64>{});                   \
  case kKvNvfp4: return f(std::integral_constant<int, kKvNvfp4>{});                       \
  case kKvQ4_0: return f(std::integral_constant<int, kKvQ4_0>{});                         \
  default: return f(std::integral_constant<int, kKvInt4G32F16>{});

/** Call f(std::integral_constant<int, DT>) for a write-time-scaled KV dtype code, on the host. */
template <class F>
static bool with_kv_quant(int dt, F&& f) {
  switch (dt) { KVQ_KV_QUANT_CASES(f) }
}

/** The device pools of a write-time-scaled cache: resident ones, or the host pools uploaded into scratch `kS2` / `kS3`. */
static bool q_pools(Context* ctx, const CacheRef& c, size_t poolBytes, void** dk, void** dv, Status* st) {
  if (c.kDev) {
    *dk = c.kDev;
    *dv = c.vDev;
    return true;
  }
  return put(ctx, kS2, c.k, poolBytes, dk, st) && put(ctx, kS3, c.v, poolBytes, dv, st);
}

bool reshape_and_cache_quant(Context* ctx, const CacheWriteArgs& a, Status* st) {
  const CacheRef& c = a.cache;
  KvQuantLayout L{};
  if (!kv_quant_layout(c.dtype, c.blockSize, c.numKvHeads, c.headSize, &L)) return fail_status(st, kUnsupported, "reshapeAndCache: layout");
  const size_t poolBytes = (size_t)(c.numBlocks * L.blockBytes);
  const size_t inBytes = (size_t)(a.numTokens * c.numKvHeads * c.headSize) * 4;
  void *dk, *dv, *ds, *kp, *vp;
  if (!put(ctx, kS0, a.key, inBytes, &dk, st) || !put(ctx, kS1, a.value, inBytes, &dv, st) ||
      !put_cached(ctx, kCSlots, a.slots, (size_t)a.numTokens * 4, &ds, st) || !q_pools(ctx, c, poolBytes, &kp, &vp, st))
    return false;
  const float kt = c.dtype == kKvNvfp4 ? c.kScale[0] : 1.0f;
  const float vt = c.dtype == kKvNvfp4 ? c.vScale[0] : 1.0f;
  const unsigned grid = grid_1d(a.numTokens * c.numKvHeads * 2, kQThreads);
  with_kv_quant(c.dtype, [&](auto cc) {
    constexpr int DT = decltype(cc)::value;
    KVQ_LAUNCH(grid, kQThreads, 0, ctx->stream, q_cache_write_kernel<DT>)((const float*)dk, (const float*)dv, (const int32_t*)ds, a.numTokens,
                                                                       c.numKvHeads, c.headSize, c.blockSize, L, kt, vt, (uint8_t*)kp,
                                                                       (uint8_t*)vp);
    return true;
  });
  KVQ_LAUNCHED("reshapeAndCache kernel (write-time-scaled KV)");
  if (c.kDev && c.deviceOnly) return finish(ctx, st);
  // The host pools: the written rows only would need a gather; the whole pools are simpler and this path is for tests
  // and for caches that are not resident.
  return get(ctx, c.k, c.kDev ? c.kDev : kp, poolBytes, st) && get(ctx, c.v, c.vDev ? c.vDev : vp, poolBytes, st) && sync(ctx, st);
}

// ---- pagedAttention ----------------------------------------------------------------------------------------------

/** What both attention kernels here read besides their pools' layouts: the batch, the device pools and the outputs. */
struct AttnRowsParams {
  const float* q;
  float* out;
  float* lse;  // optional [numTokens, numHeads] (null: not asked for)
  const uint8_t* kc;
  const uint8_t* vc;
  const int32_t* qsl;
  const int32_t* seqLens;
  const int32_t* blockTables;
  int numSeqs, numHeads, numKvHeads, headSize, blockSize, maxBlocksPerSeq, slidingWindow;
  float softmaxScale;
};

/** The device buffers of an attention call that its results come back from (attn_rows_upload, attn_rows_download). */
struct AttnRowsIo {
  int64_t numTokens;
  size_t qb, lb;  // bytes of the output [numTokens, numHeads, headSize] and of the lse [numTokens, numHeads]
  void* dout;
  void* dlse;
};

/**
 * Uploads an attention call's queries and batch tables into scratch and fills p's shared fields (the pools `kc` /
 * `vc` are the caller's, given as kp / vp once its own `pools` step has put them on the device). Returns false
 * (st set) when an upload fails; io.numTokens == 0 means nothing to compute.
 */
template <class Pools>
static bool attn_rows_upload(Context* ctx, const AttentionArgs& a, AttnRowsParams* p, AttnRowsIo* io, Pools&& pools, Status* st) {
  const CacheRef& c = a.cache;
  io->numTokens = a.qsl[a.numSeqs];
  if (io->numTokens == 0) return true;
  io->qb = (size_t)(io->numTokens * a.numHeads * c.headSize) * 4;
  io->lb = (size_t)(io->numTokens * a.numHeads) * 4;
  io->dlse = nullptr;
  void *dq, *dqsl, *dlens, *dbt, *kp, *vp;
  if (!put(ctx, kS0, a.q, io->qb, &dq, st) || !scratch(ctx, kS1, io->qb, &io->dout, st) ||
      !put_cached(ctx, kCQsl, a.qsl, (size_t)(a.numSeqs + 1) * 4, &dqsl, st) ||
      !put_cached(ctx, kCSeqLens, a.seqLens, (size_t)a.numSeqs * 4, &dlens, st) ||
      !put_cached(ctx, kCBlockTables, a.blockTables, (size_t)a.numSeqs * a.maxBlocksPerSeq * 4, &dbt, st) || !pools(&kp, &vp) ||
      (a.lse && !scratch(ctx, kS13, io->lb, &io->dlse, st)))
    return false;
  p->q = (const float*)dq;
  p->out = (float*)io->dout;
  p->lse = (float*)io->dlse;
  p->kc = (const uint8_t*)kp;
  p->vc = (const uint8_t*)vp;
  p->qsl = (const int32_t*)dqsl;
  p->seqLens = (const int32_t*)dlens;
  p->blockTables = (const int32_t*)dbt;
  p->numSeqs = a.numSeqs;
  p->numHeads = a.numHeads;
  p->numKvHeads = c.numKvHeads;
  p->headSize = c.headSize;
  p->blockSize = c.blockSize;
  p->maxBlocksPerSeq = a.maxBlocksPerSeq;
  p->slidingWindow = a.slidingWindow;
  p->softmaxScale = a.softmaxScale;
  return true;
}

/** Brings an attention call's output (and lse when asked for) back to the host and waits for the stream. */
static bool attn_rows_download(Context* ctx, const AttentionArgs& a, const AttnRowsIo& io, Status* st) {
  return get(ctx, a.out, io.dout, io.qb, st) && (!a.lse || get(ctx, a.lse, io.dlse, io.lb, st)) && finish(ctx, st);
}

struct QAttnParams : AttnRowsParams {
  float kTensor, vTensor;
  KvQuantLayout L;
};

/** Where query token t of an attention block reads: its sequence, its position, the first key it sees, its KV head. */
struct QRow {
  int s, pos, first, hk;
};

/**
 * Query token t's QRow (P: QAttnParams or MixedAttnParams, the same fields), and its query row for head h copied into
 * sq (synchronized: every thread may read sq after this).
 */
template <class P>
KVQ_DI QRow q_row(const P& p, int64_t t, int h, float* sq) {
  QRow r;
  r.s = 0;
  while (r.s + 1 < p.numSeqs && p.qsl[r.s + 1] <= t) r.s++;
  const int qLen = p.qsl[r.s + 1] - p.qsl[r.s];
  r.pos = p.seqLens[r.s] - qLen + (int)(t - p.qsl[r.s]);
  r.first = p.slidingWindow > 0 && r.pos - p.slidingWindow + 1 > 0 ? r.pos - p.slidingWindow + 1 : 0;
  r.hk = h / (p.numHeads / p.numKvHeads);
  const float* qr = p.q + (t * p.numHeads + h) * p.headSize;
  for (int d = threadIdx.x; d < p.headSize; d += blockDim.x) sq[d] = qr[d];
  __syncthreads();
  return r;
}

/**
 * One tile of the online softmax: the block's running max m and sum l take every thread's score (`valid` false past
 * the row's end), each thread's weight goes to sp[threadIdx.x] (synchronized). Returns the factor by which the
 * accumulators of the earlier tiles are rescaled.
 */
KVQ_DI float softmax_tile(float score, bool valid, float* sp, float* red, float& m, float& l) {
  const float tileMax = block_max(score, red);
  const float mNew = fmaxf(m, tileMax);
  const float corr = m == -INFINITY ? 0.0f : expf(m - mNew);
  const float e = valid ? expf(score - mNew) : 0.0f;
  __syncthreads();
  sp[threadIdx.x] = e;
  const float tileSum = block_sum<float>(e, red);
  __syncthreads();
  l = l * corr + tileSum;
  m = mNew;
  return corr;
}

/** The output row acc / l of (query token t, head h), one dimension per thread, and its lse when asked for. */
template <class P>
KVQ_DI void store_row(const P& p, int64_t t, int h, const float* acc, float m, float l) {
  float* o = p.out + (t * p.numHeads + h) * p.headSize;
  if (p.lse && threadIdx.x == 0) p.lse[t * p.numHeads + h] = m + logf(l);
  for (int k = 0; k < kMaxDimsPerThread; k++) {
    const int d = (int)threadIdx.x + k * (int)blockDim.x;
    if (d < p.headSize) o[d] = acc[k] / l;
  }
}

/**
 * One block per (query token, head): scores of a tile of keys (one key per thread, its K row decoded in the dot
 * product), an online softmax across tiles, and P.V with one output dimension per thread (its V elements decoded).
 */
template <int DT>
__global__ void q_attention_kernel(QAttnParams p) {
  __shared__ float sq[kQThreads * kMaxDimsPerThread];
  __shared__ float sp[kQThreads];
  __shared__ int64_t sco[kQThreads], sso[kQThreads];  // the tile's row offsets (the K and V pools share the layout)
  __shared__ float red[32];
  const int64_t t = blockIdx.x;
  const int h = blockIdx.y;
  const int D = p.headSize;
  const QRow row = q_row(p, t, h, sq);
  const int pos = row.pos, first = row.first, hk = row.hk;
  float acc[kMaxDimsPerThread];
  for (int k = 0; k < kMaxDimsPerThread; k++) acc[k] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  const int32_t* table = p.blockTables + (int64_t)row.s * p.maxBlocksPerSeq;
  for (int j0 = first; j0 <= pos; j0 += blockDim.x) {
    const int j = j0 + (int)threadIdx.x;
    float score = -INFINITY;
    if (j <= pos) {
      const int64_t slot = (int64_t)table[j / p.blockSize] * p.blockSize + j % p.blockSize;
      int64_t co, so;
      kv_row_offsets(p.L, slot, p.blockSize, p.numKvHeads, hk, &co, &so);
      sco[threadIdx.x] = co;
      sso[threadIdx.x] = so;
      float dot = 0.0f;
      for (int d = 0; d < D; d++) dot = fmaf(sq[d], q_elem<DT>(p.L, p.kc + co, p.kc + so, d, p.kTensor), dot);
      score = dot * p.softmaxScale;
    }
    const float corr = softmax_tile(score, j <= pos, sp, red, m, l);
    const int n = pos - j0 + 1 < (int)blockDim.x ? pos - j0 + 1 : (int)blockDim.x;
    for (int k = 0; k < kMaxDimsPerThread; k++) {
      const int d = (int)threadIdx.x + k * (int)blockDim.x;
      if (d >= D) break;
      float a = acc[k] * corr;
      for (int i = 0; i < n; i++) a = fmaf(sp[i], q_elem<DT>(p.L, p.vc + sco[i], p.vc + sso[i], d, p.vTensor), a);
      acc[k] = a;
    }
    __syncthreads();
  }
  store_row(p, t, h, acc, m, l);
}

bool paged_attention_quant(Context* ctx, const AttentionArgs& a, Status* st) {
  const CacheRef& c = a.cache;
  KvQuantLayout L{};
  if (!kv_quant_layout(c.dtype, c.blockSize, c.numKvHeads, c.headSize, &L)) return fail_status(st, kUnsupported, "pagedAttention: layout");
  if (c.headSize > kQThreads * kMaxDimsPerThread) {
    snprintf(st->message, sizeof(st->message), "pagedAttention: head size %d is larger than the write-time-scaled KV kernel's %d", c.headSize,
             kQThreads * kMaxDimsPerThread);
    st->code = kUnsupported;
    return false;
  }
  if (a.fp8Query) return fail_status(st, kUnsupported, "pagedAttention: FP8-query mode needs a per-tensor FP8 cache");
  const size_t poolBytes = (size_t)(c.numBlocks * L.blockBytes);
  QAttnParams p{};
  AttnRowsIo io{};
  if (!attn_rows_upload(ctx, a, &p, &io, [&](void** kp, void** vp) { return q_pools(ctx, c, poolBytes, kp, vp, st); }, st)) return false;
  if (io.numTokens == 0) return true;
  p.kTensor = c.dtype == kKvNvfp4 ? c.kScale[0] : 1.0f;
  p.vTensor = c.dtype == kKvNvfp4 ? c.vScale[0] : 1.0f;
  p.L = L;
  const dim3 grid((unsigned)io.numTokens, (unsigned)a.numHeads);
  with_kv_quant(c.dtype, [&](auto cc) {
    constexpr int DT = decltype(cc)::value;
    KVQ_LAUNCH(grid, kQThreads, 0, ctx->stream, q_attention_kernel<DT>)(p);
    return true;
  });
  KVQ_LAUNCHED("pagedAttention kernel (write-time-scaled KV)");
  return attn_rows_download(ctx, a, io, st);
}

// ---- caches whose K and V pools have different dtypes --------------------------------------------------------------

/**
 * One pool of a mixed cache (CacheRef.vdtype != dtype), resolved on the host: its dtype, how its rows are laid out, and
 * its scales (each pool uses its own, as a uniform cache of its dtype would).
 */
struct MixedPool {
  int dt;              // DtypeCode of the pool: dense (kF32..kF16), FP8 (kFp8E4M3FN..kFp8E5M2FNUZ) or write-time-scaled
  int elemBytes;       // dense / FP8: bytes per element; else 0
  KvQuantLayout L;     // write-time-scaled dtypes: the block layout
  const float* scale;  // FP8: the device copy of the pool's scales, [scaleLen] (1 or numKvHeads); else null
  int scaleLen;
  float tensor;        // nvfp4: the per-tensor scale; else 1
};

/** Call f(std::integral_constant<int, DT>) for a pool's dtype code (dense, FP8 or write-time-scaled), on the device. */
template <class F>
KVQ_DI auto with_pool_dtype(int dt, F&& f) {
  switch (dt) {
    KVQ_DENSE_FP8_CASES(f)
    KVQ_KV_QUANT_CASES(f)
  }
}

/** Byte offsets of the codes (co) and, for a write-time-scaled pool, the scales (so) of row (slot, kv head h). */
KVQ_DI void mixed_row_offsets(const MixedPool& P, int64_t slot, int blockSize, int numKvHeads, int headSize, int h, int64_t* co,
                              int64_t* so) {
  if (P.elemBytes == 0) {
    kv_row_offsets(P.L, slot, blockSize, numKvHeads, h, co, so);
  } else {
    *co = (slot * numKvHeads + h) * headSize * P.elemBytes;
    *so = 0;
  }
}

/** The scale of kv head h of an FP8 pool (1 for the others, whose scales are in the pool or `tensor`). */
KVQ_DI float mixed_head_scale(const MixedPool& P, int h) { return P.scale ? P.scale[P.scaleLen == 1 ? 0 : h] : 1.0f; }

/**
 * Element e of the row at (co, so) of a pool of dtype DT, as the uniform kernels of DT see it: dense exactly, FP8
 * `fround(decode(code) * s)` (s: the row's kv head's scale), write-time-scaled q_elem's `fround(value * scale)`.
 */
template <int DT>
KVQ_DI float mixed_elem(const KvQuantLayout& L, const uint8_t* pool, int64_t co, int64_t so, int e, float s, float tensor) {
  if constexpr (DT <= kF16) return load_elem<DT>(pool + co, e);
  else if constexpr (DT <= kFp8E5M2FNUZ) return load_elem<DT>(pool + co, e) * s;
  else return q_elem<DT>(L, pool + co, pool + so, e, tensor);
}

/**
 * One thread per (token, kv head, K or V): the row written into its pool by that pool's dtype (dense / FP8 as ops.cu's
 * cache_write_kernel: store_elem, FP8 satfinite with the head's scale; write-time-scaled: kv_quantize_head).
 */
__global__ void mixed_cache_write_kernel(const float* key, const float* value, const int32_t* slots, int64_t numTokens, int numKvHeads,
                                         int headSize, int blockSize, MixedPool kp, MixedPool vp, uint8_t* kPool, uint8_t* vPool) {
  const int64_t n = numTokens * numKvHeads * 2;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const bool isV = (i & 1) != 0;
    const int64_t th = i >> 1;
    const int64_t t = th / numKvHeads;
    const int h = (int)(th % numKvHeads);
    const int64_t slot = slots[t];
    if (slot < 0) continue;
    const MixedPool& P = isV ? vp : kp;
    uint8_t* pool = isV ? vPool : kPool;
    const float* x = (isV ? value : key) + th * headSize;
    int64_t co, so;
    mixed_row_offsets(P, slot, blockSize, numKvHeads, headSize, h, &co, &so);
    with_pool_dtype(P.dt, [&](auto cc) {
      constexpr int DT = decltype(cc)::value;
      if constexpr (DT <= kFp8E5M2FNUZ) {
        const float s = mixed_head_scale(P, h);
        for (int d = 0; d < headSize; d++) store_elem<DT>(pool + co, d, x[d], s);
      } else {
        kv_quantize_head(DT, P.L, x, headSize, pool + co, pool + so, P.tensor);
      }
      return 0;
    });
  }
}

/**
 * The MixedPool of dtype `dt` of cache `c` (its FP8 scales uploaded, keyed by their host array) and the bytes of the
 * whole pool.
 */
static bool mixed_pool(Context* ctx, const CacheRef& c, int dt, const float* scale, MixedPool* P, size_t* bytes, Status* st) {
  MixedPool r{};
  r.dt = dt;
  r.tensor = 1.0f;
  if (is_kv_quant_dtype(dt)) {
    if (!kv_quant_layout(dt, c.blockSize, c.numKvHeads, c.headSize, &r.L)) return fail_status(st, kUnsupported, "mixed KV cache: layout");
    *bytes = (size_t)(c.numBlocks * r.L.blockBytes);
    if (dt == kKvNvfp4) r.tensor = scale[0];
  } else {
    r.elemBytes = (int)dtype_bytes(dt);
    *bytes = (size_t)c.numBlocks * c.blockSize * c.numKvHeads * c.headSize * (size_t)r.elemBytes;
    if (dt >= kFp8E4M3FN) {
      void* ds;
      if (!put_keyed(ctx, scale, (size_t)c.scaleLen * 4, &ds, st)) return false;
      r.scale = (const float*)ds;
      r.scaleLen = c.scaleLen;
    }
  }
  *P = r;
  return true;
}

/** Both pools of a mixed cache: their MixedPools and device pools (resident ones, or the host pools uploaded into kS2 / kS3). */
static bool mixed_pools(Context* ctx, const CacheRef& c, MixedPool* kp, MixedPool* vp, void** dk, void** dv, size_t* kb, size_t* vb,
                        Status* st) {
  if (!mixed_pool(ctx, c, c.dtype, c.kScale, kp, kb, st) || !mixed_pool(ctx, c, c.vdtype, c.vScale, vp, vb, st)) return false;
  if (c.kDev) {
    *dk = c.kDev;
    *dv = c.vDev;
    return true;
  }
  return put(ctx, kS2, c.k, *kb, dk, st) && put(ctx, kS3, c.v, *vb, dv, st);
}

bool reshape_and_cache_mixed(Context* ctx, const CacheWriteArgs& a, Status* st) {
  const CacheRef& c = a.cache;
  const size_t inBytes = (size_t)(a.numTokens * c.numKvHeads * c.headSize) * 4;
  MixedPool kp, vp;
  size_t kb = 0, vb = 0;
  void *dk, *dv, *ds, *kPool, *vPool;
  if (!put(ctx, kS0, a.key, inBytes, &dk, st) || !put(ctx, kS1, a.value, inBytes, &dv, st) ||
      !put_cached(ctx, kCSlots, a.slots, (size_t)a.numTokens * 4, &ds, st) || !mixed_pools(ctx, c, &kp, &vp, &kPool, &vPool, &kb, &vb, st))
    return false;
  const unsigned grid = grid_1d(a.numTokens * c.numKvHeads * 2, kQThreads);
  KVQ_LAUNCH(grid, kQThreads, 0, ctx->stream, mixed_cache_write_kernel)((const float*)dk, (const float*)dv, (const int32_t*)ds, a.numTokens,
                                                                      c.numKvHeads, c.headSize, c.blockSize, kp, vp, (uint8_t*)kPool,
                                                                      (uint8_t*)vPool);
  KVQ_LAUNCHED("reshapeAndCache kernel (mixed K/V dtypes)");
  if (c.kDev && c.deviceOnly) return finish(ctx, st);
  // The host pools, whole (as the write-time-scaled path: for tests and for caches that are not resident).
  return get(ctx, c.k, kPool, kb, st) && get(ctx, c.v, vPool, vb, st) && sync(ctx, st);
}

struct MixedAttnParams : AttnRowsParams {
  MixedPool kp, vp;
};

/**
 * q_attention_kernel over a mixed cache: one block per (query token, head), each key's K row decoded by the K pool's
 * dtype in the dot product, the tile's V rows by the V pool's in P.V (the dtype switch sits outside each loop).
 */
__global__ void mixed_attention_kernel(MixedAttnParams p) {
  __shared__ float sq[kQThreads * kMaxDimsPerThread];
  __shared__ float sp[kQThreads];
  __shared__ int64_t sco[kQThreads], sso[kQThreads];  // the tile's V row offsets (the K rows are each thread's own)
  __shared__ float red[32];
  const int64_t t = blockIdx.x;
  const int h = blockIdx.y;
  const int D = p.headSize;
  const QRow row = q_row(p, t, h, sq);
  const int pos = row.pos, first = row.first, hk = row.hk;
  const float* qv = sq;
  const float* pv = sp;
  const int64_t* vco = sco;
  const int64_t* vso = sso;
  const float ks = mixed_head_scale(p.kp, hk), vs = mixed_head_scale(p.vp, hk);
  float acc[kMaxDimsPerThread];
  for (int k = 0; k < kMaxDimsPerThread; k++) acc[k] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  const int32_t* table = p.blockTables + (int64_t)row.s * p.maxBlocksPerSeq;
  for (int j0 = first; j0 <= pos; j0 += blockDim.x) {
    const int j = j0 + (int)threadIdx.x;
    float score = -INFINITY;
    if (j <= pos) {
      const int64_t slot = (int64_t)table[j / p.blockSize] * p.blockSize + j % p.blockSize;
      int64_t kco, kso;
      mixed_row_offsets(p.kp, slot, p.blockSize, p.numKvHeads, D, hk, &kco, &kso);
      mixed_row_offsets(p.vp, slot, p.blockSize, p.numKvHeads, D, hk, &sco[threadIdx.x], &sso[threadIdx.x]);
      const float dot = with_pool_dtype(p.kp.dt, [&](auto cc) {
        constexpr int DT = decltype(cc)::value;
        float r = 0.0f;
        for (int d = 0; d < D; d++) r = fmaf(qv[d], mixed_elem<DT>(p.kp.L, p.kc, kco, kso, d, ks, p.kp.tensor), r);
        return r;
      });
      score = dot * p.softmaxScale;
    }
    const float corr = softmax_tile(score, j <= pos, sp, red, m, l);
    const int n = pos - j0 + 1 < (int)blockDim.x ? pos - j0 + 1 : (int)blockDim.x;
    for (int k = 0; k < kMaxDimsPerThread; k++) {
      const int d = (int)threadIdx.x + k * (int)blockDim.x;
      if (d >= D) break;
      const float a0 = acc[k] * corr;
      acc[k] = with_pool_dtype(p.vp.dt, [&](auto cc) {
        constexpr int DT = decltype(cc)::value;
        float a = a0;
        for (int i = 0; i < n; i++) a = fmaf(pv[i], mixed_elem<DT>(p.vp.L, p.vc, vco[i], vso[i], d, vs, p.vp.tensor), a);
        return a;
      });
    }
    __syncthreads();
  }
  store_row(p, t, h, acc, m, l);
}

bool paged_attention_mixed(Context* ctx, const AttentionArgs& a, Status* st) {
  const CacheRef& c = a.cache;
  if (c.headSize > kQThreads * kMaxDimsPerThread) {
    snprintf(st->message, sizeof(st->message), "pagedAttention: head size %d is larger than the mixed K/V kernel's %d", c.headSize,
             kQThreads * kMaxDimsPerThread);
    st->code = kUnsupported;
    return false;
  }
  if (a.fp8Query) return fail_status(st, kUnsupported, "pagedAttention: FP8-query mode needs K and V in one FP8 dtype");
  MixedAttnParams p{};
  AttnRowsIo io{};
  size_t kb = 0, vb = 0;
  if (!attn_rows_upload(ctx, a, &p, &io, [&](void** kp, void** vp) { return mixed_pools(ctx, c, &p.kp, &p.vp, kp, vp, &kb, &vb, st); }, st))
    return false;
  if (io.numTokens == 0) return true;
  const dim3 grid((unsigned)io.numTokens, (unsigned)a.numHeads);
  KVQ_LAUNCH(grid, kQThreads, 0, ctx->stream, mixed_attention_kernel)(p);
  KVQ_LAUNCHED("pagedAttention kernel (mixed K/V dtypes)");
  return attn_rows_download(ctx, a, io, st);
}

}  // namespace gpu
}  // namespace kvq
