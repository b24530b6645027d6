/*
 * test_binary.c — ADD, MUL, MAXIMUM, MINIMUM and PRELU (float32) with broadcasting, against a naive double-precision reference (kernels_testlib.h)
 * on random shapes.
 */
#include "kernels_testlib.h"

static void test_binary(void) {
  for (int t = 0; t < 80; t++) {
    static const uint32_t kTypes[5] = {TETHER_OP_ADD, TETHER_OP_MUL, TETHER_OP_MAXIMUM,
                                       TETHER_OP_MINIMUM, TETHER_OP_PRELU};
    static const char* const kNames[5] = {"add", "mul", "maximum", "minimum", "prelu"};
    const uint32_t type = kTypes[t % 5];
    const int rank = tb_range(0, 6);
    int32_t out[6], as[6], bs[6];
    for (int d = 0; d < rank; d++) out[d] = tb_range(1, 4);
    /* Each input: a suffix of the output rank, dims randomly 1 (broadcast). */
    const int ra = tb_range(0, rank), rb = tb_range(0, rank);
    for (int d = 0; d < ra; d++) as[d] = tb_range(0, 2) ? out[rank - ra + d] : 1;
    for (int d = 0; d < rb; d++) bs[d] = tb_range(0, 2) ? out[rank - rb + d] : 1;
    /* The output is the broadcast of the two (dims only one side reaches become 1). */
    int32_t ys[6];
    const int ry = ra > rb ? ra : rb;
    for (int d = 0; d < ry; d++) {
      const int da = d - (ry - ra), db = d - (ry - rb);
      const int va = da >= 0 ? as[da] : 1, vb = db >= 0 ? bs[db] : 1;
      ys[d] = va > vb ? va : vb;
    }
    tb_builder* b = tb_new();
    uint32_t a = tb_tensor(b, "a", (uint32_t)ra, as, NULL);
    uint32_t bt = tb_tensor(b, "b", (uint32_t)rb, bs, NULL);
    uint32_t y = tb_tensor(b, "y", (uint32_t)ry, ys, NULL);
    const uint32_t act = (uint32_t)tb_range(0, 2);
    uint32_t ins[2] = {a, bt};
    tb_op(b, type, act, "binary", 2, ins, y);
    const size_t na = elements_of(b, a), nb = elements_of(b, bt), ny = elements_of(b, y);
    float* ad = random_data(na);
    float* bd = random_data(nb);
    float* got = (float*)malloc(ny * 4);
    float* in_data[2] = {ad, bd};
    char name[64];
    snprintf(name, sizeof(name), "%s rank a%d b%d y%d", kNames[t % 5], ra, rb, ry);
    if (run_op(name, b, 2, ins, in_data, y, got)) {
      double* want = (double*)malloc(ny * sizeof(double));
      for (size_t i = 0; i < ny; i++) {
        /* Unravel i over y, then ravel onto a and b with broadcast dims pinned to 0. */
        int coord[6];
        size_t rest = i;
        for (int d = ry - 1; d >= 0; d--) {
          coord[d] = (int)(rest % (size_t)ys[d]);
          rest /= (size_t)ys[d];
        }
        size_t ia = 0, ib = 0;
        for (int d = 0; d < ra; d++) {
          const int c = coord[d + (ry - ra)];
          ia = ia * (size_t)as[d] + (size_t)(as[d] == 1 ? 0 : c);
        }
        for (int d = 0; d < rb; d++) {
          const int c = coord[d + (ry - rb)];
          ib = ib * (size_t)bs[d] + (size_t)(bs[d] == 1 ? 0 : c);
        }
        const double va = ad[ia], vb = bd[ib];
        const double v = type == TETHER_OP_ADD       ? va + vb
                         : type == TETHER_OP_MUL     ? va * vb
                         : type == TETHER_OP_MAXIMUM ? (va > vb ? va : vb)
                         : type == TETHER_OP_MINIMUM ? (va < vb ? va : vb)
                                                     : (va < 0 ? va * vb : va);
        want[i] = activate(v, act);
      }
      compare(name, got, want, ny);
      free(want);
    }
    free(ad);
    free(bd);
    free(got);
    free(b);
  }
  /* Incompatible shapes are rejected at load, naming the op. */
  tb_builder* b = tb_new();
  uint32_t a = tb_tensor(b, "a", 2, (const int32_t[]){2, 3}, NULL);
  uint32_t c = tb_tensor(b, "c", 2, (const int32_t[]){2, 4}, NULL);
  uint32_t y = tb_tensor(b, "y", 2, (const int32_t[]){2, 4}, NULL);
  tb_op(b, TETHER_OP_ADD, 0, "bad_add", 2, (const uint32_t[]){a, c}, y);
  tb_graph_io(b, 2, (const uint32_t[]){a, c}, 1, &y);
  size_t size;
  uint8_t* file = tb_finish(b, &size);
  tether_model_t model = NULL;
  TB_CHECK(tether_model_load(file, size, NULL, &model) == TETHER_STATUS_FORMAT_ERROR &&
               strstr(tether_last_error(), "op 0 'bad_add' (ADD)") != NULL,
           "bad broadcast: %s", tether_last_error());
  free(file);
  free(b);
}

int main(void) {
  printf("test_binary: isa %s\n", tether_isa());
  test_binary();
  return kernels_report("test_binary");
}
