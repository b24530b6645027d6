/*
 * c1-scalar.c — int8 ADD / SUB of same-shape tensors, one element at a time: TFLite's
 * integer Add (inputs shifted left by 20, each rescaled, summed, rescaled to the output).
 * The twin of the SIMD qs8 vadd kernels and the fallback on any CPU.
 */
#include <stddef.h>
#include <stdint.h>

#include "../ukernels.h"

static inline int32_t mbqm(int32_t x, int32_t mult, int32_t left, int32_t right) {
  return tether_rounding_divide_by_pot(
      tether_saturating_rounding_doubling_high_mul((int32_t)((uint32_t)x << left), mult), right);
}

void tether_qs8_vadd_minmax_ukernel__scalar(size_t n, const int8_t* a, const int8_t* b,
                                            int8_t* y, const tether_qs8_add_params* p) {
  for (size_t i = 0; i < n; i++) {
    const int32_t va = ((int32_t)a[i] - p->a_zero) * (1 << 20);
    const int32_t vb = ((int32_t)b[i] - p->b_zero) * (1 << 20);
    const int32_t sum = mbqm(va, p->a_mult, p->a_left, p->a_right) +
                        mbqm(vb, p->b_mult, p->b_left, p->b_right);
    int32_t v = mbqm(sum, p->y_mult, p->y_left, p->y_right) + p->y_zero;
    v = v < p->lo ? p->lo : v;
    y[i] = (int8_t)(v > p->hi ? p->hi : v);
  }
}
