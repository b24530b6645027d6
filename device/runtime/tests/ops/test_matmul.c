/*
 * test_matmul.c — BATCH_MATMUL (float32) on random ranks 2..5, broadcast batch dims, prime
 * and tile-crossing M, K, N, both adjoint flags, A and B each a graph input or a constant,
 * with and without a fused activation: against a double-precision oracle that unravels the
 * broadcast itself, through run_op (guarded buffers, then a session), through a 3-thread
 * session (bit-identical to one thread) and through the reference kernel. int8 (TFLite's
 * BatchMatMul) on the same random geometry, every zero point nonzero, A and B constant or
 * computed, with and without a fused RELU: against an int64 sum of (a - z_a)(b - z_b) and the
 * reference kernel, bit for bit, on 1 and 3 threads. Mismatched K, batch dims that do not
 * broadcast, a wrong output shape, bad adjoint values and an int8 A with a float B fail the
 * load, naming what is wrong.
 */
#include "kernels_testlib.h"
#include "reference/reference.h"

typedef struct mm_case {
  int ra, rb;
  int32_t as[6], bs[6], ys[6];
  int adj_a, adj_b;
  int m, k, n;
} mm_case;

/* A random case: batch dims 1..3 (sometimes 1 on one side only: broadcast). */
static mm_case random_case(int t) {
  static const int kSizes[] = {1, 2, 3, 5, 7, 8, 13, 17, 19, 31, 37};
  mm_case c;
  c.ra = tb_range(2, 5);
  c.rb = t % 4 == 0 ? 2 : tb_range(2, 5);
  c.adj_a = t % 3 == 1;
  c.adj_b = t % 5 >= 3;
  c.m = kSizes[tb_range(0, 10)];
  c.k = kSizes[tb_range(0, 10)];
  c.n = kSizes[tb_range(0, 10)];
  const int rank = (c.ra > c.rb ? c.ra : c.rb) - 2;
  for (int d = 0; d < rank; d++) {
    const int ext = tb_range(1, 3), la = rank - (c.ra - 2), lb = rank - (c.rb - 2);
    const int which = tb_range(0, 3);  /* 0: both ext, 1: A is 1, 2: B is 1, 3: both ext */
    const int32_t da = d >= la ? (c.as[d - la] = which == 1 ? 1 : ext) : 1;
    const int32_t db = d >= lb ? (c.bs[d - lb] = which == 2 ? 1 : ext) : 1;
    c.ys[d] = da > db ? da : db;
  }
  c.as[c.ra - 2] = c.adj_a ? c.k : c.m;
  c.as[c.ra - 1] = c.adj_a ? c.m : c.k;
  c.bs[c.rb - 2] = c.adj_b ? c.n : c.k;
  c.bs[c.rb - 1] = c.adj_b ? c.k : c.n;
  c.ys[rank] = c.m;
  c.ys[rank + 1] = c.n;
  return c;
}

/* Element offset of batch `bt` (an index over the output's batch dims) in an operand of rank
 * r and shape s, its missing and size-1 dims broadcast. */
static size_t operand_offset(const mm_case* c, int r, const int32_t* s, size_t bt) {
  const int rank = (c->ra > c->rb ? c->ra : c->rb) - 2, lead = rank - (r - 2);
  size_t idx[6];
  for (int d = rank; d-- > 0;) {
    idx[d] = bt % (size_t)c->ys[d];
    bt /= (size_t)c->ys[d];
  }
  size_t off = 0;
  for (int d = lead; d < rank; d++) {
    off = off * (size_t)s[d - lead] + (s[d - lead] == 1 ? 0 : idx[d]);
  }
  return off * (size_t)s[r - 2] * (size_t)s[r - 1];
}

