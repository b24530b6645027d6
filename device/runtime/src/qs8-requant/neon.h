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
/* One rounding (params->single_rounding): acc * M in 64 bits, then a rounding shift right
 * by 31 + right - left (vrshl adds 2^(t - 1) before shifting: round half up). */
static inline int32x4_t tether_qs8_requant_single_neon(int32x4_t acc, int32x4_t mult,
                                                       int32x4_t left, int32x4_t right) {
  const int32x4_t neg_total = vsubq_s32(vsubq_s32(left, right), vdupq_n_s32(31));
  const int64x2_t lo = vrshlq_s64(vmull_s32(vget_low_s32(acc), vget_low_s32(mult)),
                                  vmovl_s32(vget_low_s32(neg_total)));
  const int64x2_t hi = vrshlq_s64(vmull_s32(vget_high_s32(acc), vget_high_s32(mult)),
                                  vmovl_s32(vget_high_s32(neg_total)));
  return vcombine_s32(vmovn_s64(lo), vmovn_s64(hi));
}

static inline int32x4_t tether_qs8_requant_mode_neon(int32x4_t acc, const int32_t* head,
                                                     size_t nr, size_t j, int single) {
  const int32x4_t mult = vld1q_s32(head + nr + j), left = vld1q_s32(head + 2 * nr + j);
  const int32x4_t right = vld1q_s32(head + 3 * nr + j);
  return single ? tether_qs8_requant_single_neon(acc, mult, left, right)
                : tether_qs8_requant_neon(acc, mult, left, vnegq_s32(right));
}

static inline int8x8_t tether_qs8_output8_neon(int32x4_t a, int32x4_t b, const int32_t* head,
                                               size_t nr, size_t j, int32x4_t yz, int32x4_t lo,
                                               int32x4_t hi, int single) {
  const int32x4_t ra = tether_qs8_requant_mode_neon(a, head, nr, j, single);
  const int32x4_t rb = tether_qs8_requant_mode_neon(b, head, nr, j + 4, single);
  const int32x4_t va = vminq_s32(vmaxq_s32(vaddq_s32(ra, yz), lo), hi);
  const int32x4_t vb = vminq_s32(vmaxq_s32(vaddq_s32(rb, yz), lo), hi);
  return vqmovn_s16(vcombine_s16(vqmovn_s32(va), vqmovn_s32(vb)));
}

#endif  /* TETHER_QS8_REQUANT_NEON_H_ */
