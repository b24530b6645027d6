/*
 * scalar-template.h — the portable int8 GEMM micro-kernel for one MR x NR tile with K-step KR:
 * the twin of each optimized tile (same tile, K-step, packed layout and A encoding), the test
 * oracle for the SIMD kernels and the fallback on any CPU. Each <MR>x<NR>c<KR>-scalar*.c
 * instantiates it once; edit it here only.
 */
#ifndef TETHER_QS8_GEMM_SCALAR_TEMPLATE_H_
#define TETHER_QS8_GEMM_SCALAR_TEMPLATE_H_

#include <stddef.h>
#include <stdint.h>

#include "../ukernels.h"

/* y = clamp(y_zero + MultiplyByQuantizedMultiplier(acc, M, shift), lo, hi) with the packed
 * left / right shifts (TFLite's arithmetic, ukernels.h). */
static inline int8_t qs8_requantize(int32_t acc, int32_t mult, int32_t left, int32_t right,
                                    const tether_qs8_params* p) {
  int32_t v;
  if (p->single_rounding) {
    v = tether_multiply_by_quantized_multiplier_single(acc, mult, left - right) + p->y_zero;
  } else {
    const int32_t shifted = (int32_t)((uint32_t)acc << left);
    v = tether_rounding_divide_by_pot(tether_saturating_rounding_doubling_high_mul(shifted, mult),
                                      right) +
        p->y_zero;
  }
  v = v < p->lo ? p->lo : v;
  return (int8_t)(v > p->hi ? p->hi : v);
}

/* U8 = 1: A holds unsigned bytes x ^ 0x80 (the input of u8 x s8 dot kernels). */
#define TETHER_QS8_GEMM_SCALAR(MR, NR, KR, U8, SUFFIX)                                     \
  void tether_qs8_gemm_minmax_ukernel_##MR##x##NR##c##KR##__##SUFFIX(                       \
      size_t mr, size_t nc, size_t kc, const int8_t* a, size_t a_stride, const void* w,     \
      int8_t* c, size_t c_stride, const tether_qs8_params* params) {                        \
    const int32_t* head = (const int32_t*)w;                                                \
    const int8_t* wk = (const int8_t*)(head + 4 * NR);                                      \
    uint32_t acc[MR][NR];                                                                   \
    const int8_t* rows[MR];                                                                 \
    for (size_t i = 0; i < MR; i++) {                                                       \
      rows[i] = (const int8_t*)((const char*)a + (i < mr ? i : mr - 1) * a_stride);         \
      for (size_t j = 0; j < NR; j++) acc[i][j] = (uint32_t)head[j];                        \
    }                                                                                       \
    for (size_t k0 = 0; k0 < kc; k0 += KR) {                                                \
      for (size_t i = 0; i < MR; i++) {                                                     \
        for (size_t j = 0; j < NR; j++) {                                                   \
          for (size_t kk = 0; kk < KR && k0 + kk < kc; kk++) {                              \
            const int32_t av = U8 ? (int32_t)(uint8_t)rows[i][k0 + kk]                      \
                                  : (int32_t)rows[i][k0 + kk];                              \
            acc[i][j] += (uint32_t)(av * (int32_t)wk[j * KR + kk]);                         \
          }                                                                                 \
        }                                                                                   \
      }                                                                                     \
      wk += NR * KR;                                                                        \
    }                                                                                       \
    for (size_t i = 0; i < mr; i++) {                                                       \
      int8_t* ci = (int8_t*)((char*)c + i * c_stride);                                      \
      for (size_t j = 0; j < nc; j++) {                                                     \
        ci[j] = qs8_requantize((int32_t)acc[i][j], head[NR + j], head[2 * NR + j],          \
                               head[3 * NR + j], params);                                   \
      }                                                                                     \
    }                                                                                       \
  }

#endif  /* TETHER_QS8_GEMM_SCALAR_TEMPLATE_H_ */
