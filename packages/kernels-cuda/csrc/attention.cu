// SPDX-License-Identifier: Apache-2.0
//
// Paged attention over the KV cache, for decode and prefill alike, with FP8 K/V dequantized on the fly:
//
// - A task (one thread block) is: one sequence, one kv head, a group of that kv head's query heads (GQA rows
//   share every K/V tile), a run of query tokens (prefill: up to 32 rows in all), and a range of key positions.
//   Long contexts are split into several key ranges (flash-decoding / vLLM paged_attention v2 style) whenever the
//   plain task count would not fill the device; a second kernel merges the splits' (max, sum, accumulator).
// - The block walks its key range in tiles of TK keys: K and V rows of the tile are gathered from their cache
//   blocks with 16-byte loads, dequantized once (fround(decode(code) * scale), the contract's value) into shared
//   memory, then each warp updates its query rows: lane = key for the scores (q . k from shared memory), an
//   online softmax in float32, and lane = head dimension for P . V.
// - FP8-query mode: the query is quantized to the cache's format with its GQA group's scale (fp8.h, same rounding
//   as the reference), K stays unscaled and the product qScale * kScale * softmaxScale multiplies the scores.
//
// Warp-width agnostic: KVQ_WARP is 32 on NVIDIA and 64 on CDNA (several lanes then share one key and combine
// their partial dot products with a shuffle). Scalar FP8 path only: no tensor-core (MMA / WGMMA) FP8 path yet.
//
// Decode batches (one query token per sequence) use paged_decode_kernel instead (below): no shared memory in its
// main loop, each K/V byte loaded and decoded once per block for the whole GQA group.
#include "common.cuh"

#if !KVQ_IS_HIP && !KVQ_IS_SIM
#include <cuda_fp8.h>
#endif

#include <stdlib.h>

#include <algorithm>
#include <random>
#include <vector>

namespace kvq {
namespace gpu {

static const int kRowsMax = 32;       // query rows (tokens x heads) per task
static const int kWarpsPerBlock = 4;  // so each warp owns at most kRowsMax / 4 = 8 rows

struct AttnTask {
  int seq, kvh, g0, g1, t0, t1, k0, k1, split, nsplit;
  long long partial;  // first partial row of split 0 (nsplit > 1), else -1
};

struct AttnParams {
  const float* q;
  float* out;
  float* lse;  // optional [numTokens, numHeads]: ln(sum_j e^(s_j)) per query row (null: not asked for)
  const void* kc;
  const void* vc;
  const float* kScale;
  const float* vScale;
  int scaleLen;
  int dtype;
  int blockSize, numKvHeads, headSize, numHeads, group;
  const int32_t* blockTables;
  int maxBlocksPerSeq;
  const int32_t* qsl;
  const int32_t* seqLens;
  float softmaxScale;
  int slidingWindow;
  int fp8Query;
  const float* qScaleKv;
  const AttnTask* tasks;
  const int* combine;
  float* partials;
  int tk;       // keys per tile (32, 16 or 8; divides the warp width)
  int rowsCap;  // query rows the shared-memory layout is sized for
  int tg;       // decode kernel: lanes per key (a power of two dividing the warp width)
};

/** Four FP8 codes (one 32-bit word, lowest byte first) as their exact float32 values. */
template <int DT>
KVQ_DI void decode_fp8x4(uint32_t word, float* out) {
#if !KVQ_IS_HIP && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  constexpr bool kHardware = DT == kFp8E4M3FN || DT == kFp8E5M2;
#else
  constexpr bool kHardware = false;
#endif
  if constexpr (kHardware) {
#if !KVQ_IS_HIP && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    // The hardware conversion (cvt.rn.f16x2.e4m3x2 / e5m2x2) is exact and gives fp8.h's values for every code (the
    // device check compares all 256); FP8 -> f16 -> f32 loses nothing.
    const __nv_fp8_interpretation_t kind = DT == kFp8E4M3FN ? __NV_E4M3 : __NV_E5M2;
#pragma unroll
    for (int b = 0; b < 2; b++) {
      const __half2_raw h2 = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)((word >> (16 * b)) & 0xFFFFu), kind);
      const float2 f = __half22float2(__half2(h2));
      out[2 * b] = f.x;
      out[2 * b + 1] = f.y;
    }
#endif
  } else {
#pragma unroll
    for (int b = 0; b < 4; b++) out[b] = fp8_decode<DT - kFp8E4M3FN>((word >> (8 * b)) & 0xFFu);
  }
}

/** 16 bytes of cache elements as float32 (exact, unscaled). */
template <int DT>
struct Vec16 {
  static constexpr int EB = DT == kF32 ? 4 : (DT <= kF16 ? 2 : 1);
  static constexpr int N = 16 / EB;
  KVQ_DI static void decode(const uint4 raw, float* out) {
    const uint32_t u[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int w = 0; w < 4; w++) {
      if constexpr (DT == kF32) {
        out[w] = bits_as_f32(u[w]);
      } else if constexpr (DT == kBF16) {
        out[2 * w] = bf16_to_f32((uint16_t)(u[w] & 0xFFFFu));
        out[2 * w + 1] = bf16_to_f32((uint16_t)(u[w] >> 16));
      } else if constexpr (DT == kF16) {
        out[2 * w] = f16_to_f32((uint16_t)(u[w] & 0xFFFFu));
        out[2 * w + 1] = f16_to_f32((uint16_t)(u[w] >> 16));
      } else {
        decode_fp8x4<DT>(u[w], out + 4 * w);
      }
    }
  }
};

/** Most 16-byte K (and V) vectors a thread prefetches per tile (4 warps: bf16 / FP8 tiles of head size <= 128). */
static const int kPrefetch = 4;

/**
 * The raw bytes of one K/V tile held in registers while the previous tile is computed (software pipelining):
 * thread t holds vectors t, t + blockDim, ... of the tile, 16 bytes each, dtype-agnostic.
 */
struct TileRegs {
  uint4 k[kPrefetch];
  uint4 v[kPrefetch];
};

/** Issue the loads of keys [j0, j0 + nt) into registers (rows past nt: zeros). rowBytes = D * element size. */
KVQ_DI void fetch_tile(const AttnParams& p, const int32_t* bt, int j0, int nt, int h, int rowBytes, TileRegs& t) {
  const int vpr = rowBytes / 16;
  const int64_t headOff = (int64_t)h * rowBytes;
  const int64_t slotBytes = (int64_t)p.numKvHeads * rowBytes;
#pragma unroll
  for (int n = 0; n < kPrefetch; n++) {
    const int i = threadIdx.x + n * blockDim.x;
    const int j = i / vpr;
    t.k[n] = t.v[n] = make_uint4(0u, 0u, 0u, 0u);
    if (j < nt) {
      const int pos = j0 + j;
      const int64_t slot = (int64_t)bt[pos / p.blockSize] * p.blockSize + pos % p.blockSize;
      const int64_t off = slot * slotBytes + headOff + (int64_t)(i % vpr) * 16;
      t.k[n] = *reinterpret_cast<const uint4*>(static_cast<const char*>(p.kc) + off);
      t.v[n] = *reinterpret_cast<const uint4*>(static_cast<const char*>(p.vc) + off);
    }
  }
}

/** Decode a fetched tile into sK (row stride D + 1) / sV (row stride D), scaling FP8 values by kmul / vmul. */
template <int DT>
KVQ_DI void store_tile(const AttnParams& p, const TileRegs& t, float kmul, float vmul, float* sK, float* sV) {
  constexpr int VE = Vec16<DT>::N;
  const int D = p.headSize, KS = D + 1;
  const int vpr = D / VE;
#pragma unroll
  for (int n = 0; n < kPrefetch; n++) {
    const int i = threadIdx.x + n * blockDim.x;
    const int j = i / vpr, c = (i % vpr) * VE;
    if (j < p.tk) {
      float kv[VE], vv[VE];
      Vec16<DT>::decode(t.k[n], kv);
      Vec16<DT>::decode(t.v[n], vv);
#pragma unroll
      for (int e = 0; e < VE; e++) {
        sK[j * KS + c + e] = DT >= kFp8E4M3FN ? kv[e] * kmul : kv[e];
        sV[j * D + c + e] = DT >= kFp8E4M3FN ? vv[e] * vmul : vv[e];
      }
    }
  }
}

/**
 * Gather and dequantize keys [j0, j0 + nt) of kv head h into sK (row stride D + 1) and sV (row stride D); rows
 * nt..TK-1 are zeroed. kmul / vmul: the FP8 scales (1 for other dtypes, and for K in FP8-query mode).
 */
template <int DT>
KVQ_DI void load_tile(const AttnParams& p, const int32_t* bt, int j0, int nt, int h, float kmul, float vmul, float* sK,
                      float* sV) {
  constexpr bool kFp8 = DT >= kFp8E4M3FN;
  const int D = p.headSize, TK = p.tk, KS = D + 1;
  const int64_t rowStride = (int64_t)p.numKvHeads * D;
  constexpr int VE = Vec16<DT>::N;
  if (D % VE == 0) {
    const int vpr = D / VE;
    for (int i = threadIdx.x; i < TK * vpr; i += blockDim.x) {
      const int j = i / vpr, c = (i % vpr) * VE;
      float kv[VE], vv[VE];
      if (j < nt) {
        const int pos = j0 + j;
        const int64_t slot = (int64_t)bt[pos / p.blockSize] * p.blockSize + pos % p.blockSize;
        const int64_t e = slot * rowStride + (int64_t)h * D + c;
        const uint4 kr = *reinterpret_cast<const uint4*>(static_cast<const char*>(p.kc) + e * Vec16<DT>::EB);
        const uint4 vr = *reinterpret_cast<const uint4*>(static_cast<const char*>(p.vc) + e * Vec16<DT>::EB);
        Vec16<DT>::decode(kr, kv);
        Vec16<DT>::decode(vr, vv);
        if constexpr (kFp8) {
#pragma unroll
          for (int t = 0; t < VE; t++) {
            kv[t] *= kmul;
            vv[t] *= vmul;
          }
        }
      } else {
#pragma unroll
        for (int t = 0; t < VE; t++) kv[t] = vv[t] = 0.0f;
      }
#pragma unroll
      for (int t = 0; t < VE; t++) {
        sK[j * KS + c + t] = kv[t];
        sV[j * D + c + t] = vv[t];
      }
    }
  } else {
    for (int i = threadIdx.x; i < TK * D; i += blockDim.x) {
      const int j = i / D, d = i % D;
      float kv = 0.0f, vv = 0.0f;
      if (j < nt) {
        const int pos = j0 + j;
        const int64_t slot = (int64_t)bt[pos / p.blockSize] * p.blockSize + pos % p.blockSize;
        const int64_t e = slot * rowStride + (int64_t)h * D + d;
        kv = load_elem<DT>(p.kc, e);
        vv = load_elem<DT>(p.vc, e);
        if constexpr (kFp8) {
          kv *= kmul;
          vv *= vmul;
        }
      }
      sK[j * KS + d] = kv;
      sV[j * D + d] = vv;
    }
  }
}

