/*
 * mean.c — the reductions MEAN and REDUCE_MAX over any set of axes, with or without keepdims
 * (same memory layout).
 *
 * Walks x once in memory order and folds each element into the output element it reduces
 * to (reduced axes get output stride 0); MEAN then divides by the number of reduced
 * elements (over one run of adjacent axes, a global pooling, as vectorizable row sums in the
 * same order). REDUCE_MAX keeps a NaN once met (as ONNX Runtime and LiteRT); int8 takes the max
 * of q, the output quantized like the input.
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "ops/ops.h"

typedef struct mean_geometry {
  uint32_t ndim;
  size_t dims[TETHER_MAX_DIMS];
  size_t y_stride[TETHER_MAX_DIMS];  /* 0 along reduced axes */
  size_t x_elements;
  size_t y_elements;
  size_t count;                      /* reduced elements per output */
  int run;                           /* the reduced axes are adjacent: x is ... */
  size_t outer, inner;               /* ... [outer][count][inner] */
} mean_geometry;

/* Advances the multi-index (last dim fastest) and keeps yi in step. */
static inline void reduce_advance(const mean_geometry* g, size_t* index, size_t* yi) {
  for (uint32_t d = g->ndim; d-- > 0;) {
    index[d]++;
    *yi += g->y_stride[d];
    if (index[d] < g->dims[d]) break;
    *yi -= g->y_stride[d] * index[d];
    index[d] = 0;
  }
}

static void mean_f32(const mean_geometry* g, const float* x, float* y) {
  for (size_t i = 0; i < g->y_elements; i++) y[i] = 0.0f;
  if (g->run) {  /* x is [outer][count][inner]: the same sums in the same order */
    const float count = (float)g->count;
    for (size_t o = 0; o < g->outer; o++, y += g->inner) {
      for (size_t r = 0; r < g->count; r++, x += g->inner) {
        for (size_t c = 0; c < g->inner; c++) y[c] += x[c];
      }
      for (size_t c = 0; c < g->inner; c++) y[c] = y[c] / count;
    }
    return;
  }
  size_t index[TETHER_MAX_DIMS] = {0};
  size_t yi = 0;
  for (size_t i = 0; i < g->x_elements; i++) {
    y[yi] += x[i];
    reduce_advance(g, index, &yi);
  }
  const float count = (float)g->count;
  for (size_t i = 0; i < g->y_elements; i++) y[i] = y[i] / count;
}

static void reduce_max_f32(const mean_geometry* g, const float* x, float* y) {
  for (size_t i = 0; i < g->y_elements; i++) y[i] = -INFINITY;
  size_t index[TETHER_MAX_DIMS] = {0};
  size_t yi = 0;
  for (size_t i = 0; i < g->x_elements; i++) {
    const float v = x[i];
    if (v > y[yi] || v != v) y[yi] = y[yi] != y[yi] ? y[yi] : v;  /* a NaN stays */
    reduce_advance(g, index, &yi);
  }
}

static void reduce_max_qs8(const mean_geometry* g, const int8_t* x, int8_t* y) {
  for (size_t i = 0; i < g->y_elements; i++) y[i] = -128;
  size_t index[TETHER_MAX_DIMS] = {0};
  size_t yi = 0;
  for (size_t i = 0; i < g->x_elements; i++) {
    if (x[i] > y[yi]) y[yi] = x[i];
    reduce_advance(g, index, &yi);
  }
}

/*
 * int8 (TFLite's QuantizedMeanOrSum with a multiplier, as in current TFLite and TFLM):
 * (M, shift) = QuantizeMultiplier(s_x / s_y); the 1/count is folded in with
 * k = min(floor(log2 count), 32, 31 + shift), M' = (M << k) / count, shift' = shift - k;
 * y = clamp(MBQM(sum q - z_x * count, M', shift') + z_y).
 * Packed words: M', shift', z_x * count, z_y.
 */
