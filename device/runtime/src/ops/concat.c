/*
 * concat.c — CONCATENATION of any number of float32 inputs along one axis.
 */
#include <string.h>

#include "../internal.h"

tether_status tether_concat_prepare(const struct tether_model* model, uint32_t op_index,
                                    tether_node* op) {
  const tether_tensor* x0 = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  const int32_t axis = op->params.axis;
  const int int8 = y->dtype == TETHER_DTYPE_INT8;
  tether_status status = int8 ? tether_q8_concat_prepare(model, op_index, op)
                              : tether_check_f32(model, op_index, y, "output 0");
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (axis < 0 || axis >= (int32_t)x0->ndim) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "attribute axis is required and must be in [0, %u), got %d",
                           (unsigned)x0->ndim, axis);
  }
  int64_t total = 0;
  for (uint32_t i = 0; i < op->input_count; i++) {
    const tether_tensor* x = tether_input(model, op, i);
    char slot[32];
    tether_format(slot, sizeof(slot), "input %u", i);
    status = int8 ? TETHER_STATUS_SUCCESS : tether_check_f32(model, op_index, x, slot);
    if (status != TETHER_STATUS_SUCCESS) return status;
    int same = x->ndim == x0->ndim;
    for (uint32_t d = 0; same && d < x->ndim; d++) {
      same = (int32_t)d == axis || x->shape[d] == x0->shape[d];
    }
    if (!same) {
      char xs[96], x0s[96];
      return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "input %u %s differs from input 0 %s off axis %d", i,
                             tether_shape_string(x, xs, sizeof(xs)),
                             tether_shape_string(x0, x0s, sizeof(x0s)), axis);
    }
    total += x->shape[axis];
  }
  if (total > INT32_MAX) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "concatenated axis is too long");
  }
  int32_t expected[TETHER_MAX_DIMS];
  for (uint32_t d = 0; d < x0->ndim; d++) {
    expected[d] = (int32_t)d == axis ? (int32_t)total : x0->shape[d];
  }
  return tether_check_shape(model, op_index, y, "output 0", x0->ndim, expected);
}

void tether_concat_eval(const struct tether_model* model, const tether_node* op,
                        void* const* data, void* scratch, struct tether_pool* pool) {
  (void)pool;
  (void)scratch;
  if (op->quantized) {
    tether_q8_concat_eval(model, op, data);
    return;
  }
  const tether_tensor* y = tether_output(model, op, 0);
  const uint32_t axis = (uint32_t)op->params.axis;
  size_t outer = 1, inner = 1;
  for (uint32_t d = 0; d < axis; d++) outer *= (size_t)y->shape[d];
  for (uint32_t d = axis + 1; d < y->ndim; d++) inner *= (size_t)y->shape[d];
  float* out = (float*)data[op->outputs[0]];
  for (size_t o = 0; o < outer; o++) {
    for (uint32_t i = 0; i < op->input_count; i++) {
      const tether_tensor* x = tether_input(model, op, i);
      const size_t chunk = (size_t)x->shape[axis] * inner;
      const float* in = (const float*)data[op->inputs[i]] + o * chunk;
      memcpy(out, in, chunk * sizeof(float));
      out += chunk;
    }
  }
}