// 4 warps per block. On NVIDIA (128 threads), decode-sized variants ask for 4 resident blocks per SM (<= 128
// registers, enough for the prefetched tile: memory-bound decode wants loads in flight); prefill variants keep
// their registers.
#if KVQ_IS_HIP
#define KVQ_ATTN_BOUNDS(RPW) __launch_bounds__(256)
#else
#define KVQ_ATTN_BOUNDS(RPW) __launch_bounds__(128, (RPW) <= 2 ? 4 : 1)
#endif

/** Shared memory of one block, in bytes. */
static size_t attn_smem_bytes(int rowsCap, int D, int tk) {
  return sizeof(float) * ((size_t)rowsCap * D + (size_t)tk * (D + 1) + (size_t)tk * D) + 2 * sizeof(int) * (size_t)rowsCap;
}

/**
 * DCH: head-dimension elements per lane (ceil(D / warp width), rounded up to 2, 4, 8); RPW: query rows per warp
 * (2 for decode-sized tasks, 8 for prefill tiles) — both compile-time so the per-row state stays in registers.
 */
template <int DCH, int RPW>
__global__ void KVQ_ATTN_BOUNDS(RPW) paged_attention_kernel(const AttnParams p) {
  KVQ_DYNAMIC_SHARED(float, smem);
  const AttnTask tk = p.tasks[blockIdx.x];
  const int D = p.headSize, TK = p.tk, KS = D + 1;
  const int GG = tk.g1 - tk.g0;
  const int R = (tk.t1 - tk.t0) * GG;
  float* sQ = smem;
  float* sK = sQ + (size_t)p.rowsCap * D;
  float* sV = sK + (size_t)TK * KS;
  int* sLo = reinterpret_cast<int*>(sV + (size_t)TK * D);
  int* sHi = sLo + p.rowsCap;

  const int lane = threadIdx.x % KVQ_WARP, warp = threadIdx.x / KVQ_WARP;
  const int nw = blockDim.x / KVQ_WARP;
  const int qStart = p.qsl[tk.seq];
  const int qLen = p.qsl[tk.seq + 1] - qStart;
  const int ctxLen = p.seqLens[tk.seq];
  const int h = tk.kvh;
  const bool fp8 = p.dtype >= kFp8E4M3FN;
  const float ks = fp8 ? p.kScale[p.scaleLen == 1 ? 0 : h] : 1.0f;
  const float vs = fp8 ? p.vScale[p.scaleLen == 1 ? 0 : h] : 1.0f;
  const float qs = p.fp8Query ? p.qScaleKv[h] : 1.0f;
  const int fmt = p.dtype - kFp8E4M3FN;

  for (int i = threadIdx.x; i < R * D; i += blockDim.x) {
    const int r = i / D, d = i % D;
    const int ti = r / GG, g = tk.g0 + r % GG;
    const int64_t token = qStart + tk.t0 + ti;
    float v = p.q[(token * p.numHeads + (int64_t)h * p.group + g) * D + d];
    if (p.fp8Query) v = fp8_decode_rt(fp8_encode_rt(v / qs, fmt, p.fp8Query == 1), fmt);
    sQ[i] = v;
  }
  for (int r = threadIdx.x; r < R; r += blockDim.x) {
    const int pos = ctxLen - qLen + tk.t0 + r / GG;
    int lo = p.slidingWindow > 0 ? pos - p.slidingWindow + 1 : 0;
    lo = lo > tk.k0 ? lo : tk.k0;
    int hi = pos + 1 < tk.k1 ? pos + 1 : tk.k1;
    if (hi < lo) hi = lo;
    sLo[r] = lo;
    sHi[r] = hi;
  }
  // FP8-query mode: raw FP8 values multiply and the descales scale the score (product in float64, rounded once).
  const float mul = p.fp8Query ? (float)((double)qs * (double)ks * (double)p.softmaxScale) : p.softmaxScale;
  const float kmul = p.fp8Query ? 1.0f : ks;
  __syncthreads();

  int kb = tk.k1, ke = tk.k0;
  for (int r = 0; r < R; r++) {
    if (sLo[r] < sHi[r]) {
      kb = sLo[r] < kb ? sLo[r] : kb;
      ke = sHi[r] > ke ? sHi[r] : ke;
    }
  }

  float m[RPW], l[RPW], acc[RPW][DCH];
#pragma unroll
  for (int i = 0; i < RPW; i++) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int c = 0; c < DCH; c++) acc[i][c] = 0.0f;
  }
  const int32_t* bt = p.blockTables + (int64_t)tk.seq * p.maxBlocksPerSeq;
  const int kparts = KVQ_WARP / TK;  // lanes per key
  const int kl = lane % TK, part = lane / TK;
  const float invParts = 1.0f / (float)kparts;

  // Software pipelining: when a whole tile fits in kPrefetch 16-byte vectors per thread (bf16 / FP8 with head size
  // <= 128), the next tile's loads are issued before the current tile is computed.
  const int eb = p.dtype == kF32 ? 4 : (p.dtype <= kF16 ? 2 : 1);
  const int rowBytes = D * eb;
  const bool pipelined = p.dtype != kF32 && rowBytes % 16 == 0 && TK * (rowBytes / 16) <= kPrefetch * (int)blockDim.x;
  TileRegs regs;
  if (pipelined && kb < ke) fetch_tile(p, bt, kb, ke - kb < TK ? ke - kb : TK, h, rowBytes, regs);

  for (int j0 = kb; j0 < ke; j0 += TK) {
    const int nt = ke - j0 < TK ? ke - j0 : TK;
    if (pipelined) {
      switch (p.dtype) {
        case kBF16: store_tile<kBF16>(p, regs, 1.0f, 1.0f, sK, sV); break;
        case kF16: store_tile<kF16>(p, regs, 1.0f, 1.0f, sK, sV); break;
        case kFp8E4M3FN: store_tile<kFp8E4M3FN>(p, regs, kmul, vs, sK, sV); break;
        case kFp8E5M2: store_tile<kFp8E5M2>(p, regs, kmul, vs, sK, sV); break;
        case kFp8E4M3FNUZ: store_tile<kFp8E4M3FNUZ>(p, regs, kmul, vs, sK, sV); break;
        default: store_tile<kFp8E5M2FNUZ>(p, regs, kmul, vs, sK, sV); break;
      }
    } else {
      switch (p.dtype) {
        case kF32: load_tile<kF32>(p, bt, j0, nt, h, 1.0f, 1.0f, sK, sV); break;
        case kBF16: load_tile<kBF16>(p, bt, j0, nt, h, 1.0f, 1.0f, sK, sV); break;
        case kF16: load_tile<kF16>(p, bt, j0, nt, h, 1.0f, 1.0f, sK, sV); break;
        case kFp8E4M3FN: load_tile<kFp8E4M3FN>(p, bt, j0, nt, h, kmul, vs, sK, sV); break;
        case kFp8E5M2: load_tile<kFp8E5M2>(p, bt, j0, nt, h, kmul, vs, sK, sV); break;
        case kFp8E4M3FNUZ: load_tile<kFp8E4M3FNUZ>(p, bt, j0, nt, h, kmul, vs, sK, sV); break;
        default: load_tile<kFp8E5M2FNUZ>(p, bt, j0, nt, h, kmul, vs, sK, sV); break;
      }
    }
    __syncthreads();
    if (pipelined && j0 + TK < ke) fetch_tile(p, bt, j0 + TK, ke - j0 - TK < TK ? ke - j0 - TK : TK, h, rowBytes, regs);
#pragma unroll
    for (int i = 0; i < RPW; i++) {
      const int r = warp + i * nw;
      if (r < R) {
        const float* qr = sQ + r * D;
        const float* kr = sK + kl * KS;
        float s = 0.0f;
        for (int d = part; d < D; d += kparts) s = fmaf(qr[d], kr[d], s);
        for (int o = TK; o < KVQ_WARP; o <<= 1) s += KVQ_SHFL_XOR(s, o);
        const int pos = j0 + kl;
        const bool valid = kl < nt && pos >= sLo[r] && pos < sHi[r];
        s = valid ? s * mul : -INFINITY;
        const float mNew = fmaxf(m[i], warp_max(s));
        if (mNew != -INFINITY) {
          const float corr = expf(m[i] - mNew);
          const float pe = valid ? expf(s - mNew) : 0.0f;
          l[i] = l[i] * corr + warp_sum(pe) * invParts;
          m[i] = mNew;
#pragma unroll
          for (int c = 0; c < DCH; c++) acc[i][c] *= corr;
          for (int j = 0; j < nt; j++) {
            const float pj = KVQ_SHFL(pe, j);
            const float* vr = sV + j * D;
#pragma unroll
            for (int c = 0; c < DCH; c++) {
              const int d = lane + c * KVQ_WARP;
              if (d < D) acc[i][c] = fmaf(pj, vr[d], acc[i][c]);
            }
          }
        }
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < RPW; i++) {
    const int r = warp + i * nw;
    if (r >= R) continue;
    const int ti = r / GG, g = tk.g0 + r % GG;
    const int64_t token = qStart + tk.t0 + ti;
    if (tk.nsplit == 1) {
      const int64_t row = token * p.numHeads + (int64_t)h * p.group + g;
      float* o = p.out + row * D;
      const float inv = 1.0f / l[i];
      if (p.lse && lane == 0) p.lse[row] = m[i] + logf(l[i]);
#pragma unroll
      for (int c = 0; c < DCH; c++) {
        const int d = lane + c * KVQ_WARP;
        if (d < D) o[d] = acc[i][c] * inv;
      }
    } else {
      float* part = p.partials + (tk.partial + (long long)tk.split * R + r) * (D + 2);
      if (lane == 0) {
        part[0] = m[i];
        part[1] = l[i];
      }
#pragma unroll
      for (int c = 0; c < DCH; c++) {
        const int d = lane + c * KVQ_WARP;
        if (d < D) part[2 + d] = acc[i][c];
      }
    }
  }
}

/** Merge the key splits of one task's rows: out = sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M). */
__global__ void attention_combine_kernel(const AttnParams p) {
  const AttnTask tk = p.tasks[p.combine[blockIdx.x]];
  const int D = p.headSize;
  const int GG = tk.g1 - tk.g0;
  const int R = (tk.t1 - tk.t0) * GG;
  const int qStart = p.qsl[tk.seq];
  for (int r = 0; r < R; r++) {
    float M = -INFINITY;
    for (int sp = 0; sp < tk.nsplit; sp++) M = fmaxf(M, p.partials[(tk.partial + (long long)sp * R + r) * (D + 2)]);
    float L = 0.0f;
    for (int sp = 0; sp < tk.nsplit; sp++) {
      const float* part = p.partials + (tk.partial + (long long)sp * R + r) * (D + 2);
      if (part[0] != -INFINITY) L += part[1] * expf(part[0] - M);
    }
    const float inv = 1.0f / L;
    const int ti = r / GG, g = tk.g0 + r % GG;
    const int64_t row = (int64_t)(qStart + tk.t0 + ti) * p.numHeads + (int64_t)tk.kvh * p.group + g;
    if (p.lse && threadIdx.x == 0) p.lse[row] = M + logf(L);
    float* o = p.out + row * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
      float acc = 0.0f;
      for (int sp = 0; sp < tk.nsplit; sp++) {
        const float* part = p.partials + (tk.partial + (long long)sp * R + r) * (D + 2);
        if (part[0] != -INFINITY) acc += part[2 + d] * expf(part[0] - M);
      }
      o[d] = acc * inv;
    }
  }
}

