// SPDX-License-Identifier: Apache-2.0
//
// `linear` and `embedding` on quantized weights in their stored form (ops.h WeightRef): GGML blocks (q8_0, q4_0,
// q4_1, q5_0, q5_1, q4_k, q5_k, q6_k) and compressed-tensors fp8_e4m3 / int8 / int4. Part of kernels_impl.h (same
// rules: namespace kvq::KVQ_NS, static, no STL), written once against the vector layer and compiled per ISA.
//
// Every quantized format is seen through one shape: a block of int8 values q split into groups of G elements, each
// group with a float scale s and (for the formats with a minimum) an offset o, w = s * q + o.
// - Decode GEMV (rows <= 4): each weight row's blocks are streamed once, unpacked to int8 in L1, and
//   `s * sum(x * q) + o * sum(x)` is accumulated per group: one convert + one FMA per weight element and x row, the
//   group scale applied once per group (one extra FMA), the offset through the group sums of x computed once per call.
// - Prefill GEMM: a tile of weight rows is dequantized to a float32 panel once and run through the f32 micro-kernel
//   (linear_gemm in kernels_impl.h), so each block is decoded once per 64 tokens, not once per token.
// - Embedding: the looked-up rows dequantized exactly as the reference does (bit-exact, see dequant_segment).
//
// Dequantization rounding follows GGML's dequantize_row_* (and gguf-py's quants.py) operation by operation:
// q4_1/q5_1 `d * q + m`; q4_k/q5_k `(d * sc) * q - dmin * m`; q6_k `(d * sc) * q`; the others `d * q`; and
// compressed-tensors `decode(q) * scale`, `q * scale`, `(q - zeroPoint) * scale`. (-ffp-contract=off keeps them.)
// Block layouts and their sources: docs/spec/quantized-weights.md.
//
// Activations are float32 (W4A16 / W8A16 math) unless the call asks for GGML's 8-bit activations (LinearParams::xq,
// `activations: 'q8'`, csrc/act_q8.h of @kvq/kernels): then x is quantized per row to Q8_0 / Q8_K blocks and, on
// AVX2 / AVX-512 and NEON builds, the decode GEMV and the prefill GEMM of the GGML dtypes run on int8 dot products
// (vpmaddubsw; on AVX-512 builds the GEMV uses VNNI's vpdpbusd / vpdpwssd, csrc/wquant_vnni.h; NEON sdot or smull,
// csrc/wquant_neon_q8.h; see "8-bit activations" below); the scalar builds run the float kernels on x's round trip x'.

// ------------------------------------------------------------------------------------------------
// Dispatch of runtime dtype codes and row counts to template instances
// ------------------------------------------------------------------------------------------------

/** A compile-time int for the dispatch helpers (`decltype(c)::value` in a generic lambda). */
template <int N>
struct IntC {
  static constexpr int value = N;
};

/** f(IntC<R>{}) with R = rows for 1..3, else 4: the GEMVs' row-count template argument. */
template <class F>
KVQ_I void with_rows(int rows, F&& f) {
  switch (rows) {
    case 1: f(IntC<1>{}); break;
    case 2: f(IntC<2>{}); break;
    case 3: f(IntC<3>{}); break;
    default: f(IntC<4>{}); break;
  }
}

/** f(IntC<dt>{}) for a GGML dtype code (kQ8_0..kQ6_K), other() for any other dtype. */
template <class F, class G>
KVQ_I auto with_ggml_dtype(int dt, F&& f, G&& other) -> decltype(other()) {
  switch (dt) {
    case kQ8_0: return f(IntC<kQ8_0>{});
    case kQ4_0: return f(IntC<kQ4_0>{});
    case kQ4_1: return f(IntC<kQ4_1>{});
    case kQ5_0: return f(IntC<kQ5_0>{});
    case kQ5_1: return f(IntC<kQ5_1>{});
    case kQ4_K: return f(IntC<kQ4_K>{});
    case kQ5_K: return f(IntC<kQ5_K>{});
    case kQ6_K: return f(IntC<kQ6_K>{});
    default: return other();
  }
}

// ------------------------------------------------------------------------------------------------
// Block decoders: QB<DT>::decode(block, q[kElems], s[kGroups], o[kGroups]).
// ------------------------------------------------------------------------------------------------

/** The little-endian f16 at p as float. */
KVQ_I float ld_f16(const uint8_t* p) { return f16_to_f32((uint16_t)(p[0] | (p[1] << 8))); }

template <int DT>
struct QB;

template <>
struct QB<kQ8_0> {
  static constexpr int kElems = 32, kBytes = 34, kGroup = 32;
  static constexpr bool kOffset = false;
  KVQ_I void decode(const uint8_t* b, int8_t* q, float* s, float*) {
    s[0] = ld_f16(b);
    memcpy(q, b + 2, 32);
  }
};
template <>
struct QB<kQ4_0> {
  static constexpr int kElems = 32, kBytes = 18, kGroup = 32;
  static constexpr bool kOffset = false;
  KVQ_I void decode(const uint8_t* b, int8_t* q, float* s, float*) {
    s[0] = ld_f16(b);
    unpack_nib_halves(b + 2, 8, q);
  }
};
template <>
struct QB<kQ4_1> {
  static constexpr int kElems = 32, kBytes = 20, kGroup = 32;
  static constexpr bool kOffset = true;
  KVQ_I void decode(const uint8_t* b, int8_t* q, float* s, float* o) {
    s[0] = ld_f16(b);
    o[0] = ld_f16(b + 2);
    unpack_nib_halves(b + 4, 0, q);
  }
};
/** The 5-bit values of q5_0 / q5_1: low nibbles in qs[16], fifth bits in the little-endian uint32 at qh4. */
KVQ_I void unpack_q5(const uint8_t* qh4, const uint8_t* qs, int bias, int8_t* q) {
  const uint32_t qh = (uint32_t)qh4[0] | ((uint32_t)qh4[1] << 8) | ((uint32_t)qh4[2] << 16) | ((uint32_t)qh4[3] << 24);
  unpack_q5_32(qs, qh, bias, q);
}
template <>
struct QB<kQ5_0> {
  static constexpr int kElems = 32, kBytes = 22, kGroup = 32;
  static constexpr bool kOffset = false;
  KVQ_I void decode(const uint8_t* b, int8_t* q, float* s, float*) {
    s[0] = ld_f16(b);
    unpack_q5(b + 2, b + 6, 16, q);
  }
};
template <>
struct QB<kQ5_1> {
  static constexpr int kElems = 32, kBytes = 24, kGroup = 32;
  static constexpr bool kOffset = true;
  KVQ_I void decode(const uint8_t* b, int8_t* q, float* s, float* o) {
    s[0] = ld_f16(b);
    o[0] = ld_f16(b + 2);
    unpack_q5(b + 4, b + 8, 0, q);
  }
};
/** The 6-bit scale and min of sub-block j (0..7) of a q4_k / q5_k block's 12 packed scale bytes. */
KVQ_I void k_scale_min(int j, const uint8_t* sc, int* d, int* m) {
  if (j < 4) {
    *d = sc[j] & 63;
    *m = sc[j + 4] & 63;
  } else {
    *d = (sc[j + 4] & 15) | ((sc[j - 4] >> 6) << 4);
    *m = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
  }
}
/** Group scales and offsets of a q4_k / q5_k block: s = d * sc, o = -(dmin * m) (GGML's `d1 * q - m1`). */
KVQ_I void k_groups(const uint8_t* b, float* s, float* o) {
  const float d = ld_f16(b), dmin = ld_f16(b + 2);
  for (int j = 0; j < 8; j++) {
    int sc, m;
    k_scale_min(j, b + 4, &sc, &m);
    s[j] = d * (float)sc;
    o[j] = -(dmin * (float)m);
  }
}
template <>
struct QB<kQ4_K> {
  static constexpr int kElems = 256, kBytes = 144, kGroup = 32;
  static constexpr bool kOffset = true;
  KVQ_I void decode(const uint8_t* b, int8_t* q, float* s, float* o) {
    k_groups(b, s, o);
    const uint8_t* qs = b + 16;
    for (int j = 0; j < 4; j++)
      for (int l = 0; l < 32; l++) {
        q[64 * j + l] = (int8_t)(qs[32 * j + l] & 15);
        q[64 * j + 32 + l] = (int8_t)(qs[32 * j + l] >> 4);
      }
  }
};
template <>
struct QB<kQ5_K> {
  static constexpr int kElems = 256, kBytes = 176, kGroup = 32;
  static constexpr bool kOffset = true;
  KVQ_I void decode(const uint8_t* b, int8_t* q, float* s, float* o) {
    k_groups(b, s, o);
    const uint8_t* qh = b + 16;
    const uint8_t* qs = b + 48;
    for (int j = 0; j < 4; j++)
      for (int l = 0; l < 32; l++) {
        q[64 * j + l] = (int8_t)((qs[32 * j + l] & 15) | (((qh[l] >> (2 * j)) & 1) << 4));
        q[64 * j + 32 + l] = (int8_t)((qs[32 * j + l] >> 4) | (((qh[l] >> (2 * j + 1)) & 1) << 4));
      }
  }
};
template <>
struct QB<kQ6_K> {
  static constexpr int kElems = 256, kBytes = 210, kGroup = 16;
  static constexpr bool kOffset = false;
  KVQ_I void decode(const uint8_t* b, int8_t* q, float* s, float*) {
    const uint8_t* ql = b;
    const uint8_t* qh = b + 128;
    const int8_t* sc = (const int8_t*)(b + 192);
    const float d = ld_f16(b + 208);
    for (int g = 0; g < 16; g++) s[g] = d * (float)sc[g];
    for (int n = 0; n < 2; n++) {
      const uint8_t* l0 = ql + 64 * n;
      const uint8_t* h0 = qh + 32 * n;
      int8_t* y = q + 128 * n;
      for (int l = 0; l < 32; l++) {
        y[l] = (int8_t)(((l0[l] & 15) | ((h0[l] & 3) << 4)) - 32);
        y[l + 32] = (int8_t)(((l0[l + 32] & 15) | (((h0[l] >> 2) & 3) << 4)) - 32);
        y[l + 64] = (int8_t)(((l0[l] >> 4) | (((h0[l] >> 4) & 3) << 4)) - 32);
        y[l + 96] = (int8_t)(((l0[l + 32] >> 4) | (((h0[l] >> 6) & 3) << 4)) - 32);
      }
    }
  }
};

