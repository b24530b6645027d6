/*
 * compute.h — what the ops build on: the per-ISA kernel table chosen at load (isa.c), the GEMM
 * drivers and weight packing around the micro-kernels (gemm.c), the thread pool
 * (threadpool.c; serial.c in freestanding builds) and TFLite's QuantizeMultiplier
 * (fixedpoint.c). Includes base/ and the micro-kernel header only.
 */
#ifndef TETHER_COMPUTE_H_
#define TETHER_COMPUTE_H_

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"
#include "ukernels.h"

#ifdef __cplusplus
extern "C" {
#endif

struct tether_pool;

/* The kernels one model uses, chosen from the CPU's features when the model loads. */
typedef struct tether_kernels {
  const char* isa;                    /* "scalar", "avx2", "avx512", "neon" */
  size_t gemm_mr, gemm_nr;
  tether_f32_gemm_ukernel_fn gemm;
  tether_f32_gemm_ukernel_fn gemm_twin;  /* the __scalar kernel with the same tile */
  tether_f32_dwconv_ukernel_fn dwconv;
  /* int8: GEMM tile MR x NR with K-step KR; qs8_gemm_xor: the kernel reads A as u8 x ^ 0x80. */
  size_t qs8_gemm_mr, qs8_gemm_nr, qs8_gemm_kr;
  int qs8_gemm_xor;
  tether_qs8_gemm_ukernel_fn qs8_gemm;
  tether_qs8_gemm_ukernel_fn qs8_gemm_twin;  /* the __scalar kernel with the same layout */
  tether_qs8_dwconv_ukernel_fn qs8_dwconv;
  tether_qs8_vadd_ukernel_fn qs8_vadd;
  tether_f32_qs8_vcvt_ukernel_fn qs8_quantize;
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
/* Packs the right-hand side of a product stored as w [K][N] (row-major), with zero bias. */
void tether_f32_gemm_pack_kn(size_t nr, size_t n, size_t k, const float* w, float* packed);

/*
 * C[M x N] = clamp(A[M x K] * W + bias) with packed W, tiled MR x NR; rows of A at a_stride
 * bytes, rows of C at c_stride bytes. Rows [m_begin, m_end) only (threads split on rows).
 */
void tether_f32_gemm(const tether_kernels* k, size_t m_begin, size_t m_end, size_t n,
                     size_t kc, const float* a, size_t a_stride, const float* packed, float* c,
                     size_t c_stride, const tether_f32_minmax* params);

/* tether_f32_gemm over rows [0, m), split into row and column-panel tasks over `pool`. */
void tether_f32_gemm_parallel(struct tether_pool* pool, const tether_kernels* k, size_t m,
                              size_t n, size_t kc, const float* a, size_t a_stride,
                              const float* packed, float* c, size_t c_stride,
                              const tether_f32_minmax* params);

/* Bytes of one packed qs8 panel and of the whole block for N outputs of K inputs. */
size_t tether_qs8_gemm_panel_bytes(size_t nr, size_t kr, size_t k);
size_t tether_qs8_gemm_packed_bytes(size_t nr, size_t kr, size_t n, size_t k);
/*
 * Packs w [N][K] int8 (row-major), bias [N] int32 (NULL = zeros), per-channel multiplier
 * and shift (TFLite's, shift > 0 = left) for a kernel with tile nr, K-step kr and `xor`.
 */
void tether_qs8_gemm_pack(size_t nr, size_t kr, int xor_a, size_t n, size_t k, const int8_t* w,
                          const int32_t* bias, const int32_t* multiplier, const int32_t* shift,
                          int32_t x_zero, void* packed);
/* Bytes of A that tether_qs8_gemm converts to x ^ 0x80 at a time for XOR kernels, on the
 * stack; callers convert A themselves (a_u8 = 1) when MR rows of K exceed it. */
#define TETHER_QS8_A_BLOCK_BYTES 16384
/*
 * C[M x N] int8 with the model's qs8 kernel over rows [m_begin, m_end). a_u8 = 1: A already
 * holds x ^ 0x80 (for qs8_gemm_xor kernels; ignored otherwise); a_u8 = 0 with an XOR kernel
 * needs MR * kc <= TETHER_QS8_A_BLOCK_BYTES.
 */
void tether_qs8_gemm(const tether_kernels* k, size_t m_begin, size_t m_end, size_t n,
                     size_t kc, const int8_t* a, size_t a_stride, int a_u8, const void* packed,
                     int8_t* c, size_t c_stride, const tether_qs8_params* params);
/* tether_qs8_gemm over rows [0, m), split into row and panel tasks over `pool`. */
void tether_qs8_gemm_parallel(struct tether_pool* pool, const tether_kernels* k, size_t m,
                              size_t n, size_t kc, const int8_t* a, size_t a_stride, int a_u8,
                              const void* packed, int8_t* c, size_t c_stride,
                              const tether_qs8_params* params);
/* Bytes of the packed depthwise weights for C channels and T taps. */
size_t tether_qs8_dwconv_packed_bytes(size_t channels, size_t taps);
/* Packs depthwise weights w [T][C] (the model's [1, KH, KW, C]) as documented above. */
void tether_qs8_dwconv_pack(size_t channels, size_t taps, const int8_t* w, const int32_t* bias,
                            const int32_t* multiplier, const int32_t* shift, int32_t x_zero,
                            int32_t* packed);

/* ---- thread pool (threadpool.c; a serial stand-in in freestanding builds) --------------- */

struct tether_pool;
typedef void (*tether_task_fn)(void* context, size_t task);
/*
 * Creates a pool of `threads` - 1 workers (the caller is the last thread) with `allocator`;
 * *pool_out = NULL for threads <= 1. No allocation after this.
 */
tether_status tether_pool_create(const tether_allocator* allocator, uint32_t threads,
                                 struct tether_pool** pool_out);
void tether_pool_destroy(struct tether_pool* pool);
/* Bytes tether_pool_create(allocator, threads, ...) asks `allocator` for (0 when it runs
 * on the calling thread only). */
size_t tether_pool_bytes(uint32_t threads);
/* Threads in the pool, the caller included (1 for NULL). */
size_t tether_pool_threads(const struct tether_pool* pool);
/*
 * Runs fn(context, i) for i in [0, count) on the pool's threads and the caller, and returns
 * when all are done. Which thread runs a task is unspecified, so tasks must write disjoint
 * outputs and never depend on one another: results then do not depend on the thread count.
 */
void tether_parallelize(struct tether_pool* pool, tether_task_fn fn, void* context,
                        size_t count);

/* Multiply-adds below which a task is not worth handing to another thread (its wake-up and
 * the caller's wait cost about a microsecond): an op splits into at most
 * tether_tasks_for_work(macs) tasks, 1 meaning "run it on the calling thread". */
#define TETHER_MIN_TASK_MACS 32768.0
static inline size_t tether_tasks_for_work(double macs) {
  const double tasks = macs / TETHER_MIN_TASK_MACS;
  return tasks < 1.0 ? 1 : tasks > 1e6 ? (size_t)1000000 : (size_t)tasks;
}

/* ---- requantization multipliers (fixedpoint.c) ------------------------------------------ */

/* real = multiplier * 2^(shift - 31), multiplier in [2^30, 2^31) (TFLite QuantizeMultiplier). */
void tether_quantize_multiplier(double real, int32_t* multiplier, int32_t* shift);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* TETHER_COMPUTE_H_ */
