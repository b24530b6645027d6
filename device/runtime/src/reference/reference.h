/*
 * reference.h — whole-op scalar kernels: plain loops over the validated geometry, the oracle
 * every optimized path is tested against and the path an op takes where no micro-kernel
 * applies. Includes base/ and the micro-kernel header only (for the window geometry and the
 * requantization arithmetic).
 */
#ifndef TETHER_REFERENCE_H_
#define TETHER_REFERENCE_H_

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"
#include "ukernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* int8 requantization of the reference kernels: per channel c, y = clamp(y_zero +
 * MultiplyByQuantizedMultiplier(acc, multiplier[c], shift[c]), lo, hi). */
typedef struct tether_qs8_ref_params {
  const int32_t* multiplier;
  const int32_t* shift;
  int32_t x_zero, y_zero, lo, hi;
  int32_t single_rounding;  /* 1: tether_multiply_by_quantized_multiplier_single (dense) */
} tether_qs8_ref_params;

/* ---- any dtype (gather.c) --------------------------------------------------------------- */

/* y[o, j, :] = x[o, idx[j] (+ n if negative), :]: x [outer, n, row], y [outer, count, row],
 * rows of row_bytes bytes; every idx[j] in [-n, n). */
void tether_ref_gather(size_t outer, size_t n, size_t row_bytes, const int32_t* idx,
                       size_t count, const void* x, void* y);

/* ---- float32 (conv.c, pool.c, elementwise.c) ------------------------------------------- */

void tether_ref_f32_conv2d(const tether_conv_geometry* g, const float* x, const float* w,
                           const float* bias, float* y);
void tether_ref_f32_dwconv2d(const tether_conv_geometry* g, const float* x, const float* w,
                             const float* bias, float* y);
/* y[rows][outputs] = x[rows][k] * w[outputs][k]^T + bias (NULL = none). */
void tether_ref_f32_dense(size_t rows, size_t k, size_t outputs, const float* x, const float* w,
                          const float* bias, float* y);
void tether_ref_f32_maxpool(const tether_conv_geometry* g, const float* x, float* y);
void tether_ref_f32_avgpool(const tether_conv_geometry* g, int count_include_pad,
                            const float* x, float* y);
/* One value and n values through a tether_activation. */
float tether_ref_f32_activation_one(float x, uint32_t activation);
void tether_ref_f32_activation(size_t n, const float* x, float* y, uint32_t activation);
/* GELU: y = x·Φ(x) = ½x(1 + erf(x/√2)), or with approximate != 0 the tanh form
 * ½x(1 + tanh(√(2/π)(x + 0.044715x³))); NaN and ±inf go through the formula (−inf gives NaN). */
void tether_ref_f32_gelu(size_t n, const float* x, float* y, int approximate);
void tether_ref_f32_softmax(size_t rows, size_t n, float beta, const float* x, float* y);
/* Local response normalization over the last axis of [rows, n]: y = x / (bias + alpha / size
 * * sum of x^2 over channels [c - (size-1)/2, c + size/2] within [0, n))^beta (ONNX LRN). */
void tether_ref_f32_lrn(size_t rows, size_t n, int32_t size, float alpha, float beta,
                        float bias, const float* x, float* y);
/* Layer normalization of each row of [rows, n]: y = (x - mean) / sqrt(var + epsilon) * gamma
 * + beta, gamma and beta [n] (NULL: 1 and 0); mean and variance in double (reference/norm.c). */
void tether_ref_f32_layer_norm(size_t rows, size_t n, float epsilon, const float* x,
                               const float* gamma, const float* beta, float* y);
/* Instance normalization of [batch, spatial, channels]: per (batch, channel) over spatial,
 * gamma and beta [channels] (NULL: 1 and 0). */
void tether_ref_f32_instance_norm(size_t batch, size_t spatial, size_t channels, float epsilon,
                                  const float* x, const float* gamma, const float* beta,
                                  float* y);

/* ---- batched matrix product (matmul.c) -------------------------------------------------- */

/* BATCH_MATMUL's geometry: `batch` output matrices [m, n] (the broadcast batch dims `dims`,
 * row-major), the b-th the product of A's matrix [m, k] (stored [k, m] when adj_a) and B's
 * [k, n] (stored [n, k] when adj_b) at the element offsets tether_matmul_offset gives. */
typedef struct tether_matmul_geometry {
  size_t batch, batch_rank;
  size_t dims[TETHER_MAX_DIMS];
  size_t steps[2][TETHER_MAX_DIMS];  /* A's, B's elements per step of each batch dim; 0 where
                                        that operand broadcasts */
  size_t count[2];                   /* matrices stored in A, in B */
  size_t m, k, n;
  int adj_a, adj_b;
} tether_matmul_geometry;

/* The geometry of A (rank a_rank, shape a_shape) times B, both of rank >= 2, whose shapes the
 * caller has checked (K agrees, batch dims broadcast). */
void tether_matmul_geometry_init(tether_matmul_geometry* g, uint32_t a_rank,
                                 const int32_t* a_shape, uint32_t b_rank, const int32_t* b_shape,
                                 int adj_a, int adj_b);
/* Element offset of the matrix that output batch b reads in operand 0 (A) or 1 (B). */
size_t tether_matmul_offset(const tether_matmul_geometry* g, int operand, size_t b);
/* y[b] = A'[b] · B'[b] for every output batch, summed in float in k order. */
void tether_ref_f32_batch_matmul(const tether_matmul_geometry* g, const float* a,
                                 const float* b, float* y);

/* ---- int8 (TFLite's reference arithmetic) ---------------------------------------------- */

/* int8 BATCH_MATMUL (TFLite reference_ops::BatchMatMul<int8_t, int32_t>): y[b][i][j] =
 * clamp(y_zero + MultiplyByQuantizedMultiplier(sum_k (A'[b][i][k] - a_zero) * (B'[b][k][j] -
 * b_zero), multiplier[0], shift[0]), lo, hi), the sum in int32 (p->x_zero is a_zero). */
void tether_ref_qs8_batch_matmul(const tether_matmul_geometry* g, const int8_t* a,
                                 const int8_t* b, int32_t b_zero, int8_t* y,
                                 const tether_qs8_ref_params* p);

void tether_ref_qs8_conv2d(const tether_conv_geometry* g, const int8_t* x, const int8_t* w,
                           const int32_t* bias, int8_t* y, const tether_qs8_ref_params* p);
void tether_ref_qs8_dwconv2d(const tether_conv_geometry* g, const int8_t* x, const int8_t* w,
                             const int32_t* bias, int8_t* y, const tether_qs8_ref_params* p);
void tether_ref_qs8_dense(size_t rows, size_t k, size_t outputs, const int8_t* x,
                          const int8_t* w, const int32_t* bias, int8_t* y,
                          const tether_qs8_ref_params* p);
void tether_ref_qs8_pool(const tether_conv_geometry* g, int avg, int count_include_pad,
                         int32_t x_zero, int32_t lo, int32_t hi, const int8_t* x, int8_t* y);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* TETHER_REFERENCE_H_ */
