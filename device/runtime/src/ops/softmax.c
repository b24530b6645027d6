/*
 * softmax.c — SOFTMAX over the last axis: y = exp(beta*x - max) / sum(exp(beta*x - max)).
 */
#include <math.h>

#include "ops/ops.h"

/*
 * int8 rows: p = softmax(beta * s_x * (q - z_x)) computed in float, y = clamp(round(256 p) -
 * 128). Not TFLite's fixed-point (gemmlowp) arithmetic: results can differ from TFLite's
 * int8 SOFTMAX by one step (1/256) where p lies near a rounding boundary.
 * exp(beta * s_x * (q - max)) takes 256 values, one per q - max in [-255, 0]: the table
 * e[d] = expf(beta_scale * -d) is built at load (the op's packed block).
 */
static tether_status qs8_softmax_pack(const struct tether_model* model, const tether_node* op,
                                      void* packed) {
  if (packed == NULL) return TETHER_STATUS_SUCCESS;  /* a dry run: nothing to check */
  const float beta_scale = op->params.beta * tether_input(model, op, 0)->scale;
  float* e = (float*)packed;
  for (int32_t d = 0; d < 256; d++) e[d] = expf(beta_scale * (float)(-d));
  return TETHER_STATUS_SUCCESS;
}

static void qs8_softmax(size_t rows, size_t n, const float* e, const int8_t* x, int8_t* y) {
  for (size_t r = 0; r < rows; r++) {
    const int8_t* xr = x + r * n;
    int8_t* yr = y + r * n;
    int32_t max = -128;
    for (size_t i = 0; i < n; i++) max = xr[i] > max ? xr[i] : max;
    float sum = 0.0f;
    for (size_t i = 0; i < n; i++) sum += e[max - xr[i]];
    const float inv = 1.0f / sum;
    for (size_t i = 0; i < n; i++) {
      /* p is in [0, 1] for a finite beta; a NaN or infinite beta (a damaged file) gives NaN,
       * which must not reach the integer conversion: it maps to the lowest step. */
      float q = e[max - xr[i]] * inv * 256.0f;
      q = q >= 0.0f ? (q <= 256.0f ? q : 256.0f) : 0.0f;
      int32_t v = (int32_t)roundf(q) - 128;
      yr[i] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
    }
  }
}

static tether_status softmax_prepare(const struct tether_model* model, uint32_t op_index,
                                     tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  tether_status status = TETHER_STATUS_SUCCESS;
  if (x->dtype == TETHER_DTYPE_INT8) {
    /* FORMAT.md: int8 SOFTMAX outputs s = 1/256, z = -128. */
    if (x->quant != TETHER_QUANT_PER_TENSOR || y->dtype != TETHER_DTYPE_INT8 ||
        y->quant != TETHER_QUANT_PER_TENSOR ||
        y->scale != 1.0f / 256.0f || y->zero_point != -128) {
      return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "int8 SOFTMAX needs int8 per-tensor input and output with scale "
                             "1/256 and zero point -128");
    }
    op->quantized = 1;
    op->packed_floats = 256;  /* the exp table */
  } else {
    status = tether_check_f32(model, op_index, x, "input 0");
    if (status == TETHER_STATUS_SUCCESS) status = tether_check_f32(model, op_index, y, "output 0");
    if (status != TETHER_STATUS_SUCCESS) return status;
  }
  if (x->ndim < 1) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "input 0 needs at least one axis");
  }
  if (!isfinite(op->params.beta)) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR, "beta is not finite");
  }
  return tether_check_shape(model, op_index, y, "output 0", x->ndim, x->shape);
}

static void softmax_eval(const struct tether_model* model, const tether_node* op,
                         void* const* data, void* scratch, struct tether_pool* pool) {
  (void)pool;
  (void)scratch;
  const tether_tensor* x = tether_input(model, op, 0);
  const size_t n = (size_t)x->shape[x->ndim - 1];
  if (op->quantized) {
    /* The zero point cancels in the difference from the row maximum. */
    qs8_softmax(x->elements / n, n, op->packed, (const int8_t*)data[op->inputs[0]],
                (int8_t*)data[op->outputs[0]]);
    return;
  }
  tether_ref_f32_softmax(x->elements / n, n, op->params.beta,
                                     (const float*)data[op->inputs[0]],
                                     (float*)data[op->outputs[0]]);
}

TETHER_OP_DEF(SOFTMAX) = {1, 1, TETHER_NO_OPTIONAL, TETHER_ATTR(BETA), 0, softmax_prepare,
                          qs8_softmax_pack,
                          softmax_eval};
