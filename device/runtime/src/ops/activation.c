/*
 * activation.c — the elementwise activation ops (RELU, RELU6, LOGISTIC, TANH, HARD_SWISH,
 * CLAMP, HARD_SIGMOID, LEAKY_RELU, ELU, GELU in float32 and int8), and the fused activation
 * every float op's output goes through (tether_op_eval applies it). LEAKY_RELU is
 * y = x < 0 ? α·x : x, ELU y = x < 0 ? α·(exp(x) − 1) : x (ONNX Runtime's formulas).
 *
 * int8, where TensorFlow Lite has the kernel, is its reference arithmetic bit for bit
 * (checked against LiteRT in tests/converter/test_int8_ops.py):
 *   - LOGISTIC, TANH, ELU, GELU: TFLite's 256-entry table, built in float as its LUTPopulate
 *     does: q_y = clamp(trunc(round(f(s_x · (q_x − z_x)) · (1 / s_y)) + z_y)), f the float
 *     1 / (1 + expf(−x)), tanhf(x), x < 0 ? expm1f(x) : x (TFLite's ELU has no alpha: int8
 *     needs α = 1), 0.5·x·erfcf(x · −1/√2) or 0.5·x·(1 + tanhf(√(2/π)·(x + 0.044715·x³)));
 *   - HARD_SWISH: TFLite's 16-bit fixed-point recipe (reference_ops::HardSwish);
 *   - RELU, RELU6: TFLite's ReluX, z_y + MBQM(q_x − z_x, s_x / s_y) clamped to the range;
 *   - LEAKY_RELU: TFLite's QuantizeLeakyRelu, z_y + MBQM(q_x − z_x, M) with M = s_x / s_y
 *     where q_x ≥ z_x and M = s_x · α / s_y below (both multipliers computed in float32).
 * CLAMP uses ReluX with its own bounds and HARD_SIGMOID a float table like LOGISTIC's
 * (TFLite has neither op in int8). Each function is evaluated once per distinct input value:
 * on tensors of 256 or more elements a 256-entry table is built per invoke (on the stack),
 * smaller ones are computed element by element; either way each output is the same
 * function of its input.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ops/ops.h"

void tether_f32_activation_apply(float* y, size_t n, uint32_t activation) {
  if (activation != TETHER_ACT_NONE) tether_ref_f32_activation(n, y, y, activation);
}

static uint32_t activation_of_op(uint32_t type) {
  switch (type) {
    case TETHER_OP_RELU: return TETHER_ACT_RELU;
    case TETHER_OP_RELU6: return TETHER_ACT_RELU6;
    case TETHER_OP_LOGISTIC: return TETHER_ACT_SIGMOID;
    case TETHER_OP_TANH: return TETHER_ACT_TANH;
    case TETHER_OP_HARD_SWISH: return TETHER_ACT_HARD_SWISH;
  }
  return TETHER_ACT_NONE;
}

/* ---- int8 --------------------------------------------------------------------------------- */

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
  int32_t multiplier, shift;       /* RELU, RELU6, CLAMP; LEAKY_RELU where q_x >= z_x */
  int32_t alpha_multiplier, alpha_shift;  /* LEAKY_RELU where q_x < z_x */
  float alpha, offset;             /* HARD_SIGMOID */
  int approximate;                 /* GELU: 1 the tanh form */
  q8_hard_swish hard_swish;
} q8_unary;

