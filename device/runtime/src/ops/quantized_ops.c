/*
 * quantized_ops.c — the int8 paths of MAX_POOL_2D, AVERAGE_POOL_2D, CONCATENATION, PAD and
 * of the elementwise ops RELU, RELU6, LOGISTIC, TANH, HARD_SWISH, CLAMP and HARD_SIGMOID
 * (converter/FORMAT.md, "Integer (int8) execution"). The float families' prepare and eval
 * (pool.c, concat.c, pad.c, activation.c) hand int8 ops over to the functions here.
 *
 * Where TensorFlow Lite has the int8 kernel, the arithmetic is its reference kernel's, bit
 * for bit (checked against LiteRT in tests/converter/test_int8_ops.py):
 *   - MAX_POOL_2D: max of the real cells; AVERAGE_POOL_2D: int32 sum of the cells q, then
 *     (sum ± count/2) / count truncated (round half away from zero); both need the output
 *     quantization to equal the input's and clamp to the fused activation's range;
 *   - LOGISTIC, TANH: TFLite's 256-entry table, built in float as its LUTPopulate does:
 *     q_y = clamp(trunc(round(f(s_x · (q_x − z_x)) · (1 / s_y)) + z_y));
 *   - HARD_SWISH: TFLite's 16-bit fixed-point recipe (reference_ops::HardSwish);
 *   - RELU, RELU6: TFLite's ReluX, z_y + MBQM(q_x − z_x, s_x / s_y) clamped to the range;
 *   - PAD: the padding cells hold the quantized pad value (z_x for the usual 0).
 * CONCATENATION copies inputs quantized like the output and requantizes the others as
 * int8 QUANTIZE does (TFLite's Requantize); CLAMP uses ReluX with its own bounds and
 * HARD_SIGMOID a float table like LOGISTIC's (TFLite has neither op in int8).
 *
 * Elementwise ops evaluate their function once per distinct input value: on tensors of 256
 * or more elements a 256-entry table is built per invoke (on the stack), smaller ones are
 * computed element by element. Either way each output is the same function of its input.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../internal.h"

static int32_t clamp_i32(int32_t v, int32_t lo, int32_t hi) { return v < lo ? lo : v > hi ? hi : v; }

/* z + round(f / s) with the rounded value saturated to +-2^20 (keeps int conversion
 * defined for tiny scales and infinite bounds; the result is clamped to int8 anyway). */
static int32_t quantize_saturated(float f, float scale, int32_t zero_point) {
  float r = roundf(f / scale);
  r = r > 1048576.0f ? 1048576.0f : r < -1048576.0f ? -1048576.0f : r;
  return zero_point + (r == r ? (int32_t)r : 0);
}


