/*
 * kernels_testlib.h — what the per-family op tests (tests/ops/test_<family>.c) share: guarded
 * buffers, a one-op model run both through tether_op_eval and through a session (results
 * must be bit-identical), comparison against a double-precision reference, random data and
 * the fused activations in double.
 *
 * Each case is a one-op model whose every input is a graph input, built with the test-only
 * builder, so the loader's attribute decoding and shape checks run too. The op is then
 * evaluated twice:
 *   - directly (tether_op_eval) on separately allocated buffers with guard bytes on both
 *     sides and a NaN-filled output, so an overrun or an unwritten element is caught;
 *   - through the public API (session with a caller arena followed by sentinel bytes),
 *     which must give bit-identical results.
 * References accumulate in double and use a different formulation where one exists (conv
 * and pools through an explicitly padded copy, broadcasting through unravelled indices).
 */
#ifndef TETHER_KERNELS_TESTLIB_H_
#define TETHER_KERNELS_TESTLIB_H_

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "tether/tether.h"
#include "tmodel_builder.h"

#define GUARD 64
#define GUARD_BYTE 0xCD

/* ---- guarded buffers ---------------------------------------------------------------- */

typedef struct guarded {
  uint8_t* raw;
  float* p;
  size_t n;
} guarded;

static inline guarded guarded_new(size_t n) {
  guarded g;
  g.n = n;
  g.raw = (uint8_t*)aligned_alloc(64, (n * 4 + 2 * GUARD + 63) / 64 * 64);
  memset(g.raw, GUARD_BYTE, n * 4 + 2 * GUARD);
  g.p = (float*)(g.raw + GUARD);
  return g;
}

static inline int guard_intact(const guarded* g) {
  for (size_t i = 0; i < GUARD; i++) {
    if (g->raw[i] != GUARD_BYTE || g->raw[GUARD + g->n * 4 + i] != GUARD_BYTE) return 0;
  }
  return 1;
}

/* ---- running one op ----------------------------------------------------------------- */

static inline size_t elements_of(const tb_builder* b, uint32_t t) {
  size_t n = 1;
  for (uint32_t d = 0; d < b->tensors[t].ndim; d++) n *= (size_t)b->tensors[t].shape[d];
  return n;
}

/*
 * Builds the model (inputs `ins`, output `out`), runs op 0 both ways and stores the
 * result in y (elements_of(out) floats). Returns 0 when the model fails to load.
 */
static inline int run_op(const char* name, tb_builder* b, uint32_t n_in, const uint32_t* ins,
                  float* const* in_data, uint32_t out, float* y) {
  tb_graph_io(b, n_in, ins, 1, &out);
  size_t size = 0;
  uint8_t* file = tb_finish(b, &size);
  tether_model_t model = NULL;
  tether_status s = tether_model_load(file, size, NULL, &model);
  TB_CHECK(s == TETHER_STATUS_SUCCESS, "%s: load: %s", name, tether_last_error());
  if (s != TETHER_STATUS_SUCCESS) {
    free(file);
    return 0;
  }
  const size_t ny = elements_of(b, out);
  void** data = (void**)calloc(b->tensor_count, sizeof(void*));
  guarded bufs[16];
  for (uint32_t i = 0; i < n_in; i++) {
    bufs[i] = guarded_new(elements_of(b, ins[i]));
    memcpy(bufs[i].p, in_data[i], bufs[i].n * 4);
    data[ins[i]] = bufs[i].p;
  }
  for (uint32_t t = 0; t < model->tensor_count; t++) {  /* constants: in the model */
    if (model->tensors[t].flags & TETHER_TENSOR_CONSTANT) {
      data[t] = (void*)(uintptr_t)model->tensors[t].data;
    }
  }
  guarded yb = guarded_new(ny);
  for (size_t i = 0; i < ny; i++) yb.p[i] = NAN;
  data[out] = yb.p;
  guarded scratch = guarded_new(model->scratch_bytes / 4 + 1);
  tether_op_eval(model, 0, data, scratch.p);
  for (uint32_t i = 0; i < n_in; i++) {
    TB_CHECK(guard_intact(&bufs[i]), "%s: guard of input %u damaged", name, i);
    TB_CHECK(memcmp(bufs[i].p, in_data[i], bufs[i].n * 4) == 0, "%s: input %u was modified",
             name, i);
  }
  TB_CHECK(guard_intact(&yb), "%s: output overrun", name);
  TB_CHECK(guard_intact(&scratch), "%s: scratch overrun", name);
  memcpy(y, yb.p, ny * 4);

  /* The same op through the public API, with sentinels after the caller's arena. */
  size_t arena_size = 0;
  tether_session_arena_size(model, &arena_size);
  size_t padded = (arena_size + 128 + 63) / 64 * 64;
  uint8_t* arena = (uint8_t*)aligned_alloc(64, padded);
  memset(arena, GUARD_BYTE, padded);
  tether_session_t session = NULL;
  s = tether_session_create(model, arena, arena_size, 1, &session);
  TB_CHECK(s == TETHER_STATUS_SUCCESS, "%s: create: %s", name, tether_last_error());
  if (s == TETHER_STATUS_SUCCESS) {
    for (uint32_t i = 0; i < n_in; i++) {
      TB_CHECK(tether_session_set_input(session, i, in_data[i], bufs[i].n * 4) ==
                   TETHER_STATUS_SUCCESS,
               "%s: set_input %u", name, i);
    }
    TB_CHECK(tether_session_invoke(session) == TETHER_STATUS_SUCCESS, "%s: invoke", name);
    float* y2 = (float*)malloc(ny * 4);
    TB_CHECK(tether_session_get_output(session, 0, y2, ny * 4) == TETHER_STATUS_SUCCESS,
             "%s: get_output", name);
    TB_CHECK(memcmp(y, y2, ny * 4) == 0, "%s: session result differs from direct eval", name);
    free(y2);
    for (size_t i = arena_size; i < padded; i++) {
      if (arena[i] != GUARD_BYTE) {
        TB_CHECK(0, "%s: wrote past the arena", name);
        break;
      }
    }
    tether_session_destroy(session);
  }
  free(arena);
  for (uint32_t i = 0; i < n_in; i++) free(bufs[i].raw);
  free(yb.raw);
  free(scratch.raw);
  free(data);
  tether_model_destroy(model);
  free(file);
  return 1;
}

