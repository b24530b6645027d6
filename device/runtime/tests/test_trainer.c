/*
 * test_trainer.c — the head trainer (tether_trainer_*): gradients against a double reference
 * of the same head (itself checked by central differences), SGD-momentum and Adam against a
 * double reimplementation of Keras's update rules, training that learns, predict against a
 * session of the exported image (bit for bit), no allocation during steps, and the errors.
 *
 * The head: x [1, 2, 2, 6] -> MEAN over H, W -> [1, 6] -> FULLY_CONNECTED 6->8 + RELU ->
 * FULLY_CONNECTED 8->5 -> SOFTMAX.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tmodel_builder.h"
#include "memory_check.h"

#define H 2
#define W 2
#define C 6
#define HID 8
#define K 5
#define IN (H * W * C)

static int g_failures;
#define CHECK(cond, ...)                                   \
  do {                                                     \
    if (!(cond)) {                                         \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                        \
      fprintf(stderr, "\n");                               \
      g_failures++;                                        \
    }                                                      \
  } while (0)

static uint64_t g_rng = 12345;
static float uniform(float lo, float hi) {
  g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
  return lo + (hi - lo) * (float)(g_rng >> 40) / 16777216.0f;
}

typedef struct weights {
  float w1[HID * C], b1[HID], w2[K * HID], b2[K];
} weights;

/* The head as a .tmodel; with `conv`, a CONV_2D stands where the MEAN is (unsupported). */
static uint8_t* build(const weights* p, int conv, size_t* size) {
  tb_builder* b = tb_new();
  uint32_t x = tb_tensor(b, "features", 4, (int32_t[]){1, H, W, C}, NULL);
  uint32_t pooled = tb_tensor(b, "pooled", 2, (int32_t[]){1, C}, NULL);
  if (conv) {
    static float cw[C * C];
    uint32_t wt = tb_tensor(b, "cw", 4, (int32_t[]){C, 1, 1, C}, cw);
    uint32_t y = tb_tensor(b, "conv_out", 4, (int32_t[]){1, H, W, C}, NULL);
    tb_op(b, TETHER_OP_CONV_2D, TETHER_ACT_NONE, "conv", 2, (uint32_t[]){x, wt}, y);
    tb_attr_i(b, 1, 2, (int32_t[]){1, 1});
    x = y;
  }
  tb_op(b, TETHER_OP_MEAN, TETHER_ACT_NONE, "pool", 1, (uint32_t[]){x}, pooled);
  tb_attr_i(b, 8, 2, (int32_t[]){1, 2});
  uint32_t w1 = tb_tensor(b, "dense_1/kernel", 2, (int32_t[]){HID, C}, p->w1);
  uint32_t b1 = tb_tensor(b, "dense_1/bias", 1, (int32_t[]){HID}, p->b1);
  uint32_t h1 = tb_tensor(b, "hidden", 2, (int32_t[]){1, HID}, NULL);
  tb_op(b, TETHER_OP_FULLY_CONNECTED, TETHER_ACT_RELU, "dense_1", 3, (uint32_t[]){pooled, w1, b1},
        h1);
  uint32_t w2 = tb_tensor(b, "dense_2/kernel", 2, (int32_t[]){K, HID}, p->w2);
  uint32_t b2 = tb_tensor(b, "dense_2/bias", 1, (int32_t[]){K}, p->b2);
  uint32_t z = tb_tensor(b, "logits", 2, (int32_t[]){1, K}, NULL);
  tb_op(b, TETHER_OP_FULLY_CONNECTED, TETHER_ACT_NONE, "dense_2", 3, (uint32_t[]){h1, w2, b2}, z);
  uint32_t y = tb_tensor(b, "probs", 2, (int32_t[]){1, K}, NULL);
  tb_op(b, TETHER_OP_SOFTMAX, TETHER_ACT_NONE, "softmax", 1, (uint32_t[]){z}, y);
  tb_graph_io(b, 1, (uint32_t[]){conv ? 0 : x}, 1, &y);
  uint8_t* file = tb_finish(b, size);
  free(b);
  return file;
}

