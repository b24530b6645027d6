/*
 * test_reshape.c — RESHAPE, against a naive double-precision reference (kernels_testlib.h)
 * on random shapes.
 */
#include "kernels_testlib.h"

static void test_reshape(void) {
  tb_builder* b = tb_new();
  uint32_t x = tb_tensor(b, "x", 4, (const int32_t[]){1, 3, 5, 7}, NULL);
  uint32_t y = tb_tensor(b, "y", 2, (const int32_t[]){15, 7}, NULL);
  tb_op(b, TETHER_OP_RESHAPE, TETHER_ACT_RELU, "reshape", 1, &x, y);
  float* xd = random_data(105);
  float got[105];
  if (run_op("reshape", b, 1, &x, &xd, y, got)) {
    double want[105];
    for (int i = 0; i < 105; i++) want[i] = activate(xd[i], TETHER_ACT_RELU);
    compare("reshape", got, want, 105);
  }
  free(xd);
  free(b);
}

int main(void) {
  printf("test_reshape: isa %s\n", tether_isa());
  test_reshape();
  return kernels_report("test_reshape");
}
