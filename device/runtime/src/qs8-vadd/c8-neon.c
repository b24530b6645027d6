/*
 * c8-neon.c — int8 ADD / SUB of same-shape tensors, 8 elements per step (a tail through a
 * stack copy), NEON: TFLite's integer Add with the requantization of qs8-requant/neon.h.
 * Twin: tether_qs8_vadd_minmax_ukernel__scalar.
 */
#include <arm_neon.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../ukernels.h"
#include "../qs8-requant/neon.h"

void tether_qs8_vadd_minmax_ukernel__neon(size_t n, const int8_t* a, const int8_t* b,
                                          int8_t* y, const tether_qs8_add_params* p) {
  const int16x8_t za = vdupq_n_s16((int16_t)p->a_zero), zb = vdupq_n_s16((int16_t)p->b_zero);
  const int32x4_t am = vdupq_n_s32(p->a_mult), al = vdupq_n_s32(p->a_left),
                  ar = vdupq_n_s32(-p->a_right);
  const int32x4_t bm = vdupq_n_s32(p->b_mult), bl = vdupq_n_s32(p->b_left),
                  br = vdupq_n_s32(-p->b_right);
  const int32x4_t ym = vdupq_n_s32(p->y_mult), yl = vdupq_n_s32(p->y_left),
                  yr = vdupq_n_s32(-p->y_right);
  const int32x4_t yz = vdupq_n_s32(p->y_zero);
  const int32x4_t lo = vdupq_n_s32(p->lo), hi = vdupq_n_s32(p->hi);
  for (size_t i = 0; i < n; i += 8) {
    const size_t rest = n - i;
    int8x8_t a8, b8;
    if (rest >= 8) {
      a8 = vld1_s8(a + i);
      b8 = vld1_s8(b + i);
    } else {
      int8_t ta[8] = {0}, tb[8] = {0};
      memcpy(ta, a + i, rest);
      memcpy(tb, b + i, rest);
      a8 = vld1_s8(ta);
      b8 = vld1_s8(tb);
    }
    const int16x8_t da = vsubq_s16(vmovl_s8(a8), za), db = vsubq_s16(vmovl_s8(b8), zb);
    int32x4_t out[2];
    for (int h = 0; h < 2; h++) {
      const int32x4_t va = vshlq_n_s32(vmovl_s16(h ? vget_high_s16(da) : vget_low_s16(da)), 20);
      const int32x4_t vb = vshlq_n_s32(vmovl_s16(h ? vget_high_s16(db) : vget_low_s16(db)), 20);
      const int32x4_t sum = vaddq_s32(tether_qs8_requant_neon(va, am, al, ar),
                                      tether_qs8_requant_neon(vb, bm, bl, br));
      const int32x4_t v = vaddq_s32(tether_qs8_requant_neon(sum, ym, yl, yr), yz);
      out[h] = vminq_s32(vmaxq_s32(v, lo), hi);
    }
    const int8x8_t r = vqmovn_s16(vcombine_s16(vqmovn_s32(out[0]), vqmovn_s32(out[1])));
    if (rest >= 8) {
      vst1_s8(y + i, r);
    } else {
      int8_t t[8];
      vst1_s8(t, r);
      memcpy(y + i, t, rest);
    }
  }
}
