/*
 * test_quant.c — int8 arithmetic and the ops added with it:
 *   - TFLite's QuantizeMultiplier / SaturatingRoundingDoublingHighMul / RoundingDivideByPOT /
 *     MultiplyByQuantizedMultiplier on hand-computed cases (ties, negatives, saturation);
 *   - int8 CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED on hand-computed models (per-channel
 *     scales, zero points, bias, fused RELU/RELU6 in the quantized domain) and on random
 *     models against an independent int64 re-implementation;
 *   - QUANTIZE (float -> int8, int8 -> int8), DEQUANTIZE, SUB, DIV, TRANSPOSE, CLAMP,
 *     HARD_SIGMOID;
 *   - int8 MAX/AVERAGE_POOL_2D (rounding, pads, count_include_pad, fused RELU6), PAD,
 *     CONCATENATION with requantized inputs, HARD_SWISH / LOGISTIC / TANH / RELU6 /
 *     LEAKY_RELU / ELU / GELU / PRELU on hand-computed or LiteRT-checked values, MAXIMUM /
 *     MINIMUM (raw integers compared, broadcast, constant operand, fused RELU), and the
 *     load-time errors.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "tether/tether.h"
#include "tmodel_builder.h"
#include "memory_check.h"

/* Loads, runs once and copies output 0 out; inputs in order. Returns 0 if loading failed. */
static int run_model(tb_builder* b, const void* const* inputs, const size_t* input_bytes,
                     size_t n_in, void* out, size_t out_bytes, const char* what) {
  size_t size = 0;
  uint8_t* file = tb_finish(b, &size);
  /* tether_model_memory's figures are the load's requests, int8 words and packing included,
   * for every ISA's kernels (memory_check.h). */
  tm_check_memory_every_isa(file, size, what);
  tether_model_t model = NULL;
  tether_status s = tether_model_load(file, size, NULL, &model);
  TB_CHECK(s == TETHER_STATUS_SUCCESS, "%s: load: %s", what, tether_last_error());
  if (s != TETHER_STATUS_SUCCESS) {
    free(file);
    return 0;
  }
  tether_session_t session = NULL;
  TB_CHECK(tether_session_create(model, NULL, 0, 1, &session) == TETHER_STATUS_SUCCESS,
           "%s: create", what);
  for (size_t i = 0; i < n_in; i++) {
    TB_CHECK(tether_session_set_input(session, i, inputs[i], input_bytes[i]) ==
                 TETHER_STATUS_SUCCESS,
             "%s: set_input %zu: %s", what, i, tether_last_error());
  }
  TB_CHECK(tether_session_invoke(session) == TETHER_STATUS_SUCCESS, "%s: invoke", what);
  TB_CHECK(tether_session_get_output(session, 0, out, out_bytes) == TETHER_STATUS_SUCCESS,
           "%s: get_output: %s", what, tether_last_error());
  tether_session_destroy(session);
  tether_model_destroy(model);
  free(file);
  return 1;
}

static void test_arithmetic(void) {
  static const struct { double real; int32_t m, shift; } kQm[] = {
      {0.5, 1 << 30, 0},       {0.25, 1 << 30, -1},  {1.0, 1 << 30, 1},
      {0.75, 1610612736, 0},   {0.0, 0, 0},          {1e-12, 0, 0},
      {0.9999999999, 1 << 30, 1}, {3.0, 1610612736, 2},
  };
  for (size_t i = 0; i < sizeof(kQm) / sizeof(kQm[0]); i++) {
    int32_t m = -1, shift = -99;
    tether_quantize_multiplier(kQm[i].real, &m, &shift);
    TB_CHECK(m == kQm[i].m && shift == kQm[i].shift, "QuantizeMultiplier(%g) = (%d, %d), want (%d, %d)",
             kQm[i].real, m, shift, kQm[i].m, kQm[i].shift);
  }
  /* SRDHM: x * m / 2^31 rounded with gemmlowp's nudge (2.5 -> 3, -2.5 -> -2). */
  TB_CHECK(tether_saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN) == INT32_MAX, "srdhm sat");
  TB_CHECK(tether_saturating_rounding_doubling_high_mul(1 << 30, 1 << 30) == 1 << 29, "srdhm 1");
  TB_CHECK(tether_saturating_rounding_doubling_high_mul(5, 1 << 30) == 3, "srdhm 2.5");
  TB_CHECK(tether_saturating_rounding_doubling_high_mul(-5, 1 << 30) == -2, "srdhm -2.5");
  TB_CHECK(tether_saturating_rounding_doubling_high_mul(-18, 1 << 30) == -9, "srdhm -9");
  /* RoundingDivideByPOT: round half away from zero. */
  static const int32_t kPot[][3] = {{5, 1, 3}, {-5, 1, -3}, {7, 2, 2}, {-7, 2, -2},
                                    {6, 2, 2}, {-6, 2, -2}, {0, 5, 0}, {-1, 1, -1},
                                    {1, 1, 1}, {INT32_MIN, 31, -1}, {INT32_MAX, 31, 1}};
  for (size_t i = 0; i < sizeof(kPot) / sizeof(kPot[0]); i++) {
    const int32_t got = tether_rounding_divide_by_pot(kPot[i][0], kPot[i][1]);
    TB_CHECK(got == kPot[i][2], "RoundingDivideByPOT(%d, %d) = %d, want %d", kPot[i][0],
             kPot[i][1], got, kPot[i][2]);
  }
  /* MBQM: -18 * 0.25 = -4.5 -> SRDHM gives -9, then /2 rounds half away: -5. */
  TB_CHECK(tether_multiply_by_quantized_multiplier(-18, 1 << 30, -1) == -5, "mbqm -4.5");
  TB_CHECK(tether_multiply_by_quantized_multiplier(18, 1 << 30, -1) == 5, "mbqm 4.5");
  TB_CHECK(tether_multiply_by_quantized_multiplier(1000, 1610612736, 2) == 3000, "mbqm x3");
  /* Within one of the exact product for random values. */
  for (int i = 0; i < 2000; i++) {
    const double real = exp(tb_uniform(-12.0f, 2.0f));
    int32_t m, shift;
    tether_quantize_multiplier(real, &m, &shift);
    const int32_t x = (int32_t)(tb_rand() % 200001) - 100000;
    const int32_t got = tether_multiply_by_quantized_multiplier(x, m, shift);
    TB_CHECK(fabs((double)got - (double)x * real) <= 1.0 + 1e-6 * fabs((double)x * real),
             "mbqm(%d, %g) = %d", x, real, got);
  }
}

/* 1x1 conv, per-channel weights, by hand (the header comment of test_quant.c). */
static void test_conv_by_hand(uint32_t act, const int8_t* want, const char* what) {
  const int8_t x[1] = {3};
  static const int8_t w[2] = {2, -4};
  static const int32_t bias[2] = {1, -2};
  tb_builder* b = tb_new();
  uint32_t xt = tb_tensor_typed(b, "x", 1, 4, (const int32_t[]){1, 1, 1, 1}, NULL);
  tb_quantize(b, xt, 0, 1, (const float[]){0.5f}, (const int32_t[]){-1});
  uint32_t wt = tb_tensor_typed(b, "w", 1, 4, (const int32_t[]){2, 1, 1, 1}, w);
  tb_quantize(b, wt, 0, 2, (const float[]){0.25f, 0.5f}, NULL);
  uint32_t bt = tb_tensor_typed(b, "b", 3, 1, (const int32_t[]){2}, bias);
  uint32_t yt = tb_tensor_typed(b, "y", 1, 4, (const int32_t[]){1, 1, 1, 2}, NULL);
  tb_quantize(b, yt, 0, 1, (const float[]){1.0f}, (const int32_t[]){3});
  tb_op(b, TETHER_OP_CONV_2D, act, "conv", 3, (const uint32_t[]){xt, wt, bt}, yt);
  tb_graph_io(b, 1, &xt, 1, &yt);
  int8_t y[2] = {0, 0};
  const void* in[1] = {x};
  const size_t bytes[1] = {1};
  if (run_model(b, in, bytes, 1, y, 2, what)) {
    TB_CHECK(y[0] == want[0] && y[1] == want[1], "%s: got [%d, %d], want [%d, %d]", what, y[0],
             y[1], want[0], want[1]);
  }
  free(b);
}

/* ---- random int8 convolutions against an int64 re-implementation -------------------- */