static void want_of(const mm_case* c, const float* a, const float* b, uint32_t act,
                    double* want, size_t batches) {
  for (size_t bt = 0; bt < batches; bt++) {
    const float* at = a + operand_offset(c, c->ra, c->as, bt);
    const float* btm = b + operand_offset(c, c->rb, c->bs, bt);
    for (int i = 0; i < c->m; i++) {
      for (int j = 0; j < c->n; j++) {
        double acc = 0;
        for (int kk = 0; kk < c->k; kk++) {
          const float av = c->adj_a ? at[kk * c->m + i] : at[i * c->k + kk];
          const float bv = c->adj_b ? btm[j * c->k + kk] : btm[kk * c->n + j];
          acc += (double)av * bv;
        }
        want[(bt * (size_t)c->m + (size_t)i) * (size_t)c->n + (size_t)j] = activate(acc, act);
      }
    }
  }
}

/* The model again, run by a session with 3 threads: bit-identical to `got`. */
static void check_threads(const char* name, const tb_builder* b, const float* const* in_data,
                          const size_t* in_n, uint32_t n_in, const float* got, size_t ny) {
  size_t size = 0;
  uint8_t* file = tb_finish(b, &size);
  tether_model_t model = NULL;
  size_t arena_size = 0;
  if (tether_model_load(file, size, NULL, &model) != TETHER_STATUS_SUCCESS ||
      tether_session_arena_size(model, &arena_size) != TETHER_STATUS_SUCCESS) {
    TB_CHECK(0, "%s: threads: load: %s", name, tether_last_error());
    free(file);
    return;
  }
  void* arena = aligned_alloc(64, (arena_size + 63) / 64 * 64);
  tether_session_t session = NULL;
  TB_CHECK(tether_session_create(model, arena, arena_size, 3, &session) == TETHER_STATUS_SUCCESS,
           "%s: threads: create: %s", name, tether_last_error());
  if (session != NULL) {
    for (uint32_t i = 0; i < n_in; i++) {
      tether_session_set_input(session, i, in_data[i], in_n[i] * 4);
    }
    float* y = (float*)malloc(ny * 4);
    TB_CHECK(tether_session_invoke(session) == TETHER_STATUS_SUCCESS &&
                 tether_session_get_output(session, 0, y, ny * 4) == TETHER_STATUS_SUCCESS,
             "%s: threads: invoke", name);
    TB_CHECK(memcmp(y, got, ny * 4) == 0, "%s: 3 threads differ from 1", name);
    free(y);
    tether_session_destroy(session);
  }
  free(arena);
  tether_model_destroy(model);
  free(file);
}

static void test_batch_matmul(void) {
  for (int t = 0; t < 80; t++) {
    const mm_case c = random_case(t);
    const int b_const = t % 2 == 1, a_const = !b_const && t % 7 == 2;
    const uint32_t act = t % 6 == 5 ? TETHER_ACT_RELU : t % 11 == 4 ? TETHER_ACT_TANH : 0;
    tb_builder* b = tb_new();
    size_t na = 1, nb = 1, ny = 1;
    for (int d = 0; d < c.ra; d++) na *= (size_t)c.as[d];
    for (int d = 0; d < c.rb; d++) nb *= (size_t)c.bs[d];
    const int ry = (c.ra > c.rb ? c.ra : c.rb);
    for (int d = 0; d < ry; d++) ny *= (size_t)c.ys[d];
    float* ad = random_data(na);
    float* bd = random_data(nb);
    const uint32_t ta = tb_tensor(b, "a", (uint32_t)c.ra, c.as, a_const ? ad : NULL);
    const uint32_t tbb = tb_tensor(b, "b", (uint32_t)c.rb, c.bs, b_const ? bd : NULL);
    const uint32_t y = tb_tensor(b, "y", (uint32_t)ry, c.ys, NULL);
    const uint32_t ins[2] = {ta, tbb};
    tb_op(b, TETHER_OP_BATCH_MATMUL, act, "mm", 2, ins, y);
    if (c.adj_a || c.adj_b || t % 8 == 0) {
      const int32_t adj[2] = {c.adj_a, c.adj_b};
      tb_attr_i(b, TETHER_ATTR_ADJOINT, 2, adj);
    }
    uint32_t graph_in[2];
    float* in_data[2];
    size_t in_n[2];
    uint32_t n_in = 0;
    if (!a_const) { graph_in[n_in] = ta; in_n[n_in] = na; in_data[n_in++] = ad; }
    if (!b_const) { graph_in[n_in] = tbb; in_n[n_in] = nb; in_data[n_in++] = bd; }
    char name[128];
    snprintf(name, sizeof(name), "batch_matmul #%d A%dD%s B%dD%s m%d k%d n%d adj%d%d act%u", t,
             c.ra, a_const ? "c" : "", c.rb, b_const ? "c" : "", c.m, c.k, c.n, c.adj_a,
             c.adj_b, act);
    float* got = (float*)malloc(ny * 4);
    if (run_op(name, b, n_in, graph_in, in_data, y, got)) {
      const size_t batches = ny / ((size_t)c.m * (size_t)c.n);
      double* want = (double*)malloc(ny * sizeof(double));
      want_of(&c, ad, bd, act, want, batches);
      compare(name, got, want, ny);
      check_threads(name, b, (const float* const*)in_data, in_n, n_in, got, ny);
      if (act == 0) {  /* the reference kernel against the same oracle */
        tether_matmul_geometry g;
        tether_matmul_geometry_init(&g, (uint32_t)c.ra, c.as, (uint32_t)c.rb, c.bs, c.adj_a,
                                    c.adj_b);
        float* ref = (float*)malloc(ny * 4);
        tether_ref_f32_batch_matmul(&g, ad, bd, ref);
        char ref_name[160];
        snprintf(ref_name, sizeof(ref_name), "%s (reference)", name);
        compare(ref_name, ref, want, ny);
        free(ref);
      }
      free(want);
    }
    free(got);
    free(ad);
    free(bd);
    free(b);
  }
}

