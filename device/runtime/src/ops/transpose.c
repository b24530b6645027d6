/*
 * transpose.c — TRANSPOSE: y.shape[k] = x.shape[perm[k]], y[j] = x[i] with j_k = i_perm[k];
 * any dtype (1- or 4-byte elements), rank <= 6.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ops/ops.h"

static tether_status transpose_prepare(const struct tether_model* model, uint32_t op_index,
                                       tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  const tether_op_params* p = &op->params;
  if (y->dtype != x->dtype || (uint32_t)p->perm_count != x->ndim) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "needs output dtype = input dtype and perm with %u values, got %d",
                           (unsigned)x->ndim, p->perm_count);
  }
  int32_t expected[TETHER_MAX_DIMS];
  uint32_t seen = 0;
  for (int32_t k = 0; k < p->perm_count; k++) {
    const int32_t a = p->perm[k];
    if (a < 0 || a >= (int32_t)x->ndim || (seen & (1u << a))) {
      return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "perm is not a permutation of [0, %u)", (unsigned)x->ndim);
    }
    seen |= 1u << a;
    expected[k] = x->shape[a];
  }
  return tether_check_shape(model, op_index, y, "output 0", x->ndim, expected);
}

static void transpose_eval(const struct tether_model* model, const tether_node* op,
                           void* const* data, void* scratch, struct tether_pool* pool) {
  (void)scratch;
  (void)pool;
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  const size_t esize = tether_dtype_size(x->dtype);
  const size_t rank = x->ndim;
  /* Input strides (elements), read in output order. */
  size_t x_stride[TETHER_MAX_DIMS], stride = 1;
  for (size_t d = rank; d-- > 0;) {
    x_stride[d] = stride;
    stride *= (size_t)x->shape[d];
  }
  size_t in_stride[TETHER_MAX_DIMS], dims[TETHER_MAX_DIMS], idx[TETHER_MAX_DIMS];
  for (size_t k = 0; k < rank; k++) {
    in_stride[k] = x_stride[op->params.perm[k]];
    dims[k] = (size_t)y->shape[k];
    idx[k] = 0;
  }
  const uint8_t* xs = (const uint8_t*)data[op->inputs[0]];
  uint8_t* ys = (uint8_t*)data[op->outputs[0]];
  size_t offset = 0;
  for (size_t j = 0; j < y->elements; j++) {
    memcpy(ys + j * esize, xs + offset * esize, esize);
    for (size_t k = rank; k-- > 0;) {  /* odometer over the output index */
      offset += in_stride[k];
      if (++idx[k] < dims[k]) break;
      offset -= in_stride[k] * dims[k];
      idx[k] = 0;
    }
  }
}

TETHER_OP_DEF(TRANSPOSE) = {1, 1, TETHER_NO_OPTIONAL, TETHER_ATTR(PERM), TETHER_ATTR(PERM),
                            transpose_prepare, NULL, transpose_eval};
