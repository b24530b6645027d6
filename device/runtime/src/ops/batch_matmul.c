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
 * sequence whatever the split, so results do not depend on the thread count.
 *
 * int8 is TFLite's BatchMatMul bit for bit (batch_matmul.cc, reference_ops::BatchMatMul<int8_t,
 * int32_t>): A, B and y int8 per tensor, any zero points, y = clamp(z_y + MBQM(acc, M, shift))
 * with acc = sum_k (a - z_a)(b - z_b) in int32 and M * 2^shift = s_a * s_b / s_y (TFLite's
 * GetQuantizedConvolutionMultipler: s_a * s_b in float32, the ratio in double); the clamp is int8's range narrowed by a fused
 * RELU/RELU6/RELU_N1_TO_1 (TFLite's op has none). The sum is taken as
 * sum a*b - z_b * sum_k a - z_a * sum_k b + k * z_a * z_b in wrapping 32-bit arithmetic, equal to
 * TFLite's int32 sum: B's matrices are stored transposed ([n, k] rows, k contiguous, TFLite
 * transposes RHS the same way) with their column sums (packed at load for a constant B, else
 * into scratch per invoke), A' read in place or transposed into scratch (adj_a). Tasks own
 * row blocks of one output matrix; each element is one dot product, whatever the split.
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

/* ---- int8 --------------------------------------------------------------------------- */

/* Words of the packed block before B's matrices: the multiplier and shift, padded to 64
 * bytes. */
#define Q8_WORDS_FLOATS 16u

/* Bytes of one int8 B matrix as the kernel reads it: B' transposed ([n, k], k contiguous),
 * then its n column sums sum_k b (int32), each part 64-byte aligned. */
static size_t q8_matrix_bytes(const tether_matmul_geometry* g) {
  return (g->n * g->k + 63) / 64 * 64 + (g->n * sizeof(int32_t) + 63) / 64 * 64;
}

static void q8_pack_matrix(const tether_matmul_geometry* g, const int8_t* b, int8_t* packed) {
  const size_t k = g->k, n = g->n;
  int32_t* sums = (int32_t*)(void*)(packed + (n * k + 63) / 64 * 64);
  for (size_t j = 0; j < n; j++) {
    int32_t sum = 0;
    for (size_t kk = 0; kk < k; kk++) {
      const int8_t v = g->adj_b ? b[j * k + kk] : b[kk * n + j];
      packed[j * k + kk] = v;
      sum += v;
    }
    sums[j] = sum;
  }
}

static tether_status q8_prepare(const struct tether_model* model, uint32_t op_index,
                                tether_node* op, const tether_matmul_geometry* g) {
  const tether_tensor* b = tether_input(model, op, 1);
  if ((uint64_t)g->k > ((uint64_t)1 << 24)) {  /* B's column sums stay within int32 */
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "int8 K = %zu is over 2^24", g->k);
  }
  const uint64_t matrices = (uint64_t)g->count[1] * q8_matrix_bytes(g);
  uint64_t scratch = 0;
  uint64_t packed = Q8_WORDS_FLOATS;
  if (b->flags & TETHER_TENSOR_CONSTANT) {
    packed += matrices / sizeof(float);
  } else {
    scratch = matrices;
  }
  if (g->adj_a) scratch += ((uint64_t)g->count[0] * g->m * g->k + 63) / 64 * 64;
  if (packed > SIZE_MAX / 8 || scratch > SIZE_MAX / 8) {
    return tether_op_error(model, op_index, TETHER_STATUS_OUT_OF_MEMORY,
                           "int8 packed B of %llu floats, scratch of %llu bytes",
                           (unsigned long long)packed, (unsigned long long)scratch);
  }
  op->packed_floats = (size_t)packed;
  op->scratch_bytes = (size_t)scratch;
  op->quantized = 1;
  op->fused_activation = 1;
  return TETHER_STATUS_SUCCESS;
}

