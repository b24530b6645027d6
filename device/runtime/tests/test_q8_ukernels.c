/*
 * test_q8_ukernels.c — every optimized int8 (qs8) micro-kernel this CPU can run against its
 * __scalar twin (same tile, same packed weights), and the twins against a direct statement of
 * TFLite's int8 arithmetic (acc = bias + sum w * (x - z_x), y = clamp(z_y + MBQM(acc))), bit
 * for bit: prime and odd M / N / K, K off the kernel's K-step, zero points at -128 and 127,
 * per-channel scales with left and right shifts, padding edges, sentinels around outputs and
 * unused bytes between rows. The GEMM over a thread pool and the depthwise row split must
 * equal the serial result exactly for 1, 2 and 3 threads. ADD / SUB (vadd) likewise. Then
 * whole int8 CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED ops through the engine: every
 * ISA with 1-3 threads must give the bytes of the scalar kernels.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "tether/tether.h"
#include "tmodel_builder.h"
#include "ukernels.h"

#define SENTINEL ((int8_t)0x5A)
#define GUARD 32

static int8_t* random_bytes(size_t n, int lo, int hi) {
  int8_t* p = (int8_t*)malloc(n + TETHER_EXTRA_BYTES);
  for (size_t i = 0; i < n + TETHER_EXTRA_BYTES; i++) p[i] = (int8_t)tb_range(lo, hi);
  return p;
}

static int32_t pick_zero(void) {
  switch (tb_range(0, 3)) {
    case 0: return -128;
    case 1: return 127;
    default: return tb_range(-128, 127);
  }
}

/* Per-channel multipliers and shifts from random real scales, some above 1 (left shifts). */
static void random_scales(size_t n, int32_t* mult, int32_t* shift) {
  for (size_t c = 0; c < n; c++) {
    const double real = tb_range(0, 4) == 0 ? (double)tb_uniform(1.0f, 8.0f)
                                            : (double)tb_uniform(1e-5f, 1.0f);
    tether_quantize_multiplier(real, &mult[c], &shift[c]);
  }
}

static void random_params(tether_qs8_params* p) {
  p->x_zero = pick_zero();
  p->y_zero = pick_zero();
  p->lo = -128;
  p->hi = 127;
  p->single_rounding = 0;
  if (tb_range(0, 2) == 0) {
    p->lo = tb_range(-128, 0);
    p->hi = tb_range(p->lo, 127);
  }
}

static int8_t reference_output(int64_t acc64, int32_t mult, int32_t shift,
                               const tether_qs8_params* p) {
  const int32_t acc = (int32_t)(uint32_t)(uint64_t)acc64;
  int32_t v = (p->single_rounding ? tether_multiply_by_quantized_multiplier_single(acc, mult, shift)
                                  : tether_multiply_by_quantized_multiplier(acc, mult, shift)) +
              p->y_zero;
  v = v < p->lo ? p->lo : v;
  return (int8_t)(v > p->hi ? p->hi : v);
}

static void compare(const char* what, const int8_t* got, const int8_t* want, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (got[i] != want[i]) {
      TB_CHECK(0, "%s: byte %zu is %d, expected %d", what, i, got[i], want[i]);
      return;
    }
  }
}

/* Requantization at its edges, through the GEMM (K = 1, weight 1, x_zero 0, so each output
 * is requantize(bias[j] + a[i])), in both rounding modes: multipliers 2^30 (exact ties),
 * 2^30 + 1, 2^31 - 1 and random; right shifts 0-31 and left shifts; accumulators on and
 * beside the ties and near +-2^31. Every byte must equal the scalar statement's
 * (tether_multiply_by_quantized_multiplier, or its _single form). */
