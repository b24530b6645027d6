/*
 * conv.c — whole-op scalar convolutions and dense layers, float32 and int8: the plain loops
 * the optimized paths are checked against (tests), and the paths the ops take where no
 * micro-kernel applies (grouped convolution, depth multiplier > 1, float GEMV).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "reference/reference.h"

static inline int8_t qs8_ref_output(int64_t acc64, const tether_qs8_ref_params* p, size_t c) {
  /* int32 two's-complement wrap of the sum (defined here; TFLite's int32 adds wrap the same
   * way in practice). Valid models never get near it. */
  const int32_t acc = (int32_t)(uint32_t)(uint64_t)acc64;
  int32_t v = (p->single_rounding
                   ? tether_multiply_by_quantized_multiplier_single(acc, p->multiplier[c],
                                                                    p->shift[c])
                   : tether_multiply_by_quantized_multiplier(acc, p->multiplier[c], p->shift[c])) +
              p->y_zero;
  v = v < p->lo ? p->lo : v;
  return (int8_t)(v > p->hi ? p->hi : v);
}

/*
 * y[n,oh,ow,o] = bias[o] + sum_{kh,kw,i} x[n, oh*s+kh*d-pt, ow*s+kw*d-pl, g*IC/G+i] * w[o,kh,kw,i]
 * with o in group g; taps that fall into the padding contribute nothing.
 */
void tether_ref_f32_conv2d(const tether_conv_geometry* g, const float* x, const float* w,
                           const float* bias, float* y) {
  TETHER_DCHECK(g->groups >= 1 && g->in_c % g->groups == 0 && g->out_c % g->groups == 0);
  const size_t group_in = g->in_c / g->groups;
  const size_t group_out = g->out_c / g->groups;
  const ptrdiff_t in_h = (ptrdiff_t)g->in_h, in_w = (ptrdiff_t)g->in_w;
  for (size_t n = 0; n < g->batch; n++) {
    const float* x_n = x + n * g->in_h * g->in_w * g->in_c;
    for (size_t oh = 0; oh < g->out_h; oh++) {
      for (size_t ow = 0; ow < g->out_w; ow++) {
        float* y_pixel = y + ((n * g->out_h + oh) * g->out_w + ow) * g->out_c;
        for (size_t o = 0; o < g->out_c; o++) {
          const size_t channel0 = (o / group_out) * group_in;
          float acc = 0.0f;
          for (size_t kh = 0; kh < g->kernel_h; kh++) {
            const ptrdiff_t ih = (ptrdiff_t)oh * g->stride_h + (ptrdiff_t)kh * g->dilation_h -
                                 g->pad_top;
            if (ih < 0 || ih >= in_h) continue;
            for (size_t kw = 0; kw < g->kernel_w; kw++) {
              const ptrdiff_t iw = (ptrdiff_t)ow * g->stride_w +
                                   (ptrdiff_t)kw * g->dilation_w - g->pad_left;
              if (iw < 0 || iw >= in_w) continue;
              const float* xp = x_n + ((size_t)ih * g->in_w + (size_t)iw) * g->in_c + channel0;
              const float* wp = w + ((o * g->kernel_h + kh) * g->kernel_w + kw) * group_in;
              for (size_t i = 0; i < group_in; i++) acc += xp[i] * wp[i];
            }
          }
          y_pixel[o] = bias != NULL ? acc + bias[o] : acc;
        }
      }
    }
  }
}

/* y[n,oh,ow,c*M+m] = bias[c*M+m] + sum_{kh,kw} x[n, oh*s+kh*d-pt, ow*s+kw*d-pl, c] * w[kh,kw,c*M+m] */
void tether_ref_f32_dwconv2d(const tether_conv_geometry* g, const float* x, const float* w,
                             const float* bias, float* y) {
  const size_t m_count = g->depth_multiplier;
  TETHER_DCHECK(g->out_c == g->in_c * m_count);
  const ptrdiff_t in_h = (ptrdiff_t)g->in_h, in_w = (ptrdiff_t)g->in_w;
  for (size_t n = 0; n < g->batch; n++) {
    const float* x_n = x + n * g->in_h * g->in_w * g->in_c;
    for (size_t oh = 0; oh < g->out_h; oh++) {
      for (size_t ow = 0; ow < g->out_w; ow++) {
        float* y_pixel = y + ((n * g->out_h + oh) * g->out_w + ow) * g->out_c;
        for (size_t o = 0; o < g->out_c; o++) {
          const size_t c = o / m_count;
          float acc = 0.0f;
          for (size_t kh = 0; kh < g->kernel_h; kh++) {
            const ptrdiff_t ih = (ptrdiff_t)oh * g->stride_h + (ptrdiff_t)kh * g->dilation_h -
                                 g->pad_top;
            if (ih < 0 || ih >= in_h) continue;
            for (size_t kw = 0; kw < g->kernel_w; kw++) {
              const ptrdiff_t iw = (ptrdiff_t)ow * g->stride_w +
                                   (ptrdiff_t)kw * g->dilation_w - g->pad_left;
              if (iw < 0 || iw >= in_w) continue;
              acc += x_n[((size_t)ih * g->in_w + (size_t)iw) * g->in_c + c] *
                     w[(kh * g->kernel_w + kw) * g->out_c + o];
            }
          }
          y_pixel[o] = bias != NULL ? acc + bias[o] : acc;
        }
      }
    }
  }
}

