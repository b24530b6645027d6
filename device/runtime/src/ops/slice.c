/*
 * slice.c — SLICE: y[j_0, …] = x[begin_0 + j_0·steps_0, …], the output's shape from the tensor
 * table (ONNX Slice and Split, TFLite SLICE / STRIDED_SLICE / SPLIT once the converter has
 * resolved negative and clamped bounds); any dtype (1- or 4-byte elements, int8 keeps the
 * input's quantization), rank <= 6. Per axis 0 <= begin < size and steps != 0 (a negative step
 * walks the axis backwards: x[::-1] is begin size - 1, step -1); every index read must lie
 * inside x, which prepare checks.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ops/ops.h"

static tether_status slice_prepare(const struct tether_model* model, uint32_t op_index,
                                   tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  tether_op_params* p = &op->params;
  if (y->dtype != x->dtype || y->ndim != x->ndim || (uint32_t)p->begin_count != x->ndim ||
      (p->steps_count != 0 && (uint32_t)p->steps_count != x->ndim)) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "needs output dtype and rank = the input's (%u) and begin (and "
                           "steps) with one value per axis, got %d (%d)", (unsigned)x->ndim,
                           p->begin_count, p->steps_count);
  }
  if (x->dtype == TETHER_DTYPE_INT8 &&
      (y->quant != x->quant || y->scale != x->scale || y->zero_point != x->zero_point)) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "an int8 slice keeps the input's quantization");
  }
  if (p->steps_count == 0) {
    for (uint32_t d = 0; d < x->ndim; d++) p->steps[d] = 1;
    p->steps_count = (int32_t)x->ndim;
  }
  for (uint32_t d = 0; d < x->ndim; d++) {
    const int64_t last = (int64_t)p->begin[d] + ((int64_t)y->shape[d] - 1) * p->steps[d];
    if (p->begin[d] < 0 || p->steps[d] == 0 ||
        (y->shape[d] > 0 && (p->begin[d] >= x->shape[d] || last < 0 || last >= x->shape[d]))) {
      return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "axis %u: begin %d, step %d and %d outputs read outside the "
                             "input's %d", (unsigned)d, p->begin[d], p->steps[d], y->shape[d],
                             x->shape[d]);
    }
  }
  return TETHER_STATUS_SUCCESS;
}

static void slice_eval(const struct tether_model* model, const tether_node* op,
                       void* const* data, void* scratch, struct tether_pool* pool) {
  (void)scratch;
  (void)pool;
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  const tether_op_params* p = &op->params;
  const size_t esize = tether_dtype_size(x->dtype);
  const size_t rank = x->ndim;
  if (y->elements == 0) return;
  size_t stride[TETHER_MAX_DIMS], idx[TETHER_MAX_DIMS], s = 1;
  ptrdiff_t step[TETHER_MAX_DIMS], offset = 0;  /* steps may be negative; offset stays >= 0 */
  for (size_t d = rank; d-- > 0;) {
    stride[d] = s;
    s *= (size_t)x->shape[d];
  }
  for (size_t d = 0; d < rank; d++) {
    step[d] = (ptrdiff_t)stride[d] * (ptrdiff_t)p->steps[d];
    offset += (ptrdiff_t)stride[d] * (ptrdiff_t)p->begin[d];
    idx[d] = 0;
  }
  const uint8_t* xs = (const uint8_t*)data[op->inputs[0]];
  uint8_t* ys = (uint8_t*)data[op->outputs[0]];
  /* Runs of the last axis are copied whole when its step is 1. */
  const size_t inner = rank > 0 && p->steps[rank - 1] == 1 ? (size_t)y->shape[rank - 1] : 1;
  const size_t outer_rank = inner > 1 ? rank - 1 : rank;
  for (size_t j = 0; j < y->elements; j += inner) {
    memcpy(ys + j * esize, xs + (size_t)offset * esize, inner * esize);
    for (size_t k = outer_rank; k-- > 0;) {  /* odometer over the output index */
      offset += step[k];
      if (++idx[k] < (size_t)y->shape[k]) break;
      offset -= step[k] * (ptrdiff_t)y->shape[k];
      idx[k] = 0;
    }
  }
}

TETHER_OP_DEF(SLICE) = {1, 1, TETHER_NO_OPTIONAL, TETHER_ATTR(BEGIN) | TETHER_ATTR(STEPS),
                        TETHER_ATTR(BEGIN), slice_prepare, NULL, slice_eval};