static void test_requant_edges(const tether_kernels* kt) {
  enum { N = 16, M = 8 };
  static const int32_t kMult[] = {1 << 30, (1 << 30) + 1, 0x7FFFFFFF, 0};
  int8_t a[M], w[N], c[M * N], ref[M * N];
  int32_t bias[N], mult[N], shift[N];
  for (size_t j = 0; j < N; j++) w[j] = 1;
  const size_t pb = tether_qs8_gemm_packed_bytes(kt->qs8_gemm_nr, kt->qs8_gemm_kr, N, 1);
  void* packed = malloc(pb + TETHER_EXTRA_BYTES);
  for (int trial = 0; trial < 400; trial++) {
    tether_qs8_params p = {0, (int32_t)tb_range(-20, 20), -128, 127, trial % 2};
    const int big = trial % 5 == 4;  /* accumulators near +-2^31 */
    for (size_t j = 0; j < N; j++) {
      mult[j] = kMult[tb_range(0, 3)];
      if (mult[j] == 0) mult[j] = (int32_t)((1u << 30) + (uint32_t)tb_range(0, 0x3FFFFFFF));
      if (big) {
        shift[j] = -tb_range(23, 31);
        bias[j] = (int32_t)(tb_range(0, 1) ? 0x7FFFFFFF - tb_range(0, 200)
                                          : -0x7FFFFFFF + tb_range(0, 200));
      } else {
        shift[j] = tb_range(0, 5) == 0 ? tb_range(1, 2) : -tb_range(0, 20);
        /* An odd multiple of 2^r (a tie when M = 2^30), 100 at most after scaling. */
        const int32_t r = shift[j] < 0 ? -shift[j] : 0, l = shift[j] > 0 ? shift[j] : 0;
        const int64_t tie =
            (2 * (int64_t)tb_range(-100, 100) + 1) * ((int64_t)1 << r) / ((int64_t)1 << l);
        bias[j] = (int32_t)(tie - 3);
      }
    }
    for (size_t i = 0; i < M; i++) a[i] = (int8_t)i;  /* tie - 3 .. tie + 4 */
    tether_qs8_gemm_pack(kt->qs8_gemm_nr, kt->qs8_gemm_kr, kt->qs8_gemm_xor, N, 1, w, bias,
                         mult, shift, 0, packed);
    for (size_t i = 0; i < M; i++) {
      for (size_t j = 0; j < N; j++) {
        ref[i * N + j] = reference_output((int64_t)bias[j] + a[i], mult[j], shift[j], &p);
      }
    }
    memset(c, SENTINEL, sizeof(c));
    tether_qs8_gemm(kt, 0, M, N, 1, a, 1, 0, packed, c, N, &p);
    char what[96];
    snprintf(what, sizeof(what), "qs8 requant edges %s trial %d (y_zero %d, %s rounding)",
             kt->isa, trial, (int)p.y_zero, p.single_rounding ? "single" : "double");
    compare(what, c, ref, sizeof(c));
  }
  free(packed);
}

