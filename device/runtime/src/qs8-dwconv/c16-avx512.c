/*
 * c16-avx512.c — int8 depthwise convolution (depth multiplier 1), 16 channels per vector
 * with masked tails, AVX-512 (F, BW, VL, VNNI). Windows wholly inside the input: taps in
 * pairs, x widened to int16 and interleaved, vpdpwssd against the packed weight pairs, the
 * zero point folded into bias_in. Edge windows: each tap's x widened to int32 minus the zero
 * point, times the packed weight word with vpmaddwd (the word's high half is zero, so this is
 * the exact product), taps in the padding skipped.
 * Twin: tether_qs8_dwconv2d_minmax_ukernel_c1__scalar.
 */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "../ukernels.h"
#include "../qs8-requant/avx512.h"

#define TAP(ACC, XP, WP) \
  ACC = _mm512_add_epi32(ACC, _mm512_madd_epi16(_mm512_sub_epi32(_mm512_cvtepi8_epi32( \
            _mm_maskz_loadu_epi8(m, (XP))), xz), _mm512_maskz_loadu_epi32(m, (WP))))

/* One tap pair of 16 channels into (lo, hi): x of both taps widened to int16, interleaved
 * by unpacklo / unpackhi, dotted with the packed weight pairs (see ukernels.h). */
#define PAIR16(LO, HI, X0, X1, WP)                                                          \
  do {                                                                                      \
    const __m256i x0_ = _mm256_cvtepi8_epi16(X0), x1_ = _mm256_cvtepi8_epi16(X1);           \
    LO = _mm256_dpwssd_epi32(LO, _mm256_unpacklo_epi16(x0_, x1_),                           \
                             _mm256_loadu_si256((const __m256i*)(WP)));                     \
    HI = _mm256_dpwssd_epi32(HI, _mm256_unpackhi_epi16(x0_, x1_),                           \
                             _mm256_loadu_si256((const __m256i*)((WP) + 16)));              \
  } while (0)

/* The (lo, hi) accumulators back in channel order 0..15. */
static inline __m512i unpair16(__m256i lo, __m256i hi) {
  const __m256i c0 = _mm256_permute2x128_si256(lo, hi, 0x20);
  const __m256i c1 = _mm256_permute2x128_si256(lo, hi, 0x31);
  return _mm512_inserti64x4(_mm512_castsi256_si512(c0), c1, 1);
}

/* A window wholly inside the input, channels [c, c + 16) with mask m: taps paired, zero
 * point folded; even and odd pairs in separate accumulators (shorter dependency chains). */
static inline __m512i inside16(const int8_t* xp, const ptrdiff_t* off, size_t pairs,
                               const int16_t* wp, __mmask16 m) {
  /* Whole blocks read with plain loads (masked byte loads cost more on some cores). */
#define LOAD16(P) (m == (__mmask16)0xFFFFu ? _mm_loadu_si128((const __m128i*)(P)) \
                                           : _mm_maskz_loadu_epi8(m, (P)))
  __m256i lo0 = _mm256_setzero_si256(), hi0 = lo0, lo1 = lo0, hi1 = lo0;
  size_t p = 0;
  for (; p + 2 <= pairs; p += 2, wp += 64) {
    PAIR16(lo0, hi0, LOAD16(xp + off[2 * p]), LOAD16(xp + off[2 * p + 1]), wp);
    PAIR16(lo1, hi1, LOAD16(xp + off[2 * p + 2]), LOAD16(xp + off[2 * p + 3]), wp + 32);
  }
  if (p < pairs) PAIR16(lo0, hi0, LOAD16(xp + off[2 * p]), LOAD16(xp + off[2 * p + 1]), wp);
#undef LOAD16
  return unpair16(_mm256_add_epi32(lo0, lo1), _mm256_add_epi32(hi0, hi1));
}

