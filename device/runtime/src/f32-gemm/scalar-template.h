/*
 * scalar-template.h — the portable float GEMM micro-kernel for one MR x NR tile: the twin of
 * each optimized tile (same tile and packed layout), the test oracle for the SIMD kernels and
 * the fallback on any CPU. Each <MR>x<NR>-scalar.c instantiates it once; edit it here only.
 */
#ifndef TETHER_F32_GEMM_SCALAR_TEMPLATE_H_
#define TETHER_F32_GEMM_SCALAR_TEMPLATE_H_

#include <stddef.h>

#include "../ukernels.h"

#define TETHER_F32_GEMM_SCALAR(MR, NR)                                                      \
  void tether_f32_gemm_minmax_ukernel_##MR##x##NR##__scalar(                                \
      size_t mr, size_t nc, size_t kc, const float* a, size_t a_stride, const float* w,     \
      float* c, size_t c_stride, const tether_f32_minmax* params) {                         \
    float acc[MR][NR];                                                                      \
    const float* rows[MR];                                                                  \
    for (size_t i = 0; i < MR; i++) {                                                       \
      rows[i] = (const float*)((const char*)a + (i < mr ? i : mr - 1) * a_stride);          \
      for (size_t j = 0; j < NR; j++) acc[i][j] = w[j];                                     \
    }                                                                                       \
    w += NR;                                                                                \
    for (size_t k = 0; k < kc; k++) {                                                       \
      for (size_t i = 0; i < MR; i++) {                                                     \
        const float ai = rows[i][k];                                                        \
        for (size_t j = 0; j < NR; j++) acc[i][j] += ai * w[j];                             \
      }                                                                                     \
      w += NR;                                                                              \
    }                                                                                       \
    for (size_t i = 0; i < mr; i++) {                                                       \
      float* ci = (float*)((char*)c + i * c_stride);                                        \
      for (size_t j = 0; j < nc; j++) {                                                     \
        float v = acc[i][j];                                                                \
        v = v < params->min ? params->min : v;                                              \
        ci[j] = v > params->max ? params->max : v;                                          \
      }                                                                                     \
    }                                                                                       \
  }

#endif  /* TETHER_F32_GEMM_SCALAR_TEMPLATE_H_ */
