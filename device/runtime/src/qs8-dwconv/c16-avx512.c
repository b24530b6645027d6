/*
 * c16-avx512.c — int8 depthwise convolution (depth multiplier 1), 16 channels per vector
 * with masked tails, AVX-512 (F, BW, VL). Each tap: x widened to int32, minus the zero
 * point, times the packed weight word with vpmaddwd (the weight's high half is zero, so the
 * 16-bit multiply-add is the exact product). Windows wholly inside the input take an
 * unrolled 3x3 path; edge pixels and other sizes skip the taps in the padding.
 * Twin: tether_qs8_dwconv2d_minmax_ukernel_c1__scalar.
 */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "../internal.h"
#include "../ukernels.h"
#include "../qs8-gemm/requant-avx512.h"

#define TAP(ACC, XP, WP) \
  ACC = _mm512_add_epi32(ACC, _mm512_madd_epi16(_mm512_sub_epi32(_mm512_cvtepi8_epi32( \
            _mm_maskz_loadu_epi8(m, (XP))), xz), _mm512_maskz_loadu_epi32(m, (WP))))

void tether_qs8_dwconv2d_minmax_ukernel_c16__avx512(const tether_conv_geometry* g,
                                                    size_t oh_begin, size_t oh_end,
                                                    const int8_t* x, const int32_t* w,
                                                    int8_t* y, const tether_qs8_params* p) {
  const size_t channels = g->in_c;
  const ptrdiff_t in_h = (ptrdiff_t)g->in_h, in_w = (ptrdiff_t)g->in_w;
  const size_t kh_n = g->kernel_h, kw_n = g->kernel_w;
  const int is3x3 = kh_n == 3 && kw_n == 3;
  const size_t row_stride = g->in_w * channels;
  const size_t dh = (size_t)g->dilation_h * row_stride, dw = (size_t)g->dilation_w * channels;
  const int32_t* wt = w + 4 * channels;
  const __m512i xz = _mm512_set1_epi32(p->x_zero), yz = _mm512_set1_epi32(p->y_zero);
  const __m512i lo = _mm512_set1_epi32(p->lo), hi = _mm512_set1_epi32(p->hi);
  for (size_t n = 0; n < g->batch; n++) {
    const int8_t* x_n = x + n * g->in_h * g->in_w * channels;
    for (size_t oh = oh_begin; oh < oh_end; oh++) {
      const ptrdiff_t ih0 = (ptrdiff_t)oh * g->stride_h - g->pad_top;
      const int rows_inside = ih0 >= 0 && ih0 + (ptrdiff_t)(kh_n - 1) * g->dilation_h < in_h;
      /* The kernel rows that fall inside the input (a contiguous range). */
      size_t kh_begin = 0, kh_end = kh_n;
      while (kh_begin < kh_n && ih0 + (ptrdiff_t)kh_begin * g->dilation_h < 0) kh_begin++;
      while (kh_end > kh_begin && ih0 + (ptrdiff_t)(kh_end - 1) * g->dilation_h >= in_h) kh_end--;
      for (size_t ow = 0; ow < g->out_w; ow++) {
        const ptrdiff_t iw0 = (ptrdiff_t)ow * g->stride_w - g->pad_left;
        int8_t* yp = y + ((n * g->out_h + oh) * g->out_w + ow) * channels;
        const int inside =
            rows_inside && iw0 >= 0 && iw0 + (ptrdiff_t)(kw_n - 1) * g->dilation_w < in_w;
        size_t kw_begin = 0, kw_end = kw_n;
        while (kw_begin < kw_n && iw0 + (ptrdiff_t)kw_begin * g->dilation_w < 0) kw_begin++;
        while (kw_end > kw_begin && iw0 + (ptrdiff_t)(kw_end - 1) * g->dilation_w >= in_w) kw_end--;
        for (size_t c = 0; c < channels; c += 16) {
          const size_t rest = channels - c;
          const __mmask16 m = (__mmask16)(rest >= 16 ? 0xFFFFu : (1u << rest) - 1u);
          __m512i acc = _mm512_maskz_loadu_epi32(m, w + c);
          if (inside && is3x3) {
            const int8_t* x0 = x_n + (size_t)ih0 * row_stride + (size_t)iw0 * channels + c;
            const int8_t* x1 = x0 + dh;
            const int8_t* x2 = x1 + dh;
            const int32_t* wc = wt + c;
            __m512i acc2 = _mm512_setzero_si512();
            TAP(acc, x0, wc);
            TAP(acc2, x0 + dw, wc + channels);
            TAP(acc, x0 + 2 * dw, wc + 2 * channels);
            TAP(acc2, x1, wc + 3 * channels);
            TAP(acc, x1 + dw, wc + 4 * channels);
            TAP(acc2, x1 + 2 * dw, wc + 5 * channels);
            TAP(acc, x2, wc + 6 * channels);
            TAP(acc2, x2 + dw, wc + 7 * channels);
            TAP(acc, x2 + 2 * dw, wc + 8 * channels);
            acc = _mm512_add_epi32(acc, acc2);
          } else {
            for (size_t kh = kh_begin; kh < kh_end; kh++) {
              const size_t ih = (size_t)(ih0 + (ptrdiff_t)kh * g->dilation_h);
              for (size_t kw = kw_begin; kw < kw_end; kw++) {
                const size_t iw = (size_t)(iw0 + (ptrdiff_t)kw * g->dilation_w);
                TAP(acc, x_n + (ih * g->in_w + iw) * channels + c,
                    wt + (kh * kw_n + kw) * channels + c);
              }
            }
          }
          const __m512i mult = _mm512_maskz_loadu_epi32(m, w + channels + c);
          const __m512i left = _mm512_maskz_loadu_epi32(m, w + 2 * channels + c);
          const __m512i right = _mm512_maskz_loadu_epi32(m, w + 3 * channels + c);
          __m512i v = _mm512_add_epi32(tether_qs8_requant_avx512(acc, mult, left, right), yz);
          v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
          _mm_mask_storeu_epi8(yp + c, m, _mm512_cvtepi32_epi8(v));
        }
      }
    }
  }
}
