/*
 * test_threads.c — a small MobileNet-like model (3x3 stride-2 conv through im2col, 3x3
 * depthwise, 1x1 conv, dense) with constant weights, run with 1, 2, 3 and 4 threads and
 * with the same session invoked repeatedly: every output must be bit-identical, and equal
 * to the single-thread reference-path result within float tolerance.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tether/tether.h"
#include "tmodel_builder.h"

static float* random_floats(size_t n, float scale) {
  float* p = (float*)malloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++) p[i] = tb_uniform(-scale, scale);
  return p;
}

/* Two threads invoking one session (2 pool threads) at once, many times: each invoke either
 * runs or is refused as concurrent; none hangs, crashes or leaves a wrong output. */
typedef struct racer {
  tether_session_t session;
  int runs, refused, failed;
} racer;

static void* race(void* arg) {
  racer* r = (racer*)arg;
  for (int i = 0; i < 400; i++) {
    const tether_status s = tether_session_invoke(r->session);
    if (s == TETHER_STATUS_SUCCESS) {
      r->runs++;
    } else if (s == TETHER_STATUS_INVALID_ARGUMENT) {
      r->refused++;
    } else {
      r->failed++;
    }
  }
  return NULL;
}

static void window_attrs(tb_builder* b, int stride, int pad) {
  tb_attr_i(b, 1, 2, (const int32_t[]){stride, stride});
  tb_attr_i(b, 2, 2, (const int32_t[]){1, 1});
  tb_attr_i(b, 3, 4, (const int32_t[]){pad, pad, pad, pad});
}

