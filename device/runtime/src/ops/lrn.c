/*
 * lrn.c — LRN (local response normalization, ONNX LRN / Caffe across-channel) in float32 over
 * the last axis (the channels of NHWC): y = x / (bias + alpha / size · Σ x²)^beta, the sum
 * over channels [c − ⌊(size−1)/2⌋, c + ⌈(size−1)/2⌉] clipped to the tensor. Attributes: size
 * (int >= 1), alpha, beta and bias (in `offset`); bias + alpha / size · Σ x² must stay > 0,
 * which load checks for bias > 0 and alpha >= 0. int8 is rejected at load.
 */
#include <math.h>
#include <stddef.h>

#include "ops/ops.h"

static tether_status lrn_prepare(const struct tether_model* model, uint32_t op_index,
                                 tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  const tether_op_params* p = &op->params;
  if (x->dtype == TETHER_DTYPE_INT8) {
    return tether_op_error(model, op_index, TETHER_STATUS_UNSUPPORTED_OP,
                           "int8 LRN is not implemented yet (float32 is)");
  }
  tether_status status = tether_check_f32(model, op_index, x, "input 0");
  if (status == TETHER_STATUS_SUCCESS) status = tether_check_f32(model, op_index, y, "output 0");
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (x->ndim < 1) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "input 0 needs at least one axis");
  }
  if (p->size < 1) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "attribute size must be >= 1, got %d", p->size);
  }
  if (!(isfinite(p->alpha) && isfinite(p->beta) && p->alpha >= 0.0f && p->offset > 0.0f &&
        isfinite(p->offset))) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "LRN needs finite alpha >= 0, beta and bias (offset) > 0");
  }
  return tether_check_shape(model, op_index, y, "output 0", x->ndim, x->shape);
}

static void lrn_eval(const struct tether_model* model, const tether_node* op, void* const* data,
                     void* scratch, struct tether_pool* pool) {
  (void)pool;
  (void)scratch;
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_op_params* p = &op->params;
  const size_t n = (size_t)x->shape[x->ndim - 1];
  tether_ref_f32_lrn(x->elements / n, n, p->size, p->alpha, p->beta, p->offset,
                     (const float*)data[op->inputs[0]], (float*)data[op->outputs[0]]);
}

TETHER_OP_DEF(LRN) = {1, 1, TETHER_NO_OPTIONAL,
                      TETHER_ATTR(SIZE) | TETHER_ATTR(ALPHA) | TETHER_ATTR(BETA) |
                          TETHER_ATTR(OFFSET),
                      TETHER_ATTR(SIZE) | TETHER_ATTR(ALPHA) | TETHER_ATTR(BETA) |
                          TETHER_ATTR(OFFSET),
                      lrn_prepare, NULL, lrn_eval};
