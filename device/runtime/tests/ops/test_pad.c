/*
 * test_pad.c — PAD (float32), against a naive double-precision reference (kernels_testlib.h)
 * on random shapes; reflect, edge and symmetric modes (float32 and int8, guarded buffers)
 * against a naive index mirror; impossible pads refused at load naming the axis.
 */
#include "kernels_testlib.h"

static void test_pad(void) {
  for (int t = 0; t < 40; t++) {
    const int rank = tb_range(1, 4);  /* 2*rank paddings must fit one 8-value attribute */
    int32_t xs[6], ys[6], pads[12];
    for (int d = 0; d < rank; d++) {
      xs[d] = tb_range(1, 4);
      pads[2 * d] = tb_range(0, 2);
      pads[2 * d + 1] = tb_range(0, 2);
      ys[d] = xs[d] + pads[2 * d] + pads[2 * d + 1];
    }
    const float value = tb_range(0, 1) ? 0.0f : tb_uniform(-3, 3);
    tb_builder* b = tb_new();
    uint32_t x = tb_tensor(b, "x", (uint32_t)rank, xs, NULL);
    uint32_t y = tb_tensor(b, "y", (uint32_t)rank, ys, NULL);
    tb_op(b, TETHER_OP_PAD, 0, "pad", 1, &x, y);
    tb_attr_i(b, 11, (uint32_t)(2 * rank), pads);
    if (value != 0.0f) tb_attr_f(b, 12, value);
    const size_t ny = elements_of(b, y);
    float* xd = random_data(elements_of(b, x));
    float* got = (float*)malloc(ny * 4);
    char name[64];
    snprintf(name, sizeof(name), "pad rank%d value%g", rank, value);
    if (run_op(name, b, 1, &x, &xd, y, got)) {
      double* want = (double*)malloc(ny * sizeof(double));
      for (size_t o = 0; o < ny; o++) {
        size_t rest = o, idx = 0;
        int coord[6], inside = 1;
        for (int d = rank - 1; d >= 0; d--) {
          coord[d] = (int)(rest % (size_t)ys[d]) - pads[2 * d];
          rest /= (size_t)ys[d];
          if (coord[d] < 0 || coord[d] >= xs[d]) inside = 0;
        }
        for (int d = 0; inside && d < rank; d++) idx = idx * (size_t)xs[d] + (size_t)coord[d];
        want[o] = inside ? xd[idx] : value;
      }
      compare(name, got, want, ny);
      free(want);
    }
    free(xd);
    free(got);
    free(b);
  }
}

/* ---- reflect, edge, symmetric -------------------------------------------------------- */

/* The naive source coordinate of padded coordinate c (already minus the before pad). */
static int mirror(int c, int n, int mode) {
  while (c < 0 || c >= n) {
    if (mode == 2) c = c < 0 ? 0 : n - 1;
    else if (mode == 1) c = c < 0 ? -c : 2 * (n - 1) - c;
    else c = c < 0 ? -c - 1 : 2 * n - 1 - c;
  }
  return c;
}

/* The flat x index that output element o reads. */
static size_t mirror_index(size_t o, int rank, const int32_t* xs, const int32_t* ys,
                           const int32_t* pads, int mode) {
  size_t rest = o, idx = 0;
  int coord[6];
  for (int d = rank - 1; d >= 0; d--) {
    coord[d] = mirror((int)(rest % (size_t)ys[d]) - pads[2 * d], xs[d], mode);
    rest /= (size_t)ys[d];
  }
  for (int d = 0; d < rank; d++) idx = idx * (size_t)xs[d] + (size_t)coord[d];
  return idx;
}

/* Random shape and pads within the mode's bounds (reflect < size, symmetric <= size). */
static int random_mirror_case(int mode, int32_t* xs, int32_t* ys, int32_t* pads) {
  const int rank = tb_range(1, 4);
  for (int d = 0; d < rank; d++) {
    xs[d] = tb_range(1, 5);
    const int most = mode == 1 ? xs[d] - 1 : mode == 3 ? xs[d] : 3;
    pads[2 * d] = tb_range(0, most);
    pads[2 * d + 1] = tb_range(0, most);
    ys[d] = xs[d] + pads[2 * d] + pads[2 * d + 1];
  }
  return rank;
}

static const char* const kModes[] = {"constant", "reflect", "edge", "symmetric"};

