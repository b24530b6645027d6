/*
 * test_pool.c — MAX_POOL_2D and AVERAGE_POOL_2D (float32) on random shapes, undilated and
 * dilated, against one double-precision reference that walks the taps; and the load refusing
 * a dilated window with no input cell.
 */
#include "kernels_testlib.h"

/* Builds one pool op (the dilations attribute only when not 1, so the default is tested
 * too), runs it and compares with a reference that walks the taps: tap (a, e) of output
 * (i, j) is input (i*sh - pt + a*dh, j*sw - pl + e*dw) when inside; an average counts the
 * inside taps, or the whole window with count_include_pad. */
static void check_pool(int is_max, int n, int h, int w, int c, int kh, int kw, int sh, int sw,
                       int dh, int dw, int pt, int pl, int pb, int pr, int include_pad) {
  const int oh = out_dim(h, pt, pb, kh, sh, dh), ow = out_dim(w, pl, pr, kw, sw, dw);
  tb_builder* b = tb_new();
  uint32_t x = tb_tensor(b, "x", 4, (const int32_t[]){n, h, w, c}, NULL);
  uint32_t y = tb_tensor(b, "y", 4, (const int32_t[]){n, oh, ow, c}, NULL);
  tb_op(b, is_max ? TETHER_OP_MAX_POOL_2D : TETHER_OP_AVERAGE_POOL_2D, 0, "pool", 1, &x, y);
  tb_attr_i(b, 6, 2, (const int32_t[]){kh, kw});
  tb_attr_i(b, 1, 2, (const int32_t[]){sh, sw});
  if (dh != 1 || dw != 1) tb_attr_i(b, 2, 2, (const int32_t[]){dh, dw});
  tb_attr_i(b, 3, 4, (const int32_t[]){pt, pl, pb, pr});
  if (!is_max) tb_attr_i(b, 7, 1, &include_pad);
  const size_t ny = (size_t)n * oh * ow * c;
  float* xd = random_data((size_t)n * h * w * c);
  float* got = (float*)malloc(ny * 4);
  char name[160];
  snprintf(name, sizeof(name), "%s h%d w%d c%d k%dx%d s%d,%d d%d,%d p%d,%d,%d,%d cip%d",
           is_max ? "maxpool" : "avgpool", h, w, c, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr,
           include_pad);
  if (run_op(name, b, 1, &x, &xd, y, got)) {
    double* want = (double*)malloc(ny * sizeof(double));
    for (int bn = 0; bn < n; bn++)
      for (int i = 0; i < oh; i++)
        for (int j = 0; j < ow; j++)
          for (int ch = 0; ch < c; ch++) {
            double best = -INFINITY, sum = 0, count = 0;
            for (int a = 0; a < kh; a++)
              for (int e = 0; e < kw; e++) {
                const int ih = i * sh - pt + a * dh, iw = j * sw - pl + e * dw;
                if (ih < 0 || ih >= h || iw < 0 || iw >= w) continue;
                const double v = xd[(((size_t)bn * h + ih) * w + iw) * c + ch];
                if (v > best) best = v;
                sum += v;
                count += 1;
              }
            if (include_pad) count = kh * kw;
            want[(((size_t)bn * oh + i) * ow + j) * c + ch] = is_max ? best : sum / count;
          }
    compare(name, got, want, ny);
    free(want);
  }
  free(xd);
  free(got);
  free(b);
}

static void test_pools(void) {
  for (int t = 0; t < 80; t++) {
    const int is_max = t % 2 == 0;
    int n, h, w, c, kh, kw, sh, sw, pt, pl, pb, pr, oh, ow;
    do {
      n = tb_range(1, 2);
      h = tb_range(1, 10);
      w = tb_range(1, 10);
      c = tb_range(1, 5);
      kh = tb_range(1, 4);
      kw = tb_range(1, 4);
      sh = tb_range(1, 3);
      sw = tb_range(1, 3);
      pt = tb_range(0, kh - 1);
      pb = tb_range(0, kh - 1);
      pl = tb_range(0, kw - 1);
      pr = tb_range(0, kw - 1);
      oh = out_dim(h, pt, pb, kh, sh, 1);
      ow = out_dim(w, pl, pr, kw, sw, 1);
    } while (oh < 1 || ow < 1);
    const int include_pad = is_max ? 0 : tb_range(0, 1);
    check_pool(is_max, n, h, w, c, kh, kw, sh, sw, 1, 1, pt, pl, pb, pr, include_pad);
  }
}

/* Dilated windows (dilations 1..3 per axis), strides, pads up to the window's span. */
static void test_dilated_pools(void) {
  int cases = 0;
  for (int t = 0; cases < 120 && t < 100000; t++) {
    const int is_max = cases % 2 == 0;
    const int n = tb_range(1, 2), h = tb_range(1, 11), w = tb_range(1, 11), c = tb_range(1, 5);
    const int kh = tb_range(1, 4), kw = tb_range(1, 4), sh = tb_range(1, 3), sw = tb_range(1, 3);
    const int dh = tb_range(1, 3), dw = tb_range(1, 3);
    const int span_h = dh * (kh - 1) + 1, span_w = dw * (kw - 1) + 1;
    const int pt = tb_range(0, kh - 1), pl = tb_range(0, kw - 1);
    const int pb = tb_range(0, span_h - 1), pr = tb_range(0, span_w - 1);  /* ceil-mode-like ends */
    const int oh = out_dim(h, pt, pb, kh, sh, dh), ow = out_dim(w, pl, pr, kw, sw, dw);
    if (oh < 1 || ow < 1) continue;
    int empty = 0;  /* a window whose taps all miss the input: the load refuses it (below) */
    for (int i = 0; i < oh && !empty; i++) {
      int hit = 0;
      for (int a = 0; a < kh; a++) hit |= i * sh - pt + a * dh >= 0 && i * sh - pt + a * dh < h;
      empty = !hit;
    }
    for (int j = 0; j < ow && !empty; j++) {
      int hit = 0;
      for (int e = 0; e < kw; e++) hit |= j * sw - pl + e * dw >= 0 && j * sw - pl + e * dw < w;
      empty = !hit;
    }
    if (empty) continue;
    cases++;
    const int include_pad = is_max ? 0 : tb_range(0, 1);
    check_pool(is_max, n, h, w, c, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, include_pad);
  }
  TB_CHECK(cases == 120, "dilated pools: only %d cases drawn", cases);

  /* Taps -1 and 2 of a 2-row input (kernel 2, dilation 3, pads 1): no cell, refused. */
  tb_builder* b = tb_new();
  uint32_t x = tb_tensor(b, "x", 4, (const int32_t[]){1, 2, 2, 1}, NULL);
  uint32_t y = tb_tensor(b, "y", 4, (const int32_t[]){1, 1, 1, 1}, NULL);
  tb_op(b, TETHER_OP_MAX_POOL_2D, 0, "pool", 1, &x, y);
  tb_attr_i(b, 6, 2, (const int32_t[]){2, 2});
  tb_attr_i(b, 2, 2, (const int32_t[]){3, 3});
  tb_attr_i(b, 3, 4, (const int32_t[]){1, 1, 1, 1});
  expect_load("empty dilated window", b, x, y, TETHER_STATUS_FORMAT_ERROR, "holds no input cell");
}

int main(void) {
  printf("test_pool: isa %s\n", tether_isa());
  test_pools();
  test_dilated_pools();
  return kernels_report("test_pool");
}
