/*
 * reshape.c — RESHAPE: the output tensor's shape over the same bytes (any dtype).
 */
#include <string.h>

#include "ops/ops.h"

static tether_status reshape_prepare(const struct tether_model* model, uint32_t op_index,
                                     tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  if (x->dtype != y->dtype || x->elements != y->elements) {
    char xs[96], ys[96];
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "cannot reshape input 0 %s (dtype %u) to output 0 %s (dtype %u)",
                           tether_shape_string(x, xs, sizeof(xs)), (unsigned)x->dtype,
                           tether_shape_string(y, ys, sizeof(ys)), (unsigned)y->dtype);
  }
  return TETHER_STATUS_SUCCESS;
}

static void reshape_eval(const struct tether_model* model, const tether_node* op,
                         void* const* data, void* scratch, struct tether_pool* pool) {
  (void)pool;
  (void)scratch;
  memcpy(data[op->outputs[0]], data[op->inputs[0]], tether_output(model, op, 0)->bytes);
}

TETHER_OP_DEF(RESHAPE) = {1, 1, TETHER_NO_OPTIONAL, 0, 0, reshape_prepare, NULL, reshape_eval};