// ------------------------------------------------------------------------------------------------
// decode kernel: one query token per sequence, everything in registers
// ------------------------------------------------------------------------------------------------
//
// The tiled kernel above stages every K/V tile in shared memory as float32 and re-reads it once per query row; for
// decode that shared-memory traffic (~20x the HBM bytes with FP8 at a GQA group of 4), not HBM, bounds it, and FP8
// gained nothing over bf16 on an H200. This kernel never touches shared memory in its main loop:
// - A task is one sequence, one kv head, up to 8 query heads of its GQA group (the rows), and a key range (split-k
//   as above). Each group of TG lanes owns one key at a time: lane gl holds elements [8 gl, 8 gl + 8) of the key,
//   of the value, of every row's query and of every row's output accumulator (TG = head size / 8 rounded up to a
//   power of two; lanes past the head size hold zeros).
// - A key's raw bytes are loaded once per block (8 bytes per lane for FP8, 16 for bf16 / f16, 32 for f32) and decoded
//   once for all rows; the FP8 scales multiply the score and the final output instead of every element (exact in
//   value up to float32 rounding: sum(q * k) * ks vs sum(q * fround(k * ks))).
// - Scores are reduced across the TG lanes with xor shuffles; each key group keeps its own online-softmax state
//   (max, sum, accumulator), U keys at a time (one rescale per U keys); the groups of a warp merge with shuffles
//   and the warps of a block through shared memory once, at the end.

/** Raw cache bytes of one lane's 8 elements. */
template <int DT>
struct Raw8 {
  static constexpr int EB = DT == kF32 ? 4 : (DT <= kF16 ? 2 : 1);
  static constexpr int WORDS = 2 * EB;  // 32-bit words
  uint32_t w[WORDS];

  KVQ_DI void load(const char* src) {
    if constexpr (EB == 1) {
      const uint2 v = *reinterpret_cast<const uint2*>(src);
      w[0] = v.x;
      w[1] = v.y;
    } else {
#pragma unroll
      for (int i = 0; i < EB / 2; i++) {
        const uint4 v = reinterpret_cast<const uint4*>(src)[i];
        w[4 * i] = v.x;
        w[4 * i + 1] = v.y;
        w[4 * i + 2] = v.z;
        w[4 * i + 3] = v.w;
      }
    }
  }
  KVQ_DI void zero() {
#pragma unroll
    for (int i = 0; i < WORDS; i++) w[i] = 0u;
  }
  /** The 8 elements as float32 (exact; FP8 unscaled). */
  KVQ_DI void decode(float* out) const {
    if constexpr (DT == kF32) {
#pragma unroll
      for (int i = 0; i < 8; i++) out[i] = bits_as_f32(w[i]);
    } else if constexpr (DT == kBF16 || DT == kF16) {
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const uint16_t a = (uint16_t)(w[i] & 0xFFFFu), b = (uint16_t)(w[i] >> 16);
        out[2 * i] = DT == kBF16 ? bf16_to_f32(a) : f16_to_f32(a);
        out[2 * i + 1] = DT == kBF16 ? bf16_to_f32(b) : f16_to_f32(b);
      }
    } else {
      decode_fp8x4<DT>(w[0], out);
      decode_fp8x4<DT>(w[1], out + 4);
    }
  }
};

/** Keys each lane group has in flight per iteration: enough bytes per warp to keep HBM busy. */
template <int DT, int RG>
struct DecodeUnroll {
  static constexpr int value = DT >= kFp8E4M3FN ? (RG >= 8 ? 2 : 4) : (DT == kF32 || RG >= 8 ? 1 : 2);
};

static const int kDecodeRowsMax = 8;  // query rows per decode task (registers: query + accumulator per row)

/** Shared memory of the decode kernel: per warp and row, max, sum and the accumulator. */
static size_t decode_smem_bytes(int warps, int D) { return sizeof(float) * (size_t)warps * kDecodeRowsMax * (size_t)(D + 2); }

/**
 * The end of a decode task: merge the warps' (max, sum, accumulator) rows that each warp wrote to smem
 * ([warp][row][D + 2], after a barrier), multiply by the value scale `vs` and write the output (or the split's
 * partial row).
 */
KVQ_DI void decode_finish(const AttnParams& p, const AttnTask& tk, const float* smem, int nw, float vs) {
  const int D = p.headSize, R = tk.g1 - tk.g0, stride = D + 2;
  const int64_t qStart = p.qsl[tk.seq];
  for (int i = threadIdx.x; i < R * D; i += blockDim.x) {
    const int r = i / D, d = i % D;
    float M = -INFINITY;
    for (int w = 0; w < nw; w++) M = fmaxf(M, smem[((size_t)w * kDecodeRowsMax + r) * stride]);
    float L = 0.0f, A = 0.0f;
    if (M != -INFINITY) {
      for (int w = 0; w < nw; w++) {
        const float* ws = smem + ((size_t)w * kDecodeRowsMax + r) * stride;
        if (ws[0] == -INFINITY) continue;
        const float c = expf(ws[0] - M);
        L = fmaf(ws[1], c, L);
        A = fmaf(ws[2 + d], c, A);
      }
    }
    // FP8: the value scale multiplies the accumulated sum once.
    A *= vs;
    if (tk.nsplit == 1) {
      const int64_t row = qStart * p.numHeads + (int64_t)tk.kvh * p.group + tk.g0 + r;
      if (p.lse && d == 0) p.lse[row] = M + logf(L);
      p.out[row * D + d] = A / L;
    } else {
      float* part = p.partials + (tk.partial + (long long)tk.split * R + r) * (D + 2);
      if (d == 0) {
        part[0] = M;
        part[1] = L;
      }
      part[2 + d] = A;
    }
  }
}

/**
 * What both decode kernels derive from their task: the query rows, the FP8 scales of the kv head, the score
 * multiplier (softmax scale x K scale x, in FP8-query mode, the query scale: a float64 product rounded once), and
 * the key range [lo, hi) of the task's one query token (causal, sliding window, the task's split).
 */
struct DecodeSetup {
  int R, h;
  const float* q;  // the task's first query row; row r is q + r * headSize
  float ks, vs, qs, mul;
  int lo, hi;
};

template <int DT>
KVQ_DI DecodeSetup decode_setup(const AttnParams& p, const AttnTask& tk) {
  DecodeSetup d;
  d.R = tk.g1 - tk.g0;
  d.h = tk.kvh;
  const int64_t qStart = p.qsl[tk.seq];
  d.q = p.q + (qStart * p.numHeads + (int64_t)d.h * p.group + tk.g0) * p.headSize;
  constexpr bool kFp8 = DT >= kFp8E4M3FN;
  d.ks = kFp8 ? p.kScale[p.scaleLen == 1 ? 0 : d.h] : 1.0f;
  d.vs = kFp8 ? p.vScale[p.scaleLen == 1 ? 0 : d.h] : 1.0f;
  d.qs = p.fp8Query ? p.qScaleKv[d.h] : 1.0f;
  d.mul = (float)((double)p.softmaxScale * (double)d.ks * (double)d.qs);
  const int pos = p.seqLens[tk.seq] - 1;
  const int lo = p.slidingWindow > 0 ? pos - p.slidingWindow + 1 : 0;
  d.lo = lo > tk.k0 ? lo : tk.k0;
  d.hi = pos + 1 < tk.k1 ? pos + 1 : tk.k1;
  return d;
}

/**
 * A decode row's running softmax state moved to a new maximum mNew (base 2): the sum and the accumulator scaled by
 * exp2(m - mNew) (1 while nothing was attended).
 */
