/*
 * 8x32-avx512.c — f32 GEMM micro-kernel, 8 rows x 32 columns (16 zmm accumulators),
 * AVX-512F. Built with -mavx512f; selected at run time only when the CPU and OS support it.
 * Twin: tether_f32_gemm_minmax_ukernel_8x32__scalar.
 */
#include <immintrin.h>
#include <stddef.h>

#include "../ukernels.h"

/* nc <= 16: the left half of the panel only (8 accumulators, half the FMAs and weight loads);
 * the same FMAs in the same order for each output as the whole tile. */
static void gemm_8x16(size_t mr, size_t nc, size_t kc, const float* const* rows, const float* w,
                      float* c, size_t c_stride, const tether_f32_minmax* params) {
  const float *a0 = rows[0], *a1 = rows[1], *a2 = rows[2], *a3 = rows[3];
  const float *a4 = rows[4], *a5 = rows[5], *a6 = rows[6], *a7 = rows[7];
  __m512 c0 = _mm512_loadu_ps(w);
  __m512 c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
  w += 32;
  for (size_t k = 0; k < kc; k++, w += 32) {
    const __m512 b = _mm512_loadu_ps(w);
    c0 = _mm512_fmadd_ps(_mm512_set1_ps(a0[k]), b, c0);
    c1 = _mm512_fmadd_ps(_mm512_set1_ps(a1[k]), b, c1);
    c2 = _mm512_fmadd_ps(_mm512_set1_ps(a2[k]), b, c2);
    c3 = _mm512_fmadd_ps(_mm512_set1_ps(a3[k]), b, c3);
    c4 = _mm512_fmadd_ps(_mm512_set1_ps(a4[k]), b, c4);
    c5 = _mm512_fmadd_ps(_mm512_set1_ps(a5[k]), b, c5);
    c6 = _mm512_fmadd_ps(_mm512_set1_ps(a6[k]), b, c6);
    c7 = _mm512_fmadd_ps(_mm512_set1_ps(a7[k]), b, c7);
  }
  const __m512 lo = _mm512_set1_ps(params->min), hi = _mm512_set1_ps(params->max);
  const __m512 acc[8] = {c0, c1, c2, c3, c4, c5, c6, c7};
  const __mmask16 m = (__mmask16)(nc >= 16 ? 0xFFFFu : (1u << nc) - 1u);
  for (size_t i = 0; i < mr; i++) {
    _mm512_mask_storeu_ps((float*)((char*)c + i * c_stride), m,
                          _mm512_min_ps(hi, _mm512_max_ps(lo, acc[i])));
  }
}

/* One row (a dense layer on one input): the 8-row tile would compute 8 copies. Each output
 * keeps the tile's single FMA chain along K, so its bits equal the tile's. */
static void gemm_1x32(size_t nc, size_t kc, const float* a0, const float* w, float* c,
                      const tether_f32_minmax* params) {
  __m512 cl = _mm512_loadu_ps(w), ch = _mm512_loadu_ps(w + 16);
  w += 32;
  for (size_t k = 0; k < kc; k++, w += 32) {
    const __m512 v = _mm512_set1_ps(a0[k]);
    cl = _mm512_fmadd_ps(v, _mm512_loadu_ps(w), cl);
    ch = _mm512_fmadd_ps(v, _mm512_loadu_ps(w + 16), ch);
  }
  const __m512 lo = _mm512_set1_ps(params->min), hi = _mm512_set1_ps(params->max);
  const __mmask16 ml = (__mmask16)(nc >= 16 ? 0xFFFFu : (1u << nc) - 1u);
  const __mmask16 mh = (__mmask16)(nc >= 32 ? 0xFFFFu : nc <= 16 ? 0u : (1u << (nc - 16)) - 1u);
  _mm512_mask_storeu_ps(c, ml, _mm512_min_ps(hi, _mm512_max_ps(lo, cl)));
  _mm512_mask_storeu_ps(c + 16, mh, _mm512_min_ps(hi, _mm512_max_ps(lo, ch)));
}