/* The same for 32 whole channels [c, c + 32): two blocks, four independent chains. */
static inline void inside32(const int8_t* xp, const ptrdiff_t* off, size_t pairs,
                            const int16_t* wa, __m512i* acc_a, __m512i* acc_b) {
  const int16_t* wb = wa + pairs * 32;
  __m256i la0 = _mm256_setzero_si256(), ha0 = la0, la1 = la0, ha1 = la0;
  __m256i lb0 = la0, hb0 = la0, lb1 = la0, hb1 = la0;
  size_t p = 0;
  for (; p + 2 <= pairs; p += 2, wa += 64, wb += 64) {
    const int8_t* x0 = xp + off[2 * p];
    const int8_t* x1 = xp + off[2 * p + 1];
    const int8_t* x2 = xp + off[2 * p + 2];
    const int8_t* x3 = xp + off[2 * p + 3];
    PAIR16(la0, ha0, _mm_loadu_si128((const __m128i*)x0), _mm_loadu_si128((const __m128i*)x1), wa);
    PAIR16(lb0, hb0, _mm_loadu_si128((const __m128i*)(x0 + 16)),
           _mm_loadu_si128((const __m128i*)(x1 + 16)), wb);
    PAIR16(la1, ha1, _mm_loadu_si128((const __m128i*)x2), _mm_loadu_si128((const __m128i*)x3),
           wa + 32);
    PAIR16(lb1, hb1, _mm_loadu_si128((const __m128i*)(x2 + 16)),
           _mm_loadu_si128((const __m128i*)(x3 + 16)), wb + 32);
  }
  if (p < pairs) {
    const int8_t* x0 = xp + off[2 * p];
    const int8_t* x1 = xp + off[2 * p + 1];
    PAIR16(la0, ha0, _mm_loadu_si128((const __m128i*)x0), _mm_loadu_si128((const __m128i*)x1), wa);
    PAIR16(lb0, hb0, _mm_loadu_si128((const __m128i*)(x0 + 16)),
           _mm_loadu_si128((const __m128i*)(x1 + 16)), wb);
  }
  *acc_a = unpair16(_mm256_add_epi32(la0, la1), _mm256_add_epi32(ha0, ha1));
  *acc_b = unpair16(_mm256_add_epi32(lb0, lb1), _mm256_add_epi32(hb0, hb1));
}