/* Runs an int8 model on a session of `threads` threads (arena followed by sentinels). */
static int run_q8_session(const char* name, const uint8_t* file, size_t size, uint32_t threads,
                          const int8_t* const* in_data, const size_t* in_n, uint32_t n_in,
                          int8_t* y, size_t ny) {
  tether_model_t model = NULL;
  size_t arena_size = 0;
  if (tether_model_load(file, size, NULL, &model) != TETHER_STATUS_SUCCESS ||
      tether_session_arena_size(model, &arena_size) != TETHER_STATUS_SUCCESS) {
    TB_CHECK(0, "%s: load: %s", name, tether_last_error());
    tether_model_destroy(model);
    return 0;
  }
  const size_t padded = (arena_size + 128 + 63) / 64 * 64;
  uint8_t* arena = (uint8_t*)aligned_alloc(64, padded);
  memset(arena, GUARD_BYTE, padded);
  tether_session_t session = NULL;
  const tether_status s = tether_session_create(model, arena, arena_size, threads, &session);
  TB_CHECK(s == TETHER_STATUS_SUCCESS, "%s: create: %s", name, tether_last_error());
  int ok = 0;
  if (s == TETHER_STATUS_SUCCESS) {
    for (uint32_t i = 0; i < n_in; i++) tether_session_set_input(session, i, in_data[i], in_n[i]);
    ok = tether_session_invoke(session) == TETHER_STATUS_SUCCESS &&
         tether_session_get_output(session, 0, y, ny) == TETHER_STATUS_SUCCESS;
    TB_CHECK(ok, "%s: %u threads: invoke: %s", name, threads, tether_last_error());
    for (size_t i = arena_size; i < padded; i++) {
      if (arena[i] != GUARD_BYTE) {
        TB_CHECK(0, "%s: arena overrun", name);
        break;
      }
    }
    tether_session_destroy(session);
  }
  free(arena);
  tether_model_destroy(model);
  return ok;
}

static int8_t* random_q8(size_t n) {
  int8_t* p = (int8_t*)malloc(n + 1);
  for (size_t i = 0; i < n; i++) p[i] = (int8_t)tb_range(-128, 127);
  return p;
}

