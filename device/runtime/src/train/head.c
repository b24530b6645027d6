/*
 * head.c — which ops a trainer runs and where its state lives.
 *
 * The head is the chain of ops from the head input to the model's first output: each op's
 * one non-constant input is the previous op's output (the first op's is the head input), and
 * nothing else of the model reads a head tensor. Ops before the head input (part A) are not
 * run. Every block (the trainer struct, tensor table, activations, gradients, weights, slots,
 * packed copies, dropout masks) is carved from the caller's arena in one pass that also
 * counts, so tether_trainer_arena_size and tether_trainer_create agree by construction.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ops/ops.h"
#include "train/train.h"

/* A bump allocator over the arena; with base == NULL it only counts. */
typedef struct carve {
  uint8_t* base;
  size_t used;
} carve;

static void* take(carve* c, size_t bytes) {
  const size_t a = TETHER_ARENA_ALIGNMENT;
  size_t at = (c->used + a - 1) / a * a;
  c->used = at + bytes;
  return c->base != NULL ? c->base + at : NULL;
}

static tether_status head_error(const struct tether_model* m, uint32_t i, tether_status status,
                                const char* what) {
  return tether_op_error(m, i, status, "in the head: %s", what);
}

/* The op's one non-constant input, or TETHER_NO_TENSOR when it has none or several. */
static uint32_t activation_input(const struct tether_model* m, const tether_node* op) {
  uint32_t found = TETHER_NO_TENSOR;
  for (uint32_t j = 0; j < op->input_count; j++) {
    uint32_t t = op->inputs[j];
    if (t == TETHER_NO_TENSOR || (m->tensors[t].flags & TETHER_TENSOR_CONSTANT)) continue;
    if (found != TETHER_NO_TENSOR) return TETHER_NO_TENSOR;
    found = t;
  }
  return found;
}

static int in_place_dense(const struct tether_model* m, const tether_tensor* t) {
  const uint8_t* p = (const uint8_t*)t->data;
  return t->sparse == NULL && t->dtype == TETHER_DTYPE_FLOAT32 && p >= m->data &&
         p + t->bytes <= m->data + m->size;
}

static tether_status check_config(const tether_train_config* c) {
  if (c->batch_size < 1 || c->batch_size > (1u << 20)) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT,
                            "batch_size is %u; it must be in [1, 1048576]", c->batch_size);
  }
  if (c->optimizer > TETHER_OPTIMIZER_ADAM) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT,
                            "optimizer %u is unknown (0 = SGD, 1 = Adam)", c->optimizer);
  }
  if (!(c->learning_rate > 0.0f) || !(c->learning_rate < 1e30f)) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "learning_rate must be > 0");
  }
  if (!(c->momentum >= 0.0f && c->momentum < 1.0f)) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "momentum must be in [0, 1)");
  }
  if (!(c->beta_1 >= 0.0f && c->beta_1 < 1.0f) || !(c->beta_2 >= 0.0f && c->beta_2 < 1.0f)) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "beta_1 and beta_2 must be in [0, 1)");
  }
  if (!(c->epsilon > 0.0f) || !(c->l2 >= 0.0f) || !(c->l2 < 1e30f)) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT,
                            "epsilon must be > 0 and l2 finite and >= 0");
  }
  if (!(c->ewc_lambda >= 0.0f) || !(c->ewc_lambda < 1e30f)) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "ewc_lambda must be finite and >= 0");
  }
  if (!(c->dropout >= 0.0f && c->dropout < 1.0f)) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "dropout must be in [0, 1)");
  }
  if (c->schedule > TETHER_LR_COSINE) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT,
                            "schedule %u is unknown (0 = constant, 1 = cosine)", c->schedule);
  }
  if (c->schedule == TETHER_LR_COSINE &&
      (c->decay_steps < 1 || !(c->final_lr_ratio >= 0.0f && c->final_lr_ratio <= 1.0f))) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT,
                            "the cosine schedule needs decay_steps >= 1 and final_lr_ratio in "
                            "[0, 1]");
  }
  return TETHER_STATUS_SUCCESS;
}

