/*
 * registry.c — the op table, built from tether.h's TETHER_OP_LIST: each op's row (defined in
 * its op file with TETHER_OP_DEF), its name and the count, plus the two walks over it that
 * the loader and the session make (packing the weights, evaluating one op).
 */
#include <stddef.h>
#include <stdint.h>

#include "ops/ops.h"

#define TETHER_DECLARE_ROW_(id, name) extern const tether_op_def tether_op_def_##name;
TETHER_OP_LIST(TETHER_DECLARE_ROW_)
#undef TETHER_DECLARE_ROW_

#define TETHER_ROW_(id, name) [id] = &tether_op_def_##name,
static const tether_op_def* const kOpDefs[TETHER_OP_COUNT] = {TETHER_OP_LIST(TETHER_ROW_)};
#undef TETHER_ROW_

#define TETHER_NAME_(id, name) [id] = #name,
static const char* const kOpNames[TETHER_OP_COUNT] = {TETHER_OP_LIST(TETHER_NAME_)};
#undef TETHER_NAME_

/* Ids run 1..TETHER_OP_COUNT - 1 without gaps: every slot but 0 has a row and a name. */
#define TETHER_CHECK_ID_(id, name) \
  _Static_assert((id) >= 1 && (id) < TETHER_OP_COUNT, "op id " #name " out of range");
TETHER_OP_LIST(TETHER_CHECK_ID_)
#undef TETHER_CHECK_ID_
#define TETHER_ONE_(id, name) +1
_Static_assert(0 TETHER_OP_LIST(TETHER_ONE_) == TETHER_OP_COUNT - 1,
               "TETHER_OP_LIST has gaps or duplicate ids");
#undef TETHER_ONE_

const tether_op_def* tether_op_def_for(uint32_t type) {
  return type >= 1 && type < TETHER_OP_COUNT ? kOpDefs[type] : NULL;
}

const char* tether_op_type_name(uint32_t type) {
  return type >= 1 && type < TETHER_OP_COUNT ? kOpNames[type] : "?";
}

uint64_t tether_op_work(const struct tether_model* model, const tether_node* op) {
  uint64_t out = 0, in = 0;
  for (uint32_t o = 0; o < op->output_count; o++) out += model->tensors[op->outputs[o]].elements;
  for (uint32_t i = 0; i < op->input_count; i++) {
    if (op->inputs[i] != TETHER_NO_TENSOR) in += model->tensors[op->inputs[i]].elements;
  }
  const tether_tensor* y = &model->tensors[op->outputs[0]];
  switch (op->type) {
    case TETHER_OP_CONV_2D:
    case TETHER_OP_DEPTHWISE_CONV_2D:
    case TETHER_OP_FULLY_CONNECTED:
    case TETHER_OP_BATCH_MATMUL: {
      /* Products per output: the weights (input 1) per output channel. */
      const tether_tensor* w = &model->tensors[op->inputs[1]];
      const uint64_t channels = y->ndim > 0 && y->shape[y->ndim - 1] > 0
                                    ? (uint64_t)y->shape[y->ndim - 1] : 1;
      return out * (w->elements / channels > 0 ? w->elements / channels : 1);
    }
    default:
      /* A multiply-add's time moves about four float elements; an int8 element of ADD and
       * its kin takes about eight (three requantizations). */
      return op->quantized ? 8 * out : (out + in) / 4;
  }
}

tether_status tether_op_eval(const struct tether_model* model, uint32_t op_index,
                             void* const* data, void* scratch) {
  return tether_op_eval_parallel(model, op_index, data, scratch, NULL);
}

tether_status tether_op_eval_parallel(const struct tether_model* model, uint32_t op_index,
                                      void* const* data, void* scratch,
                                      struct tether_pool* pool) {
  const tether_node* op = &model->ops[op_index];
  if (op->check != NULL) {
    const tether_status status = op->check(model, op, data);
    if (status != TETHER_STATUS_SUCCESS) return status;
  }
  kOpDefs[op->type]->eval(model, op, data, scratch, pool);
  if (op->activation != TETHER_ACT_NONE && !op->fused_activation) {
    const tether_tensor* y = &model->tensors[op->outputs[0]];
    tether_f32_activation_apply((float*)data[op->outputs[0]], y->elements, op->activation);
  }
  return TETHER_STATUS_SUCCESS;
}

tether_status tether_pack_weights(struct tether_model* m) {
  uint64_t total = 0;
  for (uint32_t i = 0; i < m->op_count; i++) {
    /* 16 floats of padding per op keep every op's panel 64-byte aligned. */
    if (m->ops[i].packed_floats > 0) total += ((uint64_t)m->ops[i].packed_floats + 15) / 16 * 16;
  }
  if (total == 0) return TETHER_STATUS_SUCCESS;
  if (total > SIZE_MAX / 8) {
    return tether_set_error(TETHER_STATUS_OUT_OF_MEMORY, "packed weights need %llu floats",
                            (unsigned long long)total);
  }
  if (m->tally != NULL && m->tally->dry_run) {
    tether_tally_request(m->tally, (size_t)total * sizeof(float));
    for (uint32_t i = 0; i < m->op_count; i++) {
      const tether_node* op = &m->ops[i];
      if (op->packed_floats == 0) continue;
      tether_status status = kOpDefs[op->type]->pack(m, op, NULL);
      if (status != TETHER_STATUS_SUCCESS) return status;
    }
    return TETHER_STATUS_SUCCESS;
  }
  float* block = (float*)tether_model_allocate(m, (size_t)total * sizeof(float),
                                               TETHER_ARENA_ALIGNMENT);
  if (block == NULL) {
    return tether_set_error(TETHER_STATUS_OUT_OF_MEMORY,
                            "cannot allocate %llu bytes for packed weights",
                            (unsigned long long)total * 4);
  }
  m->packed = block;
  m->packed_bytes = (size_t)total * sizeof(float);
  float* p = block;
  for (uint32_t i = 0; i < m->op_count; i++) {
    tether_node* op = &m->ops[i];
    if (op->packed_floats == 0) continue;
    tether_status status = kOpDefs[op->type]->pack(m, op, p);
    if (status != TETHER_STATUS_SUCCESS) {
      tether_model_deallocate(m, block, (size_t)total * sizeof(float));
      m->packed = NULL;
      return status;
    }
    op->packed = p;
    p += (op->packed_floats + 15) / 16 * 16;
  }
  return TETHER_STATUS_SUCCESS;
}
