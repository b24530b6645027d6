/*
 * pool.c — whole-op scalar max and average pooling, float32 and int8 (TFLite's reference
 * arithmetic for int8: max of the cells; (sum ± count/2) / count, clamped).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "reference/reference.h"


void tether_ref_f32_maxpool(const tether_conv_geometry* g, const float* x, float* y) {
  const size_t c_count = g->in_c;
  for (size_t n = 0; n < g->batch; n++) {
    for (size_t oh = 0; oh < g->out_h; oh++) {
      size_t h0, h1;
      tether_clamp_window((ptrdiff_t)oh * g->stride_h - g->pad_top, g->kernel_h,
                          g->in_h, &h0, &h1);
      for (size_t ow = 0; ow < g->out_w; ow++) {
        size_t w0, w1;
        tether_clamp_window((ptrdiff_t)ow * g->stride_w - g->pad_left, g->kernel_w,
                            g->in_w, &w0, &w1);
        float* yp = y + ((n * g->out_h + oh) * g->out_w + ow) * c_count;
        for (size_t c = 0; c < c_count; c++) {
          float best = x[((n * g->in_h + h0) * g->in_w + w0) * c_count + c];
          for (size_t ih = h0; ih < h1; ih++) {
            for (size_t iw = w0; iw < w1; iw++) {
              const float v = x[((n * g->in_h + ih) * g->in_w + iw) * c_count + c];
              if (v > best || v != v) best = v;  /* NaN wins, as in the peers */
            }
          }
          yp[c] = best;
        }
      }
    }
  }
}

void tether_ref_f32_avgpool(const tether_conv_geometry* g, int count_include_pad, const float* x,
                            float* y) {
  const size_t c_count = g->in_c;
  for (size_t n = 0; n < g->batch; n++) {
    for (size_t oh = 0; oh < g->out_h; oh++) {
      size_t h0, h1;
      tether_clamp_window((ptrdiff_t)oh * g->stride_h - g->pad_top, g->kernel_h,
                          g->in_h, &h0, &h1);
      for (size_t ow = 0; ow < g->out_w; ow++) {
        size_t w0, w1;
        tether_clamp_window((ptrdiff_t)ow * g->stride_w - g->pad_left, g->kernel_w,
                            g->in_w, &w0, &w1);
        const size_t count = count_include_pad ? g->kernel_h * g->kernel_w
                                               : (h1 - h0) * (w1 - w0);
        float* yp = y + ((n * g->out_h + oh) * g->out_w + ow) * c_count;
        for (size_t c = 0; c < c_count; c++) {
          float sum = 0.0f;
          for (size_t ih = h0; ih < h1; ih++) {
            for (size_t iw = w0; iw < w1; iw++) {
              sum += x[((n * g->in_h + ih) * g->in_w + iw) * c_count + c];
            }
          }
          yp[c] = sum / (float)count;
        }
      }
    }
  }
}

/* Max (avg == 0) or average pooling over NHWC int8, output clamped to [lo, hi]. */
void tether_ref_qs8_pool(const tether_conv_geometry* g, int avg, int count_include_pad,
                         int32_t x_zero, int32_t lo, int32_t hi, const int8_t* x, int8_t* y) {
  const size_t c_count = g->in_c;
  for (size_t n = 0; n < g->batch; n++) {
    for (size_t oh = 0; oh < g->out_h; oh++) {
      size_t h0, h1;
      tether_clamp_window((ptrdiff_t)oh * g->stride_h - g->pad_top, g->kernel_h,
                          g->in_h, &h0, &h1);
      for (size_t ow = 0; ow < g->out_w; ow++) {
        size_t w0, w1;
        tether_clamp_window((ptrdiff_t)ow * g->stride_w - g->pad_left, g->kernel_w,
                            g->in_w, &w0, &w1);
        const int32_t cells = (int32_t)((h1 - h0) * (w1 - w0));
        const int32_t count = count_include_pad ? (int32_t)(g->kernel_h * g->kernel_w) : cells;
        int8_t* yp = y + ((n * g->out_h + oh) * g->out_w + ow) * c_count;
        for (size_t c = 0; c < c_count; c++) {
          int32_t v;
          if (avg) {
            /* Padding cells counted in the divisor hold the real value 0, i.e. q = z_x. */
            int32_t sum = (count - cells) * x_zero;
            for (size_t ih = h0; ih < h1; ih++) {
              for (size_t iw = w0; iw < w1; iw++) sum += x[((n * g->in_h + ih) * g->in_w + iw) * c_count + c];
            }
            v = sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
          } else {
            v = -128;
            for (size_t ih = h0; ih < h1; ih++) {
              for (size_t iw = w0; iw < w1; iw++) {
                const int32_t q = x[((n * g->in_h + ih) * g->in_w + iw) * c_count + c];
                v = q > v ? q : v;
              }
            }
          }
          yp[c] = (int8_t)tether_clamp_i32(v, lo, hi);
        }
      }
    }
  }
}
