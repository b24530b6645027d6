/*
 * test_pad.c — PAD (float32), against a naive double-precision reference (kernels_testlib.h)
 * on random shapes.
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

int main(void) {
  printf("test_pad: isa %s\n", tether_isa());
  test_pad();
  return kernels_report("test_pad");
}
