/*
 * test_plan.c — the activation memory plan.
 *
 * Lifetimes are recomputed here from the graph the test built (not read back from the
 * engine), then every pair of tensors whose lifetimes overlap must occupy disjoint arena
 * bytes; offsets must be 64-aligned and inside the arena, and the arena no larger than the
 * sum of all (64-rounded) activation sizes. A chain of equal-size ops must reuse memory
 * (exactly 4 buffers), and random graphs must compute the same values as a naive
 * evaluation done here, which fails if the plan lets tensors clobber each other.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "tether/tether.h"
#include "tmodel_builder.h"

static size_t round64(size_t v) { return (v + 63) / 64 * 64; }

/* Checks the plan of `model` against lifetimes derived from the builder's graph. */
static void check_plan(const char* name, const tb_builder* b, const struct tether_model* model) {
  const uint32_t nt = b->tensor_count;
  int32_t* first = (int32_t*)malloc(nt * sizeof(int32_t));
  int32_t* last = (int32_t*)malloc(nt * sizeof(int32_t));
  for (uint32_t t = 0; t < nt; t++) first[t] = last[t] = -1;
  for (uint32_t i = 0; i < b->op_count; i++) {
    const tb_op_rec* op = &b->ops[i];
    for (uint32_t k = 0; k < op->input_count + op->output_count; k++) {
      uint32_t t = b->operands[op->first_operand + k];
      if (t == TETHER_NO_TENSOR || b->tensors[t].data != NULL) continue;
      if (first[t] < 0) first[t] = (int32_t)i;
      last[t] = (int32_t)i;
    }
  }
  const int32_t end = b->op_count > 0 ? (int32_t)b->op_count - 1 : 0;
  for (uint32_t k = 0; k < b->input_count; k++) first[b->inputs[k]] = 0, last[b->inputs[k]] = end;
  for (uint32_t k = 0; k < b->output_count; k++) {
    const uint32_t o = b->outputs[k];
    if (first[o] < 0) first[o] = 0;  /* outputs live from their producer to the end */
    last[o] = end;
  }

  size_t sum = 0;
  for (uint32_t t = 0; t < nt; t++) {
    if (first[t] < 0) continue;
    const tether_tensor* tt = &model->tensors[t];
    sum += round64(tt->bytes);
    TB_CHECK(tt->arena_offset % 64 == 0, "%s: tensor %u offset %zu not 64-aligned", name, t,
             tt->arena_offset);
    TB_CHECK(tt->arena_offset + tt->bytes <= model->activation_bytes,
             "%s: tensor %u [%zu, +%zu) outside the %zu activation bytes", name, t,
             tt->arena_offset, tt->bytes, model->activation_bytes);
    for (uint32_t u = 0; u < t; u++) {
      if (first[u] < 0 || first[t] > last[u] || first[u] > last[t]) continue;
      const tether_tensor* tu = &model->tensors[u];
      const int disjoint = tt->arena_offset + tt->bytes <= tu->arena_offset ||
                           tu->arena_offset + tu->bytes <= tt->arena_offset;
      TB_CHECK(disjoint,
               "%s: tensors %u [%zu, +%zu) ops %d..%d and %u [%zu, +%zu) ops %d..%d overlap",
               name, t, tt->arena_offset, tt->bytes, first[t], last[t], u, tu->arena_offset,
               tu->bytes, first[u], last[u]);
    }
  }
  size_t arena = 0;
  tether_session_arena_size((tether_model_t)model, &arena);
  const size_t max_scratch = round64(model->scratch_bytes);
  TB_CHECK(arena <= sum + max_scratch || sum == 0, "%s: arena %zu > activations %zu + scratch %zu",
           name, arena, sum, max_scratch);
  TB_CHECK(arena >= model->activation_bytes, "%s: arena smaller than its activations", name);
  TB_CHECK(arena <= model->activation_bytes + max_scratch, "%s: arena %zu above the "
           "activations-then-scratch layout", name, arena);
  /* Each op's scratch: aligned, inside the arena, clear of every tensor live at that op. */
  for (uint32_t i = 0; i < b->op_count; i++) {
    const tether_node* op = &model->ops[i];
    if (op->scratch_bytes == 0) continue;
    TB_CHECK(op->scratch_offset % 64 == 0 && op->scratch_offset + op->scratch_bytes <= arena,
             "%s: op %u scratch [%zu, +%zu) misplaced in a %zu-byte arena", name, i,
             op->scratch_offset, op->scratch_bytes, arena);
    for (uint32_t t = 0; t < nt; t++) {
      if (first[t] < 0 || first[t] > (int32_t)i || last[t] < (int32_t)i) continue;
      const tether_tensor* tt = &model->tensors[t];
      TB_CHECK(tt->arena_offset + tt->bytes <= op->scratch_offset ||
                   op->scratch_offset + op->scratch_bytes <= tt->arena_offset,
               "%s: op %u scratch [%zu, +%zu) overlaps live tensor %u [%zu, +%zu)", name, i,
               op->scratch_offset, op->scratch_bytes, t, tt->arena_offset, tt->bytes);
    }
  }
  free(first);
  free(last);
}

