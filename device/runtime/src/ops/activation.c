/*
 * activation.c — standalone RELU / RELU6 / LOGISTIC / TANH / HARD_SWISH, and the fused
 * activation helper every op's output goes through (tether_op_eval applies it).
 */
#include <math.h>
#include <stddef.h>

#include "../internal.h"
#include "../ukernels.h"

float tether_f32_activation_one(float x, uint32_t activation) {
  switch (activation) {
    case TETHER_ACT_RELU: return x > 0.0f ? x : 0.0f;
    case TETHER_ACT_RELU6: return x > 0.0f ? (x < 6.0f ? x : 6.0f) : 0.0f;
    case TETHER_ACT_RELU_N1_TO_1: return x > -1.0f ? (x < 1.0f ? x : 1.0f) : -1.0f;
    case TETHER_ACT_TANH: return tanhf(x);
    case TETHER_ACT_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case TETHER_ACT_HARD_SWISH: {
      float r = x + 3.0f;
      r = r > 0.0f ? (r < 6.0f ? r : 6.0f) : 0.0f;
      return x * r / 6.0f;
    }
    default: return x;
  }
}

/* y[i] = act(y[i]) for i < n, in place. */
void tether_f32_activation_ukernel__scalar(size_t n, const float* x, float* y,
                                           uint32_t activation) {
  switch (activation) {
    case TETHER_ACT_NONE:
      if (x != y) {
        for (size_t i = 0; i < n; i++) y[i] = x[i];
      }
      return;
    case TETHER_ACT_RELU:
      for (size_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
      return;
    case TETHER_ACT_RELU6:
      for (size_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? (x[i] < 6.0f ? x[i] : 6.0f) : 0.0f;
      return;
    default:
      for (size_t i = 0; i < n; i++) y[i] = tether_f32_activation_one(x[i], activation);
      return;
  }
}

void tether_f32_activation_apply(float* y, size_t n, uint32_t activation) {
  if (activation != TETHER_ACT_NONE) tether_f32_activation_ukernel__scalar(n, y, y, activation);
}

static uint32_t activation_of_op(uint32_t type) {
  switch (type) {
    case TETHER_OP_RELU: return TETHER_ACT_RELU;
    case TETHER_OP_RELU6: return TETHER_ACT_RELU6;
    case TETHER_OP_LOGISTIC: return TETHER_ACT_SIGMOID;
    case TETHER_OP_TANH: return TETHER_ACT_TANH;
    case TETHER_OP_HARD_SWISH: return TETHER_ACT_HARD_SWISH;
  }
  return TETHER_ACT_NONE;
}

tether_status tether_activation_prepare(const struct tether_model* model, uint32_t op_index,
                                        tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  tether_status status = x->dtype == TETHER_DTYPE_INT8
                             ? tether_q8_unary_prepare(model, op_index, op)
                             : tether_check_f32(model, op_index, x, "input 0");
  if (status == TETHER_STATUS_SUCCESS && !op->quantized) {
    status = tether_check_f32(model, op_index, y, "output 0");
  }
  if (status == TETHER_STATUS_SUCCESS) {
    status = tether_check_shape(model, op_index, y, "output 0", x->ndim, x->shape);
  }
  if (status == TETHER_STATUS_SUCCESS && op->type == TETHER_OP_CLAMP &&
      !(op->params.clamp_min <= op->params.clamp_max)) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "CLAMP needs min <= max (and neither NaN)");
  }
  if (status == TETHER_STATUS_SUCCESS && op->type == TETHER_OP_HARD_SIGMOID &&
      !(isfinite(op->params.alpha) && isfinite(op->params.offset))) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "HARD_SIGMOID needs finite alpha and offset");
  }
  return status;
}

void tether_activation_eval(const struct tether_model* model, const tether_node* op,
                            void* const* data, void* scratch, struct tether_pool* pool) {
  (void)pool;
  (void)scratch;
  if (op->quantized) {
    tether_q8_unary_eval(model, op, data);
    return;
  }
  const tether_tensor* y = tether_output(model, op, 0);
  if (op->type == TETHER_OP_CLAMP || op->type == TETHER_OP_HARD_SIGMOID) {
    const float* x = (const float*)data[op->inputs[0]];
    float* out = (float*)data[op->outputs[0]];
    const int clamp = op->type == TETHER_OP_CLAMP;
    const float lo = clamp ? op->params.clamp_min : 0.0f, hi = clamp ? op->params.clamp_max : 1.0f;
    const float alpha = clamp ? 1.0f : op->params.alpha, offset = clamp ? 0.0f : op->params.offset;
    for (size_t i = 0; i < y->elements; i++) {
      const float v = clamp ? x[i] : alpha * x[i] + offset;
      out[i] = v < lo ? lo : v > hi ? hi : v;
    }
    return;
  }
  tether_f32_activation_ukernel__scalar(y->elements, (const float*)data[op->inputs[0]],
                                        (float*)data[op->outputs[0]], activation_of_op(op->type));
}

int tether_f32_minmax_of(uint32_t activation, tether_f32_minmax* out) {
  out->min = -INFINITY;
  out->max = INFINITY;
  switch (activation) {
    case TETHER_ACT_NONE: return 1;
    case TETHER_ACT_RELU: out->min = 0.0f; return 1;
    case TETHER_ACT_RELU6: out->min = 0.0f; out->max = 6.0f; return 1;
    case TETHER_ACT_RELU_N1_TO_1: out->min = -1.0f; out->max = 1.0f; return 1;
  }
  return 0;
}
