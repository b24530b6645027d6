/*
 * c8-avx2.c — int8 ADD / SUB of same-shape tensors, 8 elements per vector (a tail through a
 * stack copy), AVX2: TFLite's integer Add with the requantization of qs8-requant/avx2.h.
 * Built with -mavx2 -mfma. Twin: tether_qs8_vadd_minmax_ukernel__scalar.
 */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../ukernels.h"
#include "../qs8-requant/avx2.h"

static inline __m256i load8(const int8_t* p, size_t n) {
  int64_t v = 0;
  memcpy(&v, p, n < 8 ? n : 8);
  return _mm256_cvtepi8_epi32(_mm_cvtsi64_si128(v));
}

void tether_qs8_vadd_minmax_ukernel__avx2(size_t n, const int8_t* a, const int8_t* b,
                                          int8_t* y, const tether_qs8_add_params* p) {
  const __m256i za = _mm256_set1_epi32(p->a_zero), zb = _mm256_set1_epi32(p->b_zero);
  const __m256i am = _mm256_set1_epi32(p->a_mult), al = _mm256_set1_epi32(p->a_left),
                ar = _mm256_set1_epi32(p->a_right);
  const __m256i bm = _mm256_set1_epi32(p->b_mult), bl = _mm256_set1_epi32(p->b_left),
                br = _mm256_set1_epi32(p->b_right);
  const __m256i ym = _mm256_set1_epi32(p->y_mult), yl = _mm256_set1_epi32(p->y_left),
                yr = _mm256_set1_epi32(p->y_right);
  const __m256i yz = _mm256_set1_epi32(p->y_zero);
  const __m256i lo = _mm256_set1_epi32(p->lo), hi = _mm256_set1_epi32(p->hi);
  for (size_t i = 0; i < n; i += 8) {
    const size_t rest = n - i;
    const __m256i va = _mm256_slli_epi32(_mm256_sub_epi32(load8(a + i, rest), za), 20);
    const __m256i vb = _mm256_slli_epi32(_mm256_sub_epi32(load8(b + i, rest), zb), 20);
    const __m256i sum = _mm256_add_epi32(tether_qs8_requant_avx2(va, am, al, ar),
                                         tether_qs8_requant_avx2(vb, bm, bl, br));
    __m256i v = _mm256_add_epi32(tether_qs8_requant_avx2(sum, ym, yl, yr), yz);
    v = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
    const __m128i s16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    const __m128i s8 = _mm_packs_epi16(s16, s16);
    if (rest >= 8) {
      _mm_storel_epi64((__m128i*)(y + i), s8);
    } else {
      int8_t t[16];
      _mm_storeu_si128((__m128i*)t, s8);
      memcpy(y + i, t, rest);
    }
  }
}
