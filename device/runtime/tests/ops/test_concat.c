/*
 * test_concat.c — CONCATENATION (float32), against a naive double-precision reference (kernels_testlib.h)
 * on random shapes.
 */
#include "kernels_testlib.h"

static void test_concat(void) {
  for (int t = 0; t < 40; t++) {
    const int rank = tb_range(1, 5);
    const int axis = tb_range(0, rank - 1);
    const int k = tb_range(1, 4);
    int32_t base[6];
    for (int d = 0; d < rank; d++) base[d] = tb_range(1, 4);
    tb_builder* b = tb_new();
    uint32_t ins[4];
    float* in_data[4];
    int32_t sizes[4];
    int total = 0;
    for (int i = 0; i < k; i++) {
      int32_t s[6];
      memcpy(s, base, sizeof(s));
      s[axis] = sizes[i] = tb_range(1, 5);
      total += sizes[i];
      ins[i] = tb_tensor(b, "x", (uint32_t)rank, s, NULL);
    }
    int32_t ys[6];
    memcpy(ys, base, sizeof(ys));
    ys[axis] = total;
    uint32_t y = tb_tensor(b, "y", (uint32_t)rank, ys, NULL);
    tb_op(b, TETHER_OP_CONCATENATION, 0, "concat", (uint32_t)k, ins, y);
    tb_attr_i(b, 10, 1, &axis);
    for (int i = 0; i < k; i++) in_data[i] = random_data(elements_of(b, ins[i]));
    const size_t ny = elements_of(b, y);
    float* got = (float*)malloc(ny * 4);
    char name[64];
    snprintf(name, sizeof(name), "concat rank%d axis%d inputs%d", rank, axis, k);
    if (run_op(name, b, (uint32_t)k, ins, in_data, y, got)) {
      double* want = (double*)malloc(ny * sizeof(double));
      for (size_t o = 0; o < ny; o++) {
        int coord[6];
        size_t rest = o;
        for (int d = rank - 1; d >= 0; d--) {
          coord[d] = (int)(rest % (size_t)ys[d]);
          rest /= (size_t)ys[d];
        }
        int which = 0, a = coord[axis];
        while (a >= sizes[which]) a -= sizes[which++];
        coord[axis] = a;
        size_t idx = 0;
        for (int d = 0; d < rank; d++) {
          idx = idx * (size_t)(d == axis ? sizes[which] : base[d]) + (size_t)coord[d];
        }
        want[o] = in_data[which][idx];
      }
      compare(name, got, want, ny);
      free(want);
    }
    for (int i = 0; i < k; i++) free(in_data[i]);
    free(got);
    free(b);
  }
}

int main(void) {
  printf("test_concat: isa %s\n", tether_isa());
  test_concat();
  return kernels_report("test_concat");
}