KVQ_DI void decode_rescale(float& m, float& l, float (&acc)[8], float mNew) {
  const float corr = mNew == -INFINITY ? 1.0f : exp2f(m - mNew);
  m = mNew;
  l *= corr;
#pragma unroll
  for (int e = 0; e < 8; e++) acc[e] *= corr;
}

/**
 * The online-softmax step of the decode kernel for 16 lanes per key (head size 128), by reduce-scatter instead of an
 * all-reduce: the V = U x RG partial scores of a lane group are summed so that each lane ends with ONE full score
 * (pair i = u * RG + r at lanes i * 16 / V .. + 16 / V - 1 of the group: 15 shuffles at V = 16 instead of 64), which
 * it scales, masks and exponentiates (one exp2f instead of V); the row maxima and the weights are then gathered with
 * shuffles, so every lane ends with the same m, l, corr and pr as the all-reduce path (up to the order of the score
 * additions). s: [U][RG] partial dot products (consumed); pr: [U][RG] softmax weights out; m, l, acc: the running
 * state (base 2), rescaled here. key0: the key of u = 0 for this group (base + group); keys step by NG; hi: end.
 */
template <int U, int RG>
KVQ_DI void decode_softmax_rs(float (&s)[U][RG], float (&pr)[U][RG], float (&m)[RG], float (&l)[RG], float (&acc)[RG][8],
                              int gl, int gl0, int key0, int NG, int hi, float mul) {
  constexpr int V = U * RG;  // <= 16 (DecodeUnroll keeps U * RG within 16)
  static_assert(V >= 1 && V <= 16 && (V & (V - 1)) == 0, "U x RG must be a power of two <= 16");
  constexpr int REP = 16 / V;  // lanes holding the same pair after the reduce-scatter
  float v[V];
#pragma unroll
  for (int i = 0; i < V; i++) v[i] = s[i / RG][i % RG];
  // Reduce-scatter over offsets 8, 4, 2, 1: while more than one value is left, a lane keeps the half its offset bit
  // selects and adds the partner's copy of it; once one is left, the remaining offsets all-reduce it.
#pragma unroll
  for (int k = 0; k < 4; k++) {
    const int o = 8 >> k;
    const int count = V >> k;  // values left before this step (>= 1 after constant folding)
    if (count > 1) {
      const int half = count / 2;
      const bool upper = (gl & o) != 0;
#pragma unroll
      for (int i = 0; i < 8; i++) {
        if (i < half) {
          const float keep = upper ? v[half + i] : v[i];
          const float send = upper ? v[i] : v[half + i];
          v[i] = keep + KVQ_SHFL_XOR(send, o);
        }
      }
    } else {
      v[0] += KVQ_SHFL_XOR(v[0], o);
    }
  }
  const int pair = gl / REP, myU = pair / RG, myR = pair % RG;
  const bool valid = key0 + myU * NG < hi;
  const float sc = valid ? v[0] * mul : -INFINITY;
  // The maximum over u of row myR: lanes whose pair differs in u are 16 / U apart.
  float mx = sc;
#pragma unroll
  for (int o = 16 / U; o < 16; o <<= 1) mx = fmaxf(mx, KVQ_SHFL_XOR(mx, o));
  float mNew[RG];
#pragma unroll
  for (int r = 0; r < RG; r++) {
    mNew[r] = fmaxf(m[r], KVQ_SHFL(mx, gl0 + r * REP));  // pair (0, r) sits at lane r * REP of the group
  }
  float myM = mNew[0];
#pragma unroll
  for (int r = 1; r < RG; r++) myM = myR == r ? mNew[r] : myM;
  const float pv = valid && myM != -INFINITY ? exp2f(sc - myM) : 0.0f;
#pragma unroll
  for (int r = 0; r < RG; r++) decode_rescale(m[r], l[r], acc[r], mNew[r]);
#pragma unroll
  for (int u = 0; u < U; u++) {
#pragma unroll
    for (int r = 0; r < RG; r++) {
      pr[u][r] = KVQ_SHFL(pv, gl0 + (u * RG + r) * REP);
      l[r] += pr[u][r];
    }
  }
}

/**
 * RG: rows compiled for (1, 2, 4 or 8; the task may use fewer). TGC: lanes per key when known at compile time (16:
 * head size 128, the common case, with the reduce-scatter softmax of decode_softmax_rs), else 0 (p.tg lanes).
 */
template <int DT, int RG, int TGC>
__global__ void KVQ_ATTN_BOUNDS(RG <= 4 ? 2 : 8) paged_decode_kernel(const AttnParams p) {
  KVQ_DYNAMIC_SHARED(float, smem);
  constexpr int U = DecodeUnroll<DT, RG>::value;
  constexpr int EB = Raw8<DT>::EB;
  const AttnTask tk = p.tasks[blockIdx.x];
  const int D = p.headSize, TG = TGC > 0 ? TGC : p.tg;
  const int lane = threadIdx.x % KVQ_WARP, warp = threadIdx.x / KVQ_WARP, nw = blockDim.x / KVQ_WARP;
  const int gl = lane % TG, group = threadIdx.x / TG, NG = blockDim.x / TG;
  const DecodeSetup ds = decode_setup<DT>(p, tk);
  const int R = ds.R, h = ds.h, lo = ds.lo, hi = ds.hi;
  const float vs = ds.vs, qs = ds.qs;
  // Scores in base 2 (x log2 e folded into the multiplier): the softmax runs on exp2f, one ex2 instruction, instead
  // of expf's range reduction; the running maxima go back to base e before the merge.
  const float mul = ds.mul * 1.4426950408889634f;
  const int fmt = p.dtype - kFp8E4M3FN;
  const int d0 = gl * 8;
  const bool mine = d0 < D;  // this lane holds 8 head-dimension elements

  float q[RG][8];
#pragma unroll
  for (int r = 0; r < RG; r++) {
#pragma unroll
    for (int e = 0; e < 8; e++) {
      float v = 0.0f;
      if (r < R && mine) {
        v = ds.q[(int64_t)r * D + d0 + e];
        if (p.fp8Query) v = fp8_decode_rt(fp8_encode_rt(v / qs, fmt, p.fp8Query == 1), fmt);
      }
      q[r][e] = v;
    }
  }

  float m[RG], l[RG], acc[RG][8];
#pragma unroll
  for (int r = 0; r < RG; r++) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; e++) acc[r][e] = 0.0f;
  }
  const int32_t* bt = p.blockTables + (int64_t)tk.seq * p.maxBlocksPerSeq;
  const int64_t slotBytes = (int64_t)p.numKvHeads * D * EB;
  const int64_t laneOff = ((int64_t)h * D + d0) * EB;
  const char* kc = static_cast<const char*>(p.kc);
  const char* vc = static_cast<const char*>(p.vc);

  // Keys [base, base + NG * U) of this group: raw bytes (zeros for keys past hi or lanes past the head size).
  auto fetch = [&](int base, Raw8<DT>* kr, Raw8<DT>* vr, bool* valid) {
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int j = base + u * NG + group;
      valid[u] = j < hi;
      if (valid[u] && mine) {
        const int64_t off = ((int64_t)bt[j / p.blockSize] * p.blockSize + j % p.blockSize) * slotBytes + laneOff;
        kr[u].load(kc + off);
        vr[u].load(vc + off);
      } else {
        kr[u].zero();
        vr[u].zero();
      }
    }
  };
  // Software pipelining: the next step's keys and values are loaded before this step's arithmetic, so the memory
  // latency overlaps the scores, the softmax and P.V instead of adding to them.
  Raw8<DT> kr[U], vr[U];
  bool valid[U];
  fetch(lo, kr, vr, valid);
  // The loop bounds are uniform over the block, so every lane reaches every shuffle.
  for (int base = lo; base < hi; base += NG * U) {
    Raw8<DT> kn[U], vn[U];
    bool validNext[U];
    fetch(base + NG * U, kn, vn, validNext);
    float s[U][RG];
#pragma unroll
    for (int u = 0; u < U; u++) {
      float kf[8];
      kr[u].decode(kf);
#pragma unroll
      for (int r = 0; r < RG; r++) {
        float t = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; e++) t = fmaf(q[r][e], kf[e], t);
        s[u][r] = t;
      }
    }
    float pr[U][RG];
    if constexpr (TGC == 16) {
      decode_softmax_rs<U, RG>(s, pr, m, l, acc, gl, lane - gl, base + group, NG, hi, mul);
    } else {
      // One butterfly step for all U x RG scores at a time (independent shuffles in flight, not one chain per score).
      for (int o = TG >> 1; o > 0; o >>= 1) {
#pragma unroll
        for (int u = 0; u < U; u++) {
#pragma unroll
          for (int r = 0; r < RG; r++) s[u][r] += KVQ_SHFL_XOR(s[u][r], o);
        }
      }
#pragma unroll
      for (int u = 0; u < U; u++) {
#pragma unroll
        for (int r = 0; r < RG; r++) s[u][r] = valid[u] ? s[u][r] * mul : -INFINITY;
      }
#pragma unroll
      for (int r = 0; r < RG; r++) {
        float mx = s[0][r];
#pragma unroll
        for (int u = 1; u < U; u++) mx = fmaxf(mx, s[u][r]);
        const float mNew = fmaxf(m[r], mx);
#pragma unroll
        for (int u = 0; u < U; u++) pr[u][r] = valid[u] && mNew != -INFINITY ? exp2f(s[u][r] - mNew) : 0.0f;
        decode_rescale(m[r], l[r], acc[r], mNew);
      }
#pragma unroll
      for (int u = 0; u < U; u++) {
#pragma unroll
        for (int r = 0; r < RG; r++) l[r] += pr[u][r];
      }
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
      float vf[8];
      vr[u].decode(vf);
#pragma unroll
      for (int r = 0; r < RG; r++) {
#pragma unroll
        for (int e = 0; e < 8; e++) acc[r][e] = fmaf(pr[u][r], vf[e], acc[r][e]);
      }
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
      kr[u] = kn[u];
      vr[u] = vn[u];
      valid[u] = validNext[u];
    }
  }

