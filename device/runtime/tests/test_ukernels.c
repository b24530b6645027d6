/*
 * test_ukernels.c — every optimized micro-kernel this CPU can run against its __scalar twin
 * (same tile, same packed weights), on prime and odd sizes, with sentinels around the output
 * and unused columns between rows (c_stride > N) that must stay untouched. Prints the ISA
 * the engine selects by default, so CI logs show which kernels ran.
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

#define SENTINEL 12345.0f

static float* random_floats(size_t n) {
  float* p = (float*)malloc((n + 16) * sizeof(float));  /* + TETHER_EXTRA_BYTES for reads */
  for (size_t i = 0; i < n + 16; i++) p[i] = tb_uniform(-1.0f, 1.0f);
  return p;
}

static void compare(const char* what, const float* got, const float* want, size_t n) {
  for (size_t i = 0; i < n; i++) {
    const float a = got[i], b = want[i];
    const int both_sentinel = a == SENTINEL && b == SENTINEL;
    if (both_sentinel) continue;
    if (a == SENTINEL || b == SENTINEL || !(fabsf(a - b) <= 1e-5f + 1e-5f * fabsf(b))) {
      TB_CHECK(0, "%s: element %zu is %.9g, twin says %.9g", what, i, (double)a, (double)b);
      return;
    }
  }
}

static const tether_f32_minmax kClamps[] = {
    {-INFINITY, INFINITY}, {0.0f, INFINITY}, {0.0f, 6.0f}, {-0.25f, 0.25f}};

static void test_gemm(const tether_kernels* kt) {
  static const size_t kN[] = {1, 2, 3, 7, 8, 13, 16, 17, 31, 32, 33, 67};
  static const size_t kK[] = {1, 2, 3, 5, 13, 27, 67, 131};
  tether_kernels twin = *kt;
  twin.gemm = kt->gemm_twin;
  for (size_t ni = 0; ni < sizeof(kN) / sizeof(kN[0]); ni++) {
    for (size_t ki = 0; ki < sizeof(kK) / sizeof(kK[0]); ki++) {
      const size_t n = kN[ni], k = kK[ki];
      const size_t m = (size_t)tb_range(1, (int)(3 * kt->gemm_mr + 2));
      const size_t a_stride = k + (size_t)tb_range(0, 3), c_stride = n + (size_t)tb_range(0, 3);
      const tether_f32_minmax* mm = &kClamps[tb_range(0, 3)];
      float* a = random_floats(m * a_stride);
      float* w = random_floats(n * k);
      float* bias = random_floats(n);
      const size_t pf = tether_f32_gemm_packed_floats(kt->gemm_nr, n, k);
      float* packed = (float*)malloc((pf + 16) * sizeof(float));
      tether_f32_gemm_pack(kt->gemm_nr, n, k, w, (ni & 1) ? NULL : bias, packed);
      const size_t cn = m * c_stride + 32;  /* 16 sentinels before and after */
      float* c1 = (float*)malloc(cn * sizeof(float));
      float* c2 = (float*)malloc(cn * sizeof(float));
      for (size_t i = 0; i < cn; i++) c1[i] = c2[i] = SENTINEL;
      tether_f32_gemm(kt, 0, m, n, k, a, a_stride * 4, packed, c1 + 16, c_stride * 4, mm);
      tether_f32_gemm(&twin, 0, m, n, k, a, a_stride * 4, packed, c2 + 16, c_stride * 4, mm);
      char what[128];
      snprintf(what, sizeof(what), "gemm %s %zux%zu m%zu n%zu k%zu clamp[%g,%g]", kt->isa,
               kt->gemm_mr, kt->gemm_nr, m, n, k, (double)mm->min, (double)mm->max);
      compare(what, c1, c2, cn);
      /* Rows [0, s) then [s, m) must equal the whole, bit for bit (threads split on rows). */
      const size_t split = (size_t)tb_range(0, (int)m);
      for (size_t i = 0; i < cn; i++) c2[i] = SENTINEL;
      tether_f32_gemm(kt, 0, split, n, k, a, a_stride * 4, packed, c2 + 16, c_stride * 4, mm);
      tether_f32_gemm(kt, split, m, n, k, a, a_stride * 4, packed, c2 + 16, c_stride * 4, mm);
      TB_CHECK(memcmp(c1, c2, cn * sizeof(float)) == 0, "%s: split at row %zu differs", what,
               split);
      free(a);
      free(w);
      free(bias);
      free(packed);
      free(c1);
      free(c2);
    }
  }
}