static tether_status need_same_quant(const struct tether_model* model, uint32_t op_index,
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
static tether_status fused_range(const struct tether_model* model, uint32_t op_index,
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

/* ---- pools ------------------------------------------------------------------------------ */

tether_status tether_q8_pool_prepare(const struct tether_model* model, uint32_t op_index,
                                     tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  tether_status status = tether_q8_need_per_tensor(model, op_index, x, "input 0");
  if (status == TETHER_STATUS_SUCCESS) status = tether_q8_need_per_tensor(model, op_index, y, "output 0");
  if (status == TETHER_STATUS_SUCCESS) status = need_same_quant(model, op_index, x, y);
  if (status == TETHER_STATUS_SUCCESS) status = fused_range(model, op_index, op, y);
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

/* MAX_POOL_2D (avg == 0) or AVERAGE_POOL_2D over NHWC int8, output clamped to [lo, hi]. */
static void qs8_pool_ukernel__scalar(const tether_conv_geometry* g, int avg, int count_include_pad,
                                     int32_t x_zero, int32_t lo, int32_t hi, const int8_t* x,
                                     int8_t* y) {
  const size_t c_count = g->in_c;
  for (size_t n = 0; n < g->batch; n++) {
    for (size_t oh = 0; oh < g->out_h; oh++) {
      size_t h0, h1;
      tether_clamp_window((ptrdiff_t)oh * g->stride_h - g->pad_top, g->kernel_h,
                          g->in_h, &h0, &h1);
      for (size_t ow = 0; ow < g->out_w; ow++) {
        size_t w0, w1;
        tether_clamp_window((ptrdiff_t)ow * g->stride_w - g->pad_left, g->kernel_w,
                            g->in_w, &w0, &w1);
        const int32_t cells = (int32_t)((h1 - h0) * (w1 - w0));
        const int32_t count = count_include_pad ? (int32_t)(g->kernel_h * g->kernel_w) : cells;
        int8_t* yp = y + ((n * g->out_h + oh) * g->out_w + ow) * c_count;
        for (size_t c = 0; c < c_count; c++) {
          int32_t v;
          if (avg) {
            /* Padding cells counted in the divisor hold the real value 0, i.e. q = z_x. */
            int32_t sum = (count - cells) * x_zero;
            for (size_t ih = h0; ih < h1; ih++) {
              for (size_t iw = w0; iw < w1; iw++) sum += x[((n * g->in_h + ih) * g->in_w + iw) * c_count + c];
            }
            v = sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
          } else {
            v = -128;
            for (size_t ih = h0; ih < h1; ih++) {
              for (size_t iw = w0; iw < w1; iw++) {
                const int32_t q = x[((n * g->in_h + ih) * g->in_w + iw) * c_count + c];
                v = q > v ? q : v;
              }
            }
          }
          yp[c] = (int8_t)clamp_i32(v, lo, hi);
        }
      }
    }
  }
}

void tether_q8_pool_eval(const struct tether_model* model, const tether_node* op,
                         void* const* data) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  const tether_op_params* p = &op->params;
  const tether_conv_geometry g = tether_window_geometry(model, op);
  int32_t lo = -128, hi = 127;
  tether_q8_activation_range(op->activation, y->scale, y->zero_point, &lo, &hi);
  qs8_pool_ukernel__scalar(&g, op->type == TETHER_OP_AVERAGE_POOL_2D, p->count_include_pad,
                           x->zero_point, lo, hi, (const int8_t*)data[op->inputs[0]],
                           (int8_t*)data[op->outputs[0]]);
}

/* ---- CONCATENATION ---------------------------------------------------------------------- */

tether_status tether_q8_concat_prepare(const struct tether_model* model, uint32_t op_index,
                                       tether_node* op) {
  const tether_tensor* y = tether_output(model, op, 0);
  tether_status status = tether_q8_need_per_tensor(model, op_index, y, "output 0");
  if (status == TETHER_STATUS_SUCCESS && op->activation != TETHER_ACT_NONE) {
    status = fused_range(model, op_index, op, y);
  }
  for (uint32_t i = 0; status == TETHER_STATUS_SUCCESS && i < op->input_count; i++) {
    const tether_tensor* x = tether_input(model, op, i);
    char slot[32];
    tether_format(slot, sizeof(slot), "input %u", i);
    status = tether_q8_need_per_tensor(model, op_index, x, slot);
    if (status != TETHER_STATUS_SUCCESS) break;
    /* (q - z) << shift must fit int32 in MultiplyByQuantizedMultiplier: |q - z| <= 255,
     * so shift <= 23, i.e. s_x / s_y < 2^23. */
    int32_t multiplier, shift;
    tether_quantize_multiplier((double)x->scale / (double)y->scale, &multiplier, &shift);
    if (shift > 23) {
      return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "input %u '%s': scale ratio s_x / s_y = 2^%d or more is out of "
                             "range for int8 requantization",
                             i, x->name, (int)shift - 1);
    }
  }
  if (status != TETHER_STATUS_SUCCESS) return status;
  op->quantized = 1;
  op->fused_activation = 1;
  return TETHER_STATUS_SUCCESS;
}

void tether_q8_concat_eval(const struct tether_model* model, const tether_node* op,
                           void* const* data) {
  const tether_tensor* y = tether_output(model, op, 0);
  const uint32_t axis = (uint32_t)op->params.axis;
  size_t outer = 1, inner = 1;
  for (uint32_t d = 0; d < axis; d++) outer *= (size_t)y->shape[d];
  for (uint32_t d = axis + 1; d < y->ndim; d++) inner *= (size_t)y->shape[d];
  int32_t lo = -128, hi = 127;
  tether_q8_activation_range(op->activation, y->scale, y->zero_point, &lo, &hi);
  const int clamps = lo > -128 || hi < 127;
  int8_t* out = (int8_t*)data[op->outputs[0]];
  for (uint32_t i = 0; i < op->input_count; i++) {
    const tether_tensor* x = tether_input(model, op, i);
    const size_t chunk = (size_t)x->shape[axis] * inner;
    const int8_t* in = (const int8_t*)data[op->inputs[i]];
    int8_t* dst = out;
    if (x->scale == y->scale && x->zero_point == y->zero_point && !clamps) {
      for (size_t o = 0; o < outer; o++) memcpy(dst + o * (y->elements / outer), in + o * chunk, chunk);
    } else {
      int32_t multiplier, shift;  /* TFLite Requantize, as int8 -> int8 QUANTIZE */
      tether_quantize_multiplier((double)x->scale / (double)y->scale, &multiplier, &shift);
      for (size_t o = 0; o < outer; o++) {
        const int8_t* src = in + o * chunk;
        int8_t* row = dst + o * (y->elements / outer);
        for (size_t k = 0; k < chunk; k++) {
          const int32_t v = tether_multiply_by_quantized_multiplier(
                                (int32_t)src[k] - x->zero_point, multiplier, shift) +
                            y->zero_point;
          row[k] = (int8_t)clamp_i32(v, lo, hi);
        }
      }
    }
    out += chunk;
  }
}

/* ---- PAD ----------------------------------------------------------------------------------- */

tether_status tether_q8_pad_prepare(const struct tether_model* model, uint32_t op_index,
                                    tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  tether_status status = tether_q8_need_per_tensor(model, op_index, x, "input 0");
  if (status == TETHER_STATUS_SUCCESS) status = tether_q8_need_per_tensor(model, op_index, y, "output 0");
  if (status == TETHER_STATUS_SUCCESS) status = need_same_quant(model, op_index, x, y);
  if (status == TETHER_STATUS_SUCCESS && !isfinite(op->params.value)) {
    status = tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "int8 PAD needs a finite pad value");
  }
  if (status != TETHER_STATUS_SUCCESS) return status;
  op->quantized = 1;
  return TETHER_STATUS_SUCCESS;
}

