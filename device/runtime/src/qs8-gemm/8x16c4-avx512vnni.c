/*
 * 8x16c4-avx512vnni.c — int8 GEMM micro-kernel, 8 rows x 16 channels, K in steps of 4 with
 * VNNI's vpdpbusd (u8 x s8 dot products of 4 into int32; A given as u8 x ^ 0x80 by the
 * driver, the +128 folded into the packed bias). TFLite requantization per channel.
 * Built with -mavx512f -mavx512bw -mavx512vl -mavx512vnni; selected only when the CPU has them.
 * Twin: tether_qs8_gemm_minmax_ukernel_8x16c4__scalar_u8.
 */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../ukernels.h"
#include "../qs8-requant/avx512.h"

static inline __m512i bcast4(const int8_t* p) {
  int32_t v;
  memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

/* The last 1-3 bytes of a row, zero-extended (their weights are zero). */
static inline __m512i bcast_tail(const int8_t* p, size_t n) {
  int32_t v = 0;
  memcpy(&v, p, n);
  return _mm512_set1_epi32(v);
}

/* C[1 x nc] = requantize(one row of A * W + bias): four accumulators along K, for
 * FULLY_CONNECTED on a single row (the 8-row tile would compute 8 copies). */
static void gemm_1x16(size_t nc, size_t kc, const int8_t* a0, const int32_t* head, int8_t* c,
                      const tether_qs8_params* params) {
  __m512i s0 = _mm512_loadu_si512(head), s1 = _mm512_setzero_si512(), s2 = s1, s3 = s1;
  const int8_t* wk = (const int8_t*)(head + 64);
  size_t k = 0;
  for (; k + 16 <= kc; k += 16, wk += 256) {
    s0 = _mm512_dpbusd_epi32(s0, bcast4(a0 + k), _mm512_loadu_si512(wk));
    s1 = _mm512_dpbusd_epi32(s1, bcast4(a0 + k + 4), _mm512_loadu_si512(wk + 64));
    s2 = _mm512_dpbusd_epi32(s2, bcast4(a0 + k + 8), _mm512_loadu_si512(wk + 128));
    s3 = _mm512_dpbusd_epi32(s3, bcast4(a0 + k + 12), _mm512_loadu_si512(wk + 192));
  }
  for (; k + 4 <= kc; k += 4, wk += 64) {
    s0 = _mm512_dpbusd_epi32(s0, bcast4(a0 + k), _mm512_loadu_si512(wk));
  }
  if (k < kc) s1 = _mm512_dpbusd_epi32(s1, bcast_tail(a0 + k, kc - k), _mm512_loadu_si512(wk));
  const __m512i acc = _mm512_add_epi32(_mm512_add_epi32(s0, s1), _mm512_add_epi32(s2, s3));
  const __m512i mult = _mm512_loadu_si512(head + 16), left = _mm512_loadu_si512(head + 32);
  const __m512i right = _mm512_loadu_si512(head + 48), yz = _mm512_set1_epi32(params->y_zero);
  const tether_qs8_rq64 rq = params->single_rounding
                                 ? tether_qs8_rq64_init_single(mult, left, right, yz)
                                 : tether_qs8_rq64_init(mult, right, yz);
  const __m512i v = tether_qs8_requant_zp_avx512(
      params->single_rounding ? acc : _mm512_sllv_epi32(acc, left), mult, &rq);
  const __m512i out = _mm512_min_epi32(_mm512_max_epi32(v, _mm512_set1_epi32(params->lo)),
                                       _mm512_set1_epi32(params->hi));
  tether_qs8_store16_avx512(c, (__mmask16)(nc >= 16 ? 0xFFFFu : (1u << nc) - 1u), out);
}

void tether_qs8_gemm_minmax_ukernel_8x16c4__avx512vnni(size_t mr, size_t nc, size_t kc,
                                                       const int8_t* a, size_t a_stride,
                                                       const void* w, int8_t* c,
                                                       size_t c_stride,
                                                       const tether_qs8_params* params) {
  if (mr == 1) {
    gemm_1x16(nc, kc, a, (const int32_t*)w, c, params);
    return;
  }
  const int8_t* a0 = a;
  const int8_t* a1 = mr > 1 ? a0 + a_stride : a0;
  const int8_t* a2 = mr > 2 ? a1 + a_stride : a1;
  const int8_t* a3 = mr > 3 ? a2 + a_stride : a2;
  const int8_t* a4 = mr > 4 ? a3 + a_stride : a3;
  const int8_t* a5 = mr > 5 ? a4 + a_stride : a4;
  const int8_t* a6 = mr > 6 ? a5 + a_stride : a5;
  const int8_t* a7 = mr > 7 ? a6 + a_stride : a6;
  const int32_t* head = (const int32_t*)w;
  const __m512i bias = _mm512_loadu_si512(head);
  __m512i c0 = bias, c1 = bias, c2 = bias, c3 = bias, c4 = bias, c5 = bias, c6 = bias, c7 = bias;
  const int8_t* wk = (const int8_t*)(head + 64);
  size_t k = 0;
  for (; k + 4 <= kc; k += 4) {
    const __m512i b = _mm512_loadu_si512(wk);
    wk += 64;
    c0 = _mm512_dpbusd_epi32(c0, bcast4(a0 + k), b);
    c1 = _mm512_dpbusd_epi32(c1, bcast4(a1 + k), b);
    c2 = _mm512_dpbusd_epi32(c2, bcast4(a2 + k), b);
    c3 = _mm512_dpbusd_epi32(c3, bcast4(a3 + k), b);
    c4 = _mm512_dpbusd_epi32(c4, bcast4(a4 + k), b);
    c5 = _mm512_dpbusd_epi32(c5, bcast4(a5 + k), b);
    c6 = _mm512_dpbusd_epi32(c6, bcast4(a6 + k), b);
    c7 = _mm512_dpbusd_epi32(c7, bcast4(a7 + k), b);
  }
  if (k < kc) {
    const size_t t = kc - k;
    const __m512i b = _mm512_loadu_si512(wk);
    c0 = _mm512_dpbusd_epi32(c0, bcast_tail(a0 + k, t), b);
    c1 = _mm512_dpbusd_epi32(c1, bcast_tail(a1 + k, t), b);
    c2 = _mm512_dpbusd_epi32(c2, bcast_tail(a2 + k, t), b);
    c3 = _mm512_dpbusd_epi32(c3, bcast_tail(a3 + k, t), b);
    c4 = _mm512_dpbusd_epi32(c4, bcast_tail(a4 + k, t), b);
    c5 = _mm512_dpbusd_epi32(c5, bcast_tail(a5 + k, t), b);
    c6 = _mm512_dpbusd_epi32(c6, bcast_tail(a6 + k, t), b);
    c7 = _mm512_dpbusd_epi32(c7, bcast_tail(a7 + k, t), b);
  }
  const __m512i mult = _mm512_loadu_si512(head + 16);
  const __m512i left = _mm512_loadu_si512(head + 32);
  const __m512i right = _mm512_loadu_si512(head + 48);
  const __m512i yz = _mm512_set1_epi32(params->y_zero);
  const __m128i lo8 = _mm_set1_epi8((char)params->lo), hi8 = _mm_set1_epi8((char)params->hi);
  const __mmask16 m = (__mmask16)(nc >= 16 ? 0xFFFFu : (1u << nc) - 1u);
  const __m512i acc[8] = {c0, c1, c2, c3, c4, c5, c6, c7};
  /* Two roundings: acc << left first; one rounding: left is in the shift. */
  const int shift_left = !params->single_rounding && _mm512_test_epi32_mask(left, left) != 0;
  const tether_qs8_rq64 rq = params->single_rounding
                                 ? tether_qs8_rq64_init_single(mult, left, right, yz)
                                 : tether_qs8_rq64_init(mult, right, yz);
  for (size_t i = 0; i < mr; i++) {
    const __m512i x = shift_left ? _mm512_sllv_epi32(acc[i], left) : acc[i];
    __m512i v = tether_qs8_requant_zp_avx512(x, mult, &rq);
    tether_qs8_clamp_store16_avx512((int8_t*)c + i * c_stride, m, v, lo8, hi8);
  }
}