/* ---- the reference: the head in double, with its gradients ------------------------------- */

typedef struct dweights {
  double w1[HID * C], b1[HID], w2[K * HID], b2[K];
} dweights;

static void to_double(const weights* p, dweights* d) {
  for (int i = 0; i < HID * C; i++) d->w1[i] = p->w1[i];
  for (int i = 0; i < HID; i++) d->b1[i] = p->b1[i];
  for (int i = 0; i < K * HID; i++) d->w2[i] = p->w2[i];
  for (int i = 0; i < K; i++) d->b2[i] = p->b2[i];
}

/* Mean loss over `rows` (plus l2 * sum of squared kernels); gradients into g when not NULL. */
static double ref_loss(const dweights* p, const float* x, const int32_t* y, int rows, double l2,
                       dweights* g) {
  if (g != NULL) memset(g, 0, sizeof(*g));
  double loss = 0.0;
  for (int r = 0; r < rows; r++) {
    double pooled[C] = {0}, h[HID], z[K];
    for (int i = 0; i < H * W; i++) {
      for (int c = 0; c < C; c++) pooled[c] += x[r * IN + i * C + c] / (double)(H * W);
    }
    for (int o = 0; o < HID; o++) {
      double s = p->b1[o];
      for (int c = 0; c < C; c++) s += p->w1[o * C + c] * pooled[c];
      h[o] = s > 0 ? s : 0;
    }
    double mx = -1e300;
    for (int o = 0; o < K; o++) {
      double s = p->b2[o];
      for (int j = 0; j < HID; j++) s += p->w2[o * HID + j] * h[j];
      z[o] = s;
      mx = s > mx ? s : mx;
    }
    double sum = 0;
    for (int o = 0; o < K; o++) sum += exp(z[o] - mx);
    loss += (mx + log(sum) - z[y[r]]) / rows;
    if (g == NULL) continue;
    double dz[K], dh[HID] = {0};
    for (int o = 0; o < K; o++) dz[o] = (exp(z[o] - mx) / sum - (o == y[r])) / rows;
    for (int o = 0; o < K; o++) {
      g->b2[o] += dz[o];
      for (int j = 0; j < HID; j++) {
        g->w2[o * HID + j] += dz[o] * h[j];
        dh[j] += dz[o] * p->w2[o * HID + j];
      }
    }
    for (int o = 0; o < HID; o++) {
      if (h[o] <= 0) continue;
      g->b1[o] += dh[o];
      for (int c = 0; c < C; c++) g->w1[o * C + c] += dh[o] * pooled[c];
    }
  }
  double sq = 0;
  for (int i = 0; i < HID * C; i++) sq += p->w1[i] * p->w1[i];
  for (int i = 0; i < K * HID; i++) sq += p->w2[i] * p->w2[i];
  if (g != NULL) {
    for (int i = 0; i < HID * C; i++) g->w1[i] += 2 * l2 * p->w1[i];
    for (int i = 0; i < K * HID; i++) g->w2[i] += 2 * l2 * p->w2[i];
  }
  return loss + l2 * sq;
}

static double* slot(dweights* d, int param) {
  return param == 0 ? d->w1 : param == 1 ? d->b1 : param == 2 ? d->w2 : d->b2;
}
static const int g_sizes[4] = {HID * C, HID, K * HID, K};

/* ---- fixtures -------------------------------------------------------------------------- */

static void make_data(weights* p, float* x, int32_t* y, int rows) {
  for (int i = 0; i < HID * C; i++) p->w1[i] = uniform(-0.8f, 0.8f);
  for (int i = 0; i < HID; i++) p->b1[i] = uniform(-0.1f, 0.3f);
  for (int i = 0; i < K * HID; i++) p->w2[i] = uniform(-0.8f, 0.8f);
  for (int i = 0; i < K; i++) p->b2[i] = uniform(-0.1f, 0.1f);
  /* each class lights up its own channel */
  for (int r = 0; r < rows; r++) {
    y[r] = r % K;
    for (int i = 0; i < IN; i++) x[r * IN + i] = uniform(0.0f, 0.5f);
    for (int i = 0; i < H * W; i++) x[r * IN + i * C + y[r]] += 2.0f;
  }
}

