/*
 * 6x16-avx2.c — f32 GEMM micro-kernel, 6 rows x 16 columns (12 ymm accumulators), AVX2 + FMA.
 * Built with -mavx2 -mfma; selected at run time only when the CPU and OS support AVX2.
 * Twin: tether_f32_gemm_minmax_ukernel_6x16__scalar.
 */
#include <immintrin.h>
#include <stddef.h>
#include <string.h>

#include "../ukernels.h"

/* One row (a dense layer on one input): the 6-row tile would compute 6 copies. Each output
 * keeps the tile's single FMA chain along K, so its bits equal the tile's. */
static void gemm_1x16(size_t nc, size_t kc, const float* a0, const float* w, float* c,
                      const tether_f32_minmax* params) {
  __m256 cl = _mm256_loadu_ps(w), ch = _mm256_loadu_ps(w + 8);
  w += 16;
  for (size_t k = 0; k < kc; k++, w += 16) {
    const __m256 v = _mm256_broadcast_ss(a0 + k);
    cl = _mm256_fmadd_ps(v, _mm256_loadu_ps(w), cl);
    ch = _mm256_fmadd_ps(v, _mm256_loadu_ps(w + 8), ch);
  }
  const __m256 lo = _mm256_set1_ps(params->min), hi = _mm256_set1_ps(params->max);
  float tmp[16];
  _mm256_storeu_ps(tmp, _mm256_min_ps(hi, _mm256_max_ps(lo, cl)));
  _mm256_storeu_ps(tmp + 8, _mm256_min_ps(hi, _mm256_max_ps(lo, ch)));
  memcpy(c, tmp, nc * sizeof(float));
}

void tether_f32_gemm_minmax_ukernel_6x16__avx2(size_t mr, size_t nc, size_t kc, const float* a,
                                               size_t a_stride, const float* w, float* c,
                                               size_t c_stride,
                                               const tether_f32_minmax* params) {
  if (mr == 1) {
    gemm_1x16(nc, kc, a, w, c, params);
    return;
  }
  const float* a0 = a;
  const float* a1 = mr > 1 ? (const float*)((const char*)a0 + a_stride) : a0;
  const float* a2 = mr > 2 ? (const float*)((const char*)a1 + a_stride) : a1;
  const float* a3 = mr > 3 ? (const float*)((const char*)a2 + a_stride) : a2;
  const float* a4 = mr > 4 ? (const float*)((const char*)a3 + a_stride) : a3;
  const float* a5 = mr > 5 ? (const float*)((const char*)a4 + a_stride) : a4;
  __m256 c0l = _mm256_loadu_ps(w), c0h = _mm256_loadu_ps(w + 8);
  __m256 c1l = c0l, c1h = c0h, c2l = c0l, c2h = c0h, c3l = c0l, c3h = c0h, c4l = c0l,
         c4h = c0h, c5l = c0l, c5h = c0h;
  w += 16;
  for (size_t k = 0; k < kc; k++) {
    const __m256 bl = _mm256_loadu_ps(w), bh = _mm256_loadu_ps(w + 8);
    w += 16;
    __m256 v = _mm256_broadcast_ss(a0 + k);
    c0l = _mm256_fmadd_ps(v, bl, c0l);
    c0h = _mm256_fmadd_ps(v, bh, c0h);
    v = _mm256_broadcast_ss(a1 + k);
    c1l = _mm256_fmadd_ps(v, bl, c1l);
    c1h = _mm256_fmadd_ps(v, bh, c1h);
    v = _mm256_broadcast_ss(a2 + k);
    c2l = _mm256_fmadd_ps(v, bl, c2l);
    c2h = _mm256_fmadd_ps(v, bh, c2h);
    v = _mm256_broadcast_ss(a3 + k);
    c3l = _mm256_fmadd_ps(v, bl, c3l);
    c3h = _mm256_fmadd_ps(v, bh, c3h);
    v = _mm256_broadcast_ss(a4 + k);
    c4l = _mm256_fmadd_ps(v, bl, c4l);
    c4h = _mm256_fmadd_ps(v, bh, c4h);
    v = _mm256_broadcast_ss(a5 + k);
    c5l = _mm256_fmadd_ps(v, bl, c5l);
    c5h = _mm256_fmadd_ps(v, bh, c5h);
  }
  const __m256 lo = _mm256_set1_ps(params->min), hi = _mm256_set1_ps(params->max);
  __m256 acc[12] = {c0l, c0h, c1l, c1h, c2l, c2h, c3l, c3h, c4l, c4h, c5l, c5h};
  for (size_t i = 0; i < mr; i++) {
    float* ci = (float*)((char*)c + i * c_stride);
    const __m256 l = _mm256_min_ps(hi, _mm256_max_ps(lo, acc[2 * i]));
    const __m256 h = _mm256_min_ps(hi, _mm256_max_ps(lo, acc[2 * i + 1]));
    if (nc == 16) {
      _mm256_storeu_ps(ci, l);
      _mm256_storeu_ps(ci + 8, h);
    } else {
      float tmp[16];
      _mm256_storeu_ps(tmp, l);
      _mm256_storeu_ps(tmp + 8, h);
      memcpy(ci, tmp, nc * sizeof(float));
    }
  }
}