static tether_model_t load(const char* name, const tb_builder* b, uint8_t** file) {
  size_t size = 0;
  *file = tb_finish(b, &size);
  tether_model_t model = NULL;
  tether_status s = tether_model_load(*file, size, NULL, &model);
  TB_CHECK(s == TETHER_STATUS_SUCCESS, "%s: load: %s", name, tether_last_error());
  return model;
}

/* x -> RELU -> RELU -> ... -> y, every tensor 1024 floats: x and y live throughout, the
 * intermediates only for two consecutive ops, so the best plan is 4 buffers. */
static void test_chain(void) {
  tb_builder* b = tb_new();
  const int32_t shape[2] = {1, 1024};
  uint32_t prev = tb_tensor(b, "x", 2, shape, NULL);
  const uint32_t x = prev;
  for (int i = 0; i < 10; i++) {
    uint32_t next = tb_tensor(b, "h", 2, shape, NULL);
    tb_op(b, TETHER_OP_RELU, 0, "relu", 1, &prev, next);
    prev = next;
  }
  tb_graph_io(b, 1, &x, 1, &prev);
  uint8_t* file = NULL;
  tether_model_t model = load("chain", b, &file);
  if (model != NULL) {
    check_plan("chain", b, model);
    /* x lives throughout; the hidden rows alternate between two slots, and the last op's
     * output (live from that op on) takes the one its input does not hold. */
    TB_CHECK(model->activation_bytes == 3 * 4096, "chain: %zu activation bytes, want %d",
             model->activation_bytes, 3 * 4096);
    tether_model_destroy(model);
  }
  free(file);
  free(b);
}

/* Naive evaluation of the random graphs below (RELU, ADD, MUL, CONCAT on [1, L] rows). */
static void evaluate(const tb_builder* b, float** values) {
  for (uint32_t i = 0; i < b->op_count; i++) {
    const tb_op_rec* op = &b->ops[i];
    const uint32_t* in = &b->operands[op->first_operand];
    const uint32_t out = in[op->input_count];
    const int32_t len = b->tensors[out].shape[1];
    float* y = values[out];
    switch (op->type) {
      case TETHER_OP_RELU:
        for (int32_t k = 0; k < len; k++) y[k] = values[in[0]][k] > 0 ? values[in[0]][k] : 0;
        break;
      case TETHER_OP_ADD:
        for (int32_t k = 0; k < len; k++) y[k] = values[in[0]][k] + values[in[1]][k];
        break;
      case TETHER_OP_MUL:
        for (int32_t k = 0; k < len; k++) y[k] = values[in[0]][k] * values[in[1]][k];
        break;
      case TETHER_OP_CONCATENATION: {
        int32_t at = 0;
        for (uint32_t j = 0; j < op->input_count; j++) {
          const int32_t n = b->tensors[in[j]].shape[1];
          memcpy(y + at, values[in[j]], (size_t)n * 4);
          at += n;
        }
        break;
      }
    }
  }
}