static tether_status q8_pack(const struct tether_model* model, const tether_node* op,
                             void* packed) {
  const tether_tensor* a = tether_input(model, op, 0);
  const tether_tensor* b = tether_input(model, op, 1);
  const tether_tensor* y = tether_output(model, op, 0);
  /* TFLite's GetQuantizedConvolutionMultipler: the product in float32, the ratio in double */
  const float product = a->scale * b->scale;
  int32_t words[2];
  tether_quantize_multiplier((double)product / (double)y->scale, &words[0], &words[1]);
  tether_status status = tether_q8_check_shifts(model, op, &words[1], 1, 1);
  if (status != TETHER_STATUS_SUCCESS || packed == NULL) return status;
  ((int32_t*)packed)[0] = words[0];
  ((int32_t*)packed)[1] = words[1];
  if (b->flags & TETHER_TENSOR_CONSTANT) {
    const tether_matmul_geometry g = matmul_geometry(model, op);
    const int8_t* bd = (const int8_t*)b->data;
    int8_t* dst = (int8_t*)((float*)packed + Q8_WORDS_FLOATS);
    const size_t per = q8_matrix_bytes(&g);
    for (size_t t = 0; t < g.count[1]; t++) {
      q8_pack_matrix(&g, bd + t * g.k * g.n, dst + t * per);
    }
  }
  return TETHER_STATUS_SUCCESS;
}

typedef struct q8_job {
  const tether_matmul_geometry* g;
  const int8_t* a_src;     /* A as stored (the transpose phase reads it) */
  const int8_t* a;         /* A' matrices [m, k]: A itself, or its transpose in scratch */
  int8_t* a_t;             /* where the transpose phase writes (adj_a) */
  const int8_t* b;         /* B as stored (the packing phase reads it) */
  int8_t* b_packed;        /* where the packing phase writes (B computed) */
  const int8_t* packed;    /* B's packed matrices, `per` bytes apart */
  int8_t* y;
  size_t per, m_chunk, m_tasks;
  int32_t a_zero, b_zero, y_zero, multiplier, shift, lo, hi;
} q8_job;

static void q8_transpose_task(void* context, size_t t) {
  const q8_job* j = (const q8_job*)context;
  const size_t m = j->g->m, k = j->g->k;
  const int8_t* src = j->a_src + t * m * k;  /* [k, m] */
  int8_t* dst = j->a_t + t * m * k;          /* [m, k] */
  for (size_t i = 0; i < m; i++) {
    for (size_t kk = 0; kk < k; kk++) dst[i * k + kk] = src[kk * m + i];
  }
}

static void q8_pack_task(void* context, size_t t) {
  const q8_job* j = (const q8_job*)context;
  q8_pack_matrix(j->g, j->b + t * j->g->k * j->g->n, j->b_packed + t * j->per);
}

/* Rows [m0, m1) of output matrix bt. */
static void q8_gemm_task(void* context, size_t task) {
  const q8_job* j = (const q8_job*)context;
  const tether_matmul_geometry* g = j->g;
  const size_t m = g->m, k = g->k, n = g->n;
  const size_t bt = task / j->m_tasks, m0 = task % j->m_tasks * j->m_chunk;
  const size_t m1 = m0 + j->m_chunk < m ? m0 + j->m_chunk : m;
  const int8_t* at = j->a + tether_matmul_offset(g, 0, bt);
  const int8_t* bp = j->packed + tether_matmul_offset(g, 1, bt) / (k * n) * j->per;
  const int32_t* col_sums = (const int32_t*)(const void*)(bp + (n * k + 63) / 64 * 64);
  int8_t* yt = j->y + bt * m * n;
  /* All in uint32: two's-complement wrap, equal to TFLite's int32 sum of (a - z_a)(b - z_b). */
  const uint32_t za = (uint32_t)j->a_zero, zb = (uint32_t)j->b_zero;
  const uint32_t zz = (uint32_t)k * za * zb;
  for (size_t i = m0; i < m1; i++) {
    const int8_t* row = at + i * k;
    int32_t row_sum = 0;
    for (size_t kk = 0; kk < k; kk++) row_sum += row[kk];
    const uint32_t row_term = zz - zb * (uint32_t)row_sum;
    for (size_t c = 0; c < n; c++) {
      const int8_t* col = bp + c * k;
      uint32_t dot = 0;
      for (size_t kk = 0; kk < k; kk++) dot += (uint32_t)((int32_t)row[kk] * (int32_t)col[kk]);
      const uint32_t acc = dot + row_term - za * (uint32_t)col_sums[c];
      int32_t v = tether_multiply_by_quantized_multiplier((int32_t)acc, j->multiplier, j->shift) +
                  j->y_zero;
      v = v < j->lo ? j->lo : v;
      yt[i * n + c] = (int8_t)(v > j->hi ? j->hi : v);
    }
  }
}