static void test_gemm(const tether_kernels* kt, struct tether_pool** pools) {
  static const size_t kN[] = {1, 2, 3, 7, 8, 13, 16, 17, 31, 33, 67};
  static const size_t kK[] = {1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 27, 67, 131};
  tether_kernels twin = *kt;
  twin.qs8_gemm = kt->qs8_gemm_twin;
  for (size_t ni = 0; ni < sizeof(kN) / sizeof(kN[0]); ni++) {
    for (size_t ki = 0; ki < sizeof(kK) / sizeof(kK[0]); ki++) {
      const size_t n = kN[ni], k = kK[ki];
      const size_t m = (size_t)tb_range(1, (int)(3 * kt->qs8_gemm_mr + 2));
      const size_t a_stride = k + (size_t)tb_range(0, 3), c_stride = n + (size_t)tb_range(0, 3);
      tether_qs8_params p;
      random_params(&p);
      p.single_rounding = tb_range(0, 1);  /* FULLY_CONNECTED's one rounding, or two */
      int8_t* a = random_bytes(m * a_stride, -128, 127);
      int8_t* w = random_bytes(n * k, -127, 127);
      int32_t* bias = (int32_t*)malloc(n * sizeof(int32_t));
      int32_t* mult = (int32_t*)malloc(n * sizeof(int32_t));
      int32_t* shift = (int32_t*)malloc(n * sizeof(int32_t));
      for (size_t c = 0; c < n; c++) bias[c] = tb_range(-100000, 100000);
      random_scales(n, mult, shift);
      const int with_bias = (ni & 1) == 0;
      const size_t pb = tether_qs8_gemm_packed_bytes(kt->qs8_gemm_nr, kt->qs8_gemm_kr, n, k);
      void* packed = malloc(pb + TETHER_EXTRA_BYTES);
      tether_qs8_gemm_pack(kt->qs8_gemm_nr, kt->qs8_gemm_kr, kt->qs8_gemm_xor, n, k, w,
                           with_bias ? bias : NULL, mult, shift, p.x_zero, packed);
      const size_t cn = m * c_stride + 2 * GUARD;
      int8_t* c1 = (int8_t*)malloc(cn);
      int8_t* c2 = (int8_t*)malloc(cn);
      int8_t* ref = (int8_t*)malloc(cn);
      memset(c1, SENTINEL, cn);
      memset(c2, SENTINEL, cn);
      memset(ref, SENTINEL, cn);
      for (size_t i = 0; i < m; i++) {
        for (size_t j = 0; j < n; j++) {
          int64_t acc = with_bias ? bias[j] : 0;
          for (size_t kk = 0; kk < k; kk++) {
            acc += (int64_t)w[j * k + kk] * ((int64_t)a[i * a_stride + kk] - p.x_zero);
          }
          ref[GUARD + i * c_stride + j] = reference_output(acc, mult[j], shift[j], &p);
        }
      }
      tether_qs8_gemm(kt, 0, m, n, k, a, a_stride, 0, packed, c1 + GUARD, c_stride, &p);
      tether_qs8_gemm(&twin, 0, m, n, k, a, a_stride, 0, packed, c2 + GUARD, c_stride, &p);
      char what[160];
      snprintf(what, sizeof(what), "qs8 gemm %s %zux%zuc%zu m%zu n%zu k%zu zx%d zy%d [%d,%d]%s",
               kt->isa, kt->qs8_gemm_mr, kt->qs8_gemm_nr, kt->qs8_gemm_kr, m, n, k,
               (int)p.x_zero, (int)p.y_zero, (int)p.lo, (int)p.hi,
               p.single_rounding ? " single rounding" : "");
      compare(what, c2, ref, cn);  /* twin vs the arithmetic itself */
      compare(what, c1, c2, cn);   /* optimized vs twin */
      /* Rows [0, s) then [s, m) equal the whole; so does any thread count. */
      const size_t split = (size_t)tb_range(0, (int)m);
      memset(c2, SENTINEL, cn);
      tether_qs8_gemm(kt, 0, split, n, k, a, a_stride, 0, packed, c2 + GUARD, c_stride, &p);
      tether_qs8_gemm(kt, split, m, n, k, a, a_stride, 0, packed, c2 + GUARD, c_stride, &p);
      compare(what, c2, c1, cn);
      if (kt->qs8_gemm_xor) {  /* A handed over already as u8 x ^ 0x80 */
        int8_t* au = (int8_t*)malloc(m * a_stride + TETHER_EXTRA_BYTES);
        for (size_t i = 0; i < m * a_stride; i++) au[i] = (int8_t)((uint8_t)a[i] ^ 0x80u);
        memset(c2, SENTINEL, cn);
        tether_qs8_gemm(kt, 0, m, n, k, au, a_stride, 1, packed, c2 + GUARD, c_stride, &p);
        compare(what, c2, c1, cn);
        free(au);
      }
      for (size_t t = 0; t < 3; t++) {
        memset(c2, SENTINEL, cn);
        tether_qs8_gemm_parallel(pools[t], kt, m, n, k, a, a_stride, 0, packed, c2 + GUARD,
                                 c_stride, &p);
        compare(what, c2, c1, cn);
      }
      free(a);
      free(w);
      free(bias);
      free(mult);
      free(shift);
      free(packed);
      free(c1);
      free(c2);
      free(ref);
    }
  }
}

typedef struct dw_case {
  const tether_kernels* kt;
  const tether_conv_geometry* g;
  const int8_t* x;
  const int32_t* w;
  int8_t* y;
  const tether_qs8_params* p;
} dw_case;

static void dw_row_task(void* context, size_t row) {
  const dw_case* d = (const dw_case*)context;
  d->kt->qs8_dwconv(d->g, row, row + 1, d->x, d->w, d->y, d->p);
}

