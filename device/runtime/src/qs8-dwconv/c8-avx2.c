/*
 * c8-avx2.c — int8 depthwise convolution (depth multiplier 1), AVX2. Windows wholly inside
 * the input, 16 channels at a time: taps in pairs, x widened to int16 and interleaved,
 * vpmaddwd against the packed weight pairs (the AVX-512 kernel's vpdpwssd, without the
 * accumulate), the zero point folded into bias_in. Edge windows and a channel tail (< 16):
 * 8 channels per vector, each tap's x widened to int32 minus the zero point, times the packed
 * weight word with vpmaddwd (the weight's high half is zero, so this is the exact product),
 * taps in the padding skipped; a tail (< 8) goes through small stack copies.
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

#define TAP(ACC, XP, WP, NC) \
  ACC = _mm256_add_epi32(ACC, _mm256_madd_epi16(_mm256_sub_epi32(load8x((XP), (NC)), xz), \
                                                load8w((WP), (NC))))

/* One tap pair of 16 channels into (lo, hi): x of both taps widened to int16, interleaved
 * by unpacklo / unpackhi, multiplied and pair-summed with the packed weights (ukernels.h). */
#define PAIR16(LO, HI, X0, X1, WP)                                                          \
  do {                                                                                      \
    const __m256i x0_ = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(X0)));        \
    const __m256i x1_ = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(X1)));        \
    LO = _mm256_add_epi32(LO, _mm256_madd_epi16(_mm256_unpacklo_epi16(x0_, x1_),            \
                                                _mm256_loadu_si256((const __m256i*)(WP)))); \
    HI = _mm256_add_epi32(HI, _mm256_madd_epi16(_mm256_unpackhi_epi16(x0_, x1_),            \
                                                _mm256_loadu_si256(                         \
                                                    (const __m256i*)((WP) + 16))));         \
  } while (0)

/* Channels [c, c + 8) of one output pixel, any window (edge path). */
static inline void edge8(const tether_conv_geometry* g, const int8_t* x_n, const int32_t* w,
                         const int32_t* wt, ptrdiff_t ih0, size_t kh_begin, size_t kh_end,
                         ptrdiff_t iw0, size_t kw_begin, size_t kw_end, size_t c,
                         int8_t* yp, const tether_qs8_params* p) {
  const size_t channels = g->in_c, kw_n = g->kernel_w;
  const size_t nc = channels - c < 8 ? channels - c : 8;
  const __m256i xz = _mm256_set1_epi32(p->x_zero);
  __m256i acc = load8w(w + c, nc);
  __m256i acc2 = _mm256_setzero_si256();
  for (size_t kh = kh_begin; kh < kh_end; kh++) {
    const size_t ih = (size_t)(ih0 + (ptrdiff_t)kh * g->dilation_h);
    const int8_t* xr = x_n + ih * g->in_w * channels + c;
    const int32_t* wr = wt + kh * kw_n * channels + c;
    size_t kw = kw_begin;
    for (; kw + 2 <= kw_end; kw += 2) {
      const size_t iw = (size_t)(iw0 + (ptrdiff_t)kw * g->dilation_w);
      TAP(acc, xr + iw * channels, wr + kw * channels, nc);
      TAP(acc2, xr + (iw + (size_t)g->dilation_w) * channels, wr + (kw + 1) * channels, nc);
    }
    if (kw < kw_end) {
      TAP(acc, xr + (size_t)(iw0 + (ptrdiff_t)kw * g->dilation_w) * channels,
          wr + kw * channels, nc);
    }
  }
  acc = _mm256_add_epi32(acc, acc2);
  const __m256i mult = load8w(w + channels + c, nc);
  const __m256i left = load8w(w + 2 * channels + c, nc);
  const __m256i right = load8w(w + 3 * channels + c, nc);
  __m256i v = _mm256_add_epi32(tether_qs8_requant_avx2(acc, mult, left, right),
                               _mm256_set1_epi32(p->y_zero));
  v = _mm256_min_epi32(_mm256_max_epi32(v, _mm256_set1_epi32(p->lo)), _mm256_set1_epi32(p->hi));
  const __m128i s16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  const __m128i s8 = _mm_packs_epi16(s16, s16);
  if (nc == 8) {
    _mm_storel_epi64((__m128i*)yp, s8);
  } else {
    int8_t t[16];
    _mm_storeu_si128((__m128i*)t, s8);
    memcpy(yp, t, nc);
  }
}

