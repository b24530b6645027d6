/*
 * test_kernels.c — every op family against a naive reference written here, on random
 * shapes (odd sizes, strides, pads, dilations, groups, depth multipliers).
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

static guarded guarded_new(size_t n) {
  guarded g;
  g.n = n;
  g.raw = (uint8_t*)aligned_alloc(64, (n * 4 + 2 * GUARD + 63) / 64 * 64);
  memset(g.raw, GUARD_BYTE, n * 4 + 2 * GUARD);
  g.p = (float*)(g.raw + GUARD);
  return g;
}

static int guard_intact(const guarded* g) {
  for (size_t i = 0; i < GUARD; i++) {
    if (g->raw[i] != GUARD_BYTE || g->raw[GUARD + g->n * 4 + i] != GUARD_BYTE) return 0;
  }
  return 1;
}

/* ---- running one op ----------------------------------------------------------------- */

static size_t elements_of(const tb_builder* b, uint32_t t) {
  size_t n = 1;
  for (uint32_t d = 0; d < b->tensors[t].ndim; d++) n *= (size_t)b->tensors[t].shape[d];
  return n;
}

/*
 * Builds the model (inputs `ins`, output `out`), runs op 0 both ways and stores the
 * result in y (elements_of(out) floats). Returns 0 when the model fails to load.
 */