/** Unpack packed int4 elements [c0, c0 + n) of a row minus zero point z: q = nibble - 8 - z (element 2j low nibble). */
KVQ_I void unpack_int4(const uint8_t* row, int64_t c0, int64_t n, int z, int8_t* q) {
  int64_t i = 0;
  if (n > 0 && (c0 & 1)) {
    q[0] = (int8_t)((row[c0 >> 1] >> 4) - 8 - z);
    i = 1;
  }
  const uint8_t* p = row + ((c0 + i) >> 1);
  for (; i + 32 <= n; i += 32, p += 16) unpack_nib_pairs(p, 8 + z, q + i);
  for (; i + 1 < n; i += 2) {
    const uint8_t v = *p++;
    q[i] = (int8_t)((v & 15) - 8 - z);
    q[i + 1] = (int8_t)((v >> 4) - 8 - z);
  }
  if (i < n) q[i] = (int8_t)((*p & 15) - 8 - z);
}

// ------------------------------------------------------------------------------------------------
// Exact dequantization of a row segment (GEMM panels and embedding rows)
// ------------------------------------------------------------------------------------------------

/** dst[0, n) = float(s * q[0, n)) (+ o), rounded as the reference does; writes exactly n floats. */
template <bool kOffset>
KVQ_I void dequant_group(const int8_t* q, int n, float s, float o, float* dst) {
  const VF sv = vset1(s), ov = vset1(o);
  int e = 0;
  for (; e + W <= n; e += W) {
    VF v = vmul(sv, vcvt_i8(q + e));
    if (kOffset) v = vadd(v, ov);
    vstore(dst + e, v);
  }
  if (e < n) {
    VF v = vmul(sv, vcvtn_i8(q + e, n - e));
    if (kOffset) v = vadd(v, ov);
    vstoren(dst + e, v, n - e);
  }
}

/** Columns [k0, k0 + kc) of GGML row `row` (k0 and kc multiples of the block size) as float32 into dst. */
template <int DT>
static void dequant_ggml(const uint8_t* row, int64_t k0, int64_t kc, float* dst) {
  typedef QB<DT> B;
  alignas(64) int8_t q[256];
  float s[16], o[16];
  for (int64_t c = k0; c < k0 + kc; c += B::kElems) {
    B::decode(row + (c / B::kElems) * B::kBytes, q, s, o);
    for (int g = 0; g < B::kElems / B::kGroup; g++)
      dequant_group<B::kOffset>(q + g * B::kGroup, B::kGroup, s[g], B::kOffset ? o[g] : 0.0f, dst + (c - k0) + g * B::kGroup);
  }
}

/**
 * Columns [k0, k0 + kc) of weight row n as float32 into dst (exactly kc floats), dequantized bit-exactly as the
 * reference does. Any quantized dtype; for GGML dtypes k0 and kc are multiples of the block size.
 */