typedef struct fixture {
  uint8_t* file;
  size_t size;
  tether_model_t model;
  void* arena;
  tether_trainer_t trainer;
} fixture;

static int open_trainer(fixture* f, const weights* p, const tether_train_config* cfg) {
  memset(f, 0, sizeof(*f));
  f->file = build(p, 0, &f->size);
  if (tether_model_load(f->file, f->size, NULL, &f->model) != TETHER_STATUS_SUCCESS) {
    fprintf(stderr, "load: %s\n", tether_last_error());
    return 0;
  }
  size_t bytes = 0;
  if (tether_trainer_arena_size(f->model, cfg, &bytes) != TETHER_STATUS_SUCCESS) {
    fprintf(stderr, "arena size: %s\n", tether_last_error());
    return 0;
  }
  f->arena = aligned_alloc(TETHER_ARENA_ALIGNMENT, bytes);
  if (tether_trainer_create(f->model, cfg, f->arena, bytes, &f->trainer) !=
      TETHER_STATUS_SUCCESS) {
    fprintf(stderr, "create: %s\n", tether_last_error());
    return 0;
  }
  return 1;
}

static void close_trainer(fixture* f) {
  tether_trainer_destroy(f->trainer);
  tether_model_destroy(f->model);
  free(f->arena);
  free(f->file);
}

/* ---- tests ----------------------------------------------------------------------------- */

static void test_reference_gradients_match_central_differences(void) {
  weights p;
  float x[4 * IN];
  int32_t y[4];
  make_data(&p, x, y, 4);
  dweights d, g;
  to_double(&p, &d);
  ref_loss(&d, x, y, 4, 0.01, &g);
  for (int param = 0; param < 4; param++) {
    for (int i = 0; i < g_sizes[param]; i += 3) {
      double* v = &slot(&d, param)[i];
      const double keep = *v, e = 1e-6;
      *v = keep + e;
      const double up = ref_loss(&d, x, y, 4, 0.01, NULL);
      *v = keep - e;
      const double down = ref_loss(&d, x, y, 4, 0.01, NULL);
      *v = keep;
      const double fd = (up - down) / (2 * e);
      CHECK(fabs(fd - slot(&g, param)[i]) <= 1e-6 + 1e-5 * fabs(fd),
            "reference gradient param %d[%d]: analytic %g, central difference %g", param, i,
            slot(&g, param)[i], fd);
    }
  }
}