static int run_op(const char* name, tb_builder* b, uint32_t n_in, const uint32_t* ins,
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

static void compare(const char* name, const float* got, const double* want, size_t n) {
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

static float* random_data(size_t n) {
  float* p = (float*)malloc((n ? n : 1) * 4);
  for (size_t i = 0; i < n; i++) p[i] = tb_uniform(-1.0f, 1.0f);
  return p;
}

static double activate(double x, uint32_t act) {
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

typedef struct conv_case {
  int n, h, w, c, oc, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, groups, m;
  int bias;  /* 0 absent (2 inputs), 1 present, 2 absent as 0xFFFFFFFF */
  uint32_t act;
} conv_case;

static int out_dim(int in, int pb, int pe, int k, int s, int d) {
  int room = in + pb + pe - d * (k - 1) - 1;
  return room < 0 ? 0 : room / s + 1;
}

/* Zero-padded copy of x: [N, H+pt+pb, W+pl+pr, C], with `mask` 1 where x is real. */
static double* padded_copy(const float* x, int n, int h, int w, int c, int pt, int pl, int pb,
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

/*
 * 1: weights and bias are constants in the model (the loader packs them and the optimized
 * GEMM paths run); 0: they are graph inputs (the reference paths run).
 */
static int g_const_weights;

static void run_conv(const conv_case* k, int depthwise) {
  char name[256];
  snprintf(name, sizeof(name),
           "%s[%s%s] n%d h%d w%d c%d oc%d k%dx%d s%d,%d d%d,%d p%d,%d,%d,%d g%d m%d bias%d act%u",
           depthwise ? "dwconv" : "conv", tether_isa(), g_const_weights ? ",const" : "", k->n, k->h, k->w, k->c, k->oc, k->kh, k->kw, k->sh,
           k->sw, k->dh, k->dw, k->pt, k->pl, k->pb, k->pr, k->groups, k->m, k->bias, k->act);
  const int oh = out_dim(k->h, k->pt, k->pb, k->kh, k->sh, k->dh);
  const int ow = out_dim(k->w, k->pl, k->pr, k->kw, k->sw, k->dw);
  const int oc = depthwise ? k->c * k->m : k->oc;
  const int cg = depthwise ? 1 : k->c / k->groups;
  tb_builder* b = tb_new();
  const size_t wn = (size_t)k->kh * k->kw * oc * (depthwise ? 1 : cg);
  float* wd = random_data(wn);
  float* bd = random_data((size_t)oc);
  const float* wc = g_const_weights ? wd : NULL;
  const float* bc = g_const_weights ? bd : NULL;
  uint32_t x = tb_tensor(b, "x", 4, (const int32_t[]){k->n, k->h, k->w, k->c}, NULL);
  uint32_t wt = depthwise ? tb_tensor(b, "w", 4, (const int32_t[]){1, k->kh, k->kw, oc}, wc)
                          : tb_tensor(b, "w", 4, (const int32_t[]){oc, k->kh, k->kw, cg}, wc);
  uint32_t bt = tb_tensor(b, "b", 1, (const int32_t[]){oc}, bc);
  uint32_t y = tb_tensor(b, "y", 4, (const int32_t[]){k->n, oh, ow, oc}, NULL);
  uint32_t ins[3] = {x, wt, k->bias == 2 ? TETHER_NO_TENSOR : bt};
  tb_op(b, depthwise ? TETHER_OP_DEPTHWISE_CONV_2D : TETHER_OP_CONV_2D, k->act, "op",
        k->bias ? 3 : 2, ins, y);
  tb_attr_i(b, 1, 2, (const int32_t[]){k->sh, k->sw});
  tb_attr_i(b, 2, 2, (const int32_t[]){k->dh, k->dw});
  tb_attr_i(b, 3, 4, (const int32_t[]){k->pt, k->pl, k->pb, k->pr});
  if (depthwise) {
    tb_attr_i(b, 5, 1, &k->m);
  } else {
    tb_attr_i(b, 4, 1, &k->groups);
  }
  float* xd = random_data(elements_of(b, x));
  const size_t ny = (size_t)k->n * oh * ow * oc;
  float* got = (float*)malloc(ny * 4);
  float* in_data[3] = {xd, wd, bd};
  if (run_op(name, b, g_const_weights ? 1 : k->bias == 1 ? 3 : 2, ins, in_data, y, got)) {
    double* want = (double*)malloc(ny * sizeof(double));
    double* xp = padded_copy(xd, k->n, k->h, k->w, k->c, k->pt, k->pl, k->pb, k->pr, 0, NULL);
    const int hp = k->h + k->pt + k->pb, wp = k->w + k->pl + k->pr;
    const int ocg = oc / (depthwise ? 1 : k->groups);
    for (int n = 0; n < k->n; n++)
      for (int i = 0; i < oh; i++)
        for (int j = 0; j < ow; j++)
          for (int o = 0; o < oc; o++) {
            double sum = k->bias == 1 ? bd[o] : 0.0;
            for (int a = 0; a < k->kh; a++)
              for (int c2 = 0; c2 < k->kw; c2++) {
                const int r = i * k->sh + a * k->dh, q = j * k->sw + c2 * k->dw;
                const double* px = xp + (((size_t)n * hp + r) * wp + q) * k->c;
                if (depthwise) {
                  sum += px[o / k->m] * wd[((size_t)a * k->kw + c2) * oc + o];
                } else {
                  const int g = o / ocg;
                  for (int ci = 0; ci < cg; ci++) {
                    sum += px[g * cg + ci] * wd[(((size_t)o * k->kh + a) * k->kw + c2) * cg + ci];
                  }
                }
              }
            want[(((size_t)n * oh + i) * ow + j) * oc + o] = activate(sum, k->act);
          }
    compare(name, got, want, ny);
    free(xp);
    free(want);
  }
  free(xd);
  free(wd);
  free(bd);
  free(got);
  free(b);
}

static void random_conv_case(conv_case* k, int depthwise) {
  do {
    k->n = tb_range(1, 2);
    k->h = tb_range(1, 11);
    k->w = tb_range(1, 11);
    k->groups = depthwise ? 1 : tb_range(1, 3);
    k->c = depthwise ? tb_range(1, 7) : k->groups * tb_range(1, 5);
    k->oc = depthwise ? 0 : k->groups * tb_range(1, 4);
    k->m = depthwise ? tb_range(1, 3) : 1;
    k->kh = tb_range(1, 5);
    k->kw = tb_range(1, 5);
    k->sh = tb_range(1, 3);
    k->sw = tb_range(1, 3);
    k->dh = tb_range(1, 2);
    k->dw = tb_range(1, 2);
    k->pt = tb_range(0, 2);
    k->pl = tb_range(0, 2);
    k->pb = tb_range(0, 2);
    k->pr = tb_range(0, 2);
    k->bias = tb_range(0, 2);
    k->act = (uint32_t)tb_range(0, 6);
  } while (out_dim(k->h, k->pt, k->pb, k->kh, k->sh, k->dh) < 1 ||
           out_dim(k->w, k->pl, k->pr, k->kw, k->sw, k->dw) < 1);
}

static void test_convolutions(void) {
  /* Named edge cases first: stride 2 + dilation 2, asymmetric pads, groups, M = 2. */
  const conv_case fixed[] = {
      {1, 7, 9, 3, 5, 3, 3, 2, 2, 1, 1, 0, 0, 1, 1, 1, 1, 1, TETHER_ACT_NONE},
      {1, 8, 8, 4, 6, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 2, 1, 1, TETHER_ACT_RELU6},
      {2, 5, 6, 6, 6, 3, 2, 2, 1, 1, 2, 1, 0, 0, 1, 3, 1, 2, TETHER_ACT_HARD_SWISH},
      {1, 1, 1, 8, 16, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, TETHER_ACT_NONE},
      {1, 13, 13, 3, 4, 5, 5, 3, 3, 1, 1, 2, 2, 2, 2, 1, 1, 1, TETHER_ACT_SIGMOID},
  };
  for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) run_conv(&fixed[i], 0);
  const conv_case fixed_dw[] = {
      {1, 7, 7, 3, 0, 3, 3, 2, 2, 1, 1, 0, 0, 1, 1, 1, 2, 1, TETHER_ACT_RELU6},
      {1, 9, 8, 5, 0, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 1, 2, 1, TETHER_ACT_NONE},
      {2, 4, 5, 2, 0, 5, 5, 1, 2, 1, 1, 2, 2, 2, 2, 1, 1, 0, TETHER_ACT_TANH},
  };
  for (size_t i = 0; i < sizeof(fixed_dw) / sizeof(fixed_dw[0]); i++) run_conv(&fixed_dw[i], 1);
  for (int i = 0; i < 60; i++) {
    conv_case k;
    random_conv_case(&k, 0);
    run_conv(&k, 0);
    random_conv_case(&k, 1);
    run_conv(&k, 1);
  }
}

/* ---- fully connected ---------------------------------------------------------------- */

static void test_fully_connected(void) {
  for (int t = 0; t < 30; t++) {
    const int lead = tb_range(1, 3);
    int32_t xs[4];
    size_t rows = 1;
    for (int i = 0; i < lead - 1; i++) {
      xs[i] = tb_range(1, 4);
      rows *= (size_t)xs[i];
    }
    const int kk = tb_range(1, 37), o = tb_range(1, 19), bias = tb_range(0, 1);
    const uint32_t act = (uint32_t)tb_range(0, 6);
    xs[lead - 1] = kk;
    int32_t ys[4];
    memcpy(ys, xs, sizeof(xs));
    ys[lead - 1] = o;
    float* wd = random_data((size_t)o * kk);
    float* bd = random_data((size_t)o);
    tb_builder* b = tb_new();
    uint32_t x = tb_tensor(b, "x", (uint32_t)lead, xs, NULL);
    uint32_t w = tb_tensor(b, "w", 2, (const int32_t[]){o, kk}, g_const_weights ? wd : NULL);
    uint32_t bb = tb_tensor(b, "b", 1, (const int32_t[]){o}, g_const_weights ? bd : NULL);
    uint32_t y = tb_tensor(b, "y", (uint32_t)lead, ys, NULL);
    uint32_t ins[3] = {x, w, bb};
    tb_op(b, TETHER_OP_FULLY_CONNECTED, act, "fc", bias ? 3 : 2, ins, y);
    float* xd = random_data(rows * kk);
    float* got = (float*)malloc(rows * o * 4);
    float* in_data[3] = {xd, wd, bd};
    char name[128];
    snprintf(name, sizeof(name), "fc[%s%s] rows%zu k%d o%d bias%d act%u", tether_isa(),
             g_const_weights ? ",const" : "", rows, kk, o, bias, act);
    if (run_op(name, b, g_const_weights ? 1 : bias ? 3 : 2, ins, in_data, y, got)) {
      double* want = (double*)malloc(rows * o * sizeof(double));
      for (size_t r = 0; r < rows; r++)
        for (int j = 0; j < o; j++) {
          double s = bias ? bd[j] : 0;
          for (int i = 0; i < kk; i++) s += (double)xd[r * kk + i] * wd[(size_t)j * kk + i];
          want[r * o + j] = activate(s, act);
        }
      compare(name, got, want, rows * o);
      free(want);
    }
    free(xd);
    free(wd);
    free(bd);
    free(got);
    free(b);
  }
}

/* ---- ADD / MUL ---------------------------------------------------------------------- */

static void test_binary(void) {
  for (int t = 0; t < 80; t++) {
    const uint32_t type = t % 2 ? TETHER_OP_MUL : TETHER_OP_ADD;
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
    snprintf(name, sizeof(name), "%s rank a%d b%d y%d", type == TETHER_OP_ADD ? "add" : "mul", ra,
             rb, ry);
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
        const double v = type == TETHER_OP_ADD ? (double)ad[ia] + bd[ib] : (double)ad[ia] * bd[ib];
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

/* ---- pools -------------------------------------------------------------------------- */

static void test_pools(void) {
  for (int t = 0; t < 80; t++) {
    const int is_max = t % 2 == 0;
    int n, h, w, c, kh, kw, sh, sw, pt, pl, pb, pr, oh, ow;
    do {
      n = tb_range(1, 2);
      h = tb_range(1, 10);
      w = tb_range(1, 10);
      c = tb_range(1, 5);
      kh = tb_range(1, 4);
      kw = tb_range(1, 4);
      sh = tb_range(1, 3);
      sw = tb_range(1, 3);
      pt = tb_range(0, kh - 1);
      pb = tb_range(0, kh - 1);
      pl = tb_range(0, kw - 1);
      pr = tb_range(0, kw - 1);
      oh = out_dim(h, pt, pb, kh, sh, 1);
      ow = out_dim(w, pl, pr, kw, sw, 1);
    } while (oh < 1 || ow < 1);
    const int include_pad = is_max ? 0 : tb_range(0, 1);
    tb_builder* b = tb_new();
    uint32_t x = tb_tensor(b, "x", 4, (const int32_t[]){n, h, w, c}, NULL);
    uint32_t y = tb_tensor(b, "y", 4, (const int32_t[]){n, oh, ow, c}, NULL);
    tb_op(b, is_max ? TETHER_OP_MAX_POOL_2D : TETHER_OP_AVERAGE_POOL_2D, 0, "pool", 1, &x, y);
    tb_attr_i(b, 6, 2, (const int32_t[]){kh, kw});
    tb_attr_i(b, 1, 2, (const int32_t[]){sh, sw});
    tb_attr_i(b, 3, 4, (const int32_t[]){pt, pl, pb, pr});
    if (!is_max) tb_attr_i(b, 7, 1, &include_pad);
    const size_t ny = (size_t)n * oh * ow * c;
    float* xd = random_data((size_t)n * h * w * c);
    float* got = (float*)malloc(ny * 4);
    char name[128];
    snprintf(name, sizeof(name), "%s h%d w%d c%d k%dx%d s%d,%d p%d,%d,%d,%d cip%d",
             is_max ? "maxpool" : "avgpool", h, w, c, kh, kw, sh, sw, pt, pl, pb, pr,
             include_pad);
    if (run_op(name, b, 1, &x, &xd, y, got)) {
      double* mask = NULL;
      double* xp = padded_copy(xd, n, h, w, c, pt, pl, pb, pr, 0, &mask);
      const int hp = h + pt + pb, wp = w + pl + pr;
      double* want = (double*)malloc(ny * sizeof(double));
      for (int bn = 0; bn < n; bn++)
        for (int i = 0; i < oh; i++)
          for (int j = 0; j < ow; j++)
            for (int ch = 0; ch < c; ch++) {
              double best = -INFINITY, sum = 0, count = 0;
              for (int a = 0; a < kh; a++)
                for (int e = 0; e < kw; e++) {
                  size_t at = (((size_t)bn * hp + i * sh + a) * wp + j * sw + e) * c + ch;
                  if (mask[at] == 0) continue;
                  if (xp[at] > best) best = xp[at];
                  sum += xp[at];
                  count += 1;
                }
              if (include_pad) count = kh * kw;
              want[(((size_t)bn * oh + i) * ow + j) * c + ch] = is_max ? best : sum / count;
            }
      compare(name, got, want, ny);
      free(want);
      free(xp);
      free(mask);
    }
    free(xd);
    free(got);
    free(b);
  }
}

/* ---- MEAN --------------------------------------------------------------------------- */

static void test_mean(void) {
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
    tb_op(b, TETHER_OP_MEAN, 0, "mean", 1, &x, y);
    tb_attr_i(b, 8, (uint32_t)naxes, axes);
    tb_attr_i(b, 9, 1, &keepdims);
    const size_t nx = elements_of(b, x), ny = elements_of(b, y);
    float* xd = random_data(nx);
    float* got = (float*)malloc(ny * 4);
    char name[64];
    snprintf(name, sizeof(name), "mean rank%d axes%d keepdims%d", rank, naxes, keepdims);
    if (run_op(name, b, 1, &x, &xd, y, got)) {
      double* want = (double*)calloc(ny, sizeof(double));
      /* For each output element, sum every x element whose kept coordinates match. */
      for (size_t o = 0; o < ny; o++) {
        double sum = 0;
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
            count++;
          }
        }
        want[o] = sum / (double)count;
      }
      compare(name, got, want, ny);
      free(want);
    }
    free(xd);
    free(got);
    free(b);
  }
}

/* ---- RESHAPE, CONCATENATION, PAD ---------------------------------------------------- */

static void test_reshape(void) {
  tb_builder* b = tb_new();
  uint32_t x = tb_tensor(b, "x", 4, (const int32_t[]){1, 3, 5, 7}, NULL);
  uint32_t y = tb_tensor(b, "y", 2, (const int32_t[]){15, 7}, NULL);
  tb_op(b, TETHER_OP_RESHAPE, TETHER_ACT_RELU, "reshape", 1, &x, y);
  float* xd = random_data(105);
  float got[105];
  if (run_op("reshape", b, 1, &x, &xd, y, got)) {
    double want[105];
    for (int i = 0; i < 105; i++) want[i] = activate(xd[i], TETHER_ACT_RELU);
    compare("reshape", got, want, 105);
  }
  free(xd);
  free(b);
}

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

static void test_pad(void) {
  for (int t = 0; t < 40; t++) {
    const int rank = tb_range(1, 4);  /* 2*rank paddings must fit one 8-value attribute */
    int32_t xs[6], ys[6], pads[12];
    for (int d = 0; d < rank; d++) {
      xs[d] = tb_range(1, 4);
      pads[2 * d] = tb_range(0, 2);
      pads[2 * d + 1] = tb_range(0, 2);
      ys[d] = xs[d] + pads[2 * d] + pads[2 * d + 1];
    }
    const float value = tb_range(0, 1) ? 0.0f : tb_uniform(-3, 3);
    tb_builder* b = tb_new();
    uint32_t x = tb_tensor(b, "x", (uint32_t)rank, xs, NULL);
    uint32_t y = tb_tensor(b, "y", (uint32_t)rank, ys, NULL);
    tb_op(b, TETHER_OP_PAD, 0, "pad", 1, &x, y);
    tb_attr_i(b, 11, (uint32_t)(2 * rank), pads);
    if (value != 0.0f) tb_attr_f(b, 12, value);
    const size_t ny = elements_of(b, y);
    float* xd = random_data(elements_of(b, x));
    float* got = (float*)malloc(ny * 4);
    char name[64];
    snprintf(name, sizeof(name), "pad rank%d value%g", rank, value);
    if (run_op(name, b, 1, &x, &xd, y, got)) {
      double* want = (double*)malloc(ny * sizeof(double));
      for (size_t o = 0; o < ny; o++) {
        size_t rest = o, idx = 0;
        int coord[6], inside = 1;
        for (int d = rank - 1; d >= 0; d--) {
          coord[d] = (int)(rest % (size_t)ys[d]) - pads[2 * d];
          rest /= (size_t)ys[d];
          if (coord[d] < 0 || coord[d] >= xs[d]) inside = 0;
        }
        for (int d = 0; inside && d < rank; d++) idx = idx * (size_t)xs[d] + (size_t)coord[d];
        want[o] = inside ? xd[idx] : value;
      }
      compare(name, got, want, ny);
      free(want);
    }
    free(xd);
    free(got);
    free(b);
  }
}

/* ---- SOFTMAX and standalone activations --------------------------------------------- */

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

int main(void) {
  /* Convolutions and FULLY_CONNECTED on every kernel set this CPU has, with weights given
   * as graph inputs (reference conv/FC paths) and as constants (packed GEMM paths). */
  static const char* const kIsas[] = {"scalar", "avx2", "avx512", "neon"};
  for (size_t i = 0; i < sizeof(kIsas) / sizeof(kIsas[0]); i++) {
    if (tether_set_isa(kIsas[i]) != TETHER_STATUS_SUCCESS) continue;
    printf("test_kernels: convolutions and fully connected with isa %s\n", tether_isa());
    for (g_const_weights = 0; g_const_weights < 2; g_const_weights++) {
      test_convolutions();
      test_fully_connected();
    }
  }
  tether_set_isa("auto");
  printf("test_kernels: other ops with isa %s\n", tether_isa());
  test_binary();
  test_pools();
  test_mean();
  test_reshape();
  test_concat();
  test_pad();
  test_softmax();
  test_activations();
  if (tb_failures != 0) {
    fprintf(stderr, "%d check(s) failed\n", tb_failures);
    return 1;
  }
  printf("test_kernels: all checks passed\n");
  return 0;
}