static int32_t ref_requantize(int64_t acc, double real, int single) {
  /* Independent of quantization.c: the same TFLite steps in 64-bit arithmetic; single:
   * FULLY_CONNECTED's one rounding, (acc * m + 2^(30 - exponent)) >> (31 - exponent). */
  int exponent;
  const double q = frexp(real, &exponent);
  int64_t m = (int64_t)round(q * 2147483648.0);
  if (m == 2147483648ll) {
    m /= 2;
    exponent++;
  }
  if (exponent < -31) return 0;
  if (single) {
    const int total = 31 - exponent;
    return (int32_t)(((int64_t)(int32_t)acc * m + ((int64_t)1 << (total - 1))) >> total);
  }
  const int left = exponent > 0 ? exponent : 0, right = exponent > 0 ? 0 : -exponent;
  const int64_t x = acc * ((int64_t)1 << left);
  int64_t high;
  if (x == INT32_MIN && m == INT32_MIN) {
    high = INT32_MAX;
  } else {
    const int64_t ab = x * m;
    const int64_t nudge = ab >= 0 ? (1ll << 30) : (1 - (1ll << 30));
    high = (ab + nudge) / (1ll << 31);
  }
  if (right == 0) return (int32_t)high;
  const int64_t mask = (1ll << right) - 1, rem = high & mask;
  const int64_t threshold = (mask >> 1) + (high < 0 ? 1 : 0);
  return (int32_t)((high >> right) + (rem > threshold ? 1 : 0));
}

static void test_random_convs(void) {
  for (int t = 0; t < 60; t++) {
    const int kind = t % 3;  /* 0 conv, 1 depthwise, 2 fully connected */
    const int n = 1, h = tb_range(1, 9), w = tb_range(1, 9), c = tb_range(1, 6);
    const int kh = kind == 2 ? 1 : tb_range(1, 3), kw = kind == 2 ? 1 : tb_range(1, 3);
    const int s = kind == 2 ? 1 : tb_range(1, 2), pad = kind == 2 ? 0 : tb_range(0, 1);
    const int mult = kind == 1 ? tb_range(1, 2) : 1;
    const int oc = kind == 1 ? c * mult : tb_range(1, 7);
    const int oh = kind == 2 ? h : (h + 2 * pad - kh) / s + 1;
    const int ow = kind == 2 ? w : (w + 2 * pad - kw) / s + 1;
    if (h + 2 * pad < kh || w + 2 * pad < kw) continue;
    const int per_channel = tb_range(0, 1), has_bias = tb_range(0, 1);
    const uint32_t act = (uint32_t)tb_range(0, 3);
    const float sx = tb_uniform(0.005f, 0.05f), sy = tb_uniform(0.01f, 0.2f);
    const int32_t zx = tb_range(-20, 20), zy = tb_range(-20, 20);
    const int wn = kind == 2 ? oc * c : kind == 1 ? kh * kw * oc : oc * kh * kw * c;
    int8_t* wd = (int8_t*)malloc((size_t)wn);
    for (int i = 0; i < wn; i++) wd[i] = (int8_t)tb_range(-127, 127);
    float ws[64];
    for (int i = 0; i < oc; i++) ws[i] = per_channel ? tb_uniform(0.001f, 0.02f) : 0.01f;
    int32_t bias[64];
    for (int i = 0; i < oc; i++) bias[i] = tb_range(-3000, 3000);
    const size_t nx = (size_t)n * h * w * c, ny = (size_t)n * oh * ow * oc;
    int8_t* x = (int8_t*)malloc(nx);
    for (size_t i = 0; i < nx; i++) x[i] = (int8_t)tb_range(-128, 127);
    tb_builder* b = tb_new();
    uint32_t xt = tb_tensor_typed(b, "x", 1, 4, (const int32_t[]){n, h, w, c}, NULL);
    tb_quantize(b, xt, 0, 1, &sx, &zx);
    uint32_t wt = kind == 2 ? tb_tensor_typed(b, "w", 1, 2, (const int32_t[]){oc, c}, wd)
                  : kind == 1 ? tb_tensor_typed(b, "w", 1, 4, (const int32_t[]){1, kh, kw, oc}, wd)
                              : tb_tensor_typed(b, "w", 1, 4, (const int32_t[]){oc, kh, kw, c}, wd);
    tb_quantize(b, wt, kind == 1 && per_channel ? 3 : 0, per_channel ? (uint32_t)oc : 1, ws, NULL);
    uint32_t bt = tb_tensor_typed(b, "b", 3, 1, (const int32_t[]){oc}, bias);
    uint32_t yt = tb_tensor_typed(b, "y", 1, 4, (const int32_t[]){n, oh, ow, oc}, NULL);
    tb_quantize(b, yt, 0, 1, &sy, &zy);
    const uint32_t type = kind == 0 ? TETHER_OP_CONV_2D : kind == 1 ? TETHER_OP_DEPTHWISE_CONV_2D
                                                                    : TETHER_OP_FULLY_CONNECTED;
    tb_op(b, type, act, "op", has_bias ? 3 : 2, (const uint32_t[]){xt, wt, bt}, yt);
    if (kind != 2) {
      tb_attr_i(b, 1, 2, (const int32_t[]){s, s});
      tb_attr_i(b, 3, 4, (const int32_t[]){pad, pad, pad, pad});
      if (kind == 1) tb_attr_i(b, 5, 1, &mult);
    }
    tb_graph_io(b, 1, &xt, 1, &yt);
    int8_t* got = (int8_t*)malloc(ny);
    char what[128];
    snprintf(what, sizeof(what), "int8 %s h%d w%d c%d oc%d k%dx%d s%d p%d pc%d bias%d act%u",
             kind == 0 ? "conv" : kind == 1 ? "dwconv" : "fc", h, w, c, oc, kh, kw, s, pad,
             per_channel, has_bias, act);
    const void* in[1] = {x};
    const size_t bytes[1] = {nx};
    if (run_model(b, in, bytes, 1, got, ny, what)) {
      int32_t lo = -128, hi = 127;
      if (act != 0) lo = zy > -128 ? zy : -128;
      if (act == 2) hi = zy + (int32_t)roundf(6.0f / sy) < 127 ? zy + (int32_t)roundf(6.0f / sy) : 127;
      if (act == 3) {
        lo = zy + (int32_t)roundf(-1.0f / sy) > -128 ? zy + (int32_t)roundf(-1.0f / sy) : -128;
        hi = zy + (int32_t)roundf(1.0f / sy) < 127 ? zy + (int32_t)roundf(1.0f / sy) : 127;
      }
      for (int i = 0; i < oh; i++)
        for (int j = 0; j < ow; j++)
          for (int o = 0; o < oc; o++) {
            int64_t acc = has_bias ? bias[o] : 0;
            if (kind == 2) {
              for (int k = 0; k < c; k++) acc += (int64_t)wd[o * c + k] * (x[(i * w + j) * c + k] - zx);
            } else {
              for (int a = 0; a < kh; a++)
                for (int d = 0; d < kw; d++) {
                  const int r = i * s + a - pad, q = j * s + d - pad;
                  if (r < 0 || r >= h || q < 0 || q >= w) continue;
                  if (kind == 1) {
                    acc += (int64_t)wd[(a * kw + d) * oc + o] * (x[(r * w + q) * c + o / mult] - zx);
                  } else {
                    for (int k = 0; k < c; k++)
                      acc += (int64_t)wd[((o * kh + a) * kw + d) * c + k] * (x[(r * w + q) * c + k] - zx);
                  }
                }
            }
            const double real = (double)sx * (double)ws[per_channel ? o : 0] / (double)sy;
            int32_t v = ref_requantize(acc, real, kind == 2) + zy;
            v = v < lo ? lo : v > hi ? hi : v;
            const int8_t g = got[(i * ow + j) * oc + o];
            if (g != v) {
              TB_CHECK(0, "%s: y[%d,%d,%d] = %d, want %d", what, i, j, o, g, v);
              i = oh;
              j = ow;
              break;
            }
          }
    }
    free(got);
    free(b);
    free(x);
    free(wd);
  }
}

/* int8 ADD with broadcasting ([2,3,4] + [4]) against the int64 re-implementation of
 * TFLite's int8 Add (left shift 20) and, loosely, against float arithmetic. */
