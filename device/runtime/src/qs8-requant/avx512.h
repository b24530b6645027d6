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

/* x (already shifted left) requantized plus the output zero point y_zero (all lanes), in one
 * rounding step on 64-bit products. With p = x * M, the two roundings compose
 * (floor((floor(a / m) + c) / n) = floor((a + c m) / (m n)) for integers):
 *   right = 0:  (p + 2^30) >> 31
 *   right >= 1: (p + 2^30 + 2^(30 + right) - [p < -2^30] 2^31) >> (31 + right)
 * ([p < -2^30] is q < 0, RoundingDivideByPOT's away-from-zero side); |p| < 2^62 and the
 * offsets stay below 2^62, so the sums cannot overflow. y_zero is added after the shift
 * (folded into the offset as y_zero << (31 + right) it would overflow for right > 24). */
typedef struct tether_qs8_rq64 {
  __m512i mult_odd, bias_even, bias_odd, neg_even, neg_odd, shift_even, shift_odd, yz;
} tether_qs8_rq64;

/* The per-channel constants of 16 lanes (hoist out of the loops). */
static inline tether_qs8_rq64 tether_qs8_rq64_init(__m512i mult, __m512i right, __m512i yz) {
  const __m512i low = _mm512_set1_epi64(0xFFFFFFFFll);
  const __m512i r_even = _mm512_and_si512(right, low), r_odd = _mm512_srli_epi64(right, 32);
  const __m512i c30 = _mm512_set1_epi64(1ll << 30), one = _mm512_set1_epi64(1);
  tether_qs8_rq64 k;
  k.mult_odd = _mm512_shuffle_epi32(mult, _MM_PERM_DDBB);
  k.shift_even = _mm512_add_epi64(r_even, _mm512_set1_epi64(31));
  k.shift_odd = _mm512_add_epi64(r_odd, _mm512_set1_epi64(31));
  /* 2^(30 + r) for r >= 1, else 0: ((1 << r) >> 1) << 31. */
  const __m512i half_even = _mm512_srli_epi64(_mm512_sllv_epi64(one, r_even), 1);
  const __m512i half_odd = _mm512_srli_epi64(_mm512_sllv_epi64(one, r_odd), 1);
  k.bias_even = _mm512_add_epi64(c30, _mm512_slli_epi64(half_even, 31));
  k.bias_odd = _mm512_add_epi64(c30, _mm512_slli_epi64(half_odd, 31));
  k.yz = yz;
  k.neg_even = _mm512_slli_epi64(_mm512_min_epu64(r_even, one), 31);
  k.neg_odd = _mm512_slli_epi64(_mm512_min_epu64(r_odd, one), 31);
  return k;
}

/* The constants of the one-rounding form (params->single_rounding):
 * (acc * M + 2^(30 + right - left)) >> (31 + right - left), acc not shifted first. */
static inline tether_qs8_rq64 tether_qs8_rq64_init_single(__m512i mult, __m512i left,
                                                          __m512i right, __m512i yz) {
  const __m512i total = _mm512_add_epi32(_mm512_sub_epi32(right, left), _mm512_set1_epi32(31));
  const __m512i low = _mm512_set1_epi64(0xFFFFFFFFll), one = _mm512_set1_epi64(1);
  tether_qs8_rq64 k;
  k.mult_odd = _mm512_shuffle_epi32(mult, _MM_PERM_DDBB);
  k.shift_even = _mm512_and_si512(total, low);
  k.shift_odd = _mm512_srli_epi64(total, 32);
  k.bias_even = _mm512_sllv_epi64(one, _mm512_sub_epi64(k.shift_even, one));
  k.bias_odd = _mm512_sllv_epi64(one, _mm512_sub_epi64(k.shift_odd, one));
  k.neg_even = _mm512_setzero_si512();
  k.neg_odd = k.neg_even;
  k.yz = yz;
  return k;
}

static inline __m512i tether_qs8_requant_zp_avx512(__m512i x, __m512i mult,
                                                   const tether_qs8_rq64* k) {
  const __m512i limit = _mm512_set1_epi64(-(1ll << 30));
  const __m512i pe = _mm512_mul_epi32(x, mult);
  const __m512i po = _mm512_mul_epi32(_mm512_shuffle_epi32(x, _MM_PERM_DDBB), k->mult_odd);
  __m512i te = _mm512_add_epi64(pe, k->bias_even), to = _mm512_add_epi64(po, k->bias_odd);
  te = _mm512_mask_sub_epi64(te, _mm512_cmplt_epi64_mask(pe, limit), te, k->neg_even);
  to = _mm512_mask_sub_epi64(to, _mm512_cmplt_epi64_mask(po, limit), to, k->neg_odd);
  te = _mm512_srav_epi64(te, k->shift_even);
  to = _mm512_srav_epi64(to, k->shift_odd);
  /* Odd lanes take dword 0 / 2 of each 128-bit block of `to`. */
  return _mm512_add_epi32(_mm512_mask_shuffle_epi32(te, (__mmask16)0xAAAA, to, (_MM_PERM_ENUM)0xA0),
                          k->yz);
}

/* The whole of it without a zero point, for the kernels' cold paths. */
static inline __m512i tether_qs8_requant_avx512(__m512i acc, __m512i mult, __m512i left,
                                                __m512i right) {
  const tether_qs8_rq64 k = tether_qs8_rq64_init(mult, right, _mm512_setzero_si512());
  return tether_qs8_requant_zp_avx512(_mm512_sllv_epi32(acc, left), mult, &k);
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
