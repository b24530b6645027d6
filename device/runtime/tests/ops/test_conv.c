/*
 * test_conv.c — CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED (float32) on every kernel set this CPU has, with weights given as graph inputs (the reference paths) and as constants (the packed GEMM paths), against a naive double-precision reference (kernels_testlib.h)
 * on random shapes.
 */
#include "kernels_testlib.h"

typedef struct conv_case {
  int n, h, w, c, oc, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, groups, m;
  int bias;  /* 0 absent (2 inputs), 1 present, 2 absent as 0xFFFFFFFF */
  uint32_t act;
} conv_case;

/*
 * 1: weights and bias are constants in the model (the loader packs them and the optimized
 * GEMM paths run); 0: they are graph inputs (the reference paths run).
 */
static int g_const_weights;

static void run_conv(const conv_case* k, int depthwise) {
  char name[256];
  snprintf(name, sizeof(name),
           "%s[%s%s] n%d h%d w%d c%d oc%d k%dx%d s%d,%d d%d,%d p%d,%d,%d,%d g%d m%d bias%d act%u",
           depthwise ? "dwconv" : "conv", tether_isa(), g_const_weights ? ",const" : "", k->n, k->h, k->w, k->c, k->oc, k->kh, k->kw, k->sh,
           k->sw, k->dh, k->dw, k->pt, k->pl, k->pb, k->pr, k->groups, k->m, k->bias, k->act);
  const int oh = out_dim(k->h, k->pt, k->pb, k->kh, k->sh, k->dh);
  const int ow = out_dim(k->w, k->pl, k->pr, k->kw, k->sw, k->dw);
  const int oc = depthwise ? k->c * k->m : k->oc;
  const int cg = depthwise ? 1 : k->c / k->groups;
  tb_builder* b = tb_new();
  const size_t wn = (size_t)k->kh * k->kw * oc * (depthwise ? 1 : cg);
  float* wd = random_data(wn);
  float* bd = random_data((size_t)oc);
  const float* wc = g_const_weights ? wd : NULL;
  const float* bc = g_const_weights ? bd : NULL;
  uint32_t x = tb_tensor(b, "x", 4, (const int32_t[]){k->n, k->h, k->w, k->c}, NULL);
  uint32_t wt = depthwise ? tb_tensor(b, "w", 4, (const int32_t[]){1, k->kh, k->kw, oc}, wc)
                          : tb_tensor(b, "w", 4, (const int32_t[]){oc, k->kh, k->kw, cg}, wc);
  uint32_t bt = tb_tensor(b, "b", 1, (const int32_t[]){oc}, bc);
  uint32_t y = tb_tensor(b, "y", 4, (const int32_t[]){k->n, oh, ow, oc}, NULL);
  uint32_t ins[3] = {x, wt, k->bias == 2 ? TETHER_NO_TENSOR : bt};
  tb_op(b, depthwise ? TETHER_OP_DEPTHWISE_CONV_2D : TETHER_OP_CONV_2D, k->act, "op",
        k->bias ? 3 : 2, ins, y);
  tb_attr_i(b, 1, 2, (const int32_t[]){k->sh, k->sw});
  tb_attr_i(b, 2, 2, (const int32_t[]){k->dh, k->dw});
  tb_attr_i(b, 3, 4, (const int32_t[]){k->pt, k->pl, k->pb, k->pr});
  if (depthwise) {
    tb_attr_i(b, 5, 1, &k->m);
  } else {
    tb_attr_i(b, 4, 1, &k->groups);
  }
  float* xd = random_data(elements_of(b, x));
  const size_t ny = (size_t)k->n * oh * ow * oc;
  float* got = (float*)malloc(ny * 4);
  float* in_data[3] = {xd, wd, bd};
  if (run_op(name, b, g_const_weights ? 1 : k->bias == 1 ? 3 : 2, ins, in_data, y, got)) {
    double* want = (double*)malloc(ny * sizeof(double));
    double* xp = padded_copy(xd, k->n, k->h, k->w, k->c, k->pt, k->pl, k->pb, k->pr, 0, NULL);
    const int hp = k->h + k->pt + k->pb, wp = k->w + k->pl + k->pr;
    const int ocg = oc / (depthwise ? 1 : k->groups);
    for (int n = 0; n < k->n; n++)
      for (int i = 0; i < oh; i++)
        for (int j = 0; j < ow; j++)
          for (int o = 0; o < oc; o++) {
            double sum = k->bias == 1 ? bd[o] : 0.0;
            for (int a = 0; a < k->kh; a++)
              for (int c2 = 0; c2 < k->kw; c2++) {
                const int r = i * k->sh + a * k->dh, q = j * k->sw + c2 * k->dw;
                const double* px = xp + (((size_t)n * hp + r) * wp + q) * k->c;
                if (depthwise) {
                  sum += px[o / k->m] * wd[((size_t)a * k->kw + c2) * oc + o];
                } else {
                  const int g = o / ocg;
                  for (int ci = 0; ci < cg; ci++) {
                    sum += px[g * cg + ci] * wd[(((size_t)o * k->kh + a) * k->kw + c2) * cg + ci];
                  }
                }
              }
            want[(((size_t)n * oh + i) * ow + j) * oc + o] = activate(sum, k->act);
          }
    compare(name, got, want, ny);
    free(xp);
    free(want);
  }
  free(xd);
  free(wd);
  free(bd);
  free(got);
  free(b);
}

