/*
 * batch_matmul.c — BATCH_MATMUL in float32: y[..., m, n] = Σ_k A'[..., m, k] · B'[..., k, n],
 * A' and B' the operands with their last two dims swapped where `adjoint` says so, the batch
 * dims broadcast numpy-style (reference/matmul.c holds the geometry). Either operand may be a
 * constant or computed.
 *
 * Each output matrix runs on the model's f32 GEMM micro-kernels: B's matrices become GEMM
 * panels (packed at load when B is a constant, else into scratch at each invoke, once per
 * stored matrix however often the batch broadcasts it); A' is read in place, or (adj_a)
 * transposed into scratch first. With one B matrix and an unbroadcast A the batches are one
 * tall GEMM. Tasks own disjoint outputs and every element comes from the same kernel call
 * sequence whatever the split, so results do not depend on the thread count. int8 is
 * rejected at load (the converter keeps BATCH_MATMUL float).
 */
#include <stddef.h>
#include <stdint.h>

#include "ops/ops.h"

static tether_matmul_geometry matmul_geometry(const struct tether_model* model,
                                              const tether_node* op) {
  const tether_tensor* a = tether_input(model, op, 0);
  const tether_tensor* b = tether_input(model, op, 1);
  tether_matmul_geometry g;
  tether_matmul_geometry_init(&g, a->ndim, a->shape, b->ndim, b->shape, op->params.adjoint[0],
                              op->params.adjoint[1]);
  return g;
}

/* Floats of one packed B matrix, rounded so every matrix starts 64-byte aligned. */
static size_t packed_matrix_floats(const tether_kernels* kt, const tether_matmul_geometry* g) {
  return (tether_f32_gemm_packed_floats(kt->gemm_nr, g->n, g->k) + 15) / 16 * 16;
}

/* Packs one stored B matrix ([k, n], or [n, k] when adj_b) into GEMM panels. */
static void pack_matrix(const tether_kernels* kt, const tether_matmul_geometry* g,
                        const float* b, float* packed) {
  if (g->adj_b) {
    tether_f32_gemm_pack(kt->gemm_nr, g->n, g->k, b, NULL, packed);
  } else {
    tether_f32_gemm_pack_kn(kt->gemm_nr, g->n, g->k, b, packed);
  }
}

