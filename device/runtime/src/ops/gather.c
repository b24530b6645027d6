/*
 * gather.c — GATHER: y[o…, j…, k…] = x[o…, idx[j…], k…] along `axis` (ONNX Gather, TFLite
 * GATHER, Keras Embedding). x of any dtype (float32, int8 keeping its quantization, int32),
 * indices int32 of any shape, y = x.shape[:axis] + idx.shape + x.shape[axis+1:] (rank <= 6).
 * A negative index counts from the end (ONNX). Constant indices are checked once at load;
 * others are control data from the caller, so op->check bounds-checks them before every eval
 * and an index outside [-n, n) fails the invoke (invalid_argument) instead of being read.
 */
#include <stddef.h>
#include <stdint.h>

#include "ops/ops.h"

/* The first index outside [-n, n) among `count`, or count when all are inside. */
static size_t gather_first_outside(const int32_t* idx, size_t count, int32_t n) {
  for (size_t j = 0; j < count; j++) {
    if (idx[j] < -n || idx[j] >= n) return j;
  }
  return count;
}

static tether_status gather_check(const struct tether_model* model, const tether_node* op,
                                  void* const* data) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* idx = tether_input(model, op, 1);
  const int32_t n = x->shape[op->params.axis];
  const int32_t* values = (const int32_t*)data[op->inputs[1]];
  const size_t at = gather_first_outside(values, idx->elements, n);
  if (at == idx->elements) return TETHER_STATUS_SUCCESS;
  return tether_op_error(model, (uint32_t)(op - model->ops), TETHER_STATUS_INVALID_ARGUMENT,
                         "index %d at position %zu of '%s' is outside [%d, %d) (axis %d of "
                         "'%s')", values[at], at, idx->name, -n, n, op->params.axis, x->name);
}

static tether_status gather_prepare(const struct tether_model* model, uint32_t op_index,
                                    tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* idx = tether_input(model, op, 1);
  const tether_tensor* y = tether_output(model, op, 0);
  const int32_t axis = op->params.axis;
  if (idx->dtype != TETHER_DTYPE_INT32 || y->dtype != x->dtype) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "needs int32 indices (input 1 '%s' is %s) and an output of the "
                           "table's dtype %s (output '%s' is %s)", idx->name,
                           tether_dtype_name(idx->dtype), tether_dtype_name(x->dtype), y->name,
                           tether_dtype_name(y->dtype));
  }
  if (axis < 0 || axis >= (int32_t)x->ndim) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "axis %d outside [0, %u) of input 0 '%s'", axis, (unsigned)x->ndim,
                           x->name);
  }
  if (x->dtype == TETHER_DTYPE_INT8 &&
      (x->quant != TETHER_QUANT_PER_TENSOR || y->quant != TETHER_QUANT_PER_TENSOR ||
       y->scale != x->scale || y->zero_point != x->zero_point)) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "an int8 gather needs a per-tensor table '%s' and keeps its "
                           "quantization in output '%s'", x->name, y->name);
  }
  const uint32_t rank = x->ndim - 1u + idx->ndim;
  if (rank > TETHER_MAX_DIMS) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "output rank %u (input rank %u - 1 + index rank %u) exceeds %d",
                           (unsigned)rank, (unsigned)x->ndim, (unsigned)idx->ndim,
                           TETHER_MAX_DIMS);
  }
  int32_t expected[TETHER_MAX_DIMS];
  uint32_t k = 0;
  for (int32_t d = 0; d < axis; d++) expected[k++] = x->shape[d];
  for (uint32_t d = 0; d < idx->ndim; d++) expected[k++] = idx->shape[d];
  for (uint32_t d = (uint32_t)axis + 1; d < x->ndim; d++) expected[k++] = x->shape[d];
  tether_status status = tether_check_shape(model, op_index, y, "output 0", rank, expected);
  if (status != TETHER_STATUS_SUCCESS) return status;
  op->check = NULL;
  if (idx->flags & TETHER_TENSOR_CONSTANT) {
    const int32_t* values = (const int32_t*)idx->data;
    const size_t at = gather_first_outside(values, idx->elements, x->shape[axis]);
    if (at != idx->elements) {
      return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "constant index %d at position %zu of '%s' is outside [%d, %d) "
                             "(axis %d of '%s')", values[at], at, idx->name, -x->shape[axis],
                             x->shape[axis], axis, x->name);
    }
  } else {
    op->check = gather_check;
  }
  return TETHER_STATUS_SUCCESS;
}

static void gather_eval(const struct tether_model* model, const tether_node* op,
                        void* const* data, void* scratch, struct tether_pool* pool) {
  (void)scratch;
  (void)pool;
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* idx = tether_input(model, op, 1);
  const int32_t axis = op->params.axis;
  size_t outer = 1, row = tether_dtype_size(x->dtype);
  for (int32_t d = 0; d < axis; d++) outer *= (size_t)x->shape[d];
  for (uint32_t d = (uint32_t)axis + 1; d < x->ndim; d++) row *= (size_t)x->shape[d];
  tether_ref_gather(outer, (size_t)x->shape[axis], row, (const int32_t*)data[op->inputs[1]],
                    idx->elements, data[op->inputs[0]], data[op->outputs[0]]);
}

TETHER_OP_DEF(GATHER) = {2, 2, TETHER_NO_OPTIONAL, TETHER_ATTR(AXIS), TETHER_ATTR(AXIS),
                         gather_prepare, NULL, gather_eval};
