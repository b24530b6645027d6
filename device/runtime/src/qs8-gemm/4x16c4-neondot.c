/*
 * 4x16c4-neondot.c — int8 GEMM micro-kernel, 4 rows x 16 channels, K in steps of 4 with the
 * ARMv8.2 dot product (SDOT, vdotq_laneq_s32: 4 int8 products summed into each int32 lane).
 * Built with -march=armv8.2-a+dotprod; selected only when HWCAP says asimddp.
 * Twin: tether_qs8_gemm_minmax_ukernel_4x16c4__scalar.
 */
#include <arm_neon.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../ukernels.h"
#include "../qs8-requant/neon.h"

/* One group of 4 k (lane L of the rows' 16-byte loads) for the 16 channels. */
#define QS8_DOT(L)                                                                          \
  do {                                                                                      \
    const int8x16_t w0 = vld1q_s8(wk), w1 = vld1q_s8(wk + 16), w2 = vld1q_s8(wk + 32),      \
                    w3 = vld1q_s8(wk + 48);                                                 \
    wk += 64;                                                                               \
    c00 = vdotq_laneq_s32(c00, w0, x0, L); c01 = vdotq_laneq_s32(c01, w1, x0, L);           \
    c02 = vdotq_laneq_s32(c02, w2, x0, L); c03 = vdotq_laneq_s32(c03, w3, x0, L);           \
    c10 = vdotq_laneq_s32(c10, w0, x1, L); c11 = vdotq_laneq_s32(c11, w1, x1, L);           \
    c12 = vdotq_laneq_s32(c12, w2, x1, L); c13 = vdotq_laneq_s32(c13, w3, x1, L);           \
    c20 = vdotq_laneq_s32(c20, w0, x2, L); c21 = vdotq_laneq_s32(c21, w1, x2, L);           \
    c22 = vdotq_laneq_s32(c22, w2, x2, L); c23 = vdotq_laneq_s32(c23, w3, x2, L);           \
    c30 = vdotq_laneq_s32(c30, w0, x3, L); c31 = vdotq_laneq_s32(c31, w1, x3, L);           \
    c32 = vdotq_laneq_s32(c32, w2, x3, L); c33 = vdotq_laneq_s32(c33, w3, x3, L);           \
  } while (0)

static inline int8x16_t tail16(const int8_t* p, size_t n) {
  int8_t t[16] = {0};
  memcpy(t, p, n);
  return vld1q_s8(t);
}

void tether_qs8_gemm_minmax_ukernel_4x16c4__neondot(size_t mr, size_t nc, size_t kc,
                                                    const int8_t* a, size_t a_stride,
                                                    const void* w, int8_t* c, size_t c_stride,
                                                    const tether_qs8_params* params) {
  const int8_t* a0 = a;
  const int8_t* a1 = mr > 1 ? a0 + a_stride : a0;
  const int8_t* a2 = mr > 2 ? a1 + a_stride : a1;
  const int8_t* a3 = mr > 3 ? a2 + a_stride : a2;
  const int32_t* head = (const int32_t*)w;
  int32x4_t c00 = vld1q_s32(head), c01 = vld1q_s32(head + 4), c02 = vld1q_s32(head + 8),
            c03 = vld1q_s32(head + 12);
  int32x4_t c10 = c00, c11 = c01, c12 = c02, c13 = c03, c20 = c00, c21 = c01, c22 = c02,
            c23 = c03, c30 = c00, c31 = c01, c32 = c02, c33 = c03;
  const int8_t* wk = (const int8_t*)(head + 64);
  size_t k = 0;
  for (; k + 16 <= kc; k += 16) {
    const int8x16_t x0 = vld1q_s8(a0 + k), x1 = vld1q_s8(a1 + k), x2 = vld1q_s8(a2 + k),
                    x3 = vld1q_s8(a3 + k);
    QS8_DOT(0);
    QS8_DOT(1);
    QS8_DOT(2);
    QS8_DOT(3);
  }
  if (k < kc) {
    const size_t t = kc - k;
    const int8x16_t x0 = tail16(a0 + k, t), x1 = tail16(a1 + k, t), x2 = tail16(a2 + k, t),
                    x3 = tail16(a3 + k, t);
    QS8_DOT(0);
    if (t > 4) QS8_DOT(1);
    if (t > 8) QS8_DOT(2);
    if (t > 12) QS8_DOT(3);
  }
  const int32x4_t yz = vdupq_n_s32(params->y_zero);
  const int32x4_t lo = vdupq_n_s32(params->lo), hi = vdupq_n_s32(params->hi);
  const int32x4_t accs[16] = {c00, c01, c02, c03, c10, c11, c12, c13,
                              c20, c21, c22, c23, c30, c31, c32, c33};
  for (size_t i = 0; i < mr; i++) {
    const int8x16_t out = vcombine_s8(
        tether_qs8_output8_neon(accs[4 * i], accs[4 * i + 1], head, 16, 0, yz, lo, hi,
                                params->single_rounding),
        tether_qs8_output8_neon(accs[4 * i + 2], accs[4 * i + 3], head, 16, 8, yz, lo, hi,
                                params->single_rounding));
    int8_t* ci = (int8_t*)c + i * c_stride;
    if (nc >= 16) {
      vst1q_s8(ci, out);
    } else {
      int8_t t[16];
      vst1q_s8(t, out);
      memcpy(ci, t, nc);
    }
  }
}
