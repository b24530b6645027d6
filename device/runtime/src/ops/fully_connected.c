/*
 * fully_connected.c — FULLY_CONNECTED: y[r,o] = b[o] + sum_k x[r,k] * W[o,k], with r running
 * over all leading dims of x. The output keeps x's leading dims ([..., O]) or flattens them
 * ([R, O]); both have the same layout. With constant weights (and bias) the weights are
 * packed at load and the op runs as a GEMM with bias and clamp in the epilogue; otherwise
 * the reference GEMV below runs.
 */
#include <stddef.h>

#include "ops/ops.h"

static tether_status fully_connected_prepare(const struct tether_model* model,
                                             uint32_t op_index, tether_node* op) {
  if (tether_input(model, op, 0)->dtype == TETHER_DTYPE_INT8) {
    return tether_q8_weights_prepare(model, op_index, op, TETHER_Q8_DENSE);
  }
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* w = tether_input(model, op, 1);
  const tether_tensor* b = op->input_count > 2 ? tether_input(model, op, 2) : NULL;
  const tether_tensor* y = tether_output(model, op, 0);
  tether_status status = tether_check_f32(model, op_index, x, "input 0");
  if (status == TETHER_STATUS_SUCCESS) status = tether_check_f32(model, op_index, w, "input 1");
  if (status == TETHER_STATUS_SUCCESS) status = tether_check_f32(model, op_index, y, "output 0");
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (x->ndim < 1 || w->ndim != 2 || w->shape[1] != x->shape[x->ndim - 1]) {
    char xs[96], ws[96];
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "needs input 0 [..., K] and input 1 [O, K], got %s and %s",
                           tether_shape_string(x, xs, sizeof(xs)),
                           tether_shape_string(w, ws, sizeof(ws)));
  }
  if (b != NULL) {
    status = tether_check_f32(model, op_index, b, "input 2");
    if (status == TETHER_STATUS_SUCCESS) {
      status = tether_check_shape(model, op_index, b, "input 2 (bias)", 1, &w->shape[0]);
    }
    if (status != TETHER_STATUS_SUCCESS) return status;
  }
  const size_t rows = x->elements / (size_t)w->shape[1];
  if (y->ndim < 1 || y->shape[y->ndim - 1] != w->shape[0] ||
      y->elements != rows * (size_t)w->shape[0]) {
    char ys[96];
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "output 0 (tensor %u '%s') has shape %s, expected [..., %d] with "
                           "%zu rows",
                           op->outputs[0], y->name, tether_shape_string(y, ys, sizeof(ys)),
                           w->shape[0], rows);
  }
  if ((w->flags & TETHER_TENSOR_CONSTANT) && (b == NULL || (b->flags & TETHER_TENSOR_CONSTANT))) {
    op->packed_floats = tether_f32_gemm_packed_floats(model->kernels->gemm_nr,
                                                      (size_t)w->shape[0], (size_t)w->shape[1]);
    tether_f32_minmax mm;
    op->fused_activation = (uint8_t)tether_f32_minmax_of(op->activation, &mm);
  }
  return TETHER_STATUS_SUCCESS;
}

static tether_status fully_connected_pack(const struct tether_model* model,
                                          const tether_node* op, void* packed) {
  if (op->quantized) return tether_q8_weights_pack(model, op, TETHER_Q8_DENSE, packed);
  if (packed == NULL) return TETHER_STATUS_SUCCESS;  /* nothing to check */
  const tether_tensor* w = tether_input(model, op, 1);
  const tether_tensor* b = op->input_count > 2 ? tether_input(model, op, 2) : NULL;
  tether_f32_gemm_pack(model->kernels->gemm_nr, (size_t)w->shape[0], (size_t)w->shape[1],
                       (const float*)w->data, b != NULL ? (const float*)b->data : NULL,
                       (float*)packed);
  return TETHER_STATUS_SUCCESS;
}

static void q8_fully_connected_eval(const struct tether_model* model, const tether_node* op,
                                    void* const* data, void* scratch, struct tether_pool* pool) {
  const tether_q8_operands o = tether_q8_weights_operands(model, op, data, TETHER_Q8_DENSE);
  const tether_kernels* kt = model->kernels;
  const size_t k = (size_t)o.w->shape[1];
  if (op->quantized == TETHER_Q8_GEMM) {
    const int8_t* a = o.x_data;
    if (op->scratch_bytes != 0) {  /* XOR kernel, rows too long for the driver's block */
      tether_q8_flip(o.x_data, o.x->elements, (int8_t*)scratch);
      a = (const int8_t*)scratch;
    }
    tether_qs8_gemm_parallel(pool, kt, o.x->elements / k, o.channels, k, a, k,
                             op->scratch_bytes != 0, op->packed, o.y_data, o.channels,
                             &o.kernel);
  } else {
    tether_ref_qs8_dense(o.x->elements / k, k, o.channels, o.x_data, o.w_data, o.bias, o.y_data,
                         &o.ref);
  }
}

static void fully_connected_eval(const struct tether_model* model, const tether_node* op,
                                 void* const* data, void* scratch, struct tether_pool* pool) {
  if (op->quantized) {
    q8_fully_connected_eval(model, op, data, scratch, pool);
    return;
  }
  (void)scratch;
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* w = tether_input(model, op, 1);
  const int has_bias = op->input_count > 2 && op->inputs[2] != TETHER_NO_TENSOR;
  const size_t k = (size_t)w->shape[1], outputs = (size_t)w->shape[0];
  if (op->packed != NULL) {
    tether_f32_minmax mm;
    tether_f32_minmax_of(op->fused_activation ? op->activation : TETHER_ACT_NONE, &mm);
    tether_f32_gemm_parallel(pool, model->kernels, x->elements / k, outputs, k,
                    (const float*)data[op->inputs[0]], k * sizeof(float), op->packed,
                    (float*)data[op->outputs[0]], outputs * sizeof(float), &mm);
    return;
  }
  tether_ref_f32_dense(x->elements / k, k, outputs, (const float*)data[op->inputs[0]],
                                  (const float*)data[op->inputs[1]],
                                  has_bias ? (const float*)data[op->inputs[2]] : NULL,
                                  (float*)data[op->outputs[0]]);
}

TETHER_OP_DEF(FULLY_CONNECTED) = {2, 3, 2, 0, 0, fully_connected_prepare, fully_connected_pack,
                                  fully_connected_eval};
