/*
 * elementwise.c — the float activations (one value and a whole buffer) and row softmax.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "reference/reference.h"

/* The clamps keep NaN (as the peers do): `bound` for a number below it, x itself for NaN. */
static inline float nan_or(float x, float bound) { return x == x ? bound : x; }

float tether_ref_f32_activation_one(float x, uint32_t activation) {
  switch (activation) {
    case TETHER_ACT_RELU: return x > 0.0f ? x : nan_or(x, 0.0f);
    case TETHER_ACT_RELU6: return x > 0.0f ? (x < 6.0f ? x : 6.0f) : nan_or(x, 0.0f);
    case TETHER_ACT_RELU_N1_TO_1: return x > -1.0f ? (x < 1.0f ? x : 1.0f) : nan_or(x, -1.0f);
    case TETHER_ACT_TANH: return tanhf(x);
    case TETHER_ACT_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case TETHER_ACT_HARD_SWISH: {
      float r = x + 3.0f;
      r = r > 0.0f ? (r < 6.0f ? r : 6.0f) : nan_or(r, 0.0f);
      return x * r / 6.0f;
    }
    default: return x;
  }
}

/* y[i] = act(y[i]) for i < n, in place. */
void tether_ref_f32_activation(size_t n, const float* x, float* y, uint32_t activation) {
  switch (activation) {
    case TETHER_ACT_NONE:
      if (x != y) {
        for (size_t i = 0; i < n; i++) y[i] = x[i];
      }
      return;
    case TETHER_ACT_RELU:
      for (size_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : nan_or(x[i], 0.0f);
      return;
    case TETHER_ACT_RELU6:
      for (size_t i = 0; i < n; i++) {
        y[i] = x[i] > 0.0f ? (x[i] < 6.0f ? x[i] : 6.0f) : nan_or(x[i], 0.0f);
      }
      return;
    default:
      for (size_t i = 0; i < n; i++) y[i] = tether_ref_f32_activation_one(x[i], activation);
      return;
  }
}

void tether_ref_f32_softmax(size_t rows, size_t n, float beta, const float* x, float* y) {
  for (size_t r = 0; r < rows; r++) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    float max = beta * xr[0];
    for (size_t i = 1; i < n; i++) {
      const float v = beta * xr[i];
      if (v > max) max = v;
    }
    float sum = 0.0f;
    for (size_t i = 0; i < n; i++) {
      yr[i] = expf(beta * xr[i] - max);
      sum += yr[i];
    }
    for (size_t i = 0; i < n; i++) yr[i] = yr[i] / sum;
  }
}

void tether_ref_f32_lrn(size_t rows, size_t n, int32_t size, float alpha, float beta,
                        float bias, const float* x, float* y) {
  const ptrdiff_t before = (ptrdiff_t)(size - 1) / 2, after = (ptrdiff_t)size / 2;
  const float scale = alpha / (float)size;
  for (size_t r = 0; r < rows; r++) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    for (size_t c = 0; c < n; c++) {
      const ptrdiff_t lo = (ptrdiff_t)c - before < 0 ? 0 : (ptrdiff_t)c - before;
      const ptrdiff_t hi =
          (ptrdiff_t)c + after >= (ptrdiff_t)n ? (ptrdiff_t)n - 1 : (ptrdiff_t)c + after;
      float sum = 0.0f;
      for (ptrdiff_t i = lo; i <= hi; i++) sum += xr[i] * xr[i];
      /* base^-beta as exp(-beta log base): the freestanding build has expf and logf */
      yr[c] = xr[c] * expf(-beta * logf(bias + scale * sum));
    }
  }
}

void tether_ref_f32_gelu(size_t n, const float* x, float* y, int approximate) {
  if (approximate) {
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    for (size_t i = 0; i < n; i++) {
      const float v = x[i];
      y[i] = 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
    }
  } else {
    for (size_t i = 0; i < n; i++) {
      const float v = x[i];
      y[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    }
  }
}
