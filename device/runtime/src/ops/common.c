/*
 * common.c — what every op's prepare shares: the op-error prefix, dtype and shape checks,
 * the window-output formula and geometry, and the int8 quantization checks and ranges.
 */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ops/ops.h"

tether_status tether_op_error(const struct tether_model* model, uint32_t op_index,
                              tether_status status, const char* format, ...) {
  const tether_node* op = &model->ops[op_index];
  va_list args;
  va_start(args, format);
  tether_set_error_v(status, format, args);
  va_end(args);
  char prefix[160];
  tether_format(prefix, sizeof(prefix), "op %u '%s' (%s)", op_index,
                op->name != NULL ? op->name : "", tether_op_type_name(op->type));
  tether_prefix_error(prefix);
  return status;
}

const char* tether_shape_string(const tether_tensor* t, char* buffer, size_t capacity) {
  size_t n = tether_format(buffer, capacity, "[");
  for (uint32_t i = 0; i < t->ndim && n < capacity; i++) {
    n += tether_format(buffer + n, capacity - n, i == 0 ? "%d" : ", %d", t->shape[i]);
  }
  if (n < capacity) tether_format(buffer + n, capacity - n, "]");
  return buffer;
}

static uint32_t tensor_index(const struct tether_model* model, const tether_tensor* t) {
  return (uint32_t)(t - model->tensors);
}

tether_status tether_check_f32(const struct tether_model* model, uint32_t op_index,
                               const tether_tensor* t, const char* slot) {
  if (t->dtype == TETHER_DTYPE_FLOAT32) return TETHER_STATUS_SUCCESS;
  return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                         "%s (tensor %u '%s') is %s, expected float32", slot,
                         tensor_index(model, t), t->name, tether_dtype_name(t->dtype));
}

tether_status tether_check_shape(const struct tether_model* model, uint32_t op_index,
                                 const tether_tensor* t, const char* slot, uint32_t ndim,
                                 const int32_t* expected) {
  int ok = t->ndim == ndim;
  for (uint32_t i = 0; ok && i < ndim; i++) ok = t->shape[i] == expected[i];
  if (ok) return TETHER_STATUS_SUCCESS;
  tether_tensor want;
  memset(&want, 0, sizeof(want));
  want.ndim = (uint8_t)ndim;
  for (uint32_t i = 0; i < ndim && i < TETHER_MAX_DIMS; i++) want.shape[i] = expected[i];
  char have_text[96], want_text[96];
  return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                         "%s (tensor %u '%s') has shape %s, expected %s", slot,
                         tensor_index(model, t), t->name,
                         tether_shape_string(t, have_text, sizeof(have_text)),
                         tether_shape_string(&want, want_text, sizeof(want_text)));
}

int64_t tether_window_output(int64_t in, int64_t pad_begin, int64_t pad_end, int64_t kernel,
                             int64_t stride, int64_t dilation) {
  int64_t span = dilation * (kernel - 1) + 1;
  int64_t room = in + pad_begin + pad_end - span;
  if (room < 0 || stride < 1) return 0;
  return room / stride + 1;
}

tether_status tether_check_window_output(const struct tether_model* model, uint32_t op_index,
                                         const tether_tensor* x, const tether_tensor* y,
                                         int32_t kernel_h, int32_t kernel_w, int32_t dilation_h,
                                         int32_t dilation_w, int32_t channels) {
  const tether_op_params* p = &model->ops[op_index].params;
  int64_t oh = tether_window_output(x->shape[1], p->pad_top, p->pad_bottom, kernel_h,
                                    p->stride_h, dilation_h);
  int64_t ow = tether_window_output(x->shape[2], p->pad_left, p->pad_right, kernel_w,
                                    p->stride_w, dilation_w);
  if (oh < 1 || ow < 1 || oh > INT32_MAX || ow > INT32_MAX) {
    char text[96];
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "kernel %dx%d with dilations [%d, %d] does not fit input 0 %s "
                           "padded by [%d, %d, %d, %d]",
                           kernel_h, kernel_w, dilation_h, dilation_w,
                           tether_shape_string(x, text, sizeof(text)), p->pad_top, p->pad_left,
                           p->pad_bottom, p->pad_right);
  }
  const int32_t expected[4] = {x->shape[0], (int32_t)oh, (int32_t)ow, channels};
  /* The output has the input's dtype (float32, or int8 on the int8 paths). */
  if (y->dtype != x->dtype) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "output 0 (tensor '%s') has dtype %u, input 0 has %u", y->name,
                           (unsigned)y->dtype, (unsigned)x->dtype);
  }
  return tether_check_shape(model, op_index, y, "output 0", 4, expected);
}

tether_conv_geometry tether_window_geometry(const struct tether_model* model,
                                            const tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  const tether_op_params* p = &op->params;
  const int pool = op->type == TETHER_OP_MAX_POOL_2D || op->type == TETHER_OP_AVERAGE_POOL_2D;
  const tether_tensor* w = pool ? NULL : tether_input(model, op, 1);
  const tether_conv_geometry g = {
      .batch = (size_t)x->shape[0], .in_h = (size_t)x->shape[1], .in_w = (size_t)x->shape[2],
      .in_c = (size_t)x->shape[3], .out_h = (size_t)y->shape[1], .out_w = (size_t)y->shape[2],
      .out_c = (size_t)y->shape[3],
      .kernel_h = pool ? (size_t)p->kernel_h : (size_t)w->shape[1],
      .kernel_w = pool ? (size_t)p->kernel_w : (size_t)w->shape[2],
      .groups = op->type == TETHER_OP_CONV_2D ? (size_t)p->groups : 1,
      .depth_multiplier =
          op->type == TETHER_OP_DEPTHWISE_CONV_2D ? (size_t)p->depth_multiplier : 1,
      .stride_h = p->stride_h, .stride_w = p->stride_w,
      .dilation_h = p->dilation_h, .dilation_w = p->dilation_w,
      .pad_top = p->pad_top, .pad_left = p->pad_left,
  };
  return g;
}

