/*
 * c16-avx512.c — int8 ADD / SUB of same-shape tensors, 16 elements per vector with masked
 * tails, AVX-512 (F, BW, VL): TFLite's integer Add with the requantization of
 * qs8-requant/avx512.h. Twin: tether_qs8_vadd_minmax_ukernel__scalar.
 */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "../ukernels.h"
#include "../qs8-requant/avx512.h"

void tether_qs8_vadd_minmax_ukernel__avx512(size_t n, const int8_t* a, const int8_t* b,
                                            int8_t* y, const tether_qs8_add_params* p) {
  const __m512i za = _mm512_set1_epi32(p->a_zero), zb = _mm512_set1_epi32(p->b_zero);
  const __m512i am = _mm512_set1_epi32(p->a_mult), al = _mm512_set1_epi32(p->a_left),
                ar = _mm512_set1_epi32(p->a_right);
  const __m512i bm = _mm512_set1_epi32(p->b_mult), bl = _mm512_set1_epi32(p->b_left),
                br = _mm512_set1_epi32(p->b_right);
  const __m512i ym = _mm512_set1_epi32(p->y_mult), yl = _mm512_set1_epi32(p->y_left),
                yr = _mm512_set1_epi32(p->y_right);
  const __m512i yz = _mm512_set1_epi32(p->y_zero);
  const __m512i lo = _mm512_set1_epi32(p->lo), hi = _mm512_set1_epi32(p->hi);
  for (size_t i = 0; i < n; i += 16) {
    const size_t rest = n - i;
    const __mmask16 m = (__mmask16)(rest >= 16 ? 0xFFFFu : (1u << rest) - 1u);
    const __m512i va = _mm512_slli_epi32(
        _mm512_sub_epi32(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, a + i)), za), 20);
    const __m512i vb = _mm512_slli_epi32(
        _mm512_sub_epi32(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, b + i)), zb), 20);
    const __m512i sum = _mm512_add_epi32(tether_qs8_requant_avx512(va, am, al, ar),
                                         tether_qs8_requant_avx512(vb, bm, bl, br));
    __m512i v = _mm512_add_epi32(tether_qs8_requant_avx512(sum, ym, yl, yr), yz);
    v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
    tether_qs8_store16_avx512(y + i, m, v);
  }
}