int main(void) {
  /* Every op above TETHER_PARALLEL_MIN_WORK (ops/ops.h), so each one is split. */
  const int H = 57, W = 61, C = 3, C1 = 24, C2 = 40, O = 10;
  const int H1 = (H + 2 - 3) / 2 + 1, W1 = (W + 2 - 3) / 2 + 1;
  float* w1 = random_floats((size_t)C1 * 9 * C, 0.5f);
  float* b1 = random_floats(C1, 0.1f);
  float* w2 = random_floats((size_t)9 * C1, 0.5f);
  float* b2 = random_floats(C1, 0.1f);
  float* w3 = random_floats((size_t)C2 * C1, 0.3f);
  float* b3 = random_floats(C2, 0.1f);
  float* w4 = random_floats((size_t)O * C2, 0.3f);
  float* b4 = random_floats(O, 0.1f);
  tb_builder* b = tb_new();
  uint32_t x = tb_tensor(b, "x", 4, (const int32_t[]){1, H, W, C}, NULL);
  uint32_t t1 = tb_tensor(b, "t1", 4, (const int32_t[]){1, H1, W1, C1}, NULL);
  uint32_t t2 = tb_tensor(b, "t2", 4, (const int32_t[]){1, H1, W1, C1}, NULL);
  uint32_t t3 = tb_tensor(b, "t3", 4, (const int32_t[]){1, H1, W1, C2}, NULL);
  uint32_t y = tb_tensor(b, "y", 4, (const int32_t[]){1, H1, W1, O}, NULL);
  uint32_t cw1 = tb_tensor(b, "w1", 4, (const int32_t[]){C1, 3, 3, C}, w1);
  uint32_t cb1 = tb_tensor(b, "b1", 1, (const int32_t[]){C1}, b1);
  uint32_t cw2 = tb_tensor(b, "w2", 4, (const int32_t[]){1, 3, 3, C1}, w2);
  uint32_t cb2 = tb_tensor(b, "b2", 1, (const int32_t[]){C1}, b2);
  uint32_t cw3 = tb_tensor(b, "w3", 4, (const int32_t[]){C2, 1, 1, C1}, w3);
  uint32_t cb3 = tb_tensor(b, "b3", 1, (const int32_t[]){C2}, b3);
  uint32_t cw4 = tb_tensor(b, "w4", 2, (const int32_t[]){O, C2}, w4);
  uint32_t cb4 = tb_tensor(b, "b4", 1, (const int32_t[]){O}, b4);
  tb_op(b, TETHER_OP_CONV_2D, TETHER_ACT_RELU6, "conv", 3, (const uint32_t[]){x, cw1, cb1}, t1);
  window_attrs(b, 2, 1);
  tb_attr_i(b, 4, 1, (const int32_t[]){1});
  tb_op(b, TETHER_OP_DEPTHWISE_CONV_2D, TETHER_ACT_RELU, "dw", 3,
        (const uint32_t[]){t1, cw2, cb2}, t2);
  window_attrs(b, 1, 1);
  tb_attr_i(b, 5, 1, (const int32_t[]){1});
  tb_op(b, TETHER_OP_CONV_2D, TETHER_ACT_NONE, "pw", 3, (const uint32_t[]){t2, cw3, cb3}, t3);
  window_attrs(b, 1, 0);
  tb_attr_i(b, 4, 1, (const int32_t[]){1});
  tb_op(b, TETHER_OP_FULLY_CONNECTED, TETHER_ACT_NONE, "fc", 3,
        (const uint32_t[]){t3, cw4, cb4}, y);
  tb_graph_io(b, 1, &x, 1, &y);
  size_t size = 0;
  uint8_t* file = tb_finish(b, &size);
  const size_t nx = (size_t)H * W * C, ny = (size_t)H1 * W1 * O;
  float* input = random_floats(nx, 1.0f);
  float* first = (float*)malloc(ny * sizeof(float));
  float* got = (float*)malloc(ny * sizeof(float));
  printf("test_threads: isa %s\n", tether_isa());
  for (uint32_t threads = 1; threads <= 4; threads++) {
    tether_model_t model = NULL;
    tether_session_t session = NULL;
    TB_CHECK(tether_model_load(file, size, NULL, &model) == TETHER_STATUS_SUCCESS, "load: %s",
             tether_last_error());
    if (model == NULL) break;
    TB_CHECK(tether_session_create(model, NULL, 0, threads, &session) == TETHER_STATUS_SUCCESS,
             "create with %u threads: %s", threads, tether_last_error());
    if (session == NULL) break;
    for (int rep = 0; rep < 3; rep++) {
      tether_session_set_input(session, 0, input, nx * sizeof(float));
      TB_CHECK(tether_session_invoke(session) == TETHER_STATUS_SUCCESS, "invoke");
      tether_session_get_output(session, 0, threads == 1 && rep == 0 ? first : got,
                                ny * sizeof(float));
      if (threads == 1 && rep == 0) continue;
      TB_CHECK(memcmp(first, got, ny * sizeof(float)) == 0,
               "%u threads, invoke %d: output differs from 1 thread", threads, rep);
    }
    tether_session_destroy(session);
    tether_model_destroy(model);
  }
  {
    tether_model_t model = NULL;
    tether_session_t session = NULL;
    tether_model_load(file, size, NULL, &model);
    TB_CHECK(tether_session_create(model, NULL, 0, TETHER_MAX_THREADS + 1, &session) ==
                 TETHER_STATUS_INVALID_ARGUMENT && session == NULL,
             "more than TETHER_MAX_THREADS threads must be refused");
    tether_session_create(model, NULL, 0, 2, &session);
    tether_session_set_input(session, 0, input, nx * sizeof(float));
    racer r[2] = {{session, 0, 0, 0}, {session, 0, 0, 0}};
    pthread_t th[2];
    for (int k = 0; k < 2; k++) pthread_create(&th[k], NULL, race, &r[k]);
    for (int k = 0; k < 2; k++) pthread_join(th[k], NULL);
    TB_CHECK(r[0].failed + r[1].failed == 0 && r[0].runs + r[1].runs > 0 &&
                 r[0].runs + r[1].runs + r[0].refused + r[1].refused == 800,
             "concurrent invokes: %d + %d ran, %d + %d refused, %d failed", r[0].runs,
             r[1].runs, r[0].refused, r[1].refused, r[0].failed + r[1].failed);
    tether_session_get_output(session, 0, got, ny * sizeof(float));
    TB_CHECK(memcmp(first, got, ny * sizeof(float)) == 0,
             "output after concurrent invokes differs from the single-thread result");
    tether_session_destroy(session);
    tether_model_destroy(model);
  }
  /* The multi-threaded result is also right: against the scalar kernels (tolerance). */
  tether_set_isa("scalar");
  tether_model_t model = NULL;
  tether_session_t session = NULL;
  tether_model_load(file, size, NULL, &model);
  tether_session_create(model, NULL, 0, 1, &session);
  tether_session_set_input(session, 0, input, nx * sizeof(float));
  tether_session_invoke(session);
  tether_session_get_output(session, 0, got, ny * sizeof(float));
  double worst = 0;
  for (size_t i = 0; i < ny; i++) {
    const double e = fabs((double)got[i] - first[i]) / (1.0 + fabs((double)got[i]));
    if (!(e <= worst)) worst = e;
  }
  TB_CHECK(worst < 1e-5, "differs from the scalar kernels by %g (relative)", worst);
  tether_session_destroy(session);
  tether_model_destroy(model);
  free(file);
  free(b);
  free(input);
  free(first);
  free(got);
  free(w1); free(b1); free(w2); free(b2); free(w3); free(b3); free(w4); free(b4);
  if (tb_failures != 0) {
    fprintf(stderr, "%d check(s) failed\n", tb_failures);
    return 1;
  }
  printf("test_threads: 1-4 threads bit-identical, within %.2g of scalar\n", worst);
  return 0;
}
