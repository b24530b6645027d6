/*
 * session.c — the activation memory plan, session lifecycle and op dispatch.
 *
 * The plan is computed once per model at load time (tether_plan_memory), so that
 * tether_session_arena_size is a lookup and tether_session_create only binds pointers:
 *
 *   1. Lifetimes: each non-constant tensor lives from the first to the last op that reads or
 *      writes it (inclusive, so an op's inputs never share bytes with its outputs). Graph
 *      inputs live for the whole run, graph outputs from the op that writes them to the end.
 *   2. Placement: tensors in order of size (largest first, then by index); each one goes into
 *      the smallest gap, among already-placed tensors whose lifetimes overlap its own, that
 *      holds it, or after the highest of them. Offsets and sizes are multiples of 64.
 *   3. Scratch: each op's scratch request lives for that op only and is placed the same way,
 *      among the tensors the op's step keeps alive (best-fit gap, else after them).
 *
 * num_threads > 1 starts a thread pool at create (threadpool.c): convolutions, dense layers
 * and depthwise convolutions split their output rows/column panels over it, each output
 * element computed the same way whatever the split, so results are bit-identical for any
 * thread count. The arena plan does not depend on the thread count.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

#define PLAN_ALIGN ((uint64_t)TETHER_ARENA_ALIGNMENT)

struct tether_session {
  const struct tether_model* model;
  uint8_t* arena;
  int owns_arena;
  struct tether_pool* pool;  /* NULL = the calling thread only */
  int profiling;
  uint64_t* op_ns;           /* per op: nanoseconds summed over profiled invokes */
  uint64_t profiled_invokes;
  void** data;  /* per tensor: constant bytes in the model, arena storage, or NULL */
};

static uint64_t planned_bytes(const tether_tensor* t) {
  return ((uint64_t)t->bytes + PLAN_ALIGN - 1) / PLAN_ALIGN * PLAN_ALIGN;
}

static void note_use(tether_tensor* t, int32_t op) {
  if (t->flags & TETHER_TENSOR_CONSTANT) return;
  if (t->first_use < 0 || op < t->first_use) t->first_use = op;
  if (op > t->last_use) t->last_use = op;
}

/* Larger first; equal sizes by tensor index, so plans are reproducible. */
static int placed_before(const tether_tensor* tensors, uint32_t a, uint32_t b) {
  uint64_t sa = planned_bytes(&tensors[a]), sb = planned_bytes(&tensors[b]);
  return sa != sb ? sa > sb : a < b;
}

static void sift_down(const tether_tensor* tensors, uint32_t* order, size_t root, size_t n) {
  for (;;) {
    size_t child = 2 * root + 1;
    if (child >= n) return;
    /* Max-heap on "placed later", so that the sorted array runs in placement order. */
    if (child + 1 < n && placed_before(tensors, order[child], order[child + 1])) child++;
    if (!placed_before(tensors, order[root], order[child])) return;
    uint32_t tmp = order[root];
    order[root] = order[child];
    order[child] = tmp;
    root = child;
  }
}

static void sort_by_size(const tether_tensor* tensors, uint32_t* order, size_t n) {
  for (size_t i = n / 2; i-- > 0;) sift_down(tensors, order, i, n);
  for (size_t end = n; end-- > 1;) {
    uint32_t tmp = order[0];
    order[0] = order[end];
    order[end] = tmp;
    sift_down(tensors, order, 0, end);
  }
}

static int lifetimes_overlap(const tether_tensor* a, const tether_tensor* b) {
  return a->first_use <= b->last_use && b->first_use <= a->last_use;
}

/* Inserts tensor `t` into conflicts[0..c) kept sorted by arena offset; returns c + 1. */
static size_t insert_by_offset(const tether_tensor* tensors, uint32_t* conflicts, size_t c,
                               uint32_t t) {
  size_t k = c;
  while (k > 0 && tensors[conflicts[k - 1]].arena_offset > tensors[t].arena_offset) {
    conflicts[k] = conflicts[k - 1];
    k--;
  }
  conflicts[k] = t;
  return c + 1;
}

/* The smallest gap between the placed tensors conflicts[0..c) (sorted by offset) that holds
 * `size` bytes, or the end of the highest of them. */
static uint64_t best_fit(const tether_tensor* tensors, const uint32_t* conflicts, size_t c,
                         uint64_t size) {
  uint64_t cursor = 0, best = UINT64_MAX, best_gap = UINT64_MAX;
  for (size_t k = 0; k < c; k++) {
    const tether_tensor* p = &tensors[conflicts[k]];
    uint64_t gap = p->arena_offset > cursor ? p->arena_offset - cursor : 0;
    if (gap >= size && gap < best_gap) {
      best = cursor;
      best_gap = gap;
    }
    uint64_t end = (uint64_t)p->arena_offset + planned_bytes(p);
    if (end > cursor) cursor = end;
  }
  return best != UINT64_MAX ? best : cursor;
}

