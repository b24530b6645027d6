/*
 * test_softmax.c — SOFTMAX (float32), against a naive double-precision reference (kernels_testlib.h)
 * on random shapes.
 */
#include "kernels_testlib.h"

static void test_softmax(void) {
  for (int t = 0; t < 30; t++) {
    const int rank = tb_range(1, 4);
    int32_t xs[6];
    for (int d = 0; d < rank; d++) xs[d] = tb_range(1, d == rank - 1 ? 40 : 4);
    const float beta = t % 3 == 0 ? 1.0f : tb_uniform(-4, 4);
    tb_builder* b = tb_new();
    uint32_t x = tb_tensor(b, "x", (uint32_t)rank, xs, NULL);
    uint32_t y = tb_tensor(b, "y", (uint32_t)rank, xs, NULL);
    tb_op(b, TETHER_OP_SOFTMAX, 0, "softmax", 1, &x, y);
    if (beta != 1.0f) tb_attr_f(b, 13, beta);
    const size_t n = elements_of(b, x), row = (size_t)xs[rank - 1];
    float* xd = random_data(n);
    for (size_t i = 0; i < n; i++) xd[i] *= 20.0f;  /* large logits: tests the max shift */
    float* got = (float*)malloc(n * 4);
    char name[64];
    snprintf(name, sizeof(name), "softmax rank%d row%zu beta%g", rank, row, beta);
    if (run_op(name, b, 1, &x, &xd, y, got)) {
      double* want = (double*)malloc(n * sizeof(double));
      for (size_t r = 0; r < n / row; r++) {
        double sum = 0;
        for (size_t i = 0; i < row; i++) sum += exp((double)beta * xd[r * row + i]);
        for (size_t i = 0; i < row; i++) want[r * row + i] = exp((double)beta * xd[r * row + i]) / sum;
      }
      compare(name, got, want, n);
      free(want);
    }
    free(xd);
    free(got);
    free(b);
  }
}

int main(void) {
  printf("test_softmax: isa %s\n", tether_isa());
  test_softmax();
  return kernels_report("test_softmax");
}
