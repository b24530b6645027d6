/*
 * ukernels.h — the micro-kernel layer's one header: kernel contracts, the packed-weight
 * layout, the window geometry and TFLite's fixed-point requantization arithmetic.
 *
 * The bottom of the engine's layers: a micro-kernel file (f32-gemm/, f32-dwconv/, qs8-gemm/,
 * qs8-dwconv/, qs8-vadd/, f32-qs8-vcvt/; one tile per file) includes this header, its own
 * folder's template and the ISA's intrinsics, nothing else. The kernel table, the GEMM
 * drivers and the packing routines that use these contracts live in compute/.
 *
 * Every optimized kernel has a __scalar twin with the same contract (and, for GEMM, the same
 * tile and packed layout), built on every target; tests/test_ukernels.c compares the two.
 *
 * Packed GEMM weights (tether_f32_gemm_pack): the N outputs are cut into panels of NR
 * columns (the last one zero-padded); each panel holds NR bias values, then K rows of NR
 * weights: panel p = [bias[p*NR .. p*NR+NR), w[k=0][NR], ..., w[k=K-1][NR]], so a panel is
 * (K + 1) * NR floats and the whole block ceil(N / NR) * (K + 1) * NR floats.
 */
#ifndef TETHER_UKERNELS_H_
#define TETHER_UKERNELS_H_

#include <stddef.h>
#include <stdint.h>

#include "tether/tether.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The window geometry of a convolution or pool, validated by the op's prepare. */
typedef struct tether_conv_geometry {
  size_t batch, in_h, in_w, in_c;
  size_t out_h, out_w, out_c;
  size_t kernel_h, kernel_w;
  size_t groups;            /* grouped convolution */
  size_t depth_multiplier;  /* depthwise convolution */
  ptrdiff_t stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left;
} tether_conv_geometry;

/* ---- TFLite's integer requantization arithmetic, bit for bit -------------------------- */

static inline int32_t tether_saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
  if (a == b && a == INT32_MIN) return INT32_MAX;
  const int64_t ab = (int64_t)a * (int64_t)b;
  const int64_t nudge = ab >= 0 ? (1ll << 30) : (1 - (1ll << 30));
  return (int32_t)((ab + nudge) / (1ll << 31));  /* C division truncates toward zero */
}