#pragma unroll
  for (int r = 0; r < RG; r++) m[r] *= 0.6931471805599453f;  // back to base e (-inf stays -inf)
  // Merge the key groups of each warp (lanes gl and gl ^ o hold the same elements of different groups).
  for (int o = TG; o < KVQ_WARP; o <<= 1) {
#pragma unroll
    for (int r = 0; r < RG; r++) {
      const float mo = KVQ_SHFL_XOR(m[r], o);
      const float lo2 = KVQ_SHFL_XOR(l[r], o);
      const float M = fmaxf(m[r], mo);
      const float ca = m[r] == -INFINITY ? 0.0f : expf(m[r] - M);
      const float cb = mo == -INFINITY ? 0.0f : expf(mo - M);
      l[r] = l[r] * ca + lo2 * cb;
#pragma unroll
      for (int e = 0; e < 8; e++) {
        const float ao = KVQ_SHFL_XOR(acc[r][e], o);
        acc[r][e] = acc[r][e] * ca + ao * cb;
      }
      m[r] = M;
    }
  }
  // Then the warps, through shared memory: [warp][row] = (max, sum, accumulator[D]).
  const int stride = D + 2;
  if (lane < TG) {
#pragma unroll
    for (int r = 0; r < RG; r++) {
      if (r >= R) continue;
      float* w = smem + ((size_t)warp * kDecodeRowsMax + r) * stride;
      if (lane == 0) {
        w[0] = m[r];
        w[1] = l[r];
      }
      if (mine) {
#pragma unroll
        for (int e = 0; e < 8; e++) w[2 + d0 + e] = acc[r][e];
      }
    }
  }
  __syncthreads();
  decode_finish(p, tk, smem, nw, vs);
}

// ------------------------------------------------------------------------------------------------
// FP8-query decode on FP8 tensor cores (sm_89+: mma.sync m16n8k32 e4m3 / e5m2)
// ------------------------------------------------------------------------------------------------
//
// In FP8-query mode the scores are products of raw FP8 values (query codes x key codes), which FP8 tensor cores
// multiply exactly. A warp computes S = Q K^T for 8 keys at a time with mma.m16n8k32 (M = 16 rows: the task's <= 8
// query heads and 8 zero rows; N = 8 keys; K = 32 head dimensions per instruction, head size / 32 instructions).
// The head dimensions may be permuted consistently in both operands (the sum does not care), so lane (g, t) loads
// bytes [t D/4, (t + 1) D/4) of key g of the tile in one go and the query row g bytes of the same range; step s uses
// bytes [t D/4 + 8 s, + 8). Accumulator c0, c1 of lane (g, t) are then the scores of query row g with keys 2t and
// 2t + 1. The online softmax runs per row over the 4 lanes of its quad; P.V stays in float32 (the contract keeps the
// softmax weights exact): lane (g, t) accumulates row g's output dimensions [t D/4, (t + 1) D/4), reading the value
// bytes of those dimensions (the 8 quads read the same bytes: one broadcast load).
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k32", 8-bit types): groupID g = lane >> 2, t = lane & 3;
// A (row-major 16 x 32): a0..a3 row g cols 4t..4t+3, a4..a7 row g+8 cols 4t.., a8..a11 row g cols 4t+16..,
// a12..a15 row g+8 cols 4t+16..; B (32 x 8, column-major): b0..b3 rows 4t..4t+3 col g, b4..b7 rows 4t+16.. col g;
// C (16 x 8, f32): c0, c1 row g cols 2t, 2t+1; c2, c3 row g+8.
// Warp width 32 only (NVIDIA); the simulator and compilers without FP8 MMA run the same fragments through
// mma_fp8_emulated (shuffles; exact products, float32 sums in k order).

/** D (16x8 f32) += A (16x32 FP8) x B (32x8 FP8) on fragments, with warp shuffles: the semantics of the MMA. */
template <int DT>
KVQ_DI void mma_fp8_emulated(float c[4], const uint32_t a[4], const uint32_t b[2]) {
  const int lane = threadIdx.x % KVQ_WARP;
  const int g = lane >> 2, t = lane & 3;
  // Row g and row g + 8 of A: 32 codes each, from the 4 lanes of quad g.
  uint32_t arow[2][8], bcol[2][8];
#pragma unroll
  for (int q = 0; q < 4; q++) {
    const int src = g * 4 + q;
    // Lane q of the quad holds cols 4q..4q+3 (reg 0 / 1) and 4q+16.. (reg 2 / 3).
    arow[0][q] = KVQ_SHFL(a[0], src);
    arow[1][q] = KVQ_SHFL(a[1], src);
    arow[0][4 + q] = KVQ_SHFL(a[2], src);
    arow[1][4 + q] = KVQ_SHFL(a[3], src);
  }
  // Columns 2t and 2t + 1 of B: held by the lanes of quads 2t and 2t + 1.
#pragma unroll
  for (int n = 0; n < 2; n++) {
#pragma unroll
    for (int q = 0; q < 4; q++) {
      const int src = (2 * t + n) * 4 + q;
      bcol[n][q] = KVQ_SHFL(b[0], src);
      bcol[n][4 + q] = KVQ_SHFL(b[1], src);
    }
  }
#pragma unroll
  for (int r = 0; r < 2; r++) {
#pragma unroll
    for (int n = 0; n < 2; n++) {
      float acc = c[2 * r + n];
#pragma unroll
      for (int w = 0; w < 8; w++) {
        float av[4], bv[4];
        decode_fp8x4<DT>(arow[r][w], av);
        decode_fp8x4<DT>(bcol[n][w], bv);
#pragma unroll
        for (int e = 0; e < 4; e++) acc = fmaf(av[e], bv[e], acc);
      }
      c[2 * r + n] = acc;
    }
  }
}

template <int DT>
KVQ_DI void mma_fp8(float c[4], const uint32_t a[4], const uint32_t b[2]) {
#if !KVQ_IS_HIP && !KVQ_IS_SIM && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  if constexpr (DT == kFp8E4M3FN) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.f32.e5m2.e5m2.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#else
  mma_fp8_emulated<DT>(c, a, b);
#endif
}

/** DT: e4m3fn or e5m2 (the MMA's operand types); NS: head size / 32 (2, 4 or 8). */
template <int DT, int NS>
__global__ void KVQ_ATTN_BOUNDS(NS <= 4 ? 2 : 8) paged_decode_mma_kernel(const AttnParams p) {
#if (defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 890) || (KVQ_IS_HIP && defined(__HIP_DEVICE_COMPILE__))
  // Device code for targets without FP8 MMA: never launched there (fp8_mma_allowed), so not compiled.
  (void)p;
#else
  KVQ_DYNAMIC_SHARED(float, smem);
  constexpr int D = NS * 32, DQ = D / 4;  // head size; bytes (= dims) per lane
  const AttnTask tk = p.tasks[blockIdx.x];
  const int lane = threadIdx.x % KVQ_WARP, warp = threadIdx.x / KVQ_WARP, nw = blockDim.x / KVQ_WARP;
  const int g = lane >> 2, t = lane & 3;
  const DecodeSetup ds = decode_setup<DT>(p, tk);
  const int h = ds.h, lo = ds.lo, hi = ds.hi;
  const float vs = ds.vs, qs = ds.qs, mul = ds.mul;
  const int fmt = DT - kFp8E4M3FN;
  const bool rowOk = g < ds.R;

  // This lane's query bytes: row g, dims [t DQ, (t + 1) DQ), as FP8 codes of q / qScale.
  uint32_t qa[NS][2];
#pragma unroll
  for (int s2 = 0; s2 < NS; s2++) {
#pragma unroll
    for (int half = 0; half < 2; half++) {
      uint32_t w = 0;
      if (rowOk) {
        const float* qrow = ds.q + (int64_t)g * D + t * DQ + 8 * s2 + 4 * half;
#pragma unroll
        for (int e = 0; e < 4; e++) w |= (fp8_encode_rt(qrow[e] / qs, fmt, p.fp8Query == 1) & 0xFFu) << (8 * e);
      }
      qa[s2][half] = w;
    }
  }

  float m = -INFINITY, l = 0.0f, acc[DQ];
#pragma unroll
  for (int e = 0; e < DQ; e++) acc[e] = 0.0f;
  const int32_t* bt = p.blockTables + (int64_t)tk.seq * p.maxBlocksPerSeq;
  const int64_t slotBytes = (int64_t)p.numKvHeads * D;
  const char* kc = static_cast<const char*>(p.kc) + (int64_t)h * D + t * DQ;
  const char* vc = static_cast<const char*>(p.vc) + (int64_t)h * D + t * DQ;
  auto slotOf = [&](int j) { return (int64_t)bt[j / p.blockSize] * p.blockSize + j % p.blockSize; };

  // Warp w takes the tiles of 8 keys w, w + nw, ...; the bounds are uniform over the warp.
  for (int base = lo + warp * 8; base < hi; base += nw * 8) {
    const int jk = base + g;  // the key this lane loads for B
    uint32_t kb[NS][2];
    if (jk < hi) {
      const uint4* src = reinterpret_cast<const uint4*>(kc + slotOf(jk) * slotBytes);
#pragma unroll
      for (int i = 0; i < NS / 2; i++) {
        const uint4 v = src[i];
        kb[2 * i][0] = v.x;
        kb[2 * i][1] = v.y;
        kb[2 * i + 1][0] = v.z;
        kb[2 * i + 1][1] = v.w;
      }
    } else {
#pragma unroll
      for (int s2 = 0; s2 < NS; s2++) kb[s2][0] = kb[s2][1] = 0u;
    }
    float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int s2 = 0; s2 < NS; s2++) {
      const uint32_t a[4] = {qa[s2][0], 0u, qa[s2][1], 0u};
      mma_fp8<DT>(c, a, kb[s2]);
    }
    // Row g, keys base + 2t and base + 2t + 1.
    const bool v0 = rowOk && base + 2 * t < hi, v1 = rowOk && base + 2 * t + 1 < hi;
    const float s0 = v0 ? c[0] * mul : -INFINITY, s1 = v1 ? c[1] * mul : -INFINITY;
    float mx = fmaxf(s0, s1);
    mx = fmaxf(mx, KVQ_SHFL_XOR(mx, 1));
    mx = fmaxf(mx, KVQ_SHFL_XOR(mx, 2));
    const float mNew = fmaxf(m, mx);
    const float corr = mNew == -INFINITY ? 1.0f : expf(m - mNew);
    const float p0 = v0 ? expf(s0 - mNew) : 0.0f, p1 = v1 ? expf(s1 - mNew) : 0.0f;
    float ps = p0 + p1;
    ps += KVQ_SHFL_XOR(ps, 1);
    ps += KVQ_SHFL_XOR(ps, 2);
    l = l * corr + ps;
    m = mNew;
#pragma unroll
    for (int e = 0; e < DQ; e++) acc[e] *= corr;
    // P.V: key base + 2q + n's weight for row g sits in lane 4g + q (p0 for n = 0, p1 for n = 1).
#pragma unroll
    for (int q = 0; q < 4; q++) {
      const float pa = KVQ_SHFL(p0, g * 4 + q), pb = KVQ_SHFL(p1, g * 4 + q);
#pragma unroll
      for (int n = 0; n < 2; n++) {
        const int j = base + 2 * q + n;
        if (j >= hi) continue;  // uniform over the warp
        const float pw = n == 0 ? pa : pb;
        const uint4* src = reinterpret_cast<const uint4*>(vc + slotOf(j) * slotBytes);
#pragma unroll
        for (int i = 0; i < DQ / 16; i++) {
          const uint4 v = src[i];
          const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
          for (int w = 0; w < 4; w++) {
            float f[4];
            decode_fp8x4<DT>(words[w], f);
#pragma unroll
            for (int e = 0; e < 4; e++) acc[16 * i + 4 * w + e] = fmaf(pw, f[e], acc[16 * i + 4 * w + e]);
          }
        }
      }
    }
  }
  // Per warp and row: lane t == 0 of quad g writes (max, sum); every lane of the quad its dimensions.
  const int stride = D + 2;
  if (rowOk) {
    float* w = smem + ((size_t)warp * kDecodeRowsMax + g) * stride;
    if (t == 0) {
      w[0] = m;
      w[1] = l;
    }
#pragma unroll
    for (int e = 0; e < DQ; e++) w[2 + t * DQ + e] = acc[e];
  }
  __syncthreads();
  decode_finish(p, tk, smem, nw, vs);