static void dequant_segment(const WeightRef& w, int64_t n, int64_t k0, int64_t kc, float* dst) {
  const uint8_t* row = static_cast<const uint8_t*>(w.data) + n * weight_row_bytes(w.dtype, w.cols);
  if (is_ggml_dtype(w.dtype)) {
    with_ggml_dtype(w.dtype, [&](auto dt) { dequant_ggml<decltype(dt)::value>(row, k0, kc, dst); }, [] {});
    return;
  }
  switch (w.dtype) {
    case kWFp8E4M3: {
      const float s = w.scale[w.scale_len == 1 ? 0 : n];
      const DequantMul m = dequant_mul<kFp8E4M3FN>(s);
      const VF m1 = vset1(m.mul1), m2 = vset1(m.mul2);
      int64_t c = 0;
      for (; c + W <= kc; c += W) {
        VF v = Load<kFp8E4M3FN>::load(row + k0 + c, m1);
        vstore(dst + c, m.mul2 == 0.0f ? v : vmul(v, m2));
      }
      if (c < kc) {
        VF v = Load<kFp8E4M3FN>::loadn(row + k0 + c, (int)(kc - c), m1);
        vstoren(dst + c, m.mul2 == 0.0f ? v : vmul(v, m2), (int)(kc - c));
      }
      return;
    }
    case kWInt8: {
      const float s = w.scale[w.scale_len == 1 ? 0 : n];
      const int8_t* q = reinterpret_cast<const int8_t*>(row) + k0;
      for (int64_t c = 0; c < kc; c += 256) dequant_group<false>(q + c, (int)imin(256, kc - c), s, 0.0f, dst + c);
      return;
    }
    default: {  // kWInt4: chunks of at most 256 elements inside one group
      alignas(64) int8_t q[256];
      const int64_t gs = w.group_size, ng = w.cols / gs;
      for (int64_t c = k0; c < k0 + kc;) {
        const int64_t g = c / gs;
        const int64_t end = imin(imin(k0 + kc, (g + 1) * gs), c + 256);
        unpack_int4(row, c, end - c, w.zero_point ? w.zero_point[n * ng + g] : 0, q);
        dequant_group<false>(q, (int)(end - c), w.scale[n * ng + g], 0.0f, dst + (c - k0));
        c = end;
      }
      return;
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Decode GEMV: rows <= 4, weights streamed once
// ------------------------------------------------------------------------------------------------

/** sum over one group of G int8 values of x[e] * q[e] for R rows of x (stride K), added as acc[r] += s * that. */
template <int R, int G>
KVQ_I void group_dot(const float* x, int64_t K, const int8_t* q, float s, VF* acc) {
  VF a[R];
  for (int r = 0; r < R; r++) a[r] = vzero();
  for (int e = 0; e < G; e += W) {
    const VF qv = vcvt_i8(q + e);
    for (int r = 0; r < R; r++) a[r] = vfma(vload(x + r * K + e), qv, a[r]);
  }
  const VF sv = vset1(s);
  for (int r = 0; r < R; r++) acc[r] = vfma(sv, a[r], acc[r]);
}

/** y[r, n] for n in [n0, n1): GGML rows, R rows of x; xs = group sums of x ([R, K / kGroup], offset formats only). */
template <int DT, int R>
static void gemv_ggml(const LinearParams& p, const float* xs, int64_t n0, int64_t n1) {
  typedef QB<DT> B;
  const int64_t K = p.in, N = p.out, nb = K / B::kElems, ngr = K / B::kGroup;
  const int64_t rowBytes = nb * B::kBytes;
  const uint8_t* base = static_cast<const uint8_t*>(p.w.data);
  alignas(64) int8_t q[256];
  float s[16], o[16];
  for (int64_t n = n0; n < n1; n++) {
    const uint8_t* wr = base + n * rowBytes;
    VF acc[R];
    float off[R];
    for (int r = 0; r < R; r++) acc[r] = vzero(), off[r] = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
      B::decode(wr + b * B::kBytes, q, s, o);
      for (int g = 0; g < B::kElems / B::kGroup; g++) {
        const int64_t c0 = b * B::kElems + g * B::kGroup;
        group_dot<R, B::kGroup>(p.x + c0, K, q + g * B::kGroup, s[g], acc);
        if (B::kOffset)
          for (int r = 0; r < R; r++) off[r] += o[g] * xs[r * ngr + c0 / B::kGroup];
      }
    }
    for (int r = 0; r < R; r++) p.y[r * N + n] = vhsum(acc[r]) + off[r] + (p.bias ? p.bias[n] : 0.0f);
  }
}

/**
 * sum_e x[r, e] * q[b][e] over n int8 values (any n) of NB weight rows, into a[b][r] (x loaded once per NB rows).
 */
template <int R, int NB>
KVQ_I void dot_i8(const float* x, int64_t K, const int8_t* const* q, int64_t n, VF (*a)[R]) {
  int64_t e = 0;
  for (; e + W <= n; e += W) {
    VF xv[R];
    for (int r = 0; r < R; r++) xv[r] = vload(x + r * K + e);
    for (int b = 0; b < NB; b++) {
      const VF qv = vcvt_i8(q[b] + e);
      for (int r = 0; r < R; r++) a[b][r] = vfma(xv[r], qv, a[b][r]);
    }
  }
  if (e < n) {
    const int t = (int)(n - e);
    VF xv[R];
    for (int r = 0; r < R; r++) xv[r] = vloadn(x + r * K + e, t);
    for (int b = 0; b < NB; b++) {
      const VF qv = vcvtn_i8(q[b] + e, t);
      for (int r = 0; r < R; r++) a[b][r] = vfma(xv[r], qv, a[b][r]);
    }
  }
}

/** acc[b][r] += x[r, :] * decode(fp8 row b) over K columns, NB rows, by the exact decode (NaN codes stay NaN; no scale). */
template <int R, int NB>
KVQ_I void fp8_rows_dot(const float* x, int64_t K, const uint8_t* const* wr, VF (*acc)[R]) {
  const VF kc = vset1(Load<kFp8E4M3FN>::konst());
  int64_t c = 0;
  for (; c + W <= K; c += W) {
    VF xv[R];
    for (int r = 0; r < R; r++) xv[r] = vload(x + r * K + c);
    for (int b = 0; b < NB; b++) {
      const VF wv = Load<kFp8E4M3FN>::load(wr[b] + c, kc);
      for (int r = 0; r < R; r++) acc[b][r] = vfma(xv[r], wv, acc[b][r]);
    }
  }
  if (c < K) {
    const int t = (int)(K - c);
    VF xv[R];
    for (int r = 0; r < R; r++) xv[r] = vloadn(x + r * K + c, t);
    for (int b = 0; b < NB; b++) {
      const VF wv = Load<kFp8E4M3FN>::loadn(wr[b] + c, t, kc);
      for (int r = 0; r < R; r++) acc[b][r] = vfma(xv[r], wv, acc[b][r]);
    }
  }
}

/**
 * x * 2^c for the fp8 rows' raw-lane dot (stream_row_dot kPre), c = min(120, 124 - floor(log2(max |x|))): exact, as is
 * each product with a raw lane (the code's value times 2^-120), so the sums are the true ones times 2^(c - 120), within
 * float32's range; only products below max|x| * |w| * 2^-130 (far under the sum's own rounding) can round away.
 * Returns the factor 2^(120 - c) that brings the dot back, or 0 (xs untouched) when max |x| >= 2^62 or is not finite
 * (then the dot multiplies each lane instead).
 */
KVQ_I float fp8_prescale_x(const float* x, int64_t n, float* xs) {
  float amax = 0.0f;
  for (int64_t i = 0; i < n; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
  if (!(amax < 0x1p62f)) return 0.0f;
  const int c = amax < 0x1p-126f ? 120 : (int)imin(120, 124 - ilogbf(amax));
  const float up = ldexpf(1.0f, c);
  for (int64_t i = 0; i < n; i++) xs[i] = x[i] * up;
  return ldexpf(1.0f, 120 - c);
}

/**
 * dot[r] = sum_e x[r, e] * w[e] for one compressed-tensors fp8_e4m3 (kFp8) or int8 weight row of K elements, R rows of
 * x, the row read front to back: 64 elements a step (one prefetch kDensePrefetch bytes ahead), U = 4 / R accumulators
 * per x row so 4 FMA chains stay in flight. FP8 lanes use the fast decode (exact but for the NaN codes, which each
 * step checks for); returns false when the row holds a NaN code, and the caller recomputes it with the exact decode.
 * kPre (fp8 only): x comes scaled by fp8_prescale_x, so the raw lanes (the value times 2^-120) need no multiply.
 * NOTE: measured 2026-12-07 on the 2-core Zen 5 (4096 x 4096 copies past the caches, 2 threads): four rows side by
 * side (four streams per thread, the byte-table decode for fp8) read 34 GB/s fp8 and 38 int8 of 84; one row at a time
 * as here, see docs/benchmarks.md. In cache the four-row form was as fast: the streams, not the decode, cost.
 */
template <int R, bool kFp8, bool kPre = false>
KVQ_I bool stream_row_dot(const float* x, int64_t K, const uint8_t* wr, float* dot) {
  typedef Load<kFp8E4M3FN> L;
  constexpr int64_t kStep = 64;
  const VF kc = vset1(kPre ? 1.0f : L::konst());  // a multiply by 1 folds away
  const int8_t* q = reinterpret_cast<const int8_t*>(wr);
  bool nan = false;
  auto full = [&](int64_t e) { return kFp8 ? L::loadf(wr + e, kc) : vcvt_i8(q + e); };
  auto tail = [&](int64_t c, int n) { return kFp8 ? L::loadnf(wr + c, n, kc) : vcvtn_i8(q + c, n); };
  auto pre = [&](int64_t c) {
    if constexpr (kFp8 && L::kHasFast) nan = nan | L::any_nan(wr + c, kStep);
  };
  row_stream_dot<R, kStep, 1>(x, K, K, wr, full, tail, pre, dot);
  if constexpr (kFp8 && L::kHasFast) nan = nan | L::any_nan(wr + (K - K % kStep), K % kStep);
  return !nan;
}

/** How int4 rows are decoded in registers: by 16-entry table permutes (AVX-512, groups of whole 128-element blocks). */
KVQ_I bool int4_by_perm(const WeightRef& w) { return kHasInt4Perm && w.dtype == kWInt4 && w.group_size % 128 == 0; }
/** ... or by widening nibbles (vcvt_nib; groups of whole 2W-element chunks); else through the int8 unpack buffer. */
KVQ_I bool int4_by_nibbles(const WeightRef& w) { return w.dtype == kWInt4 && !int4_by_perm(w) && w.group_size % (2 * W) == 0; }

/** n elements of x rows in the int4 register decode's order (n a multiple of the block: 128 by permute, else 2W). */
KVQ_I void int4_x_order(const WeightRef& w, const float* x, int64_t n, float* xd) {
  if (int4_by_perm(w)) {
    for (int64_t c = 0; c < n; c += 128)
      for (int e = 0; e < 128; e++) xd[c + int4_perm_pos(e)] = x[c + e];
    return;
  }
  // In each chunk of 2W elements: the even elements (low nibbles), then the odd ones.
  for (int64_t c = 0; c < n; c += 2 * W)
    for (int j = 0; j < W; j++) xd[c + j] = x[c + 2 * j], xd[c + W + j] = x[c + 2 * j + 1];
}

/**
 * acc[b][r] += sum_e x[r, e] * w[n0 + b, e] for NB packed int4 rows by table permutes (int4_by_perm): per group, a
 * 16-entry table holds the dequantized value of each code, (code - 8 - zeroPoint) * scale, rounded exactly as the
 * reference dequantizes, so each product is the dequantize-then-dot one; only the summation order differs. Eight
 * accumulators per row when NB = 1 (one per vector of a block: 1.06x four, streamed), else two.
 * NOTE: the groups' offsets 8 + zeroPoint are converted to float 16 groups at a time into `off`, so a group's table is
 * a subtract and a multiply on two broadcast loads. Converting each group's int8 offset in the loop (a scalar convert
 * and a register broadcast on the table's path) measured 1.23x slower in cache and 1.07-1.14x streamed (one thread,
 * 4096 x 4096, 2-core Zen 5, 2026-12-07).
 */
template <int R, int NB>
KVQ_I void int4_rows_dot_perm(const float* xd, int64_t K, const uint8_t* const* wr, const WeightRef& w, int64_t n0, VF (*acc)[R]) {
  if constexpr (kHasInt4Perm) {
    static const float kCodes[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    constexpr int C = NB == 1 ? 8 : 2;  // accumulators per (weight row, x row): vector k of a block adds into k % C
    const VF codes = vload(kCodes);
    const int64_t gs = w.group_size, ng = K / gs;
    VF part[C - 1][NB][R];
    for (int j = 0; j < C - 1; j++)
      for (int b = 0; b < NB; b++)
        for (int r = 0; r < R; r++) part[j][b][r] = vzero();
    alignas(64) float off[NB][W];
    for (int b = 0; b < NB; b++)
      if (!w.zero_point) vstore(off[b], vset1(8.0f));
    for (int64_t g0 = 0; g0 < ng; g0 += W) {
      const int gn = (int)imin(W, ng - g0);
      if (w.zero_point)
        for (int b = 0; b < NB; b++) vstore(off[b], vadd(vset1(8.0f), vcvtn_i8(w.zero_point + (n0 + b) * ng + g0, gn)));
      for (int64_t g = g0; g < g0 + gn; g++) {
        VF table[NB];
        for (int b = 0; b < NB; b++) table[b] = vmul(vsub(codes, vset1(off[b][g - g0])), vset1(w.scale[(n0 + b) * ng + g]));
        for (int64_t c = g * gs; c < (g + 1) * gs; c += 128) {
          for (int b = 0; b < NB; b++) {
            VF v[8];
            vprefetch(wr[b] + (c >> 1) + kDensePrefetch);
            int4_perm_decode128(wr[b] + (c >> 1), table[b], v);
            for (int k = 0; k < 8; k++)
              for (int r = 0; r < R; r++) {
                VF& a = k % C == 0 ? acc[b][r] : part[k % C - 1][b][r];
                a = vfma(vload(xd + r * K + c + 16 * k), v[k], a);
              }
          }
        }
      }
    }
    for (int j = 0; j < C - 1; j++)
      for (int b = 0; b < NB; b++)
        for (int r = 0; r < R; r++) acc[b][r] = vadd(acc[b][r], part[j][b][r]);
  }
}

/**
 * acc[b][r] += sum over groups g of scale[n0 + b, g] * sum_e x[r, e] * (nibble_e - 8 - zeroPoint[n0 + b, g]) for NB
 * packed int4 rows by widening nibbles (int4_by_nibbles): each W bytes are widened once into their W low and W high nibbles
 * (vcvt_nib), which meet x in `xd` (int4_x_order) without a shuffle. The integer value is exact, so each product is
 * the one the unpacking path forms; only the summation order differs.
 * NOTE: the int8 unpack buffer path runs one row at a time (four measured 2x slower there). Here, on the 2-core Zen 5
 * with the AVX2 tier forced, in cache (2026-12-06): four rows side by side 19 G weights/s, one row 14.
 */
template <int R, int NB>
KVQ_I void int4_rows_dot_nib(const float* xd, int64_t K, const uint8_t* const* wr, const WeightRef& w, int64_t n0, VF (*acc)[R]) {
  const int64_t gs = w.group_size, ng = K / gs;
  for (int64_t g = 0; g < ng; g++) {
    VF a[NB][R];
    int bias[NB];
    for (int b = 0; b < NB; b++) {
      bias[b] = 8 + (w.zero_point ? w.zero_point[(n0 + b) * ng + g] : 0);
      for (int r = 0; r < R; r++) a[b][r] = vzero();
    }
    for (int64_t c = g * gs; c < (g + 1) * gs; c += 2 * W) {
      VF xl[R], xh[R];
      for (int r = 0; r < R; r++) xl[r] = vload(xd + r * K + c), xh[r] = vload(xd + r * K + c + W);
      if (((c >> 1) & 63) == 0)
        for (int b = 0; b < NB; b++) vprefetch(wr[b] + (c >> 1) + kDensePrefetch);
      for (int b = 0; b < NB; b++) {
        VF lo, hi;
        vcvt_nib(wr[b] + (c >> 1), bias[b], &lo, &hi);
        for (int r = 0; r < R; r++) a[b][r] = vfma(xh[r], hi, vfma(xl[r], lo, a[b][r]));
      }
    }
    for (int b = 0; b < NB; b++) {
      const VF sv = vset1(w.scale[(n0 + b) * ng + g]);
      for (int r = 0; r < R; r++) acc[b][r] = vfma(sv, a[b][r], acc[b][r]);
    }
  }
}

/**
 * y[r, n] for the NB rows n0 .. n0 + NB - 1 of a compressed-tensors fp8_e4m3 / int8 / int4 matrix, R rows of x.
 * NOTE: NB weight rows at a time give NB x R independent accumulators and load each x vector once per NB rows; one
 * fp8 row at a time (a single FMA chain at decode) streamed 14.6 GB/s on a 2-core Zen 5 that reads 76 GB/s, four
 * 18-24 GB/s (2026-12-06). The per-element decode, not the chain, is what bounds it now.
 */
template <int R, int NB>
KVQ_I void gemv_ct_rows(const LinearParams& p, const float* xp, int64_t n0, int8_t (*q)[256]) {
  const WeightRef& w = p.w;
  const int64_t K = p.in, N = p.out;
  const int64_t rowBytes = weight_row_bytes(w.dtype, K);
  const uint8_t* wr[NB];
  for (int b = 0; b < NB; b++) wr[b] = static_cast<const uint8_t*>(w.data) + (n0 + b) * rowBytes;
  VF acc[NB][R];
  for (int b = 0; b < NB; b++)
    for (int r = 0; r < R; r++) acc[b][r] = vzero();
  if (w.dtype == kWFp8E4M3) {
    // Only for a row holding a NaN code (stream_row_dot said so): the exact decode, so NaN stays NaN.
    fp8_rows_dot<R, NB>(p.x, K, wr, acc);
  } else if (xp && int4_by_perm(w)) {
    int4_rows_dot_perm<R, NB>(xp, K, wr, w, n0, acc);
  } else if (w.dtype == kWInt4 && xp) {
    int4_rows_dot_nib<R, NB>(xp, K, wr, w, n0, acc);
  } else {  // int4 through the int8 unpack buffer (int8 rows never come here: gemv_ct streams them)
    const int64_t gs = w.group_size, ng = K / gs;
    const int8_t* qr[NB];
    for (int b = 0; b < NB; b++) qr[b] = q[b];
    for (int64_t g = 0; g < ng; g++) {
      VF a[NB][R];
      for (int b = 0; b < NB; b++)
        for (int r = 0; r < R; r++) a[b][r] = vzero();
      int64_t c = g * gs;
      const int64_t end = c + gs;
      while (c < end) {
        const int64_t len = imin(256, end - c);
        for (int b = 0; b < NB; b++) unpack_int4(wr[b], c, len, w.zero_point ? w.zero_point[(n0 + b) * ng + g] : 0, q[b]);
        dot_i8<R, NB>(p.x + c, K, qr, len, a);
        c += len;
      }
      for (int b = 0; b < NB; b++) {
        const VF sv = vset1(w.scale[(n0 + b) * ng + g]);
        for (int r = 0; r < R; r++) acc[b][r] = vfma(sv, a[b][r], acc[b][r]);
      }
    }
  }
  for (int b = 0; b < NB; b++) {
    const int64_t n = n0 + b;
    const float rowScale = w.dtype == kWInt4 ? 1.0f : w.scale[w.scale_len == 1 ? 0 : n];
    for (int r = 0; r < R; r++) p.y[r * N + n] = vhsum(acc[b][r]) * rowScale + (p.bias ? p.bias[n] : 0.0f);
  }
}

/** y[r, n] for n in [n0, n1): compressed-tensors fp8_e4m3 / int8 / int4 rows, R rows of x (several weight rows at a time). */
template <int R>
static void gemv_ct(const LinearParams& p, const float* xp, float xpUnscale, int64_t n0, int64_t n1) {
  alignas(64) int8_t q[4][256];
  int64_t n = n0;
  if (p.w.dtype == kWFp8E4M3 || p.w.dtype == kWInt8) {
    // fp8 with xp: x prescaled (fp8_prescale_x), the dot comes back by xpUnscale.
    const int64_t rowBytes = weight_row_bytes(p.w.dtype, p.in);
    const uint8_t* base = static_cast<const uint8_t*>(p.w.data);
    const float unscale = xp ? xpUnscale : 1.0f;
    for (; n < n1; n++) {
      float dot[R];
      const uint8_t* wr = base + n * rowBytes;
      const bool ok = p.w.dtype == kWInt8 ? stream_row_dot<R, false>(p.x, p.in, wr, dot)
                      : xp                ? stream_row_dot<R, true, true>(xp, p.in, wr, dot)
                                          : stream_row_dot<R, true>(p.x, p.in, wr, dot);
      if (!ok) {
        gemv_ct_rows<R, 1>(p, xp, n, q);
        continue;
      }
      const float sw = p.w.scale[p.w.scale_len == 1 ? 0 : n];
      for (int r = 0; r < R; r++) p.y[r * p.out + n] = dot[r] * unscale * sw + (p.bias ? p.bias[n] : 0.0f);
    }
    return;
  }
  // int4 through the unpack buffer stays one row at a time: unpacking four rows' groups before their dots measured 2x
  // slower (5.7 vs 12-14 GB/s). Decoded in registers (xp set), several rows side by side.
  // By permute, one row at a time with 8 accumulators (2 rows x 2 streamed 42 GB/s of 84, 2-core Zen 5, 2026-12-07; two
  // rows x 8 with x aligned streamed 0.85x one);
  // by nibbles, 4 / R rows.
  constexpr int kPermRows = 1, kNibRows = R == 1 ? 4 : R == 2 ? 2 : 1;
  if (xp && int4_by_perm(p.w)) {
    for (; n + kPermRows <= n1; n += kPermRows) gemv_ct_rows<R, kPermRows>(p, xp, n, q);
  } else if (xp) {
    for (; n + kNibRows <= n1; n += kNibRows) gemv_ct_rows<R, kNibRows>(p, xp, n, q);
  }
  for (; n < n1; n++) gemv_ct_rows<R, 1>(p, xp, n, q);
}

template <int DT>
static void gemv_ggml_rt(int rows, const LinearParams& p, const float* xs, int64_t n0, int64_t n1) {
  with_rows(rows, [&](auto r) { gemv_ggml<DT, decltype(r)::value>(p, xs, n0, n1); });
}
static void gemv_ct_rt(int rows, const LinearParams& p, const float* xp, float xpUnscale, int64_t n0, int64_t n1) {
  with_rows(rows, [&](auto r) { gemv_ct<decltype(r)::value>(p, xp, xpUnscale, n0, n1); });
}

/** The GEMV of a GGML dtype: group sums of x (offset formats), then output rows split over the threads. */
template <int DT>
static int qgemv_ggml(const LinearParams& p, const Runner& rn) {
  typedef QB<DT> B;
  const int64_t K = p.in, ngr = K / B::kGroup;
  float* xs = nullptr;
  if (B::kOffset) {
    xs = static_cast<float*>(scratch_alloc((size_t)(p.rows * ngr) * sizeof(float)));
    if (!xs) return kOutOfMemory;
    for (int64_t r = 0; r < p.rows; r++)
      for (int64_t g = 0; g < ngr; g++) {
        VF a = vzero();
        for (int e = 0; e < B::kGroup; e += W) a = vadd(a, vload(p.x + r * K + g * B::kGroup + e));
        xs[r * ngr + g] = vhsum(a);
      }
  }
  auto body = [&](int64_t n0, int64_t n1) { gemv_ggml_rt<DT>((int)p.rows, p, xs, n0, n1); };
  gemv_split(p, rn, body);
  alignedFree(xs);
  return kOk;
}

/** The GEMV of a compressed-tensors dtype. */
static int qgemv_ct(const LinearParams& p, const Runner& rn) {
  // int4 decoded in registers: x once in that decode's order (int4_x_order); fp8: x once prescaled for the raw-lane
  // dot where no |x| could overflow (fp8_prescale_x), else none (the dot multiplies each lane instead).
  const bool fp8Pre = p.w.dtype == kWFp8E4M3 && Load<kFp8E4M3FN>::kHasFast;
  float* buf = nullptr;
  float* xp = nullptr;
  float unscale = 1.0f;
  if (fp8Pre || int4_by_perm(p.w) || int4_by_nibbles(p.w)) {
    xp = buf = static_cast<float*>(scratch_alloc((size_t)(p.rows * p.in) * sizeof(float)));
    if (!buf) return kOutOfMemory;
    if (!fp8Pre) {
      int4_x_order(p.w, p.x, p.rows * p.in, xp);
    } else if ((unscale = fp8_prescale_x(p.x, p.rows * p.in, xp)) == 0.0f) {
      xp = nullptr;
    }
  }
  auto body = [&](int64_t n0, int64_t n1) { gemv_ct_rt((int)p.rows, p, xp, unscale, n0, n1); };
  gemv_split(p, rn, body);
  alignedFree(buf);
  return kOk;
}

/** linear on any quantized weight: GEMV for up to 4 rows, else the dequantized-panel GEMM. */
static int linear_quant(const LinearParams& p, const Runner& rn) {
  if (p.rows > 4) {
    auto fill = [&](int64_t n, int64_t k0, int64_t kc, float* dst) { dequant_segment(p.w, n, k0, kc, dst); };
    return linear_gemm(p, rn, fill);
  }
  return with_ggml_dtype(
      p.w.dtype, [&](auto dt) { return qgemv_ggml<decltype(dt)::value>(p, rn); }, [&] { return qgemv_ct(p, rn); });
}

// ------------------------------------------------------------------------------------------------
// 8-bit activations (LinearParams::xq): x rounded as GGML does (act_q8.h), int8 dot products on AVX2
// ------------------------------------------------------------------------------------------------

#include "act_q8_simd.h"

/** act_q8_quantize_block (n = 32 or 256): AVX2 vectors on x86 builds with AVX2, else the scalar code (bit-identical). */
KVQ_I float xq8_block(int n, const float* x, int8_t* q) {
#if defined(__AVX2__)
  return n == 256 ? act_q8_block256_simd(x, q) : act_q8_block32_simd(x, q);
#else
  return act_q8_quantize_block(x, n, q);
#endif
}

/** act_q8_quantize_row through xq8_block: q[K], scales[K / block]. */
KVQ_I void xq8_quantize_row(int dt, const float* x, int64_t K, int8_t* q, float* scales) {
  const int n = (int)act_q8_block(dt);
  for (int64_t b = 0; b < K / n; b++) scales[b] = xq8_block(n, x + b * n, q + b * n);
}

/** act_q8_round_trip through xq8_block: x' of `rows` rows of K activations into out[rows * K]. */
KVQ_I void xq8_round_trip(int dt, const float* x, int64_t rows, int64_t K, float* out) {
  const int n = (int)act_q8_block(dt);
  int8_t q[256];
  for (int64_t b = 0; b < rows * K / n; b++) {
    const float s = xq8_block(n, x + b * n, q);
    for (int j = 0; j < n; j++) out[b * n + j] = (float)q[j] * s;
  }
}

/**
 * The activation quantization alone, `rows` rows of K (a multiple of the dtype's block) into q[rows * K] and
 * scales[rows * K / block]: the first step of `linear` with 8-bit activations, exposed so tests can hold every ISA's
 * vector code bit-exactly to act_q8.h.
 */
static int quantizeActQ8(int dt, const float* x, int64_t rows, int64_t K, int8_t* q, float* scales, const Runner&) {
  const int64_t nb = K / act_q8_block(dt);
  for (int64_t r = 0; r < rows; r++) xq8_quantize_row(dt, x + r * K, K, q + r * K, scales + r * nb);
  return kOk;
}

#if defined(__AVX2__) || defined(KVQ_SIMD_NEON_H_)
// Int8 block dots: AVX2 / AVX-512 (below) and NEON (wquant_neon_q8.h). The scalar tier keeps the float kernels on the
// round trip x' (the bits every ISA's tests compare with).
#define KVQ_Q8_INT 1

/** Per-row quantized activations: q [rows, K], block scales [rows, K / XB], sums of q per 16 elements [rows, K / 16]. */
struct XQ8 {
  const int8_t* q;
  const float* d;
  const int16_t* s16;  // |sum of 16 int8| <= 2032
  const float* xs;     // 32-element blocks only: d * sum of the block's q, [rows, K / 32]
  int64_t xb;  // activation block (32 or 256)
  // The VNNI dots' lane terms of the 32-element types (xq8_terms; null elsewhere), [rows, K / 4] each.
  const int32_t* ini = nullptr;
  const float* dxl = nullptr;
  const float* xsl = nullptr;

  /** The same activations from row m on. */
  XQ8 from_row(int64_t m, int64_t K) const {
    XQ8 o = *this;
    o.q += m * K, o.d += m * (K / xb), o.s16 += m * (K / 16), o.xs += m * (K / 32);
    if (ini) o.ini += m * (K / 4), o.dxl += m * (K / 4), o.xsl += m * (K / 4);
    return o;
  }
};

#if defined(__AVX2__)
/** The int8 dots' float accumulator: 8 lanes whatever the ISA's VF width. */
typedef __m256 Q8Acc;
KVQ_I Q8Acc q8_acc_zero() { return _mm256_setzero_ps(); }

/** The sum of 8 float lanes. */
KVQ_I float hsum8(__m256 v) {
  const __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 h2 = _mm_add_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_add_ss(h2, _mm_shuffle_ps(h2, h2, 1)));
}

/** 8 int32 lane sums of the 32 int8 products w * x (lane i: elements 4i .. 4i+3); |w|, |x| <= 127 or w = -128. */
KVQ_I __m256i dot32_i8(__m256i w, __m256i x) {
  const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
  return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

/** The little-endian f16 at p as float, through F16C when the build has it (the scalar decode costs ~10 ops). */
KVQ_I float ld_f16x(const uint8_t* p) {
#if defined(__F16C__)
  return _cvtsh_ss((unsigned short)(p[0] | (p[1] << 8)));
#else
  return ld_f16(p);
#endif
}

/** The low / high nibbles of 32 bytes as 32 bytes each. */
KVQ_I __m256i q8_nib_lo(__m256i v) { return _mm256_and_si256(v, _mm256_set1_epi8(0x0F)); }
KVQ_I __m256i q8_nib_hi(__m256i v) { return _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0F)); }

/**
 * Direct int8 block dots of every GGML type (no decode through L1): for one weight block at `b` and R rows of
 * activations (row r's block-aligned values at x[r], scale dx[r], 16-sums s16[r]), acc[r] += lanes * scale (or, for a
 * per-block offset, accs[r] += a scalar), the offset terms (minimums, biases such as Q6_K's -32) included.
 */
template <int DT>
struct Q8Direct;

template <>
struct Q8Direct<kQ8_0> {
  template <int R>
  KVQ_I void dot(const uint8_t* b, const int8_t* const* x, const float* dx, const float*, const int16_t* const*, Q8Acc* acc, float*) {
    const float d = ld_f16x(b);
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2));
    for (int r = 0; r < R; r++) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[r]));
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot32_i8(w, xv)), _mm256_set1_ps(d * dx[r]), acc[r]);
    }
  }
};