/* One step: the trainer's loss and gradients equal the reference's (1e-4 relative). */
static void test_one_step_gradients(void) {
  weights p;
  float x[8 * IN];
  int32_t y[8];
  make_data(&p, x, y, 8);
  tether_train_config cfg;
  tether_train_config_default(&cfg);
  cfg.batch_size = 8;
  cfg.optimizer = TETHER_OPTIMIZER_SGD;
  cfg.learning_rate = 0.1f;
  cfg.l2 = 0.01f;
  fixture f;
  if (!open_trainer(&f, &p, &cfg)) {
    g_failures++;
    return;
  }
  CHECK(tether_trainer_param_count(f.trainer) == 4, "4 trained tensors, got %zu",
        tether_trainer_param_count(f.trainer));
  CHECK(tether_trainer_input_elements(f.trainer) == IN && tether_trainer_classes(f.trainer) == K,
        "input %zu, classes %zu", tether_trainer_input_elements(f.trainer),
        tether_trainer_classes(f.trainer));
  dweights d, g;
  to_double(&p, &d);
  const double want = ref_loss(&d, x, y, 8, 0.01, &g);
  float loss = 0;
  CHECK(tether_trainer_step(f.trainer, x, y, 8, &loss) == TETHER_STATUS_SUCCESS, "step: %s",
        tether_last_error());
  CHECK(fabs(loss - want) <= 1e-5 * fabs(want), "loss %g, reference %g", loss, want);
  const char* names[4] = {"dense_1/kernel", "dense_1/bias", "dense_2/kernel", "dense_2/bias"};
  for (size_t param = 0; param < 4; param++) {
    const char* name = NULL;
    size_t n = 0;
    const float* value = NULL;
    const float* grad = NULL;
    tether_trainer_param(f.trainer, param, &name, &n, &value, &grad);
    CHECK(name != NULL && strcmp(name, names[param]) == 0 && n == (size_t)g_sizes[param],
          "param %zu is '%s' of %zu", param, name ? name : "(null)", n);
    double scale = 0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(slot(&g, (int)param)[i]));
    for (size_t i = 0; i < n; i++) {
      const double r = slot(&g, (int)param)[i];
      CHECK(fabs(grad[i] - r) <= 1e-4 * scale + 1e-7, "grad %s[%zu]: %g, reference %g",
            names[param], i, grad[i], r);
      /* plain SGD: w1 = w0 - lr * g */
      const double w1 = slot(&d, (int)param)[i] - 0.1 * r;
      CHECK(fabs(value[i] - w1) <= 1e-5 * (fabs(w1) + scale), "value %s[%zu]: %g, want %g",
            names[param], i, value[i], w1);
    }
  }
  close_trainer(&f);
}

/* 100 steps of SGD-momentum and of Adam with a cosine schedule track a double
 * reimplementation of Keras 3's update rules within 1e-4 on the loss. */
static void test_optimizers_track_keras_rules(int optimizer) {
  weights p;
  enum { N = 40, B = 10 };
  float x[N * IN];
  int32_t y[N];
  make_data(&p, x, y, N);
  tether_train_config cfg;
  tether_train_config_default(&cfg);
  cfg.batch_size = B;
  cfg.optimizer = (uint32_t)optimizer;
  cfg.learning_rate = optimizer == TETHER_OPTIMIZER_ADAM ? 0.01f : 0.05f;
  cfg.momentum = 0.9f;
  cfg.l2 = 1e-3f;
  cfg.schedule = TETHER_LR_COSINE;
  cfg.decay_steps = 80;
  cfg.final_lr_ratio = 0.1f;
  fixture f;
  if (!open_trainer(&f, &p, &cfg)) {
    g_failures++;
    return;
  }
  dweights d, g, m1, m2;
  to_double(&p, &d);
  memset(&m1, 0, sizeof(m1));
  memset(&m2, 0, sizeof(m2));
  double first = 0, last = 0;
  for (int step = 0; step < 100; step++) {
    const float* xb = x + (step % (N / B)) * B * IN;
    const int32_t* yb = y + (step % (N / B)) * B;
    const double want = ref_loss(&d, xb, yb, B, cfg.l2, &g);
    float loss = 0;
    tether_trainer_step(f.trainer, xb, yb, B, &loss);
    CHECK(fabs(loss - want) <= 1e-4 * fabs(want), "%s step %d: loss %.7g, Keras rule %.7g",
          optimizer ? "adam" : "sgd", step, loss, want);
    if (step == 0) first = want;
    last = want;
    const double s = step < 80 ? step : 80;
    const double lr = cfg.learning_rate * (0.9 * 0.5 * (1 + cos(3.141592653589793 * s / 80)) + 0.1);
    for (int param = 0; param < 4; param++) {
      double* w = slot(&d, param);
      double* gr = slot(&g, param);
      double* a = slot(&m1, param);
      double* v = slot(&m2, param);
      for (int i = 0; i < g_sizes[param]; i++) {
        if (optimizer == TETHER_OPTIMIZER_ADAM) {
          const double t = step + 1;
          const double alpha = lr * sqrt(1 - pow(0.999, t)) / (1 - pow(0.9, t));
          a[i] += (gr[i] - a[i]) * 0.1;
          v[i] += (gr[i] * gr[i] - v[i]) * 0.001;
          w[i] -= a[i] * alpha / (sqrt(v[i]) + 1e-7);
        } else {
          a[i] = 0.9 * a[i] - lr * gr[i];
          w[i] += a[i];
        }
      }
    }
  }
  CHECK(last < 0.5 * first, "%s: the loss fell from %g to %g only", optimizer ? "adam" : "sgd",
        first, last);
  close_trainer(&f);
}

