/*
 * fixedpoint.c — TensorFlow Lite's QuantizeMultiplier, bit for bit: a real multiplier as a
 * Q0.31 value and a power-of-two shift. MultiplyByQuantizedMultiplier, which applies it (a
 * saturating rounding doubling high multiply, then a rounding right shift, the "double
 * rounding" of TFLite's reference kernels), is inline in ukernels.h for the kernels.
 */
#include <math.h>
#include <stdint.h>

#include "compute/compute.h"

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
