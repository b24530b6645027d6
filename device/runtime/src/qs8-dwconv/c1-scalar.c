/*
 * c1-scalar.c — int8 depthwise convolution (depth multiplier 1), one channel at a time: the
 * twin of every SIMD qs8 dwconv kernel and the fallback on any CPU (ukernels.h documents the
 * packed layout; compute/gemm.c packs it). Taps in the padding are skipped, as in TFLite.
 */
#include <stddef.h>
#include <stdint.h>

#include "../ukernels.h"

void tether_qs8_dwconv2d_minmax_ukernel_c1__scalar(const tether_conv_geometry* g,
                                                   size_t oh_begin, size_t oh_end,
                                                   const int8_t* x, const int32_t* w,
                                                   int8_t* y, const tether_qs8_params* p) {
  const size_t channels = g->in_c;
  const ptrdiff_t in_h = (ptrdiff_t)g->in_h, in_w = (ptrdiff_t)g->in_w;
  const int32_t* mult = w + channels;
  const int32_t* left = w + 2 * channels;
  const int32_t* right = w + 3 * channels;
  const int32_t* wt = w + 4 * channels;
  for (size_t n = 0; n < g->batch; n++) {
    const int8_t* x_n = x + n * g->in_h * g->in_w * channels;
    for (size_t oh = oh_begin; oh < oh_end; oh++) {
      for (size_t ow = 0; ow < g->out_w; ow++) {
        int8_t* yp = y + ((n * g->out_h + oh) * g->out_w + ow) * channels;
        for (size_t c = 0; c < channels; c++) {
          uint32_t acc = (uint32_t)w[c];
          for (size_t kh = 0; kh < g->kernel_h; kh++) {
            const ptrdiff_t ih = (ptrdiff_t)oh * g->stride_h + (ptrdiff_t)kh * g->dilation_h -
                                 g->pad_top;
            if (ih < 0 || ih >= in_h) continue;
            for (size_t kw = 0; kw < g->kernel_w; kw++) {
              const ptrdiff_t iw = (ptrdiff_t)ow * g->stride_w +
                                   (ptrdiff_t)kw * g->dilation_w - g->pad_left;
              if (iw < 0 || iw >= in_w) continue;
              const int32_t xv =
                  (int32_t)x_n[((size_t)ih * g->in_w + (size_t)iw) * channels + c] - p->x_zero;
              const int32_t wv = (int16_t)(uint16_t)wt[(kh * g->kernel_w + kw) * channels + c];
              acc += (uint32_t)(xv * wv);
            }
          }
          const int32_t shifted = (int32_t)((uint32_t)acc << left[c]);
          int32_t v = tether_rounding_divide_by_pot(
                          tether_saturating_rounding_doubling_high_mul(shifted, mult[c]),
                          right[c]) +
                      p->y_zero;
          v = v < p->lo ? p->lo : v;
          yp[c] = (int8_t)(v > p->hi ? p->hi : v);
        }
      }
    }
  }
}