/* predict equals a session of the exported image bit for bit; the image loads (checksum). */
static void test_export_reloads_bit_identical(void) {
  weights p;
  float x[16 * IN];
  int32_t y[16];
  make_data(&p, x, y, 16);
  tether_train_config cfg;
  tether_train_config_default(&cfg);
  cfg.batch_size = 16;
  cfg.learning_rate = 0.05f;
  cfg.dropout = 0.25f;
  fixture f;
  if (!open_trainer(&f, &p, &cfg)) {
    g_failures++;
    return;
  }
  for (int s = 0; s < 100; s++) tether_trainer_step(f.trainer, x, y, 16, NULL);
  float probs[16 * K];
  CHECK(tether_trainer_predict(f.trainer, x, 16, probs) == TETHER_STATUS_SUCCESS, "predict: %s",
        tether_last_error());
  int hits = 0;
  for (int r = 0; r < 16; r++) {
    int best = 0;
    for (int o = 1; o < K; o++) best = probs[r * K + o] > probs[r * K + best] ? o : best;
    hits += best == y[r];
  }
  CHECK(hits >= 15, "trained head gets %d of 16", hits);
  const size_t size = tether_trainer_export_size(f.trainer);
  CHECK(size == f.size, "export size %zu, model %zu", size, f.size);
  uint8_t* image = (uint8_t*)aligned_alloc(64, (size + 63) / 64 * 64);
  CHECK(tether_trainer_export(f.trainer, image, size) == TETHER_STATUS_SUCCESS, "export: %s",
        tether_last_error());
  CHECK(memcmp(image, f.file, size) != 0, "the exported weights changed nothing");
  tether_model_t again = NULL;
  CHECK(tether_model_load(image, size, NULL, &again) == TETHER_STATUS_SUCCESS, "reload: %s",
        tether_last_error());
  tether_session_t s = NULL;
  tether_session_create(again, NULL, 0, 1, &s);
  for (int r = 0; r < 16; r++) {
    float out[K];
    tether_session_set_input(s, 0, x + r * IN, IN * sizeof(float));
    tether_session_invoke(s);
    tether_session_get_output(s, 0, out, sizeof(out));
    CHECK(memcmp(out, probs + r * K, sizeof(out)) == 0, "row %d: session %.9g, predict %.9g", r,
          out[0], probs[r * K]);
  }
  tether_session_destroy(s);
  tether_model_destroy(again);
  free(image);
  close_trainer(&f);
}

