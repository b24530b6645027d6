/*
 * c8-avx2.c — int8 depthwise convolution (depth multiplier 1), 8 channels per vector, AVX2.
 * Each tap: x widened to int32, minus the zero point, times the packed weight word with
 * vpmaddwd (the weight's high half is zero, so this is the exact product). Taps in the
 * padding are skipped; a channel tail (< 8) goes through small stack copies.
 * Built with -mavx2 -mfma. Twin: tether_qs8_dwconv2d_minmax_ukernel_c1__scalar.
 */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../ukernels.h"
#include "../qs8-requant/avx2.h"

static inline __m256i load8x(const int8_t* p, size_t n) {
  int64_t v = 0;
  memcpy(&v, p, n);
  return _mm256_cvtepi8_epi32(_mm_cvtsi64_si128(v));
}

static inline __m256i load8w(const int32_t* p, size_t n) {
  if (n >= 8) return _mm256_loadu_si256((const __m256i*)p);
  int32_t t[8] = {0};
  memcpy(t, p, n * sizeof(int32_t));
  return _mm256_loadu_si256((const __m256i*)t);
}

void tether_qs8_dwconv2d_minmax_ukernel_c8__avx2(const tether_conv_geometry* g,
                                                 size_t oh_begin, size_t oh_end,
                                                 const int8_t* x, const int32_t* w, int8_t* y,
                                                 const tether_qs8_params* p) {
  const size_t channels = g->in_c;
  const ptrdiff_t in_h = (ptrdiff_t)g->in_h, in_w = (ptrdiff_t)g->in_w;
  const size_t kh_n = g->kernel_h, kw_n = g->kernel_w;
  const int32_t* wt = w + 4 * channels;
  const __m256i xz = _mm256_set1_epi32(p->x_zero), yz = _mm256_set1_epi32(p->y_zero);
  const __m256i lo = _mm256_set1_epi32(p->lo), hi = _mm256_set1_epi32(p->hi);
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
          __m256i acc = load8w(w + c, nc);
          __m256i acc2 = _mm256_setzero_si256();
          for (size_t kh = kh_begin; kh < kh_end; kh++) {
            const size_t ih = (size_t)(ih0 + (ptrdiff_t)kh * g->dilation_h);
            const int8_t* xr = x_n + ih * g->in_w * channels + c;
            const int32_t* wr = wt + kh * kw_n * channels + c;
            size_t kw = kw_begin;
            for (; kw + 2 <= kw_end; kw += 2) {
              const size_t iw = (size_t)(iw0 + (ptrdiff_t)kw * g->dilation_w);
              const size_t iw1 = iw + (size_t)g->dilation_w;
              acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_sub_epi32(load8x(xr + iw * channels, nc), xz),
                                                            load8w(wr + kw * channels, nc)));
              acc2 = _mm256_add_epi32(acc2, _mm256_madd_epi16(_mm256_sub_epi32(load8x(xr + iw1 * channels, nc), xz),
                                                              load8w(wr + (kw + 1) * channels, nc)));
            }
            if (kw < kw_end) {
              const size_t iw = (size_t)(iw0 + (ptrdiff_t)kw * g->dilation_w);
              acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_sub_epi32(load8x(xr + iw * channels, nc), xz),
                                                            load8w(wr + kw * channels, nc)));
            }
          }
          acc = _mm256_add_epi32(acc, acc2);
          const __m256i mult = load8w(w + channels + c, nc);
          const __m256i left = load8w(w + 2 * channels + c, nc);
          const __m256i right = load8w(w + 3 * channels + c, nc);
          __m256i v = _mm256_add_epi32(tether_qs8_requant_avx2(acc, mult, left, right), yz);
          v = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
          const __m128i s16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
          const __m128i s8 = _mm_packs_epi16(s16, s16);
          if (nc == 8) {
            _mm_storel_epi64((__m128i*)(yp + c), s8);
          } else {
            int8_t t[16];
            _mm_storeu_si128((__m128i*)t, s8);
            memcpy(yp + c, t, nc);
          }
        }
      }
    }
  }
}
