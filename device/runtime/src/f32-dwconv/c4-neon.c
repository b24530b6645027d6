/*
 * c4-neon.c — depthwise convolution (depth multiplier 1), 4 channels per vector, NEON with
 * FMA (aarch64; armv7 with -mfpu=neon-vfpv4). Tails of fewer than 4 channels go through a
 * zero-padded copy, so nothing is read or written past the channel row.
 * Twin: tether_f32_dwconv2d_minmax_ukernel_c1__scalar.
 */
#include <arm_neon.h>
#include <stddef.h>
#include <string.h>

#include "../ukernels.h"

static inline float32x4_t load_tail(const float* p, size_t n) {
  float tmp[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  memcpy(tmp, p, n * sizeof(float));
  return vld1q_f32(tmp);
}

void tether_f32_dwconv2d_minmax_ukernel_c4__neon(const tether_conv_geometry* g,
                                                 size_t oh_begin, size_t oh_end,
                                                 const float* x, const float* w,
                                                 const float* bias, float* y,
                                                 const tether_f32_minmax* params) {
  const size_t channels = g->in_c;
  const ptrdiff_t in_h = (ptrdiff_t)g->in_h, in_w = (ptrdiff_t)g->in_w;
  const size_t kh_n = g->kernel_h, kw_n = g->kernel_w;
  const float32x4_t vmin = vdupq_n_f32(params->min), vmax = vdupq_n_f32(params->max);
  const size_t full = channels / 4 * 4;
  for (size_t n = 0; n < g->batch; n++) {
    const float* x_n = x + n * g->in_h * g->in_w * channels;
    for (size_t oh = oh_begin; oh < oh_end; oh++) {
      const ptrdiff_t ih0 = (ptrdiff_t)oh * g->stride_h - g->pad_top;
      for (size_t ow = 0; ow < g->out_w; ow++) {
        const ptrdiff_t iw0 = (ptrdiff_t)ow * g->stride_w - g->pad_left;
        float* yp = y + ((n * g->out_h + oh) * g->out_w + ow) * channels;
        for (size_t c = 0; c < channels; c += 4) {
          const size_t left = channels - c < 4 ? channels - c : 4;
          float32x4_t acc = bias == NULL ? vdupq_n_f32(0.0f)
                            : c < full   ? vld1q_f32(bias + c)
                                         : load_tail(bias + c, left);
          for (size_t kh = 0; kh < kh_n; kh++) {
            const ptrdiff_t ih = ih0 + (ptrdiff_t)kh * g->dilation_h;
            if (ih < 0 || ih >= in_h) continue;
            for (size_t kw = 0; kw < kw_n; kw++) {
              const ptrdiff_t iw = iw0 + (ptrdiff_t)kw * g->dilation_w;
              if (iw < 0 || iw >= in_w) continue;
              const float* xp = x_n + ((size_t)ih * g->in_w + (size_t)iw) * channels + c;
              const float* wp = w + (kh * kw_n + kw) * channels + c;
              if (c < full) {
                acc = vfmaq_f32(acc, vld1q_f32(xp), vld1q_f32(wp));
              } else {
                acc = vfmaq_f32(acc, load_tail(xp, left), load_tail(wp, left));
              }
            }
          }
          acc = vminq_f32(vmaxq_f32(acc, vmin), vmax);
          if (c < full) {
            vst1q_f32(yp + c, acc);
          } else {
            float tmp[4];
            vst1q_f32(tmp, acc);
            memcpy(yp + c, tmp, left * sizeof(float));
          }
        }
      }
    }
  }
}