static void test_dwconv(const tether_kernels* kt, struct tether_pool** pools) {
  static const size_t kC[] = {1, 3, 8, 15, 16, 17, 24, 33, 40, 64, 72};
  static const size_t kKernel[][2] = {{3, 3}, {3, 3}, {5, 5}, {7, 7}, {1, 1}, {2, 3}};
  for (size_t ci = 0; ci < sizeof(kC) / sizeof(kC[0]); ci++) {
    for (size_t kk = 0; kk < sizeof(kKernel) / sizeof(kKernel[0]); kk++) {
      tether_conv_geometry g;
      memset(&g, 0, sizeof(g));
      g.batch = (size_t)tb_range(1, 2);
      g.in_h = (size_t)tb_range(1, 9);
      g.in_w = (size_t)tb_range(1, 11);
      g.in_c = g.out_c = kC[ci];
      g.kernel_h = kKernel[kk][0];
      g.kernel_w = kKernel[kk][1];
      g.groups = 1;
      g.depth_multiplier = 1;
      g.stride_h = tb_range(1, 2);
      g.stride_w = tb_range(1, 2);
      g.dilation_h = tb_range(0, 3) == 0 ? 2 : 1;
      g.dilation_w = tb_range(0, 3) == 0 ? 2 : 1;
      const ptrdiff_t eff_h = (ptrdiff_t)(g.kernel_h - 1) * g.dilation_h + 1;
      const ptrdiff_t eff_w = (ptrdiff_t)(g.kernel_w - 1) * g.dilation_w + 1;
      /* SAME-like padding (or more) so every output has some taps in the input. */
      g.pad_top = tb_range(0, (int)(eff_h - 1));
      g.pad_left = tb_range(0, (int)(eff_w - 1));
      const ptrdiff_t pad_bottom = tb_range(0, (int)(eff_h - 1));
      const ptrdiff_t pad_right = tb_range(0, (int)(eff_w - 1));
      const ptrdiff_t span_h = (ptrdiff_t)g.in_h + g.pad_top + pad_bottom - eff_h;
      const ptrdiff_t span_w = (ptrdiff_t)g.in_w + g.pad_left + pad_right - eff_w;
      if (span_h < 0 || span_w < 0) continue;
      g.out_h = (size_t)(span_h / g.stride_h + 1);
      g.out_w = (size_t)(span_w / g.stride_w + 1);
      tether_qs8_params p;
      random_params(&p);
      const size_t taps = g.kernel_h * g.kernel_w, c = g.in_c;
      int8_t* x = random_bytes(g.batch * g.in_h * g.in_w * c, -128, 127);
      int8_t* w = random_bytes(taps * c, -128, 127);  /* -128 too: the product still fits */
      int32_t* bias = (int32_t*)malloc(c * sizeof(int32_t));
      int32_t* mult = (int32_t*)malloc(c * sizeof(int32_t));
      int32_t* shift = (int32_t*)malloc(c * sizeof(int32_t));
      for (size_t i = 0; i < c; i++) bias[i] = tb_range(-100000, 100000);
      random_scales(c, mult, shift);
      int32_t* packed = (int32_t*)malloc(tether_qs8_dwconv_packed_bytes(c, taps) + TETHER_EXTRA_BYTES);
      tether_qs8_dwconv_pack(c, taps, w, (kk & 1) ? NULL : bias, mult, shift, p.x_zero, packed);
      const size_t yn = g.batch * g.out_h * g.out_w * c;
      int8_t* y1 = (int8_t*)malloc(yn + 2 * GUARD);
      int8_t* y2 = (int8_t*)malloc(yn + 2 * GUARD);
      int8_t* ref = (int8_t*)malloc(yn + 2 * GUARD);
      memset(y1, SENTINEL, yn + 2 * GUARD);
      memset(y2, SENTINEL, yn + 2 * GUARD);
      memset(ref, SENTINEL, yn + 2 * GUARD);
      for (size_t n = 0; n < g.batch; n++) {
        for (size_t oh = 0; oh < g.out_h; oh++) {
          for (size_t ow = 0; ow < g.out_w; ow++) {
            for (size_t o = 0; o < c; o++) {
              int64_t acc = (kk & 1) ? 0 : bias[o];
              for (size_t kh = 0; kh < g.kernel_h; kh++) {
                const ptrdiff_t ih = (ptrdiff_t)oh * g.stride_h + (ptrdiff_t)kh * g.dilation_h - g.pad_top;
                if (ih < 0 || ih >= (ptrdiff_t)g.in_h) continue;
                for (size_t kw = 0; kw < g.kernel_w; kw++) {
                  const ptrdiff_t iw = (ptrdiff_t)ow * g.stride_w + (ptrdiff_t)kw * g.dilation_w - g.pad_left;
                  if (iw < 0 || iw >= (ptrdiff_t)g.in_w) continue;
                  const int8_t xv = x[((n * g.in_h + (size_t)ih) * g.in_w + (size_t)iw) * c + o];
                  acc += (int64_t)w[(kh * g.kernel_w + kw) * c + o] * ((int64_t)xv - p.x_zero);
                }
              }
              ref[GUARD + ((n * g.out_h + oh) * g.out_w + ow) * c + o] =
                  reference_output(acc, mult[o], shift[o], &p);
            }
          }
        }
      }
      kt->qs8_dwconv(&g, 0, g.out_h, x, packed, y1 + GUARD, &p);
      tether_qs8_dwconv2d_minmax_ukernel_c1__scalar(&g, 0, g.out_h, x, packed, y2 + GUARD, &p);
      char what[200];
      snprintf(what, sizeof(what),
               "qs8 dwconv %s n%zu %zux%zux%zu k%zux%zu s%dx%d d%dx%d pad %d,%d zx%d zy%d",
               kt->isa, g.batch, g.in_h, g.in_w, c, g.kernel_h, g.kernel_w, (int)g.stride_h,
               (int)g.stride_w, (int)g.dilation_h, (int)g.dilation_w, (int)g.pad_top,
               (int)g.pad_left, (int)p.x_zero, (int)p.y_zero);
      compare(what, y2, ref, yn + 2 * GUARD);
      compare(what, y1, y2, yn + 2 * GUARD);
      for (size_t t = 0; t < 3; t++) {  /* one task per output row, any thread count */
        memset(y2, SENTINEL, yn + 2 * GUARD);
        dw_case d = {kt, &g, x, packed, y2 + GUARD, &p};
        tether_parallelize(pools[t], dw_row_task, &d, g.out_h);
        compare(what, y2, y1, yn + 2 * GUARD);
      }
      free(x);
      free(w);
      free(bias);
      free(mult);
      free(shift);
      free(packed);
      free(y1);
      free(y2);
      free(ref);
    }
  }
}

