/*
 * c8-neon.c — int8 depthwise convolution (depth multiplier 1), 8 channels per step, NEON
 * (armv7 and aarch64): x widened to int16 minus the zero point, times the weight (the low
 * 16 bits of the packed word) with SMLAL into int32. Taps in the padding are skipped; a
 * channel tail (< 8) goes through small stack copies.
 * Twin: tether_qs8_dwconv2d_minmax_ukernel_c1__scalar.
 */
#include <arm_neon.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../ukernels.h"
#include "../qs8-requant/neon.h"

static inline int16x8_t load_x(const int8_t* p, size_t n, int16x8_t xz) {
  int8x8_t v;
  if (n >= 8) {
    v = vld1_s8(p);
  } else {
    int8_t t[8] = {0};
    memcpy(t, p, n);
    v = vld1_s8(t);
  }
  return vsubq_s16(vmovl_s8(v), xz);
}

/* 8 packed words as int16 (their low halves). */
static inline int16x8_t load_w(const int32_t* p, size_t n) {
  if (n >= 8) return vcombine_s16(vmovn_s32(vld1q_s32(p)), vmovn_s32(vld1q_s32(p + 4)));
  int32_t t[8] = {0};
  memcpy(t, p, n * sizeof(int32_t));
  return vcombine_s16(vmovn_s32(vld1q_s32(t)), vmovn_s32(vld1q_s32(t + 4)));
}

void tether_qs8_dwconv2d_minmax_ukernel_c8__neon(const tether_conv_geometry* g,
                                                 size_t oh_begin, size_t oh_end,
                                                 const int8_t* x, const int32_t* w, int8_t* y,
                                                 const tether_qs8_params* p) {
  const size_t channels = g->in_c;
  const ptrdiff_t in_h = (ptrdiff_t)g->in_h, in_w = (ptrdiff_t)g->in_w;
  const size_t kh_n = g->kernel_h, kw_n = g->kernel_w;
  const int32_t* wt = w + 4 * channels;
  const int16x8_t xz = vdupq_n_s16((int16_t)p->x_zero);
  const int32x4_t yz = vdupq_n_s32(p->y_zero);
  const int32x4_t lo = vdupq_n_s32(p->lo), hi = vdupq_n_s32(p->hi);
  for (size_t n = 0; n < g->batch; n++) {
    const int8_t* x_n = x + n * g->in_h * g->in_w * channels;
    for (size_t oh = oh_begin; oh < oh_end; oh++) {
      const ptrdiff_t ih0 = (ptrdiff_t)oh * g->stride_h - g->pad_top;
      size_t kh_begin, kh_end;
      tether_window_taps(ih0, kh_n, g->dilation_h, in_h, &kh_begin, &kh_end);
      for (size_t ow = 0; ow < g->out_w; ow++) {
        const ptrdiff_t iw0 = (ptrdiff_t)ow * g->stride_w - g->pad_left;
        int8_t* yp = y + ((n * g->out_h + oh) * g->out_w + ow) * channels;
        size_t kw_begin, kw_end;
        tether_window_taps(iw0, kw_n, g->dilation_w, in_w, &kw_begin, &kw_end);
        for (size_t c = 0; c < channels; c += 8) {
          const size_t nc = channels - c < 8 ? channels - c : 8;
          int32_t b[8] = {0};
          memcpy(b, w + c, nc * sizeof(int32_t));
          int32x4_t accl = vld1q_s32(b), acch = vld1q_s32(b + 4);
          for (size_t kh = kh_begin; kh < kh_end; kh++) {
            const size_t ih = (size_t)(ih0 + (ptrdiff_t)kh * g->dilation_h);
            for (size_t kw = kw_begin; kw < kw_end; kw++) {
              const size_t iw = (size_t)(iw0 + (ptrdiff_t)kw * g->dilation_w);
              const int16x8_t xv = load_x(x_n + (ih * g->in_w + iw) * channels + c, nc, xz);
              const int16x8_t wv = load_w(wt + (kh * kw_n + kw) * channels + c, nc);
              accl = vmlal_s16(accl, vget_low_s16(xv), vget_low_s16(wv));
              acch = vmlal_s16(acch, vget_high_s16(xv), vget_high_s16(wv));
            }
          }
          int8x8_t out;
          if (nc == 8) {  /* the words of channels c.. sit `channels` apart */
            out = tether_qs8_output8_neon(accl, acch, w + c, channels, 0, yz, lo, hi, 0);
          } else {
            int32_t head[32] = {0};
            memcpy(head + 8, w + channels + c, nc * sizeof(int32_t));
            memcpy(head + 16, w + 2 * channels + c, nc * sizeof(int32_t));
            memcpy(head + 24, w + 3 * channels + c, nc * sizeof(int32_t));
            out = tether_qs8_output8_neon(accl, acch, head, 8, 0, yz, lo, hi, 0);
          }
          if (nc == 8) {
            vst1_s8(yp + c, out);
          } else {
            int8_t t[8];
            vst1_s8(t, out);
            memcpy(yp + c, t, nc);
          }
        }
      }
    }
  }
}