/* ---- int8 ---------------------------------------------------------------------------- */

float tether_quant_scale(const tether_tensor* t, uint32_t c) {
  float s;
  memcpy(&s, t->quant_params + 4 * (size_t)(t->quant_count > 1 ? c : 0), 4);
  return s;
}

int32_t tether_quant_zero_point(const tether_tensor* t, uint32_t c) {
  int32_t z;
  memcpy(&z, t->quant_params + 4 * (size_t)t->quant_count + 4 * (size_t)(t->quant_count > 1 ? c : 0),
         4);
  return z;
}

/* zero_point + round(f / scale), with the rounded value clamped to +-2^20 first so that a
 * tiny scale cannot overflow the int conversion (the result is clamped to int8 anyway). */
int32_t tether_q8_quantize_value(float f, float scale, int32_t zero_point) {
  float r = roundf(f / scale);
  r = r > 1048576.0f ? 1048576.0f : r < -1048576.0f ? -1048576.0f : r;
  return zero_point + (r == r ? (int32_t)r : 0);
}

int tether_q8_activation_range(uint32_t activation, float scale, int32_t zero_point,
                               int32_t* lo, int32_t* hi) {
  /* TFLite's CalculateActivationRangeQuantized: q = z + round(f / s), in float. */
  int32_t mn = -128, mx = 127;
  switch (activation) {
    case TETHER_ACT_NONE: break;
    case TETHER_ACT_RELU:
      mn = zero_point > mn ? zero_point : mn;
      break;
    case TETHER_ACT_RELU6: {
      const int32_t six = tether_q8_quantize_value(6.0f, scale, zero_point);
      mn = zero_point > mn ? zero_point : mn;
      mx = six < mx ? six : mx;
      break;
    }
    case TETHER_ACT_RELU_N1_TO_1: {
      const int32_t m1 = tether_q8_quantize_value(-1.0f, scale, zero_point);
      const int32_t p1 = tether_q8_quantize_value(1.0f, scale, zero_point);
      mn = m1 > mn ? m1 : mn;
      mx = p1 < mx ? p1 : mx;
      break;
    }
    default: return 0;
  }
  *lo = mn;
  *hi = mx;
  return 1;
}

tether_status tether_q8_need_per_tensor(const struct tether_model* model, uint32_t op_index,
                                        const tether_tensor* t, const char* slot) {
  if (t->dtype != TETHER_DTYPE_INT8 || t->quant != TETHER_QUANT_PER_TENSOR) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "%s (tensor '%s') must be int8 quantized per tensor (dtype %u, "
                           "quant %u)",
                           slot, t->name, (unsigned)t->dtype, (unsigned)t->quant);
  }
  if (!(t->scale > 0.0f) || !isfinite(t->scale) || t->zero_point < -128 || t->zero_point > 127) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "%s (tensor '%s') needs a finite scale > 0 and a zero point in "
                           "[-128, 127]",
                           slot, t->name);
  }
  return TETHER_STATUS_SUCCESS;
}

/* Shifts MultiplyByQuantizedMultiplier can apply: x << 30 at most (and >> 31, which
 * QuantizeMultiplier guarantees by flushing smaller multipliers to 0). */
tether_status tether_q8_check_shifts(const struct tether_model* model, const tether_node* op,
                                     const int32_t* shifts, size_t count, size_t stride) {
  for (size_t i = 0; i < count; i++) {
    if (shifts[i * stride] > 30) {
      return tether_op_error(model, (uint32_t)(op - model->ops), TETHER_STATUS_FORMAT_ERROR,
                             "int8 requantization scale %zu is 2^%d or more (scales out of "
                             "range: s_x * s_w / s_y must be below 2^30)",
                             i, (int)shifts[i * stride] - 1);
    }
  }
  return TETHER_STATUS_SUCCESS;
}

tether_status tether_q8_need_same_quant(const struct tether_model* model, uint32_t op_index,
                                        const tether_tensor* x, const tether_tensor* y) {
  if (x->scale != y->scale || x->zero_point != y->zero_point) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "int8 %s needs output '%s' quantized like input '%s' (scale and "
                           "zero point equal); requantize with QUANTIZE first",
                           tether_op_type_name(model->ops[op_index].type), y->name, x->name);
  }
  return TETHER_STATUS_SUCCESS;
}

/* The fused activation's int8 range; only the clamping activations fuse into int8 ops. */
tether_status tether_q8_need_fused_range(const struct tether_model* model, uint32_t op_index,
                                         const tether_node* op, const tether_tensor* y) {
  int32_t lo, hi;
  if (!tether_q8_activation_range(op->activation, y->scale, y->zero_point, &lo, &hi)) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "fused activation %u cannot follow an int8 %s (only NONE, RELU, "
                           "RELU6 and RELU_N1_TO_1 clamp in the quantized domain; use a "
                           "separate int8 activation op)",
                           (unsigned)op->activation, tether_op_type_name(op->type));
  }
  return TETHER_STATUS_SUCCESS;
}