/* ADD / SUB of same-shape tensors: kernel vs scalar twin vs TFLite's Add written out. */
static void test_vadd(const tether_kernels* kt) {
  static const size_t kCount[] = {1, 5, 8, 15, 16, 17, 33, 100, 257};
  for (size_t ci = 0; ci < sizeof(kCount) / sizeof(kCount[0]); ci++) {
    const size_t n = kCount[ci];
    int8_t* a = random_bytes(n, -128, 127);
    int8_t* b = random_bytes(n, -128, 127);
    /* TFLite's Add: twice the larger input scale, inputs rescaled by s / (2 * max), the
     * sum by 2 * max / (2^20 * s_y); SUB negates input 2's multiplier. */
    const double sa = tb_uniform(0.001f, 0.1f), sb = tb_uniform(0.001f, 0.1f);
    const double sy = tb_uniform(0.002f, 0.3f), twice = 2.0 * (sa > sb ? sa : sb);
    int32_t words[6];
    tether_quantize_multiplier(sa / twice, &words[0], &words[1]);
    tether_quantize_multiplier(sb / twice, &words[2], &words[3]);
    tether_quantize_multiplier(twice / ((double)(1 << 20) * sy), &words[4], &words[5]);
    if (ci & 1) words[2] = -words[2];
    tether_qs8_add_params p = {pick_zero(), pick_zero(), pick_zero(), -128, 127,
                               words[0], 0, 0, words[2], 0, 0, words[4], 0, 0};
    if (tb_range(0, 2) == 0) {
      p.lo = tb_range(-128, 0);
      p.hi = tb_range(p.lo, 127);
    }
    int32_t* sh[3][2] = {{&p.a_left, &p.a_right}, {&p.b_left, &p.b_right}, {&p.y_left, &p.y_right}};
    for (int i = 0; i < 3; i++) {
      const int32_t s = words[2 * i + 1];
      *sh[i][0] = s > 0 ? s : 0;
      *sh[i][1] = s > 0 ? 0 : -s;
    }
    int8_t* y1 = (int8_t*)malloc(n + 2 * GUARD);
    int8_t* y2 = (int8_t*)malloc(n + 2 * GUARD);
    int8_t* ref = (int8_t*)malloc(n + 2 * GUARD);
    memset(y1, SENTINEL, n + 2 * GUARD);
    memset(y2, SENTINEL, n + 2 * GUARD);
    memset(ref, SENTINEL, n + 2 * GUARD);
    for (size_t i = 0; i < n; i++) {
      const int32_t va = ((int32_t)a[i] - p.a_zero) * (1 << 20);
      const int32_t vb = ((int32_t)b[i] - p.b_zero) * (1 << 20);
      const int32_t sum = tether_multiply_by_quantized_multiplier(va, words[0], words[1]) +
                          tether_multiply_by_quantized_multiplier(vb, words[2], words[3]);
      int32_t v = tether_multiply_by_quantized_multiplier(sum, words[4], words[5]) + p.y_zero;
      v = v < p.lo ? p.lo : v > p.hi ? p.hi : v;
      ref[GUARD + i] = (int8_t)v;
    }
    kt->qs8_vadd(n, a, b, y1 + GUARD, &p);
    tether_qs8_vadd_minmax_ukernel__scalar(n, a, b, y2 + GUARD, &p);
    char what[128];
    snprintf(what, sizeof(what), "qs8 vadd %s n%zu za%d zb%d zy%d%s", kt->isa, n, (int)p.a_zero,
             (int)p.b_zero, (int)p.y_zero, (ci & 1) ? " (sub)" : "");
    compare(what, y2, ref, n + 2 * GUARD);
    compare(what, y1, y2, n + 2 * GUARD);
    free(a);
    free(b);
    free(y1);
    free(y2);
    free(ref);
  }
}