/* The model's allocator sees no request from create, steps, predict or export. */
static void test_no_allocation(void) {
  weights p;
  float x[8 * IN];
  int32_t y[8];
  make_data(&p, x, y, 8);
  size_t size = 0;
  uint8_t* file = build(&p, 0, &size);
  tm_counter counter;
  memset(&counter, 0, sizeof(counter));
  tether_allocator alloc = {&counter, tm_count_allocate, tm_count_deallocate};
  tether_model_t model = NULL;
  tether_model_load(file, size, &alloc, &model);
  const size_t calls = counter.calls;
  tether_train_config cfg;
  tether_train_config_default(&cfg);
  cfg.batch_size = 8;
  cfg.dropout = 0.1f;
  size_t bytes = 0;
  tether_trainer_arena_size(model, &cfg, &bytes);
  CHECK(bytes % TETHER_ARENA_ALIGNMENT == 0, "arena size %zu", bytes);
  void* arena = aligned_alloc(64, bytes);
  tether_trainer_t t = NULL;
  CHECK(tether_trainer_create(model, &cfg, arena, bytes - 64, &t) ==
            TETHER_STATUS_INVALID_ARGUMENT && strstr(tether_last_error(), "needs") != NULL,
        "a small arena: %s", tether_last_error());
  CHECK(tether_trainer_create(model, &cfg, arena, bytes, &t) == TETHER_STATUS_SUCCESS, "%s",
        tether_last_error());
  float probs[8 * K];
  uint8_t* image = (uint8_t*)aligned_alloc(64, (size + 63) / 64 * 64);
  for (int s = 0; s < 5; s++) tether_trainer_step(t, x, y, 8, NULL);
  tether_trainer_predict(t, x, 8, probs);
  tether_trainer_export(t, image, size);
  CHECK(counter.calls == calls, "%zu allocations during training", counter.calls - calls);
  tether_trainer_destroy(t);
  tether_model_destroy(model);
  free(image);
  free(arena);
  free(file);
}

static void test_errors_name_the_fault(void) {
  weights p;
  float x[4 * IN];
  int32_t y[4];
  make_data(&p, x, y, 4);
  tether_train_config cfg;
  tether_train_config_default(&cfg);
  cfg.batch_size = 4;
  size_t size = 0, bytes = 0;
  uint8_t* file = build(&p, 1, &size);
  tether_model_t model = NULL;
  tether_model_load(file, size, NULL, &model);
  CHECK(tether_trainer_arena_size(model, &cfg, &bytes) == TETHER_STATUS_UNSUPPORTED_OP &&
            strstr(tether_last_error(), "'conv' (CONV_2D)") != NULL,
        "a conv in the head: %s", tether_last_error());
  cfg.head_input = "pooled";  /* start after the conv and the pool */
  CHECK(tether_trainer_arena_size(model, &cfg, &bytes) == TETHER_STATUS_SUCCESS, "%s",
        tether_last_error());
  cfg.head_input = "nope";
  CHECK(tether_trainer_arena_size(model, &cfg, &bytes) == TETHER_STATUS_INVALID_ARGUMENT &&
            strstr(tether_last_error(), "'nope'") != NULL,
        "unknown head input: %s", tether_last_error());
  cfg.head_input = NULL;
  cfg.dropout = 1.0f;
  CHECK(tether_trainer_arena_size(model, &cfg, &bytes) == TETHER_STATUS_INVALID_ARGUMENT &&
            strstr(tether_last_error(), "dropout") != NULL,
        "dropout 1: %s", tether_last_error());
  tether_model_destroy(model);
  free(file);

  cfg.dropout = 0.0f;
  fixture f;
  if (!open_trainer(&f, &p, &cfg)) {
    g_failures++;
    return;
  }
  int32_t bad[4] = {0, 1, 7, 2};
  CHECK(tether_trainer_step(f.trainer, x, bad, 4, NULL) == TETHER_STATUS_INVALID_ARGUMENT &&
            strstr(tether_last_error(), "label 2 is 7") != NULL,
        "label out of range: %s", tether_last_error());
  CHECK(tether_trainer_step(f.trainer, x, y, 5, NULL) == TETHER_STATUS_INVALID_ARGUMENT &&
            strstr(tether_last_error(), "rows is 5") != NULL,
        "too many rows: %s", tether_last_error());
  uint8_t small[8];
  CHECK(tether_trainer_export(f.trainer, small, sizeof(small)) == TETHER_STATUS_INVALID_ARGUMENT,
        "export into 8 bytes");
  tether_trainer_destroy(f.trainer);
  CHECK(tether_trainer_step(f.trainer, x, y, 4, NULL) == TETHER_STATUS_INVALID_ARGUMENT &&
            strstr(tether_last_error(), "destroyed") != NULL,
        "a destroyed trainer: %s", tether_last_error());
  f.trainer = NULL;
  close_trainer(&f);
}