static void mean_qs8(const mean_geometry* g, const int8_t* x, int8_t* y,
                                            int32_t* acc, const int32_t* words) {
  for (size_t i = 0; i < g->y_elements; i++) acc[i] = 0;
  if (g->run) {  /* x is [outer][count][inner]: row sums (integer: any order is exact) */
    for (size_t o = 0; o < g->outer; o++) {
      int32_t* a = acc + o * g->inner;
      for (size_t r = 0; r < g->count; r++, x += g->inner) {
        for (size_t c = 0; c < g->inner; c++) a[c] += x[c];
      }
    }
  } else {
    size_t index[TETHER_MAX_DIMS] = {0};
    size_t yi = 0;
    for (size_t i = 0; i < g->x_elements; i++) {
      acc[yi] += x[i];
      reduce_advance(g, index, &yi);
    }
  }
  for (size_t i = 0; i < g->y_elements; i++) {
    int32_t v = tether_multiply_by_quantized_multiplier(acc[i] - words[2], words[0], words[1]) +
                words[3];
    y[i] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
  }
}

/* The int8 words: multiplier and shift of s_x / (s_y * count), z_x * count, z_y. */
static void mean_words(const struct tether_model* model, const tether_node* op, int32_t* words) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  const int64_t count = y->elements > 0 ? (int64_t)(x->elements / y->elements) : 1;
  int32_t multiplier, shift;
  tether_quantize_multiplier((double)x->scale / (double)y->scale, &multiplier, &shift);
  int k = 0;
  while (k < 63 && (count >> (k + 1)) != 0) k++;  /* floor(log2(count)) */
  if (k > 32) k = 32;
  if (k > 31 + shift) k = 31 + shift;
  if (k < 0) k = 0;
  words[0] = (int32_t)(((int64_t)multiplier << k) / count);
  words[1] = shift - k;
  words[2] = (int32_t)((int64_t)x->zero_point * count);
  words[3] = y->zero_point;
}

static tether_status mean_pack(const struct tether_model* model, const tether_node* op,
                               void* packed) {
  int32_t words[4];
  mean_words(model, op, packed != NULL ? (int32_t*)packed : words);
  return tether_q8_check_shifts(model, op, (packed != NULL ? (int32_t*)packed : words) + 1, 1, 1);
}

static uint32_t reduced_mask(const tether_op_params* p) {
  uint32_t mask = 0;
  for (int32_t k = 0; k < p->axes_count; k++) mask |= 1u << p->axes[k];
  return mask;
}

static tether_status mean_prepare(const struct tether_model* model, uint32_t op_index,
                                  tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  tether_status status = TETHER_STATUS_SUCCESS;
  if (op->type == TETHER_OP_REDUCE_MAX) {
    if (x->dtype == TETHER_DTYPE_INT8) {
      status = tether_q8_need_per_tensor(model, op_index, x, "input 0");
      if (status == TETHER_STATUS_SUCCESS) status = tether_q8_need_same_quant(model, op_index, x, y);
      op->quantized = 1;
    } else {
      status = tether_check_f32(model, op_index, x, "input 0");
      if (status == TETHER_STATUS_SUCCESS) status = tether_check_f32(model, op_index, y, "output 0");
    }
    if (status != TETHER_STATUS_SUCCESS) return status;
  } else if (x->dtype == TETHER_DTYPE_INT8) {
    /* int8: TFLite's reference Mean (sum of q in int32, then one requantization). */
    if (x->quant != TETHER_QUANT_PER_TENSOR || y->dtype != TETHER_DTYPE_INT8 ||
        y->quant != TETHER_QUANT_PER_TENSOR) {
      return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "int8 MEAN needs int8 input and output quantized per tensor");
    }
    op->quantized = 1;
    op->packed_floats = 4;  /* words: multiplier, shift, z_x * count, z_y */
    if (x->elements / (y->elements > 0 ? y->elements : 1) > (1u << 22)) {
      return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "int8 MEAN over more than 2^22 elements would overflow int32");
    }
    op->scratch_bytes = y->elements * sizeof(int32_t);
  } else {
    status = tether_check_f32(model, op_index, x, "input 0");
    if (status == TETHER_STATUS_SUCCESS) status = tether_check_f32(model, op_index, y, "output 0");
    if (status != TETHER_STATUS_SUCCESS) return status;
  }
  const tether_op_params* p = &op->params;
  if (p->axes_count < 1) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "attribute axes is required");
  }
  uint32_t mask = 0;
  for (int32_t k = 0; k < p->axes_count; k++) {
    const int32_t axis = p->axes[k];
    if (axis < 0 || axis >= (int32_t)x->ndim || (mask & (1u << axis))) {
      return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "axes[%d] = %d: axes must be distinct and in [0, %u)", k, axis,
                             (unsigned)x->ndim);
    }
    mask |= 1u << axis;
  }
  if (p->keepdims != 0 && p->keepdims != 1) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "keepdims must be 0 or 1, got %d", p->keepdims);
  }
  int32_t expected[TETHER_MAX_DIMS];
  uint32_t rank = 0;
  for (uint32_t d = 0; d < x->ndim; d++) {
    if (!(mask & (1u << d))) {
      expected[rank++] = x->shape[d];
    } else if (p->keepdims) {
      expected[rank++] = 1;
    }
  }
  return tether_check_shape(model, op_index, y, "output 0", rank, expected);
}

