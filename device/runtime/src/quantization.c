/*
 * quantization.c — TensorFlow Lite's integer requantization arithmetic, bit for bit:
 * QuantizeMultiplier (a real multiplier as a Q0.31 value and a power-of-two shift) and
 * MultiplyByQuantizedMultiplier (saturating rounding doubling high multiply, then a rounding
 * right shift, the "double rounding" of TFLite's reference kernels).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

void tether_quantize_multiplier(double real, int32_t* multiplier, int32_t* shift) {
  /* A ratio that overflowed to infinity (or NaN) gets a shift no caller accepts, so the op
   * is rejected as out of range instead of converting infinity to an integer. */
  if (real != real || real > 1e300 || real < -1e300) {
    *multiplier = INT32_MAX;
    *shift = 1024;
    return;
  }
  if (real == 0.0) {
    *multiplier = 0;
    *shift = 0;
    return;
  }
  int exponent = 0;
  const double q = frexp(real, &exponent);  /* real = q * 2^exponent, q in [0.5, 1) */
  int64_t q_fixed = (int64_t)round(q * (double)(1ll << 31));
  if (q_fixed == (1ll << 31)) {
    q_fixed /= 2;
    exponent++;
  }
  if (exponent < -31) {
    exponent = 0;
    q_fixed = 0;
  }
  *multiplier = (int32_t)q_fixed;
  *shift = exponent;
}

int32_t tether_saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
  if (a == b && a == INT32_MIN) return INT32_MAX;
  const int64_t ab = (int64_t)a * (int64_t)b;
  const int64_t nudge = ab >= 0 ? (1ll << 30) : (1 - (1ll << 30));
  return (int32_t)((ab + nudge) / (1ll << 31));  /* C division truncates toward zero */
}

int32_t tether_rounding_divide_by_pot(int32_t x, int32_t exponent) {
  const int32_t mask = (int32_t)((1ll << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  /* Arithmetic right shift of a negative value (implementation-defined in C, arithmetic on
   * every target this builds for; checked by the tests). */
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

int32_t tether_multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int32_t shift) {
  const int32_t left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
  /* x * 2^left in int32 as TFLite does (callers keep it in range: left <= 31 - bits(x)). */
  const int32_t shifted = (int32_t)((uint32_t)x << left);
  return tether_rounding_divide_by_pot(
      tether_saturating_rounding_doubling_high_mul(shifted, multiplier), right);
}

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
static int32_t quantize_bound(float f, float scale, int32_t zero_point) {
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
      const int32_t six = quantize_bound(6.0f, scale, zero_point);
      mn = zero_point > mn ? zero_point : mn;
      mx = six < mx ? six : mx;
      break;
    }
    case TETHER_ACT_RELU_N1_TO_1: {
      const int32_t m1 = quantize_bound(-1.0f, scale, zero_point);
      const int32_t p1 = quantize_bound(1.0f, scale, zero_point);
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
