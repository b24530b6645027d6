/*
 * mean.c — MEAN over any set of axes, with or without keepdims (same memory layout).
 *
 * Walks x once in memory order and adds each element into the output element it reduces
 * to (reduced axes get output stride 0), then divides by the number of reduced elements.
 */
#include <stddef.h>
#include <string.h>

#include "../internal.h"

typedef struct mean_geometry {
  uint32_t ndim;
  size_t dims[TETHER_MAX_DIMS];
  size_t y_stride[TETHER_MAX_DIMS];  /* 0 along reduced axes */
  size_t x_elements;
  size_t y_elements;
  size_t count;                      /* reduced elements per output */
} mean_geometry;

static void tether_f32_mean_ukernel__scalar(const mean_geometry* g, const float* x, float* y) {
  for (size_t i = 0; i < g->y_elements; i++) y[i] = 0.0f;
  size_t index[TETHER_MAX_DIMS] = {0};
  size_t yi = 0;
  for (size_t i = 0; i < g->x_elements; i++) {
    y[yi] += x[i];
    /* Advance the multi-index (last dim fastest) and keep yi in step. */
    for (uint32_t d = g->ndim; d-- > 0;) {
      index[d]++;
      yi += g->y_stride[d];
      if (index[d] < g->dims[d]) break;
      yi -= g->y_stride[d] * index[d];
      index[d] = 0;
    }
  }
  const float count = (float)g->count;
  for (size_t i = 0; i < g->y_elements; i++) y[i] = y[i] / count;
}

static uint32_t reduced_mask(const tether_op_params* p) {
  uint32_t mask = 0;
  for (int32_t k = 0; k < p->axes_count; k++) mask |= 1u << p->axes[k];
  return mask;
}

tether_status tether_mean_prepare(const struct tether_model* model, uint32_t op_index,
                                  tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  const tether_op_params* p = &op->params;
  tether_status status = tether_check_f32(model, op_index, x, "input 0");
  if (status == TETHER_STATUS_SUCCESS) status = tether_check_f32(model, op_index, y, "output 0");
  if (status != TETHER_STATUS_SUCCESS) return status;
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

void tether_mean_eval(const struct tether_model* model, const tether_node* op, void* const* data,
                      void* scratch) {
  (void)scratch;
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  const uint32_t mask = reduced_mask(&op->params);
  mean_geometry g;
  memset(&g, 0, sizeof(g));
  g.ndim = x->ndim;
  g.x_elements = x->elements;
  g.y_elements = y->elements;
  g.count = 1;
  size_t stride = 1;
  for (uint32_t d = x->ndim; d-- > 0;) {
    g.dims[d] = (size_t)x->shape[d];
    if (mask & (1u << d)) {
      g.y_stride[d] = 0;
      g.count *= g.dims[d];
    } else {
      g.y_stride[d] = stride;
      stride *= g.dims[d];
    }
  }
  tether_f32_mean_ukernel__scalar(&g, (const float*)data[op->inputs[0]],
                                  (float*)data[op->outputs[0]]);
}