static void test_add(uint32_t act) {
  const float sa = 0.1f, sb = 0.05f, sy = 0.2f;
  const int32_t za = 2, zb = -3, zy = 1;
  int8_t a[24], bq[4], y[24];
  for (int i = 0; i < 24; i++) a[i] = (int8_t)tb_range(-128, 127);
  for (int i = 0; i < 4; i++) bq[i] = (int8_t)tb_range(-128, 127);
  tb_builder* b = tb_new();
  uint32_t at = tb_tensor_typed(b, "a", 1, 3, (const int32_t[]){2, 3, 4}, NULL);
  tb_quantize(b, at, 0, 1, &sa, &za);
  uint32_t bt = tb_tensor_typed(b, "b", 1, 1, (const int32_t[]){4}, bq);
  tb_quantize(b, bt, 0, 1, &sb, &zb);
  uint32_t yt = tb_tensor_typed(b, "y", 1, 3, (const int32_t[]){2, 3, 4}, NULL);
  tb_quantize(b, yt, 0, 1, &sy, &zy);
  tb_op(b, TETHER_OP_ADD, act, "add", 2, (const uint32_t[]){at, bt}, yt);
  tb_graph_io(b, 1, &at, 1, &yt);
  const void* in[1] = {a};
  const size_t bytes[1] = {24};
  if (run_model(b, in, bytes, 1, y, 24, "int8 add")) {
    const double twice = (double)(2.0f * (sa > sb ? sa : sb));
    const double r1 = (double)sa / twice, r2 = (double)sb / twice;
    const double ro = twice / (double)((float)(1 << 20) * sy);
    for (int i = 0; i < 24; i++) {
      const int64_t s1 = ref_requantize((int64_t)(a[i] - za) * (1 << 20), r1, 0);
      const int64_t s2 = ref_requantize((int64_t)(bq[i % 4] - zb) * (1 << 20), r2, 0);
      int32_t v = ref_requantize(s1 + s2, ro, 0) + zy;
      const int32_t lo = act == TETHER_ACT_RELU ? zy : -128;
      v = v < lo ? lo : v > 127 ? 127 : v;
      TB_CHECK(y[i] == v, "int8 add act%u: y[%d] = %d, want %d", act, i, y[i], v);
      const double real = sa * (a[i] - za) + sb * (bq[i % 4] - zb);
      const double clamped = act == TETHER_ACT_RELU && real < 0 ? 0 : real;
      const double lim_lo = sy * (-128 - zy), lim_hi = sy * (127 - zy);
      const double want = clamped < lim_lo ? lim_lo : clamped > lim_hi ? lim_hi : clamped;
      TB_CHECK(fabs(sy * (y[i] - zy) - want) <= sy + 1e-6, "int8 add act%u: y[%d] = %g "
               "dequantized, float sum %g", act, i, sy * (y[i] - zy), want);
    }
  }
  free(b);
}

/* int8 MUL and SUB with broadcasting ([2,3,4] op [4]) against the int64 re-implementation of
 * TFLite's int8 Mul (M = s_a s_b / s_y) and Sub (Add's scheme, input 2 negated), and loosely
 * against float arithmetic. */
static void test_mul_sub(uint32_t type) {
  const float sa = 0.1f, sb = 0.05f, sy = type == TETHER_OP_MUL ? 0.3f : 0.2f;
  const int32_t za = 2, zb = -3, zy = 1;
  int8_t a[24], bq[4], y[24];
  for (int i = 0; i < 24; i++) a[i] = (int8_t)tb_range(-128, 127);
  for (int i = 0; i < 4; i++) bq[i] = (int8_t)tb_range(-128, 127);
  tb_builder* b = tb_new();
  uint32_t at = tb_tensor_typed(b, "a", 1, 3, (const int32_t[]){2, 3, 4}, NULL);
  tb_quantize(b, at, 0, 1, &sa, &za);
  uint32_t bt = tb_tensor_typed(b, "b", 1, 1, (const int32_t[]){4}, bq);
  tb_quantize(b, bt, 0, 1, &sb, &zb);
  uint32_t yt = tb_tensor_typed(b, "y", 1, 3, (const int32_t[]){2, 3, 4}, NULL);
  tb_quantize(b, yt, 0, 1, &sy, &zy);
  const char* what = type == TETHER_OP_MUL ? "int8 mul" : "int8 sub";
  tb_op(b, type, TETHER_ACT_NONE, what, 2, (const uint32_t[]){at, bt}, yt);
  tb_graph_io(b, 1, &at, 1, &yt);
  const void* in[1] = {a};
  const size_t bytes[1] = {24};
  if (run_model(b, in, bytes, 1, y, 24, what)) {
    for (int i = 0; i < 24; i++) {
      int32_t v;
      double real;
      if (type == TETHER_OP_MUL) {
        v = ref_requantize((int64_t)(a[i] - za) * (bq[i % 4] - zb),
                           (double)sa * (double)sb / (double)sy, 0) + zy;
        real = (double)sa * (a[i] - za) * (double)sb * (bq[i % 4] - zb);
      } else {
        const double twice = (double)(2.0f * (sa > sb ? sa : sb));
        const int64_t s1 = ref_requantize((int64_t)(a[i] - za) * (1 << 20), (double)sa / twice, 0);
        const int64_t s2 = ref_requantize((int64_t)(bq[i % 4] - zb) * (1 << 20),
                                          -(double)sb / twice, 0);
        v = ref_requantize(s1 + s2, twice / (double)((float)(1 << 20) * sy), 0) + zy;
        real = (double)sa * (a[i] - za) - (double)sb * (bq[i % 4] - zb);
      }
      v = v < -128 ? -128 : v > 127 ? 127 : v;
      TB_CHECK(y[i] == v, "%s: y[%d] = %d, want %d", what, i, y[i], v);
      const double lim_lo = sy * (-128 - zy), lim_hi = sy * (127 - zy);
      const double want = real < lim_lo ? lim_lo : real > lim_hi ? lim_hi : real;
      TB_CHECK(fabs(sy * (y[i] - zy) - want) <= sy + 1e-6, "%s: y[%d] = %g dequantized, "
               "float %g", what, i, sy * (y[i] - zy), want);
    }
  }
  free(b);
}

/* int8 MEAN over H, W: q = [1, 2, 3, 4] (s 1, z 0) -> s_y 1, z_y 0: (M, shift) = (2^30, 1),
 * k = 2, M' = 2^30, shift' = -1: MBQM(10) = round_half_away(2.5) = 3. With z_x = -1, s_y = 0.5,
 * z_y = 5: sum - z_x*4 = 14, real 2 * 14 / 4 = 7 -> 12. */
static void test_mean(int32_t zx, float sy, int32_t zy, int8_t want) {
  const float sx = 1.0f;
  const int8_t x[4] = {1, 2, 3, 4};
  tb_builder* b = tb_new();
  uint32_t xt = tb_tensor_typed(b, "x", 1, 4, (const int32_t[]){1, 2, 2, 1}, NULL);
  tb_quantize(b, xt, 0, 1, &sx, &zx);
  uint32_t yt = tb_tensor_typed(b, "y", 1, 2, (const int32_t[]){1, 1}, NULL);
  tb_quantize(b, yt, 0, 1, &sy, &zy);
  tb_op(b, TETHER_OP_MEAN, 0, "mean", 1, &xt, yt);
  tb_attr_i(b, 8, 2, (const int32_t[]){1, 2});
  tb_graph_io(b, 1, &xt, 1, &yt);
  int8_t y = 0;
  const void* in[1] = {x};
  const size_t bytes[1] = {4};
  if (run_model(b, in, bytes, 1, &y, 1, "int8 mean")) {
    TB_CHECK(y == want, "int8 mean (z_x %d, s_y %g, z_y %d): got %d, want %d", zx, (double)sy, zy,
             y, want);
  }
  free(b);
}

