/*
 * plan.h — the arena planner: places blocks of known size and lifetime (a step range) at
 * offsets in one arena so that blocks whose lifetimes overlap never share bytes. It knows
 * nothing of models; api/arena.c turns tensors and op scratch into blocks. Includes nothing
 * of the engine.
 */
#ifndef TETHER_PLAN_H_
#define TETHER_PLAN_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tether_plan_block {
  uint64_t size;       /* bytes (callers round to their alignment, so offsets stay aligned) */
  int32_t first, last; /* the steps it lives through, inclusive */
  uint64_t offset;     /* set by tether_plan_place */
} tether_plan_block;

/* order[0..n) = 0..n-1 sorted larger first, equal sizes by index (reproducible plans). */
void tether_plan_sort_by_size(const tether_plan_block* blocks, uint32_t* order, size_t n);

/*
 * Places blocks[order[begin..end)] one after another: each goes into the smallest gap, among
 * the blocks placed before it in `order` whose lifetimes overlap its own, that holds it, or
 * after the highest of them. `conflicts` is work space for `end` entries. *peak grows to the
 * end of the highest block placed. Returns 0 when an offset would pass half the address
 * space (nothing is placed past that block), 1 otherwise.
 */
int tether_plan_place(tether_plan_block* blocks, const uint32_t* order, size_t begin, size_t end,
                      uint32_t* conflicts, uint64_t* peak);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* TETHER_PLAN_H_ */