/** The 32 nibbles of 16 bytes as bytes: low nibbles first (elements 0..15), then high nibbles (16..31). */
KVQ_I __m256i q8_nib_halves(const uint8_t* p) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i m = _mm_set1_epi8(0x0F);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
}

/** Byte i = 0x10 where bit i of the little-endian uint32 at p is set, else 0 (q5_0 / q5_1's fifth bits). */
KVQ_I __m256i q8_bit5(const uint8_t* p) {
  int32_t qh;
  memcpy(&qh, p, 4);
  const __m256i rep = _mm256_shuffle_epi8(_mm256_set1_epi32(qh), _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
  const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
  return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(rep, bit), bit), _mm256_set1_epi8(0x10));
}

template <>
struct Q8Direct<kQ4_0> {
  // w = nibble - 8 in [-8, 7], then the signed dot (measured faster than the unsigned form with an offset term).
  template <int R>
  KVQ_I void dot(const uint8_t* b, const int8_t* const* x, const float* dx, const float*, const int16_t* const*, Q8Acc* acc, float*) {
    const float d = ld_f16x(b);
    const __m256i w = _mm256_sub_epi8(q8_nib_halves(b + 2), _mm256_set1_epi8(8));
    for (int r = 0; r < R; r++) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[r]));
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot32_i8(w, xv)), _mm256_set1_ps(d * dx[r]), acc[r]);
    }
  }
};