static inline int32_t tether_rounding_divide_by_pot(int32_t x, int32_t exponent) {
  const int32_t mask = (int32_t)((1ll << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  /* Arithmetic right shift of a negative value (implementation-defined in C, arithmetic on
   * every target this builds for; checked by the tests). */
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* TFLite MultiplyByQuantizedMultiplier: round(x * multiplier * 2^(shift - 31)). */
static inline int32_t tether_multiply_by_quantized_multiplier(int32_t x, int32_t multiplier,
                                                              int32_t shift) {
  const int32_t left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
  /* x * 2^left in int32 as TFLite does (callers keep it in range: left <= 31 - bits(x)). */
  const int32_t shifted = (int32_t)((uint32_t)x << left);
  return tether_rounding_divide_by_pot(
      tether_saturating_rounding_doubling_high_mul(shifted, multiplier), right);
}

/* The same with one rounding, (x * multiplier + 2^(30 - shift)) >> (31 - shift) in 64 bits:
 * TFLite's int8 FULLY_CONNECTED (its reference kernel rounds once where the convolutions
 * round twice; the two differ where the first rounding lands on a tie of the second). */
static inline int32_t tether_multiply_by_quantized_multiplier_single(int32_t x,
                                                                     int32_t multiplier,
                                                                     int32_t shift) {
  const int32_t total = 31 - shift;
  return (int32_t)(((int64_t)x * multiplier + ((int64_t)1 << (total - 1))) >> total);
}

/* Output clamp applied in kernel epilogues (fused NONE / RELU / RELU6 / RELU_N1_TO_1). */
typedef struct tether_f32_minmax {
  float min, max;
} tether_f32_minmax;

/*
 * C[mr x nc] = clamp(A[mr x kc] * W + bias) for one tile: mr <= MR rows of A (row i at
 * a + i * a_stride bytes), one packed panel `w` (NR bias + kc * NR weights), nc <= NR output
 * columns written (row i at c + i * c_stride bytes). Reads whole panels (NR wide) and never
 * writes past column nc.
 */
typedef void (*tether_f32_gemm_ukernel_fn)(size_t mr, size_t nc, size_t kc, const float* a,
                                           size_t a_stride, const float* w, float* c,
                                           size_t c_stride, const tether_f32_minmax* params);

#define TETHER_DECLARE_F32_GEMM(mr, nr, isa)                                                   \
  void tether_f32_gemm_minmax_ukernel_##mr##x##nr##__##isa(                                    \
      size_t mr_, size_t nc, size_t kc, const float* a, size_t a_stride, const float* w,       \
      float* c, size_t c_stride, const tether_f32_minmax* params)

TETHER_DECLARE_F32_GEMM(4, 8, scalar);
TETHER_DECLARE_F32_GEMM(6, 8, scalar);
TETHER_DECLARE_F32_GEMM(6, 16, scalar);
TETHER_DECLARE_F32_GEMM(8, 32, scalar);
TETHER_DECLARE_F32_GEMM(6, 16, avx2);
TETHER_DECLARE_F32_GEMM(8, 32, avx512);
TETHER_DECLARE_F32_GEMM(6, 8, neon);
TETHER_DECLARE_F32_GEMM(4, 8, neon);

/*
 * Depthwise convolution (depth multiplier 1, any kernel size, stride, dilation, padding) over
 * output rows [oh_begin, oh_end) of every batch item: weights [KH, KW, C] as in the model,
 * optional bias [C], clamp to params. The geometry is validated by the caller.
 */
typedef void (*tether_f32_dwconv_ukernel_fn)(const struct tether_conv_geometry* g,
                                             size_t oh_begin, size_t oh_end, const float* x,
                                             const float* w, const float* bias, float* y,
                                             const tether_f32_minmax* params);

#define TETHER_DECLARE_F32_DWCONV(tile, isa)                                                   \
  void tether_f32_dwconv2d_minmax_ukernel_##tile##__##isa(                                     \
      const struct tether_conv_geometry* g, size_t oh_begin, size_t oh_end, const float* x,    \
      const float* w, const float* bias, float* y, const tether_f32_minmax* params)

TETHER_DECLARE_F32_DWCONV(c1, scalar);
TETHER_DECLARE_F32_DWCONV(c16, avx512);
TETHER_DECLARE_F32_DWCONV(c8, avx2);
TETHER_DECLARE_F32_DWCONV(c4, neon);

/*
 * int8 (qs8) kernels: per-channel symmetric int8 weights, per-tensor asymmetric int8
 * activations, TFLite's fixed-point requantization (above) in the epilogue, bit for
 * bit: y = clamp(y_zero + MultiplyByQuantizedMultiplier(acc, M[c], shift[c]), lo, hi).
 *
 * Packed qs8 GEMM weights (tether_qs8_gemm_pack), for a kernel with tile NR and K-step KR:
 * the N outputs are cut into panels of NR channels (the last one zero-padded); a panel is
 *   int32 bias[NR]   bias[c] - (x_zero + (XOR ? 128 : 0)) * sum_k w[c][k]   (mod 2^32)
 *   int32 mult[NR]   Q0.31 multiplier M[c]
 *   int32 left[NR]   max(shift[c], 0)
 *   int32 right[NR]  max(-shift[c], 0)
 *   int8  w[ceil(K / KR)][NR][KR]   (k beyond K zero)
 * so 16 * NR + ceil(K / KR) * KR * NR bytes (tether_qs8_gemm_panel_bytes). The kernel sums
 * A (rows of int8; with XOR, rows of the unsigned bytes x ^ 0x80 = x + 128, for u8 x s8 dot
 * products such as VNNI's vpdpbusd, converted by tether_qs8_gemm or by the caller) times W
 * plus that bias, so the zero point costs nothing in the inner loop. Kernels read A rows
 * only up to K (tails handled).
 */
typedef struct tether_qs8_params {
  int32_t x_zero;  /* input zero point (depthwise; folded into the GEMM bias) */
  int32_t y_zero;  /* output zero point */
  int32_t lo, hi;  /* output clamp (fused activation), within [-128, 127] */
  /* GEMM only: 1 = one rounding of x * M (tether_multiply_by_quantized_multiplier_single,
   * TFLite's FULLY_CONNECTED), 0 = TFLite's two (its convolutions). */
  int32_t single_rounding;
} tether_qs8_params;

/* C[mr x nc] = requantize(A[mr x kc] * W + bias) for one panel; strides in bytes. */
typedef void (*tether_qs8_gemm_ukernel_fn)(size_t mr, size_t nc, size_t kc, const int8_t* a,
                                           size_t a_stride, const void* w, int8_t* c,
                                           size_t c_stride, const tether_qs8_params* params);

#define TETHER_DECLARE_QS8_GEMM(mr, nr, kr, isa)                                               \
  void tether_qs8_gemm_minmax_ukernel_##mr##x##nr##c##kr##__##isa(                             \
      size_t mr_, size_t nc, size_t kc, const int8_t* a, size_t a_stride, const void* w,      \
      int8_t* c, size_t c_stride, const tether_qs8_params* params)