/* Builds a one-op model (input `x`, output `y`), loads it and expects status `want`; a
 * failing load's error must name `needle`. Frees `b`. */
static inline void expect_load(const char* name, tb_builder* b, uint32_t x, uint32_t y,
                               tether_status want, const char* needle) {
  tb_graph_io(b, 1, &x, 1, &y);
  size_t size = 0;
  uint8_t* file = tb_finish(b, &size);
  tether_model_t model = NULL;
  const tether_status s = tether_model_load(file, size, NULL, &model);
  TB_CHECK(s == want, "%s: load gave %s, want %s (%s)", name, tether_status_string(s),
           tether_status_string(want), tether_last_error());
  if (s != TETHER_STATUS_SUCCESS) {
    TB_CHECK(strstr(tether_last_error(), needle) != NULL, "%s: error '%s' lacks '%s'", name,
             tether_last_error(), needle);
  }
  tether_model_destroy(model);
  free(file);
  free(b);
}

/*
 * The int8 twin of run_op for one-input ops: builds the model (input `x`, output `y`), runs
 * op 0 directly on guarded buffers (the input must stay unchanged) and through a session;
 * both must agree, and `got` receives the ny output bytes. Returns 0 when the model fails
 * to load.
 */
static inline int run_q8_op(const char* name, tb_builder* b, uint32_t x, uint32_t y,
                            const int8_t* xd, size_t nx, int8_t* got, size_t ny) {
  tb_graph_io(b, 1, &x, 1, &y);
  size_t size = 0;
  uint8_t* file = tb_finish(b, &size);
  tether_model_t model = NULL;
  tether_status s = tether_model_load(file, size, NULL, &model);
  TB_CHECK(s == TETHER_STATUS_SUCCESS, "%s: load: %s", name, tether_last_error());
  if (s != TETHER_STATUS_SUCCESS) {
    free(file);
    return 0;
  }
  uint8_t* xb = (uint8_t*)malloc(nx + 2 * GUARD);
  uint8_t* yb = (uint8_t*)malloc(ny + 2 * GUARD);
  memset(xb, GUARD_BYTE, nx + 2 * GUARD);
  memset(yb, GUARD_BYTE, ny + 2 * GUARD);
  memcpy(xb + GUARD, xd, nx);
  void* data[2] = {xb + GUARD, yb + GUARD};
  tether_op_eval(model, 0, data, NULL);
  for (size_t i = 0; i < GUARD; i++) {
    TB_CHECK(xb[i] == GUARD_BYTE && xb[GUARD + nx + i] == GUARD_BYTE, "%s: input guard", name);
    TB_CHECK(yb[i] == GUARD_BYTE && yb[GUARD + ny + i] == GUARD_BYTE, "%s: output overrun",
             name);
  }
  TB_CHECK(memcmp(xb + GUARD, xd, nx) == 0, "%s: input was modified", name);
  memcpy(got, yb + GUARD, ny);
  size_t arena_size = 0;
  tether_session_arena_size(model, &arena_size);
  uint8_t* arena = (uint8_t*)aligned_alloc(64, (arena_size + 63) / 64 * 64 + 64);
  tether_session_t session = NULL;
  s = tether_session_create(model, arena, arena_size, 1, &session);
  TB_CHECK(s == TETHER_STATUS_SUCCESS, "%s: create: %s", name, tether_last_error());
  if (s == TETHER_STATUS_SUCCESS) {
    int8_t* y2 = (int8_t*)malloc(ny);
    TB_CHECK(tether_session_set_input(session, 0, xd, nx) == TETHER_STATUS_SUCCESS, "%s", name);
    TB_CHECK(tether_session_invoke(session) == TETHER_STATUS_SUCCESS, "%s: invoke", name);
    TB_CHECK(tether_session_get_output(session, 0, y2, ny) == TETHER_STATUS_SUCCESS, "%s", name);
    TB_CHECK(memcmp(y2, got, ny) == 0, "%s: session result differs from direct eval", name);
    free(y2);
    tether_session_destroy(session);
  }
  free(arena);
  free(xb);
  free(yb);
  tether_model_destroy(model);
  free(file);
  return 1;
}