/**
 * The 32-element types with unsigned codes q (0..15 or 0..31): w = d q + c with c = m (q4_1, q5_1) or c = -bias d
 * (q5_0's q - 16): d dx sum(q x) through vpmaddubsw (no sign fix-ups: q is the unsigned operand), plus c dx sum(x)
 * in the row's scalar accumulator (xs[r] = dx sum(x) of the block, computed once per call).
 */
template <int DT>
struct Q8DirectU32 {
  static constexpr bool kMin = DT == kQ4_1 || DT == kQ5_1;   // an f16 minimum after d
  static constexpr bool kFive = DT == kQ5_0 || DT == kQ5_1;  // four bytes of fifth bits before the nibbles
  template <int R>
  KVQ_I void dot(const uint8_t* b, const int8_t* const* x, const float* dx, const float* xs, const int16_t* const*, Q8Acc* acc, float* accs) {
    const float d = ld_f16x(b);
    const float c = kMin ? ld_f16x(b + 2) : -16.0f * d;
    const uint8_t* qs = b + 2 + (kMin ? 2 : 0) + (kFive ? 4 : 0);
    __m256i w = q8_nib_halves(qs);
    if (kFive) w = _mm256_or_si256(w, q8_bit5(b + 2 + (kMin ? 2 : 0)));
    for (int r = 0; r < R; r++) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[r]));
      const __m256i p32 = _mm256_madd_epi16(_mm256_maddubs_epi16(w, xv), _mm256_set1_epi16(1));
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), _mm256_set1_ps(d * dx[r]), acc[r]);
      accs[r] += c * xs[r];
    }
  }
};
template <>
struct Q8Direct<kQ4_1> : Q8DirectU32<kQ4_1> {};
template <>
struct Q8Direct<kQ5_0> : Q8DirectU32<kQ5_0> {};
template <>
struct Q8Direct<kQ5_1> : Q8DirectU32<kQ5_1> {};

