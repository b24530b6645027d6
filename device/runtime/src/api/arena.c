/*
 * arena.c — the activation memory plan of a loaded model, computed once at load so that
 * tether_session_arena_size is a lookup and tether_session_create only binds pointers:
 *
 *   1. Lifetimes: each non-constant tensor lives from the first to the last op that reads or
 *      writes it (inclusive, so an op's inputs never share bytes with its outputs). Graph
 *      inputs live for the whole run, graph outputs from the op that writes them to the end.
 *   2. Placement (plan/): tensors in order of size (largest first, then by index); each one
 *      goes into the smallest gap, among already-placed tensors whose lifetimes overlap its
 *      own, that holds it, or after the highest of them. Offsets and sizes are multiples of 64.
 *   3. Scratch: each op's scratch request lives for that op only and is placed the same way,
 *      among the tensors the op's step keeps alive (best-fit gap, else after them).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "api/api.h"

/* Widens block b's lifetime to step `op` unless its tensor t is a constant. */
static void note_use(const tether_tensor* t, tether_plan_block* b, int32_t op) {
  if (t->flags & TETHER_TENSOR_CONSTANT) return;
  if (b->first < 0 || op < b->first) b->first = op;
  if (op > b->last) b->last = op;
}

tether_status tether_plan_model(struct tether_model* m) {
  tether_tensor* tensors = m->tensors;
  size_t scratch_ops = 0;
  uint64_t scratch = 0;
  for (uint32_t i = 0; i < m->op_count; i++) {
    const uint64_t s = tether_round_block(m->ops[i].scratch_bytes);
    scratch_ops += s > 0;
    if (s > scratch) scratch = s;
  }
  /* The planner's work space, one temporary of the model's allocator (tether_model_memory
   * counts it): a block per tensor and per op with scratch, the placement order, the
   * planner's conflict list, and which tensor or op each block stands for. */
  const size_t n = m->tensor_count + scratch_ops;
  const size_t work_bytes =
      tether_round_block(n * sizeof(tether_plan_block) + 3 * n * sizeof(uint32_t));
  for (uint32_t t = 0; t < m->tensor_count; t++) {
    tensors[t].arena_offset = 0;
    tensors[t].planned = 0;
  }
  for (uint32_t i = 0; i < m->op_count; i++) m->ops[i].scratch_offset = 0;
  uint64_t activations = 0, peak = 0;
  if (n > 0) {
    tether_plan_block* blocks = (tether_plan_block*)tether_model_allocate(m, work_bytes, 16);
    if (blocks == NULL) {
      return tether_set_error(TETHER_STATUS_OUT_OF_MEMORY,
                              "cannot allocate the memory planner's work space");
    }
    uint32_t* order = (uint32_t*)(void*)(blocks + n);
    uint32_t* conflicts = order + n;
    uint32_t* owner = conflicts + n;  /* tensor index, or op index for scratch blocks */
    /* 1. Lifetimes (block t = tensor t for now). */
    for (uint32_t t = 0; t < m->tensor_count; t++) {
      blocks[t].size = tether_round_block(tensors[t].bytes);
      blocks[t].first = -1;
      blocks[t].last = -1;
      blocks[t].offset = 0;
    }
    for (uint32_t i = 0; i < m->op_count; i++) {
      const tether_node* op = &m->ops[i];
      for (uint32_t k = 0; k < op->input_count; k++) {
        const uint32_t t = op->inputs[k];
        if (t != TETHER_NO_TENSOR) note_use(&tensors[t], &blocks[t], (int32_t)i);
      }
      for (uint32_t k = 0; k < op->output_count; k++) {
        note_use(&tensors[op->outputs[k]], &blocks[op->outputs[k]], (int32_t)i);
      }
    }
    const int32_t last_op = m->op_count > 0 ? (int32_t)m->op_count - 1 : 0;
    /* Inputs stay whole from before the first op; outputs from their producer to the end. */
    for (uint32_t k = 0; k < m->input_count + m->output_count; k++) {
      const int is_input = k < m->input_count;
      const uint32_t t = is_input ? m->inputs[k] : m->outputs[k - m->input_count];
      if (tensors[t].flags & TETHER_TENSOR_CONSTANT) continue;
      if (is_input || blocks[t].first < 0) blocks[t].first = 0;
      blocks[t].last = last_op;
    }
    /* 2. The tensors some op or the graph I/O uses, compacted in tensor order. */
    size_t planned = 0;
    for (uint32_t t = 0; t < m->tensor_count; t++) {
      if (blocks[t].first < 0) continue;
      owner[planned] = t;
      blocks[planned++] = blocks[t];
    }
    tether_plan_sort_by_size(blocks, order, planned);
    int fits = tether_plan_place(blocks, order, 0, planned, conflicts, &peak);
    activations = peak;
    /* 3. Each op's scratch, a block living at that op only, placed after the tensors. */
    size_t b = planned;
    for (uint32_t i = 0; i < m->op_count; i++) {
      const uint64_t s = tether_round_block(m->ops[i].scratch_bytes);
      if (s == 0) continue;
      blocks[b].size = s;
      blocks[b].first = blocks[b].last = (int32_t)i;
      blocks[b].offset = 0;
      owner[b] = i;
      order[b] = (uint32_t)b;
      b++;
    }
    if (fits && !tether_plan_place(blocks, order, planned, b, conflicts, &peak)) fits = 2;
    if (fits == 1) {
      for (size_t k = 0; k < planned; k++) {
        tensors[owner[k]].arena_offset = (size_t)blocks[k].offset;
        tensors[owner[k]].planned = 1;
      }
      for (size_t k = planned; k < b; k++) {
        m->ops[owner[k]].scratch_offset = (size_t)blocks[k].offset;
      }
    }
    tether_model_deallocate(m, blocks, work_bytes);
    if (fits == 0) {
      return tether_set_error(TETHER_STATUS_OUT_OF_MEMORY,
                              "the activations do not fit this machine's address space");
    }
    if (fits == 2) {
      return tether_set_error(TETHER_STATUS_OUT_OF_MEMORY,
                              "the arena would need more than half the address space");
    }
  }
  m->activation_bytes = (size_t)activations;
  m->scratch_bytes = (size_t)scratch;
  m->arena_size = (size_t)peak;
  if (m->arena_size == 0) m->arena_size = TETHER_ARENA_ALIGNMENT;
  return TETHER_STATUS_SUCCESS;
}
