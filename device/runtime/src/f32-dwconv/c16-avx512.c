/*
 * c16-avx512.c — depthwise convolution (depth multiplier 1), 16 channels per vector with
 * masked tails, AVX-512F. Pixels whose whole 3x3 window is inside the input take an unrolled
 * path; edge pixels and other kernel sizes skip the taps that fall into the padding.
 * Twin: tether_f32_dwconv2d_minmax_ukernel_c1__scalar.
 */
#include <immintrin.h>
#include <stddef.h>

#include "../ukernels.h"

void tether_f32_dwconv2d_minmax_ukernel_c16__avx512(const tether_conv_geometry* g,
                                                    size_t oh_begin, size_t oh_end,
                                                    const float* x, const float* w,
                                                    const float* bias, float* y,
                                                    const tether_f32_minmax* params) {
  const size_t channels = g->in_c;
  const ptrdiff_t in_h = (ptrdiff_t)g->in_h, in_w = (ptrdiff_t)g->in_w;
  const size_t kh_n = g->kernel_h, kw_n = g->kernel_w;
  const __m512 lo = _mm512_set1_ps(params->min), hi = _mm512_set1_ps(params->max);
  const int is3x3 = kh_n == 3 && kw_n == 3;
  const size_t row_stride = g->in_w * channels;
  const size_t dh = (size_t)g->dilation_h * row_stride, dw = (size_t)g->dilation_w * channels;
  for (size_t n = 0; n < g->batch; n++) {
    const float* x_n = x + n * g->in_h * g->in_w * channels;
    for (size_t oh = oh_begin; oh < oh_end; oh++) {
      const ptrdiff_t ih0 = (ptrdiff_t)oh * g->stride_h - g->pad_top;
      const int rows_inside =
          ih0 >= 0 && ih0 + (ptrdiff_t)(kh_n - 1) * g->dilation_h < in_h;
      for (size_t ow = 0; ow < g->out_w; ow++) {
        const ptrdiff_t iw0 = (ptrdiff_t)ow * g->stride_w - g->pad_left;
        float* yp = y + ((n * g->out_h + oh) * g->out_w + ow) * channels;
        const int inside =
            rows_inside && iw0 >= 0 && iw0 + (ptrdiff_t)(kw_n - 1) * g->dilation_w < in_w;
        if (inside && is3x3) {
          const float* x0 = x_n + (size_t)ih0 * row_stride + (size_t)iw0 * channels;
          const float* x1 = x0 + dh;
          const float* x2 = x1 + dh;
          for (size_t c = 0; c < channels; c += 16) {
            const size_t left = channels - c;
            const __mmask16 m = (__mmask16)(left >= 16 ? 0xFFFFu : (1u << left) - 1u);
            const float* wc = w + c;
            __m512 acc = bias != NULL ? _mm512_maskz_loadu_ps(m, bias + c) : _mm512_setzero_ps();
            __m512 acc2 = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x0 + c),
                                        _mm512_maskz_loadu_ps(m, wc));
            acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x0 + dw + c),
                                  _mm512_maskz_loadu_ps(m, wc + channels), acc);
            acc2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x0 + 2 * dw + c),
                                   _mm512_maskz_loadu_ps(m, wc + 2 * channels), acc2);
            acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x1 + c),
                                  _mm512_maskz_loadu_ps(m, wc + 3 * channels), acc);
            acc2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x1 + dw + c),
                                   _mm512_maskz_loadu_ps(m, wc + 4 * channels), acc2);
            acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x1 + 2 * dw + c),
                                  _mm512_maskz_loadu_ps(m, wc + 5 * channels), acc);
            acc2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x2 + c),
                                   _mm512_maskz_loadu_ps(m, wc + 6 * channels), acc2);
            acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x2 + dw + c),
                                  _mm512_maskz_loadu_ps(m, wc + 7 * channels), acc);
            acc2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x2 + 2 * dw + c),
                                   _mm512_maskz_loadu_ps(m, wc + 8 * channels), acc2);
            acc = _mm512_add_ps(acc, acc2);
            _mm512_mask_storeu_ps(yp + c, m, _mm512_min_ps(hi, _mm512_max_ps(lo, acc)));
          }
          continue;
        }
        for (size_t c = 0; c < channels; c += 16) {
          const size_t left = channels - c;
          const __mmask16 m = (__mmask16)(left >= 16 ? 0xFFFFu : (1u << left) - 1u);
          __m512 acc = bias != NULL ? _mm512_maskz_loadu_ps(m, bias + c) : _mm512_setzero_ps();
          for (size_t kh = 0; kh < kh_n; kh++) {
            const ptrdiff_t ih = ih0 + (ptrdiff_t)kh * g->dilation_h;
            if (ih < 0 || ih >= in_h) continue;
            for (size_t kw = 0; kw < kw_n; kw++) {
              const ptrdiff_t iw = iw0 + (ptrdiff_t)kw * g->dilation_w;
              if (iw < 0 || iw >= in_w) continue;
              const float* xp = x_n + ((size_t)ih * g->in_w + (size_t)iw) * channels + c;
              acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, xp),
                                    _mm512_maskz_loadu_ps(m, w + (kh * kw_n + kw) * channels + c),
                                    acc);
            }
          }
          _mm512_mask_storeu_ps(yp + c, m, _mm512_min_ps(hi, _mm512_max_ps(lo, acc)));
        }
      }
    }
  }
}
