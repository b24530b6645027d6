/*
 * c16-avx512.c — float32 to int8 (QUANTIZE), 16 floats per vector with masked tails,
 * AVX-512 (F, BW, VL): the same steps as the scalar twin (IEEE division, truncation, +-1 on
 * a remainder of at least one half, NaN to zero, |q| clamped to 2^20), bit for bit.
 * Twin: tether_f32_qs8_vcvt_ukernel__scalar.
 */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "../ukernels.h"
#include "../qs8-requant/avx512.h"

void tether_f32_qs8_vcvt_ukernel__avx512(size_t n, const float* x, int8_t* y, float scale,
                                         int32_t zero) {
  const __m512 s = _mm512_set1_ps(scale);
  const __m512 bound = _mm512_set1_ps(1048576.0f), nbound = _mm512_set1_ps(-1048576.0f);
  const __m512 half = _mm512_set1_ps(0.5f), nhalf = _mm512_set1_ps(-0.5f);
  const __m512i one = _mm512_set1_epi32(1), z = _mm512_set1_epi32(zero);
  const __m512i lo = _mm512_set1_epi32(-128), hi = _mm512_set1_epi32(127);
  for (size_t i = 0; i < n; i += 16) {
    const size_t rest = n - i;
    const __mmask16 m = (__mmask16)(rest >= 16 ? 0xFFFFu : (1u << rest) - 1u);
    __m512 q = _mm512_div_ps(_mm512_maskz_loadu_ps(m, x + i), s);
    q = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(q, q, _CMP_ORD_Q), q);  /* NaN -> 0 */
    q = _mm512_min_ps(_mm512_max_ps(q, nbound), bound);
    const __m512 t = _mm512_roundscale_ps(q, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m512 rem = _mm512_sub_ps(q, t);
    __m512i v = _mm512_cvttps_epi32(t);
    v = _mm512_mask_add_epi32(v, _mm512_cmp_ps_mask(rem, half, _CMP_GE_OQ), v, one);
    v = _mm512_mask_sub_epi32(v, _mm512_cmp_ps_mask(rem, nhalf, _CMP_LE_OQ), v, one);
    v = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(v, z), lo), hi);
    tether_qs8_store16_avx512(y + i, m, v);
  }
}