#endif
}

// ------------------------------------------------------------------------------------------------
// planning and launching
// ------------------------------------------------------------------------------------------------

struct AttnPlan {
  std::vector<AttnTask> tasks;
  std::vector<int> combine;
  long long partialRows = 0;
  int tk = 32;
  int rowsCap = kRowsMax;
  int dch = 1;
  bool decode = false;  // the register decode kernel (else the tiled kernel)
  bool mma = false;     // decode in FP8-query mode on FP8 tensor cores
  int tg = 0;           // decode: lanes per key
  int rg = 0;           // decode: rows compiled for
  int dtype = 0;
  size_t smem = 0;
  int maxSplits = 1;
  int64_t residentBlocks = 0;
};

typedef void (*AttnKernel)(const AttnParams);

/** The kernel variant for a plan: head-dimension chunks per lane and decode-sized (<= 8 rows) or prefill tiles. */
static AttnKernel attention_kernel(int dch, int rowsCap) {
  const bool few = rowsCap <= 2 * kWarpsPerBlock;
  switch (dch) {
    case 2: return few ? paged_attention_kernel<2, 2> : paged_attention_kernel<2, 8>;
    case 4: return few ? paged_attention_kernel<4, 2> : paged_attention_kernel<4, 8>;
    default: return few ? paged_attention_kernel<8, 2> : paged_attention_kernel<8, 8>;
  }
}

/** The decode kernel variant for a cache dtype, a row count (1, 2, 4 or 8) and lanes per key (16: the reduce-scatter one). */
static AttnKernel decode_kernel(int dtype, int rg, int tg) {
  AttnKernel k = nullptr;
  with_dtype(dtype, [&](auto c) {
    constexpr int DT = decltype(c)::value;
    const bool rs = tg == 16;
    switch (rg) {
      case 1: k = rs ? paged_decode_kernel<DT, 1, 16> : paged_decode_kernel<DT, 1, 0>; break;
      case 2: k = rs ? paged_decode_kernel<DT, 2, 16> : paged_decode_kernel<DT, 2, 0>; break;
      case 4: k = rs ? paged_decode_kernel<DT, 4, 16> : paged_decode_kernel<DT, 4, 0>; break;
      default: k = rs ? paged_decode_kernel<DT, 8, 16> : paged_decode_kernel<DT, 8, 0>; break;
    }
    return true;
  });
  return k;
}

/** The FP8-MMA decode kernel for a cache dtype (e4m3fn / e5m2) and head size (64, 128 or 256). */
static AttnKernel decode_mma_kernel(int dtype, int D) {
  const bool e4 = dtype == kFp8E4M3FN;
  switch (D) {
    case 64: return e4 ? paged_decode_mma_kernel<kFp8E4M3FN, 2> : paged_decode_mma_kernel<kFp8E5M2, 2>;
    case 128: return e4 ? paged_decode_mma_kernel<kFp8E4M3FN, 4> : paged_decode_mma_kernel<kFp8E5M2, 4>;
    default: return e4 ? paged_decode_mma_kernel<kFp8E4M3FN, 8> : paged_decode_mma_kernel<kFp8E5M2, 8>;
  }
}

/**
 * Whether FP8-query decode may use FP8 tensor cores: only with `KVQ_FP8_MMA=1` for now (the kernel is verified on the
 * simulator, not yet on a GPU), on NVIDIA sm_89+ (or the simulator at warp 32).
 */
static bool fp8_mma_allowed(const Context* ctx) {
  const char* v = getenv("KVQ_FP8_MMA");
  if (!(v && strcmp(v, "1") == 0) || ctx->props.warpSize != 32) return false;
#if KVQ_IS_SIM
  return true;
#elif KVQ_IS_HIP
  return false;
#else
  return ctx->props.major * 10 + ctx->props.minor >= 89;
#endif
}

/**
 * Which kernel decode batches use: `KVQ_ATTN_KERNEL=tiled` forces the tiled kernel (the one measured on an H200 in
 * the package README), anything else (default) picks the register decode kernel when every sequence has one query
 * token and the head size suits it.
 */
static bool decode_kernel_allowed() {
  const char* v = getenv("KVQ_ATTN_KERNEL");
  return !(v && strcmp(v, "tiled") == 0);
}

/** Blocks of `kernel` the whole device holds at once (occupancy x multiprocessors); 4 per SM if unknown. */
static int64_t resident_blocks(Context* ctx, AttnKernel kernel, int threads, size_t smem) {
  const int64_t sms = std::max(1, ctx->props.multiProcessors);
#if !KVQ_IS_HIP
  if (smem > 48 * 1024 &&
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) != cudaSuccess) {
    (void)cudaGetLastError();
    return sms * 4;
  }
#endif
  int perSm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&perSm, kernel, threads, smem) != cudaSuccess || perSm <= 0) {
    (void)cudaGetLastError();
    return sms * 4;
  }
  return sms * perSm;
}