void tether_qs8_dwconv2d_minmax_ukernel_c8__avx2(const tether_conv_geometry* g,
                                                 size_t oh_begin, size_t oh_end,
                                                 const int8_t* x, const int32_t* w, int8_t* y,
                                                 const tether_qs8_params* p) {
  const size_t channels = g->in_c;
  const ptrdiff_t in_h = (ptrdiff_t)g->in_h, in_w = (ptrdiff_t)g->in_w;
  const size_t kh_n = g->kernel_h, kw_n = g->kernel_w, taps = kh_n * kw_n;
  const size_t pairs = (taps + 1) / 2;
  const int32_t* wt = w + 4 * channels;
  const int32_t* bias_in = wt + taps * channels;
  const int16_t* wpairs = (const int16_t*)(const void*)(bias_in + channels);
  const __m256i yz = _mm256_set1_epi32(p->y_zero);
  const __m256i lo = _mm256_set1_epi32(p->lo), hi = _mm256_set1_epi32(p->hi);
  /* The interior path runs whole blocks of 16 channels; the rest take the edge path. */
  const size_t whole = channels / 16 * 16;
  /* Byte offsets of the taps from the window's corner (the odd last one repeated). */
  ptrdiff_t off[TETHER_QS8_DW_MAX_TAPS + 1];
  const int paired = taps <= TETHER_QS8_DW_MAX_TAPS && whole > 0;
  if (paired) tether_qs8_dw_tap_offsets(g, off);
  for (size_t n = 0; n < g->batch; n++) {
    const int8_t* x_n = x + n * g->in_h * g->in_w * channels;
    for (size_t oh = oh_begin; oh < oh_end; oh++) {
      const ptrdiff_t ih0 = (ptrdiff_t)oh * g->stride_h - g->pad_top;
      const int rows_inside = ih0 >= 0 && ih0 + (ptrdiff_t)(kh_n - 1) * g->dilation_h < in_h;
      size_t kh_begin, kh_end;
      tether_window_taps(ih0, kh_n, g->dilation_h, in_h, &kh_begin, &kh_end);
      int8_t* y_row = y + (n * g->out_h + oh) * g->out_w * channels;
      /* Output columns [ow_lo, ow_hi) have their whole window inside the input. */
      size_t ow_lo = g->out_w, ow_hi = g->out_w;
      if (paired && rows_inside) tether_window_inside_columns(g, &ow_lo, &ow_hi);
      for (size_t ow = 0; ow < g->out_w; ow++) {
        const size_t c_begin = ow >= ow_lo && ow < ow_hi ? whole : 0;
        if (c_begin == channels) continue;
        const ptrdiff_t iw0 = (ptrdiff_t)ow * g->stride_w - g->pad_left;
        size_t kw_begin, kw_end;
        tether_window_taps(iw0, kw_n, g->dilation_w, in_w, &kw_begin, &kw_end);
        for (size_t c = c_begin; c < channels; c += 8) {
          edge8(g, x_n, w, wt, ih0, kh_begin, kh_end, iw0, kw_begin, kw_end, c,
                y_row + ow * channels + c, p);
        }
      }
      if (ow_lo >= ow_hi) continue;
      /* Interior columns, channel blocks outermost so that each block's per-channel words
       * stay in registers along the row. */
      const int8_t* x_row = x_n + (size_t)ih0 * g->in_w * channels;
      for (size_t c = 0; c < whole; c += 16) {
        const __m256i b0 = _mm256_loadu_si256((const __m256i*)(bias_in + c));
        const __m256i b1 = _mm256_loadu_si256((const __m256i*)(bias_in + c + 8));
        const __m256i m0 = _mm256_loadu_si256((const __m256i*)(w + channels + c));
        const __m256i m1 = _mm256_loadu_si256((const __m256i*)(w + channels + c + 8));
        const __m256i l0 = _mm256_loadu_si256((const __m256i*)(w + 2 * channels + c));
        const __m256i l1 = _mm256_loadu_si256((const __m256i*)(w + 2 * channels + c + 8));
        const __m256i r0 = _mm256_loadu_si256((const __m256i*)(w + 3 * channels + c));
        const __m256i r1 = _mm256_loadu_si256((const __m256i*)(w + 3 * channels + c + 8));
        const int16_t* wp0 = wpairs + c / 16 * pairs * 32;
        for (size_t ow = ow_lo; ow < ow_hi; ow++) {
          const int8_t* corner = x_row + ((size_t)ow * g->stride_w - g->pad_left) * channels + c;
          __m256i lo0 = _mm256_setzero_si256(), hi0 = lo0, lo1 = lo0, hi1 = lo0;
          const int16_t* wp = wp0;
          size_t q = 0;
          for (; q + 2 <= pairs; q += 2, wp += 64) {
            PAIR16(lo0, hi0, corner + off[2 * q], corner + off[2 * q + 1], wp);
            PAIR16(lo1, hi1, corner + off[2 * q + 2], corner + off[2 * q + 3], wp + 32);
          }
          if (q < pairs) PAIR16(lo0, hi0, corner + off[2 * q], corner + off[2 * q + 1], wp);
          const __m256i sl = _mm256_add_epi32(lo0, lo1), sh = _mm256_add_epi32(hi0, hi1);
          /* back in channel order: lanes (0-3 | 8-11) and (4-7 | 12-15) */
          __m256i acc0 = _mm256_add_epi32(_mm256_permute2x128_si256(sl, sh, 0x20), b0);
          __m256i acc1 = _mm256_add_epi32(_mm256_permute2x128_si256(sl, sh, 0x31), b1);
          __m256i v0 = _mm256_add_epi32(tether_qs8_requant_avx2(acc0, m0, l0, r0), yz);
          __m256i v1 = _mm256_add_epi32(tether_qs8_requant_avx2(acc1, m1, l1, r1), yz);
          v0 = _mm256_min_epi32(_mm256_max_epi32(v0, lo), hi);
          v1 = _mm256_min_epi32(_mm256_max_epi32(v1, lo), hi);
          /* packs interleave the 128-bit lanes: (v0 0-3, v1 0-3 | v0 4-7, v1 4-7) */
          const __m256i s16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(v0, v1), 0xD8);
          const __m128i s8 = _mm_packs_epi16(_mm256_castsi256_si128(s16),
                                             _mm256_extracti128_si256(s16, 1));
          _mm_storeu_si128((__m128i*)(y_row + ow * channels + c), s8);
        }
      }
    }
  }
}