/* QUANTIZE (float32 -> int8): kernel vs scalar twin vs roundf written out, with exact
 * halves, NaN, infinities and values far out of range. */
static void test_vcvt(const tether_kernels* kt) {
  static const size_t kCount[] = {1, 7, 16, 17, 100, 333};
  for (size_t ci = 0; ci < sizeof(kCount) / sizeof(kCount[0]); ci++) {
    const size_t n = kCount[ci];
    const float scale = tb_range(0, 3) == 0 ? 1e-30f : tb_uniform(0.001f, 0.5f);
    const int32_t zero = pick_zero();
    float* x = (float*)malloc((n + 16) * sizeof(float));
    for (size_t i = 0; i < n + 16; i++) {
      switch (tb_range(0, 5)) {
        case 0: x[i] = ((float)tb_range(-300, 300) + 0.5f) * scale; break;  /* exact halves */
        case 1: x[i] = tb_uniform(-1e6f, 1e6f); break;
        default: x[i] = tb_uniform(-40.0f, 40.0f) * scale; break;
      }
    }
    x[0] = n > 3 ? NAN : x[0];
    if (n > 5) {
      x[1] = INFINITY;
      x[2] = -INFINITY;
      x[3] = -0.0f;
    }
    int8_t* y1 = (int8_t*)malloc(n + 2 * GUARD);
    int8_t* y2 = (int8_t*)malloc(n + 2 * GUARD);
    int8_t* ref = (int8_t*)malloc(n + 2 * GUARD);
    memset(y1, SENTINEL, n + 2 * GUARD);
    memset(y2, SENTINEL, n + 2 * GUARD);
    memset(ref, SENTINEL, n + 2 * GUARD);
    for (size_t i = 0; i < n; i++) {
      const float r = roundf(x[i] / scale);
      const float c = r != r ? 0.0f : r < -1e6f ? -1e6f : r > 1e6f ? 1e6f : r;
      const int32_t v = (int32_t)c + zero;
      ref[GUARD + i] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
    }
    kt->qs8_quantize(n, x, y1 + GUARD, scale, zero);
    tether_f32_qs8_vcvt_ukernel__scalar(n, x, y2 + GUARD, scale, zero);
    char what[96];
    snprintf(what, sizeof(what), "f32->qs8 %s n%zu scale %g zero %d", kt->isa, n, (double)scale,
             (int)zero);
    compare(what, y2, ref, n + 2 * GUARD);
    compare(what, y1, y2, n + 2 * GUARD);
    free(x);
    free(y1);
    free(y2);
    free(ref);
  }
}

/* Loads the model under `isa`, runs it once with `threads` and copies output 0 out. */
static void run_model(const uint8_t* file, size_t size, const char* isa, uint32_t threads,
                      const int8_t* x, size_t nx, int8_t* y, size_t ny, const char* what) {
  TB_CHECK(tether_set_isa(isa) == TETHER_STATUS_SUCCESS, "%s: isa %s", what, isa);
  tether_model_t model = NULL;
  tether_session_t session = NULL;
  memset(y, SENTINEL, ny);
  if (tether_model_load(file, size, NULL, &model) != TETHER_STATUS_SUCCESS ||
      tether_session_create(model, NULL, 0, threads, &session) != TETHER_STATUS_SUCCESS ||
      tether_session_set_input(session, 0, x, nx) != TETHER_STATUS_SUCCESS ||
      tether_session_invoke(session) != TETHER_STATUS_SUCCESS ||
      tether_session_get_output(session, 0, y, ny) != TETHER_STATUS_SUCCESS) {
    TB_CHECK(0, "%s: isa %s threads %u: %s", what, isa, threads, tether_last_error());
  }
  tether_session_destroy(session);
  tether_model_destroy(model);
}

