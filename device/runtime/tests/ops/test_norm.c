/*
 * test_norm.c — LAYER_NORM and INSTANCE_NORM (float32) on random shapes, axes and epsilons,
 * gamma and beta constant, absent or (LAYER_NORM) graph inputs, against a double-precision
 * oracle on guarded buffers and through a session (kernels_testlib.h run_op). Rows with a large
 * common offset check the variance keeps its precision. A bad axis, epsilon <= 0, a gamma of
 * the wrong shape or a rank-2 INSTANCE_NORM input fail the load.
 */
#include "kernels_testlib.h"

/* (x - mean) / sqrt(var + eps) * g + h over `n` values at stride `stride`, in double. */
static void norm_want(const float* x, size_t n, size_t stride, double eps, const float* g,
                      const float* h, size_t gh_stride, double* want) {
  double mean = 0, var = 0;
  for (size_t i = 0; i < n; i++) mean += x[i * stride];
  mean /= (double)n;
  for (size_t i = 0; i < n; i++) var += (x[i * stride] - mean) * (x[i * stride] - mean);
  var /= (double)n;
  for (size_t i = 0; i < n; i++) {
    const double gi = g != NULL ? g[i * gh_stride] : 1.0, hi = h != NULL ? h[i * gh_stride] : 0.0;
    want[i * stride] = (x[i * stride] - mean) / sqrt(var + eps) * gi + hi;
  }
}

static void test_layer_norm(void) {
  for (int t = 0; t < 40; t++) {
    const int rank = tb_range(1, 4);
    int32_t xs[6];
    for (int d = 0; d < rank; d++) xs[d] = tb_range(1, d == rank - 1 ? 37 : 5);
    const int32_t axis = tb_range(0, rank - 1);
    const float eps = t % 2 ? 1e-5f : tb_uniform(1e-6f, 0.1f);
    const int with_gamma = t % 4 != 0, with_beta = t % 3 != 0, gamma_input = t % 5 == 1;
    size_t n = 1;
    for (int d = axis; d < rank; d++) n *= (size_t)xs[d];
    float* gd = random_data(n);
    float* hd = random_data(n);
    tb_builder* b = tb_new();
    uint32_t ins[3] = {tb_tensor(b, "x", (uint32_t)rank, xs, NULL), TETHER_NO_TENSOR,
                       TETHER_NO_TENSOR};
    uint32_t graph_in[2] = {ins[0], 0};
    uint32_t n_graph = 1;
    if (with_gamma) {
      ins[1] = tb_tensor(b, "gamma", (uint32_t)(rank - axis), xs + axis, gamma_input ? NULL : gd);
      if (gamma_input) graph_in[n_graph++] = ins[1];
    }
    if (with_beta) ins[2] = tb_tensor(b, "beta", (uint32_t)(rank - axis), xs + axis, hd);
    uint32_t y = tb_tensor(b, "y", (uint32_t)rank, xs, NULL);
    tb_op(b, TETHER_OP_LAYER_NORM, 0, "ln", with_beta ? 3 : with_gamma ? 2 : 1, ins, y);
    tb_attr_i(b, TETHER_ATTR_AXIS, 1, &axis);
    if (eps != 1e-5f || t % 3) tb_attr_f(b, TETHER_ATTR_EPSILON, eps);
    const size_t total = elements_of(b, ins[0]);
    float* xd = random_data(total);
    const float offset = t % 7 == 3 ? 1000.0f : 0.0f;  /* a large mean: precision of var */
    for (size_t i = 0; i < total; i++) xd[i] = xd[i] * 3.0f + offset;
    float* got = (float*)malloc(total * 4);
    float* in_data[2] = {xd, gd};
    char name[96];
    snprintf(name, sizeof(name), "layer_norm rank%d axis%d n%zu eps%g g%d b%d", rank, axis, n,
             eps, with_gamma, with_beta);
    if (run_op(name, b, n_graph, graph_in, in_data, y, got)) {
      double* want = (double*)malloc(total * sizeof(double));
      for (size_t r = 0; r < total / n; r++) {
        norm_want(xd + r * n, n, 1, eps, with_gamma ? gd : NULL, with_beta ? hd : NULL, 1,
                  want + r * n);
      }
      compare(name, got, want, total);
      free(want);
    }
    free(xd);
    free(gd);
    free(hd);
    free(got);
    free(b);
  }
}