static bool plan_attention(Context* ctx, int dtype, int fp8Query, const int32_t* qsl, const int32_t* seqLens, int numSeqs, int numHeads,
                           int numKvHeads, int D, int slidingWindow, AttnPlan* plan, Status* st) {
  const int warpSize = ctx->props.warpSize > 0 ? ctx->props.warpSize : 32;
  const int G = numHeads / numKvHeads;
  plan->dtype = dtype;
  // Decode batches (one query token per sequence) with a head size of 8k elements, k <= the warp width.
  bool oneToken = true;
  for (int s = 0; s < numSeqs && oneToken; s++) oneToken = qsl[s + 1] - qsl[s] <= 1;
  int tg = 1;
  while (tg * 8 < D) tg <<= 1;
  const int64_t smemLimit = ctx->props.sharedPerBlockOptin > 0 ? ctx->props.sharedPerBlockOptin : 48 * 1024;
  plan->decode = oneToken && D % 8 == 0 && tg <= warpSize && decode_kernel_allowed() &&
                 (int64_t)decode_smem_bytes(kWarpsPerBlock, D) <= smemLimit;
  const int gsz = plan->decode ? std::min(G, kDecodeRowsMax) : (G < kRowsMax ? G : kRowsMax);
  const int ngroups = (G + gsz - 1) / gsz;
  const int qt = plan->decode ? 1 : std::max(1, kRowsMax / gsz);
  // Shared memory holds the largest task's query rows (decode: one token x the GQA group).
  int maxQ = 1;
  for (int s = 0; s < numSeqs; s++) maxQ = std::max(maxQ, std::min(qt, qsl[s + 1] - qsl[s]));
  plan->rowsCap = std::min(kRowsMax, maxQ * gsz);
  int dch = (D + warpSize - 1) / warpSize;
  if (dch > 8) {
    st->code = kUnsupported;
    snprintf(st->message, sizeof(st->message), "pagedAttention: head size %d is larger than the GPU kernel's %d", D,
             8 * warpSize);
    return false;
  }
  plan->dch = dch <= 2 ? 2 : dch <= 4 ? 4 : 8;  // (a DCH-1 variant would only save registers for head sizes <= 32)
  const int64_t limit = ctx->props.sharedPerBlockOptin > 0 ? ctx->props.sharedPerBlockOptin : 48 * 1024;
  plan->tk = 0;
  for (int tk : {32, 16, 8}) {
    if (tk > warpSize || warpSize % tk != 0) continue;
    if ((int64_t)attn_smem_bytes(plan->rowsCap, D, tk) <= limit) {
      plan->tk = tk;
      break;
    }
  }
  if (plan->tk == 0 && !plan->decode) {
    st->code = kUnsupported;
    snprintf(st->message, sizeof(st->message),
             "pagedAttention: head size %d needs more shared memory per block than this device's %lld bytes", D,
             (long long)limit);
    return false;
  }
  plan->smem = attn_smem_bytes(plan->rowsCap, D, plan->tk);

  int64_t base = 0;
  for (int s = 0; s < numSeqs; s++) base += ceil_div(qsl[s + 1] - qsl[s], qt) * numKvHeads * ngroups;
  // Split keys only while the device would otherwise be under-filled, and so that every task fits in one wave of
  // resident blocks (a second, nearly empty wave would double the time).
  const int threads = kWarpsPerBlock * warpSize;
  if (plan->decode) {
    plan->mma = fp8Query && (dtype == kFp8E4M3FN || dtype == kFp8E5M2) && (D == 64 || D == 128 || D == 256) &&
                fp8_mma_allowed(ctx);
    plan->tg = tg;
    plan->rg = gsz <= 1 ? 1 : gsz <= 2 ? 2 : gsz <= 4 ? 4 : 8;
    plan->rowsCap = gsz;
    plan->smem = decode_smem_bytes(kWarpsPerBlock, D);
  }
  const int64_t slots = resident_blocks(
      ctx,
      plan->mma ? decode_mma_kernel(dtype, D) : plan->decode ? decode_kernel(dtype, plan->rg, plan->tg) : attention_kernel(plan->dch, plan->rowsCap),
      threads, plan->smem);
  plan->residentBlocks = slots;
  const int64_t want = base >= slots ? 1 : std::max<int64_t>(1, slots / std::max<int64_t>(base, 1));
  plan->tasks.clear();
  plan->combine.clear();
  plan->partialRows = 0;
  plan->maxSplits = 1;
  for (int s = 0; s < numSeqs; s++) {
    const int qLen = qsl[s + 1] - qsl[s];
    const int ctxLen = seqLens[s];
    for (int t0 = 0; t0 < qLen; t0 += qt) {
      const int t1 = std::min(qLen, t0 + qt);
      const int pFirst = ctxLen - qLen + t0, pLast = ctxLen - qLen + t1 - 1;
      const int klo = slidingWindow > 0 ? std::max(0, pFirst - slidingWindow + 1) : 0;
      const int khi = pLast + 1;
      const int64_t nk = khi - klo;
      int64_t nsplit = std::min<int64_t>(want, ceil_div(nk, 256));
      if (nsplit < 1) nsplit = 1;
      int64_t step = ceil_div(nk, nsplit);
      // Split boundaries on multiples of 32 keys (a tile), so the work list stays the same over 32 x nsplit decode
      // steps (with the open-ended last split below, the tasks do not depend on the exact length).
      if (nsplit > 1) step = ceil_div(step, 32) * 32;
      nsplit = ceil_div(nk, step);
      plan->maxSplits = std::max<int>(plan->maxSplits, (int)nsplit);
      for (int h = 0; h < numKvHeads; h++) {
        for (int g0 = 0; g0 < G; g0 += gsz) {
          const int g1 = std::min(G, g0 + gsz);
          const int rows = (t1 - t0) * (g1 - g0);
          for (int64_t sp = 0; sp < nsplit; sp++) {
            AttnTask t;
            t.seq = s;
            t.kvh = h;
            t.g0 = g0;
            t.g1 = g1;
            t.t0 = t0;
            t.t1 = t1;
            // The first split starts at 0 and the last ends at "the end": the kernels clamp every row's range to its
            // own causal (and sliding-window) limits from the device's seqLens, so these tasks do not depend on the
            // length and stay valid (and uploaded) across decode steps.
            t.k0 = sp == 0 ? 0 : (int)(klo + sp * step);
            t.k1 = sp == nsplit - 1 ? INT32_MAX : (int)std::min<int64_t>(khi, klo + (sp + 1) * step);
            t.split = (int)sp;
            t.nsplit = (int)nsplit;
            t.partial = nsplit > 1 ? plan->partialRows : -1;
            if (nsplit > 1 && sp == 0) plan->combine.push_back((int)plan->tasks.size());
            plan->tasks.push_back(t);
          }
          if (nsplit > 1) plan->partialRows += nsplit * rows;
        }
      }
    }
  }
  if (plan->tasks.size() > (size_t)INT32_MAX) return fail_status(st, kUnsupported, "pagedAttention: too many tasks");
  return true;
}

/** Upload the plan's tasks into p (tasks / combine / partials, tile and row sizes). */
static bool upload_plan(Context* ctx, const AttnPlan& plan, AttnParams* pp, Status* st) {
  AttnParams& p = *pp;
  void *dt, *dc = nullptr, *dp = nullptr;
  if (!put_cached(ctx, kCTasks, plan.tasks.data(), plan.tasks.size() * sizeof(AttnTask), &dt, st)) return false;
  if (!plan.combine.empty()) {
    if (!put_cached(ctx, kCCombine, plan.combine.data(), plan.combine.size() * sizeof(int), &dc, st)) return false;
    if (!scratch(ctx, kS10, (size_t)plan.partialRows * (size_t)(p.headSize + 2) * sizeof(float), &dp, st)) return false;
  }
  p.tasks = static_cast<const AttnTask*>(dt);
  p.combine = static_cast<const int*>(dc);
  p.partials = static_cast<float*>(dp);
  p.tk = plan.tk;
  p.rowsCap = plan.rowsCap;
  p.tg = plan.tg;
  return true;
}

/** Launch the attention kernel (and the split merge) for an uploaded plan. */
static bool launch_attention(Context* ctx, const AttnPlan& plan, const AttnParams& p, Status* st) {
  if (plan.tasks.empty()) return true;
  const int threads = kWarpsPerBlock * (ctx->props.warpSize > 0 ? ctx->props.warpSize : 32);
  const unsigned grid = (unsigned)plan.tasks.size();
  auto go = [&](auto kernel) {
#if !KVQ_IS_HIP
    // NVIDIA: more than 48 KiB of dynamic shared memory needs an opt-in (AMD: up to the 64 KiB LDS without one).
    if (plan.smem > 48 * 1024) {
      KVQ_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)plan.smem),
              "cudaFuncSetAttribute (attention shared memory)");
    }
#endif
    KVQ_LAUNCH(grid, threads, plan.smem, ctx->stream, kernel)(p);
    return true;
  };
  AttnKernel kernel = plan.mma      ? decode_mma_kernel(plan.dtype, p.headSize)
                      : plan.decode ? decode_kernel(plan.dtype, plan.rg, plan.tg)
                                    : attention_kernel(plan.dch, plan.rowsCap);
  if (!go(kernel)) return false;
  KVQ_LAUNCHED("pagedAttention kernel");
  if (!plan.combine.empty()) {
    KVQ_LAUNCH((unsigned)plan.combine.size(), 128, 0, ctx->stream, attention_combine_kernel)(p);
    KVQ_LAUNCHED("pagedAttention combine kernel");
  }
  return true;
}

bool paged_attention(Context* ctx, const AttentionArgs& a, Status* st) {
  KVQ_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
  if (a.cache.vdtype != a.cache.dtype) return paged_attention_mixed(ctx, a, st);
  if (is_kv_quant_dtype(a.cache.dtype)) return paged_attention_quant(ctx, a, st);
  const CacheRef& c = a.cache;
  const int D = c.headSize;
  const int64_t numTokens = a.qsl[a.numSeqs];
  if (numTokens == 0) return true;
  AttnPlan plan;
  if (!plan_attention(ctx, c.dtype, a.fp8Query, a.qsl, a.seqLens, a.numSeqs, a.numHeads, c.numKvHeads, D, a.slidingWindow, &plan, st)) return false;

  const size_t qb = (size_t)(numTokens * a.numHeads * D) * 4;
  void *dq, *dout, *dqsl, *dlens, *dbt, *dk, *dv, *dks = nullptr, *dvs = nullptr, *dqs = nullptr;
  if (!put(ctx, kS0, a.q, qb, &dq, st) || !scratch(ctx, kS1, qb, &dout, st) ||
      !put_cached(ctx, kCQsl, a.qsl, (size_t)(a.numSeqs + 1) * 4, &dqsl, st) ||
      !put_cached(ctx, kCSeqLens, a.seqLens, (size_t)a.numSeqs * 4, &dlens, st))
    return false;
  const size_t eb = dtype_bytes(c.dtype);
  const size_t blockBytes = (size_t)c.blockSize * c.numKvHeads * D * eb;
  const size_t tableLen = (size_t)a.numSeqs * a.maxBlocksPerSeq;
  if (c.kDev) {
    dk = c.kDev;
    dv = c.vDev;
    if (!put_cached(ctx, kCBlockTables, a.blockTables, tableLen * 4, &dbt, st)) return false;
  } else {
    // Upload only the blocks the batch reads (compacted), unless that is most of the cache anyway.
    std::vector<int32_t> remap((size_t)c.numBlocks, -1);
    std::vector<int32_t> order;
    for (int s = 0; s < a.numSeqs; s++) {
      const int64_t used = ceil_div(a.seqLens[s], c.blockSize);
      for (int64_t b = 0; b < used; b++) {
        const int32_t id = a.blockTables[(size_t)s * a.maxBlocksPerSeq + b];
        if (remap[(size_t)id] < 0) {
          remap[(size_t)id] = (int32_t)order.size();
          order.push_back(id);
        }
      }
    }
    if (order.size() * 2 >= (size_t)c.numBlocks) {
      if (!put(ctx, kS2, c.k, (size_t)c.numBlocks * blockBytes, &dk, st) ||
          !put(ctx, kS3, c.v, (size_t)c.numBlocks * blockBytes, &dv, st) ||
          !put(ctx, kS6, a.blockTables, tableLen * 4, &dbt, st))
        return false;
    } else {
      const size_t n = order.size();
      void* stage;
      if (!host_stage(ctx, n * blockBytes * 2 + tableLen * 4, &stage, st)) return false;
      char* hk = static_cast<char*>(stage);
      char* hv = hk + n * blockBytes;
      int32_t* ht = reinterpret_cast<int32_t*>(hv + n * blockBytes);
      for (size_t i = 0; i < n; i++) {
        memcpy(hk + i * blockBytes, static_cast<const char*>(c.k) + (size_t)order[i] * blockBytes, blockBytes);
        memcpy(hv + i * blockBytes, static_cast<const char*>(c.v) + (size_t)order[i] * blockBytes, blockBytes);
      }
      for (size_t e = 0; e < tableLen; e++) {
        const int32_t id = a.blockTables[e];
        ht[e] = (id >= 0 && id < c.numBlocks && remap[(size_t)id] >= 0) ? remap[(size_t)id] : 0;
      }
      if (!put(ctx, kS2, hk, n * blockBytes, &dk, st) || !put(ctx, kS3, hv, n * blockBytes, &dv, st) ||
          !put(ctx, kS6, ht, tableLen * 4, &dbt, st))
        return false;
      // The staging buffer must outlive the asynchronous copies.
      if (!sync(ctx, st)) return false;
    }
  }
  if (c.dtype >= kFp8E4M3FN) {
    if (!put_keyed(ctx, c.kScale, (size_t)c.scaleLen * 4, &dks, st) || !put_keyed(ctx, c.vScale, (size_t)c.scaleLen * 4, &dvs, st))
      return false;
  }
  if (a.fp8Query && !put_cached(ctx, kCQScale, a.qScaleKv, (size_t)c.numKvHeads * 4, &dqs, st)) return false;
  AttnParams p{};
  p.q = (const float*)dq;
  p.out = (float*)dout;
  p.kc = dk;
  p.vc = dv;
  p.kScale = (const float*)dks;
  p.vScale = (const float*)dvs;
  p.scaleLen = c.scaleLen;
  p.dtype = c.dtype;
  p.blockSize = c.blockSize;
  p.numKvHeads = c.numKvHeads;
  p.headSize = D;
  p.numHeads = a.numHeads;
  p.group = a.numHeads / c.numKvHeads;
  p.blockTables = (const int32_t*)dbt;
  p.maxBlocksPerSeq = a.maxBlocksPerSeq;
  p.qsl = (const int32_t*)dqsl;
  p.seqLens = (const int32_t*)dlens;
  p.softmaxScale = a.softmaxScale;
  p.slidingWindow = a.slidingWindow;
  p.fp8Query = a.fp8Query;
  p.qScaleKv = (const float*)dqs;
  const size_t lb = (size_t)(numTokens * a.numHeads) * 4;
  void* dlse = nullptr;
  if (a.lse && !scratch(ctx, kS13, lb, &dlse, st)) return false;
  p.lse = (float*)dlse;
  if (!upload_plan(ctx, plan, &p, st) || !launch_attention(ctx, plan, p, st)) return false;
  return get(ctx, a.out, dout, qb, st) && (!a.lse || get(ctx, a.lse, dlse, lb, st)) && finish(ctx, st);
}