TETHER_DECLARE_QS8_GEMM(4, 8, 1, scalar);
TETHER_DECLARE_QS8_GEMM(4, 16, 2, scalar);
TETHER_DECLARE_QS8_GEMM(8, 16, 4, scalar_u8);
TETHER_DECLARE_QS8_GEMM(4, 16, 4, scalar);
TETHER_DECLARE_QS8_GEMM(4, 16, 2, avx2);
TETHER_DECLARE_QS8_GEMM(8, 16, 4, avx512vnni);
TETHER_DECLARE_QS8_GEMM(4, 8, 1, neon);
TETHER_DECLARE_QS8_GEMM(4, 16, 4, neondot);

/*
 * Packed qs8 depthwise weights (depth multiplier 1; tether_qs8_dwconv_pack), C channels,
 * T = KH * KW taps: int32 bias[C], mult[C], left[C], right[C], then int32 w[T][C] with each
 * weight stored as (uint16_t)w, i.e. sign bits cleared, so that a 16-bit multiply-add of
 * (x - x_zero) and the word gives the exact product (used at the edges, taps in the padding
 * skipped); then, for windows wholly inside the input, int32 bias_in[C] = bias - x_zero *
 * sum_t w[t] (mod 2^32) and int16 tap pairs: per block of 16 channels (the last zero-padded),
 * per pair p of taps (2p, 2p + 1; a missing odd tap has weight 0), 32 int16 in the order of
 * 16-bit unpacklo / unpackhi on 128-bit lanes: channels 0-3 | 8-11, then 4-7 | 12-15, each
 * as (w[2p][c], w[2p + 1][c]). tether_qs8_dwconv_packed_bytes gives the size.
 * Output rows [oh_begin, oh_end).
 */
typedef void (*tether_qs8_dwconv_ukernel_fn)(const struct tether_conv_geometry* g,
                                             size_t oh_begin, size_t oh_end, const int8_t* x,
                                             const int32_t* w, int8_t* y,
                                             const tether_qs8_params* params);

#define TETHER_DECLARE_QS8_DWCONV(tile, isa)                                                   \
  void tether_qs8_dwconv2d_minmax_ukernel_##tile##__##isa(                                     \
      const struct tether_conv_geometry* g, size_t oh_begin, size_t oh_end, const int8_t* x,   \
      const int32_t* w, int8_t* y, const tether_qs8_params* params)

TETHER_DECLARE_QS8_DWCONV(c1, scalar);
TETHER_DECLARE_QS8_DWCONV(c8, avx2);
TETHER_DECLARE_QS8_DWCONV(c16, avx512);
TETHER_DECLARE_QS8_DWCONV(c8, neon);

/*
 * int8 ADD / SUB of two same-shape tensors, TFLite's arithmetic (ops/binary.c):
 *   y = clamp(y_zero + MBQM(MBQM((a - a_zero) << 20, a_mult) + MBQM((b - b_zero) << 20,
 *             b_mult), y_mult), lo, hi)
 * with each MBQM as a multiplier and left / right shifts (SUB negates b_mult).
 */
typedef struct tether_qs8_add_params {
  int32_t a_zero, b_zero, y_zero, lo, hi;
  int32_t a_mult, a_left, a_right;
  int32_t b_mult, b_left, b_right;
  int32_t y_mult, y_left, y_right;
} tether_qs8_add_params;

typedef void (*tether_qs8_vadd_ukernel_fn)(size_t n, const int8_t* a, const int8_t* b,
                                           int8_t* y, const tether_qs8_add_params* params);