void tether_f32_gemm_minmax_ukernel_8x32__avx512(size_t mr, size_t nc, size_t kc,
                                                 const float* a, size_t a_stride,
                                                 const float* w, float* c, size_t c_stride,
                                                 const tether_f32_minmax* params) {
  if (mr == 1) {
    gemm_1x32(nc, kc, a, w, c, params);
    return;
  }
  const float* a0 = a;
  const float* a1 = mr > 1 ? (const float*)((const char*)a0 + a_stride) : a0;
  const float* a2 = mr > 2 ? (const float*)((const char*)a1 + a_stride) : a1;
  const float* a3 = mr > 3 ? (const float*)((const char*)a2 + a_stride) : a2;
  const float* a4 = mr > 4 ? (const float*)((const char*)a3 + a_stride) : a3;
  const float* a5 = mr > 5 ? (const float*)((const char*)a4 + a_stride) : a4;
  const float* a6 = mr > 6 ? (const float*)((const char*)a5 + a_stride) : a5;
  const float* a7 = mr > 7 ? (const float*)((const char*)a6 + a_stride) : a6;
  if (nc <= 16) {
    const float* const rows[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
    gemm_8x16(mr, nc, kc, rows, w, c, c_stride, params);
    return;
  }
  __m512 c0l = _mm512_loadu_ps(w), c0h = _mm512_loadu_ps(w + 16);
  __m512 c1l = c0l, c1h = c0h, c2l = c0l, c2h = c0h, c3l = c0l, c3h = c0h, c4l = c0l,
         c4h = c0h, c5l = c0l, c5h = c0h, c6l = c0l, c6h = c0h, c7l = c0l, c7h = c0h;
  w += 32;
  for (size_t k = 0; k < kc; k++) {
    const __m512 bl = _mm512_loadu_ps(w), bh = _mm512_loadu_ps(w + 16);
    w += 32;
    __m512 v = _mm512_set1_ps(a0[k]);
    c0l = _mm512_fmadd_ps(v, bl, c0l);
    c0h = _mm512_fmadd_ps(v, bh, c0h);
    v = _mm512_set1_ps(a1[k]);
    c1l = _mm512_fmadd_ps(v, bl, c1l);
    c1h = _mm512_fmadd_ps(v, bh, c1h);
    v = _mm512_set1_ps(a2[k]);
    c2l = _mm512_fmadd_ps(v, bl, c2l);
    c2h = _mm512_fmadd_ps(v, bh, c2h);
    v = _mm512_set1_ps(a3[k]);
    c3l = _mm512_fmadd_ps(v, bl, c3l);
    c3h = _mm512_fmadd_ps(v, bh, c3h);
    v = _mm512_set1_ps(a4[k]);
    c4l = _mm512_fmadd_ps(v, bl, c4l);
    c4h = _mm512_fmadd_ps(v, bh, c4h);
    v = _mm512_set1_ps(a5[k]);
    c5l = _mm512_fmadd_ps(v, bl, c5l);
    c5h = _mm512_fmadd_ps(v, bh, c5h);
    v = _mm512_set1_ps(a6[k]);
    c6l = _mm512_fmadd_ps(v, bl, c6l);
    c6h = _mm512_fmadd_ps(v, bh, c6h);
    v = _mm512_set1_ps(a7[k]);
    c7l = _mm512_fmadd_ps(v, bl, c7l);
    c7h = _mm512_fmadd_ps(v, bh, c7h);
  }
  const __m512 lo = _mm512_set1_ps(params->min), hi = _mm512_set1_ps(params->max);
  const __m512 acc[16] = {c0l, c0h, c1l, c1h, c2l, c2h, c3l, c3h,
                          c4l, c4h, c5l, c5h, c6l, c6h, c7l, c7h};
  /* Lanes [0, nc) of the 32: a mask per half. */
  const __mmask16 ml = (__mmask16)(nc >= 16 ? 0xFFFFu : (1u << nc) - 1u);
  const __mmask16 mh = (__mmask16)(nc >= 32 ? 0xFFFFu : nc <= 16 ? 0u : (1u << (nc - 16)) - 1u);
  for (size_t i = 0; i < mr; i++) {
    float* ci = (float*)((char*)c + i * c_stride);
    _mm512_mask_storeu_ps(ci, ml, _mm512_min_ps(hi, _mm512_max_ps(lo, acc[2 * i])));
    _mm512_mask_storeu_ps(ci + 16, mh, _mm512_min_ps(hi, _mm512_max_ps(lo, acc[2 * i + 1])));
  }
}