/* EWC: gradients() (no update) equal the plain gradients plus lambda * F * (w - anchor), the
 * loss carries (lambda / 2) * sum(F (w - anchor)^2), and the weights stay put. */
static void test_ewc_penalty_and_gradients_without_update(void) {
  weights p;
  float x[6 * IN];
  int32_t y[6];
  make_data(&p, x, y, 6);
  tether_train_config cfg;
  tether_train_config_default(&cfg);
  cfg.batch_size = 6;
  cfg.ewc_lambda = 5.0f;
  fixture f;
  if (!open_trainer(&f, &p, &cfg)) {
    g_failures++;
    return;
  }
  dweights d, g;
  to_double(&p, &d);
  double want = ref_loss(&d, x, y, 6, 0.0, &g);
  for (int param = 0; param < 4; param++) {
    float fisher[HID * C], anchor[HID * C];
    const double* w = slot(&d, param);
    for (int i = 0; i < g_sizes[param]; i++) {
      fisher[i] = 0.5f + 0.01f * (float)i;
      anchor[i] = (float)w[i] - 0.1f;
      want += 0.5 * 5.0 * fisher[i] * 0.01;  /* (w - anchor)^2 = 0.01 */
      slot(&g, param)[i] += 5.0 * fisher[i] * ((float)w[i] - anchor[i]);
    }
    CHECK(tether_trainer_set_penalty(f.trainer, (size_t)param, fisher, anchor) ==
              TETHER_STATUS_SUCCESS, "set_penalty: %s", tether_last_error());
  }
  float loss = 0;
  CHECK(tether_trainer_gradients(f.trainer, x, y, 6, &loss) == TETHER_STATUS_SUCCESS, "%s",
        tether_last_error());
  CHECK(fabs(loss - want) <= 1e-5 * fabs(want), "loss %g, reference %g", loss, want);
  for (size_t param = 0; param < 4; param++) {
    const float* value = NULL;
    const float* grad = NULL;
    size_t n = 0;
    tether_trainer_param(f.trainer, param, NULL, &n, &value, &grad);
    for (size_t i = 0; i < n; i++) {
      const double r = slot(&g, (int)param)[i];
      CHECK(fabs(grad[i] - r) <= 1e-4 * (fabs(r) + 1e-3), "ewc grad %zu[%zu]: %g, want %g",
            param, i, grad[i], r);
      CHECK(value[i] == (float)slot(&d, (int)param)[i], "gradients() moved weight %zu[%zu]",
            param, i);
    }
  }
  const float bad[1] = {-1.0f};
  CHECK(tether_trainer_set_penalty(f.trainer, 3, bad, NULL) == TETHER_STATUS_INVALID_ARGUMENT,
        "a negative Fisher value is refused");
  close_trainer(&f);
  cfg.ewc_lambda = 0.0f;
  if (!open_trainer(&f, &p, &cfg)) {
    g_failures++;
    return;
  }
  const float ones[HID * C] = {1.0f};
  CHECK(tether_trainer_set_penalty(f.trainer, 0, ones, NULL) == TETHER_STATUS_INVALID_ARGUMENT &&
            strstr(tether_last_error(), "EWC is off") != NULL,
        "EWC off: %s", tether_last_error());
  close_trainer(&f);
}

int main(void) {
  test_reference_gradients_match_central_differences();
  test_one_step_gradients();
  test_optimizers_track_keras_rules(TETHER_OPTIMIZER_SGD);
  test_optimizers_track_keras_rules(TETHER_OPTIMIZER_ADAM);
  test_export_reloads_bit_identical();
  test_no_allocation();
  test_errors_name_the_fault();
  test_ewc_penalty_and_gradients_without_update();
  if (g_failures != 0) {
    fprintf(stderr, "%d failure(s)\n", g_failures);
    return 1;
  }
  printf("trainer: all passed\n");
  return 0;
}