static tether_status find_head_input(const struct tether_model* m, const char* name,
                                     uint32_t* out) {
  if (name == NULL) {
    if (m->input_count == 0) {
      return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "the model has no input");
    }
    *out = m->inputs[0];
    return TETHER_STATUS_SUCCESS;
  }
  for (uint32_t t = 0; t < m->tensor_count; t++) {
    if (m->tensors[t].name != NULL && strcmp(m->tensors[t].name, name) == 0 &&
        !(m->tensors[t].flags & TETHER_TENSOR_CONSTANT)) {
      *out = t;
      return TETHER_STATUS_SUCCESS;
    }
  }
  return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT,
                          "head_input '%s' is not a non-constant tensor of the model", name);
}

/* Finds the head's ops and checks each; fills t->ops (kinds, tensors, sizes, dense shapes). */
static tether_status find_head(const struct tether_model* m, struct tether_trainer* t) {
  uint32_t current = t->x_tensor;
  t->op_count = 0;
  for (uint32_t i = 0; i < m->op_count; i++) {
    const tether_node* op = &m->ops[i];
    int reads = 0;
    for (uint32_t j = 0; j < op->input_count; j++) reads |= op->inputs[j] == current;
    if (!reads) continue;
    if (t->op_count == TETHER_TRAIN_MAX_OPS) {
      return tether_set_error(TETHER_STATUS_UNSUPPORTED_OP,
                              "the head has more than %u ops", (unsigned)TETHER_TRAIN_MAX_OPS);
    }
    if (activation_input(m, op) != current || op->output_count != 1) {
      return head_error(m, i, TETHER_STATUS_UNSUPPORTED_OP,
                        "a head op takes one non-constant input (the previous op's output) "
                        "and has one output");
    }
    const tether_tensor* x = &m->tensors[current];
    const tether_tensor* y = &m->tensors[op->outputs[0]];
    if (x->dtype != TETHER_DTYPE_FLOAT32 || y->dtype != TETHER_DTYPE_FLOAT32) {
      return head_error(m, i, TETHER_STATUS_UNSUPPORTED_OP,
                        "a trainer runs float32 heads (convert part B without int8)");
    }
    tether_train_op* h = &t->ops[t->op_count];
    memset(h, 0, sizeof(*h));
    h->op_index = i;
    h->x_tensor = current;
    h->y_tensor = op->outputs[0];
    h->x_elements = x->elements;
    h->y_elements = y->elements;
    h->param = -1;
    switch (op->type) {
      case TETHER_OP_FULLY_CONNECTED: {
        const tether_tensor* w = &m->tensors[op->inputs[1]];
        const tether_tensor* b =
            op->input_count > 2 && op->inputs[2] != TETHER_NO_TENSOR ? &m->tensors[op->inputs[2]]
                                                                      : NULL;
        if (!(w->flags & TETHER_TENSOR_CONSTANT) || op->packed_floats == 0 ||
            (b != NULL && !(b->flags & TETHER_TENSOR_CONSTANT))) {
          return head_error(m, i, TETHER_STATUS_UNSUPPORTED_OP,
                            "a trained dense layer needs constant weights and bias");
        }
        if (op->activation != TETHER_ACT_NONE && op->activation != TETHER_ACT_RELU &&
            op->activation != TETHER_ACT_RELU6) {
          return head_error(m, i, TETHER_STATUS_UNSUPPORTED_OP,
                            "a dense layer's fused activation must be NONE, RELU or RELU6");
        }
        h->kind = TETHER_TRAIN_DENSE;
        h->n = (size_t)w->shape[0];
        h->k = (size_t)w->shape[1];
        h->activation = op->activation;
        h->has_bias = b != NULL;
        break;
      }
      case TETHER_OP_RELU: h->kind = TETHER_TRAIN_RELU; break;
      case TETHER_OP_RELU6: h->kind = TETHER_TRAIN_RELU6; break;
      case TETHER_OP_MEAN: h->kind = TETHER_TRAIN_MEAN; break;
      case TETHER_OP_RESHAPE: h->kind = TETHER_TRAIN_RESHAPE; break;
      case TETHER_OP_SOFTMAX: h->kind = TETHER_TRAIN_SOFTMAX; break;
      default:
        return head_error(m, i, TETHER_STATUS_UNSUPPORTED_OP,
                          "a trainer runs FULLY_CONNECTED, RELU, RELU6, MEAN, RESHAPE and a "
                          "final SOFTMAX (cut the model after this op)");
    }
    if (h->kind != TETHER_TRAIN_DENSE && op->activation != TETHER_ACT_NONE) {
      return head_error(m, i, TETHER_STATUS_UNSUPPORTED_OP, "a fused activation here");
    }
    t->op_count++;
    current = h->y_tensor;
  }
  if (t->op_count == 0) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT,
                            "no op reads the head input '%s'", m->tensors[t->x_tensor].name);
  }
  if (m->output_count == 0 || current != m->outputs[0]) {
    return tether_set_error(TETHER_STATUS_UNSUPPORTED_OP,
                            "the head's chain ends at tensor '%s', not at the model's first "
                            "output", m->tensors[current].name);
  }
  /* Nothing outside the chain may read a head tensor (a branch or a skip connection). */
  for (uint32_t i = 0, q = 0; i < m->op_count; i++) {
    if (q < t->op_count && t->ops[q].op_index == i) {
      q++;
      continue;
    }
    const tether_node* op = &m->ops[i];
    for (uint32_t j = 0; j < op->input_count; j++) {
      for (uint32_t r = 0; r < t->op_count; r++) {
        if (op->inputs[j] == t->ops[r].x_tensor || op->inputs[j] == t->ops[r].y_tensor) {
          return head_error(m, i, TETHER_STATUS_UNSUPPORTED_OP,
                            "it reads a tensor of the head; a trainer's head is a chain with "
                            "no branch");
        }
      }
    }
  }
  for (uint32_t q = 0; q + 1 < t->op_count; q++) {
    if (t->ops[q].kind == TETHER_TRAIN_SOFTMAX) {
      return head_error(m, t->ops[q].op_index, TETHER_STATUS_UNSUPPORTED_OP,
                        "SOFTMAX must be the head's last op");
    }
  }
  const tether_tensor* out = &m->tensors[current];
  t->classes = (size_t)out->shape[out->ndim > 0 ? out->ndim - 1 : 0];
  if (out->ndim == 0 || out->elements != t->classes || t->classes < 2) {
    return tether_set_error(TETHER_STATUS_UNSUPPORTED_OP,
                            "the head's output '%s' must hold one row of >= 2 class scores "
                            "per input", out->name);
  }
  t->x_elements = m->tensors[t->x_tensor].elements;
  return TETHER_STATUS_SUCCESS;
}

