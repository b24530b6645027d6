/*
 * test_mean.c — MEAN (float32) over any axes, against a naive double-precision reference (kernels_testlib.h)
 * on random shapes.
 */
#include "kernels_testlib.h"

/* MEAN and REDUCE_MAX over random axes of random shapes. */
static void test_reduce(uint32_t op) {
  for (int t = 0; t < 60; t++) {
    const int rank = tb_range(1, 6);
    int32_t xs[6];
    for (int d = 0; d < rank; d++) xs[d] = tb_range(1, t < 10 ? 9 : 4);
    int32_t axes[6];
    int naxes = 0, reduced[6] = {0};
    for (int d = 0; d < rank; d++) {
      if (tb_range(0, 1)) {
        reduced[d] = 1;
        axes[naxes++] = d;
      }
    }
    if (naxes == 0) {
      reduced[rank - 1] = 1;
      axes[naxes++] = rank - 1;
    }
    /* Shuffle the axes: order must not matter. */
    for (int i = naxes - 1; i > 0; i--) {
      int j = tb_range(0, i);
      int32_t tmp = axes[i];
      axes[i] = axes[j];
      axes[j] = tmp;
    }
    const int keepdims = tb_range(0, 1);
    int32_t ys[6];
    int ry = 0;
    for (int d = 0; d < rank; d++) {
      if (!reduced[d]) ys[ry++] = xs[d];
      else if (keepdims) ys[ry++] = 1;
    }
    tb_builder* b = tb_new();
    uint32_t x = tb_tensor(b, "x", (uint32_t)rank, xs, NULL);
    uint32_t y = tb_tensor(b, "y", (uint32_t)ry, ys, NULL);
    tb_op(b, op, 0, op == TETHER_OP_MEAN ? "mean" : "reduce_max", 1, &x, y);
    tb_attr_i(b, 8, (uint32_t)naxes, axes);
    tb_attr_i(b, 9, 1, &keepdims);
    const size_t nx = elements_of(b, x), ny = elements_of(b, y);
    float* xd = random_data(nx);
    float* got = (float*)malloc(ny * 4);
    char name[64];
    snprintf(name, sizeof(name), "%s rank%d axes%d keepdims%d",
             op == TETHER_OP_MEAN ? "mean" : "reduce_max", rank, naxes, keepdims);
    if (run_op(name, b, 1, &x, &xd, y, got)) {
      double* want = (double*)calloc(ny, sizeof(double));
      /* For each output element, sum every x element whose kept coordinates match. */
      for (size_t o = 0; o < ny; o++) {
        double sum = 0, max = -INFINITY;
        size_t count = 0;
        for (size_t i = 0; i < nx; i++) {
          size_t rest = i, key = 0, scale = 1;
          for (int d = rank - 1; d >= 0; d--) {
            size_t cidx = rest % (size_t)xs[d];
            rest /= (size_t)xs[d];
            if (!reduced[d]) {
              key += cidx * scale;
              scale *= (size_t)xs[d];
            }
          }
          if (key == o) {
            sum += xd[i];
            if (xd[i] > max) max = xd[i];
            count++;
          }
        }
        want[o] = op == TETHER_OP_MEAN ? sum / (double)count : max;
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
  printf("test_mean: isa %s\n", tether_isa());
  test_reduce(TETHER_OP_MEAN);
  test_reduce(TETHER_OP_REDUCE_MAX);
  return kernels_report("test_mean");
}
