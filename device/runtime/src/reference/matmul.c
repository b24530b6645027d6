/*
 * matmul.c — BATCH_MATMUL's geometry (the broadcast of the batch dims, each operand's step
 * per batch dim) and its plain reference: one dot product per output element, in float, k in
 * order. The oracle of ops/batch_matmul.c's GEMM path; and its int8 twin, TFLite's
 * reference_ops::BatchMatMul<int8_t, int32_t> loop, the oracle of the int8 path.
 */
#include <stddef.h>
#include <stdint.h>

#include "reference/reference.h"

void tether_matmul_geometry_init(tether_matmul_geometry* g, uint32_t a_rank,
                                 const int32_t* a_shape, uint32_t b_rank, const int32_t* b_shape,
                                 int adj_a, int adj_b) {
  const uint32_t rank = (a_rank > b_rank ? a_rank : b_rank) - 2;
  g->adj_a = adj_a;
  g->adj_b = adj_b;
  g->m = (size_t)(adj_a ? a_shape[a_rank - 1] : a_shape[a_rank - 2]);
  g->k = (size_t)(adj_a ? a_shape[a_rank - 2] : a_shape[a_rank - 1]);
  g->n = (size_t)(adj_b ? b_shape[b_rank - 2] : b_shape[b_rank - 1]);
  g->batch_rank = rank;
  g->batch = 1;
  const uint32_t ranks[2] = {a_rank, b_rank};
  const int32_t* shapes[2] = {a_shape, b_shape};
  for (int o = 0; o < 2; o++) {
    /* Right-aligned: output batch dim d is the operand's dim d - (rank - its batch rank). */
    const uint32_t own = ranks[o] - 2, lead = rank - own;
    size_t step = o == 0 ? g->m * g->k : g->k * g->n;
    g->count[o] = 1;
    for (uint32_t d = rank; d-- > 0;) {
      const size_t extent = d >= lead ? (size_t)shapes[o][d - lead] : 1;
      g->steps[o][d] = extent == 1 ? 0 : step;
      step *= extent;
      g->count[o] *= extent;
    }
  }
  for (uint32_t d = 0; d < rank; d++) {
    const uint32_t la = rank - (a_rank - 2), lb = rank - (b_rank - 2);
    const size_t da = d >= la ? (size_t)a_shape[d - la] : 1;
    const size_t db = d >= lb ? (size_t)b_shape[d - lb] : 1;
    g->dims[d] = da > db ? da : db;
    g->batch *= g->dims[d];
  }
}

size_t tether_matmul_offset(const tether_matmul_geometry* g, int operand, size_t b) {
  size_t offset = 0;
  for (size_t d = g->batch_rank; d-- > 0;) {
    offset += b % g->dims[d] * g->steps[operand][d];
    b /= g->dims[d];
  }
  return offset;
}

void tether_ref_f32_batch_matmul(const tether_matmul_geometry* g, const float* a,
                                 const float* b, float* y) {
  const size_t m = g->m, k = g->k, n = g->n;
  /* Element (i, kk) of A' and (kk, j) of B' as strides into the stored matrices. */
  const size_t a_i = g->adj_a ? 1 : k, a_k = g->adj_a ? m : 1;
  const size_t b_k = g->adj_b ? 1 : n, b_j = g->adj_b ? k : 1;
  for (size_t t = 0; t < g->batch; t++) {
    const float* at = a + tether_matmul_offset(g, 0, t);
    const float* bt = b + tether_matmul_offset(g, 1, t);
    float* yt = y + t * m * n;
    for (size_t i = 0; i < m; i++) {
      for (size_t j = 0; j < n; j++) {
        float acc = 0.0f;
        for (size_t kk = 0; kk < k; kk++) acc += at[i * a_i + kk * a_k] * bt[kk * b_k + j * b_j];
        yt[i * n + j] = acc;
      }
    }
  }
}

void tether_ref_qs8_batch_matmul(const tether_matmul_geometry* g, const int8_t* a,
                                 const int8_t* b, int32_t b_zero, int8_t* y,
                                 const tether_qs8_ref_params* p) {
  const size_t m = g->m, k = g->k, n = g->n;
  const size_t a_i = g->adj_a ? 1 : k, a_k = g->adj_a ? m : 1;
  const size_t b_k = g->adj_b ? 1 : n, b_j = g->adj_b ? k : 1;
  for (size_t t = 0; t < g->batch; t++) {
    const int8_t* at = a + tether_matmul_offset(g, 0, t);
    const int8_t* bt = b + tether_matmul_offset(g, 1, t);
    int8_t* yt = y + t * m * n;
    for (size_t i = 0; i < m; i++) {
      for (size_t j = 0; j < n; j++) {
        uint32_t acc = 0;  /* int32 two's-complement wrap, defined */
        for (size_t kk = 0; kk < k; kk++) {
          const int32_t va = (int32_t)at[i * a_i + kk * a_k] - p->x_zero;
          const int32_t vb = (int32_t)bt[kk * b_k + j * b_j] - b_zero;
          acc += (uint32_t)(va * vb);
        }
        int32_t v = tether_multiply_by_quantized_multiplier((int32_t)acc, p->multiplier[0],
                                                            p->shift[0]) +
                    p->y_zero;
        v = v < p->lo ? p->lo : v;
        yt[i * n + j] = (int8_t)(v > p->hi ? p->hi : v);
      }
    }
  }
}
