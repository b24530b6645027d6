/*
 * concat.c — CONCATENATION of any number of inputs along one axis. int8: inputs quantized
 * like the output are copied, the others requantized as int8 QUANTIZE does (TFLite's
 * Requantize).
 */
#include <string.h>

#include "ops/ops.h"

/* ---- int8 --------------------------------------------------------------------------------- */

static tether_status q8_concat_prepare(const struct tether_model* model, uint32_t op_index,
                                       tether_node* op) {
  const tether_tensor* y = tether_output(model, op, 0);
  tether_status status = tether_q8_need_per_tensor(model, op_index, y, "output 0");
  if (status == TETHER_STATUS_SUCCESS && op->activation != TETHER_ACT_NONE) {
    status = tether_q8_need_fused_range(model, op_index, op, y);
  }
  for (uint32_t i = 0; status == TETHER_STATUS_SUCCESS && i < op->input_count; i++) {
    const tether_tensor* x = tether_input(model, op, i);
    char slot[32];
    tether_format(slot, sizeof(slot), "input %u", i);
    status = tether_q8_need_per_tensor(model, op_index, x, slot);
    if (status != TETHER_STATUS_SUCCESS) break;
    /* (q - z) << shift must fit int32 in MultiplyByQuantizedMultiplier: |q - z| <= 255,
     * so shift <= 23, i.e. s_x / s_y < 2^23. */
    int32_t multiplier, shift;
    tether_quantize_multiplier((double)x->scale / (double)y->scale, &multiplier, &shift);
    if (shift > 23) {
      return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "input %u '%s': scale ratio s_x / s_y = 2^%d or more is out of "
                             "range for int8 requantization",
                             i, x->name, (int)shift - 1);
    }
  }
  if (status != TETHER_STATUS_SUCCESS) return status;
  op->quantized = 1;
  op->fused_activation = 1;
  return TETHER_STATUS_SUCCESS;
}

static void q8_concat_eval(const struct tether_model* model, const tether_node* op,
                           void* const* data) {
  const tether_tensor* y = tether_output(model, op, 0);
  const uint32_t axis = (uint32_t)op->params.axis;
  size_t outer = 1, inner = 1;
  for (uint32_t d = 0; d < axis; d++) outer *= (size_t)y->shape[d];
  for (uint32_t d = axis + 1; d < y->ndim; d++) inner *= (size_t)y->shape[d];
  int32_t lo = -128, hi = 127;
  tether_q8_activation_range(op->activation, y->scale, y->zero_point, &lo, &hi);
  const int clamps = lo > -128 || hi < 127;
  int8_t* out = (int8_t*)data[op->outputs[0]];
  for (uint32_t i = 0; i < op->input_count; i++) {
    const tether_tensor* x = tether_input(model, op, i);
    const size_t chunk = (size_t)x->shape[axis] * inner;
    const int8_t* in = (const int8_t*)data[op->inputs[i]];
    int8_t* dst = out;
    if (x->scale == y->scale && x->zero_point == y->zero_point && !clamps) {
      for (size_t o = 0; o < outer; o++) memcpy(dst + o * (y->elements / outer), in + o * chunk, chunk);
    } else {
      int32_t multiplier, shift;  /* TFLite Requantize, as int8 -> int8 QUANTIZE */
      tether_quantize_multiplier((double)x->scale / (double)y->scale, &multiplier, &shift);
      for (size_t o = 0; o < outer; o++) {
        const int8_t* src = in + o * chunk;
        int8_t* row = dst + o * (y->elements / outer);
        for (size_t k = 0; k < chunk; k++) {
          const int32_t v = tether_multiply_by_quantized_multiplier(
                                (int32_t)src[k] - x->zero_point, multiplier, shift) +
                            y->zero_point;
          row[k] = (int8_t)tether_clamp_i32(v, lo, hi);
        }
      }
    }
    out += chunk;
  }
}

static tether_status concat_prepare(const struct tether_model* model, uint32_t op_index,
                                    tether_node* op) {
  const tether_tensor* x0 = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  const int32_t axis = op->params.axis;
  const int int8 = y->dtype == TETHER_DTYPE_INT8;
  tether_status status = int8 ? q8_concat_prepare(model, op_index, op)
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

static void concat_eval(const struct tether_model* model, const tether_node* op,
                        void* const* data, void* scratch, struct tether_pool* pool) {
  (void)pool;
  (void)scratch;
  if (op->quantized) {
    q8_concat_eval(model, op, data);
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

TETHER_OP_DEF(CONCATENATION) = {1, UINT16_MAX, TETHER_NO_OPTIONAL, TETHER_ATTR(AXIS), 0,
                                concat_prepare, NULL, concat_eval};