/* ReluX bounds (TFLite QuantizedReluX): [z_y + round(min / s_y), z_y + round(max / s_y)]. */
static void relux_bounds(q8_unary* u, float mn, float mx) {
  if (mn > -INFINITY) {
    const int32_t q =
        tether_clamp_i32(tether_q8_quantize_value(mn, u->y_scale, u->y_zero), -128, 127);
    u->lo = q > u->lo ? q : u->lo;
  }
  if (mx < INFINITY) {
    const int32_t q =
        tether_clamp_i32(tether_q8_quantize_value(mx, u->y_scale, u->y_zero), -128, 127);
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
    case TETHER_OP_LEAKY_RELU: {
      /* TFLite LeakyReluPrepare: both ratios in float32, then QuantizeMultiplier. */
      const float identity = x->scale / y->scale;
      const float scaled_alpha = x->scale * op->params.alpha;
      const float with_alpha = scaled_alpha / y->scale;
      tether_quantize_multiplier((double)identity, &u->multiplier, &u->shift);
      tether_quantize_multiplier((double)with_alpha, &u->alpha_multiplier, &u->alpha_shift);
      return u->shift <= 23 && u->alpha_shift <= 23;  /* |q_x - z_x| <= 255: 255 << 23 fits */
    }
    case TETHER_OP_GELU:
      u->approximate = op->params.approximate;
      return 1;
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
    case TETHER_OP_LEAKY_RELU: {
      const int32_t d = q - u->x_zero;
      v = u->y_zero + (d >= 0 ? tether_multiply_by_quantized_multiplier(d, u->multiplier, u->shift)
                              : tether_multiply_by_quantized_multiplier(d, u->alpha_multiplier,
                                                                        u->alpha_shift));
      break;
    }
    default: {
      /* TFLite LUTPopulate: dequantize in float, f, round(f * (1 / s_y)) + z_y truncated. */
      const float real = u->x_scale * (float)(q - u->x_zero);
      float f;
      if (u->type == TETHER_OP_LOGISTIC) {
        f = 1.0f / (1.0f + expf(-real));
      } else if (u->type == TETHER_OP_TANH) {
        f = tanhf(real);
      } else if (u->type == TETHER_OP_ELU) {  /* TFLite EluPrepare */
        f = real < 0.0f ? expm1f(real) : real;
      } else if (u->type == TETHER_OP_GELU && u->approximate) {  /* GeluTransformApproximate */
        const float k = 0.7978845608028654f;  /* (float)(M_2_SQRTPI * M_SQRT1_2) */
        f = 0.5f * real * (1.0f + tanhf(k * (real + 0.044715f * real * real * real)));
      } else if (u->type == TETHER_OP_GELU) {  /* GeluTransform: erfc for large negatives */
        f = 0.5f * real * erfcf(real * -0.70710678118654752f);
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
  return (int8_t)tether_clamp_i32(v, u->lo, u->hi);
}

static tether_status q8_unary_prepare(const struct tether_model* model, uint32_t op_index,
                                      tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  tether_status status = tether_q8_need_per_tensor(model, op_index, x, "input 0");
  if (status == TETHER_STATUS_SUCCESS) status = tether_q8_need_per_tensor(model, op_index, y, "output 0");
  if (status == TETHER_STATUS_SUCCESS) status = tether_q8_need_fused_range(model, op_index, op, y);
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
                           : op->type == TETHER_OP_LEAKY_RELU
                               ? "needs s_x / s_y and s_x * alpha / s_y below 2^23"
                               : "needs s_x / s_y < 2^23");
  }
  op->quantized = 1;
  op->fused_activation = 1;
  return TETHER_STATUS_SUCCESS;
}

static void q8_unary_eval(const struct tether_model* model, const tether_node* op,
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

static tether_status activation_prepare(const struct tether_model* model, uint32_t op_index,
                                        tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  if (op->type == TETHER_OP_GELU && !(op->params.approximate == 0 || op->params.approximate == 1)) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "attribute approximate=%d; allowed: 0 (erf), 1 (tanh)",
                           op->params.approximate);
  }
  if ((op->type == TETHER_OP_LEAKY_RELU || op->type == TETHER_OP_ELU) &&
      !isfinite(op->params.alpha)) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "%s needs a finite alpha", tether_op_type_name(op->type));
  }
  if (op->type == TETHER_OP_ELU && x->dtype == TETHER_DTYPE_INT8 && op->params.alpha != 1.0f) {
    return tether_op_error(model, op_index, TETHER_STATUS_UNSUPPORTED_OP,
                           "int8 ELU needs alpha 1 (TFLite's int8 ELU has no alpha), got %g; "
                           "keep this ELU in float32 (DEQUANTIZE before, QUANTIZE after)",
                           (double)op->params.alpha);
  }
  tether_status status = x->dtype == TETHER_DTYPE_INT8
                             ? q8_unary_prepare(model, op_index, op)
                             : tether_check_f32(model, op_index, x, "input 0");
  if (status == TETHER_STATUS_SUCCESS && !op->quantized) {
    status = tether_check_f32(model, op_index, y, "output 0");
  }
  if (status == TETHER_STATUS_SUCCESS) {
    status = tether_check_shape(model, op_index, y, "output 0", x->ndim, x->shape);
  }
  if (status == TETHER_STATUS_SUCCESS && op->type == TETHER_OP_CLAMP &&
      !(op->params.clamp_min <= op->params.clamp_max)) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "CLAMP needs min <= max (and neither NaN)");
  }
  if (status == TETHER_STATUS_SUCCESS && op->type == TETHER_OP_HARD_SIGMOID &&
      !(isfinite(op->params.alpha) && isfinite(op->params.offset))) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "HARD_SIGMOID needs finite alpha and offset");
  }
  return status;
}

