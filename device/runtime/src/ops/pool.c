/*
 * pool.c — MAX_POOL_2D and AVERAGE_POOL_2D over NHWC, any strides and explicit pads.
 *
 * Padded cells never take part in a max; an average divides by the number of real cells
 * in the window, or by KH*KW when count_include_pad is set. Load rejects pads >= kernel, so
 * every window holds at least one real cell. int8 is TFLite's reference arithmetic: the max
 * of the real cells; the int32 sum of the cells, then (sum ± count/2) / count truncated
 * (round half away from zero); both need the output quantized like the input and clamp to
 * the fused activation's range.
 */
#include <stddef.h>

#include "ops/ops.h"

/* ---- int8 --------------------------------------------------------------------------------- */

static tether_status q8_pool_prepare(const struct tether_model* model, uint32_t op_index,
                                     tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  tether_status status = tether_q8_need_per_tensor(model, op_index, x, "input 0");
  if (status == TETHER_STATUS_SUCCESS) status = tether_q8_need_per_tensor(model, op_index, y, "output 0");
  if (status == TETHER_STATUS_SUCCESS) status = tether_q8_need_same_quant(model, op_index, x, y);
  if (status == TETHER_STATUS_SUCCESS) status = tether_q8_need_fused_range(model, op_index, op, y);
  if (status != TETHER_STATUS_SUCCESS) return status;
  /* The int32 window sum (and the rounding offset) stays below 2^31 with at most 2^23
   * cells of |q| <= 128. */
  if ((int64_t)op->params.kernel_h * op->params.kernel_w > (1 << 23)) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "int8 pool kernel %dx%d has more than 2^23 cells", op->params.kernel_h,
                           op->params.kernel_w);
  }
  op->quantized = 1;
  op->fused_activation = 1;
  return TETHER_STATUS_SUCCESS;
}

static void q8_pool_eval(const struct tether_model* model, const tether_node* op,
                         void* const* data) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  const tether_op_params* p = &op->params;
  const tether_conv_geometry g = tether_window_geometry(model, op);
  int32_t lo = -128, hi = 127;
  tether_q8_activation_range(op->activation, y->scale, y->zero_point, &lo, &hi);
  tether_ref_qs8_pool(&g, op->type == TETHER_OP_AVERAGE_POOL_2D, p->count_include_pad,
                           x->zero_point, lo, hi, (const int8_t*)data[op->inputs[0]],
                           (int8_t*)data[op->outputs[0]]);
}

static tether_status pool_prepare(const struct tether_model* model, uint32_t op_index,
                                  tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  const tether_op_params* p = &op->params;
  tether_status status = x->dtype == TETHER_DTYPE_INT8
                             ? q8_pool_prepare(model, op_index, op)
                             : tether_check_f32(model, op_index, x, "input 0");
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (x->ndim != 4) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "input 0 must be [N,H,W,C], got rank %u", (unsigned)x->ndim);
  }
  if (p->kernel_h < 1 || p->kernel_w < 1) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "attribute kernel is required and must be >= 1, got [%d, %d]",
                           p->kernel_h, p->kernel_w);
  }
  if (p->pad_top >= p->kernel_h || p->pad_bottom >= p->kernel_h ||
      p->pad_left >= p->kernel_w || p->pad_right >= p->kernel_w) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "pads [%d, %d, %d, %d] must be smaller than kernel [%d, %d]",
                           p->pad_top, p->pad_left, p->pad_bottom, p->pad_right, p->kernel_h,
                           p->kernel_w);
  }
  if (p->count_include_pad != 0 && p->count_include_pad != 1) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "count_include_pad must be 0 or 1, got %d", p->count_include_pad);
  }
  return tether_check_window_output(model, op_index, x, y, p->kernel_h, p->kernel_w, 1, 1,
                                    x->shape[3]);
}

static void pool_eval(const struct tether_model* model, const tether_node* op, void* const* data,
                      void* scratch, struct tether_pool* pool) {
  (void)pool;
  (void)scratch;
  if (op->quantized) {
    q8_pool_eval(model, op, data);
    return;
  }
  const tether_op_params* p = &op->params;
  const tether_conv_geometry g = tether_window_geometry(model, op);
  const float* xp = (const float*)data[op->inputs[0]];
  float* yp = (float*)data[op->outputs[0]];
  if (op->type == TETHER_OP_MAX_POOL_2D) {
    tether_ref_f32_maxpool(&g, xp, yp);
  } else {
    tether_ref_f32_avgpool(&g, p->count_include_pad, xp, yp);
  }
}

TETHER_OP_DEF(MAX_POOL_2D) = {1, 1, TETHER_NO_OPTIONAL,
                              TETHER_ATTR(STRIDES) | TETHER_ATTR(PADS) | TETHER_ATTR(KERNEL), 0,
                              pool_prepare, NULL, pool_eval};
TETHER_OP_DEF(AVERAGE_POOL_2D) = {1, 1, TETHER_NO_OPTIONAL,
                                  TETHER_ATTR(STRIDES) | TETHER_ATTR(PADS) | TETHER_ATTR(KERNEL) |
                                      TETHER_ATTR(COUNT_INCLUDE_PAD),
                                  0, pool_prepare, NULL, pool_eval};