static void test_q8_batch_matmul(void) {
  for (int t = 0; t < 60; t++) {
    const mm_case c = random_case(t + 1000);
    const int b_const = t % 2 == 1, a_const = !b_const && t % 7 == 2;
    const uint32_t act = t % 5 == 4 ? TETHER_ACT_RELU : 0;
    size_t na = 1, nb = 1, ny = 1;
    for (int d = 0; d < c.ra; d++) na *= (size_t)c.as[d];
    for (int d = 0; d < c.rb; d++) nb *= (size_t)c.bs[d];
    const int ry = (c.ra > c.rb ? c.ra : c.rb);
    for (int d = 0; d < ry; d++) ny *= (size_t)c.ys[d];
    int8_t* ad = random_q8(na);
    int8_t* bd = random_q8(nb);
    /* s_a * s_b / s_y spans 2^-16 .. 2^-4; every zero point nonzero */
    const float sa = 0.01f * (float)tb_range(1, 50), sb = 0.002f * (float)tb_range(1, 50);
    const float sy = sa * sb * (float)tb_range(16, 65536) / 7.0f;
    const int32_t za = tb_range(-100, 100) | 1, zb = tb_range(-100, 100) | 1;
    const int32_t zy = tb_range(-60, 60) | 1;
    tb_builder* b = tb_new();
    const uint32_t ta = tb_tensor_typed(b, "a", TETHER_DTYPE_INT8, (uint32_t)c.ra, c.as,
                                        a_const ? ad : NULL);
    tb_quantize(b, ta, 0, 1, &sa, &za);
    const uint32_t tbb = tb_tensor_typed(b, "b", TETHER_DTYPE_INT8, (uint32_t)c.rb, c.bs,
                                         b_const ? bd : NULL);
    tb_quantize(b, tbb, 0, 1, &sb, &zb);
    const uint32_t y = tb_tensor_typed(b, "y", TETHER_DTYPE_INT8, (uint32_t)ry, c.ys, NULL);
    tb_quantize(b, y, 0, 1, &sy, &zy);
    tb_op(b, TETHER_OP_BATCH_MATMUL, act, "mm", 2, (const uint32_t[]){ta, tbb}, y);
    if (c.adj_a || c.adj_b) {
      tb_attr_i(b, TETHER_ATTR_ADJOINT, 2, (const int32_t[]){c.adj_a, c.adj_b});
    }
    uint32_t graph_in[2];
    const int8_t* in_data[2];
    size_t in_n[2];
    uint32_t n_in = 0;
    if (!a_const) { graph_in[n_in] = ta; in_n[n_in] = na; in_data[n_in++] = ad; }
    if (!b_const) { graph_in[n_in] = tbb; in_n[n_in] = nb; in_data[n_in++] = bd; }
    tb_graph_io(b, n_in, graph_in, 1, &y);
    char name[128];
    snprintf(name, sizeof(name), "int8 batch_matmul #%d A%dD%s B%dD%s m%d k%d n%d adj%d%d act%u",
             t, c.ra, a_const ? "c" : "", c.rb, b_const ? "c" : "", c.m, c.k, c.n, c.adj_a,
             c.adj_b, act);
    size_t size = 0;
    uint8_t* file = tb_finish(b, &size);
    /* the oracle: int64 sums, TFLite's requantization */
    int32_t mult, shift;
    const float product = sa * sb;  /* TFLite: in float32, then divided in double */
    tether_quantize_multiplier((double)product / (double)sy, &mult, &shift);
    const int32_t lo = act == TETHER_ACT_RELU ? zy : -128;
    const size_t batches = ny / ((size_t)c.m * (size_t)c.n);
    int8_t* want = (int8_t*)malloc(ny);
    for (size_t bt = 0; bt < batches; bt++) {
      const int8_t* at = ad + operand_offset(&c, c.ra, c.as, bt);
      const int8_t* btm = bd + operand_offset(&c, c.rb, c.bs, bt);
      for (int i = 0; i < c.m; i++) {
        for (int j = 0; j < c.n; j++) {
          int64_t acc = 0;
          for (int kk = 0; kk < c.k; kk++) {
            const int8_t av = c.adj_a ? at[kk * c.m + i] : at[i * c.k + kk];
            const int8_t bv = c.adj_b ? btm[j * c.k + kk] : btm[kk * c.n + j];
            acc += (int64_t)(av - za) * (bv - zb);
          }
          int32_t v = tether_multiply_by_quantized_multiplier((int32_t)acc, mult, shift) + zy;
          v = v < lo ? lo : v > 127 ? 127 : v;
          want[(bt * (size_t)c.m + (size_t)i) * (size_t)c.n + (size_t)j] = (int8_t)v;
        }
      }
    }
    int8_t* got = (int8_t*)malloc(ny);
    int8_t* got3 = (int8_t*)malloc(ny);
    if (run_q8_session(name, file, size, 1, in_data, in_n, n_in, got, ny)) {
      size_t bad = 0;
      for (size_t i = 0; i < ny; i++) bad += got[i] != want[i];
      TB_CHECK(bad == 0, "%s: %zu of %zu integers differ from the oracle", name, bad, ny);
      if (run_q8_session(name, file, size, 3, in_data, in_n, n_in, got3, ny)) {
        TB_CHECK(memcmp(got3, got, ny) == 0, "%s: 3 threads differ from 1", name);
      }
    }
    if (act == 0) {  /* the reference kernel against the same oracle */
      tether_matmul_geometry g;
      tether_matmul_geometry_init(&g, (uint32_t)c.ra, c.as, (uint32_t)c.rb, c.bs, c.adj_a,
                                  c.adj_b);
      const tether_qs8_ref_params p = {&mult, &shift, za, zy, -128, 127, 0};
      tether_ref_qs8_batch_matmul(&g, ad, bd, zb, got, &p);
      TB_CHECK(memcmp(got, want, ny) == 0, "%s: the reference kernel differs", name);
    }
    free(got3);
    free(got);
    free(want);
    free(file);
    free(ad);
    free(bd);
    free(b);
  }
}

