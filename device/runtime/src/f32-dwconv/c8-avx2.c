/*
 * c8-avx2.c — depthwise convolution (depth multiplier 1), 8 channels per vector with masked
 * tails, AVX2 + FMA. Pixels whose whole 3x3 window is inside the input take an unrolled path
 * (whole blocks of 8 channels with the weights held in registers along each row); edge
 * pixels and other kernel sizes skip the taps that fall into the padding.
 * Twin: tether_f32_dwconv2d_minmax_ukernel_c1__scalar.
 */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "../ukernels.h"

static const int32_t kMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

void tether_f32_dwconv2d_minmax_ukernel_c8__avx2(const tether_conv_geometry* g,
                                                 size_t oh_begin, size_t oh_end,
                                                 const float* x, const float* w,
                                                 const float* bias, float* y,
                                                 const tether_f32_minmax* params) {
  const size_t channels = g->in_c;
  const ptrdiff_t in_h = (ptrdiff_t)g->in_h, in_w = (ptrdiff_t)g->in_w;
  const size_t kh_n = g->kernel_h, kw_n = g->kernel_w;
  const __m256 lo = _mm256_set1_ps(params->min), hi = _mm256_set1_ps(params->max);
  const int is3x3 = kh_n == 3 && kw_n == 3;
  const size_t row_stride = g->in_w * channels;
  const size_t dh = (size_t)g->dilation_h * row_stride, dw = (size_t)g->dilation_w * channels;
  for (size_t n = 0; n < g->batch; n++) {
    const float* x_n = x + n * g->in_h * g->in_w * channels;
    for (size_t oh = oh_begin; oh < oh_end; oh++) {
      const ptrdiff_t ih0 = (ptrdiff_t)oh * g->stride_h - g->pad_top;
      const int rows_inside = ih0 >= 0 && ih0 + (ptrdiff_t)(kh_n - 1) * g->dilation_h < in_h;
      /* 3x3 windows wholly inside the input: columns [ow_lo, ow_hi), channel blocks
       * outermost so the block's nine weights and bias stay in registers along the row;
       * whole blocks use plain loads and stores (the products in the order below). */
      size_t ow_lo = g->out_w, ow_hi = g->out_w;
      if (is3x3 && rows_inside) tether_window_inside_columns(g, &ow_lo, &ow_hi);
      if (ow_lo < ow_hi) {
        const float* x_row = x_n + (size_t)ih0 * row_stride;
        for (size_t c = 0; c + 8 <= channels; c += 8) {
          const float* wc = w + c;
          const __m256 b = bias != NULL ? _mm256_loadu_ps(bias + c) : _mm256_setzero_ps();
          const __m256 w0 = _mm256_loadu_ps(wc), w1 = _mm256_loadu_ps(wc + channels);
          const __m256 w2 = _mm256_loadu_ps(wc + 2 * channels);
          const __m256 w3 = _mm256_loadu_ps(wc + 3 * channels);
          const __m256 w4 = _mm256_loadu_ps(wc + 4 * channels);
          const __m256 w5 = _mm256_loadu_ps(wc + 5 * channels);
          const __m256 w6 = _mm256_loadu_ps(wc + 6 * channels);
          const __m256 w7 = _mm256_loadu_ps(wc + 7 * channels);
          const __m256 w8 = _mm256_loadu_ps(wc + 8 * channels);
          for (size_t ow = ow_lo; ow < ow_hi; ow++) {
            const float* x0 =
                x_row + ((ptrdiff_t)ow * g->stride_w - g->pad_left) * (ptrdiff_t)channels + c;
            const float* x1 = x0 + dh;
            const float* x2 = x1 + dh;
            __m256 acc2 = _mm256_mul_ps(_mm256_loadu_ps(x0), w0);
            __m256 acc = _mm256_fmadd_ps(_mm256_loadu_ps(x0 + dw), w1, b);
            acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(x0 + 2 * dw), w2, acc2);
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(x1), w3, acc);
            acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(x1 + dw), w4, acc2);
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(x1 + 2 * dw), w5, acc);
            acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(x2), w6, acc2);
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(x2 + dw), w7, acc);
            acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(x2 + 2 * dw), w8, acc2);
            acc = _mm256_min_ps(hi, _mm256_max_ps(lo, _mm256_add_ps(acc, acc2)));
            _mm256_storeu_ps(y + ((n * g->out_h + oh) * g->out_w + ow) * channels + c, acc);
          }
        }
      }
      /* Every other column, and the interior's last partial block of channels. */
      const size_t whole = channels / 8 * 8;
      for (size_t ow = 0; ow < g->out_w; ow++) {
        const int interior = ow >= ow_lo && ow < ow_hi;
        if (interior && whole == channels) {
          ow = ow_hi - 1;
          continue;
        }
        const ptrdiff_t iw0 = (ptrdiff_t)ow * g->stride_w - g->pad_left;
        float* yp = y + ((n * g->out_h + oh) * g->out_w + ow) * channels;
        const int inside =
            rows_inside && iw0 >= 0 && iw0 + (ptrdiff_t)(kw_n - 1) * g->dilation_w < in_w;
        const float* x0 = x_n + (size_t)(inside ? ih0 : 0) * row_stride +
                          (size_t)(inside ? iw0 : 0) * channels;
        for (size_t c = interior ? whole : 0; c < channels; c += 8) {
          const size_t left = channels - c;
          const __m256i m = _mm256_loadu_si256(
              (const __m256i*)(kMaskTable + 8 - (left >= 8 ? 8 : left)));
          __m256 acc = bias != NULL ? _mm256_maskload_ps(bias + c, m) : _mm256_setzero_ps();
          if (inside && is3x3) {
            const float* wc = w + c;
            const float* xc = x0 + c;
            __m256 acc2 = _mm256_mul_ps(_mm256_maskload_ps(xc, m), _mm256_maskload_ps(wc, m));
            acc = _mm256_fmadd_ps(_mm256_maskload_ps(xc + dw, m),
                                  _mm256_maskload_ps(wc + channels, m), acc);
            acc2 = _mm256_fmadd_ps(_mm256_maskload_ps(xc + 2 * dw, m),
                                   _mm256_maskload_ps(wc + 2 * channels, m), acc2);
            xc += dh;
            acc = _mm256_fmadd_ps(_mm256_maskload_ps(xc, m),
                                  _mm256_maskload_ps(wc + 3 * channels, m), acc);
            acc2 = _mm256_fmadd_ps(_mm256_maskload_ps(xc + dw, m),
                                   _mm256_maskload_ps(wc + 4 * channels, m), acc2);
            acc = _mm256_fmadd_ps(_mm256_maskload_ps(xc + 2 * dw, m),
                                  _mm256_maskload_ps(wc + 5 * channels, m), acc);
            xc += dh;
            acc2 = _mm256_fmadd_ps(_mm256_maskload_ps(xc, m),
                                   _mm256_maskload_ps(wc + 6 * channels, m), acc2);
            acc = _mm256_fmadd_ps(_mm256_maskload_ps(xc + dw, m),
                                  _mm256_maskload_ps(wc + 7 * channels, m), acc);
            acc2 = _mm256_fmadd_ps(_mm256_maskload_ps(xc + 2 * dw, m),
                                   _mm256_maskload_ps(wc + 8 * channels, m), acc2);
            acc = _mm256_add_ps(acc, acc2);
          } else {
            for (size_t kh = 0; kh < kh_n; kh++) {
              const ptrdiff_t ih = ih0 + (ptrdiff_t)kh * g->dilation_h;
              if (ih < 0 || ih >= in_h) continue;
              for (size_t kw = 0; kw < kw_n; kw++) {
                const ptrdiff_t iw = iw0 + (ptrdiff_t)kw * g->dilation_w;
                if (iw < 0 || iw >= in_w) continue;
                const float* xp = x_n + ((size_t)ih * g->in_w + (size_t)iw) * channels + c;
                acc = _mm256_fmadd_ps(_mm256_maskload_ps(xp, m),
                                      _mm256_maskload_ps(w + (kh * kw_n + kw) * channels + c, m),
                                      acc);
              }
            }
          }
          _mm256_maskstore_ps(yp + c, m, _mm256_min_ps(hi, _mm256_max_ps(lo, acc)));
        }
      }
    }
  }
}
