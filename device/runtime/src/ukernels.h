/*
 * ukernels.h — micro-kernel contracts, the packed-weight layout and the per-ISA kernel table.
 *
 * Every optimized kernel has a __scalar twin with the same contract (and, for GEMM, the same
 * tile and packed layout), built on every target; tests/test_ukernels.c compares the two.
 *
 * Packed GEMM weights (tether_f32_gemm_pack): the N outputs are cut into panels of NR
 * columns (the last one zero-padded); each panel holds NR bias values, then K rows of NR
 * weights: panel p = [bias[p*NR .. p*NR+NR), w[k=0][NR], ..., w[k=K-1][NR]], so a panel is
 * (K + 1) * NR floats and the whole block ceil(N / NR) * (K + 1) * NR floats.
 */
#ifndef TETHER_UKERNELS_H_
#define TETHER_UKERNELS_H_

#include <stddef.h>
#include <stdint.h>

#include "tether/tether.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Output clamp applied in kernel epilogues (fused NONE / RELU / RELU6 / RELU_N1_TO_1). */
typedef struct tether_f32_minmax {
  float min, max;
} tether_f32_minmax;

/*
 * C[mr x nc] = clamp(A[mr x kc] * W + bias) for one tile: mr <= MR rows of A (row i at
 * a + i * a_stride bytes), one packed panel `w` (NR bias + kc * NR weights), nc <= NR output
 * columns written (row i at c + i * c_stride bytes). Reads whole panels (NR wide) and never
 * writes past column nc.
 */
typedef void (*tether_f32_gemm_ukernel_fn)(size_t mr, size_t nc, size_t kc, const float* a,
                                           size_t a_stride, const float* w, float* c,
                                           size_t c_stride, const tether_f32_minmax* params);

#define TETHER_DECLARE_F32_GEMM(mr, nr, isa)                                                   \
  void tether_f32_gemm_minmax_ukernel_##mr##x##nr##__##isa(                                    \
      size_t mr_, size_t nc, size_t kc, const float* a, size_t a_stride, const float* w,       \
      float* c, size_t c_stride, const tether_f32_minmax* params)

TETHER_DECLARE_F32_GEMM(4, 8, scalar);
TETHER_DECLARE_F32_GEMM(6, 8, scalar);
TETHER_DECLARE_F32_GEMM(6, 16, scalar);
TETHER_DECLARE_F32_GEMM(8, 32, scalar);
TETHER_DECLARE_F32_GEMM(6, 16, avx2);
TETHER_DECLARE_F32_GEMM(8, 32, avx512);
TETHER_DECLARE_F32_GEMM(6, 8, neon);
TETHER_DECLARE_F32_GEMM(4, 8, neon);

/*
 * Depthwise convolution (depth multiplier 1, any kernel size, stride, dilation, padding) over
 * output rows [oh_begin, oh_end) of every batch item: weights [KH, KW, C] as in the model,
 * optional bias [C], clamp to params. The geometry is validated by the caller.
 */
struct tether_conv_geometry;
typedef void (*tether_f32_dwconv_ukernel_fn)(const struct tether_conv_geometry* g,
                                             size_t oh_begin, size_t oh_end, const float* x,
                                             const float* w, const float* bias, float* y,
                                             const tether_f32_minmax* params);

#define TETHER_DECLARE_F32_DWCONV(tile, isa)                                                   \
  void tether_f32_dwconv2d_minmax_ukernel_##tile##__##isa(                                     \
      const struct tether_conv_geometry* g, size_t oh_begin, size_t oh_end, const float* x,    \
      const float* w, const float* bias, float* y, const tether_f32_minmax* params)

TETHER_DECLARE_F32_DWCONV(c1, scalar);
TETHER_DECLARE_F32_DWCONV(c16, avx512);
TETHER_DECLARE_F32_DWCONV(c8, avx2);
TETHER_DECLARE_F32_DWCONV(c4, neon);

/* The kernels one model uses, chosen from the CPU's features when the model loads. */
typedef struct tether_kernels {
  const char* isa;                    /* "scalar", "avx2", "avx512", "neon" */
  size_t gemm_mr, gemm_nr;
  tether_f32_gemm_ukernel_fn gemm;
  tether_f32_gemm_ukernel_fn gemm_twin;  /* the __scalar kernel with the same tile */
  tether_f32_dwconv_ukernel_fn dwconv;
} tether_kernels;

/* The table for the current selection (tether_set_isa, TETHER_ISA, or the best the CPU has). */
const tether_kernels* tether_kernels_current(void);
/* The table for one ISA by name, or NULL when unknown or the CPU lacks it. */
const tether_kernels* tether_kernels_for(const char* isa);
/* The TETHER_ISA environment variable in hosted builds; NULL when unset or freestanding. */
const char* tether_isa_from_environment(void);

/* Floats in the packed block for N outputs of K inputs with panels NR wide. */
size_t tether_f32_gemm_packed_floats(size_t nr, size_t n, size_t k);
/* Packs w [N][K] (row-major, e.g. OHWI flattened) and bias [N] (NULL = zeros). */
void tether_f32_gemm_pack(size_t nr, size_t n, size_t k, const float* w, const float* bias,
                          float* packed);

/*
 * C[M x N] = clamp(A[M x K] * W + bias) with packed W, tiled MR x NR; rows of A at a_stride
 * bytes, rows of C at c_stride bytes. Rows [m_begin, m_end) only (threads split on rows).
 */
void tether_f32_gemm(const tether_kernels* k, size_t m_begin, size_t m_end, size_t n,
                     size_t kc, const float* a, size_t a_stride, const float* packed, float* c,
                     size_t c_stride, const tether_f32_minmax* params);

/* tether_f32_gemm over rows [0, m), split into row and column-panel tasks over `pool`. */
struct tether_pool;
void tether_f32_gemm_parallel(struct tether_pool* pool, const tether_kernels* k, size_t m,
                              size_t n, size_t kc, const float* a, size_t a_stride,
                              const float* packed, float* c, size_t c_stride,
                              const tether_f32_minmax* params);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* TETHER_UKERNELS_H_ */