static inline void compare(const char* name, const float* got, const double* want, size_t n) {
  double worst = 0;
  size_t at = 0;
  int bad = 0;
  for (size_t i = 0; i < n; i++) {
    double err = fabs((double)got[i] - want[i]);
    double tol = 1e-5 + 1e-5 * fabs(want[i]);
    if (!(err <= tol)) {  /* NaN (an unwritten output) fails too */
      if (!bad || err > worst || isnan(err)) {
        worst = err;
        at = i;
      }
      bad = 1;
    }
  }
  TB_CHECK(!bad, "%s: element %zu is %.9g, want %.9g (err %g)", name, at, got[at], want[at],
           worst);
}

static inline float* random_data(size_t n) {
  float* p = (float*)malloc((n ? n : 1) * 4);
  for (size_t i = 0; i < n; i++) p[i] = tb_uniform(-1.0f, 1.0f);
  return p;
}

static inline double activate(double x, uint32_t act) {
  switch (act) {
    case TETHER_ACT_RELU: return x > 0 ? x : 0;
    case TETHER_ACT_RELU6: return x < 0 ? 0 : x > 6 ? 6 : x;
    case TETHER_ACT_RELU_N1_TO_1: return x < -1 ? -1 : x > 1 ? 1 : x;
    case TETHER_ACT_TANH: return tanh(x);
    case TETHER_ACT_SIGMOID: return 1 / (1 + exp(-x));
    case TETHER_ACT_HARD_SWISH: {
      double r = x + 3;
      r = r < 0 ? 0 : r > 6 ? 6 : r;
      return x * r / 6;
    }
  }
  return x;
}

/* ---- convolutions ------------------------------------------------------------------- */

static inline int out_dim(int in, int pb, int pe, int k, int s, int d) {
  int room = in + pb + pe - d * (k - 1) - 1;
  return room < 0 ? 0 : room / s + 1;
}

/* Zero-padded copy of x: [N, H+pt+pb, W+pl+pr, C], with `mask` 1 where x is real. */
static inline double* padded_copy(const float* x, int n, int h, int w, int c, int pt, int pl, int pb,
                           int pr, double fill, double** mask) {
  const int hp = h + pt + pb, wp = w + pl + pr;
  size_t total = (size_t)n * hp * wp * c;
  double* p = (double*)malloc(total * sizeof(double));
  double* m = (double*)calloc(total, sizeof(double));
  for (size_t i = 0; i < total; i++) p[i] = fill;
  for (int b = 0; b < n; b++)
    for (int i = 0; i < h; i++)
      for (int j = 0; j < w; j++)
        for (int k = 0; k < c; k++) {
          size_t dst = (((size_t)b * hp + i + pt) * wp + j + pl) * c + k;
          p[dst] = x[(((size_t)b * h + i) * w + j) * c + k];
          m[dst] = 1;
        }
  if (mask) *mask = m; else free(m);
  return p;
}

/* Reports and returns the exit status of a test program named `name`. */
static inline int kernels_report(const char* name) {
  if (tb_failures != 0) {
    fprintf(stderr, "%s: %d check(s) failed\n", name, tb_failures);
    return 1;
  }
  printf("%s: all checks passed\n", name);
  return 0;
}

#endif  /* TETHER_KERNELS_TESTLIB_H_ */
