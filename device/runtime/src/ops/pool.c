/*
 * pool.c — MAX_POOL_2D and AVERAGE_POOL_2D over NHWC, any strides, dilations and explicit
 * pads.
 *
 * Padded cells never take part in a max; an average divides by the number of real cells
 * in the window, or by KH*KW when count_include_pad is set. Load rejects pads >= the window's
 * span d*(k-1)+1, and any window whose dilated taps all miss the input, so every window
 * holds at least one real cell. Every dtype runs the reference kernels (src/reference/
 * pool.c), which step through dilated taps. int8 is TFLite's reference arithmetic: the max
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
  /* The window's span d*(k-1)+1 (the kernel when undilated), in int64: d and k are any int32. */
  const int64_t span_h = (int64_t)p->dilation_h * (p->kernel_h - 1) + 1;
  const int64_t span_w = (int64_t)p->dilation_w * (p->kernel_w - 1) + 1;
  if (p->pad_top >= span_h || p->pad_bottom >= span_h || p->pad_left >= span_w ||
      p->pad_right >= span_w) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "pads [%d, %d, %d, %d] must be smaller than the window [%lld, %lld] "
                           "(kernel [%d, %d], dilations [%d, %d])",
                           p->pad_top, p->pad_left, p->pad_bottom, p->pad_right,
                           (long long)span_h, (long long)span_w, p->kernel_h, p->kernel_w,
                           p->dilation_h, p->dilation_w);
  }
  if (p->count_include_pad != 0 && p->count_include_pad != 1) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "count_include_pad must be 0 or 1, got %d", p->count_include_pad);
  }
  status = tether_check_window_output(model, op_index, x, y, p->kernel_h, p->kernel_w,
                                      p->dilation_h, p->dilation_w, x->shape[3]);
  if (status != TETHER_STATUS_SUCCESS) return status;
  /* A dilated window's taps can all miss the input (e.g. taps -1 and 2 over 2 rows); refuse
   * such a window rather than invent its value. With pads < span every window starts before
   * the input's end and reaches past its start, so only an input narrower than the dilation
   * can fall between two taps: the other axes need no walk. */
  const int32_t axis_in[2] = {x->shape[1], x->shape[2]}, axis_out[2] = {y->shape[1], y->shape[2]};
  const int32_t axis_k[2] = {p->kernel_h, p->kernel_w}, axis_d[2] = {p->dilation_h, p->dilation_w};
  const int32_t axis_s[2] = {p->stride_h, p->stride_w}, axis_p[2] = {p->pad_top, p->pad_left};
  for (int axis = 0; axis < 2; axis++) {
    if (axis_in[axis] >= axis_d[axis]) continue;
    for (int32_t o = 0; o < axis_out[axis]; o++) {
      size_t begin, end;
      tether_window_taps((ptrdiff_t)o * axis_s[axis] - axis_p[axis], (size_t)axis_k[axis],
                         axis_d[axis], axis_in[axis], &begin, &end);
      if (begin == end) {
        return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                               "the window of output %s %d (kernel %d, dilation %d) holds no "
                               "input cell of the %d",
                               axis == 0 ? "row" : "column", o, axis_k[axis], axis_d[axis],
                               axis_in[axis]);
      }
    }
  }
  return TETHER_STATUS_SUCCESS;
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
                              TETHER_WINDOW_ATTRS | TETHER_ATTR(KERNEL), 0,
                              pool_prepare, NULL, pool_eval};
TETHER_OP_DEF(AVERAGE_POOL_2D) = {1, 1, TETHER_NO_OPTIONAL,
                                  TETHER_WINDOW_ATTRS | TETHER_ATTR(KERNEL) |
                                      TETHER_ATTR(COUNT_INCLUDE_PAD),
                                  0, pool_prepare, NULL, pool_eval};
