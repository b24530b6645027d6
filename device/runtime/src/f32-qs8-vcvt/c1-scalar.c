/*
 * c1-scalar.c — float32 to int8 (QUANTIZE), TFLite's AffineQuantize: y = clamp(round(x / s)
 * + z, -128, 127) with round half away from zero, in float. Written branch-free (t = trunc(q),
 * then +-1 when the exact remainder q - t reaches 0.5; |q| clamped to 2^20 first; NaN gives
 * z) so that the loop vectorizes where FP operations may not trap (CMakeLists.txt).
 * The twin of the SIMD vcvt kernels and the fallback on any CPU.
 */
#include <stddef.h>
#include <stdint.h>

#include "../ukernels.h"

void tether_f32_qs8_vcvt_ukernel__scalar(size_t n, const float* x, int8_t* y, float scale,
                                         int32_t zero) {
  for (size_t i = 0; i < n; i++) {
    float q = x[i] / scale;
    q = q == q ? q : 0.0f;
    q = q < -1048576.0f ? -1048576.0f : q > 1048576.0f ? 1048576.0f : q;
    const int32_t t = (int32_t)q;
    const float rem = q - (float)t;
    const int32_t v = t + (rem >= 0.5f) - (rem <= -0.5f) + zero;
    y[i] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
  }
}
