/*
 * norm.c — scalar references of the normalizations (ops/norm.c runs them; the op tests use
 * them as the oracle): two passes per group, mean and variance accumulated in double, then
 * y = (x − mean) · (1 / sqrtf(var + eps)) in double (so a mean far from 0 costs no digits),
 * rounded to float, · gamma + beta in float.
 */
#include <math.h>
#include <stddef.h>

#include "reference/reference.h"

/* 1 / sqrt(var + eps) of one group of n values at stride `stride`, and its mean. */
static double norm_stats(const float* x, size_t n, size_t stride, float epsilon, double* mean) {
  double sum = 0.0;
  for (size_t i = 0; i < n; i++) sum += x[i * stride];
  const double m = sum / (double)n;
  double sq = 0.0;
  for (size_t i = 0; i < n; i++) {
    const double d = x[i * stride] - m;
    sq += d * d;
  }
  *mean = m;
  return 1.0 / (double)sqrtf((float)(sq / (double)n) + epsilon);
}

void tether_ref_f32_layer_norm(size_t rows, size_t n, float epsilon, const float* x,
                               const float* gamma, const float* beta, float* y) {
  for (size_t r = 0; r < rows; r++) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    double mean;
    const double inv = norm_stats(xr, n, 1, epsilon, &mean);
    for (size_t i = 0; i < n; i++) {
      const float g = gamma != NULL ? gamma[i] : 1.0f;
      const float b = beta != NULL ? beta[i] : 0.0f;
      yr[i] = (float)((xr[i] - mean) * inv) * g + b;
    }
  }
}

void tether_ref_f32_instance_norm(size_t batch, size_t spatial, size_t channels, float epsilon,
                                  const float* x, const float* gamma, const float* beta,
                                  float* y) {
  for (size_t b = 0; b < batch; b++) {
    const float* xb = x + b * spatial * channels;
    float* yb = y + b * spatial * channels;
    for (size_t c = 0; c < channels; c++) {
      double mean;
      const double inv = norm_stats(xb + c, spatial, channels, epsilon, &mean);
      const float g = gamma != NULL ? gamma[c] : 1.0f;
      const float h = beta != NULL ? beta[c] : 0.0f;
      for (size_t i = 0; i < spatial; i++) {
        yb[i * channels + c] = (float)((xb[i * channels + c] - mean) * inv) * g + h;
      }
    }
  }
}
