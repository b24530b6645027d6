/*
 * pad.c — PAD with a constant: y = x surrounded by paddings (before_d, after_d) per dim.
 * int8: the padding cells hold the quantized pad value (z_x for the usual 0); the output is
 * quantized like the input.
 */
#include <math.h>
#include <string.h>

#include "ops/ops.h"

/* ---- int8 --------------------------------------------------------------------------------- */

static tether_status q8_pad_prepare(const struct tether_model* model, uint32_t op_index,
                                    tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  tether_status status = tether_q8_need_per_tensor(model, op_index, x, "input 0");
  if (status == TETHER_STATUS_SUCCESS) status = tether_q8_need_per_tensor(model, op_index, y, "output 0");
  if (status == TETHER_STATUS_SUCCESS) status = tether_q8_need_same_quant(model, op_index, x, y);
  if (status == TETHER_STATUS_SUCCESS && !isfinite(op->params.value)) {
    status = tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "int8 PAD needs a finite pad value");
  }
  if (status != TETHER_STATUS_SUCCESS) return status;
  op->quantized = 1;
  return TETHER_STATUS_SUCCESS;
}

static void q8_pad_eval(const struct tether_model* model, const tether_node* op,
                        void* const* data) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  const int32_t* pads = op->params.paddings;
  const int8_t* in = (const int8_t*)data[op->inputs[0]];
  int8_t* out = (int8_t*)data[op->outputs[0]];
  const int8_t fill = (int8_t)tether_clamp_i32(tether_q8_quantize_value(op->params.value, x->scale,
                                                           x->zero_point), -128, 127);
  memset(out, (unsigned char)fill, y->elements);
  const uint32_t ndim = x->ndim;
  size_t y_stride[TETHER_MAX_DIMS];
  size_t s = 1;
  for (uint32_t d = ndim; d-- > 0;) {
    y_stride[d] = s;
    s *= (size_t)y->shape[d];
  }
  /* Copy x row by row (its last dim), walking the other dims with a multi-index. */
  const size_t row = (size_t)x->shape[ndim - 1];
  const size_t rows = row > 0 ? x->elements / row : 0;
  size_t index[TETHER_MAX_DIMS] = {0};
  for (size_t r = 0; r < rows; r++) {
    size_t offset = (size_t)pads[2 * (ndim - 1)];
    for (uint32_t d = 0; d + 1 < ndim; d++) offset += (index[d] + (size_t)pads[2 * d]) * y_stride[d];
    memcpy(out + offset, in + r * row, row);
    for (uint32_t d = ndim - 1; d-- > 0;) {
      if (++index[d] < (size_t)x->shape[d]) break;
      index[d] = 0;
    }
  }
}

static tether_status pad_prepare(const struct tether_model* model, uint32_t op_index,
                                 tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  const tether_op_params* p = &op->params;
  tether_status status = x->dtype == TETHER_DTYPE_INT8
                             ? q8_pad_prepare(model, op_index, op)
                             : tether_check_f32(model, op_index, x, "input 0");
  if (status == TETHER_STATUS_SUCCESS && !op->quantized) {
    status = tether_check_f32(model, op_index, y, "output 0");
  }
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (x->ndim < 1 || p->paddings_count != 2 * (int32_t)x->ndim) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "attribute paddings is required with 2*rank = %u values, got %d",
                           2u * x->ndim, p->paddings_count);
  }
  int32_t expected[TETHER_MAX_DIMS];
  for (uint32_t d = 0; d < x->ndim; d++) {
    const int32_t before = p->paddings[2 * d], after = p->paddings[2 * d + 1];
    const int64_t size = (int64_t)x->shape[d] + before + after;
    if (before < 0 || after < 0 || size > INT32_MAX) {
      return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "paddings for dim %u are (%d, %d); must be >= 0", d, before, after);
    }
    expected[d] = (int32_t)size;
  }
  return tether_check_shape(model, op_index, y, "output 0", x->ndim, expected);
}

static void pad_eval(const struct tether_model* model, const tether_node* op, void* const* data,
                     void* scratch, struct tether_pool* pool) {
  (void)pool;
  (void)scratch;
  if (op->quantized) {
    q8_pad_eval(model, op, data);
    return;
  }
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  const int32_t* pads = op->params.paddings;
  const float* in = (const float*)data[op->inputs[0]];
  float* out = (float*)data[op->outputs[0]];
  const float value = op->params.value;
  for (size_t i = 0; i < y->elements; i++) out[i] = value;
  const uint32_t ndim = x->ndim;
  size_t y_stride[TETHER_MAX_DIMS];
  size_t s = 1;
  for (uint32_t d = ndim; d-- > 0;) {
    y_stride[d] = s;
    s *= (size_t)y->shape[d];
  }
  /* Copy x row by row (its last dim), walking the other dims with a multi-index. */
  const size_t row = (size_t)x->shape[ndim - 1];
  const size_t rows = x->elements / row;
  size_t index[TETHER_MAX_DIMS] = {0};
  for (size_t r = 0; r < rows; r++) {
    size_t offset = (size_t)pads[2 * (ndim - 1)];
    for (uint32_t d = 0; d + 1 < ndim; d++) offset += (index[d] + (size_t)pads[2 * d]) * y_stride[d];
    memcpy(out + offset, in + r * row, row * sizeof(float));
    for (uint32_t d = ndim - 1; d-- > 0;) {
      if (++index[d] < (size_t)x->shape[d]) break;
      index[d] = 0;
    }
  }
}

TETHER_OP_DEF(PAD) = {1, 1, TETHER_NO_OPTIONAL, TETHER_ATTR(PADDINGS) | TETHER_ATTR(VALUE), 0,
                      pad_prepare, NULL, pad_eval};