static void test_quantize_ops(void) {
  /* float -> int8 (s 0.5, z 1), then back. */
  const float x[6] = {0.26f, -0.25f, 100.0f, -100.0f, 0.75f, 0.0f};
  const int8_t want_q[6] = {2, 0, 127, -128, 3, 1};
  tb_builder* b = tb_new();
  uint32_t xt = tb_tensor(b, "x", 1, (const int32_t[]){6}, NULL);
  uint32_t qt = tb_tensor_typed(b, "q", 1, 1, (const int32_t[]){6}, NULL);
  tb_quantize(b, qt, 0, 1, (const float[]){0.5f}, (const int32_t[]){1});
  tb_op(b, TETHER_OP_QUANTIZE, 0, "quantize", 1, &xt, qt);
  tb_graph_io(b, 1, &xt, 1, &qt);
  int8_t q[6];
  const void* in[1] = {x};
  size_t bytes[1] = {sizeof(x)};
  if (run_model(b, in, bytes, 1, q, 6, "quantize")) {
    TB_CHECK(memcmp(q, want_q, 6) == 0, "quantize: got %d %d %d %d %d %d", q[0], q[1], q[2], q[3],
             q[4], q[5]);
  }
  free(b);
  /* int8 -> float */
  b = tb_new();
  qt = tb_tensor_typed(b, "q", 1, 1, (const int32_t[]){6}, NULL);
  tb_quantize(b, qt, 0, 1, (const float[]){0.5f}, (const int32_t[]){1});
  uint32_t yt = tb_tensor(b, "y", 1, (const int32_t[]){6}, NULL);
  tb_op(b, TETHER_OP_DEQUANTIZE, 0, "dequantize", 1, &qt, yt);
  tb_graph_io(b, 1, &qt, 1, &yt);
  float y[6];
  const float want_y[6] = {0.5f, -0.5f, 63.0f, -64.5f, 1.0f, 0.0f};
  in[0] = want_q;
  bytes[0] = 6;
  if (run_model(b, in, bytes, 1, y, sizeof(y), "dequantize")) {
    TB_CHECK(memcmp(y, want_y, sizeof(y)) == 0, "dequantize: got %g %g %g", (double)y[0],
             (double)y[1], (double)y[2]);
  }
  free(b);
  /* int8 -> int8 requantize: (q - 1) * 0.5 / 0.25 + (-3) = 2q - 5. */
  b = tb_new();
  qt = tb_tensor_typed(b, "q", 1, 1, (const int32_t[]){6}, NULL);
  tb_quantize(b, qt, 0, 1, (const float[]){0.5f}, (const int32_t[]){1});
  uint32_t rt = tb_tensor_typed(b, "r", 1, 1, (const int32_t[]){6}, NULL);
  tb_quantize(b, rt, 0, 1, (const float[]){0.25f}, (const int32_t[]){-3});
  tb_op(b, TETHER_OP_QUANTIZE, 0, "requantize", 1, &qt, rt);
  tb_graph_io(b, 1, &qt, 1, &rt);
  int8_t r[6];
  const int8_t want_r[6] = {-1, -5, 127, -128, 1, -3};
  if (run_model(b, in, bytes, 1, r, 6, "requantize")) {
    TB_CHECK(memcmp(r, want_r, 6) == 0, "requantize: got %d %d %d %d %d %d", r[0], r[1], r[2],
             r[3], r[4], r[5]);
  }
  free(b);
}

static void test_float_ops(void) {
  const float a[6] = {1, -2, 3, -4, 5, -6}, bv[3] = {2, 4, -8};
  /* SUB and DIV with broadcasting of [3] over [2, 3]. */
  for (int op = 0; op < 2; op++) {
    tb_builder* b = tb_new();
    uint32_t at = tb_tensor(b, "a", 2, (const int32_t[]){2, 3}, NULL);
    uint32_t bt = tb_tensor(b, "b", 1, (const int32_t[]){3}, bv);
    uint32_t yt = tb_tensor(b, "y", 2, (const int32_t[]){2, 3}, NULL);
    tb_op(b, op == 0 ? TETHER_OP_SUB : TETHER_OP_DIV, 0, "op", 2, (const uint32_t[]){at, bt}, yt);
    tb_graph_io(b, 1, &at, 1, &yt);
    float y[6];
    const void* in[1] = {a};
    const size_t bytes[1] = {sizeof(a)};
    const float want_sub[6] = {-1, -6, 11, -6, 1, 2};
    const float want_div[6] = {0.5f, -0.5f, -0.375f, -2, 1.25f, 0.75f};
    if (run_model(b, in, bytes, 1, y, sizeof(y), op == 0 ? "sub" : "div")) {
      TB_CHECK(memcmp(y, op == 0 ? want_sub : want_div, sizeof(y)) == 0, "%s: got %g %g %g %g %g %g",
               op == 0 ? "sub" : "div", (double)y[0], (double)y[1], (double)y[2], (double)y[3],
               (double)y[4], (double)y[5]);
    }
    free(b);
  }
  {  /* TRANSPOSE [2, 3] -> [3, 2] */
    tb_builder* b = tb_new();
    uint32_t at = tb_tensor(b, "a", 2, (const int32_t[]){2, 3}, NULL);
    uint32_t yt = tb_tensor(b, "y", 2, (const int32_t[]){3, 2}, NULL);
    tb_op(b, TETHER_OP_TRANSPOSE, 0, "t", 1, &at, yt);
    tb_attr_i(b, 14, 2, (const int32_t[]){1, 0});
    tb_graph_io(b, 1, &at, 1, &yt);
    float y[6];
    const float want[6] = {1, -4, -2, 5, 3, -6};
    const void* in[1] = {a};
    const size_t bytes[1] = {sizeof(a)};
    if (run_model(b, in, bytes, 1, y, sizeof(y), "transpose")) {
      TB_CHECK(memcmp(y, want, sizeof(y)) == 0, "transpose: got %g %g %g", (double)y[0],
               (double)y[1], (double)y[2]);
    }
    free(b);
  }
  {  /* TRANSPOSE rank 4, NHWC -> NCHW, against index arithmetic */
    float x4[2 * 3 * 4 * 5], y4[2 * 3 * 4 * 5];
    for (int i = 0; i < 120; i++) x4[i] = (float)i;
    tb_builder* b = tb_new();
    uint32_t at = tb_tensor(b, "a", 4, (const int32_t[]){2, 3, 4, 5}, NULL);
    uint32_t yt = tb_tensor(b, "y", 4, (const int32_t[]){2, 5, 3, 4}, NULL);
    tb_op(b, TETHER_OP_TRANSPOSE, 0, "t", 1, &at, yt);
    tb_attr_i(b, 14, 4, (const int32_t[]){0, 3, 1, 2});
    tb_graph_io(b, 1, &at, 1, &yt);
    const void* in[1] = {x4};
    const size_t bytes[1] = {sizeof(x4)};
    if (run_model(b, in, bytes, 1, y4, sizeof(y4), "transpose4")) {
      int bad = 0;
      for (int n = 0; n < 2; n++)
        for (int c = 0; c < 5; c++)
          for (int h = 0; h < 3; h++)
            for (int w = 0; w < 4; w++)
              bad += y4[((n * 5 + c) * 3 + h) * 4 + w] != x4[((n * 3 + h) * 4 + w) * 5 + c];
      TB_CHECK(bad == 0, "transpose4: %d elements wrong", bad);
    }
    free(b);
  }
  for (int op = 0; op < 2; op++) {  /* CLAMP [-1.5, 2.5]; HARD_SIGMOID 0.2 x + 0.5 */
    tb_builder* b = tb_new();
    uint32_t at = tb_tensor(b, "a", 2, (const int32_t[]){2, 3}, NULL);
    uint32_t yt = tb_tensor(b, "y", 2, (const int32_t[]){2, 3}, NULL);
    tb_op(b, op == 0 ? TETHER_OP_CLAMP : TETHER_OP_HARD_SIGMOID, 0, "act", 1, &at, yt);
    tb_attr_f(b, op == 0 ? 15 : 17, op == 0 ? -1.5f : 0.25f);
    tb_attr_f(b, op == 0 ? 16 : 18, op == 0 ? 2.5f : 0.5f);
    tb_graph_io(b, 1, &at, 1, &yt);
    float y[6];
    const float want_clamp[6] = {1, -1.5f, 2.5f, -1.5f, 2.5f, -1.5f};
    const float want_hs[6] = {0.75f, 0.0f, 1.0f, 0.0f, 1.0f, 0.0f};
    const void* in[1] = {a};
    const size_t bytes[1] = {sizeof(a)};
    if (run_model(b, in, bytes, 1, y, sizeof(y), op == 0 ? "clamp" : "hard_sigmoid")) {
      TB_CHECK(memcmp(y, op == 0 ? want_clamp : want_hs, sizeof(y)) == 0,
               "%s: got %g %g %g %g", op == 0 ? "clamp" : "hard_sigmoid", (double)y[0],
               (double)y[1], (double)y[2], (double)y[3]);
    }
    free(b);
  }
}

/* Fuzzer finding (tests/fuzz/regressions/ubsan-shift-huge-requant-scale.tmodel): scales whose
 * requantization needs a left shift above 30 made MultiplyByQuantizedMultiplier shift by
 * more than 31 (undefined). Such models are now rejected at load. */