#define TETHER_DECLARE_QS8_VADD(isa)                                                           \
  void tether_qs8_vadd_minmax_ukernel__##isa(size_t n, const int8_t* a, const int8_t* b,      \
                                             int8_t* y, const tether_qs8_add_params* params)

TETHER_DECLARE_QS8_VADD(scalar);
TETHER_DECLARE_QS8_VADD(avx2);
TETHER_DECLARE_QS8_VADD(avx512);
TETHER_DECLARE_QS8_VADD(neon);

/* float32 to int8 (QUANTIZE): y = clamp(round(x / scale) + zero, -128, 127), TFLite's
 * AffineQuantize (round half away from zero, in float); NaN gives zero. */
typedef void (*tether_f32_qs8_vcvt_ukernel_fn)(size_t n, const float* x, int8_t* y,
                                               float scale, int32_t zero);
void tether_f32_qs8_vcvt_ukernel__scalar(size_t n, const float* x, int8_t* y, float scale,
                                         int32_t zero);
void tether_f32_qs8_vcvt_ukernel__avx512(size_t n, const float* x, int8_t* y, float scale,
                                         int32_t zero);

/* The taps [*begin, *end) of a window of k taps starting at input coordinate `origin`, spaced
 * `dilation` (>= 1) apart, that fall inside [0, limit); *begin == *end when none does. O(1)
 * in k (a pool's kernel is an attribute, any int32), in int64 so 32-bit targets cannot
 * overflow. */
static inline void tether_window_taps(ptrdiff_t origin, size_t k, ptrdiff_t dilation,
                                      ptrdiff_t limit, size_t* begin, size_t* end) {
  const int64_t o = (int64_t)origin, d = (int64_t)dilation, n = (int64_t)k;
  int64_t b, e;
  if (d == 1) {  /* no division (it costs more than the copy of a small window) */
    b = o < 0 ? -o : 0;
    e = o < (int64_t)limit ? (int64_t)limit - o : 0;
  } else {
    b = o < 0 ? (-o + d - 1) / d : 0;                  /* first tap at or after 0 */
    e = o < (int64_t)limit ? ((int64_t)limit - 1 - o) / d + 1 : 0;  /* taps before limit */
  }
  if (b > n) b = n;
  if (e > n) e = n;
  if (e < b) e = b;
  *begin = (size_t)b;
  *end = (size_t)e;
}

/* The int8 depthwise kernels' interior path (windows wholly inside the input, taps paired):
 * at most this many taps, whose byte offsets from the window's corner fill off[0 .. taps]
 * (the odd last one repeated, so that pairs read a valid address). */
#define TETHER_QS8_DW_MAX_TAPS 64

static inline void tether_qs8_dw_tap_offsets(const tether_conv_geometry* g, ptrdiff_t* off) {
  const size_t taps = g->kernel_h * g->kernel_w;
  for (size_t kh = 0; kh < g->kernel_h; kh++) {
    for (size_t kw = 0; kw < g->kernel_w; kw++) {
      off[kh * g->kernel_w + kw] = ((ptrdiff_t)kh * g->dilation_h * (ptrdiff_t)g->in_w +
                                    (ptrdiff_t)kw * g->dilation_w) * (ptrdiff_t)g->in_c;
    }
  }
  off[taps] = off[taps - 1];
}

/* The output columns [*lo, *hi) of a row whose window rows all lie inside the input that have
 * their whole window inside it too (empty: *lo == *hi): any window op's geometry (the
 * depthwise kernels' interior paths, im2col's runs). */
static inline void tether_window_inside_columns(const tether_conv_geometry* g, size_t* lo,
                                                size_t* hi) {
  const ptrdiff_t last = (ptrdiff_t)g->in_w - 1 - (ptrdiff_t)(g->kernel_w - 1) * g->dilation_w +
                         g->pad_left;
  size_t l = g->pad_left <= 0 ? 0 : (size_t)((g->pad_left + g->stride_w - 1) / g->stride_w);
  size_t h = last < 0 ? 0 : (size_t)(last / g->stride_w) + 1;
  if (h > g->out_w) h = g->out_w;
  if (l > h) l = h;
  *lo = l;
  *hi = h;
}

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* TETHER_UKERNELS_H_ */