/**
 * q4_k / q5_k: sum over sub-blocks j of d sc_j sum(q x) - dmin m_j sum(x); q unsigned (nibbles, plus q5_k's fifth
 * bits from qh), the 6-bit scale applied as int16.
 */
template <bool kFive>
struct Q8DirectK45 {
  template <int R>
  KVQ_I void dot(const uint8_t* b, const int8_t* const* x, const float* dx, const float*, const int16_t* const* s16, Q8Acc* acc, float*) {
    const float d = ld_f16x(b), dmin = ld_f16x(b + 2);
    // The 8 scales and 8 mins of the 12 packed bytes, four at a time as 32-bit words built in general registers and
    // moved to a vector directly (k_scale_min's layout: sub-blocks 0-3 in the low 6 bits of bytes 0-3 / 4-7,
    // sub-blocks 4-7 from bytes 8-11's nibbles plus the top two bits of bytes 0-3 / 4-7). Storing the words and
    // reloading them wider stalls on store forwarding (measured: a third of the block's time).
    uint32_t w0, w1, w2;
    memcpy(&w0, b + 4, 4);
    memcpy(&w1, b + 8, 4);
    memcpy(&w2, b + 12, 4);
    const __m128i sm = _mm_setr_epi32((int)(w0 & 0x3f3f3f3fu), (int)((w2 & 0x0f0f0f0fu) | (((w0 >> 6) & 0x03030303u) << 4)),
                                      (int)(w1 & 0x3f3f3f3fu), (int)(((w2 >> 4) & 0x0f0f0f0fu) | (((w1 >> 6) & 0x03030303u) << 4)));
    // Scales 0..7 as int16 in both 128-bit halves; sub-block j's scale broadcast by one vpshufb (word j).
    const __m256i sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
    // The mins as int16, each twice (one per 16-sum of its sub-block).
    const __m256i mins16 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(sm, _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15)));
    __m256i lo[4], hi[4], slo[4], shi[4];
    const uint8_t* qs = b + (kFive ? 48 : 16);
    const __m256i qh = kFive ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16)) : _mm256_setzero_si256();
    const __m256i one = _mm256_set1_epi8(1);
    for (int jj = 0; jj < 4; jj++) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * jj));
      lo[jj] = q8_nib_lo(q);
      hi[jj] = q8_nib_hi(q);
      if (kFive) {
        const __m256i h = _mm256_srli_epi16(qh, 2 * jj);
        lo[jj] = _mm256_or_si256(lo[jj], _mm256_slli_epi16(_mm256_and_si256(h, one), 4));
        hi[jj] = _mm256_or_si256(hi[jj], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 1), one), 4));
      }
      slo[jj] = _mm256_shuffle_epi8(sc16, _mm256_set1_epi16((short)(0x0100 + 0x0202 * (2 * jj))));
      shi[jj] = _mm256_shuffle_epi8(sc16, _mm256_set1_epi16((short)(0x0100 + 0x0202 * (2 * jj + 1))));
    }
    for (int r = 0; r < R; r++) {
      __m256i sum = _mm256_setzero_si256();
      for (int jj = 0; jj < 4; jj++) {
        const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[r] + 64 * jj));
        const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[r] + 64 * jj + 32));
        const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo[jj], x0), slo[jj]);
        const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi[jj], x1), shi[jj]);
        sum = _mm256_add_epi32(sum, _mm256_add_epi32(p0, p1));
      }
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(d * dx[r]), acc[r]);
      // mins: lane j = m_j * (the two 16-sums of sub-block j), scaled by -dmin * dx.
      const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s16[r]));
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(mins16, bs)), _mm256_set1_ps(-dmin * dx[r]), acc[r]);
    }
  }
};
template <>
struct Q8Direct<kQ4_K> : Q8DirectK45<false> {};
template <>
struct Q8Direct<kQ5_K> : Q8DirectK45<true> {};