static void random_conv_case(conv_case* k, int depthwise) {
  do {
    k->n = tb_range(1, 2);
    k->h = tb_range(1, 11);
    k->w = tb_range(1, 11);
    k->groups = depthwise ? 1 : tb_range(1, 3);
    k->c = depthwise ? tb_range(1, 7) : k->groups * tb_range(1, 5);
    k->oc = depthwise ? 0 : k->groups * tb_range(1, 4);
    k->m = depthwise ? tb_range(1, 3) : 1;
    k->kh = tb_range(1, 5);
    k->kw = tb_range(1, 5);
    k->sh = tb_range(1, 3);
    k->sw = tb_range(1, 3);
    k->dh = tb_range(1, 2);
    k->dw = tb_range(1, 2);
    k->pt = tb_range(0, 2);
    k->pl = tb_range(0, 2);
    k->pb = tb_range(0, 2);
    k->pr = tb_range(0, 2);
    k->bias = tb_range(0, 2);
    k->act = (uint32_t)tb_range(0, 6);
  } while (out_dim(k->h, k->pt, k->pb, k->kh, k->sh, k->dh) < 1 ||
           out_dim(k->w, k->pl, k->pr, k->kw, k->sw, k->dw) < 1);
}

static void test_convolutions(void) {
  /* Named edge cases first: stride 2 + dilation 2, asymmetric pads, groups, M = 2. */
  const conv_case fixed[] = {
      {1, 7, 9, 3, 5, 3, 3, 2, 2, 1, 1, 0, 0, 1, 1, 1, 1, 1, TETHER_ACT_NONE},
      {1, 8, 8, 4, 6, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 2, 1, 1, TETHER_ACT_RELU6},
      {2, 5, 6, 6, 6, 3, 2, 2, 1, 1, 2, 1, 0, 0, 1, 3, 1, 2, TETHER_ACT_HARD_SWISH},
      {1, 1, 1, 8, 16, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, TETHER_ACT_NONE},
      {1, 13, 13, 3, 4, 5, 5, 3, 3, 1, 1, 2, 2, 2, 2, 1, 1, 1, TETHER_ACT_SIGMOID},
  };
  for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) run_conv(&fixed[i], 0);
  const conv_case fixed_dw[] = {
      {1, 7, 7, 3, 0, 3, 3, 2, 2, 1, 1, 0, 0, 1, 1, 1, 2, 1, TETHER_ACT_RELU6},
      {1, 9, 8, 5, 0, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 1, 2, 1, TETHER_ACT_NONE},
      {2, 4, 5, 2, 0, 5, 5, 1, 2, 1, 1, 2, 2, 2, 2, 1, 1, 0, TETHER_ACT_TANH},
  };
  for (size_t i = 0; i < sizeof(fixed_dw) / sizeof(fixed_dw[0]); i++) run_conv(&fixed_dw[i], 1);
  for (int i = 0; i < 60; i++) {
    conv_case k;
    random_conv_case(&k, 0);
    run_conv(&k, 0);
    random_conv_case(&k, 1);
    run_conv(&k, 1);
  }
}

