// SPDX-License-Identifier: Apache-2.0
//
// Nibble / 5-bit unpacking of quantized weight blocks to int8 with SSE2/SSSE3 (part of the AVX2 and AVX-512 vector
// layers; included by simd_avx2.h and simd_avx512.h inside their namespace, with their KVQ_SI). The portable
// versions are in simd_scalar.h; wquant_impl.h uses the nibble and 5-bit unpacks, kvquant_impl.h the table one.
// Each writes whole 16-byte vectors, so the int8 loads that follow forward from the stores (byte-by-byte stores
// followed by 8-byte loads stall store forwarding, which made the 32-element formats 8x slower).

/** 16 packed bytes -> 32 int8: out[j] = (b[j] & 15) - bias, out[j + 16] = (b[j] >> 4) - bias (GGML q4_0 / q4_1). */
KVQ_SI void unpack_nib_halves(const uint8_t* b, int bias, int8_t* out) {
  const __m128i v = _mm_loadu_si128((const __m128i*)b);
  const __m128i m = _mm_set1_epi8(15), bv = _mm_set1_epi8((char)bias);
  _mm_storeu_si128((__m128i*)out, _mm_sub_epi8(_mm_and_si128(v, m), bv));
  _mm_storeu_si128((__m128i*)(out + 16), _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(v, 4), m), bv));
}

/** 16 packed bytes -> 32 int8 interleaved: out[2j] = (b[j] & 15) - bias, out[2j + 1] = (b[j] >> 4) - bias (int4). */
KVQ_SI void unpack_nib_pairs(const uint8_t* b, int bias, int8_t* out) {
  const __m128i v = _mm_loadu_si128((const __m128i*)b);
  const __m128i m = _mm_set1_epi8(15), bv = _mm_set1_epi8((char)bias);
  const __m128i lo = _mm_sub_epi8(_mm_and_si128(v, m), bv);
  const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(v, 4), m), bv);
  _mm_storeu_si128((__m128i*)out, _mm_unpacklo_epi8(lo, hi));
  _mm_storeu_si128((__m128i*)(out + 16), _mm_unpackhi_epi8(lo, hi));
}

/**
 * 16 packed bytes -> 32 int8 interleaved through a 16-entry table: out[2j] = lut[b[j] & 15], out[2j + 1] =
 * lut[b[j] >> 4] (the write-time-scaled KV dtypes: two's complement int4 and 2 x E2M1 of nvfp4; kvquant_impl.h).
 */
KVQ_SI void unpack_nib_pairs_lut(const uint8_t* b, const int8_t* lut, int8_t* out) {
  const __m128i v = _mm_loadu_si128((const __m128i*)b);
  const __m128i t = _mm_loadu_si128((const __m128i*)lut);
  const __m128i m = _mm_set1_epi8(15);
  const __m128i lo = _mm_shuffle_epi8(t, _mm_and_si128(v, m));
  const __m128i hi = _mm_shuffle_epi8(t, _mm_and_si128(_mm_srli_epi16(v, 4), m));
  _mm_storeu_si128((__m128i*)out, _mm_unpacklo_epi8(lo, hi));
  _mm_storeu_si128((__m128i*)(out + 16), _mm_unpackhi_epi8(lo, hi));
}

/**
 * GGML q5_0 / q5_1: 16 packed low-nibble bytes and 32 fifth bits (qh, bit j = element j) -> 32 int8:
 * out[j] = ((qs[j] & 15) | bit_j << 4) - bias, out[j + 16] = ((qs[j] >> 4) | bit_{j+16} << 4) - bias.
 */
KVQ_SI void unpack_q5_32(const uint8_t* qs, uint32_t qh, int bias, int8_t* out) {
  const __m128i v = _mm_loadu_si128((const __m128i*)qs);
  const __m128i m = _mm_set1_epi8(15), bv = _mm_set1_epi8((char)bias);
  // Byte j of `bits` = qh byte j / 8, then isolate bit j % 8 and turn it into 0x10.
  const __m128i h = _mm_cvtsi32_si128((int)qh);
  const __m128i sel = _mm_set1_epi64x((long long)0x8040201008040201ULL);
  const __m128i b0 = _mm_shuffle_epi8(h, _mm_set_epi8(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0));
  const __m128i b1 = _mm_shuffle_epi8(h, _mm_set_epi8(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2));
  const __m128i x10 = _mm_set1_epi8(0x10);
  const __m128i h0 = _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(b0, sel), sel), x10);
  const __m128i h1 = _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(b1, sel), sel), x10);
  _mm_storeu_si128((__m128i*)out, _mm_sub_epi8(_mm_or_si128(_mm_and_si128(v, m), h0), bv));
  _mm_storeu_si128((__m128i*)(out + 16), _mm_sub_epi8(_mm_or_si128(_mm_and_si128(_mm_srli_epi16(v, 4), m), h1), bv));
}
