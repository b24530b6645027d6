/*
 * 4x8c1-neon.c — int8 GEMM micro-kernel, 4 rows x 8 channels, NEON (armv7 and aarch64):
 * weights and A widened to int16 and accumulated with SMLAL by lane (vmlal_lane_s16), 8 k
 * of each row at a time. TFLite requantization per channel (vqrdmulh + rounding shift).
 * Twin: tether_qs8_gemm_minmax_ukernel_4x8c1__scalar.
 */
#include <arm_neon.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../ukernels.h"
#include "../qs8-requant/neon.h"

#define QS8_MLAL(ROW, HALF, LANE)                                                           \
  do {                                                                                      \
    acc##ROW##l = vmlal_lane_s16(acc##ROW##l, vget_low_s16(wv), HALF(x##ROW), LANE);        \
    acc##ROW##h = vmlal_lane_s16(acc##ROW##h, vget_high_s16(wv), HALF(x##ROW), LANE);       \
  } while (0)

#define QS8_K(KK, HALF, LANE)                                                               \
  do {                                                                                      \
    const int16x8_t wv = vmovl_s8(vld1_s8(wk + 8 * (KK)));                                  \
    QS8_MLAL(0, HALF, LANE);                                                                \
    QS8_MLAL(1, HALF, LANE);                                                                \
    QS8_MLAL(2, HALF, LANE);                                                                \
    QS8_MLAL(3, HALF, LANE);                                                                \
  } while (0)

void tether_qs8_gemm_minmax_ukernel_4x8c1__neon(size_t mr, size_t nc, size_t kc,
                                                const int8_t* a, size_t a_stride,
                                                const void* w, int8_t* c, size_t c_stride,
                                                const tether_qs8_params* params) {
  const int8_t* a0 = a;
  const int8_t* a1 = mr > 1 ? a0 + a_stride : a0;
  const int8_t* a2 = mr > 2 ? a1 + a_stride : a1;
  const int8_t* a3 = mr > 3 ? a2 + a_stride : a2;
  const int32_t* head = (const int32_t*)w;
  int32x4_t acc0l = vld1q_s32(head), acc0h = vld1q_s32(head + 4);
  int32x4_t acc1l = acc0l, acc1h = acc0h, acc2l = acc0l, acc2h = acc0h, acc3l = acc0l,
            acc3h = acc0h;
  const int8_t* wk = (const int8_t*)(head + 32);
  size_t k = 0;
  for (; k + 8 <= kc; k += 8) {
    const int16x8_t x0 = vmovl_s8(vld1_s8(a0 + k)), x1 = vmovl_s8(vld1_s8(a1 + k));
    const int16x8_t x2 = vmovl_s8(vld1_s8(a2 + k)), x3 = vmovl_s8(vld1_s8(a3 + k));
    QS8_K(0, vget_low_s16, 0);
    QS8_K(1, vget_low_s16, 1);
    QS8_K(2, vget_low_s16, 2);
    QS8_K(3, vget_low_s16, 3);
    QS8_K(4, vget_high_s16, 0);
    QS8_K(5, vget_high_s16, 1);
    QS8_K(6, vget_high_s16, 2);
    QS8_K(7, vget_high_s16, 3);
    wk += 64;
  }
  for (; k < kc; k++) {
    const int16x8_t wv = vmovl_s8(vld1_s8(wk));
    wk += 8;
    const int16x4_t wl = vget_low_s16(wv), wh = vget_high_s16(wv);
    acc0l = vmlal_n_s16(acc0l, wl, a0[k]);
    acc0h = vmlal_n_s16(acc0h, wh, a0[k]);
    acc1l = vmlal_n_s16(acc1l, wl, a1[k]);
    acc1h = vmlal_n_s16(acc1h, wh, a1[k]);
    acc2l = vmlal_n_s16(acc2l, wl, a2[k]);
    acc2h = vmlal_n_s16(acc2h, wh, a2[k]);
    acc3l = vmlal_n_s16(acc3l, wl, a3[k]);
    acc3h = vmlal_n_s16(acc3h, wh, a3[k]);
  }
  const int32x4_t yz = vdupq_n_s32(params->y_zero);
  const int32x4_t lo = vdupq_n_s32(params->lo), hi = vdupq_n_s32(params->hi);
  const int32x4_t accs[8] = {acc0l, acc0h, acc1l, acc1h, acc2l, acc2h, acc3l, acc3h};
  for (size_t i = 0; i < mr; i++) {
    const int8x8_t out = tether_qs8_output8_neon(accs[2 * i], accs[2 * i + 1], head, 8, 0, yz,
                                                 lo, hi, params->single_rounding);
    int8_t* ci = (int8_t*)c + i * c_stride;
    if (nc >= 8) {
      vst1_s8(ci, out);
    } else {
      int8_t t[8];
      vst1_s8(t, out);
      memcpy(ci, t, nc);
    }
  }
}