/* ---- fully connected ---------------------------------------------------------------- */

static void test_fully_connected(void) {
  for (int t = 0; t < 30; t++) {
    const int lead = tb_range(1, 3);
    int32_t xs[4];
    size_t rows = 1;
    for (int i = 0; i < lead - 1; i++) {
      xs[i] = tb_range(1, 4);
      rows *= (size_t)xs[i];
    }
    const int kk = tb_range(1, 37), o = tb_range(1, 19), bias = tb_range(0, 1);
    const uint32_t act = (uint32_t)tb_range(0, 6);
    xs[lead - 1] = kk;
    int32_t ys[4];
    memcpy(ys, xs, sizeof(xs));
    ys[lead - 1] = o;
    float* wd = random_data((size_t)o * kk);
    float* bd = random_data((size_t)o);
    tb_builder* b = tb_new();
    uint32_t x = tb_tensor(b, "x", (uint32_t)lead, xs, NULL);
    uint32_t w = tb_tensor(b, "w", 2, (const int32_t[]){o, kk}, g_const_weights ? wd : NULL);
    uint32_t bb = tb_tensor(b, "b", 1, (const int32_t[]){o}, g_const_weights ? bd : NULL);
    uint32_t y = tb_tensor(b, "y", (uint32_t)lead, ys, NULL);
    uint32_t ins[3] = {x, w, bb};
    tb_op(b, TETHER_OP_FULLY_CONNECTED, act, "fc", bias ? 3 : 2, ins, y);
    float* xd = random_data(rows * kk);
    float* got = (float*)malloc(rows * o * 4);
    float* in_data[3] = {xd, wd, bd};
    char name[128];
    snprintf(name, sizeof(name), "fc[%s%s] rows%zu k%d o%d bias%d act%u", tether_isa(),
             g_const_weights ? ",const" : "", rows, kk, o, bias, act);
    if (run_op(name, b, g_const_weights ? 1 : bias ? 3 : 2, ins, in_data, y, got)) {
      double* want = (double*)malloc(rows * o * sizeof(double));
      for (size_t r = 0; r < rows; r++)
        for (int j = 0; j < o; j++) {
          double s = bias ? bd[j] : 0;
          for (int i = 0; i < kk; i++) s += (double)xd[r * kk + i] * wd[(size_t)j * kk + i];
          want[r * o + j] = activate(s, act);
        }
      compare(name, got, want, rows * o);
      free(want);
    }
    free(xd);
    free(wd);
    free(bd);
    free(got);
    free(b);
  }
}

int main(void) {
  static const char* const kIsas[] = {"scalar", "avx2", "avx512", "neon"};
  for (size_t i = 0; i < sizeof(kIsas) / sizeof(kIsas[0]); i++) {
    if (tether_set_isa(kIsas[i]) != TETHER_STATUS_SUCCESS) continue;
    printf("test_conv: convolutions and fully connected with isa %s\n", tether_isa());
    for (g_const_weights = 0; g_const_weights < 2; g_const_weights++) {
      test_convolutions();
      test_fully_connected();
    }
  }
  tether_set_isa("auto");
  return kernels_report("test_conv");
}