static tether_status batch_matmul_prepare(const struct tether_model* model, uint32_t op_index,
                                          tether_node* op) {
  const tether_tensor* a = tether_input(model, op, 0);
  const tether_tensor* b = tether_input(model, op, 1);
  const tether_tensor* y = tether_output(model, op, 0);
  if (a->dtype == TETHER_DTYPE_INT8 || b->dtype == TETHER_DTYPE_INT8) {
    return tether_op_error(model, op_index, TETHER_STATUS_UNSUPPORTED_OP,
                           "int8 BATCH_MATMUL is not implemented yet (float32 is); keep the "
                           "op float");
  }
  tether_status status = tether_check_f32(model, op_index, a, "input 0");
  if (status == TETHER_STATUS_SUCCESS) status = tether_check_f32(model, op_index, b, "input 1");
  if (status == TETHER_STATUS_SUCCESS) status = tether_check_f32(model, op_index, y, "output 0");
  if (status != TETHER_STATUS_SUCCESS) return status;
  const int32_t adj_a = op->params.adjoint[0], adj_b = op->params.adjoint[1];
  if ((adj_a != 0 && adj_a != 1) || (adj_b != 0 && adj_b != 1)) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "attribute adjoint [%d, %d] must hold two values 0 or 1", adj_a,
                           adj_b);
  }
  char as[96], bs[96];
  if (a->ndim < 2 || b->ndim < 2) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "needs inputs of rank >= 2, got %s and %s",
                           tether_shape_string(a, as, sizeof(as)),
                           tether_shape_string(b, bs, sizeof(bs)));
  }
  const uint32_t ra = a->ndim, rb = b->ndim;
  const int32_t ka = adj_a ? a->shape[ra - 2] : a->shape[ra - 1];
  const int32_t kb = adj_b ? b->shape[rb - 1] : b->shape[rb - 2];
  if (ka != kb) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "input 0 %s (adjoint %d) has K = %d but input 1 %s (adjoint %d) "
                           "has K = %d",
                           tether_shape_string(a, as, sizeof(as)), adj_a, ka,
                           tether_shape_string(b, bs, sizeof(bs)), adj_b, kb);
  }
  const uint32_t rank = (ra > rb ? ra : rb) - 2;
  int32_t want[TETHER_MAX_DIMS];
  for (uint32_t d = 0; d < rank; d++) {
    const uint32_t la = rank - (ra - 2), lb = rank - (rb - 2);
    const int32_t da = d >= la ? a->shape[d - la] : 1, db = d >= lb ? b->shape[d - lb] : 1;
    if (da != db && da != 1 && db != 1) {
      return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "batch dim %u of the output: input 0 %s has %d, input 1 %s has "
                             "%d (they must be equal or one of them 1)",
                             d, tether_shape_string(a, as, sizeof(as)), da,
                             tether_shape_string(b, bs, sizeof(bs)), db);
    }
    want[d] = da > db ? da : db;
  }
  want[rank] = adj_a ? a->shape[ra - 1] : a->shape[ra - 2];
  want[rank + 1] = adj_b ? b->shape[rb - 2] : b->shape[rb - 1];
  status = tether_check_shape(model, op_index, y, "output 0", rank + 2, want);
  if (status != TETHER_STATUS_SUCCESS) return status;

  const tether_matmul_geometry g = matmul_geometry(model, op);
  const uint64_t panels = (uint64_t)g.count[1] * packed_matrix_floats(model->kernels, &g);
  uint64_t scratch = 0;
  if (b->flags & TETHER_TENSOR_CONSTANT) {
    if (panels > SIZE_MAX / 8) {
      return tether_op_error(model, op_index, TETHER_STATUS_OUT_OF_MEMORY,
                             "packed input 1 needs %llu floats", (unsigned long long)panels);
    }
    op->packed_floats = (size_t)panels;
  } else {
    scratch = panels * sizeof(float);
  }
  if (adj_a) scratch += (uint64_t)a->elements * sizeof(float);  /* panels end 64-aligned */
  if (scratch > SIZE_MAX / 8) {
    return tether_op_error(model, op_index, TETHER_STATUS_OUT_OF_MEMORY,
                           "scratch of %llu bytes", (unsigned long long)scratch);
  }
  op->scratch_bytes = (size_t)scratch;
  tether_f32_minmax mm;
  op->fused_activation = (uint8_t)tether_f32_minmax_of(op->activation, &mm);
  return TETHER_STATUS_SUCCESS;
}

static tether_status batch_matmul_pack(const struct tether_model* model, const tether_node* op,
                                       void* packed) {
  if (packed == NULL) return TETHER_STATUS_SUCCESS;  /* nothing to check */
  const tether_matmul_geometry g = matmul_geometry(model, op);
  const float* b = (const float*)tether_input(model, op, 1)->data;
  const size_t per = packed_matrix_floats(model->kernels, &g);
  for (size_t t = 0; t < g.count[1]; t++) {
    pack_matrix(model->kernels, &g, b + t * g.k * g.n, (float*)packed + t * per);
  }
  return TETHER_STATUS_SUCCESS;
}

typedef struct matmul_job {
  const tether_kernels* kt;
  const tether_matmul_geometry* g;
  const float* a_src;      /* A as stored (the transpose phase reads it) */
  const float* a;          /* A' matrices [m, k]: A itself, or its transpose in scratch */
  float* a_t;              /* where the transpose phase writes (adj_a) */
  const float* b;          /* B as stored (the packing phase reads it) */
  float* b_packed;         /* where the packing phase writes (B computed) */
  const float* packed;     /* B's packed matrices, `per` floats apart */
  float* y;
  size_t per;
  size_t batches, rows;    /* GEMMs and rows of each: m, or batch * m as one tall GEMM */
  size_t m_chunk, n_chunk, n_tasks, tasks_per_batch;
  tether_f32_minmax mm;
} matmul_job;

static void transpose_task(void* context, size_t t) {
  const matmul_job* j = (const matmul_job*)context;
  const size_t m = j->g->m, k = j->g->k;
  const float* src = j->a_src + t * m * k;  /* [k, m] */
  float* dst = j->a_t + t * m * k;          /* [m, k] */
  for (size_t i = 0; i < m; i++) {
    for (size_t kk = 0; kk < k; kk++) dst[i * k + kk] = src[kk * m + i];
  }
}