tether_status tether_train_layout(const struct tether_model* m, const tether_train_config* config,
                                  uint8_t* arena, size_t* size_out,
                                  struct tether_trainer** trainer_out) {
  tether_status status = check_config(config);
  if (status != TETHER_STATUS_SUCCESS) return status;
  /* The struct is built in place when there is an arena, on a counting pass in a local. */
  carve c = {arena, 0};
  struct tether_trainer local;
  struct tether_trainer* t = (struct tether_trainer*)take(&c, sizeof(struct tether_trainer));
  if (t == NULL) t = &local;
  memset(t, 0, sizeof(*t));
  t->model = m;
  t->config = *config;
  t->config.head_input = NULL;
  status = find_head_input(m, config->head_input, &t->x_tensor);
  if (status == TETHER_STATUS_SUCCESS) status = find_head(m, t);
  if (status != TETHER_STATUS_SUCCESS) return status;

  /* Which dense layers train: the last train_layers of them (0 = all). */
  uint32_t dense = 0;
  for (uint32_t q = 0; q < t->op_count; q++) dense += t->ops[q].kind == TETHER_TRAIN_DENSE;
  if (dense == 0) {
    return tether_set_error(TETHER_STATUS_UNSUPPORTED_OP,
                            "the head has no FULLY_CONNECTED layer to train");
  }
  uint32_t trained = config->train_layers == 0 || config->train_layers > dense
                         ? dense : config->train_layers;
  const size_t rows = config->batch_size;
  size_t widest = t->x_elements, scratch = 0;
  t->first_trained = -1;
  uint32_t seen = 0;
  for (uint32_t q = 0; q < t->op_count; q++) {
    tether_train_op* h = &t->ops[q];
    const tether_node* op = &m->ops[h->op_index];
    if (h->y_elements > widest) widest = h->y_elements;
    if (op->scratch_bytes > scratch) scratch = op->scratch_bytes;
    h->y = (float*)take(&c, rows * h->y_elements * sizeof(float));
    if (h->kind != TETHER_TRAIN_DENSE) continue;
    if (seen++ < dense - trained) continue;  /* frozen: runs the model's own packing */
    const tether_tensor* w = &m->tensors[op->inputs[1]];
    const tether_tensor* b = h->has_bias ? &m->tensors[op->inputs[2]] : NULL;
    if (!in_place_dense(m, w) || (b != NULL && !in_place_dense(m, b))) {
      return head_error(m, h->op_index, TETHER_STATUS_UNSUPPORTED_OP,
                        "its weights are stored sparse; a trainer writes dense weights back "
                        "(convert without sparse storage)");
    }
    if (t->first_trained < 0) t->first_trained = (int32_t)q;
    h->param = (int32_t)t->param_count;
    for (int pass = 0; pass < (b != NULL ? 2 : 1); pass++) {
      const tether_tensor* src = pass == 0 ? w : b;
      tether_train_param* p = &t->params[t->param_count++];
      p->tensor = pass == 0 ? op->inputs[1] : op->inputs[2];
      p->elements = src->elements;
      p->kernel = pass == 0;
      const size_t bytes = src->elements * sizeof(float);
      p->value = (float*)take(&c, bytes);
      p->grad = (float*)take(&c, bytes);
      if (config->optimizer == TETHER_OPTIMIZER_ADAM || config->momentum > 0.0f) {
        p->m = (float*)take(&c, bytes);
      }
      if (config->optimizer == TETHER_OPTIMIZER_ADAM) p->v = (float*)take(&c, bytes);
      if (config->ewc_lambda > 0.0f) {
        p->fisher = (float*)take(&c, bytes);
        p->anchor = (float*)take(&c, bytes);
      }
      if (arena != NULL) {
        memcpy(p->value, src->data, bytes);
        memset(p->grad, 0, bytes);
        if (p->m != NULL) memset(p->m, 0, bytes);
        if (p->v != NULL) memset(p->v, 0, bytes);
        if (p->fisher != NULL) memset(p->fisher, 0, bytes);
        if (p->anchor != NULL) memcpy(p->anchor, src->data, bytes);
      }
    }
    h->packed = (float*)take(&c, op->packed_floats * sizeof(float));
    if (config->dropout > 0.0f) {
      h->dropped = (float*)take(&c, rows * h->x_elements * sizeof(float));
      h->keep = (uint8_t*)take(&c, rows * h->x_elements);
    }
  }
  t->grad_a = (float*)take(&c, rows * widest * sizeof(float));
  t->grad_b = (float*)take(&c, rows * widest * sizeof(float));
  t->probs = (float*)take(&c, rows * t->classes * sizeof(float));
  t->data = (void**)take(&c, (size_t)m->tensor_count * sizeof(void*));
  t->scratch = take(&c, scratch);
  const size_t a = TETHER_ARENA_ALIGNMENT;
  *size_out = (c.used + a - 1) / a * a;
  if (arena == NULL) return TETHER_STATUS_SUCCESS;

  for (uint32_t i = 0; i < m->tensor_count; i++) {
    const tether_tensor* tt = &m->tensors[i];
    t->data[i] = (tt->flags & TETHER_TENSOR_CONSTANT) ? (void*)(uintptr_t)tt->data : NULL;
  }
  for (uint32_t q = 0; q < t->op_count; q++) {
    tether_train_op* h = &t->ops[q];
    if (h->param < 0) continue;
    const tether_train_param* w = &t->params[h->param];
    tether_f32_gemm_pack(m->kernels->gemm_nr, h->n, h->k, w->value,
                         h->has_bias ? t->params[h->param + 1].value : NULL, h->packed);
  }
  t->rng = config->seed;
  t->beta_1_power = t->beta_2_power = 1.0f;
  t->magic = TETHER_TRAIN_MAGIC;
  *trainer_out = t;
  return TETHER_STATUS_SUCCESS;
}