static void activation_eval(const struct tether_model* model, const tether_node* op,
                            void* const* data, void* scratch, struct tether_pool* pool) {
  (void)pool;
  (void)scratch;
  if (op->quantized) {
    q8_unary_eval(model, op, data);
    return;
  }
  const tether_tensor* y = tether_output(model, op, 0);
  if (op->type == TETHER_OP_LEAKY_RELU || op->type == TETHER_OP_ELU) {
    const float* x = (const float*)data[op->inputs[0]];
    float* out = (float*)data[op->outputs[0]];
    const float alpha = op->params.alpha;
    if (op->type == TETHER_OP_LEAKY_RELU) {
      for (size_t i = 0; i < y->elements; i++) out[i] = x[i] < 0.0f ? alpha * x[i] : x[i];
    } else {
      for (size_t i = 0; i < y->elements; i++) {
        out[i] = x[i] < 0.0f ? alpha * (expf(x[i]) - 1.0f) : x[i];
      }
    }
    return;
  }
  if (op->type == TETHER_OP_GELU) {
    tether_ref_f32_gelu(y->elements, (const float*)data[op->inputs[0]],
                        (float*)data[op->outputs[0]], op->params.approximate);
    return;
  }
  if (op->type == TETHER_OP_CLAMP || op->type == TETHER_OP_HARD_SIGMOID) {
    const float* x = (const float*)data[op->inputs[0]];
    float* out = (float*)data[op->outputs[0]];
    const int clamp = op->type == TETHER_OP_CLAMP;
    const float lo = clamp ? op->params.clamp_min : 0.0f, hi = clamp ? op->params.clamp_max : 1.0f;
    const float alpha = clamp ? 1.0f : op->params.alpha, offset = clamp ? 0.0f : op->params.offset;
    for (size_t i = 0; i < y->elements; i++) {
      const float v = clamp ? x[i] : alpha * x[i] + offset;
      out[i] = v < lo ? lo : v > hi ? hi : v;
    }
    return;
  }
  tether_ref_f32_activation(y->elements, (const float*)data[op->inputs[0]],
                                        (float*)data[op->outputs[0]], activation_of_op(op->type));
}

int tether_f32_minmax_of(uint32_t activation, tether_f32_minmax* out) {
  out->min = -INFINITY;
  out->max = INFINITY;
  switch (activation) {
    case TETHER_ACT_NONE: return 1;
    case TETHER_ACT_RELU: out->min = 0.0f; return 1;
    case TETHER_ACT_RELU6: out->min = 0.0f; out->max = 6.0f; return 1;
    case TETHER_ACT_RELU_N1_TO_1: out->min = -1.0f; out->max = 1.0f; return 1;
  }
  return 0;
}

TETHER_OP_DEF(RELU) = {1, 1, TETHER_NO_OPTIONAL, 0, 0, activation_prepare, NULL, activation_eval};
TETHER_OP_DEF(RELU6) = {1, 1, TETHER_NO_OPTIONAL, 0, 0, activation_prepare, NULL, activation_eval};
TETHER_OP_DEF(LOGISTIC) = {1, 1, TETHER_NO_OPTIONAL, 0, 0, activation_prepare, NULL,
                           activation_eval};
TETHER_OP_DEF(TANH) = {1, 1, TETHER_NO_OPTIONAL, 0, 0, activation_prepare, NULL, activation_eval};
TETHER_OP_DEF(HARD_SWISH) = {1, 1, TETHER_NO_OPTIONAL, 0, 0, activation_prepare, NULL,
                             activation_eval};
TETHER_OP_DEF(CLAMP) = {1, 1, TETHER_NO_OPTIONAL, TETHER_ATTR(MIN) | TETHER_ATTR(MAX),
                        TETHER_ATTR(MIN) | TETHER_ATTR(MAX), activation_prepare, NULL,
                        activation_eval};
TETHER_OP_DEF(HARD_SIGMOID) = {1, 1, TETHER_NO_OPTIONAL, TETHER_ATTR(ALPHA) | TETHER_ATTR(OFFSET),
                               TETHER_ATTR(ALPHA) | TETHER_ATTR(OFFSET), activation_prepare, NULL,
                               activation_eval};
TETHER_OP_DEF(LEAKY_RELU) = {1, 1, TETHER_NO_OPTIONAL, TETHER_ATTR(ALPHA), TETHER_ATTR(ALPHA),
                             activation_prepare, NULL, activation_eval};
TETHER_OP_DEF(ELU) = {1, 1, TETHER_NO_OPTIONAL, TETHER_ATTR(ALPHA), TETHER_ATTR(ALPHA),
                      activation_prepare, NULL, activation_eval};
TETHER_OP_DEF(GELU) = {1, 1, TETHER_NO_OPTIONAL, TETHER_ATTR(APPROXIMATE), 0, activation_prepare,
                      NULL, activation_eval};