static void test_random_graphs(void) {
  static const int32_t kLengths[] = {1, 7, 16, 33, 64, 100};
  for (int g = 0; g < 200; g++) {
    tb_builder* b = tb_new();
    uint32_t avail[128];
    uint32_t n_avail = 0;
    const uint32_t n_inputs = (uint32_t)tb_range(1, 3);
    uint32_t inputs[3];
    for (uint32_t i = 0; i < n_inputs; i++) {
      const int32_t shape[2] = {1, kLengths[tb_range(0, 5)]};
      inputs[i] = avail[n_avail++] = tb_tensor(b, "in", 2, shape, NULL);
    }
    const int ops = tb_range(1, 40);
    for (int i = 0; i < ops; i++) {
      const int kind = tb_range(0, 3);
      /* Prefer recent tensors so lifetimes vary between short and long. */
      const uint32_t a = avail[tb_range(0, 1) ? n_avail - 1 - (uint32_t)tb_range(0, (int)(n_avail > 3 ? 3 : n_avail - 1))
                                              : (uint32_t)tb_range(0, (int)n_avail - 1)];
      const int32_t la = b->tensors[a].shape[1];
      uint32_t out;
      if (kind == 0) {
        out = tb_tensor(b, "relu", 2, (const int32_t[]){1, la}, NULL);
        tb_op(b, TETHER_OP_RELU, 0, "relu", 1, &a, out);
      } else if (kind <= 2) {
        uint32_t same[128], n_same = 0;
        for (uint32_t k = 0; k < n_avail; k++) {
          if (b->tensors[avail[k]].shape[1] == la) same[n_same++] = avail[k];
        }
        const uint32_t c = same[tb_range(0, (int)n_same - 1)];
        out = tb_tensor(b, "bin", 2, (const int32_t[]){1, la}, NULL);
        tb_op(b, kind == 1 ? TETHER_OP_ADD : TETHER_OP_MUL, 0, "bin", 2, (const uint32_t[]){a, c},
              out);
      } else {
        const uint32_t c = avail[tb_range(0, (int)n_avail - 1)];
        const int32_t len = la + b->tensors[c].shape[1];
        if (len > 400) {
          out = tb_tensor(b, "relu", 2, (const int32_t[]){1, la}, NULL);
          tb_op(b, TETHER_OP_RELU, 0, "relu", 1, &a, out);
        } else {
          out = tb_tensor(b, "cat", 2, (const int32_t[]){1, len}, NULL);
          tb_op(b, TETHER_OP_CONCATENATION, 0, "cat", 2, (const uint32_t[]){a, c}, out);
          tb_attr_i(b, 10, 1, (const int32_t[]){1});
        }
      }
      if (n_avail < 128) avail[n_avail++] = out;
    }
    /* Outputs: the last tensor plus a random earlier op output. */
    uint32_t outputs[2] = {avail[n_avail - 1], avail[tb_range((int)n_inputs, (int)n_avail - 1)]};
    const uint32_t n_outputs = outputs[0] == outputs[1] ? 1 : 2;
    tb_graph_io(b, n_inputs, inputs, n_outputs, outputs);
    char name[32];
    snprintf(name, sizeof(name), "graph %d", g);
    uint8_t* file = NULL;
    tether_model_t model = load(name, b, &file);
    if (model == NULL) {
      free(file);
      free(b);
      continue;
    }
    check_plan(name, b, model);
    /* Run it and compare with the naive evaluation. */
    float** values = (float**)calloc(b->tensor_count, sizeof(float*));
    for (uint32_t t = 0; t < b->tensor_count; t++) {
      values[t] = (float*)calloc((size_t)b->tensors[t].shape[1], 4);
    }
    tether_session_t session = NULL;
    TB_CHECK(tether_session_create(model, NULL, 0, 1, &session) == TETHER_STATUS_SUCCESS,
             "%s: create", name);
    for (uint32_t i = 0; i < n_inputs; i++) {
      const int32_t len = b->tensors[inputs[i]].shape[1];
      for (int32_t k = 0; k < len; k++) values[inputs[i]][k] = tb_uniform(-2, 2);
      tether_session_set_input(session, i, values[inputs[i]], (size_t)len * 4);
    }
    evaluate(b, values);
    TB_CHECK(tether_session_invoke(session) == TETHER_STATUS_SUCCESS, "%s: invoke", name);
    for (uint32_t o = 0; o < n_outputs; o++) {
      const int32_t len = b->tensors[outputs[o]].shape[1];
      float* got = (float*)malloc((size_t)len * 4);
      tether_session_get_output(session, o, got, (size_t)len * 4);
      TB_CHECK(memcmp(got, values[outputs[o]], (size_t)len * 4) == 0,
               "%s: output %u differs from the naive evaluation", name, o);
      free(got);
    }
    tether_session_destroy(session);
    for (uint32_t t = 0; t < b->tensor_count; t++) free(values[t]);
    free(values);
    tether_model_destroy(model);
    free(file);
    free(b);
  }
}

/* A model with no ops whose output is its input still gets a (64-byte) arena. */
static void test_identity(void) {
  tb_builder* b = tb_new();
  uint32_t x = tb_tensor(b, "x", 1, (const int32_t[]){5}, NULL);
  tb_graph_io(b, 1, &x, 1, &x);
  uint8_t* file = NULL;
  tether_model_t model = load("identity", b, &file);
  if (model != NULL) {
    check_plan("identity", b, model);
    tether_session_t s = NULL;
    float in[5] = {1, 2, 3, 4, 5}, out[5] = {0};
    TB_CHECK(tether_session_create(model, NULL, 0, 4, &s) == TETHER_STATUS_SUCCESS, "create");
    tether_session_set_input(s, 0, in, sizeof(in));
    tether_session_invoke(s);
    tether_session_get_output(s, 0, out, sizeof(out));
    TB_CHECK(memcmp(in, out, sizeof(in)) == 0, "identity output");
    tether_session_destroy(s);
    tether_model_destroy(model);
  }
  free(file);
  free(b);
}

/* A 3x3 convolution's im2col scratch lands in the gap a dead, larger tensor left behind:
 * x [1,8,8,4] -PAD-> big [1,64,64,4] -MAX_POOL 8x8/8-> s [1,8,8,4] -CONV 3x3-> y [1,8,8,4].
 * The arena then needs no bytes beyond the activations, and the output is still right. */
