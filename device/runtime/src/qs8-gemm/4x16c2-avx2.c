/*
 * 4x16c2-avx2.c — int8 GEMM micro-kernel, 4 rows x 16 channels, K in steps of 2: weights
 * and A widened to int16 and multiplied with vpmaddwd (two products summed into int32, no
 * saturation possible), 8 k of a row broadcast at a time. TFLite requantization per channel.
 * Built with -mavx2 -mfma. Twin: tether_qs8_gemm_minmax_ukernel_4x16c2__scalar.
 */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../ukernels.h"
#include "../qs8-requant/avx2.h"

/* 8 bytes of a row (n < 8: the first n, zero-extended) as int16 in both 128-bit halves. */
static inline __m256i row8(const int8_t* p, size_t n) {
  int64_t v = 0;
  memcpy(&v, p, n);
  return _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_cvtsi64_si128(v)));
}

#define QS8_STEP(PAIR)                                                                      \
  do {                                                                                      \
    const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)wk));           \
    const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(wk + 16)));    \
    wk += 32;                                                                               \
    __m256i v = _mm256_shuffle_epi32(x0, PAIR * 0x55);                                      \
    c0l = _mm256_add_epi32(c0l, _mm256_madd_epi16(v, w0));                                  \
    c0h = _mm256_add_epi32(c0h, _mm256_madd_epi16(v, w1));                                  \
    v = _mm256_shuffle_epi32(x1, PAIR * 0x55);                                              \
    c1l = _mm256_add_epi32(c1l, _mm256_madd_epi16(v, w0));                                  \
    c1h = _mm256_add_epi32(c1h, _mm256_madd_epi16(v, w1));                                  \
    v = _mm256_shuffle_epi32(x2, PAIR * 0x55);                                              \
    c2l = _mm256_add_epi32(c2l, _mm256_madd_epi16(v, w0));                                  \
    c2h = _mm256_add_epi32(c2h, _mm256_madd_epi16(v, w1));                                  \
    v = _mm256_shuffle_epi32(x3, PAIR * 0x55);                                              \
    c3l = _mm256_add_epi32(c3l, _mm256_madd_epi16(v, w0));                                  \
    c3h = _mm256_add_epi32(c3h, _mm256_madd_epi16(v, w1));                                  \
  } while (0)

void tether_qs8_gemm_minmax_ukernel_4x16c2__avx2(size_t mr, size_t nc, size_t kc,
                                                 const int8_t* a, size_t a_stride,
                                                 const void* w, int8_t* c, size_t c_stride,
                                                 const tether_qs8_params* params) {
  const int8_t* a0 = a;
  const int8_t* a1 = mr > 1 ? a0 + a_stride : a0;
  const int8_t* a2 = mr > 2 ? a1 + a_stride : a1;
  const int8_t* a3 = mr > 3 ? a2 + a_stride : a2;
  const int32_t* head = (const int32_t*)w;
  const __m256i bl = _mm256_loadu_si256((const __m256i*)head);
  const __m256i bh = _mm256_loadu_si256((const __m256i*)(head + 8));
  __m256i c0l = bl, c0h = bh, c1l = bl, c1h = bh, c2l = bl, c2h = bh, c3l = bl, c3h = bh;
  const int8_t* wk = (const int8_t*)(head + 64);
  size_t k = 0;
  for (; k + 8 <= kc; k += 8) {
    const __m256i x0 = row8(a0 + k, 8), x1 = row8(a1 + k, 8), x2 = row8(a2 + k, 8),
                  x3 = row8(a3 + k, 8);
    QS8_STEP(0);
    QS8_STEP(1);
    QS8_STEP(2);
    QS8_STEP(3);
  }
  if (k < kc) {
    const size_t t = kc - k;
    const __m256i x0 = row8(a0 + k, t), x1 = row8(a1 + k, t), x2 = row8(a2 + k, t),
                  x3 = row8(a3 + k, t);
    QS8_STEP(0);
    if (t > 2) QS8_STEP(1);
    if (t > 4) QS8_STEP(2);
    if (t > 6) QS8_STEP(3);
  }
  const __m256i yz = _mm256_set1_epi32(params->y_zero);
  const __m256i lo = _mm256_set1_epi32(params->lo), hi = _mm256_set1_epi32(params->hi);
  const __m256i acc[8] = {c0l, c0h, c1l, c1h, c2l, c2h, c3l, c3h};
  __m256i out[2];
  for (size_t i = 0; i < mr; i++) {
    for (size_t h = 0; h < 2; h++) {
      const __m256i mult = _mm256_loadu_si256((const __m256i*)(head + 16 + 8 * h));
      const __m256i left = _mm256_loadu_si256((const __m256i*)(head + 32 + 8 * h));
      const __m256i right = _mm256_loadu_si256((const __m256i*)(head + 48 + 8 * h));
      const __m256i q = params->single_rounding
                            ? tether_qs8_requant_single_avx2(acc[2 * i + h], mult, left, right)
                            : tether_qs8_requant_avx2(acc[2 * i + h], mult, left, right);
      __m256i v = _mm256_add_epi32(q, yz);
      out[h] = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
    }
    const __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(out[0], out[1]), 0xD8);
    const __m128i bytes = _mm_packs_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
    int8_t* ci = (int8_t*)c + i * c_stride;
    if (nc >= 16) {
      _mm_storeu_si128((__m128i*)ci, bytes);
    } else {
      int8_t tmp[16];
      _mm_storeu_si128((__m128i*)tmp, bytes);
      memcpy(ci, tmp, nc);
    }
  }
}
