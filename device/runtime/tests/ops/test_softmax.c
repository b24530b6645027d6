/*
 * test_softmax.c — the last-axis ops SOFTMAX and LRN (float32), against a naive double-precision reference (kernels_testlib.h)
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

/* LRN over the last axis: odd and even windows, windows wider than the axis. */
static void test_lrn(void) {
  for (int t = 0; t < 24; t++) {
    const int32_t xs[3] = {2, tb_range(1, 3), tb_range(1, 17)};
    const int32_t size = tb_range(1, 7);
    const float alpha = tb_uniform(0, 2), beta = tb_uniform(0.25f, 1.5f), bias = tb_uniform(0.5f, 3);
    tb_builder* b = tb_new();
    uint32_t x = tb_tensor(b, "x", 3, xs, NULL);
    uint32_t y = tb_tensor(b, "y", 3, xs, NULL);
    tb_op(b, TETHER_OP_LRN, 0, "lrn", 1, &x, y);
    tb_attr_i(b, TETHER_ATTR_SIZE, 1, &size);
    tb_attr_f(b, TETHER_ATTR_ALPHA, alpha);
    tb_attr_f(b, TETHER_ATTR_BETA, beta);
    tb_attr_f(b, TETHER_ATTR_OFFSET, bias);
    const size_t n = elements_of(b, x), c = (size_t)xs[2];
    float* xd = random_data(n);
    for (size_t i = 0; i < n; i++) xd[i] *= 3.0f;
    float* got = (float*)malloc(n * 4);
    if (run_op("lrn", b, 1, &x, &xd, y, got)) {
      double* want = (double*)malloc(n * sizeof(double));
      for (size_t i = 0; i < n; i++) {
        const ptrdiff_t ch = (ptrdiff_t)(i % c), row = (ptrdiff_t)(i - (size_t)ch);
        double sum = 0;
        for (ptrdiff_t k = ch - (size - 1) / 2; k <= ch + size / 2; k++) {
          if (k >= 0 && k < (ptrdiff_t)c) sum += (double)xd[row + k] * xd[row + k];
        }
        want[i] = xd[i] / pow(bias + alpha / size * sum, beta);
      }
      compare("lrn", got, want, n);
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
  test_lrn();
  return kernels_report("test_softmax");
}