void tether_ref_f32_dense(size_t rows, size_t k, size_t outputs, const float* x, const float* w,
                          const float* bias, float* y) {
  for (size_t r = 0; r < rows; r++) {
    const float* x_row = x + r * k;
    for (size_t o = 0; o < outputs; o++) {
      const float* w_row = w + o * k;
      float acc = 0.0f;
      for (size_t i = 0; i < k; i++) acc += x_row[i] * w_row[i];
      y[r * outputs + o] = bias != NULL ? acc + bias[o] : acc;
    }
  }
}

/* Convolution, weights [OC, KH, KW, C/G]. */
void tether_ref_qs8_conv2d(const tether_conv_geometry* g, const int8_t* x, const int8_t* w,
                           const int32_t* bias, int8_t* y, const tether_qs8_ref_params* p) {
  const size_t group_in = g->in_c / g->groups, group_out = g->out_c / g->groups;
  for (size_t n = 0; n < g->batch; n++) {
    const int8_t* x_n = x + n * g->in_h * g->in_w * g->in_c;
    for (size_t oh = 0; oh < g->out_h; oh++) {
      for (size_t ow = 0; ow < g->out_w; ow++) {
        int8_t* yp = y + ((n * g->out_h + oh) * g->out_w + ow) * g->out_c;
        for (size_t o = 0; o < g->out_c; o++) {
          const size_t c0 = (o / group_out) * group_in;
          int64_t acc = 0;  /* wraps to int32 below, as TFLite's int32 sum does */
          for (size_t kh = 0; kh < g->kernel_h; kh++) {
            const ptrdiff_t ih = (ptrdiff_t)oh * g->stride_h + (ptrdiff_t)kh * g->dilation_h - g->pad_top;
            if (ih < 0 || ih >= (ptrdiff_t)g->in_h) continue;
            for (size_t kw = 0; kw < g->kernel_w; kw++) {
              const ptrdiff_t iw = (ptrdiff_t)ow * g->stride_w + (ptrdiff_t)kw * g->dilation_w - g->pad_left;
              if (iw < 0 || iw >= (ptrdiff_t)g->in_w) continue;
              const int8_t* xp = x_n + ((size_t)ih * g->in_w + (size_t)iw) * g->in_c + c0;
              const int8_t* wp = w + ((o * g->kernel_h + kh) * g->kernel_w + kw) * group_in;
              for (size_t i = 0; i < group_in; i++) acc += (int32_t)wp[i] * ((int32_t)xp[i] - p->x_zero);
            }
          }
          if (bias != NULL) acc += bias[o];
          yp[o] = qs8_ref_output(acc, p, o);
        }
      }
    }
  }
}

/* Depthwise convolution, weights [1, KH, KW, C*M]. */
void tether_ref_qs8_dwconv2d(const tether_conv_geometry* g, const int8_t* x, const int8_t* w,
                             const int32_t* bias, int8_t* y, const tether_qs8_ref_params* p) {
  const size_t m = g->depth_multiplier;
  for (size_t n = 0; n < g->batch; n++) {
    const int8_t* x_n = x + n * g->in_h * g->in_w * g->in_c;
    for (size_t oh = 0; oh < g->out_h; oh++) {
      for (size_t ow = 0; ow < g->out_w; ow++) {
        int8_t* yp = y + ((n * g->out_h + oh) * g->out_w + ow) * g->out_c;
        for (size_t o = 0; o < g->out_c; o++) {
          int64_t acc = 0;  /* wraps to int32 below, as TFLite's int32 sum does */
          for (size_t kh = 0; kh < g->kernel_h; kh++) {
            const ptrdiff_t ih = (ptrdiff_t)oh * g->stride_h + (ptrdiff_t)kh * g->dilation_h - g->pad_top;
            if (ih < 0 || ih >= (ptrdiff_t)g->in_h) continue;
            for (size_t kw = 0; kw < g->kernel_w; kw++) {
              const ptrdiff_t iw = (ptrdiff_t)ow * g->stride_w + (ptrdiff_t)kw * g->dilation_w - g->pad_left;
              if (iw < 0 || iw >= (ptrdiff_t)g->in_w) continue;
              acc += (int32_t)w[(kh * g->kernel_w + kw) * g->out_c + o] *
                     ((int32_t)x_n[((size_t)ih * g->in_w + (size_t)iw) * g->in_c + o / m] - p->x_zero);
            }
          }
          if (bias != NULL) acc += bias[o];
          yp[o] = qs8_ref_output(acc, p, o);
        }
      }
    }
  }
}

/* Dense layer, weights [O, K]. */
void tether_ref_qs8_dense(size_t rows, size_t k, size_t outputs, const int8_t* x, const int8_t* w,
                          const int32_t* bias, int8_t* y, const tether_qs8_ref_params* p) {
  for (size_t r = 0; r < rows; r++) {
    for (size_t o = 0; o < outputs; o++) {
      int64_t acc = 0;
      for (size_t i = 0; i < k; i++) acc += (int32_t)w[o * k + i] * ((int32_t)x[r * k + i] - p->x_zero);
      if (bias != NULL) acc += bias[o];
      y[r * outputs + o] = qs8_ref_output(acc, p, o);
    }
  }
}