void tether_q8_pad_eval(const struct tether_model* model, const tether_node* op,
                        void* const* data) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  const int32_t* pads = op->params.paddings;
  const int8_t* in = (const int8_t*)data[op->inputs[0]];
  int8_t* out = (int8_t*)data[op->outputs[0]];
  const int8_t fill = (int8_t)clamp_i32(quantize_saturated(op->params.value, x->scale,
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

/* ---- elementwise ops ------------------------------------------------------------------------ */

/* TFLite's HardSwishParams: 16-bit fixed-point multipliers and exponents. */
typedef struct q8_hard_swish {
  int32_t x_zero, y_zero;
  int32_t reluish_multiplier, reluish_exponent;  /* Q0.15, in [2^14, 2^15) */
  int32_t output_multiplier, output_exponent;
} q8_hard_swish;

/* TFLite DownScaleInt32ToInt16Multiplier: round a Q0.31 multiplier to Q0.15, saturating. */
static int32_t q15_multiplier(int32_t m) {
  if (m >= INT32_MAX - (1 << 15)) return INT16_MAX;
  return (m + (1 << 15)) >> 16;
}

/* Returns 0 when the scales leave the ranges TFLite's recipe supports. */
static int hard_swish_params(float sx, int32_t zx, float sy, int32_t zy, q8_hard_swish* p) {
  const float hires_scale = (1.0f / 128.0f) * sx;
  const float output_real = hires_scale / sy;
  const float reluish_real = hires_scale / (3.0f / 32768.0f);
  int32_t m;
  p->x_zero = zx;
  p->y_zero = zy;
  tether_quantize_multiplier((double)output_real, &m, &p->output_exponent);
  p->output_multiplier = q15_multiplier(m);
  tether_quantize_multiplier((double)reluish_real, &m, &p->reluish_exponent);
  p->reluish_multiplier = q15_multiplier(m);
  return p->output_exponent <= 0 && p->output_exponent >= -31 && p->reluish_exponent <= 30;
}

/* gemmlowp SaturatingRoundingDoublingHighMul on int16 values. */
static int32_t srdhm16(int32_t a, int32_t b) {
  if (a == INT16_MIN && b == INT16_MIN) return INT16_MAX;
  const int32_t ab = a * b;
  const int32_t nudge = ab >= 0 ? (1 << 14) : (1 - (1 << 14));
  return (ab + nudge) / (1 << 15);  /* truncates toward zero, as gemmlowp */
}

/* TFLite's SaturatingDoublingHighMul (no rounding nudge) on int16 values. */
static int32_t sdhm16(int32_t a, int32_t b) {
  if (a == INT16_MIN && b == INT16_MIN) return INT16_MAX;
  return (a * b) / (1 << 15);
}

static int32_t saturating_left_shift16(int32_t v, int32_t amount) {
  const int64_t r = (int64_t)v * ((int64_t)1 << amount);
  return r > INT16_MAX ? INT16_MAX : r < INT16_MIN ? INT16_MIN : (int32_t)r;
}

/* TFLite reference_ops::HardSwish for one int8 value. */
static int32_t hard_swish_one(const q8_hard_swish* p, int32_t q) {
  const int32_t hires = (q - p->x_zero) * (1 << 7);  /* |.| <= 255 * 128: fits int16 */
  const int32_t preshift = srdhm16(hires, p->output_multiplier);
  int32_t reluish = hires;
  if (p->reluish_exponent > 0) reluish = saturating_left_shift16(reluish, p->reluish_exponent - 1);
  reluish = srdhm16(reluish, p->reluish_multiplier);
  if (p->reluish_exponent > 0) reluish = saturating_left_shift16(reluish, 1);
  if (p->reluish_exponent < 0) reluish = tether_rounding_divide_by_pot(reluish, -p->reluish_exponent);
  reluish = (reluish + (1 << 15)) >> 1;  /* [-1, 1] -> [0, 1] in Q0.15 */
  const int32_t product = sdhm16(reluish, preshift);
  return tether_rounding_divide_by_pot(product, -p->output_exponent) + p->y_zero;
}

typedef struct q8_unary {
  uint32_t type;
  float x_scale, y_scale;
  int32_t x_zero, y_zero;
  int32_t lo, hi;                  /* output clamp: int8 range, op bounds, fused activation */
  int32_t multiplier, shift;       /* RELU, RELU6, CLAMP */
  float alpha, offset;             /* HARD_SIGMOID */
  q8_hard_swish hard_swish;
} q8_unary;

/* ReluX bounds (TFLite QuantizedReluX): [z_y + round(min / s_y), z_y + round(max / s_y)]. */
static void relux_bounds(q8_unary* u, float mn, float mx) {
  if (mn > -INFINITY) {
    const int32_t q = clamp_i32(quantize_saturated(mn, u->y_scale, u->y_zero), -128, 127);
    u->lo = q > u->lo ? q : u->lo;
  }
  if (mx < INFINITY) {
    const int32_t q = clamp_i32(quantize_saturated(mx, u->y_scale, u->y_zero), -128, 127);
    u->hi = q < u->hi ? q : u->hi;
  }
}

static int q8_unary_setup(const struct tether_model* model, const tether_node* op, q8_unary* u) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  memset(u, 0, sizeof(*u));
  u->type = op->type;
  u->x_scale = x->scale;
  u->y_scale = y->scale;
  u->x_zero = x->zero_point;
  u->y_zero = y->zero_point;
  u->lo = -128;
  u->hi = 127;
  tether_q8_activation_range(op->activation, y->scale, y->zero_point, &u->lo, &u->hi);
  switch (op->type) {
    case TETHER_OP_RELU:
    case TETHER_OP_RELU6:
    case TETHER_OP_CLAMP: {
      tether_quantize_multiplier((double)x->scale / (double)y->scale, &u->multiplier, &u->shift);
      const float mn = op->type == TETHER_OP_CLAMP ? op->params.clamp_min : 0.0f;
      const float mx = op->type == TETHER_OP_RELU6   ? 6.0f
                       : op->type == TETHER_OP_CLAMP ? op->params.clamp_max
                                                     : INFINITY;
      relux_bounds(u, mn, mx);
      return u->shift <= 23;  /* 255 << 23 fits int32 (as for CONCATENATION) */
    }
    case TETHER_OP_HARD_SWISH:
      return hard_swish_params(x->scale, x->zero_point, y->scale, y->zero_point, &u->hard_swish);
    case TETHER_OP_HARD_SIGMOID:
      u->alpha = op->params.alpha;
      u->offset = op->params.offset;
      return 1;
    default: return 1;
  }
}

static int8_t q8_unary_one(const q8_unary* u, int32_t q) {
  int32_t v;
  switch (u->type) {
    case TETHER_OP_RELU:
    case TETHER_OP_RELU6:
    case TETHER_OP_CLAMP:
      v = u->y_zero + tether_multiply_by_quantized_multiplier(q - u->x_zero, u->multiplier, u->shift);
      break;
    case TETHER_OP_HARD_SWISH: v = hard_swish_one(&u->hard_swish, q); break;
    default: {
      /* TFLite LUTPopulate: dequantize in float, f, round(f * (1 / s_y)) + z_y truncated. */
      const float real = u->x_scale * (float)(q - u->x_zero);
      float f;
      if (u->type == TETHER_OP_LOGISTIC) {
        f = 1.0f / (1.0f + expf(-real));
      } else if (u->type == TETHER_OP_TANH) {
        f = tanhf(real);
      } else {  /* HARD_SIGMOID */
        f = u->alpha * real + u->offset;
        f = f < 0.0f ? 0.0f : f > 1.0f ? 1.0f : f;
      }
      const float rescaled = roundf(f * (1.0f / u->y_scale));
      const float shifted = rescaled + (float)u->y_zero;
      /* (a NaN, from 0 * (1 / s_y) with a denormal s_y, maps to -128, never to a cast) */
      v = shifted >= 127.0f ? 127 : shifted > -128.0f ? (int32_t)shifted : -128;
      break;
    }
  }
  return (int8_t)clamp_i32(v, u->lo, u->hi);
}

tether_status tether_q8_unary_prepare(const struct tether_model* model, uint32_t op_index,
                                      tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  tether_status status = tether_q8_need_per_tensor(model, op_index, x, "input 0");
  if (status == TETHER_STATUS_SUCCESS) status = tether_q8_need_per_tensor(model, op_index, y, "output 0");
  if (status == TETHER_STATUS_SUCCESS) status = fused_range(model, op_index, op, y);
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (op->type == TETHER_OP_LOGISTIC && (y->scale != 1.0f / 256.0f || y->zero_point != -128)) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "int8 LOGISTIC needs output '%s' with scale 1/256 and zero point "
                           "-128 (got zero point %d)",
                           y->name, y->zero_point);
  }
  if (op->type == TETHER_OP_TANH && (y->scale != 1.0f / 128.0f || y->zero_point != 0)) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "int8 TANH needs output '%s' with scale 1/128 and zero point 0 "
                           "(got zero point %d)",
                           y->name, y->zero_point);
  }
  q8_unary u;
  if (!q8_unary_setup(model, op, &u)) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "int8 %s: input scale of '%s' and output scale of '%s' are out of "
                           "range for its fixed-point arithmetic (%s)",
                           tether_op_type_name(op->type), x->name, y->name,
                           op->type == TETHER_OP_HARD_SWISH
                               ? "needs s_x / (128 s_y) < 1 and s_x < 2^30 * 3/256"
                               : "needs s_x / s_y < 2^23");
  }
  op->quantized = 1;
  op->fused_activation = 1;
  return TETHER_STATUS_SUCCESS;
}

void tether_q8_unary_eval(const struct tether_model* model, const tether_node* op,
                          void* const* data) {
  const tether_tensor* y = tether_output(model, op, 0);
  const int8_t* x = (const int8_t*)data[op->inputs[0]];
  int8_t* out = (int8_t*)data[op->outputs[0]];
  q8_unary u;
  q8_unary_setup(model, op, &u);
  if (y->elements < 256) {
    for (size_t i = 0; i < y->elements; i++) out[i] = q8_unary_one(&u, x[i]);
    return;
  }
  int8_t table[256];
  for (int32_t q = -128; q <= 127; q++) table[q + 128] = q8_unary_one(&u, q);
  for (size_t i = 0; i < y->elements; i++) out[i] = table[(int32_t)x[i] + 128];
}