void tether_qs8_dwconv2d_minmax_ukernel_c16__avx512(const tether_conv_geometry* g,
                                                    size_t oh_begin, size_t oh_end,
                                                    const int8_t* x, const int32_t* w,
                                                    int8_t* y, const tether_qs8_params* p) {
  const size_t channels = g->in_c;
  const ptrdiff_t in_h = (ptrdiff_t)g->in_h, in_w = (ptrdiff_t)g->in_w;
  const size_t kh_n = g->kernel_h, kw_n = g->kernel_w, taps = kh_n * kw_n;
  const size_t pairs = (taps + 1) / 2;
  const int32_t* wt = w + 4 * channels;
  const int32_t* bias_in = wt + taps * channels;
  const int16_t* wpairs = (const int16_t*)(const void*)(bias_in + channels);
  const __m512i xz = _mm512_set1_epi32(p->x_zero), yz = _mm512_set1_epi32(p->y_zero);
  const __m128i lo8 = _mm_set1_epi8((char)p->lo), hi8 = _mm_set1_epi8((char)p->hi);
  int shift_left = 0;  /* any channel with a left shift (rare: s_x * s_w > s_y) */
  for (size_t c = 0; c < channels; c++) shift_left |= w[2 * channels + c] != 0;
  /* Byte offsets of the taps from the window's corner (the odd last one repeated). */
  ptrdiff_t off[TETHER_QS8_DW_MAX_TAPS + 1];
  const int paired = taps <= TETHER_QS8_DW_MAX_TAPS;
  if (paired) tether_qs8_dw_tap_offsets(g, off);
  for (size_t n = 0; n < g->batch; n++) {
    const int8_t* x_n = x + n * g->in_h * g->in_w * channels;
    for (size_t oh = oh_begin; oh < oh_end; oh++) {
      const ptrdiff_t ih0 = (ptrdiff_t)oh * g->stride_h - g->pad_top;
      const int rows_inside = ih0 >= 0 && ih0 + (ptrdiff_t)(kh_n - 1) * g->dilation_h < in_h;
      /* The kernel rows that fall inside the input (a contiguous range). */
      size_t kh_begin, kh_end;
      tether_window_taps(ih0, kh_n, g->dilation_h, in_h, &kh_begin, &kh_end);
      int8_t* y_row = y + (n * g->out_h + oh) * g->out_w * channels;
      /* Output columns [ow_lo, ow_hi) have their whole window inside the input. */
      size_t ow_lo = g->out_w, ow_hi = g->out_w;
      if (paired && rows_inside) tether_window_inside_columns(g, &ow_lo, &ow_hi);
      /* Edge columns: each tap's bounds checked, taps in the padding skipped; channel
       * blocks outermost so each block's requantization constants are made once a row. */
      for (size_t c = 0; c < channels; c += 16) {
        const size_t rest = channels - c;
        const __mmask16 m = (__mmask16)(rest >= 16 ? 0xFFFFu : (1u << rest) - 1u);
        const __m512i mult = _mm512_maskz_loadu_epi32(m, w + channels + c);
        const __m512i left = _mm512_maskz_loadu_epi32(m, w + 2 * channels + c);
        const tether_qs8_rq64 rq =
            tether_qs8_rq64_init(mult, _mm512_maskz_loadu_epi32(m, w + 3 * channels + c), yz);
        for (size_t ow = 0; ow < g->out_w; ow++) {
          if (ow == ow_lo && ow_lo < ow_hi) {
            ow = ow_hi;
            if (ow >= g->out_w) break;
          }
          const ptrdiff_t iw0 = (ptrdiff_t)ow * g->stride_w - g->pad_left;
          size_t kw_begin, kw_end;
          tether_window_taps(iw0, kw_n, g->dilation_w, in_w, &kw_begin, &kw_end);
          __m512i acc = _mm512_maskz_loadu_epi32(m, w + c);
          for (size_t kh = kh_begin; kh < kh_end; kh++) {
            const size_t ih = (size_t)(ih0 + (ptrdiff_t)kh * g->dilation_h);
            for (size_t kw = kw_begin; kw < kw_end; kw++) {
              const size_t iw = (size_t)(iw0 + (ptrdiff_t)kw * g->dilation_w);
              TAP(acc, x_n + (ih * g->in_w + iw) * channels + c,
                  wt + (kh * kw_n + kw) * channels + c);
            }
          }
          if (shift_left) acc = _mm512_sllv_epi32(acc, left);
          tether_qs8_clamp_store16_avx512(y_row + ow * channels + c, m,
                                          tether_qs8_requant_zp_avx512(acc, mult, &rq), lo8, hi8);
        }
      }
      if (ow_lo >= ow_hi) continue;
      /* Interior columns, channel blocks outermost so that each block's per-channel words
       * stay in registers along the row: taps paired, zero point folded. */
      const int8_t* x_row = x_n + (size_t)ih0 * g->in_w * channels;
      size_t c = 0;
      for (; c + 32 <= channels; c += 32) {
        const __m512i b0 = _mm512_loadu_si512(bias_in + c), b1 = _mm512_loadu_si512(bias_in + c + 16);
        const __m512i m0 = _mm512_loadu_si512(w + channels + c);
        const __m512i m1 = _mm512_loadu_si512(w + channels + c + 16);
        const __m512i l0 = _mm512_loadu_si512(w + 2 * channels + c);
        const __m512i l1 = _mm512_loadu_si512(w + 2 * channels + c + 16);
        const __m512i r0 = _mm512_loadu_si512(w + 3 * channels + c);
        const __m512i r1 = _mm512_loadu_si512(w + 3 * channels + c + 16);
        const tether_qs8_rq64 k0 = tether_qs8_rq64_init(m0, r0, yz);
        const tether_qs8_rq64 k1 = tether_qs8_rq64_init(m1, r1, yz);
        const int16_t* wp = wpairs + c / 16 * pairs * 32;
        for (size_t ow = ow_lo; ow < ow_hi; ow++) {
          const int8_t* corner = x_row + ((size_t)ow * g->stride_w - g->pad_left) * channels + c;
          __m512i acc0, acc1;
          inside32(corner, off, pairs, wp, &acc0, &acc1);
          acc0 = _mm512_add_epi32(acc0, b0);
          acc1 = _mm512_add_epi32(acc1, b1);
          if (shift_left) {
            acc0 = _mm512_sllv_epi32(acc0, l0);
            acc1 = _mm512_sllv_epi32(acc1, l1);
          }
          __m512i v0 = tether_qs8_requant_zp_avx512(acc0, m0, &k0);
          __m512i v1 = tether_qs8_requant_zp_avx512(acc1, m1, &k1);
          int8_t* yp = y_row + ow * channels + c;
          tether_qs8_clamp_store16_avx512(yp, (__mmask16)0xFFFFu, v0, lo8, hi8);
          tether_qs8_clamp_store16_avx512(yp + 16, (__mmask16)0xFFFFu, v1, lo8, hi8);
        }
      }
      for (; c < channels; c += 16) {
        const size_t rest = channels - c;
        const __mmask16 m = (__mmask16)(rest >= 16 ? 0xFFFFu : (1u << rest) - 1u);
        const __m512i b = _mm512_maskz_loadu_epi32(m, bias_in + c);
        const __m512i mult = _mm512_maskz_loadu_epi32(m, w + channels + c);
        const __m512i left = _mm512_maskz_loadu_epi32(m, w + 2 * channels + c);
        const __m512i right = _mm512_maskz_loadu_epi32(m, w + 3 * channels + c);
        const tether_qs8_rq64 k = tether_qs8_rq64_init(mult, right, yz);
        const int16_t* wp = wpairs + c / 16 * pairs * 32;
        for (size_t ow = ow_lo; ow < ow_hi; ow++) {
          const int8_t* corner = x_row + ((size_t)ow * g->stride_w - g->pad_left) * channels + c;
          __m512i acc = _mm512_add_epi32(b, inside16(corner, off, pairs, wp, m));
          if (shift_left) acc = _mm512_sllv_epi32(acc, left);
          __m512i v = tether_qs8_requant_zp_avx512(acc, mult, &k);
          tether_qs8_clamp_store16_avx512(y_row + ow * channels + c, m, v, lo8, hi8);
        }
      }
    }
  }
}