static void test_huge_scale_rejected(void) {
  const int8_t x[1] = {3}, w[1] = {1};
  tb_builder* b = tb_new();
  uint32_t xt = tb_tensor_typed(b, "x", 1, 4, (const int32_t[]){1, 1, 1, 1}, NULL);
  tb_quantize(b, xt, 0, 1, (const float[]){1e30f}, (const int32_t[]){0});
  uint32_t wt = tb_tensor_typed(b, "w", 1, 4, (const int32_t[]){1, 1, 1, 1}, w);
  tb_quantize(b, wt, 0, 1, (const float[]){1.0f}, NULL);
  uint32_t yt = tb_tensor_typed(b, "y", 1, 4, (const int32_t[]){1, 1, 1, 1}, NULL);
  tb_quantize(b, yt, 0, 1, (const float[]){1e-6f}, (const int32_t[]){0});
  tb_op(b, TETHER_OP_CONV_2D, 0, "conv", 2, (const uint32_t[]){xt, wt}, yt);
  tb_graph_io(b, 1, &xt, 1, &yt);
  size_t size = 0;
  uint8_t* file = tb_finish(b, &size);
  tether_model_t model = NULL;
  const tether_status s = tether_model_load(file, size, NULL, &model);
  TB_CHECK(s == TETHER_STATUS_FORMAT_ERROR && strstr(tether_last_error(), "requantization") != NULL,
           "huge requantization scale: status %d, '%s'", (int)s, tether_last_error());
  tether_model_destroy(model);
  /* tether_model_memory runs the same int8 checks (without packing) and fails alike. */
  char why[768];
  TB_CHECK(tm_compare(file, size, why, sizeof(why)) == 0, "huge requantization scale: %s", why);
  free(file);
  free(b);
  (void)x;
}

/* Fuzzer finding (tests/fuzz/regressions/ubsan-relu6-tiny-output-scale.tmodel): RELU6 on an
 * int8 output with a tiny scale made round(6 / s) overflow the int conversion (undefined).
 * The bound now saturates: the clamp is [z_y, 127]. */
static void test_relu6_tiny_scale(void) {
  const int8_t x[1] = {100}, w[1] = {100};
  tb_builder* b = tb_new();
  uint32_t xt = tb_tensor_typed(b, "x", 1, 4, (const int32_t[]){1, 1, 1, 1}, NULL);
  tb_quantize(b, xt, 0, 1, (const float[]){1e-30f}, (const int32_t[]){0});
  uint32_t wt = tb_tensor_typed(b, "w", 1, 4, (const int32_t[]){1, 1, 1, 1}, w);
  tb_quantize(b, wt, 0, 1, (const float[]){1.0f}, NULL);
  uint32_t yt = tb_tensor_typed(b, "y", 1, 4, (const int32_t[]){1, 1, 1, 1}, NULL);
  tb_quantize(b, yt, 0, 1, (const float[]){1e-30f}, (const int32_t[]){-5});
  tb_op(b, TETHER_OP_CONV_2D, TETHER_ACT_RELU6, "conv", 2, (const uint32_t[]){xt, wt}, yt);
  tb_graph_io(b, 1, &xt, 1, &yt);
  int8_t y = 0;
  const void* in[1] = {x};
  const size_t bytes[1] = {1};
  /* 100 * 100 * (1e-30 * 1 / 1e-30) = 10000 -> saturates at 127. */
  if (run_model(b, in, bytes, 1, &y, 1, "relu6 tiny scale")) {
    TB_CHECK(y == 127, "relu6 tiny scale: got %d, want 127", y);
  }
  free(b);
}

/* ---- int8 pools, CONCATENATION, PAD and elementwise ops (ops/quantized_ops.c) ---------- */

/* One int8 op y = op(x) on [1, H, W, C] tensors (s, z) -> (sy, zy); returns load status.
 * attrs: the pools' kernel, strides, pads (and count_include_pad), PAD's paddings, GELU's
 * approximate, or LEAKY_RELU's / ELU's alpha in hundredths. */
static tether_status run_q8_unary(uint32_t type, uint32_t act, const int32_t* xshape,
                                  const int32_t* yshape, float sx, int32_t zx, float sy,
                                  int32_t zy, const int8_t* x, int8_t* y, const int32_t* attrs,
                                  const char* what) {
  tb_builder* b = tb_new();
  uint32_t xt = tb_tensor_typed(b, "x", 1, 4, xshape, NULL);
  tb_quantize(b, xt, 0, 1, &sx, &zx);
  uint32_t yt = tb_tensor_typed(b, "y", 1, 4, yshape, NULL);
  tb_quantize(b, yt, 0, 1, &sy, &zy);
  tb_op(b, type, act, "op", 1, &xt, yt);
  if (type == TETHER_OP_MAX_POOL_2D || type == TETHER_OP_AVERAGE_POOL_2D) {
    tb_attr_i(b, 6, 2, attrs);         /* kernel */
    tb_attr_i(b, 1, 2, attrs + 2);     /* strides */
    tb_attr_i(b, 3, 4, attrs + 4);     /* pads */
    if (type == TETHER_OP_AVERAGE_POOL_2D) tb_attr_i(b, 7, 1, attrs + 8);
  } else if (type == TETHER_OP_PAD) {
    tb_attr_i(b, 11, 8, attrs);
  } else if (type == TETHER_OP_GELU) {
    tb_attr_i(b, 28, 1, attrs);                        /* approximate */
  } else if (type == TETHER_OP_LEAKY_RELU || type == TETHER_OP_ELU) {
    tb_attr_f(b, 17, (float)attrs[0] / 100.0f);        /* alpha, given in hundredths */
  }
  tb_graph_io(b, 1, &xt, 1, &yt);
  size_t size = 0;
  uint8_t* file = tb_finish(b, &size);
  free(b);
  tether_model_t model = NULL;
  const tether_status s = tether_model_load(file, size, NULL, &model);
  if (s == TETHER_STATUS_SUCCESS) {
    tether_session_t session = NULL;
    const size_t nx = (size_t)xshape[0] * xshape[1] * xshape[2] * xshape[3];
    const size_t ny = (size_t)yshape[0] * yshape[1] * yshape[2] * yshape[3];
    TB_CHECK(tether_session_create(model, NULL, 0, 1, &session) == TETHER_STATUS_SUCCESS &&
                 tether_session_set_input(session, 0, x, nx) == TETHER_STATUS_SUCCESS &&
                 tether_session_invoke(session) == TETHER_STATUS_SUCCESS &&
                 tether_session_get_output(session, 0, y, ny) == TETHER_STATUS_SUCCESS,
             "%s: run: %s", what, tether_last_error());
    tether_session_destroy(session);
  }
  tether_model_destroy(model);
  free(file);
  return s;
}

static void expect_q8(const char* what, const int8_t* got, const int8_t* want, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (got[i] != want[i]) {
      TB_CHECK(0, "%s: y[%zu] = %d, want %d", what, i, got[i], want[i]);
      return;
    }
  }
}