static void q8_eval(const struct tether_model* model, const tether_node* op, void* const* data,
                    void* scratch, struct tether_pool* pool) {
  const tether_matmul_geometry g = matmul_geometry(model, op);
  const tether_tensor* ta = tether_input(model, op, 0);
  const tether_tensor* tb = tether_input(model, op, 1);
  const tether_tensor* ty = tether_output(model, op, 0);
  const int32_t* words = (const int32_t*)(const void*)op->packed;
  q8_job j;
  j.g = &g;
  j.per = q8_matrix_bytes(&g);
  j.a_src = (const int8_t*)data[op->inputs[0]];
  j.a = j.a_src;
  j.a_t = NULL;
  j.b = (const int8_t*)data[op->inputs[1]];
  j.b_packed = NULL;
  j.y = (int8_t*)data[op->outputs[0]];
  j.a_zero = ta->zero_point;
  j.b_zero = tb->zero_point;
  j.y_zero = ty->zero_point;
  j.multiplier = words[0];
  j.shift = words[1];
  j.lo = -128;
  j.hi = 127;
  tether_q8_activation_range(op->activation, ty->scale, ty->zero_point, &j.lo, &j.hi);
  if (g.batch == 0 || g.m == 0 || g.n == 0) return;
  int8_t* free_at = (int8_t*)scratch;
  if (tb->flags & TETHER_TENSOR_CONSTANT) {
    j.packed = (const int8_t*)((const float*)op->packed + Q8_WORDS_FLOATS);
  } else {
    j.b_packed = free_at;
    j.packed = free_at;
    free_at += g.count[1] * j.per;
    tether_parallelize(pool, q8_pack_task, &j, g.count[1]);
  }
  if (g.adj_a) {
    j.a_t = free_at;
    j.a = free_at;
    tether_parallelize(pool, q8_transpose_task, &j, g.count[0]);
  }
  /* About 4 tasks per thread over all batches, in blocks of rows. */
  const size_t threads = tether_pool_threads(pool);
  const size_t target = threads > 1 ? (4 * threads + g.batch - 1) / g.batch : 1;
  j.m_tasks = target < g.m ? target : g.m;
  j.m_chunk = (g.m + j.m_tasks - 1) / j.m_tasks;
  j.m_tasks = (g.m + j.m_chunk - 1) / j.m_chunk;
  tether_parallelize(pool, q8_gemm_task, &j, g.batch * j.m_tasks);
}

/* ---- float32 / dispatch ------------------------------------------------------------------ */

static tether_status batch_matmul_prepare(const struct tether_model* model, uint32_t op_index,
                                          tether_node* op) {
  const tether_tensor* a = tether_input(model, op, 0);
  const tether_tensor* b = tether_input(model, op, 1);
  const tether_tensor* y = tether_output(model, op, 0);
  const int q8 = a->dtype == TETHER_DTYPE_INT8;
  tether_status status;
  if (q8) {
    status = tether_q8_need_per_tensor(model, op_index, a, "input 0");
    if (status == TETHER_STATUS_SUCCESS) {
      status = tether_q8_need_per_tensor(model, op_index, b, "input 1");
    }
    if (status == TETHER_STATUS_SUCCESS) {
      status = tether_q8_need_per_tensor(model, op_index, y, "output 0");
    }
    if (status == TETHER_STATUS_SUCCESS) {
      status = tether_q8_need_fused_range(model, op_index, op, y);
    }
  } else {
    status = tether_check_f32(model, op_index, a, "input 0");
    if (status == TETHER_STATUS_SUCCESS) status = tether_check_f32(model, op_index, b, "input 1");
    if (status == TETHER_STATUS_SUCCESS) status = tether_check_f32(model, op_index, y, "output 0");
  }
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
  if (q8) return q8_prepare(model, op_index, op, &g);
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
  if (op->quantized) return q8_pack(model, op, packed);
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
  if (op->quantized) {
    q8_eval(model, op, data, scratch, pool);
    return;
  }
  const tether_kernels* kt = model->kernels;
  const tether_matmul_geometry g = matmul_geometry(model, op);
  matmul_job j = {0};
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