/*
 * Whole int8 ops through the engine (packing, im2col, the u8 conversion of long rows, the
 * thread split): every ISA and 1-3 threads give the bytes the scalar kernels give.
 */
static void test_ops_through_engine(void) {
  typedef struct { int kind, h, w, c, oc, k, s, pad; } op_case;
  static const op_case kCases[] = {
      {0, 13, 11, 24, 40, 3, 2, 1},   /* 3x3 stride 2: im2col */
      {0, 9, 7, 3, 33, 3, 1, 1},      /* K = 27, off the K-step */
      {0, 17, 15, 24, 37, 1, 1, 0},   /* 1x1: the input is A */
      {0, 3, 3, 2100, 20, 1, 1, 0},   /* 1x1 with rows longer than the driver's block */
      {1, 19, 17, 40, 40, 3, 1, 1},   /* depthwise 3x3 */
      {1, 14, 13, 33, 33, 5, 2, 2},   /* depthwise 5x5 stride 2 */
      {2, 1, 1, 2500, 19, 1, 1, 0},   /* fully connected, long rows */
  };
  static const char* const kIsas[] = {"avx2", "avx512", "neon"};
  for (size_t ci = 0; ci < sizeof(kCases) / sizeof(kCases[0]); ci++) {
    const op_case* oc = &kCases[ci];
    const int dw = oc->kind == 1, fc = oc->kind == 2;
    const int oh = fc ? 1 : (oc->h + 2 * oc->pad - oc->k) / oc->s + 1;
    const int ow = fc ? 1 : (oc->w + 2 * oc->pad - oc->k) / oc->s + 1;
    const int wn = fc ? oc->oc * oc->c : dw ? oc->k * oc->k * oc->oc : oc->oc * oc->k * oc->k * oc->c;
    int8_t* wd = random_bytes((size_t)wn, -127, 127);
    float* ws = (float*)malloc((size_t)oc->oc * sizeof(float));
    int32_t* bias = (int32_t*)malloc((size_t)oc->oc * sizeof(int32_t));
    for (int i = 0; i < oc->oc; i++) {
      ws[i] = tb_uniform(0.0005f, 0.01f);
      bias[i] = tb_range(-5000, 5000);
    }
    const float sx = 0.02f, sy = 0.05f;
    const int32_t zx = pick_zero(), zy = tb_range(-10, 10);
    const size_t nx = (size_t)oc->h * oc->w * oc->c, ny = (size_t)oh * ow * oc->oc;
    int8_t* x = random_bytes(nx, -128, 127);
    tb_builder* b = tb_new();
    uint32_t xt = fc ? tb_tensor_typed(b, "x", 1, 2, (const int32_t[]){1, oc->c}, NULL)
                     : tb_tensor_typed(b, "x", 1, 4, (const int32_t[]){1, oc->h, oc->w, oc->c}, NULL);
    tb_quantize(b, xt, 0, 1, &sx, &zx);
    uint32_t wt = fc ? tb_tensor_typed(b, "w", 1, 2, (const int32_t[]){oc->oc, oc->c}, wd)
                  : dw ? tb_tensor_typed(b, "w", 1, 4, (const int32_t[]){1, oc->k, oc->k, oc->oc}, wd)
                       : tb_tensor_typed(b, "w", 1, 4, (const int32_t[]){oc->oc, oc->k, oc->k, oc->c}, wd);
    tb_quantize(b, wt, dw ? 3 : 0, (uint32_t)oc->oc, ws, NULL);
    uint32_t bt = tb_tensor_typed(b, "b", 3, 1, (const int32_t[]){oc->oc}, bias);
    uint32_t yt = fc ? tb_tensor_typed(b, "y", 1, 2, (const int32_t[]){1, oc->oc}, NULL)
                     : tb_tensor_typed(b, "y", 1, 4, (const int32_t[]){1, oh, ow, oc->oc}, NULL);
    tb_quantize(b, yt, 0, 1, &sy, &zy);
    const uint32_t type = fc ? TETHER_OP_FULLY_CONNECTED
                             : dw ? TETHER_OP_DEPTHWISE_CONV_2D : TETHER_OP_CONV_2D;
    tb_op(b, type, TETHER_ACT_RELU6, "op", 3, (const uint32_t[]){xt, wt, bt}, yt);
    if (!fc) {
      tb_attr_i(b, 1, 2, (const int32_t[]){oc->s, oc->s});
      tb_attr_i(b, 3, 4, (const int32_t[]){oc->pad, oc->pad, oc->pad, oc->pad});
    }
    tb_graph_io(b, 1, &xt, 1, &yt);
    size_t size = 0;
    uint8_t* file = tb_finish(b, &size);
    int8_t* want = (int8_t*)malloc(ny);
    int8_t* got = (int8_t*)malloc(ny);
    char what[96];
    snprintf(what, sizeof(what), "engine case %zu (kind %d, c %d, oc %d, k %d)", ci, oc->kind,
             oc->c, oc->oc, oc->k);
    run_model(file, size, "scalar", 1, x, nx, want, ny, what);
    for (size_t i = 0; i < sizeof(kIsas) / sizeof(kIsas[0]); i++) {
      if (tether_kernels_for(kIsas[i]) == NULL) continue;
      for (uint32_t threads = 1; threads <= 3; threads++) {
        run_model(file, size, kIsas[i], threads, x, nx, got, ny, what);
        char full[160];
        snprintf(full, sizeof(full), "%s isa %s threads %u", what, kIsas[i], threads);
        compare(full, got, want, ny);
      }
    }
    TB_CHECK(tether_set_isa("auto") == TETHER_STATUS_SUCCESS, "isa auto");
    free(file);
    free(b);
    free(want);
    free(got);
    free(x);
    free(wd);
    free(ws);
    free(bias);
  }
}