static void test_q8_pools(void) {
  /* AVERAGE_POOL_2D 1x2 windows, stride 2: TFLite rounds (sum +- count/2) / count toward
   * zero, i.e. halves away from zero: (3+0)/2 = 1.5 -> 2, (-3+0)/2 -> -2, (5+6)/2 = 5.5 -> 6,
   * (-7-6)/2 = -6.5 -> -7, (1+2)/2 -> 2, (4+5)/2 -> 5 (clamped to 4 by RELU6: z 1 + 6/2). */
  const int8_t x[12] = {3, 0, -3, 0, 5, 6, -7, -6, 1, 2, 4, 5};
  int8_t y[6];
  const int32_t avg_attrs[9] = {1, 2, 1, 2, 0, 0, 0, 0, 0};
  if (run_q8_unary(TETHER_OP_AVERAGE_POOL_2D, 0, (const int32_t[]){1, 1, 12, 1},
                   (const int32_t[]){1, 1, 6, 1}, 0.5f, 1, 0.5f, 1, x, y, avg_attrs,
                   "int8 avgpool") == TETHER_STATUS_SUCCESS) {
    expect_q8("int8 avgpool", y, (const int8_t[]){2, -2, 6, -7, 2, 5}, 6);
  }
  if (run_q8_unary(TETHER_OP_AVERAGE_POOL_2D, TETHER_ACT_RELU6, (const int32_t[]){1, 1, 12, 1},
                   (const int32_t[]){1, 1, 6, 1}, 2.0f, 1, 2.0f, 1, x, y, avg_attrs,
                   "int8 avgpool relu6") == TETHER_STATUS_SUCCESS) {
    expect_q8("int8 avgpool relu6", y, (const int8_t[]){2, 1, 4, 1, 2, 4}, 6);
  }
  /* count_include_pad: window [pad, 5] holds z (= -1) for the pad: (-1 + 5) / 2 = 2; without
   * it each window's single real cell is its average (5, 9). */
  const int8_t x1[2] = {5, 9};
  int32_t pad_attrs[9] = {1, 2, 1, 2, 0, 1, 0, 1, 1};
  if (run_q8_unary(TETHER_OP_AVERAGE_POOL_2D, 0, (const int32_t[]){1, 1, 2, 1},
                   (const int32_t[]){1, 1, 2, 1}, 0.1f, -1, 0.1f, -1, x1, y, pad_attrs,
                   "int8 avgpool count_include_pad") == TETHER_STATUS_SUCCESS) {
    expect_q8("int8 avgpool count_include_pad", y, (const int8_t[]){2, 4}, 2);
  }
  pad_attrs[8] = 0;
  if (run_q8_unary(TETHER_OP_AVERAGE_POOL_2D, 0, (const int32_t[]){1, 1, 2, 1},
                   (const int32_t[]){1, 1, 2, 1}, 0.1f, -1, 0.1f, -1, x1, y, pad_attrs,
                   "int8 avgpool pads") == TETHER_STATUS_SUCCESS) {
    expect_q8("int8 avgpool pads", y, (const int8_t[]){5, 9}, 2);
  }
  /* MAX_POOL_2D 2x2 stride 2 over [1, 2, 4, 2] (two channels), pads never win: the padded
   * right column of a 3-wide input is ignored even where every real value is -128. */
  const int8_t xm[18] = {-128, 1, -128, 2, -128, 3, -128, 4, -128, 5, -128, 6,
                         -128, 7, -128, 8, -128, -9};
  const int32_t max_attrs[8] = {2, 2, 2, 2, 0, 0, 1, 1};
  int8_t ym[8];
  if (run_q8_unary(TETHER_OP_MAX_POOL_2D, 0, (const int32_t[]){1, 3, 3, 2},
                   (const int32_t[]){1, 2, 2, 2}, 0.5f, 0, 0.5f, 0, xm, ym, max_attrs,
                   "int8 maxpool") == TETHER_STATUS_SUCCESS) {
    expect_q8("int8 maxpool", ym, (const int8_t[]){-128, 5, -128, 6, -128, 8, -128, -9}, 8);
  }
  /* Output quantized differently from the input: rejected at load, naming both tensors. */
  const tether_status s = run_q8_unary(TETHER_OP_MAX_POOL_2D, 0, (const int32_t[]){1, 3, 3, 2},
                                       (const int32_t[]){1, 2, 2, 2}, 0.5f, 0, 0.25f, 0, xm, ym,
                                       max_attrs, "int8 maxpool requantized");
  TB_CHECK(s == TETHER_STATUS_FORMAT_ERROR && strstr(tether_last_error(), "'y'") != NULL &&
               strstr(tether_last_error(), "MAX_POOL_2D") != NULL,
           "int8 maxpool with other output quantization: status %d, '%s'", (int)s,
           tether_last_error());
  /* A window of 2^24 cells could overflow the int32 sum (hostile file): rejected. */
  const int32_t huge_attrs[9] = {4096, 4096, 1, 1, 4095, 4095, 0, 0, 1};
  const tether_status s3 = run_q8_unary(TETHER_OP_AVERAGE_POOL_2D, 0, (const int32_t[]){1, 1, 1, 1},
                                        (const int32_t[]){1, 1, 1, 1}, 0.5f, 0, 0.5f, 0, xm, ym,
                                        huge_attrs, "int8 avgpool huge kernel");
  TB_CHECK(s3 == TETHER_STATUS_FORMAT_ERROR && strstr(tether_last_error(), "2^23") != NULL,
           "int8 avgpool 4096x4096: status %d, '%s'", (int)s3, tether_last_error());
  /* A fused HARD_SWISH cannot clamp in the quantized domain: rejected. */
  const tether_status s2 = run_q8_unary(TETHER_OP_MAX_POOL_2D, TETHER_ACT_HARD_SWISH,
                                        (const int32_t[]){1, 3, 3, 2},
                                        (const int32_t[]){1, 2, 2, 2}, 0.5f, 0, 0.5f, 0, xm, ym,
                                        max_attrs, "int8 maxpool hard swish");
  TB_CHECK(s2 == TETHER_STATUS_FORMAT_ERROR && strstr(tether_last_error(), "fused activation") != NULL,
           "int8 maxpool with fused hard swish: status %d, '%s'", (int)s2, tether_last_error());
}

static void test_q8_pad(void) {
  /* [1, 1, 2, 1] padded by (0,0), (1,0), (1,2), (0,0): cells outside hold z_x = -3. */
  const int8_t x[2] = {7, -8};
  int8_t y[10];
  const int32_t pads[8] = {0, 0, 1, 0, 1, 2, 0, 0};
  if (run_q8_unary(TETHER_OP_PAD, 0, (const int32_t[]){1, 1, 2, 1}, (const int32_t[]){1, 2, 5, 1},
                   0.1f, -3, 0.1f, -3, x, y, pads, "int8 pad") == TETHER_STATUS_SUCCESS) {
    expect_q8("int8 pad", y, (const int8_t[]){-3, -3, -3, -3, -3, -3, 7, -8, -3, -3}, 10);
  }
}

static void test_q8_concat(void) {
  /* x0 (s 0.5, z 0) and x1 (s 0.25, z 2) into y (s 0.5, z -1) along the last axis:
   * x0: 4 -> 4 - 1 = 3; x1: (7 - 2) * 0.25 / 0.5 = 2.5 -> 3 (half away) - 1 = 2,
   * (-2 - 2) * 0.5 = -2 - 1 = -3; x2 is quantized like y and copied as is. */
  const int8_t x0[2] = {4, -128}, x1[4] = {7, -2, 127, 2}, x2[2] = {9, -9};
  tb_builder* b = tb_new();
  uint32_t t0 = tb_tensor_typed(b, "x0", 1, 2, (const int32_t[]){2, 1}, NULL);
  tb_quantize(b, t0, 0, 1, (const float[]){0.5f}, (const int32_t[]){0});
  uint32_t t1 = tb_tensor_typed(b, "x1", 1, 2, (const int32_t[]){2, 2}, NULL);
  tb_quantize(b, t1, 0, 1, (const float[]){0.25f}, (const int32_t[]){2});
  uint32_t t2 = tb_tensor_typed(b, "x2", 1, 2, (const int32_t[]){2, 1}, x2);
  tb_quantize(b, t2, 0, 1, (const float[]){0.5f}, (const int32_t[]){-1});
  uint32_t yt = tb_tensor_typed(b, "y", 1, 2, (const int32_t[]){2, 4}, NULL);
  tb_quantize(b, yt, 0, 1, (const float[]){0.5f}, (const int32_t[]){-1});
  tb_op(b, TETHER_OP_CONCATENATION, 0, "concat", 3, (const uint32_t[]){t0, t1, t2}, yt);
  tb_attr_i(b, 10, 1, (const int32_t[]){1});
  tb_graph_io(b, 2, (const uint32_t[]){t0, t1}, 1, &yt);
  int8_t y[8];
  const void* in[2] = {x0, x1};
  const size_t bytes[2] = {2, 4};
  if (run_model(b, in, bytes, 2, y, 8, "int8 concat")) {
    /* row 0: x0[0], x1[0, :], x2[0]; row 1: x0[1] (-128 - 1 saturates), x1[1, :], x2[1] */
    expect_q8("int8 concat", y, (const int8_t[]){3, 2, -3, 9, -128, 62, -1, -9}, 8);
  }
  free(b);
}

