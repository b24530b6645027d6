/*
 * test_activation.c — the activation ops (float32, LEAKY_RELU and ELU with their alpha), against a naive double-precision reference (kernels_testlib.h)
 * on random shapes.
 */
#include "kernels_testlib.h"

static void test_activations(void) {
  static const struct {
    uint32_t op, act;
    const char* name;
  } kOps[] = {
      {TETHER_OP_RELU, TETHER_ACT_RELU, "relu"},
      {TETHER_OP_RELU6, TETHER_ACT_RELU6, "relu6"},
      {TETHER_OP_LOGISTIC, TETHER_ACT_SIGMOID, "logistic"},
      {TETHER_OP_TANH, TETHER_ACT_TANH, "tanh"},
      {TETHER_OP_HARD_SWISH, TETHER_ACT_HARD_SWISH, "hard_swish"},
  };
  for (size_t k = 0; k < sizeof(kOps) / sizeof(kOps[0]); k++) {
    const int32_t shape[3] = {2, 3, tb_range(1, 50)};
    tb_builder* b = tb_new();
    uint32_t x = tb_tensor(b, "x", 3, shape, NULL);
    uint32_t y = tb_tensor(b, "y", 3, shape, NULL);
    /* A fused activation on top of the op's own (RELU_N1_TO_1) exercises both paths. */
    tb_op(b, kOps[k].op, TETHER_ACT_RELU_N1_TO_1, kOps[k].name, 1, &x, y);
    const size_t n = elements_of(b, x);
    float* xd = random_data(n);
    for (size_t i = 0; i < n; i++) xd[i] *= 9.0f;  /* cover both clamps of relu6/hard_swish */
    float* got = (float*)malloc(n * 4);
    if (run_op(kOps[k].name, b, 1, &x, &xd, y, got)) {
      double* want = (double*)malloc(n * sizeof(double));
      for (size_t i = 0; i < n; i++) {
        want[i] = activate(activate(xd[i], kOps[k].act), TETHER_ACT_RELU_N1_TO_1);
      }
      compare(kOps[k].name, got, want, n);
      free(want);
    }
    free(xd);
    free(got);
    free(b);
  }
}

/* LEAKY_RELU and ELU: their alpha attribute, both signs, a fused activation on top. */
static void test_alpha_activations(void) {
  for (uint32_t op = TETHER_OP_LEAKY_RELU; op <= TETHER_OP_ELU; op++) {
    const char* name = op == TETHER_OP_ELU ? "elu" : "leaky_relu";
    const int32_t shape[2] = {3, tb_range(1, 60)};
    const float alpha = op == TETHER_OP_ELU ? 1.5f : 0.125f;
    tb_builder* b = tb_new();
    uint32_t x = tb_tensor(b, "x", 2, shape, NULL);
    uint32_t y = tb_tensor(b, "y", 2, shape, NULL);
    tb_op(b, op, TETHER_ACT_RELU6, name, 1, &x, y);
    tb_attr_f(b, TETHER_ATTR_ALPHA, alpha);
    const size_t n = elements_of(b, x);
    float* xd = random_data(n);
    for (size_t i = 0; i < n; i++) xd[i] *= 8.0f;
    float* got = (float*)malloc(n * 4);
    if (run_op(name, b, 1, &x, &xd, y, got)) {
      double* want = (double*)malloc(n * sizeof(double));
      for (size_t i = 0; i < n; i++) {
        const double v = xd[i];
        const double f = v >= 0 ? v : op == TETHER_OP_ELU ? alpha * (exp(v) - 1.0) : alpha * v;
        want[i] = activate(f, TETHER_ACT_RELU6);
      }
      compare(name, got, want, n);
      free(want);
    }
    free(xd);
    free(got);
    free(b);
  }
}

/* GELU, erf form and tanh approximation, over [-10, 10] (both tails), a fused RELU6 on top. */
static void test_gelu(void) {
  for (int32_t approximate = 0; approximate <= 1; approximate++) {
    const char* name = approximate ? "gelu tanh" : "gelu erf";
    const int32_t shape[2] = {3, tb_range(1, 80)};
    tb_builder* b = tb_new();
    uint32_t x = tb_tensor(b, "x", 2, shape, NULL);
    uint32_t y = tb_tensor(b, "y", 2, shape, NULL);
    tb_op(b, TETHER_OP_GELU, TETHER_ACT_RELU6, name, 1, &x, y);
    tb_attr_i(b, TETHER_ATTR_APPROXIMATE, 1, &approximate);
    const size_t n = elements_of(b, x);
    float* xd = random_data(n);
    for (size_t i = 0; i < n; i++) xd[i] *= 10.0f;
    float* got = (float*)malloc(n * 4);
    if (run_op(name, b, 1, &x, &xd, y, got)) {
      double* want = (double*)malloc(n * sizeof(double));
      for (size_t i = 0; i < n; i++) {
        const double v = xd[i];
        const double g = approximate
                             ? 0.5 * v * (1.0 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)))
                             : 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
        want[i] = activate(g, TETHER_ACT_RELU6);
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
  printf("test_activation: isa %s\n", tether_isa());
  test_activations();
  test_alpha_activations();
  test_gelu();
  return kernels_report("test_activation");
}
