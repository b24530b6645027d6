/*
 * c1-scalar.c — depthwise convolution (depth multiplier 1) over a range of output rows, one
 * channel at a time with a fused clamp: the twin of the c4/c8/c16 SIMD kernels.
 */
#include <stddef.h>

#include "../ukernels.h"

void tether_f32_dwconv2d_minmax_ukernel_c1__scalar(const tether_conv_geometry* g,
                                                   size_t oh_begin, size_t oh_end,
                                                   const float* x, const float* w,
                                                   const float* bias, float* y,
                                                   const tether_f32_minmax* params) {
  const size_t channels = g->in_c;
  const ptrdiff_t in_h = (ptrdiff_t)g->in_h, in_w = (ptrdiff_t)g->in_w;
  for (size_t n = 0; n < g->batch; n++) {
    const float* x_n = x + n * g->in_h * g->in_w * channels;
    for (size_t oh = oh_begin; oh < oh_end; oh++) {
      for (size_t ow = 0; ow < g->out_w; ow++) {
        float* y_pixel = y + ((n * g->out_h + oh) * g->out_w + ow) * channels;
        for (size_t c = 0; c < channels; c++) {
          float acc = bias != NULL ? bias[c] : 0.0f;
          for (size_t kh = 0; kh < g->kernel_h; kh++) {
            const ptrdiff_t ih = (ptrdiff_t)oh * g->stride_h + (ptrdiff_t)kh * g->dilation_h -
                                 g->pad_top;
            if (ih < 0 || ih >= in_h) continue;
            for (size_t kw = 0; kw < g->kernel_w; kw++) {
              const ptrdiff_t iw = (ptrdiff_t)ow * g->stride_w +
                                   (ptrdiff_t)kw * g->dilation_w - g->pad_left;
              if (iw < 0 || iw >= in_w) continue;
              acc += x_n[((size_t)ih * g->in_w + (size_t)iw) * channels + c] *
                     w[(kh * g->kernel_w + kw) * channels + c];
            }
          }
          acc = acc < params->min ? params->min : acc;
          y_pixel[c] = acc > params->max ? params->max : acc;
        }
      }
    }
  }
}