static void test_pad_modes(void) {
  for (int mode = 1; mode <= 3; mode++) {
    for (int t = 0; t < 40; t++) {
      int32_t xs[6], ys[6], pads[12];
      const int rank = random_mirror_case(mode, xs, ys, pads);
      tb_builder* b = tb_new();
      uint32_t x = tb_tensor(b, "x", (uint32_t)rank, xs, NULL);
      uint32_t y = tb_tensor(b, "y", (uint32_t)rank, ys, NULL);
      tb_op(b, TETHER_OP_PAD, 0, "pad", 1, &x, y);
      tb_attr_i(b, 11, (uint32_t)(2 * rank), pads);
      tb_attr_f(b, 12, 7.0f);  /* the value is ignored outside constant mode */
      tb_attr_i(b, 29, 1, (const int32_t[]){mode});
      const size_t ny = elements_of(b, y);
      float* xd = random_data(elements_of(b, x));
      float* got = (float*)malloc(ny * 4);
      char name[64];
      snprintf(name, sizeof(name), "pad %s rank%d case %d", kModes[mode], rank, t);
      if (run_op(name, b, 1, &x, &xd, y, got)) {
        double* want = (double*)malloc(ny * sizeof(double));
        for (size_t o = 0; o < ny; o++) want[o] = xd[mirror_index(o, rank, xs, ys, pads, mode)];
        compare(name, got, want, ny);
        free(want);
      }
      free(xd);
      free(got);
      free(b);
    }
  }
}


static void test_pad_modes_int8(void) {
  for (int mode = 1; mode <= 3; mode++) {
    for (int t = 0; t < 30; t++) {
      int32_t xs[6], ys[6], pads[12];
      const int rank = random_mirror_case(mode, xs, ys, pads);
      tb_builder* b = tb_new();
      uint32_t x = tb_tensor_typed(b, "x", TETHER_DTYPE_INT8, (uint32_t)rank, xs, NULL);
      uint32_t y = tb_tensor_typed(b, "y", TETHER_DTYPE_INT8, (uint32_t)rank, ys, NULL);
      const float scale = 0.05f;
      const int32_t zero = tb_range(-20, 20);
      tb_quantize(b, x, 0, 1, &scale, &zero);
      tb_quantize(b, y, 0, 1, &scale, &zero);
      tb_op(b, TETHER_OP_PAD, 0, "pad", 1, &x, y);
      tb_attr_i(b, 11, (uint32_t)(2 * rank), pads);
      tb_attr_i(b, 29, 1, (const int32_t[]){mode});
      const size_t nx = elements_of(b, x), ny = elements_of(b, y);
      int8_t* xd = (int8_t*)malloc(nx);
      for (size_t i = 0; i < nx; i++) xd[i] = (int8_t)tb_range(-128, 127);
      int8_t* got = (int8_t*)malloc(ny);
      char name[64];
      snprintf(name, sizeof(name), "int8 pad %s rank%d case %d", kModes[mode], rank, t);
      if (run_q8_op(name, b, x, y, xd, nx, got, ny)) {
        for (size_t o = 0; o < ny; o++) {
          const int8_t want = xd[mirror_index(o, rank, xs, ys, pads, mode)];
          if (got[o] != want) {
            TB_CHECK(0, "%s: element %zu is %d, want %d", name, o, got[o], want);
            break;
          }
        }
      }
      free(xd);
      free(got);
      free(b);
    }
  }
}

/* A pad past one mirror image (or an unknown mode) fails the load, naming the
 * axis, the pads and the size on one line. */
static void test_pad_impossible_fails_to_load(void) {
  static const struct { int mode; int32_t size, before, after; } kCases[] = {
      {1, 3, 3, 0}, {1, 1, 0, 1}, {3, 3, 0, 4}, {3, 1, 2, 0}, {5, 3, 0, 0}};
  for (size_t k = 0; k < sizeof(kCases) / sizeof(kCases[0]); k++) {
    const int32_t n = kCases[k].size, pb = kCases[k].before, pa = kCases[k].after;
    tb_builder* b = tb_new();
    uint32_t x = tb_tensor(b, "x", 2, (const int32_t[]){2, n}, NULL);
    uint32_t y = tb_tensor(b, "y", 2, (const int32_t[]){2, n + pb + pa}, NULL);
    tb_op(b, TETHER_OP_PAD, 0, "pad", 1, &x, y);
    tb_attr_i(b, 11, 4, (const int32_t[]){0, 0, pb, pa});
    tb_attr_i(b, 29, 1, (const int32_t[]){kCases[k].mode});
    tb_graph_io(b, 1, &x, 1, &y);
    size_t size = 0;
    uint8_t* file = tb_finish(b, &size);
    tether_model_t model = NULL;
    tether_status s = tether_model_load(file, size, NULL, &model);
    const char* e = tether_last_error();
    char pads[32];
    snprintf(pads, sizeof(pads), "(%d, %d)", pb, pa);
    const int named = kCases[k].mode > 3 ? strstr(e, "mode=5") != NULL
                                          : strstr(e, "axis 1") != NULL && strstr(e, pads) &&
                                                strstr(e, kModes[kCases[k].mode]) != NULL;
    TB_CHECK(s == TETHER_STATUS_FORMAT_ERROR && named && strchr(e, '\n') == NULL,
             "impossible pad case %zu: got %s: %s", k, tether_status_string(s), e);
    tether_model_destroy(model);
    free(file);
    free(b);
  }
}

int main(void) {
  printf("test_pad: isa %s\n", tether_isa());
  test_pad();
  test_pad_modes();
  test_pad_modes_int8();
  test_pad_impossible_fails_to_load();
  return kernels_report("test_pad");
}
