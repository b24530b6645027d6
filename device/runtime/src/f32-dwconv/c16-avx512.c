/*
 * c16-avx512.c — depthwise convolution (depth multiplier 1), 16 channels per vector with
 * masked tails, AVX-512F. Pixels whose whole 3x3 window is inside the input take an unrolled
 * path, the weights held in registers along each row; edge pixels and other kernel sizes
 * skip the taps that fall into the padding.
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
      /* 3x3 windows wholly inside the input: columns [ow_lo, ow_hi), channel blocks
       * outermost so the block's nine weights and bias stay in registers along the row;
       * whole blocks use plain loads and stores (masked ones are slow on some cores). */
      size_t ow_lo = g->out_w, ow_hi = g->out_w;
      if (is3x3 && rows_inside) tether_window_inside_columns(g, &ow_lo, &ow_hi);
      if (ow_lo < ow_hi) {
        const float* x_row = x_n + (size_t)ih0 * row_stride;
        for (size_t c = 0; c < channels; c += 16) {
          const size_t left = channels - c;
          const int full = left >= 16;
          const __mmask16 m = (__mmask16)(full ? 0xFFFFu : (1u << left) - 1u);
          const float* wc = w + c;
          const __m512 b = bias != NULL ? _mm512_maskz_loadu_ps(m, bias + c) : _mm512_setzero_ps();
          const __m512 w0 = _mm512_maskz_loadu_ps(m, wc);
          const __m512 w1 = _mm512_maskz_loadu_ps(m, wc + channels);
          const __m512 w2 = _mm512_maskz_loadu_ps(m, wc + 2 * channels);
          const __m512 w3 = _mm512_maskz_loadu_ps(m, wc + 3 * channels);
          const __m512 w4 = _mm512_maskz_loadu_ps(m, wc + 4 * channels);
          const __m512 w5 = _mm512_maskz_loadu_ps(m, wc + 5 * channels);
          const __m512 w6 = _mm512_maskz_loadu_ps(m, wc + 6 * channels);
          const __m512 w7 = _mm512_maskz_loadu_ps(m, wc + 7 * channels);
          const __m512 w8 = _mm512_maskz_loadu_ps(m, wc + 8 * channels);
#define X(P) (full ? _mm512_loadu_ps(P) : _mm512_maskz_loadu_ps(m, (P)))
          for (size_t ow = ow_lo; ow < ow_hi; ow++) {
            const float* x0 =
                x_row + ((ptrdiff_t)ow * g->stride_w - g->pad_left) * (ptrdiff_t)channels + c;
            const float* x1 = x0 + dh;
            const float* x2 = x1 + dh;
            /* The order of the products as before this path kept its weights in registers. */
            __m512 acc2 = _mm512_mul_ps(X(x0), w0);
            __m512 acc = _mm512_fmadd_ps(X(x0 + dw), w1, b);
            acc2 = _mm512_fmadd_ps(X(x0 + 2 * dw), w2, acc2);
            acc = _mm512_fmadd_ps(X(x1), w3, acc);
            acc2 = _mm512_fmadd_ps(X(x1 + dw), w4, acc2);
            acc = _mm512_fmadd_ps(X(x1 + 2 * dw), w5, acc);
            acc2 = _mm512_fmadd_ps(X(x2), w6, acc2);
            acc = _mm512_fmadd_ps(X(x2 + dw), w7, acc);
            acc2 = _mm512_fmadd_ps(X(x2 + 2 * dw), w8, acc2);
            acc = _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_add_ps(acc, acc2)));
            float* yp = y + ((n * g->out_h + oh) * g->out_w + ow) * channels + c;
            if (full) {
              _mm512_storeu_ps(yp, acc);
            } else {
              _mm512_mask_storeu_ps(yp, m, acc);
            }
          }
#undef X
        }
      }
      /* Every other column: taps in the padding skipped. */
      for (size_t ow = 0; ow < g->out_w; ow = ow + 1 == ow_lo ? ow_hi : ow + 1) {
        if (ow == ow_lo && ow_lo < ow_hi) {
          ow = ow_hi;
          if (ow >= g->out_w) break;
        }
        const ptrdiff_t iw0 = (ptrdiff_t)ow * g->stride_w - g->pad_left;
        float* yp = y + ((n * g->out_h + oh) * g->out_w + ow) * channels;
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
