/*
 * neon-template.h — the body of the f32 GEMM micro-kernels MRx8 for NEON with FMA.
 * 4x8-neon.c (armv7, 16 quad registers) and 6x8-neon.c (aarch64, 32) each define
 * TETHER_NEON_MR and TETHER_NEON_NAME, then include this file; edit the kernel here.
 */
#if !defined(TETHER_NEON_MR) || !defined(TETHER_NEON_NAME)
#error "define TETHER_NEON_MR and TETHER_NEON_NAME before including neon-template.h"
#endif
#include <arm_neon.h>
#include <stddef.h>
#include <string.h>

#include "../ukernels.h"

void TETHER_NEON_NAME(size_t mr, size_t nc, size_t kc, const float* a, size_t a_stride,
                      const float* w, float* c, size_t c_stride,
                      const tether_f32_minmax* params) {
  enum { MR = TETHER_NEON_MR };
  const float32x4_t vmin = vdupq_n_f32(params->min), vmax = vdupq_n_f32(params->max);
  if (mr == 1) {
    /* One row (a dense layer on one input): not MR copies of it. Each output keeps the
     * tile's single FMA chain along K, so its bits equal the tile's. */
    float32x4_t l = vld1q_f32(w), h = vld1q_f32(w + 4);
    w += 8;
    for (size_t k = 0; k < kc; k++, w += 8) {
      const float32x4_t v = vld1q_dup_f32(a + k);
      l = vfmaq_f32(l, v, vld1q_f32(w));
      h = vfmaq_f32(h, v, vld1q_f32(w + 4));
    }
    float tmp[8];
    vst1q_f32(tmp, vminq_f32(vmaxq_f32(l, vmin), vmax));
    vst1q_f32(tmp + 4, vminq_f32(vmaxq_f32(h, vmin), vmax));
    memcpy(c, tmp, nc * sizeof(float));
    return;
  }
  const float* rows[MR];
  float32x4_t lo[MR], hi[MR];
  const float32x4_t bias_lo = vld1q_f32(w), bias_hi = vld1q_f32(w + 4);
  for (size_t i = 0; i < MR; i++) {
    rows[i] = i == 0 ? a : i < mr ? (const float*)((const char*)rows[i - 1] + a_stride) : rows[i - 1];
    lo[i] = bias_lo;
    hi[i] = bias_hi;
  }
  w += 8;
  for (size_t k = 0; k < kc; k++) {
    const float32x4_t bl = vld1q_f32(w), bh = vld1q_f32(w + 4);
    w += 8;
    for (size_t i = 0; i < MR; i++) {
      const float32x4_t v = vld1q_dup_f32(rows[i] + k);
      lo[i] = vfmaq_f32(lo[i], v, bl);
      hi[i] = vfmaq_f32(hi[i], v, bh);
    }
  }
  for (size_t i = 0; i < mr; i++) {
    float* ci = (float*)((char*)c + i * c_stride);
    const float32x4_t l = vminq_f32(vmaxq_f32(lo[i], vmin), vmax);
    const float32x4_t h = vminq_f32(vmaxq_f32(hi[i], vmin), vmax);
    if (nc == 8) {
      vst1q_f32(ci, l);
      vst1q_f32(ci + 4, h);
    } else {
      float tmp[8];
      vst1q_f32(tmp, l);
      vst1q_f32(tmp + 4, h);
      memcpy(ci, tmp, nc * sizeof(float));
    }
  }
}
