/*
 * avx512.h — TFLite's MultiplyByQuantizedMultiplier on 16 int32 lanes, bit for bit
 * (ukernels.h is the scalar statement; included by the AVX-512 qs8 kernels only):
 *   x = acc << left;  q = (x * M + 2^30) >> 31 (64-bit products, arithmetic shift; equal to
 *   SaturatingRoundingDoublingHighMul since M > 0 rules out its one saturating case);
 *   RoundingDivideByPOT(q, right) = (q >> right) + (q & mask > (mask >> 1) + (q < 0)).
 */
#ifndef TETHER_QS8_REQUANT_AVX512_H_
#define TETHER_QS8_REQUANT_AVX512_H_

#include <immintrin.h>
#include <stdint.h>

/* The same without the left shift (all lanes' left shifts zero, the common case). */
static inline __m512i tether_qs8_requant_right_avx512(__m512i x, __m512i mult, __m512i right) {
  const __m512i half = _mm512_set1_epi64(1ll << 30);
  __m512i even = _mm512_mul_epi32(x, mult);
  __m512i odd = _mm512_mul_epi32(_mm512_srli_epi64(x, 32), _mm512_srli_epi64(mult, 32));
  even = _mm512_srai_epi64(_mm512_add_epi64(even, half), 31);
  odd = _mm512_srai_epi64(_mm512_add_epi64(odd, half), 31);
  const __m512i q = _mm512_mask_blend_epi32((__mmask16)0xAAAA, even, _mm512_slli_epi64(odd, 32));
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i mask = _mm512_sub_epi32(_mm512_sllv_epi32(one, right), one);
  const __m512i rem = _mm512_and_si512(q, mask);
  const __m512i threshold = _mm512_add_epi32(_mm512_srai_epi32(mask, 1), _mm512_srli_epi32(q, 31));
  const __m512i shifted = _mm512_srav_epi32(q, right);
  return _mm512_mask_add_epi32(shifted, _mm512_cmpgt_epi32_mask(rem, threshold), shifted, one);
}

static inline __m512i tether_qs8_requant_avx512(__m512i acc, __m512i mult, __m512i left,
                                                __m512i right) {
  return tether_qs8_requant_right_avx512(_mm512_sllv_epi32(acc, left), mult, right);
}

/* Stores lanes m of v (already clamped to int8) as bytes. The narrowing stays in a register
 * (compilers otherwise fuse it into vpmovdb's store form) and whole vectors take a plain
 * store: both the fused and the byte-masked stores are slow on AMD Zen 4. */
static inline void tether_qs8_store16_avx512(int8_t* p, __mmask16 m, __m512i v) {
  __m128i bytes = _mm512_cvtepi32_epi8(v);
  __asm__("" : "+v"(bytes));
  if (m == (__mmask16)0xFFFFu) {
    _mm_storeu_si128((__m128i*)p, bytes);
  } else {
    _mm_mask_storeu_epi8(p, m, bytes);
  }
}

/* clamp(v, lo, hi) stored as bytes (lanes m), lo >= -128 and hi <= 127: the saturating
 * narrowing then a byte clamp on 16 bytes equals the int32 clamp, in fewer wide operations. */
static inline void tether_qs8_clamp_store16_avx512(int8_t* p, __mmask16 m, __m512i v,
                                                   __m128i lo8, __m128i hi8) {
  __m128i bytes = _mm512_cvtsepi32_epi8(v);
  __asm__("" : "+v"(bytes));
  bytes = _mm_min_epi8(_mm_max_epi8(bytes, lo8), hi8);
  if (m == (__mmask16)0xFFFFu) {
    _mm_storeu_si128((__m128i*)p, bytes);
  } else {
    _mm_mask_storeu_epi8(p, m, bytes);
  }
}

#endif  /* TETHER_QS8_REQUANT_AVX512_H_ */
