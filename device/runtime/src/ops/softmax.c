/*
 * softmax.c — SOFTMAX over the last axis: y = exp(beta*x - max) / sum(exp(beta*x - max)).
 */
#include <math.h>

#include "../internal.h"

void tether_f32_softmax_ukernel__scalar(size_t rows, size_t n, float beta, const float* x,
                                        float* y) {
  for (size_t r = 0; r < rows; r++) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    float max = beta * xr[0];
    for (size_t i = 1; i < n; i++) {
      const float v = beta * xr[i];
      if (v > max) max = v;
    }
    float sum = 0.0f;
    for (size_t i = 0; i < n; i++) {
      yr[i] = expf(beta * xr[i] - max);
      sum += yr[i];
    }
    for (size_t i = 0; i < n; i++) yr[i] = yr[i] / sum;
  }
}

tether_status tether_softmax_prepare(const struct tether_model* model, uint32_t op_index,
                                     tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  tether_status status = tether_check_f32(model, op_index, x, "input 0");
  if (status == TETHER_STATUS_SUCCESS) status = tether_check_f32(model, op_index, y, "output 0");
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (x->ndim < 1) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "input 0 needs at least one axis");
  }
  if (!isfinite(op->params.beta)) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR, "beta is not finite");
  }
  return tether_check_shape(model, op_index, y, "output 0", x->ndim, x->shape);
}

void tether_softmax_eval(const struct tether_model* model, const tether_node* op,
                         void* const* data, void* scratch) {
  (void)scratch;
  const tether_tensor* x = tether_input(model, op, 0);
  const size_t n = (size_t)x->shape[x->ndim - 1];
  tether_f32_softmax_ukernel__scalar(x->elements / n, n, op->params.beta,
                                     (const float*)data[op->inputs[0]],
                                     (float*)data[op->outputs[0]]);
}
