/*
 * quantize.c — QUANTIZE (float32 -> int8: TFLite's AffineQuantize, the model's vcvt kernel;
 * int8 -> int8: TFLite's Requantize) and DEQUANTIZE (int8 -> float32: s * (q - z) in double,
 * rounded to float), converter/FORMAT.md, "Integer (int8) execution".
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "ops/ops.h"

static tether_status quantize_prepare(const struct tether_model* model, uint32_t op_index,
                                      tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  tether_status status = tether_q8_need_per_tensor(model, op_index, y, "output 0");
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (x->dtype == TETHER_DTYPE_INT8) {
    status = tether_q8_need_per_tensor(model, op_index, x, "input 0");
    if (status != TETHER_STATUS_SUCCESS) return status;
    op->quantized = 1;
    op->packed_floats = 2;  /* requantize: multiplier, shift */
  } else if (x->dtype != TETHER_DTYPE_FLOAT32) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "input 0 (tensor '%s') must be float32 or int8", x->name);
  }
  return tether_check_shape(model, op_index, y, "output 0", x->ndim, x->shape);
}

static void quantize_eval(const struct tether_model* model, const tether_node* op,
                          void* const* data, void* scratch, struct tether_pool* pool) {
  (void)scratch;
  (void)pool;
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  int8_t* yd = (int8_t*)data[op->outputs[0]];
  if (op->quantized) {  /* TFLite Requantize */
    const int32_t* words = (const int32_t*)(const void*)op->packed;
    const int8_t* xd = (const int8_t*)data[op->inputs[0]];
    for (size_t i = 0; i < x->elements; i++) {
      int32_t v = tether_multiply_by_quantized_multiplier((int32_t)xd[i] - x->zero_point,
                                                          words[0], words[1]) +
                  y->zero_point;
      yd[i] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
    }
    return;
  }
  /* TFLite AffineQuantize: round(x / s) + z in float, clamped (the model's vcvt kernel). */
  model->kernels->qs8_quantize(x->elements, (const float*)data[op->inputs[0]], yd, y->scale,
                               y->zero_point);
}

static tether_status dequantize_prepare(const struct tether_model* model, uint32_t op_index,
                                        tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  tether_status status = tether_q8_need_per_tensor(model, op_index, x, "input 0");
  if (status == TETHER_STATUS_SUCCESS) status = tether_check_f32(model, op_index, y, "output 0");
  if (status != TETHER_STATUS_SUCCESS) return status;
  return tether_check_shape(model, op_index, y, "output 0", x->ndim, x->shape);
}

static void dequantize_eval(const struct tether_model* model, const tether_node* op,
                            void* const* data, void* scratch, struct tether_pool* pool) {
  (void)scratch;
  (void)pool;
  const tether_tensor* x = tether_input(model, op, 0);
  const int8_t* xd = (const int8_t*)data[op->inputs[0]];
  float* yd = (float*)data[op->outputs[0]];
  const double scale = (double)x->scale;
  for (size_t i = 0; i < x->elements; i++) {
    yd[i] = (float)(scale * (double)((int32_t)xd[i] - x->zero_point));
  }
}

/* int8 -> int8: the multiplier and shift of s_x / s_y. */
static tether_status quantize_pack(const struct tether_model* model, const tether_node* op,
                                   void* packed) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  int32_t scratch[2];
  int32_t* words = packed != NULL ? (int32_t*)packed : scratch;
  tether_quantize_multiplier((double)x->scale / (double)y->scale, &words[0], &words[1]);
  return tether_q8_check_shifts(model, op, words + 1, 1, 1);
}

TETHER_OP_DEF(QUANTIZE) = {1, 1, TETHER_NO_OPTIONAL, 0, 0, quantize_prepare, quantize_pack,
                           quantize_eval};
TETHER_OP_DEF(DEQUANTIZE) = {1, 1, TETHER_NO_OPTIONAL, 0, 0, dequantize_prepare, NULL,
                             dequantize_eval};