template <>
struct Q8Direct<kQ6_K> {
  // q = (ql nibble | qh 2 bits << 4) - 32 in groups of 16 with int8 scales: sum(sc q x) over unsigned q, minus
  // 32 sum_g sc_g sum_g(x).
  template <int R>
  KVQ_I void dot(const uint8_t* b, const int8_t* const* x, const float* dx, const float*, const int16_t* const* s16, Q8Acc* acc, float*) {
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
    const float d = ld_f16x(b + 208);
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x03);
    __m256i q[8], s[8];
    for (int n = 0; n < 2; n++) {
      const __m256i L = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 64 * n));
      const __m256i L2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 64 * n + 32));
      const __m256i H = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 128 + 32 * n));
      q[4 * n + 0] = _mm256_or_si256(_mm256_and_si256(L, m4), _mm256_slli_epi16(_mm256_and_si256(H, m2), 4));
      q[4 * n + 1] = _mm256_or_si256(_mm256_and_si256(L2, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(H, 2), m2), 4));
      q[4 * n + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(L, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(H, 4), m2), 4));
      q[4 * n + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(L2, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(H, 6), m2), 4));
    }
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc)));
    // Chunk c (32 elements) has group scales sc[2c] (low 16 elements) and sc[2c + 1] (high): one vpshufb per chunk on
    // the half of sc16 holding them, broadcast to both 128-bit lanes (words 2c, 2c + 1 mod 8 picked per lane).
    const __m256i sclo = _mm256_permute2x128_si256(sc16, sc16, 0x00), schi = _mm256_permute2x128_si256(sc16, sc16, 0x11);
    for (int c = 0; c < 8; c++) {
      const int w = (2 * c) & 7;
      const __m256i pick = _mm256_setr_m128i(_mm_set1_epi16((short)(0x0100 + 0x0202 * w)), _mm_set1_epi16((short)(0x0100 + 0x0202 * (w + 1))));
      s[c] = _mm256_shuffle_epi8(c < 4 ? sclo : schi, pick);
    }
    for (int r = 0; r < R; r++) {
      __m256i sum = _mm256_setzero_si256();
      for (int c = 0; c < 8; c++) {
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[r] + 32 * c));
        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(_mm256_maddubs_epi16(q[c], xv), s[c]));
      }
      // sum((q - 32) sc x) = sum(q sc x) - 32 sum_g sc_g sum_g(x): both through one vpmaddwd each.
      const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s16[r]));
      const __m256i corr = _mm256_madd_epi16(sc16, bs);
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(sum, _mm256_slli_epi32(corr, 5))), _mm256_set1_ps(d * dx[r]), acc[r]);
    }
  }
};

KVQ_I float q8_acc_sum(Q8Acc v) { return hsum8(v); }
#else
#include "wquant_neon_q8.h"
#endif

/**
 * y[r, n] for n in [n0, n1) with a direct block dot (Q8Direct<DT>): each weight row streamed once, straight into
 * registers. One row at a time and no software prefetch: streaming 2-4 rows side by side, or prefetching 1-2 KiB
 * ahead, both measured slower on the 4-6-bit types (2-core Zen 3; the hardware prefetcher follows one stream best).
 */
template <int DT, int R>
static void gemv_q8_direct(const LinearParams& p, const XQ8& xa, int64_t n0, int64_t n1) {
  typedef QB<DT> B;
  constexpr int64_t XB = B::kElems == 256 ? 256 : 32;
  const int64_t K = p.in, N = p.out, nb = K / B::kElems, nxb = K / XB;
  const int64_t rowBytes = nb * B::kBytes;
  const uint8_t* base = static_cast<const uint8_t*>(p.w.data);
  for (int64_t n = n0; n < n1; n++) {
    const uint8_t* wr = base + n * rowBytes;
    Q8Acc acc[R];
    float accs[R];
    for (int r = 0; r < R; r++) acc[r] = q8_acc_zero(), accs[r] = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
      const int64_t e0 = b * B::kElems;
      const int8_t* x[R];
      const int16_t* s16[R];
      float dx[R], xs[R];
      for (int r = 0; r < R; r++) {
        x[r] = xa.q + r * K + e0;
        s16[r] = xa.s16 + r * (K / 16) + e0 / 16;
        dx[r] = xa.d[r * nxb + e0 / XB];
        xs[r] = XB == 32 ? xa.xs[r * nxb + e0 / XB] : 0.0f;
      }
      Q8Direct<DT>::template dot<R>(wr + b * B::kBytes, x, dx, xs, s16, acc, accs);
    }
    for (int r = 0; r < R; r++) p.y[r * N + n] = q8_acc_sum(acc[r]) + accs[r] + (p.bias ? p.bias[n] : 0.0f);
  }
}

#if defined(__AVX2__)
#include "wquant_vnni.h"
#endif

/** y[r, n] for n in [n0, n1) through the ISA's int8 block dot; `gemm`: a prefill task (weight rows read from cache). */
template <int DT>
static void gemv_q8_rt(int rows, const LinearParams& p, const XQ8& xa, int64_t n0, int64_t n1, bool gemm = false) {
#if defined(KVQ_Q8_VNNI)
  if constexpr (QB<DT>::kElems == 32) {
    if (gemm) {  // prefill: two weight rows per load of the activations, no prefetch (the tile is in cache)
      with_rows(rows, [&](auto r) { gemv_q8_vnni<DT, decltype(r)::value, 2>(p, xa, n0, n1); });
      return;
    }
  }
  with_rows(rows, [&](auto r) { gemv_q8_vnni<DT, decltype(r)::value>(p, xa, n0, n1, !gemm); });
#else
  (void)gemm;
  with_rows(rows, [&](auto r) { gemv_q8_direct<DT, decltype(r)::value>(p, xa, n0, n1); });
#endif
}

/**
 * The activations of one call quantized as GGML does (act_q8_quantize_row), with the 16-element sums of q: arrays
 * carved from the pool's shared buffer (Runner::shared, reused across calls; a prefill's are megabytes, and fresh
 * allocations of that size cost page faults on every call).
 */
struct XQ8Buf {
  int8_t* q = nullptr;
  float* d = nullptr;
  int16_t* s16 = nullptr;
  float* xs = nullptr;
  int32_t* ini = nullptr;  // the VNNI lane terms (32-element types on VNNI builds only)
  float* dxl = nullptr;
  float* xsl = nullptr;

  /** The activations as the dots read them. */
  XQ8 view(int64_t xb) const {
    XQ8 v{q, d, s16, xs, xb};
    v.ini = ini, v.dxl = dxl, v.xsl = xsl;
    return v;
  }
};

/** Whether DT's dots read the VNNI lane terms (the 32-element types on VNNI builds). */
KVQ_I bool xq8_lanes(int64_t xb) {
#if defined(KVQ_Q8_VNNI)
  return xb == 32;
#else
  (void)xb;
  return false;
#endif
}

/**
 * The per-row terms the dots read besides q, from q and its block scales d (K elements): s16 (sums of 16 q), xs
 * (32-element blocks: d * sum of the block's q) and, where the dots use them, the VNNI lane terms: per 4-element lane, ini = -k * (sum of its q) with k the code offset of DT
 * (128, 8, 16, or 0), dxl = the lane's block scale, xsl = dxl * (sum of its q).
 * 32 elements per step: vpmaddubsw by ones then vpmaddwd give the eight 4-element sums.
 */
template <int DT>
KVQ_I void xq8_terms(const int8_t* q, const float* d, int64_t K, int64_t xb, int16_t* s16, float* xs, int32_t* ini, float* dxl, float* xsl) {
#if defined(__AVX2__)
  const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
  for (int64_t e = 0; e < K; e += 32) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + e));
    const __m256i l4 = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, v), ones16);  // lane i: q[4i .. 4i + 3]
    // 16-sums: lanes 0-3 and 4-7.
    const __m256i p = _mm256_hadd_epi32(l4, l4);  // [l0+l1, l2+l3, ., . | l4+l5, l6+l7, ., .]
    const __m256i p2 = _mm256_hadd_epi32(p, p);   // [l0..l3, ., ., . | l4..l7, ., ., .]
    const int32_t g0 = _mm256_cvtsi256_si32(p2), g1 = _mm_cvtsi128_si32(_mm256_extracti128_si256(p2, 1));
    s16[e / 16] = (int16_t)g0;
    s16[e / 16 + 1] = (int16_t)g1;
    if (xb == 32) {
      const float dx = d[e / 32];
      xs[e / 32] = dx * (float)(g0 + g1);
#if defined(KVQ_Q8_VNNI)
      if (ini) {
        constexpr int k = DT == kQ8_0 ? 128 : DT == kQ4_0 ? 8 : DT == kQ5_0 ? 16 : 0;
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(ini + e / 4), _mm256_mullo_epi32(l4, _mm256_set1_epi32(-k)));
        _mm256_storeu_ps(dxl + e / 4, _mm256_set1_ps(dx));
        _mm256_storeu_ps(xsl + e / 4, _mm256_mul_ps(_mm256_set1_ps(dx), _mm256_cvtepi32_ps(l4)));
      }
#else
      (void)ini, (void)dxl, (void)xsl;
#endif
    }
  }