static void test_dwconv(const tether_kernels* kt) {
  static const size_t kC[] = {1, 3, 4, 5, 8, 15, 16, 17, 31, 33, 48};
  for (int t = 0; t < 150; t++) {
    tether_conv_geometry g;
    memset(&g, 0, sizeof(g));
    static const size_t kKernel[] = {1, 2, 3, 3, 3, 5, 7};
    g.batch = (size_t)tb_range(1, 2);
    g.in_h = (size_t)tb_range(1, 13);
    g.in_w = (size_t)tb_range(1, 13);
    g.in_c = g.out_c = kC[tb_range(0, (int)(sizeof(kC) / sizeof(kC[0])) - 1)];
    g.kernel_h = kKernel[tb_range(0, 6)];
    g.kernel_w = t % 3 ? g.kernel_h : kKernel[tb_range(0, 6)];
    g.stride_h = tb_range(1, 2);
    g.stride_w = t % 4 ? g.stride_h : tb_range(1, 2);
    g.dilation_h = t % 5 ? 1 : tb_range(1, 2);
    g.dilation_w = t % 5 ? 1 : tb_range(1, 2);
    g.pad_top = tb_range(0, (int)g.kernel_h / 2 + 1);
    g.pad_left = tb_range(0, (int)g.kernel_w / 2 + 1);
    const ptrdiff_t pad_bottom = tb_range(0, (int)g.kernel_h / 2), pad_right = tb_range(0, (int)g.kernel_w / 2);
    const ptrdiff_t eh = (ptrdiff_t)((g.kernel_h - 1) * (size_t)g.dilation_h + 1);
    const ptrdiff_t ew = (ptrdiff_t)((g.kernel_w - 1) * (size_t)g.dilation_w + 1);
    const ptrdiff_t hp = (ptrdiff_t)g.in_h + g.pad_top + pad_bottom - eh;
    const ptrdiff_t wp = (ptrdiff_t)g.in_w + g.pad_left + pad_right - ew;
    if (hp < 0 || wp < 0) continue;
    g.out_h = (size_t)(hp / g.stride_h + 1);
    g.out_w = (size_t)(wp / g.stride_w + 1);
    g.groups = 1;
    g.depth_multiplier = 1;
    const tether_f32_minmax* mm = &kClamps[tb_range(0, 3)];
    float* x = random_floats(g.batch * g.in_h * g.in_w * g.in_c);
    float* w = random_floats(g.kernel_h * g.kernel_w * g.in_c);
    float* bias = random_floats(g.in_c);
    const size_t ny = g.batch * g.out_h * g.out_w * g.out_c, cn = ny + 32;
    float* y1 = (float*)malloc(cn * sizeof(float));
    float* y2 = (float*)malloc(cn * sizeof(float));
    for (size_t i = 0; i < cn; i++) y1[i] = y2[i] = SENTINEL;
    const float* b = t % 7 ? bias : NULL;
    kt->dwconv(&g, 0, g.out_h, x, w, b, y1 + 16, mm);
    tether_f32_dwconv2d_minmax_ukernel_c1__scalar(&g, 0, g.out_h, x, w, b, y2 + 16, mm);
    char what[192];
    snprintf(what, sizeof(what),
             "dwconv %s n%zu %zux%zux%zu k%zux%zu s%td,%td d%td,%td p%td,%td,%td,%td clamp[%g,%g]",
             kt->isa, g.batch, g.in_h, g.in_w, g.in_c, g.kernel_h, g.kernel_w, g.stride_h,
             g.stride_w, g.dilation_h, g.dilation_w, g.pad_top, g.pad_left, pad_bottom, pad_right,
             (double)mm->min, (double)mm->max);
    compare(what, y1, y2, cn);
    for (size_t i = 16; i < 16 + ny; i++) {
      if (y1[i] == SENTINEL) {
        TB_CHECK(0, "%s: output %zu not written", what, i - 16);
        break;
      }
    }
    /* Row ranges compose bit for bit. */
    const size_t split = (size_t)tb_range(0, (int)g.out_h);
    for (size_t i = 0; i < cn; i++) y2[i] = SENTINEL;
    kt->dwconv(&g, 0, split, x, w, b, y2 + 16, mm);
    kt->dwconv(&g, split, g.out_h, x, w, b, y2 + 16, mm);
    TB_CHECK(memcmp(y1, y2, cn * sizeof(float)) == 0, "%s: split at row %zu differs", what,
             split);
    free(x);
    free(w);
    free(bias);
    free(y1);
    free(y2);
  }
}

/* The c1 twin itself against the model-level reference kernel plus a clamp. */
static void test_dwconv_twin(void) {
  tether_conv_geometry g = {1, 9, 7, 6, 5, 4, 6, 3, 3, 1, 1, 2, 1, 1, 1, 1, 0};
  g.out_h = 5;
  g.out_w = 4;
  float* x = random_floats(9 * 7 * 6);
  float* w = random_floats(9 * 6);
  float* bias = random_floats(6);
  float y1[5 * 4 * 6], y2[5 * 4 * 6];
  const tether_f32_minmax mm = {-0.5f, 0.5f};
  tether_f32_dwconv2d_minmax_ukernel_c1__scalar(&g, 0, g.out_h, x, w, bias, y1, &mm);
  tether_ref_f32_dwconv2d(&g, x, w, bias, y2);
  for (size_t i = 0; i < sizeof(y2) / sizeof(y2[0]); i++) {
    y2[i] = y2[i] < -0.5f ? -0.5f : y2[i] > 0.5f ? 0.5f : y2[i];
  }
  compare("dwconv c1 twin vs reference", y1, y2, sizeof(y1) / sizeof(y1[0]));
  free(x);
  free(w);
  free(bias);
}

int main(void) {
  printf("test_ukernels: default isa %s\n", tether_isa());
  test_dwconv_twin();
  static const char* const kIsas[] = {"scalar", "avx2", "avx512", "neon"};
  int tested = 0;
  for (size_t i = 0; i < sizeof(kIsas) / sizeof(kIsas[0]); i++) {
    const tether_kernels* kt = tether_kernels_for(kIsas[i]);
    if (kt == NULL) {
      printf("test_ukernels: %s not available here, skipped\n", kIsas[i]);
      continue;
    }
    printf("test_ukernels: %s gemm %zux%zu and dwconv vs scalar twins\n", kt->isa, kt->gemm_mr,
           kt->gemm_nr);
    test_gemm(kt);
    test_dwconv(kt);
    tested++;
  }
  if (tb_failures != 0) {
    fprintf(stderr, "%d check(s) failed\n", tb_failures);
    return 1;
  }
  printf("test_ukernels: all checks passed (%d kernel sets)\n", tested);
  return 0;
}