tether_status tether_plan_memory(struct tether_model* m) {
  tether_tensor* tensors = m->tensors;
  for (uint32_t t = 0; t < m->tensor_count; t++) {
    tensors[t].first_use = -1;
    tensors[t].last_use = -1;
    tensors[t].arena_offset = 0;
  }
  uint64_t scratch = 0;
  for (uint32_t i = 0; i < m->op_count; i++) {
    const tether_node* op = &m->ops[i];
    for (uint32_t k = 0; k < op->input_count; k++) {
      if (op->inputs[k] != TETHER_NO_TENSOR) note_use(&tensors[op->inputs[k]], (int32_t)i);
    }
    for (uint32_t k = 0; k < op->output_count; k++) note_use(&tensors[op->outputs[k]], (int32_t)i);
    uint64_t s = ((uint64_t)op->scratch_bytes + PLAN_ALIGN - 1) / PLAN_ALIGN * PLAN_ALIGN;
    if (s > scratch) scratch = s;
  }
  int32_t last_op = m->op_count > 0 ? (int32_t)m->op_count - 1 : 0;
  /* Inputs stay whole from before the first op; outputs from their producer to the end. */
  for (uint32_t k = 0; k < m->input_count + m->output_count; k++) {
    const int is_input = k < m->input_count;
    tether_tensor* t = &tensors[is_input ? m->inputs[k] : m->outputs[k - m->input_count]];
    if (t->flags & TETHER_TENSOR_CONSTANT) continue;
    if (is_input || t->first_use < 0) t->first_use = 0;
    t->last_use = last_op;
  }

  size_t planned = 0;
  for (uint32_t t = 0; t < m->tensor_count; t++) planned += tensors[t].first_use >= 0;
  uint64_t peak = 0;
  uint32_t* order = NULL;
  uint32_t* conflicts = NULL;
  /* The planner's work space: a temporary of the model's allocator (tether_model_memory
   * counts it). */
  const size_t order_bytes = tether_round_block(2 * planned * sizeof(uint32_t));
  if (planned > 0) {
    order = (uint32_t*)tether_model_allocate(m, order_bytes, 16);
    if (order == NULL) {
      return tether_set_error(TETHER_STATUS_OUT_OF_MEMORY,
                              "cannot allocate the memory planner's work space");
    }
    conflicts = order + planned;
    size_t n = 0;
    for (uint32_t t = 0; t < m->tensor_count; t++) {
      if (tensors[t].first_use >= 0) order[n++] = t;
    }
    sort_by_size(tensors, order, n);
    for (size_t i = 0; i < n; i++) {
      tether_tensor* t = &tensors[order[i]];
      uint64_t size = planned_bytes(t);
      /* Placed tensors whose lifetimes overlap this one, sorted by offset (insertion). */
      size_t c = 0;
      for (size_t j = 0; j < i; j++) {
        if (lifetimes_overlap(t, &tensors[order[j]])) {
          c = insert_by_offset(tensors, conflicts, c, order[j]);
        }
      }
      uint64_t offset = best_fit(tensors, conflicts, c, size);
      if (offset > SIZE_MAX / 2 || size > SIZE_MAX / 2 - offset) {
        tether_model_deallocate(m, order, order_bytes);
        return tether_set_error(TETHER_STATUS_OUT_OF_MEMORY,
                                "the activations do not fit this machine's address space");
      }
      t->arena_offset = (size_t)offset;
      if (offset + size > peak) peak = offset + size;
    }
  }
  const uint64_t activations = peak;
  /* Each op's scratch, among the tensors live at that op. */
  for (uint32_t i = 0; i < m->op_count; i++) {
    tether_node* op = &m->ops[i];
    const uint64_t size = ((uint64_t)op->scratch_bytes + PLAN_ALIGN - 1) / PLAN_ALIGN * PLAN_ALIGN;
    op->scratch_offset = 0;
    if (size == 0) continue;
    size_t c = 0;
    for (size_t j = 0; j < planned; j++) {
      const tether_tensor* p = &tensors[order[j]];
      if (p->first_use <= (int32_t)i && (int32_t)i <= p->last_use) {
        c = insert_by_offset(tensors, conflicts, c, order[j]);
      }
    }
    const uint64_t offset = best_fit(tensors, conflicts, c, size);
    if (offset > SIZE_MAX / 2 || size > SIZE_MAX / 2 - offset) {
      tether_model_deallocate(m, order, order_bytes);
      return tether_set_error(TETHER_STATUS_OUT_OF_MEMORY,
                              "the arena would need more than half the address space");
    }
    op->scratch_offset = (size_t)offset;
    if (offset + size > peak) peak = offset + size;
  }
  tether_model_deallocate(m, order, order_bytes);
  m->activation_bytes = (size_t)activations;
  m->scratch_bytes = (size_t)scratch;
  m->arena_size = (size_t)peak;
  if (m->arena_size == 0) m->arena_size = (size_t)PLAN_ALIGN;
  return TETHER_STATUS_SUCCESS;
}

