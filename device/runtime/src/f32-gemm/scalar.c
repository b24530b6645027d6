/*
 * scalar.c — the portable GEMM micro-kernels: one twin per optimized tile (same MR x NR and
 * packed layout), the test oracle for the SIMD kernels and the fallback on any CPU.
 * Instantiated from one template (TETHER_F32_GEMM_SCALAR below); edit the template only.
 */
#include <stddef.h>
#include <string.h>

#include "../internal.h"
#include "../ukernels.h"

#define TETHER_F32_GEMM_SCALAR(MR, NR)                                                      \
  void tether_f32_gemm_minmax_ukernel_##MR##x##NR##__scalar(                                \
      size_t mr, size_t nc, size_t kc, const float* a, size_t a_stride, const float* w,     \
      float* c, size_t c_stride, const tether_f32_minmax* params) {                         \
    float acc[MR][NR];                                                                      \
    const float* rows[MR];                                                                  \
    for (size_t i = 0; i < MR; i++) {                                                       \
      rows[i] = (const float*)((const char*)a + (i < mr ? i : mr - 1) * a_stride);          \
      for (size_t j = 0; j < NR; j++) acc[i][j] = w[j];                                     \
    }                                                                                       \
    w += NR;                                                                                \
    for (size_t k = 0; k < kc; k++) {                                                       \
      for (size_t i = 0; i < MR; i++) {                                                     \
        const float ai = rows[i][k];                                                        \
        for (size_t j = 0; j < NR; j++) acc[i][j] += ai * w[j];                             \
      }                                                                                     \
      w += NR;                                                                              \
    }                                                                                       \
    for (size_t i = 0; i < mr; i++) {                                                       \
      float* ci = (float*)((char*)c + i * c_stride);                                        \
      for (size_t j = 0; j < nc; j++) {                                                     \
        float v = acc[i][j];                                                                \
        v = v < params->min ? params->min : v;                                              \
        ci[j] = v > params->max ? params->max : v;                                          \
      }                                                                                     \
    }                                                                                       \
  }

TETHER_F32_GEMM_SCALAR(4, 8)
TETHER_F32_GEMM_SCALAR(6, 8)
TETHER_F32_GEMM_SCALAR(6, 16)
TETHER_F32_GEMM_SCALAR(8, 32)

size_t tether_f32_gemm_packed_floats(size_t nr, size_t n, size_t k) {
  return (n + nr - 1) / nr * (k + 1) * nr;
}

void tether_f32_gemm_pack(size_t nr, size_t n, size_t k, const float* w, const float* bias,
                          float* packed) {
  for (size_t n0 = 0; n0 < n; n0 += nr) {
    for (size_t j = 0; j < nr; j++) *packed++ = (n0 + j < n && bias != NULL) ? bias[n0 + j] : 0.0f;
    for (size_t kk = 0; kk < k; kk++) {
      for (size_t j = 0; j < nr; j++) *packed++ = n0 + j < n ? w[(n0 + j) * k + kk] : 0.0f;
    }
  }
}

void tether_f32_gemm(const tether_kernels* kt, size_t m_begin, size_t m_end, size_t n,
                     size_t kc, const float* a, size_t a_stride, const float* packed, float* c,
                     size_t c_stride, const tether_f32_minmax* params) {
  const size_t mr = kt->gemm_mr, nr = kt->gemm_nr;
  const size_t panel = (kc + 1) * nr;
  /* Rows in blocks of about 64 KiB of A, so a block stays in L2 while the panels stream. */
  size_t block = (64 * 1024) / (kc * sizeof(float) + 1);
  block = block < mr ? mr : block / mr * mr;
  for (size_t m0 = m_begin; m0 < m_end; m0 += block) {
    const size_t m1 = m0 + block < m_end ? m0 + block : m_end;
    const float* w = packed;
    for (size_t n0 = 0; n0 < n; n0 += nr, w += panel) {
      const size_t nc = n - n0 < nr ? n - n0 : nr;
      for (size_t m = m0; m < m1; m += mr) {
        const size_t rows = m1 - m < mr ? m1 - m : mr;
        kt->gemm(rows, nc, kc, (const float*)((const char*)a + m * a_stride), a_stride, w,
                 (float*)((char*)c + m * c_stride) + n0, c_stride, params);
      }
    }
  }
}

/* ---- the GEMM split over a thread pool ------------------------------------------------- */

typedef struct gemm_job {
  const tether_kernels* kt;
  size_t m, n, kc, a_stride, c_stride;
  const float* a;
  const float* packed;
  float* c;
  const tether_f32_minmax* params;
  size_t m_chunk, n_chunk, n_tasks;  /* rows and columns per task (multiples of MR, NR) */
} gemm_job;

static void gemm_task(void* context, size_t task) {
  const gemm_job* j = (const gemm_job*)context;
  const size_t m0 = (task / j->n_tasks) * j->m_chunk, n0 = (task % j->n_tasks) * j->n_chunk;
  const size_t m1 = m0 + j->m_chunk < j->m ? m0 + j->m_chunk : j->m;
  const size_t n1 = n0 + j->n_chunk < j->n ? n0 + j->n_chunk : j->n;
  const size_t panel = (j->kc + 1) * j->kt->gemm_nr;
  tether_f32_gemm(j->kt, m0, m1, n1 - n0, j->kc, j->a, j->a_stride,
                  j->packed + n0 / j->kt->gemm_nr * panel, j->c + n0, j->c_stride, j->params);
}

void tether_f32_gemm_parallel(struct tether_pool* pool, const tether_kernels* kt, size_t m,
                              size_t n, size_t kc, const float* a, size_t a_stride,
                              const float* packed, float* c, size_t c_stride,
                              const tether_f32_minmax* params) {
  const size_t threads = tether_pool_threads(pool);
  if (threads <= 1 || m == 0) {
    tether_f32_gemm(kt, 0, m, n, kc, a, a_stride, packed, c, c_stride, params);
    return;
  }
  /* About 4 tasks per thread: rows first, then column panels when there are few row tiles.
   * Every output element is computed the same way whatever the split. */
  const size_t mr = kt->gemm_mr, nr = kt->gemm_nr;
  const size_t m_tiles = (m + mr - 1) / mr, n_panels = (n + nr - 1) / nr;
  const size_t target = 4 * threads;
  const size_t m_tasks = m_tiles < target ? m_tiles : target;
  size_t n_tasks = (target + m_tasks - 1) / m_tasks;
  if (n_tasks > n_panels) n_tasks = n_panels;
  gemm_job j = {kt, m, n, kc, a_stride, c_stride, a, packed, c, params, 0, 0, 0};
  j.m_chunk = (m_tiles + m_tasks - 1) / m_tasks * mr;
  j.n_chunk = (n_panels + n_tasks - 1) / n_tasks * nr;
  j.n_tasks = (n + j.n_chunk - 1) / j.n_chunk;
  const size_t rows_tasks = (m + j.m_chunk - 1) / j.m_chunk;
  tether_parallelize(pool, gemm_task, &j, rows_tasks * j.n_tasks);
}