static void test_rejects(void) {
  static const float w[128] = {0};
  const int32_t a3[3] = {2, 3, 4}, b_k5[3] = {2, 5, 6}, b_bad[3] = {3, 4, 6}, b_ok[2] = {4, 6};
  const int32_t y_ok[3] = {2, 3, 6}, y_bad[3] = {2, 3, 7}, a1[1] = {4};
  static const char* const kName[6] = {"K mismatch", "batch mismatch", "output shape",
                                       "adjoint 2", "rank 1", "int8"};
  static const char* const kNeedle[6] = {"K = 5", "batch dim 0", "output 0", "adjoint",
                                         "rank >= 2", "input 1 (tensor 'b') must be int8"};
  for (int k = 0; k < 6; k++) {
    tb_builder* b = tb_new();
    uint32_t a;
    if (k == 5) {
      a = tb_tensor_typed(b, "a", TETHER_DTYPE_INT8, 3, a3, NULL);
      tb_quantize(b, a, 0, 1, (const float[]){0.5f}, (const int32_t[]){0});
    } else {
      a = tb_tensor(b, "a", k == 4 ? 1 : 3, k == 4 ? a1 : a3, NULL);
    }
    const int32_t* bs = k == 0 ? b_k5 : k == 1 ? b_bad : b_ok;
    const uint32_t bw = tb_tensor(b, "b", k <= 1 ? 3 : 2, bs, w);
    const uint32_t y = k == 5 ? tb_tensor_typed(b, "y", TETHER_DTYPE_INT8, 3, y_ok, NULL)
                              : tb_tensor(b, "y", 3, k == 2 ? y_bad : y_ok, NULL);
    if (k == 5) tb_quantize(b, y, 0, 1, (const float[]){0.5f}, (const int32_t[]){0});
    const uint32_t ins[2] = {a, bw};
    tb_op(b, TETHER_OP_BATCH_MATMUL, 0, "mm", 2, ins, y);
    if (k == 3) {
      const int32_t adj[2] = {2, 0};
      tb_attr_i(b, TETHER_ATTR_ADJOINT, 2, adj);
    }
    expect_load(kName[k], b, a, y,
                TETHER_STATUS_FORMAT_ERROR, kNeedle[k]);
  }
}

int main(void) {
  printf("test_matmul: isa %s\n", tether_isa());
  test_batch_matmul();
  test_q8_batch_matmul();
  test_rejects();
  return kernels_report("test_matmul");
}