/* ---- lifecycle ------------------------------------------------------------------------ */

tether_status tether_session_arena_size(tether_model_t model, size_t* size_out) {
  if (model == NULL || size_out == NULL) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "NULL model or size_out");
  }
  *size_out = model->arena_size;
  return TETHER_STATUS_SUCCESS;
}

tether_status tether_session_create(tether_model_t model, void* arena, size_t arena_size,
                                    uint32_t num_threads, tether_session_t* session_out) {
  if (model == NULL || session_out == NULL) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "NULL model or session_out");
  }
  if (arena != NULL) {
    if ((uintptr_t)arena % TETHER_ARENA_ALIGNMENT != 0) {
      return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT,
                              "arena is not %u-byte aligned", (unsigned)TETHER_ARENA_ALIGNMENT);
    }
    if (arena_size < model->arena_size) {
      return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT,
                              "arena has %zu bytes, the model needs %zu", arena_size,
                              model->arena_size);
    }
  }
  const tether_allocator* a = &model->allocator;
  size_t header = (sizeof(struct tether_session) + 15) & ~(size_t)15;
  if (model->tensor_count > (SIZE_MAX - header) / sizeof(void*)) {
    return tether_set_error(TETHER_STATUS_OUT_OF_MEMORY, "too many tensors");
  }
  if (model->op_count > (SIZE_MAX - header) / sizeof(uint64_t) - model->tensor_count) {
    return tether_set_error(TETHER_STATUS_OUT_OF_MEMORY, "too many ops");
  }
  size_t total = header + (size_t)model->op_count * sizeof(uint64_t) +
                 (size_t)model->tensor_count * sizeof(void*);
  uint8_t* block = (uint8_t*)a->allocate(a->context, total, 16);
  if (block == NULL) {
    return tether_set_error(TETHER_STATUS_OUT_OF_MEMORY,
                            "cannot allocate %zu bytes for the session", total);
  }
  memset(block, 0, total);
  struct tether_session* s = (struct tether_session*)block;
  s->model = model;
  s->op_ns = (uint64_t*)(block + header);
  s->data = (void**)(block + header + (size_t)model->op_count * sizeof(uint64_t));
  if (arena == NULL) {
    arena = a->allocate(a->context, model->arena_size, TETHER_ARENA_ALIGNMENT);
    if (arena == NULL) {
      a->deallocate(a->context, block);
      return tether_set_error(TETHER_STATUS_OUT_OF_MEMORY,
                              "cannot allocate the %zu-byte arena", model->arena_size);
    }
    s->owns_arena = 1;
  }
  s->arena = (uint8_t*)arena;
  for (uint32_t t = 0; t < model->tensor_count; t++) {
    const tether_tensor* tt = &model->tensors[t];
    if (tt->flags & TETHER_TENSOR_CONSTANT) {
      s->data[t] = (void*)(uintptr_t)tt->data;  /* kernels never write their inputs */
    } else if (tt->first_use >= 0) {
      s->data[t] = s->arena + tt->arena_offset;
    }
  }
  tether_status status = tether_pool_create(a, num_threads, &s->pool);
  if (status != TETHER_STATUS_SUCCESS) {
    if (s->owns_arena) a->deallocate(a->context, s->arena);
    a->deallocate(a->context, block);
    return status;
  }
  /* Inputs start as zeros, so invoke before set_input reads defined memory. */
  for (uint32_t i = 0; i < model->input_count; i++) {
    const tether_tensor* tt = &model->tensors[model->inputs[i]];
    memset(s->data[model->inputs[i]], 0, tt->bytes);
  }
  tether_clear_error();
  *session_out = s;
  return TETHER_STATUS_SUCCESS;
}