static void test_scratch_in_gap(void) {
  static float w[4 * 3 * 3 * 4];
  for (size_t i = 0; i < sizeof(w) / sizeof(w[0]); i++) w[i] = (float)((int)(i % 7) - 3) / 8.0f;
  tb_builder* b = tb_new();
  const int32_t small[4] = {1, 8, 8, 4}, large[4] = {1, 64, 64, 4}, wshape[4] = {4, 3, 3, 4};
  uint32_t x = tb_tensor(b, "x", 4, small, NULL);
  uint32_t big = tb_tensor(b, "big", 4, large, NULL);
  uint32_t s = tb_tensor(b, "s", 4, small, NULL);
  uint32_t wt = tb_tensor(b, "w", 4, wshape, w);
  uint32_t y = tb_tensor(b, "y", 4, small, NULL);
  tb_op(b, TETHER_OP_PAD, 0, "pad", 1, &x, big);
  tb_attr_i(b, 11, 8, (const int32_t[]){0, 0, 0, 56, 0, 56, 0, 0});
  tb_op(b, TETHER_OP_MAX_POOL_2D, 0, "pool", 1, &big, s);
  tb_attr_i(b, 1, 2, (const int32_t[]){8, 8});
  tb_attr_i(b, 6, 2, (const int32_t[]){8, 8});
  tb_op(b, TETHER_OP_CONV_2D, 0, "conv", 2, (const uint32_t[]){s, wt}, y);
  tb_attr_i(b, 3, 4, (const int32_t[]){1, 1, 1, 1});
  tb_graph_io(b, 1, &x, 1, &y);
  uint8_t* file = NULL;
  tether_model_t model = load("scratch", b, &file);
  if (model != NULL) {
    check_plan("scratch", b, model);
    size_t arena = 0;
    tether_session_arena_size(model, &arena);
    TB_CHECK(model->ops[2].scratch_bytes > 0, "scratch: the 3x3 conv asked for no scratch");
    TB_CHECK(arena == model->activation_bytes,
             "scratch: arena %zu, want the %zu activation bytes (scratch in the gap)", arena,
             model->activation_bytes);
    /* The pool takes the top-left 8x8 block of each window: x[0,0] only for window (0,0). */
    float in[8 * 8 * 4], out[8 * 8 * 4], pooled[8 * 8 * 4];
    for (size_t i = 0; i < 8 * 8 * 4; i++) in[i] = (float)((int)(i % 11) - 5);
    for (size_t i = 0; i < 8 * 8 * 4; i++) pooled[i] = 0.0f;
    for (size_t c = 0; c < 4; c++) {
      float m = in[c];
      for (size_t i = 0; i < 8 * 8; i++) m = in[i * 4 + c] > m ? in[i * 4 + c] : m;
      pooled[c] = m;  /* window (0,0) covers all of x; the others only padding zeros */
    }
    tether_session_t sess = NULL;
    TB_CHECK(tether_session_create(model, NULL, 0, 1, &sess) == TETHER_STATUS_SUCCESS,
             "scratch: create");
    tether_session_set_input(sess, 0, in, sizeof(in));
    TB_CHECK(tether_session_invoke(sess) == TETHER_STATUS_SUCCESS, "scratch: invoke");
    tether_session_get_output(sess, 0, out, sizeof(out));
    for (int oh = 0; oh < 8; oh++) {
      for (int ow = 0; ow < 8; ow++) {
        for (int o = 0; o < 4; o++) {
          float acc = 0.0f;
          for (int kh = 0; kh < 3; kh++) {
            for (int kw = 0; kw < 3; kw++) {
              const int ih = oh + kh - 1, iw = ow + kw - 1;
              if (ih < 0 || ih >= 8 || iw < 0 || iw >= 8) continue;
              for (int c = 0; c < 4; c++) {
                acc += pooled[(ih * 8 + iw) * 4 + c] * w[((o * 3 + kh) * 3 + kw) * 4 + c];
              }
            }
          }
          const float got = out[(oh * 8 + ow) * 4 + o];
          TB_CHECK(fabsf(got - acc) <= 1e-5f, "scratch: y[%d,%d,%d] = %g, want %g", oh, ow, o,
                   (double)got, (double)acc);
        }
      }
    }
    tether_session_destroy(sess);
    tether_model_destroy(model);
  }
  free(file);
  free(b);
}

int main(void) {
  test_chain();
  test_random_graphs();
  test_identity();
  test_scratch_in_gap();
  if (tb_failures != 0) {
    fprintf(stderr, "%d check(s) failed\n", tb_failures);
    return 1;
  }
  printf("test_plan: all checks passed\n");
  return 0;
}
