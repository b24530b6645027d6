/*
 * pad.c — PAD: y = x surrounded by paddings (before_d, after_d) per dim, filled with a
 * constant (mode 0) or with x's own cells (1 reflect, 2 edge, 3 symmetric; FORMAT.md).
 * int8: the constant padding cells hold the quantized pad value (z_x for the usual 0); the
 * mirrored modes copy values; the output is quantized like the input.
 */
#include <math.h>
#include <string.h>

#include "ops/ops.h"

enum { PAD_CONSTANT = 0, PAD_REFLECT = 1, PAD_EDGE = 2, PAD_SYMMETRIC = 3 };

static const char* const kPadModeNames[] = {"constant", "reflect", "edge", "symmetric"};

/* The source index along one axis of output index i: n = x's size, before = its pad (the
 * prepare bounds keep every pad within one mirror image of x). */
static size_t pad_source(int64_t i, int64_t before, int64_t n, int32_t mode) {
  int64_t j = i - before;
  if (j < 0) {
    j = mode == PAD_REFLECT ? -j : mode == PAD_SYMMETRIC ? -j - 1 : 0;
  } else if (j >= n) {
    j = mode == PAD_REFLECT ? 2 * (n - 1) - j : mode == PAD_SYMMETRIC ? 2 * n - 1 - j : n - 1;
  }
  return (size_t)j;
}

/*
 * Reflect, edge and symmetric padding of `esize`-byte elements: every output row (the last
 * dim) reads the source row its outer indices map to, copies it into the middle and mirrors
 * its ends. A pass-through of values, so one kernel serves f32 and int8.
 */
static void pad_mirror(const tether_tensor* x, const tether_tensor* y, const int32_t* pads,
                       int32_t mode, size_t esize, const uint8_t* in, uint8_t* out) {
  const uint32_t ndim = x->ndim;
  const size_t row = (size_t)x->shape[ndim - 1];
  const size_t out_row = (size_t)y->shape[ndim - 1];
  if (y->elements == 0 || row == 0) return;
  const size_t rows = y->elements / out_row;
  const int64_t before = pads[2 * (ndim - 1)];
  size_t x_stride[TETHER_MAX_DIMS];
  size_t s = 1;
  for (uint32_t d = ndim; d-- > 0;) {
    x_stride[d] = s;
    s *= (size_t)x->shape[d];
  }
  size_t index[TETHER_MAX_DIMS] = {0};
  for (size_t r = 0; r < rows; r++) {
    size_t src = 0;
    for (uint32_t d = 0; d + 1 < ndim; d++) {
      src += pad_source((int64_t)index[d], pads[2 * d], x->shape[d], mode) * x_stride[d];
    }
    const uint8_t* from = in + src * esize;
    uint8_t* to = out + r * out_row * esize;
    memcpy(to + (size_t)before * esize, from, row * esize);
    for (size_t o = 0; o < (size_t)before; o++) {
      memcpy(to + o * esize, from + pad_source((int64_t)o, before, (int64_t)row, mode) * esize,
             esize);
    }
    for (size_t o = (size_t)before + row; o < out_row; o++) {
      memcpy(to + o * esize, from + pad_source((int64_t)o, before, (int64_t)row, mode) * esize,
             esize);
    }
    for (uint32_t d = ndim - 1; d-- > 0;) {
      if (++index[d] < (size_t)y->shape[d]) break;
      index[d] = 0;
    }
  }
}

/* ---- int8 --------------------------------------------------------------------------------- */

static tether_status q8_pad_prepare(const struct tether_model* model, uint32_t op_index,
                                    tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  tether_status status = tether_q8_need_per_tensor(model, op_index, x, "input 0");
  if (status == TETHER_STATUS_SUCCESS) status = tether_q8_need_per_tensor(model, op_index, y, "output 0");
  if (status == TETHER_STATUS_SUCCESS) status = tether_q8_need_same_quant(model, op_index, x, y);
  if (status == TETHER_STATUS_SUCCESS && !isfinite(op->params.value)) {
    status = tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "int8 PAD needs a finite pad value");
  }
  if (status != TETHER_STATUS_SUCCESS) return status;
  op->quantized = 1;
  return TETHER_STATUS_SUCCESS;
}

static void q8_pad_eval(const struct tether_model* model, const tether_node* op,
                        void* const* data) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  const int32_t* pads = op->params.paddings;
  const int8_t* in = (const int8_t*)data[op->inputs[0]];
  int8_t* out = (int8_t*)data[op->outputs[0]];
  if (op->params.mode != PAD_CONSTANT) {
    pad_mirror(x, y, pads, op->params.mode, 1, (const uint8_t*)in, (uint8_t*)out);
    return;
  }
  const int8_t fill = (int8_t)tether_clamp_i32(tether_q8_quantize_value(op->params.value, x->scale,
                                                           x->zero_point), -128, 127);
  memset(out, (unsigned char)fill, y->elements);
  const uint32_t ndim = x->ndim;
  size_t y_stride[TETHER_MAX_DIMS];
  size_t s = 1;
  for (uint32_t d = ndim; d-- > 0;) {
    y_stride[d] = s;
    s *= (size_t)y->shape[d];
  }
  /* Copy x row by row (its last dim), walking the other dims with a multi-index. */
  const size_t row = (size_t)x->shape[ndim - 1];
  const size_t rows = row > 0 ? x->elements / row : 0;
  size_t index[TETHER_MAX_DIMS] = {0};
  for (size_t r = 0; r < rows; r++) {
    size_t offset = (size_t)pads[2 * (ndim - 1)];
    for (uint32_t d = 0; d + 1 < ndim; d++) offset += (index[d] + (size_t)pads[2 * d]) * y_stride[d];
    memcpy(out + offset, in + r * row, row);
    for (uint32_t d = ndim - 1; d-- > 0;) {
      if (++index[d] < (size_t)x->shape[d]) break;
      index[d] = 0;
    }
  }
}

