/*
 * plan.c — best-fit placement of blocks by size and lifetime (plan.h).
 */
#include <stddef.h>
#include <stdint.h>

#include "plan/plan.h"

/* Larger first; equal sizes by index, so plans are reproducible. */
static int placed_before(const tether_plan_block* blocks, uint32_t a, uint32_t b) {
  const uint64_t sa = blocks[a].size, sb = blocks[b].size;
  return sa != sb ? sa > sb : a < b;
}

static void sift_down(const tether_plan_block* blocks, uint32_t* order, size_t root, size_t n) {
  for (;;) {
    size_t child = 2 * root + 1;
    if (child >= n) return;
    /* Max-heap on "placed later", so that the sorted array runs in placement order. */
    if (child + 1 < n && placed_before(blocks, order[child], order[child + 1])) child++;
    if (!placed_before(blocks, order[root], order[child])) return;
    uint32_t tmp = order[root];
    order[root] = order[child];
    order[child] = tmp;
    root = child;
  }
}

void tether_plan_sort_by_size(const tether_plan_block* blocks, uint32_t* order, size_t n) {
  for (size_t i = 0; i < n; i++) order[i] = (uint32_t)i;
  for (size_t i = n / 2; i-- > 0;) sift_down(blocks, order, i, n);
  for (size_t end = n; end-- > 1;) {
    uint32_t tmp = order[0];
    order[0] = order[end];
    order[end] = tmp;
    sift_down(blocks, order, 0, end);
  }
}

static int lifetimes_overlap(const tether_plan_block* a, const tether_plan_block* b) {
  return a->first <= b->last && b->first <= a->last;
}

/* Inserts block `b` into conflicts[0..c) kept sorted by offset; returns c + 1. */
static size_t insert_by_offset(const tether_plan_block* blocks, uint32_t* conflicts, size_t c,
                               uint32_t b) {
  size_t k = c;
  while (k > 0 && blocks[conflicts[k - 1]].offset > blocks[b].offset) {
    conflicts[k] = conflicts[k - 1];
    k--;
  }
  conflicts[k] = b;
  return c + 1;
}

/* The smallest gap between the placed blocks conflicts[0..c) (sorted by offset) that holds
 * `size` bytes, or the end of the highest of them. */
static uint64_t best_fit(const tether_plan_block* blocks, const uint32_t* conflicts, size_t c,
                         uint64_t size) {
  uint64_t cursor = 0, best = UINT64_MAX, best_gap = UINT64_MAX;
  for (size_t k = 0; k < c; k++) {
    const tether_plan_block* p = &blocks[conflicts[k]];
    uint64_t gap = p->offset > cursor ? p->offset - cursor : 0;
    if (gap >= size && gap < best_gap) {
      best = cursor;
      best_gap = gap;
    }
    uint64_t end = p->offset + p->size;
    if (end > cursor) cursor = end;
  }
  return best != UINT64_MAX ? best : cursor;
}

int tether_plan_place(tether_plan_block* blocks, const uint32_t* order, size_t begin, size_t end,
                      uint32_t* conflicts, uint64_t* peak) {
  for (size_t i = begin; i < end; i++) {
    tether_plan_block* b = &blocks[order[i]];
    /* Placed blocks whose lifetimes overlap this one, sorted by offset (insertion). */
    size_t c = 0;
    for (size_t j = 0; j < i; j++) {
      if (lifetimes_overlap(b, &blocks[order[j]])) c = insert_by_offset(blocks, conflicts, c, order[j]);
    }
    const uint64_t offset = best_fit(blocks, conflicts, c, b->size);
    if (offset > SIZE_MAX / 2 || b->size > SIZE_MAX / 2 - offset) return 0;
    b->offset = offset;
    if (offset + b->size > *peak) *peak = offset + b->size;
  }
  return 1;
}
