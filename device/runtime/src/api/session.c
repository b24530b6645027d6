/*
 * session.c — session lifecycle, graph I/O and op dispatch over the arena planned at load
 * (arena.c):
 *
 * num_threads > 1 starts a thread pool at create (compute/threadpool.c): convolutions, dense layers
 * and depthwise convolutions split their output rows/column panels over it, each output
 * element computed the same way whatever the split, so results are bit-identical for any
 * thread count. The arena plan does not depend on the thread count.
 */
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "api/api.h"

struct tether_session {
  const struct tether_model* model;
  uint8_t* arena;
  int owns_arena;
  struct tether_pool* pool;  /* NULL = the calling thread only */
  int profiling;
  uint64_t* op_ns;           /* per op: nanoseconds summed over profiled invokes */
  uint64_t profiled_invokes;
  void** data;  /* per tensor: constant bytes in the model, arena storage, or NULL */
  atomic_flag busy;          /* set while an invoke runs: a second caller is refused */
};

/* ---- lifecycle ------------------------------------------------------------------------ */

tether_status tether_session_arena_size(tether_model_t model, size_t* size_out) {
  if (model == NULL || size_out == NULL) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "NULL model or size_out");
  }
  *size_out = model->arena_size;
  return TETHER_STATUS_SUCCESS;
}

static size_t session_header_bytes(void) {
  return (sizeof(struct tether_session) + 15) & ~(size_t)15;
}

static size_t round_to_alignment(size_t n) {
  return (n + TETHER_ARENA_ALIGNMENT - 1) / TETHER_ARENA_ALIGNMENT * TETHER_ARENA_ALIGNMENT;
}

/* The one block a session asks its model's allocator for: the struct, per-op profile sums
 * and per-tensor data pointers, rounded up to TETHER_ARENA_ALIGNMENT bytes (the requests
 * tether_model_memory counts are rounded the same way). */
static tether_status session_block_bytes(const struct tether_model* model, size_t* bytes_out) {
  const size_t header = session_header_bytes();
  if (model->tensor_count > (SIZE_MAX - header) / sizeof(void*)) {
    return tether_set_error(TETHER_STATUS_OUT_OF_MEMORY, "too many tensors");
  }
  if (model->op_count > (SIZE_MAX - header) / sizeof(uint64_t) - model->tensor_count) {
    return tether_set_error(TETHER_STATUS_OUT_OF_MEMORY, "too many ops");
  }
  *bytes_out = round_to_alignment(header + (size_t)model->op_count * sizeof(uint64_t) +
                                  (size_t)model->tensor_count * sizeof(void*));
  return TETHER_STATUS_SUCCESS;
}

tether_status tether_session_memory(tether_model_t model, uint32_t num_threads,
                                    size_t* bytes_out) {
  if (model == NULL || bytes_out == NULL) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "NULL model or bytes_out");
  }
  size_t block = 0;
  tether_status status = session_block_bytes(model, &block);
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (num_threads > TETHER_MAX_THREADS) num_threads = TETHER_MAX_THREADS;
  *bytes_out = block + round_to_alignment(tether_pool_bytes(num_threads));
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
  if (num_threads > TETHER_MAX_THREADS) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT,
                            "num_threads is %u; a session runs on at most %u threads",
                            (unsigned)num_threads, (unsigned)TETHER_MAX_THREADS);
  }
  const tether_allocator* a = &model->allocator;
  size_t total = 0;
  tether_status status = session_block_bytes(model, &total);
  if (status != TETHER_STATUS_SUCCESS) return status;
  const size_t header = session_header_bytes();
  uint8_t* block = (uint8_t*)a->allocate(a->context, total, 16);
  if (block == NULL) {
    return tether_set_error(TETHER_STATUS_OUT_OF_MEMORY,
                            "cannot allocate %zu bytes for the session", total);
  }
  memset(block, 0, total);
  struct tether_session* s = (struct tether_session*)block;
  atomic_flag_clear(&s->busy);
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
    } else if (tt->planned) {
      s->data[t] = s->arena + tt->arena_offset;
    }
  }
  status = tether_pool_create(a, num_threads, &s->pool);
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

static tether_status invoke(tether_session_t session);

tether_status tether_session_invoke(tether_session_t session) {
  if (session == NULL) return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "session is NULL");
  /* One thread at a time (tether.h): a concurrent invoke would share the arena and the
   * pool's job slot, so it is refused instead of racing. */
  if (atomic_flag_test_and_set_explicit(&session->busy, memory_order_acquire)) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT,
                            "session is being invoked by another thread; a session serves "
                            "one thread at a time (create one per thread)");
  }
  tether_status status = invoke(session);
  atomic_flag_clear_explicit(&session->busy, memory_order_release);
  return status;
}

static tether_status invoke(tether_session_t session) {
  const struct tether_model* m = session->model;
  /* An op's run-time check (a GATHER index out of range) stops the invoke with its status;
   * the outputs are then undefined. */
  if (session->profiling) {
    for (uint32_t i = 0; i < m->op_count; i++) {
      const uint64_t t0 = tether_now_ns();
      const tether_status status =
          tether_op_eval_parallel(m, i, session->data, session->arena + m->ops[i].scratch_offset,
                                  m->ops[i].serial ? NULL : session->pool);
      session->op_ns[i] += tether_now_ns() - t0;
      if (status != TETHER_STATUS_SUCCESS) return status;
    }
    session->profiled_invokes++;
    return TETHER_STATUS_SUCCESS;
  }
  for (uint32_t i = 0; i < m->op_count; i++) {
    const tether_status status =
        tether_op_eval_parallel(m, i, session->data, session->arena + m->ops[i].scratch_offset,
                                m->ops[i].serial ? NULL : session->pool);
    if (status != TETHER_STATUS_SUCCESS) return status;
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