static tether_status pad_prepare(const struct tether_model* model, uint32_t op_index,
                                 tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  const tether_op_params* p = &op->params;
  tether_status status = x->dtype == TETHER_DTYPE_INT8
                             ? q8_pad_prepare(model, op_index, op)
                             : tether_check_f32(model, op_index, x, "input 0");
  if (status == TETHER_STATUS_SUCCESS && !op->quantized) {
    status = tether_check_f32(model, op_index, y, "output 0");
  }
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (p->mode < PAD_CONSTANT || p->mode > PAD_SYMMETRIC) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "attribute mode=%d is unknown (0 constant, 1 reflect, 2 edge, "
                           "3 symmetric)", p->mode);
  }
  if (x->ndim < 1 || p->paddings_count != 2 * (int32_t)x->ndim) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "attribute paddings is required with 2*rank = %u values, got %d",
                           2u * x->ndim, p->paddings_count);
  }
  int32_t expected[TETHER_MAX_DIMS];
  for (uint32_t d = 0; d < x->ndim; d++) {
    const int32_t before = p->paddings[2 * d], after = p->paddings[2 * d + 1];
    const int64_t size = (int64_t)x->shape[d] + before + after;
    if (before < 0 || after < 0 || size > INT32_MAX) {
      return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "paddings for dim %u are (%d, %d); must be >= 0", d, before, after);
    }
    /* reflect mirrors about the end cells (pad < size), symmetric about the edges
       (pad <= size), edge repeats the end cells (size >= 1): one mirror image at most */
    const int32_t n = x->shape[d], most = p->mode == PAD_REFLECT ? n - 1 : n;
    if (p->mode != PAD_CONSTANT && (before > 0 || after > 0) &&
        (n < 1 || (p->mode != PAD_EDGE && (before > most || after > most)))) {
      return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "%s padding of axis %u by (%d, %d) needs %s, and the axis has "
                             "size %d", kPadModeNames[p->mode], d, before, after,
                             p->mode == PAD_REFLECT     ? "each pad < the size"
                             : p->mode == PAD_SYMMETRIC ? "each pad <= the size"
                                                        : "a size >= 1",
                             n);
    }
    expected[d] = (int32_t)size;
  }
  return tether_check_shape(model, op_index, y, "output 0", x->ndim, expected);
}

static void pad_eval(const struct tether_model* model, const tether_node* op, void* const* data,
                     void* scratch, struct tether_pool* pool) {
  (void)pool;
  (void)scratch;
  if (op->quantized) {
    q8_pad_eval(model, op, data);
    return;
  }
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  const int32_t* pads = op->params.paddings;
  const float* in = (const float*)data[op->inputs[0]];
  float* out = (float*)data[op->outputs[0]];
  if (op->params.mode != PAD_CONSTANT) {
    pad_mirror(x, y, pads, op->params.mode, sizeof(float), (const uint8_t*)in, (uint8_t*)out);
    return;
  }
  const float value = op->params.value;
  for (size_t i = 0; i < y->elements; i++) out[i] = value;
  const uint32_t ndim = x->ndim;
  size_t y_stride[TETHER_MAX_DIMS];
  size_t s = 1;
  for (uint32_t d = ndim; d-- > 0;) {
    y_stride[d] = s;
    s *= (size_t)y->shape[d];
  }
  /* Copy x row by row (its last dim), walking the other dims with a multi-index. */
  const size_t row = (size_t)x->shape[ndim - 1];
  const size_t rows = x->elements / row;
  size_t index[TETHER_MAX_DIMS] = {0};
  for (size_t r = 0; r < rows; r++) {
    size_t offset = (size_t)pads[2 * (ndim - 1)];
    for (uint32_t d = 0; d + 1 < ndim; d++) offset += (index[d] + (size_t)pads[2 * d]) * y_stride[d];
    memcpy(out + offset, in + r * row, row * sizeof(float));
    for (uint32_t d = ndim - 1; d-- > 0;) {
      if (++index[d] < (size_t)x->shape[d]) break;
      index[d] = 0;
    }
  }
}

TETHER_OP_DEF(PAD) = {1, 1, TETHER_NO_OPTIONAL,
                      TETHER_ATTR(PADDINGS) | TETHER_ATTR(VALUE) | TETHER_ATTR(MODE), 0,
                      pad_prepare, NULL, pad_eval};