static void test_q8_elementwise(void) {
  /* s_x 0.05, z_x -10; inputs -128, -70, -10, 20, 60, 127 are the reals -5.9, -3, 0, 1.5,
   * 3.5, 6.85. HARD_SWISH to (0.03, -100): TFLite's fixed-point recipe gives -62 for the
   * real -62.5 and 17 for 16.67 (values checked against LiteRT). LOGISTIC and TANH use the
   * float table: round(256 sigmoid(r)) - 128 and round(128 tanh(r)) clamped to 127. */
  const int8_t x[6] = {-128, -70, -10, 20, 60, 127};
  const int32_t shape[4] = {1, 1, 6, 1};
  int8_t y[6];
  if (run_q8_unary(TETHER_OP_HARD_SWISH, 0, shape, shape, 0.05f, -10, 0.03f, -100, x, y, NULL,
                   "int8 hard swish") == TETHER_STATUS_SUCCESS) {
    expect_q8("int8 hard swish", y, (const int8_t[]){-100, -100, -100, -62, 17, 127}, 6);
  }
  if (run_q8_unary(TETHER_OP_LOGISTIC, 0, shape, shape, 0.05f, -10, 1.0f / 256.0f, -128, x, y,
                   NULL, "int8 logistic") == TETHER_STATUS_SUCCESS) {
    expect_q8("int8 logistic", y, (const int8_t[]){-127, -116, 0, 81, 120, 127}, 6);
  }
  if (run_q8_unary(TETHER_OP_TANH, 0, shape, shape, 0.05f, -10, 1.0f / 128.0f, 0, x, y, NULL,
                   "int8 tanh") == TETHER_STATUS_SUCCESS) {
    expect_q8("int8 tanh", y, (const int8_t[]){-128, -127, 0, 116, 127, 127}, 6);
  }
  /* RELU6 to (0.1, -50): -50 + round((q + 10) * 0.5) clamped to [-50, -50 + 60]. */
  if (run_q8_unary(TETHER_OP_RELU6, 0, shape, shape, 0.05f, -10, 0.1f, -50, x, y, NULL,
                   "int8 relu6") == TETHER_STATUS_SUCCESS) {
    expect_q8("int8 relu6", y, (const int8_t[]){-50, -50, -50, -35, -15, 10}, 6);
  }
  /* The table path (>= 256 elements) gives the same integers as the direct one. */
  int8_t big[512], big_y[512];
  for (int i = 0; i < 512; i++) big[i] = (int8_t)(i * 37 % 256 - 128);
  const int32_t big_shape[4] = {1, 2, 256, 1};
  if (run_q8_unary(TETHER_OP_HARD_SWISH, 0, big_shape, big_shape, 0.05f, -10, 0.03f, -100, big,
                   big_y, NULL, "int8 hard swish table") == TETHER_STATUS_SUCCESS) {
    for (int i = 0; i < 6; i++) {
      for (int k = 0; k < 512; k++) {
        if (big[k] == x[i]) {
          const int8_t want[6] = {-100, -100, -100, -62, 17, 127};
          TB_CHECK(big_y[k] == want[i], "hard swish table: %d -> %d, want %d", x[i], big_y[k],
                   want[i]);
          break;
        }
      }
    }
  }
  /* LOGISTIC output must be (1/256, -128): other quantization is rejected by name. */
  const tether_status s = run_q8_unary(TETHER_OP_LOGISTIC, 0, shape, shape, 0.05f, -10,
                                       1.0f / 128.0f, 0, x, y, NULL, "int8 logistic bad");
  TB_CHECK(s == TETHER_STATUS_FORMAT_ERROR && strstr(tether_last_error(), "1/256") != NULL &&
               strstr(tether_last_error(), "'y'") != NULL,
           "int8 logistic with output (1/128, 0): status %d, '%s'", (int)s, tether_last_error());
  /* RELU with s_x / s_y = 2^24 would shift (q - z) past int32: rejected at load. */
  const tether_status s3 = run_q8_unary(TETHER_OP_RELU, 0, shape, shape, 16777216.0f, 0, 1.0f,
                                        0, x, y, NULL, "int8 relu huge ratio");
  TB_CHECK(s3 == TETHER_STATUS_FORMAT_ERROR && strstr(tether_last_error(), "2^23") != NULL,
           "int8 relu with s_x / s_y = 2^24: status %d, '%s'", (int)s3, tether_last_error());
  /* HARD_SWISH whose output scale is below s_x / 128 cannot be represented: rejected. */
  const tether_status s2 = run_q8_unary(TETHER_OP_HARD_SWISH, 0, shape, shape, 1.0f, 0, 1e-4f,
                                        0, x, y, NULL, "int8 hard swish bad");
  TB_CHECK(s2 == TETHER_STATUS_FORMAT_ERROR && strstr(tether_last_error(), "HARD_SWISH") != NULL,
           "int8 hard swish with tiny output scale: status %d, '%s'", (int)s2,
           tether_last_error());
}

/* LEAKY_RELU, ELU, GELU and PRELU on the inputs of test_q8_elementwise (reals -5.9, -3, 0,
 * 1.5, 3.5, 6.85), the expected integers from an independent emulation of TFLite's
 * arithmetic (float32 multipliers, QuantizeMultiplier, MBQM; LUTPopulate in float32), the
 * same integers LiteRT gives (tests/converter/test_int8_ops.py checks the engine there). */
static void test_q8_alpha_activations(void) {
  const int8_t x[6] = {-128, -70, -10, 20, 60, 127};
  const int32_t shape[4] = {1, 1, 6, 1};
  int8_t y[6];
  /* LEAKY_RELU 0.3 to (0.04, -60): -60 + MBQM(q + 10, 0.05 * 0.3 / 0.04) below z_x,
   * MBQM(q + 10, 1.25) from it; 1.7 to (0.1, 40) (alpha > 1 is TFLite's too). */
  if (run_q8_unary(TETHER_OP_LEAKY_RELU, 0, shape, shape, 0.05f, -10, 0.04f, -60, x, y,
                   (const int32_t[]){30}, "int8 leaky relu") == TETHER_STATUS_SUCCESS) {
    expect_q8("int8 leaky relu", y, (const int8_t[]){-105, -83, -60, -22, 28, 111}, 6);
  }
  if (run_q8_unary(TETHER_OP_LEAKY_RELU, 0, shape, shape, 0.05f, -10, 0.1f, 40, x, y,
                   (const int32_t[]){170}, "int8 leaky relu 1.7") == TETHER_STATUS_SUCCESS) {
    expect_q8("int8 leaky relu 1.7", y, (const int8_t[]){-60, -11, 40, 55, 75, 109}, 6);
  }
  /* A fused RELU clamps at z_y. */
  if (run_q8_unary(TETHER_OP_LEAKY_RELU, TETHER_ACT_RELU, shape, shape, 0.05f, -10, 0.04f, -60,
                   x, y, (const int32_t[]){30}, "int8 leaky relu + relu") ==
      TETHER_STATUS_SUCCESS) {
    expect_q8("int8 leaky relu + relu", y, (const int8_t[]){-60, -60, -60, -22, 28, 111}, 6);
  }
  /* ELU to (0.03, -95): the expm1f table. */
  if (run_q8_unary(TETHER_OP_ELU, 0, shape, shape, 0.05f, -10, 0.03f, -95, x, y,
                   (const int32_t[]){100}, "int8 elu") == TETHER_STATUS_SUCCESS) {
    expect_q8("int8 elu", y, (const int8_t[]){-128, -127, -95, -45, 22, 127}, 6);
  }
  /* GELU to (0.03, -110), the erfc and the tanh forms (equal on these inputs). */
  for (int32_t approximate = 0; approximate <= 1; approximate++) {
    if (run_q8_unary(TETHER_OP_GELU, 0, shape, shape, 0.05f, -10, 0.03f, -110, x, y,
                     &approximate, "int8 gelu") == TETHER_STATUS_SUCCESS) {
      expect_q8("int8 gelu", y, (const int8_t[]){-110, -110, -110, -63, 7, 118}, 6);
    }
  }
  /* The table path (>= 256 elements) agrees with the direct one. */
  int8_t big[512], big_y[512];
  for (int i = 0; i < 512; i++) big[i] = (int8_t)(i * 37 % 256 - 128);
  const int32_t big_shape[4] = {1, 2, 256, 1};
  if (run_q8_unary(TETHER_OP_ELU, 0, big_shape, big_shape, 0.05f, -10, 0.03f, -95, big, big_y,
                   (const int32_t[]){100}, "int8 elu table") == TETHER_STATUS_SUCCESS) {
    const int8_t want[6] = {-128, -127, -95, -45, 22, 127};
    for (int i = 0; i < 6; i++) {
      for (int k = 0; k < 512; k++) {
        if (big[k] == x[i]) {
          TB_CHECK(big_y[k] == want[i], "elu table: %d -> %d, want %d", x[i], big_y[k], want[i]);
          break;
        }
      }
    }
  }
  /* int8 ELU with alpha != 1 has no TFLite form: rejected naming the fix. */
  const tether_status s = run_q8_unary(TETHER_OP_ELU, 0, shape, shape, 0.05f, -10, 0.03f, -95,
                                       x, y, (const int32_t[]){50}, "int8 elu alpha 0.5");
  TB_CHECK(s == TETHER_STATUS_UNSUPPORTED_OP && strstr(tether_last_error(), "alpha 1") != NULL,
           "int8 elu alpha 0.5: status %d, '%s'", (int)s, tether_last_error());
  /* LEAKY_RELU whose alpha ratio s_x * alpha / s_y reaches 2^24: rejected at load. */
  const tether_status s2 = run_q8_unary(TETHER_OP_LEAKY_RELU, 0, shape, shape, 0.05f, -10,
                                        1e-9f, 0, x, y, (const int32_t[]){30},
                                        "int8 leaky relu huge ratio");
  TB_CHECK(s2 == TETHER_STATUS_FORMAT_ERROR && strstr(tether_last_error(), "2^23") != NULL,
           "int8 leaky relu huge ratio: status %d, '%s'", (int)s2, tether_last_error());

  /* PRELU: x [3, 2] (0.05, -10), slope [2] int8 {-40, 90} (0.01, 3) broadcast along rows,
   * y (0.05, -20): x >= z_x: MBQM(q + 10, 1) - 20; below: MBQM((q + 10)(a - 3), 0.01) - 20. */
  tb_builder* b = tb_new();
  const float sx = 0.05f, sa = 0.01f, sy = 0.05f;
  const int32_t zx = -10, za = 3, zy = -20;
  const int8_t slope[2] = {-40, 90};
  uint32_t xt = tb_tensor_typed(b, "x", 1, 2, (const int32_t[]){3, 2}, NULL);
  tb_quantize(b, xt, 0, 1, &sx, &zx);
  uint32_t at = tb_tensor_typed(b, "slope", 1, 1, (const int32_t[]){2}, slope);
  tb_quantize(b, at, 0, 1, &sa, &za);
  uint32_t yt = tb_tensor_typed(b, "y", 1, 2, (const int32_t[]){3, 2}, NULL);
  tb_quantize(b, yt, 0, 1, &sy, &zy);
  tb_op(b, TETHER_OP_PRELU, TETHER_ACT_NONE, "prelu", 2, (const uint32_t[]){xt, at}, yt);
  tb_graph_io(b, 1, &xt, 1, &yt);
  const void* in[1] = {x};
  const size_t bytes[1] = {6};
  if (run_model(b, in, bytes, 1, y, 6, "int8 prelu")) {
    expect_q8("int8 prelu", y, (const int8_t[]){31, -72, -20, 10, 50, 117}, 6);
  }
  free(b);
}

