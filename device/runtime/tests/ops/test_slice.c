/*
 * test_slice.c — SLICE (float32), against a naive reference on random shapes, begins and
 * steps (kernels_testlib.h: guarded buffers, the op alone and through a session); a slice
 * that reads past its input must fail to load.
 */
#include "kernels_testlib.h"

static void test_slice(void) {
  for (int t = 0; t < 60; t++) {
    const int rank = tb_range(1, 6);
    int32_t xs[6], ys[6], begin[6], steps[6];
    for (int d = 0; d < rank; d++) {
      xs[d] = tb_range(1, 6);
      steps[d] = tb_range(1, 3);
      begin[d] = tb_range(0, xs[d] - 1);
      ys[d] = tb_range(1, (xs[d] - 1 - begin[d]) / steps[d] + 1);
    }
    const int default_steps = t % 4 == 0;
    if (default_steps) {
      for (int d = 0; d < rank; d++) steps[d] = 1;
    }
    tb_builder* b = tb_new();
    uint32_t x = tb_tensor(b, "x", (uint32_t)rank, xs, NULL);
    uint32_t y = tb_tensor(b, "y", (uint32_t)rank, ys, NULL);
    tb_op(b, TETHER_OP_SLICE, TETHER_ACT_RELU, "slice", 1, &x, y);
    tb_attr_i(b, 20, (uint32_t)rank, begin);
    if (!default_steps) tb_attr_i(b, 21, (uint32_t)rank, steps);
    const size_t ny = elements_of(b, y);
    float* xd = random_data(elements_of(b, x));
    float* got = (float*)malloc(ny * 4);
    char name[64];
    snprintf(name, sizeof(name), "slice rank%d case%d", rank, t);
    if (run_op(name, b, 1, &x, &xd, y, got)) {
      double* want = (double*)malloc(ny * sizeof(double));
      for (size_t o = 0; o < ny; o++) {
        size_t rest = o, idx = 0, coord[6];
        for (int d = rank - 1; d >= 0; d--) {
          coord[d] = (size_t)begin[d] + (rest % (size_t)ys[d]) * (size_t)steps[d];
          rest /= (size_t)ys[d];
        }
        for (int d = 0; d < rank; d++) idx = idx * (size_t)xs[d] + coord[d];
        want[o] = activate(xd[idx], TETHER_ACT_RELU);
      }
      compare(name, got, want, ny);
      free(want);
    }
    free(xd);
    free(got);
    free(b);
  }
}

static void test_slice_outside_fails_to_load(void) {
  tb_builder* b = tb_new();
  uint32_t x = tb_tensor(b, "x", 2, (const int32_t[]){4, 5}, NULL);
  uint32_t y = tb_tensor(b, "y", 2, (const int32_t[]){2, 3}, NULL);
  tb_op(b, TETHER_OP_SLICE, 0, "slice", 1, &x, y);
  tb_attr_i(b, 20, 2, (const int32_t[]){1, 1});
  tb_attr_i(b, 21, 2, (const int32_t[]){2, 2});  /* column 1 + 2·2 = 5 is past 4 */
  expect_load("slice outside", b, x, y, TETHER_STATUS_FORMAT_ERROR, "axis 1");
}

int main(void) {
  printf("test_slice: isa %s\n", tether_isa());
  test_slice();
  test_slice_outside_fails_to_load();
  return kernels_report("test_slice");
}
