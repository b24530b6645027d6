/*
 * norm.c — LAYER_NORM and INSTANCE_NORM in float32: y = (x − mean) / sqrt(var + epsilon) ·
 * gamma + beta, the mean and (biased) variance taken
 *   - LAYER_NORM: over the last axes from `axis` on (ONNX LayerNormalization, Keras
 *     LayerNormalization), gamma and beta of shape x.shape[axis:];
 *   - INSTANCE_NORM: per sample and channel over the spatial axes of NHWC x [N, S…, C] (ONNX
 *     InstanceNormalization, Keras GroupNormalization with one channel per group), gamma and
 *     beta of shape [C].
 * gamma and beta are optional (1 and 0). Both accumulate in double (reference/norm.c), so a
 * large mean does not cost the variance its precision. int8 is rejected at load (the
 * converter keeps them float).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "ops/ops.h"

/* Checks the float32 dtypes, y's shape (x's), epsilon and the optional gamma (input 1) and
 * beta (input 2) against the `count` trailing dims `dims` they must have. */
static tether_status norm_check(const struct tether_model* model, uint32_t op_index,
                                const tether_node* op, const char* what, uint32_t count,
                                const int32_t* dims) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  if (x->dtype == TETHER_DTYPE_INT8) {
    return tether_op_error(model, op_index, TETHER_STATUS_UNSUPPORTED_OP,
                           "int8 %s is not implemented yet (float32 is)", what);
  }
  tether_status status = tether_check_f32(model, op_index, x, "input 0");
  if (status == TETHER_STATUS_SUCCESS) status = tether_check_f32(model, op_index, y, "output 0");
  if (status == TETHER_STATUS_SUCCESS) {
    status = tether_check_shape(model, op_index, y, "output 0", x->ndim, x->shape);
  }
  if (status != TETHER_STATUS_SUCCESS) return status;
  const float eps = op->params.epsilon;
  if (!(isfinite(eps) && eps > 0.0f)) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "attribute epsilon must be finite and > 0, got %g", (double)eps);
  }
  static const char* const kSlots[3] = {"", "input 1 (gamma)", "input 2 (beta)"};
  for (uint32_t i = 1; i < op->input_count && i < 3; i++) {
    if (op->inputs[i] == TETHER_NO_TENSOR) continue;
    const tether_tensor* t = tether_input(model, op, i);
    status = tether_check_f32(model, op_index, t, kSlots[i]);
    if (status == TETHER_STATUS_SUCCESS) {
      status = tether_check_shape(model, op_index, t, kSlots[i], count, dims);
    }
    if (status != TETHER_STATUS_SUCCESS) return status;
  }
  return TETHER_STATUS_SUCCESS;
}

static const float* norm_operand(const tether_node* op, void* const* data, uint32_t i) {
  return i < op->input_count && op->inputs[i] != TETHER_NO_TENSOR
             ? (const float*)data[op->inputs[i]]
             : NULL;
}

static tether_status layer_norm_prepare(const struct tether_model* model, uint32_t op_index,
                                        tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const int32_t axis = op->params.axis;
  if (x->ndim < 1 || axis < 0 || axis >= (int32_t)x->ndim) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "axis %d (the first normalized axis) is outside [0, %u) of input 0 "
                           "'%s'", axis, (unsigned)x->ndim, x->name);
  }
  return norm_check(model, op_index, op, "LAYER_NORM", x->ndim - (uint32_t)axis,
                    x->shape + axis);
}

static void layer_norm_eval(const struct tether_model* model, const tether_node* op,
                            void* const* data, void* scratch, struct tether_pool* pool) {
  (void)scratch;
  (void)pool;
  const tether_tensor* x = tether_input(model, op, 0);
  size_t n = 1;
  for (int32_t k = op->params.axis; k < (int32_t)x->ndim; k++) n *= (size_t)x->shape[k];
  tether_ref_f32_layer_norm(x->elements / n, n, op->params.epsilon,
                            (const float*)data[op->inputs[0]], norm_operand(op, data, 1),
                            norm_operand(op, data, 2), (float*)data[op->outputs[0]]);
}

static tether_status instance_norm_prepare(const struct tether_model* model, uint32_t op_index,
                                           tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  if (x->ndim < 3) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "input 0 '%s' needs rank >= 3 ([N, spatial..., C]), got rank %u",
                           x->name, (unsigned)x->ndim);
  }
  return norm_check(model, op_index, op, "INSTANCE_NORM", 1, x->shape + x->ndim - 1);
}

static void instance_norm_eval(const struct tether_model* model, const tether_node* op,
                               void* const* data, void* scratch, struct tether_pool* pool) {
  (void)scratch;
  (void)pool;
  const tether_tensor* x = tether_input(model, op, 0);
  const size_t batch = (size_t)x->shape[0], channels = (size_t)x->shape[x->ndim - 1];
  tether_ref_f32_instance_norm(batch, x->elements / (batch * channels), channels,
                               op->params.epsilon, (const float*)data[op->inputs[0]],
                               norm_operand(op, data, 1), norm_operand(op, data, 2),
                               (float*)data[op->outputs[0]]);
}

TETHER_OP_DEF(LAYER_NORM) = {1, 3, 1, TETHER_ATTR(AXIS) | TETHER_ATTR(EPSILON), TETHER_ATTR(AXIS),
                             layer_norm_prepare, NULL, layer_norm_eval};
TETHER_OP_DEF(INSTANCE_NORM) = {1, 3, 1, TETHER_ATTR(EPSILON), 0, instance_norm_prepare, NULL,
                                instance_norm_eval};