static void pack_task(void* context, size_t t) {
  const matmul_job* j = (const matmul_job*)context;
  pack_matrix(j->kt, j->g, j->b + t * j->g->k * j->g->n, j->b_packed + t * j->per);
}

static void gemm_task(void* context, size_t task) {
  const matmul_job* j = (const matmul_job*)context;
  const tether_matmul_geometry* g = j->g;
  const size_t bt = task / j->tasks_per_batch, r = task % j->tasks_per_batch;
  const size_t m0 = r / j->n_tasks * j->m_chunk, n0 = r % j->n_tasks * j->n_chunk;
  const size_t m1 = m0 + j->m_chunk < j->rows ? m0 + j->m_chunk : j->rows;
  const size_t n1 = n0 + j->n_chunk < g->n ? n0 + j->n_chunk : g->n;
  const size_t a_at = j->batches == 1 ? 0 : tether_matmul_offset(g, 0, bt);
  const size_t b_at = j->batches == 1 ? 0 : tether_matmul_offset(g, 1, bt) / (g->k * g->n);
  const size_t nr = j->kt->gemm_nr;
  const float* panels = j->packed + b_at * j->per + n0 / nr * (g->k + 1) * nr;
  tether_f32_gemm(j->kt, m0, m1, n1 - n0, g->k, j->a + a_at, g->k * sizeof(float), panels,
                  j->y + bt * j->rows * g->n + n0, g->n * sizeof(float), &j->mm);
}

static void batch_matmul_eval(const struct tether_model* model, const tether_node* op,
                              void* const* data, void* scratch, struct tether_pool* pool) {
  const tether_kernels* kt = model->kernels;
  const tether_matmul_geometry g = matmul_geometry(model, op);
  matmul_job j = {NULL};
  j.kt = kt;
  j.g = &g;
  j.per = packed_matrix_floats(kt, &g);
  j.a_src = (const float*)data[op->inputs[0]];
  j.a = j.a_src;
  j.b = (const float*)data[op->inputs[1]];
  j.y = (float*)data[op->outputs[0]];
  tether_f32_minmax_of(op->fused_activation ? op->activation : TETHER_ACT_NONE, &j.mm);
  float* free_at = (float*)scratch;
  if (op->packed != NULL) {
    j.packed = op->packed;
  } else {
    j.b_packed = free_at;
    j.packed = free_at;
    free_at += g.count[1] * j.per;
    tether_parallelize(pool, pack_task, &j, g.count[1]);
  }
  if (g.adj_a) {
    j.a_t = free_at;
    j.a = free_at;
    tether_parallelize(pool, transpose_task, &j, g.count[0]);
  }
  /* One B matrix and A not broadcast: A's matrices lie in output order, one tall GEMM. */
  const int tall = g.count[1] == 1 && g.count[0] == g.batch;
  j.batches = tall ? 1 : g.batch;
  j.rows = tall ? g.batch * g.m : g.m;
  const size_t threads = tether_pool_threads(pool), mr = kt->gemm_mr, nr = kt->gemm_nr;
  size_t m_tasks = 1, n_tasks = 1;
  if (threads > 1) {
    /* About 4 tasks per thread over all batches: rows first, then column panels. */
    const size_t target = (4 * threads + j.batches - 1) / j.batches;
    const size_t m_tiles = (j.rows + mr - 1) / mr, n_panels = (g.n + nr - 1) / nr;
    m_tasks = m_tiles < target ? m_tiles : target;
    n_tasks = (target + m_tasks - 1) / m_tasks;
    if (n_tasks > n_panels) n_tasks = n_panels;
  }
  j.m_chunk = ((j.rows + mr - 1) / mr + m_tasks - 1) / m_tasks * mr;
  j.n_chunk = ((g.n + nr - 1) / nr + n_tasks - 1) / n_tasks * nr;
  j.n_tasks = (g.n + j.n_chunk - 1) / j.n_chunk;
  j.tasks_per_batch = (j.rows + j.m_chunk - 1) / j.m_chunk * j.n_tasks;
  tether_parallelize(pool, gemm_task, &j, j.batches * j.tasks_per_batch);
}

TETHER_OP_DEF(BATCH_MATMUL) = {2, 2, TETHER_NO_OPTIONAL, TETHER_ATTR(ADJOINT), 0,
                               batch_matmul_prepare, batch_matmul_pack, batch_matmul_eval};
