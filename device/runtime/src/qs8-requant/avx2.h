/*
 * avx2.h — TFLite's MultiplyByQuantizedMultiplier on 8 int32 lanes, bit for bit
 * (ukernels.h is the scalar statement; included by the AVX2 qs8 kernels only):
 *   x = acc << left;  q = (x * M + 2^30) >> 31, taken as the high half of the 64-bit
 *   (x * M + 2^30) << 1 (AVX2 has no 64-bit arithmetic shift; |x * M| < 2^62 so it fits);
 *   RoundingDivideByPOT(q, right) = (q >> right) + (q & mask > (mask >> 1) + (q < 0)).
 */
#ifndef TETHER_QS8_REQUANT_AVX2_H_
#define TETHER_QS8_REQUANT_AVX2_H_

#include <immintrin.h>

static inline __m256i tether_qs8_requant_avx2(__m256i acc, __m256i mult, __m256i left,
                                              __m256i right) {
  const __m256i x = _mm256_sllv_epi32(acc, left);
  const __m256i half = _mm256_set1_epi64x(1ll << 30);
  __m256i even = _mm256_mul_epi32(x, mult);
  __m256i odd = _mm256_mul_epi32(_mm256_srli_epi64(x, 32), _mm256_srli_epi64(mult, 32));
  even = _mm256_slli_epi64(_mm256_add_epi64(even, half), 1);
  odd = _mm256_slli_epi64(_mm256_add_epi64(odd, half), 1);
  const __m256i q = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, right), one);
  const __m256i rem = _mm256_and_si256(q, mask);
  const __m256i threshold = _mm256_add_epi32(_mm256_srai_epi32(mask, 1), _mm256_srli_epi32(q, 31));
  const __m256i round = _mm256_and_si256(_mm256_cmpgt_epi32(rem, threshold), one);
  return _mm256_add_epi32(_mm256_srav_epi32(q, right), round);
}

/* One rounding (params->single_rounding): (acc * M + 2^(t - 1)) >> t with t = 31 + right -
 * left, in 64-bit lanes. AVX2 has no 64-bit arithmetic shift: 2^62 is added first (|acc * M|
 * < 2^62 keeps the sum positive) and 2^(62 - t) taken off after the logical shift. */
static inline __m256i tether_qs8_requant_single_avx2(__m256i acc, __m256i mult, __m256i left,
                                                     __m256i right) {
  const __m256i total = _mm256_add_epi32(_mm256_sub_epi32(right, left), _mm256_set1_epi32(31));
  const __m256i low = _mm256_set1_epi64x(0xFFFFFFFFll), one = _mm256_set1_epi64x(1);
  const __m256i t_even = _mm256_and_si256(total, low), t_odd = _mm256_srli_epi64(total, 32);
  const __m256i big = _mm256_set1_epi64x(1ll << 62);
  __m256i even = _mm256_mul_epi32(acc, mult);
  __m256i odd = _mm256_mul_epi32(_mm256_srli_epi64(acc, 32), _mm256_srli_epi64(mult, 32));
  const __m256i r_even = _mm256_sllv_epi64(one, _mm256_sub_epi64(t_even, one));
  const __m256i r_odd = _mm256_sllv_epi64(one, _mm256_sub_epi64(t_odd, one));
  even = _mm256_add_epi64(even, _mm256_add_epi64(big, r_even));
  odd = _mm256_add_epi64(odd, _mm256_add_epi64(big, r_odd));
  even = _mm256_sub_epi64(_mm256_srlv_epi64(even, t_even), _mm256_srlv_epi64(big, t_even));
  odd = _mm256_sub_epi64(_mm256_srlv_epi64(odd, t_odd), _mm256_srlv_epi64(big, t_odd));
  return _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

#endif  /* TETHER_QS8_REQUANT_AVX2_H_ */