void tether_session_destroy(tether_session_t session) {
  if (session == NULL) return;
  const tether_allocator* a = &session->model->allocator;
  tether_pool_destroy(session->pool);
  if (session->owns_arena) a->deallocate(a->context, session->arena);
  a->deallocate(a->context, session);
}

/* ---- use ------------------------------------------------------------------------------ */

static tether_status io_lookup(tether_session_t s, tether_io kind, size_t index,
                               const tether_tensor** t_out, void** data_out) {
  if (s == NULL) return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "session is NULL");
  const struct tether_model* m = s->model;
  size_t count = kind == TETHER_IO_INPUT ? m->input_count
                 : kind == TETHER_IO_OUTPUT ? m->output_count
                                            : 0;
  if (index >= count) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "%s index %zu out of range [0, %zu)",
                            kind == TETHER_IO_INPUT ? "input" : "output", index, count);
  }
  uint32_t t = kind == TETHER_IO_INPUT ? m->inputs[index] : m->outputs[index];
  *t_out = &m->tensors[t];
  *data_out = s->data[t];
  return TETHER_STATUS_SUCCESS;
}

tether_status tether_session_set_input(tether_session_t session, size_t index, const void* data,
                                       size_t size) {
  const tether_tensor* t = NULL;
  void* storage = NULL;
  tether_status status = io_lookup(session, TETHER_IO_INPUT, index, &t, &storage);
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (data == NULL) return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "data is NULL");
  if (size != t->bytes) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT,
                            "input %zu '%s' holds %zu bytes, got %zu", index, t->name, t->bytes,
                            size);
  }
  memcpy(storage, data, size);
  return TETHER_STATUS_SUCCESS;
}

tether_status tether_session_get_output(tether_session_t session, size_t index, void* data,
                                        size_t size) {
  const tether_tensor* t = NULL;
  void* storage = NULL;
  tether_status status = io_lookup(session, TETHER_IO_OUTPUT, index, &t, &storage);
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (data == NULL) return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "data is NULL");
  if (size != t->bytes) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT,
                            "output %zu '%s' holds %zu bytes, got %zu", index, t->name,
                            t->bytes, size);
  }
  memcpy(data, storage, size);
  return TETHER_STATUS_SUCCESS;
}

tether_status tether_session_io_data(tether_session_t session, tether_io kind, size_t index,
                                     void** data_out) {
  const tether_tensor* t = NULL;
  void* storage = NULL;
  tether_status status = io_lookup(session, kind, index, &t, &storage);
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (data_out == NULL) return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "data_out is NULL");
  *data_out = storage;
  return TETHER_STATUS_SUCCESS;
}

tether_status tether_session_invoke(tether_session_t session) {
  if (session == NULL) return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "session is NULL");
  const struct tether_model* m = session->model;
  if (session->profiling) {
    for (uint32_t i = 0; i < m->op_count; i++) {
      const uint64_t t0 = tether_now_ns();
      tether_op_eval_parallel(m, i, session->data, session->arena + m->ops[i].scratch_offset,
                              session->pool);
      session->op_ns[i] += tether_now_ns() - t0;
    }
    session->profiled_invokes++;
    return TETHER_STATUS_SUCCESS;
  }
  for (uint32_t i = 0; i < m->op_count; i++) {
    tether_op_eval_parallel(m, i, session->data, session->arena + m->ops[i].scratch_offset,
                              session->pool);
  }
  return TETHER_STATUS_SUCCESS;
}

tether_status tether_session_set_profiling(tether_session_t session, bool enable) {
  if (session == NULL) return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "session is NULL");
  if (enable && tether_now_ns() == 0) {
    return tether_set_error(TETHER_STATUS_UNSUPPORTED_HARDWARE,
                            "this build has no clock (freestanding); profiling is unavailable");
  }
  session->profiling = enable ? 1 : 0;
  for (uint32_t i = 0; i < session->model->op_count; i++) session->op_ns[i] = 0;
  session->profiled_invokes = 0;
  return TETHER_STATUS_SUCCESS;
}

tether_status tether_session_op_profile(tether_session_t session, size_t op_index,
                                        tether_op* type_out, double* ms_out) {
  if (session == NULL || type_out == NULL || ms_out == NULL) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "NULL session or output pointer");
  }
  if (op_index >= session->model->op_count) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "op index %zu out of range [0, %u)",
                            op_index, session->model->op_count);
  }
  *type_out = (tether_op)session->model->ops[op_index].type;
  *ms_out = session->profiled_invokes == 0
                ? 0.0
                : (double)session->op_ns[op_index] / 1e6 / (double)session->profiled_invokes;
  return TETHER_STATUS_SUCCESS;
}