/* int8 MAXIMUM / MINIMUM (TFLite MaximumMinimumBroadcastSlow): the stored integers compared,
 * [2, 3] against a broadcast [3] (both computed) or a [1] constant, all quantized (0.1, -5);
 * a fused RELU clamps at z_y; inputs quantized unlike the output fail the load. */
static void test_q8_minmax(void) {
  const float s = 0.1f;
  const int32_t z = -5;
  const int8_t a[6] = {-128, -6, -5, 0, 100, 127};
  const int8_t bv[3] = {-7, 3, 127};
  const int8_t c1[1] = {-4};
  for (int k = 0; k < 6; k++) {
    const uint32_t type = k % 2 ? TETHER_OP_MINIMUM : TETHER_OP_MAXIMUM;
    const uint32_t act = k >= 4 ? TETHER_ACT_RELU : TETHER_ACT_NONE;
    const int constant = k == 2 || k == 3;
    tb_builder* b = tb_new();
    uint32_t at = tb_tensor_typed(b, "a", 1, 2, (const int32_t[]){2, 3}, NULL);
    tb_quantize(b, at, 0, 1, &s, &z);
    uint32_t bt = constant ? tb_tensor_typed(b, "b", 1, 1, (const int32_t[]){1}, c1)
                           : tb_tensor_typed(b, "b", 1, 1, (const int32_t[]){3}, NULL);
    tb_quantize(b, bt, 0, 1, &s, &z);
    uint32_t yt = tb_tensor_typed(b, "y", 1, 2, (const int32_t[]){2, 3}, NULL);
    tb_quantize(b, yt, 0, 1, &s, &z);
    tb_op(b, type, act, "minmax", 2, (const uint32_t[]){at, bt}, yt);
    const uint32_t ins[2] = {at, bt};
    tb_graph_io(b, constant ? 1 : 2, ins, 1, &yt);
    const void* in[2] = {a, bv};
    const size_t bytes[2] = {6, 3};
    int8_t y[6];
    char what[64];
    snprintf(what, sizeof(what), "int8 %s act%u%s", type == TETHER_OP_MAXIMUM ? "max" : "min",
             act, constant ? " const" : "");
    if (run_model(b, in, bytes, constant ? 1 : 2, y, 6, what)) {
      for (int i = 0; i < 6; i++) {
        const int32_t other = constant ? c1[0] : bv[i % 3];
        int32_t v = type == TETHER_OP_MAXIMUM ? (a[i] > other ? a[i] : other)
                                              : (a[i] < other ? a[i] : other);
        if (act == TETHER_ACT_RELU && v < z) v = z;
        TB_CHECK(y[i] == v, "%s: y[%d] = %d, want %d", what, i, y[i], v);
      }
    }
    free(b);
  }
  /* input 1 quantized (0.2, -5): refused, naming the fix */
  const float s2 = 0.2f;
  tb_builder* b = tb_new();
  uint32_t at = tb_tensor_typed(b, "a", 1, 1, (const int32_t[]){3}, NULL);
  tb_quantize(b, at, 0, 1, &s, &z);
  uint32_t bt = tb_tensor_typed(b, "b", 1, 1, (const int32_t[]){3}, NULL);
  tb_quantize(b, bt, 0, 1, &s2, &z);
  uint32_t yt = tb_tensor_typed(b, "y", 1, 1, (const int32_t[]){3}, NULL);
  tb_quantize(b, yt, 0, 1, &s, &z);
  tb_op(b, TETHER_OP_MAXIMUM, 0, "max", 2, (const uint32_t[]){at, bt}, yt);
  tb_graph_io(b, 2, (const uint32_t[]){at, bt}, 1, &yt);
  size_t size = 0;
  uint8_t* file = tb_finish(b, &size);
  tether_model_t model = NULL;
  const tether_status st = tether_model_load(file, size, NULL, &model);
  TB_CHECK(st == TETHER_STATUS_FORMAT_ERROR && strstr(tether_last_error(), "QUANTIZE") != NULL,
           "int8 max, unlike quantization: status %d, '%s'", (int)st, tether_last_error());
  tether_model_destroy(model);
  free(file);
  free(b);
}

/* An int8 op whose kernel does not apply fused activations itself (MEAN, SOFTMAX, QUANTIZE)
 * must not get one: the float epilogue would write 4-byte floats over the int8 output. */
static void test_q8_unfused_activation_rejected(void) {
  const int8_t x[4] = {1, 2, 3, 4};
  int8_t y = 0;
  const float sx = 1.0f, sy = 1.0f;
  const int32_t zx = 0, zy = 0;
  tb_builder* b = tb_new();
  uint32_t xt = tb_tensor_typed(b, "x", 1, 4, (const int32_t[]){1, 2, 2, 1}, NULL);
  tb_quantize(b, xt, 0, 1, &sx, &zx);
  uint32_t yt = tb_tensor_typed(b, "y", 1, 2, (const int32_t[]){1, 1}, NULL);
  tb_quantize(b, yt, 0, 1, &sy, &zy);
  tb_op(b, TETHER_OP_MEAN, TETHER_ACT_RELU, "mean", 1, &xt, yt);
  tb_attr_i(b, 8, 2, (const int32_t[]){1, 2});
  tb_graph_io(b, 1, &xt, 1, &yt);
  size_t size = 0;
  uint8_t* file = tb_finish(b, &size);
  tether_model_t model = NULL;
  const tether_status s = tether_model_load(file, size, NULL, &model);
  TB_CHECK(s == TETHER_STATUS_FORMAT_ERROR && strstr(tether_last_error(), "MEAN") != NULL,
           "int8 MEAN with fused RELU: status %d, '%s'", (int)s, tether_last_error());
  tether_model_destroy(model);
  free(file);
  free(b);
  (void)x;
  (void)y;
}

int main(void) {
  test_arithmetic();
  test_relu6_tiny_scale();
  test_huge_scale_rejected();
  /* acc0 = 2*(3+1)+1 = 9, * 0.125 = 1.125 -> 1, + 3 = 4; acc1 = -4*4-2 = -18, * 0.25 =
   * -4.5 -> -5, + 3 = -2; RELU clamps at z_y = 3; RELU6 at [3, 3 + 6]. */
  test_conv_by_hand(TETHER_ACT_NONE, (const int8_t[]){4, -2}, "int8 conv by hand");
  test_conv_by_hand(TETHER_ACT_RELU, (const int8_t[]){4, 3}, "int8 conv by hand, relu");
  test_conv_by_hand(TETHER_ACT_RELU6, (const int8_t[]){4, 3}, "int8 conv by hand, relu6");
  test_random_convs();
  for (int i = 0; i < 10; i++) test_add(i % 2 ? TETHER_ACT_RELU : TETHER_ACT_NONE);
  for (int i = 0; i < 10; i++) test_mul_sub(i % 2 ? TETHER_OP_SUB : TETHER_OP_MUL);
  test_mean(0, 1.0f, 0, 3);
  test_mean(-1, 0.5f, 5, 12);
  test_quantize_ops();
  test_float_ops();
  test_q8_pools();
  test_q8_pad();
  test_q8_concat();
  test_q8_elementwise();
  test_q8_alpha_activations();
  test_q8_minmax();
  test_q8_unfused_activation_rejected();
  if (tb_failures != 0) {
    fprintf(stderr, "%d check(s) failed\n", tb_failures);
    return 1;
  }
  printf("test_quant: all checks passed\n");
  return 0;
}