// ------------------------------------------------------------------------------------------------
// decode benchmark on device-resident random data
// ------------------------------------------------------------------------------------------------

template <int DT>
__global__ void fill_cache_kernel(void* p, int64_t n, uint32_t seed) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    uint32_t h = (uint32_t)i * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    const float x = (float)(h & 0xFFFFu) / 32768.0f - 1.0f;
    if constexpr (DT >= kFp8E4M3FN) {
      store_elem<DT>(p, i, x, 1.0f / 64.0f);
    } else {
      store_elem<DT>(p, i, x, 1.0f);
    }
  }
}

__global__ void checksum_kernel(const float* x, int64_t n, unsigned long long* sum, unsigned* nonFinite) {
  unsigned long long s = 0;
  unsigned bad = 0;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const uint32_t b = f32_as_bits(x[i]);
    s += b;
    bad += ((b & 0x7F800000u) == 0x7F800000u) ? 1u : 0u;
  }
  atomicAdd(sum, s);
  if (bad) atomicAdd(nonFinite, bad);
}

bool bench_attention(Context* ctx, AttentionBench* b, Status* st) {
  KVQ_TRY(cudaSetDevice(ctx->device), "cudaSetDevice");
  const int bs = b->blockSize, D = b->headSize;
  const int64_t blocksPerSeq = ceil_div(b->contextLen, bs);
  const int64_t numBlocks = blocksPerSeq * b->numSeqs;
  const size_t eb = dtype_bytes(b->dtype);
  const size_t poolElems = (size_t)numBlocks * bs * b->numKvHeads * D;
  const int64_t qElems = (int64_t)b->numSeqs * b->numHeads * D;
  void *dk, *dv, *dq, *dout, *dbt, *dqsl, *dlens, *dsc, *dcs;
  if (!scratch(ctx, kS2, poolElems * eb, &dk, st) || !scratch(ctx, kS3, poolElems * eb, &dv, st) ||
      !scratch(ctx, kS0, (size_t)qElems * 4, &dq, st) || !scratch(ctx, kS1, (size_t)qElems * 4, &dout, st))
    return false;
  with_dtype(b->dtype, [&](auto c) {
    constexpr int DT = decltype(c)::value;
    KVQ_LAUNCH(grid_1d((int64_t)poolElems, 256), 256, 0, ctx->stream, fill_cache_kernel<DT>)(dk, (int64_t)poolElems, 11u);
    KVQ_LAUNCH(grid_1d((int64_t)poolElems, 256), 256, 0, ctx->stream, fill_cache_kernel<DT>)(dv, (int64_t)poolElems, 12u);
    return true;
  });
  KVQ_LAUNCH(grid_1d(qElems, 256), 256, 0, ctx->stream, fill_cache_kernel<kF32>)(dq, qElems, 13u);
  KVQ_LAUNCHED("benchmark fill kernels");
  // Blocks of every sequence scattered over the pool (a shuffled free list, as a long-running server has).
  std::vector<int32_t> table((size_t)numBlocks);
  for (int64_t i = 0; i < numBlocks; i++) table[(size_t)i] = (int32_t)i;
  std::mt19937 rng(1234);
  std::shuffle(table.begin(), table.end(), rng);
  std::vector<int32_t> qsl((size_t)b->numSeqs + 1), lens((size_t)b->numSeqs, b->contextLen);
  for (int s = 0; s <= b->numSeqs; s++) qsl[(size_t)s] = s;
  const float scales[2] = {1.0f / 64.0f, 1.0f / 64.0f};
  if (!put(ctx, kS4, qsl.data(), qsl.size() * 4, &dqsl, st) || !put(ctx, kS5, lens.data(), lens.size() * 4, &dlens, st) ||
      !put(ctx, kS6, table.data(), table.size() * 4, &dbt, st) || !put(ctx, kS9, scales, sizeof(scales), &dsc, st) ||
      !scratch(ctx, kS11, 64, &dcs, st))
    return false;
  AttnPlan plan;
  if (!plan_attention(ctx, b->dtype, b->fp8Query, qsl.data(), lens.data(), b->numSeqs, b->numHeads, b->numKvHeads, D, 0, &plan, st)) return false;
  AttnParams p{};
  p.q = (const float*)dq;
  p.out = (float*)dout;
  p.kc = dk;
  p.vc = dv;
  p.kScale = (const float*)dsc;
  p.vScale = (const float*)dsc + 1;
  p.scaleLen = 1;
  p.dtype = b->dtype;
  p.blockSize = bs;
  p.numKvHeads = b->numKvHeads;
  p.headSize = D;
  p.numHeads = b->numHeads;
  p.group = b->numHeads / b->numKvHeads;
  p.blockTables = (const int32_t*)dbt;
  p.maxBlocksPerSeq = (int)blocksPerSeq;
  p.qsl = (const int32_t*)dqsl;
  p.seqLens = (const int32_t*)dlens;
  p.softmaxScale = 1.0f / sqrtf((float)D);
  p.slidingWindow = 0;
  p.fp8Query = b->fp8Query;
  void* dqs = nullptr;
  std::vector<float> qsv((size_t)b->numKvHeads, 1.0f / 32.0f);
  if (!put(ctx, kS12, qsv.data(), qsv.size() * 4, &dqs, st)) return false;
  p.qScaleKv = (const float*)dqs;
  if (!upload_plan(ctx, plan, &p, st) || !sync(ctx, st)) return false;
  cudaEvent_t e0, e1;
  KVQ_TRY(cudaEventCreate(&e0), "cudaEventCreate");
  KVQ_TRY(cudaEventCreate(&e1), "cudaEventCreate");
  std::vector<float> times;
  bool good = true;
  for (int i = 0; i < b->warmup + b->iters && good; i++) {
    (void)cudaEventRecord(e0, ctx->stream);
    good = launch_attention(ctx, plan, p, st);
    (void)cudaEventRecord(e1, ctx->stream);
    if (good) good = ok(cudaEventSynchronize(e1), "attention benchmark", st);
    float ms = 0;
    (void)cudaEventElapsedTime(&ms, e0, e1);
    if (i >= b->warmup) times.push_back(ms);
  }
  (void)cudaEventDestroy(e0);
  (void)cudaEventDestroy(e1);
  if (!good) return false;
  std::sort(times.begin(), times.end());
  b->msMedian = times[times.size() / 2];
  b->msMin = times.front();
  b->splits = plan.maxSplits;
  b->bytesMoved = 2.0 * (double)poolElems * (double)eb + 2.0 * (double)qElems * 4.0 + (double)numBlocks * 4.0;
  b->gbps = b->bytesMoved / (b->msMedian * 1e-3) / 1e9;
  KVQ_TRY(cudaMemsetAsync(dcs, 0, 16, ctx->stream), "cudaMemset");
  KVQ_LAUNCH(64, 256, 0, ctx->stream, checksum_kernel)((const float*)dout, qElems, (unsigned long long*)dcs,
                                               (unsigned*)((char*)dcs + 8));
  KVQ_LAUNCHED("checksum kernel");
  unsigned char host[16];
  if (!get(ctx, host, dcs, 16, st) || !sync(ctx, st)) return false;
  memcpy(&b->checksumBits, host, 8);
  unsigned nonFinite = 0;
  memcpy(&nonFinite, host + 8, 4);
  b->finite = nonFinite == 0;
  return true;
}

}  // namespace gpu
}  // namespace kvq