int main(void) {
  printf("test_q8_ukernels: default isa %s\n", tether_isa());
  struct tether_pool* pools[3] = {NULL, NULL, NULL};
  for (uint32_t t = 0; t < 3; t++) {
    TB_CHECK(tether_pool_create(tether_default_allocator(), t + 1, &pools[t]) ==
                 TETHER_STATUS_SUCCESS, "pool of %u threads", t + 1);
  }
  static const char* const kIsas[] = {"scalar", "avx2", "avx512", "neon"};
  int tested = 0;
  for (size_t i = 0; i < sizeof(kIsas) / sizeof(kIsas[0]); i++) {
    const tether_kernels* kt = tether_kernels_for(kIsas[i]);
    if (kt == NULL) {
      printf("test_q8_ukernels: %s not available here, skipped\n", kIsas[i]);
      continue;
    }
    printf("test_q8_ukernels: %s qs8 gemm %zux%zuc%zu%s, dwconv and vadd vs scalar twins\n", kt->isa,
           kt->qs8_gemm_mr, kt->qs8_gemm_nr, kt->qs8_gemm_kr, kt->qs8_gemm_xor ? " (u8 A)" : "");
    for (int rep = 0; rep < 3; rep++) {
      test_gemm(kt, pools);
      test_requant_edges(kt);
      test_dwconv(kt, pools);
      test_vadd(kt);
      test_vcvt(kt);
    }
    tested++;
  }
#if defined(__aarch64__)
  /* The SMLAL kernel that aarch64 CPUs without the dot product run (qemu's default CPU and
   * most phones have it, so the table above holds the SDOT kernel). */
  const tether_kernels* neon = tether_kernels_for("neon");
  if (neon != NULL && neon->qs8_gemm != tether_qs8_gemm_minmax_ukernel_4x8c1__neon) {
    tether_kernels smlal = *neon;
    smlal.qs8_gemm_mr = 4;
    smlal.qs8_gemm_nr = 8;
    smlal.qs8_gemm_kr = 1;
    smlal.qs8_gemm_xor = 0;
    smlal.qs8_gemm = tether_qs8_gemm_minmax_ukernel_4x8c1__neon;
    smlal.qs8_gemm_twin = tether_qs8_gemm_minmax_ukernel_4x8c1__scalar;
    printf("test_q8_ukernels: neon qs8 gemm 4x8c1 (SMLAL) vs scalar twin\n");
    for (int rep = 0; rep < 3; rep++) test_gemm(&smlal, pools);
  }
#endif
  for (size_t t = 0; t < 3; t++) tether_pool_destroy(pools[t]);
  test_ops_through_engine();
  if (tb_failures != 0) {
    fprintf(stderr, "%d check(s) failed\n", tb_failures);
    return 1;
  }
  printf("test_q8_ukernels: all checks passed (%d kernel sets)\n", tested);
  return 0;
}
