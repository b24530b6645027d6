/*
 * neon.h — TFLite's MultiplyByQuantizedMultiplier on 4 int32 lanes, bit for bit
 * (ukernels.h is the scalar statement; the same steps as TFLite's own NEON path):
 * vqrdmulh is SaturatingRoundingDoublingHighMul, and RoundingDivideByPOT is a rounding
 * shift (vrshl by -right) of q - 1 for negative q (the "fixup"). right_neg = -right.
 */
#ifndef TETHER_QS8_REQUANT_NEON_H_
#define TETHER_QS8_REQUANT_NEON_H_

#include <arm_neon.h>

static inline int32x4_t tether_qs8_requant_neon(int32x4_t acc, int32x4_t mult, int32x4_t left,
                                                int32x4_t right_neg) {
  const int32x4_t q = vqrdmulhq_s32(vshlq_s32(acc, left), mult);
  const int32x4_t fixup = vshrq_n_s32(vandq_s32(q, right_neg), 31);
  return vrshlq_s32(vqaddq_s32(q, fixup), right_neg);
}

/* clamp(y_zero + requantized, lo, hi) of 8 channels as int8. */
static inline int8x8_t tether_qs8_output8_neon(int32x4_t a, int32x4_t b, const int32_t* head,
                                               size_t nr, size_t j, int32x4_t yz, int32x4_t lo,
                                               int32x4_t hi) {
  const int32x4_t ra = tether_qs8_requant_neon(a, vld1q_s32(head + nr + j),
                                               vld1q_s32(head + 2 * nr + j),
                                               vnegq_s32(vld1q_s32(head + 3 * nr + j)));
  const int32x4_t rb = tether_qs8_requant_neon(b, vld1q_s32(head + nr + j + 4),
                                               vld1q_s32(head + 2 * nr + j + 4),
                                               vnegq_s32(vld1q_s32(head + 3 * nr + j + 4)));
  const int32x4_t va = vminq_s32(vmaxq_s32(vaddq_s32(ra, yz), lo), hi);
  const int32x4_t vb = vminq_s32(vmaxq_s32(vaddq_s32(rb, yz), lo), hi);
  return vqmovn_s16(vcombine_s16(vqmovn_s32(va), vqmovn_s32(vb)));
}

#endif  /* TETHER_QS8_REQUANT_NEON_H_ */