static void test_instance_norm(void) {
  for (int t = 0; t < 30; t++) {
    const int rank = tb_range(3, 5);
    int32_t xs[6];
    for (int d = 0; d < rank; d++) xs[d] = tb_range(1, d == rank - 1 ? 19 : 7);
    const int32_t c = xs[rank - 1];
    const float eps = t % 2 ? 1e-5f : tb_uniform(1e-6f, 0.1f);
    const int with_gamma = t % 4 != 0, with_beta = t % 3 != 0;
    float* gd = random_data((size_t)c);
    float* hd = random_data((size_t)c);
    tb_builder* b = tb_new();
    uint32_t ins[3] = {tb_tensor(b, "x", (uint32_t)rank, xs, NULL), TETHER_NO_TENSOR,
                       TETHER_NO_TENSOR};
    if (with_gamma) ins[1] = tb_tensor(b, "gamma", 1, &c, gd);
    if (with_beta) ins[2] = tb_tensor(b, "beta", 1, &c, hd);
    uint32_t y = tb_tensor(b, "y", (uint32_t)rank, xs, NULL);
    tb_op(b, TETHER_OP_INSTANCE_NORM, t % 5 == 2 ? TETHER_ACT_RELU : 0, "in",
          with_beta ? 3 : with_gamma ? 2 : 1, ins, y);
    tb_attr_f(b, TETHER_ATTR_EPSILON, eps);
    const size_t total = elements_of(b, ins[0]), batch = (size_t)xs[0];
    const size_t spatial = total / batch / (size_t)c;
    float* xd = random_data(total);
    for (size_t i = 0; i < total; i++) xd[i] = xd[i] * 2.0f + (t % 6 == 1 ? 500.0f : 0.0f);
    float* got = (float*)malloc(total * 4);
    char name[96];
    snprintf(name, sizeof(name), "instance_norm rank%d c%d spatial%zu eps%g", rank, c, spatial,
             eps);
    if (run_op(name, b, 1, ins, &xd, y, got)) {
      double* want = (double*)malloc(total * sizeof(double));
      for (size_t n = 0; n < batch; n++) {
        for (size_t k = 0; k < (size_t)c; k++) {
          const size_t at = n * spatial * (size_t)c + k;
          norm_want(xd + at, spatial, (size_t)c, eps, NULL, NULL, 0, want + at);
          for (size_t i = 0; i < spatial; i++) {
            double* w = &want[at + i * (size_t)c];
            *w = *w * (with_gamma ? gd[k] : 1.0) + (with_beta ? hd[k] : 0.0);
            if (t % 5 == 2 && *w < 0) *w = 0;
          }
        }
      }
      compare(name, got, want, total);
      free(want);
    }
    free(xd);
    free(gd);
    free(hd);
    free(got);
    free(b);
  }
}

static void test_rejects(void) {
  const int32_t xs[3] = {2, 3, 4}, two[2] = {3, 4}, five = 5;
  static const float g[12] = {0};
  for (int k = 0; k < 5; k++) {
    tb_builder* b = tb_new();
    const uint32_t x = tb_tensor(b, "x", k == 4 ? 2 : 3, k == 4 ? two : xs, NULL);
    uint32_t ins[2] = {x, TETHER_NO_TENSOR};
    if (k == 2) ins[1] = tb_tensor(b, "gamma", 1, &five, g);
    const uint32_t y = tb_tensor(b, "y", k == 4 ? 2 : 3, k == 4 ? two : xs, NULL);
    const int32_t axis = k == 0 ? 3 : 1;
    if (k == 4) {
      tb_op(b, TETHER_OP_INSTANCE_NORM, 0, "in", 1, ins, y);
      expect_load("instance_norm rank 2", b, x, y, TETHER_STATUS_FORMAT_ERROR, "rank >= 3");
      continue;
    }
    tb_op(b, TETHER_OP_LAYER_NORM, 0, "ln", k == 2 ? 2 : 1, ins, y);
    if (k != 3) tb_attr_i(b, TETHER_ATTR_AXIS, 1, &axis);
    if (k == 1) tb_attr_f(b, TETHER_ATTR_EPSILON, 0.0f);
    static const char* const kNeedle[4] = {"axis 3", "epsilon", "gamma", "axis"};
    static const char* const kName[4] = {"axis out of range", "epsilon 0", "gamma shape",
                                         "axis missing"};
    expect_load(kName[k], b, x, y, TETHER_STATUS_FORMAT_ERROR, kNeedle[k]);
  }
}

int main(void) {
  printf("test_norm: isa %s\n", tether_isa());
  test_layer_norm();
  test_instance_norm();
  test_rejects();
  return kernels_report("test_norm");
}