#else
  // Portable: the same sums, one 16-element group at a time (no lane terms off VNNI builds).
  (void)ini, (void)dxl, (void)xsl;
  for (int64_t g = 0; g < K / 16; g++) {
    int32_t t = 0;
    for (int j = 0; j < 16; j++) t += q[16 * g + j];
    s16[g] = (int16_t)t;
  }
  if (xb == 32)
    for (int64_t b = 0; b < K / 32; b++) xs[b] = d[b] * (float)(s16[2 * b] + s16[2 * b + 1]);
#endif
}

/** Quantize rows [r0, r1) of x into b (carved for all rows by xq8_alloc). */
template <int DT>
KVQ_I void xq8_rows(const float* x, int64_t K, int64_t xb, int64_t r0, int64_t r1, XQ8Buf& b) {
  const bool lanes = b.ini != nullptr;
  for (int64_t r = r0; r < r1; r++) {
    xq8_quantize_row(DT, x + r * K, K, b.q + r * K, b.d + r * (K / xb));
    xq8_terms<DT>(b.q + r * K, b.d + r * (K / xb), K, xb, b.s16 + r * (K / 16), b.xs + r * (K / 32),
                  lanes ? b.ini + r * (K / 4) : nullptr, lanes ? b.dxl + r * (K / 4) : nullptr, lanes ? b.xsl + r * (K / 4) : nullptr);
  }
}

/** Carve b's arrays for `rows` rows of K from the pool's shared buffer; false when out of memory. */
KVQ_I bool xq8_alloc(const Runner& rn, int64_t rows, int64_t K, int64_t xb, XQ8Buf& b) {
  auto al = [](int64_t n) { return (size_t)((n + 63) & ~(int64_t)63); };
  const bool lanes = xq8_lanes(xb);
  const size_t nq = al(rows * K), nd = al(rows * (K / xb) * 4), ns = al(rows * (K / 16) * 2), nx = al(rows * (K / 32) * 4);
  const size_t nl = lanes ? al(rows * (K / 4) * 4) : 0;
  uint8_t* m = static_cast<uint8_t*>(rn.shared(rn.self, nq + nd + ns + nx + 3 * nl));
  if (!m) return false;
  b.q = reinterpret_cast<int8_t*>(m);
  b.d = reinterpret_cast<float*>(m + nq);
  b.s16 = reinterpret_cast<int16_t*>(m + nq + nd);
  b.xs = reinterpret_cast<float*>(m + nq + nd + ns);
  if (lanes) {
    uint8_t* l = m + nq + nd + ns + nx;
    b.ini = reinterpret_cast<int32_t*>(l);
    b.dxl = reinterpret_cast<float*>(l + nl);
    b.xsl = reinterpret_cast<float*>(l + 2 * nl);
  }
  return true;
}

#if defined(KVQ_Q8_VNNI)
/** The quad GEMV (wquant_vnni.h) of a nibble type: the quantized activations reordered once, then rows over the threads. */
template <int DT>
static int qgemv_q8_quad(const LinearParams& p, const Runner& rn, const XQ8& xa) {
  const int64_t K = p.in, rows = p.rows;
  uint8_t* m = static_cast<uint8_t*>(scratch_alloc((size_t)(rows * K + 3 * rows * (K / 8) * 4)));
  if (!m) return kOutOfMemory;
  QuadX qx;
  qx.q = reinterpret_cast<int8_t*>(m);
  qx.ini = reinterpret_cast<int32_t*>(m + rows * K);
  qx.dxl = reinterpret_cast<float*>(m + rows * K + rows * (K / 8) * 4);
  qx.xsl = reinterpret_cast<float*>(m + rows * K + 2 * rows * (K / 8) * 4);
  for (int64_t r = 0; r < rows; r++) q8_quad_row(xa, r, K, qx);
  auto quad = [&](int64_t n0, int64_t n1) { with_rows((int)rows, [&](auto r) { gemv_q8_quad<DT, decltype(r)::value>(p, qx, n0, n1); }); };
  gemv_split(p, rn, quad);
  alignedFree(m);
  return kOk;
}
#endif

/** The int8 GEMV of a GGML dtype: quantize the (up to 4) activation rows once, then output rows over the threads. */
template <int DT>
static int qgemv_q8(const LinearParams& p, const Runner& rn) {
  const int64_t K = p.in, rows = p.rows, xb = act_q8_block(DT);
  XQ8Buf b;
  if (!xq8_alloc(rn, rows, K, xb, b)) return kOutOfMemory;
  xq8_rows<DT>(p.x, K, xb, 0, rows, b);
  const XQ8 xa = b.view(xb);
#if defined(KVQ_Q8_VNNI)
  if constexpr (kQ8Quad<DT>) {
    if (K % 128 == 0) return qgemv_q8_quad<DT>(p, rn, xa);
  }
#endif
  auto body = [&](int64_t n0, int64_t n1) { gemv_q8_rt<DT>((int)rows, p, xa, n0, n1); };
  gemv_split(p, rn, body);
  return kOk;
}

static const int64_t kQ8GemmMB = 64;  // activation rows per task (their int8 copy stays in L2)
static const int64_t kQ8GemmNB = 32;  // weight rows per task (at most 32 x 2.1 KiB of q8_0 blocks at K = 2048)

/**
 * The int8 GEMM of a GGML dtype (prefill): all activation rows quantized once (over the threads), then tasks of
 * (64 activation rows, 32 weight rows), each running the direct block dot four activation rows at a time, so every
 * weight block is unpacked once per four tokens and read from L1/L2 by the rest of the task. The same sums as the
 * GEMV (and as the float path on the round trip x', up to the order of float additions).
 */
template <int DT>
static int qgemm_q8(const LinearParams& p, const Runner& rn) {
  const int64_t K = p.in, N = p.out, xb = act_q8_block(DT);
  XQ8Buf b;
  if (!xq8_alloc(rn, p.rows, K, xb, b)) return kOutOfMemory;
  auto quant = [&](int64_t m0, int64_t m1, int) { xq8_rows<DT>(p.x, K, xb, m0, m1, b); };
  auto tile = [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    for (int64_t m = m0; m < m1; m += 4) {
      LinearParams pm = p;
      pm.y = p.y + m * N;
      const XQ8 xm = b.view(xb).from_row(m, K);
      gemv_q8_rt<DT>((int)imin(4, m1 - m), pm, xm, n0, n1, true);
    }
  };
  gemm_act_q8_split<kQ8GemmMB, kQ8GemmNB>(p, rn, quant, tile);
  return kOk;
}
#endif  // KVQ_Q8_INT

/**
 * linear through the float kernels on x's round trip x' (the function the integer paths compute): trip(r0, r1, xr)
 * writes rows [r0, r1) of x' at xr + r0 * in; prefill-sized inputs are rounded over the threads, 16 rows per task
 * (rows are independent).
 */
template <class Trip>
static int linear_on_round_trip(const LinearParams& p, const Runner& rn, Trip& trip) {
  float* xr = static_cast<float*>(scratch_alloc((size_t)(p.rows * p.in) * sizeof(float)));
  if (!xr) return kOutOfMemory;
  const int64_t chunk = 16, tasks = ceil_div(p.rows, chunk);
  auto rows = [&](int64_t t, int) { trip(t * chunk, imin(p.rows, t * chunk + chunk), xr); };
  if (tasks > 1) {
    rn.parallel_for(tasks, rows);
  } else {
    rows(0, 0);
  }
  LinearParams rt = p;
  rt.x = xr;
  rt.xq = 0;
  const int rc = linear_quant(rt, rn);
  alignedFree(xr);
  return rc;
}

/** linear with 8-bit activations through the float kernels on the round trip x' (xq8_round_trip): the same function. */
static int linear_q8act_round_trip(const LinearParams& p, const Runner& rn) {
  auto trip = [&](int64_t r0, int64_t r1, float* xr) { xq8_round_trip(p.w.dtype, p.x + r0 * p.in, r1 - r0, p.in, xr + r0 * p.in); };
  return linear_on_round_trip(p, rn, trip);
}

/**
 * linear on a GGML weight with 8-bit activations: the int8 GEMV (up to 4 rows) and GEMM (prefill) on AVX2 / AVX-512
 * and NEON builds; otherwise (scalar) the float kernels on the round trip x'.
 */
static int linear_q8act(const LinearParams& p, const Runner& rn) {
#if defined(KVQ_Q8_INT)
  return with_ggml_dtype(
      p.w.dtype,
      [&](auto dt) {
        constexpr int DT = decltype(dt)::value;
        if (p.rows <= 4) return qgemv_q8<DT>(p, rn);
        return qgemm_q8<DT>(p, rn);
      },
      [&] { return linear_q8act_round_trip(p, rn); });
#endif
  return linear_q8act_round_trip(p, rn);
}