static void mean_eval(const struct tether_model* model, const tether_node* op, void* const* data,
                      void* scratch, struct tether_pool* pool) {
  (void)pool;
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  const uint32_t mask = reduced_mask(&op->params);
  mean_geometry g;
  memset(&g, 0, sizeof(g));
  g.ndim = x->ndim;
  g.x_elements = x->elements;
  g.y_elements = y->elements;
  g.count = 1;
  g.outer = 1;
  g.inner = 1;
  /* one run of set bits: mask >> its lowest set bit is 2^k - 1 */
  const uint32_t shifted = mask != 0 ? mask / (mask & (~mask + 1u)) : 0;
  g.run = shifted != 0 && (shifted & (shifted + 1u)) == 0;
  size_t stride = 1;
  for (uint32_t d = x->ndim; d-- > 0;) {
    g.dims[d] = (size_t)x->shape[d];
    if (mask & (1u << d)) {
      g.y_stride[d] = 0;
      g.count *= g.dims[d];
    } else {
      g.y_stride[d] = stride;
      stride *= g.dims[d];
      *(mask >> d ? &g.outer : &g.inner) *= g.dims[d];  /* before the run, or after it */
    }
  }
  if (op->type == TETHER_OP_REDUCE_MAX) {
    if (op->quantized) {
      reduce_max_qs8(&g, (const int8_t*)data[op->inputs[0]], (int8_t*)data[op->outputs[0]]);
    } else {
      reduce_max_f32(&g, (const float*)data[op->inputs[0]], (float*)data[op->outputs[0]]);
    }
    return;
  }
  if (op->quantized) {
    mean_qs8(&g, (const int8_t*)data[op->inputs[0]],
                                    (int8_t*)data[op->outputs[0]], (int32_t*)scratch,
                                    (const int32_t*)(const void*)op->packed);
    return;
  }
  mean_f32(&g, (const float*)data[op->inputs[0]],
                                  (float*)data[op->outputs[0]]);
}

TETHER_OP_DEF(MEAN) = {1, 1, TETHER_NO_OPTIONAL, TETHER_ATTR(AXES) | TETHER_ATTR(KEEPDIMS), 0,
                       mean_prepare, mean_pack, mean_eval};
TETHER_OP_DEF(REDUCE_MAX) = {1, 1, TETHER_NO_OPTIONAL, TETHER_ATTR(AXES) | TETHER_ATTR(KEEPDIMS),
                             TETHER_ATTR(AXES), mean_prepare, NULL, mean_eval};
