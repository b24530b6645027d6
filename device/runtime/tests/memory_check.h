/*
 * memory_check.h — holds tether_model_memory to what tether_model_load really asks of the
 * caller's allocator (test_loader, test_quant, the fuzz target):
 *
 *   tm_compare(file, size, why, cap)   query vs a load through a counting allocator: same
 *                                      status and message; on success the same total, peak,
 *                                      resident and largest block (0 = agree, else `why`)
 *   tm_check_memory(file, size, what)  tm_compare, then a bump allocator of exactly the
 *                                      reported total loads and one byte less fails cleanly
 *
 * Include after tmodel_builder.h (TB_CHECK).
 */
#ifndef TETHER_TESTS_MEMORY_CHECK_H_
#define TETHER_TESTS_MEMORY_CHECK_H_

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tether/tether.h"

/* ---- a counting allocator: every request's size, live bytes, the peak -------------------- */

typedef struct tm_counter {
  size_t calls, blocks, total, live, peak, largest;
  size_t odd;         /* requests whose size is not a multiple of TETHER_ARENA_ALIGNMENT or
                         whose alignment exceeds it */
  size_t fail_at;     /* 1-based call that returns NULL; 0 = none */
} tm_counter;

/* Each block carries its size in a 64-byte prefix, so deallocate knows what it gives back. */
static inline void* tm_count_allocate(void* context, size_t size, size_t alignment) {
  tm_counter* c = (tm_counter*)context;
  c->calls++;
  if (c->fail_at != 0 && c->calls == c->fail_at) return NULL;
  if (size % TETHER_ARENA_ALIGNMENT != 0 || alignment > TETHER_ARENA_ALIGNMENT ||
      (alignment & (alignment - 1)) != 0) {
    c->odd++;
  }
  uint8_t* p = (uint8_t*)aligned_alloc(64, 64 + (size + 63) / 64 * 64);
  if (p == NULL) return NULL;
  memcpy(p, &size, sizeof(size));
  c->blocks++;
  c->total += size;
  c->live += size;
  if (c->live > c->peak) c->peak = c->live;
  if (size > c->largest) c->largest = size;
  return p + 64;
}

static inline void tm_count_deallocate(void* context, void* block) {
  if (block == NULL) return;
  tm_counter* c = (tm_counter*)context;
  uint8_t* p = (uint8_t*)block - 64;
  size_t size;
  memcpy(&size, p, sizeof(size));
  c->blocks--;
  c->live -= size;
  free(p);
}

/* ---- a bump allocator over one buffer that never frees (a microcontroller's pool) -------- */

typedef struct tm_bump {
  uint8_t* base;      /* TETHER_ARENA_ALIGNMENT-aligned */
  size_t capacity, used;
} tm_bump;

static inline void* tm_bump_allocate(void* context, size_t size, size_t alignment) {
  tm_bump* b = (tm_bump*)context;
  size_t at = (b->used + alignment - 1) / alignment * alignment;
  if (at > b->capacity || size > b->capacity - at) return NULL;
  b->used = at + size;
  return b->base + at;
}

static inline void tm_bump_deallocate(void* context, void* block) {
  (void)context;
  (void)block;
}

/* ---- the checks ----------------------------------------------------------------------- */

/* 0 when tether_model_memory agrees with a counted tether_model_load of the image (status,
 * message, and on success every figure); else 1 with the difference in `why`. */
static inline int tm_compare(const uint8_t* file, size_t size, char* why, size_t cap) {
  size_t total = 0, peak = 0, resident = 0, largest = 0;
  tm_counter q = {0, 0, 0, 0, 0, 0, 0, 0};
  const tether_allocator qa = {&q, tm_count_allocate, tm_count_deallocate};
  const tether_status qs = tether_model_memory(file, size, &qa, &total, &peak, &resident,
                                               &largest);
  char query_error[512];
  snprintf(query_error, sizeof(query_error), "%s", tether_last_error());
  tm_counter c = {0, 0, 0, 0, 0, 0, 0, 0};
  const tether_allocator ca = {&c, tm_count_allocate, tm_count_deallocate};
  tether_model_t model = NULL;
  const tether_status ls = tether_model_load(file, size, &ca, &model);
  const size_t resident_seen = c.live;
  int bad = 0;
  if (qs != ls || strcmp(query_error, tether_last_error()) != 0) {
    snprintf(why, cap, "query gave %s '%s', load %s '%s'", tether_status_string(qs),
             query_error, tether_status_string(ls), tether_last_error());
    bad = 1;
  } else if (q.blocks != 0 || q.peak > c.peak) {
    snprintf(why, cap, "the query kept %zu blocks, held up to %zu bytes (load: %zu)", q.blocks,
             q.peak, c.peak);
    bad = 1;
  } else if (ls == TETHER_STATUS_SUCCESS &&
             (total != c.total || peak != c.peak || resident != resident_seen ||
              largest != c.largest || c.odd != 0)) {
    snprintf(why, cap,
             "query total %zu peak %zu resident %zu largest %zu; load asked total %zu peak %zu "
             "resident %zu largest %zu (%zu odd requests)",
             total, peak, resident, largest, c.total, c.peak, resident_seen, c.largest, c.odd);
    bad = 1;
  }
  tether_model_destroy(model);
  if (!bad && c.blocks != 0) {
    snprintf(why, cap, "the load left %zu blocks behind", c.blocks);
    bad = 1;
  }
  return bad;
}

/* Loads `file` from a bump pool of `capacity` bytes; returns the status (model destroyed). */
static inline tether_status tm_bump_load(const uint8_t* file, size_t size, size_t capacity,
                                  int* model_touched) {
  tm_bump pool = {(uint8_t*)aligned_alloc(64, (capacity + 64) / 64 * 64), capacity, 0};
  const tether_allocator a = {&pool, tm_bump_allocate, tm_bump_deallocate};
  tether_model_t model = NULL;
  const tether_status s = tether_model_load(file, size, &a, &model);
  *model_touched = model != NULL;
  tether_model_destroy(model);
  free(pool.base);
  return s;
}

/* tm_compare on a valid image, then: exactly the reported total from a bump pool loads;
 * total - 1 fails with out_of_memory, a message, and *model_out untouched. */
static inline void tm_check_memory(const uint8_t* file, size_t size, const char* what) {
  char why[768];
  TB_CHECK(tm_compare(file, size, why, sizeof(why)) == 0, "%s (%s): %s", what, tether_isa(),
           why);
  size_t total = 0, peak = 0, resident = 0, largest = 0;
  tether_status s = tether_model_memory(file, size, NULL, &total, &peak, &resident, &largest);
  TB_CHECK(s == TETHER_STATUS_SUCCESS, "%s: query: %s", what, tether_last_error());
  if (s != TETHER_STATUS_SUCCESS) return;
  TB_CHECK(largest <= peak && resident <= peak && peak <= total && total % 64 == 0,
           "%s: figures out of order: largest %zu resident %zu peak %zu total %zu", what,
           largest, resident, peak, total);
  int touched = 0;
  s = tm_bump_load(file, size, total, &touched);
  TB_CHECK(s == TETHER_STATUS_SUCCESS, "%s (%s): a pool of exactly %zu bytes: %s", what,
           tether_isa(), total, tether_last_error());
  s = tm_bump_load(file, size, total - 1, &touched);
  TB_CHECK(s == TETHER_STATUS_OUT_OF_MEMORY && !touched &&
               strstr(tether_last_error(), "cannot allocate") != NULL,
           "%s (%s): a pool of %zu bytes (one short): %s, '%s'", what, tether_isa(), total - 1,
           tether_status_string(s), tether_last_error());
}

/* tm_check_memory under every ISA this CPU and build have (the packed sizes follow the
 * kernels); the ISA in force before is restored. */
static inline void tm_check_memory_every_isa(const uint8_t* file, size_t size,
                                             const char* what) {
  static const char* const kIsas[] = {"scalar", "avx2", "avx512", "neon"};
  const char* before = tether_isa();
  for (size_t i = 0; i < sizeof(kIsas) / sizeof(kIsas[0]); i++) {
    if (tether_set_isa(kIsas[i]) == TETHER_STATUS_SUCCESS) tm_check_memory(file, size, what);
  }
  tether_set_isa(before);
}

#endif  /* TETHER_TESTS_MEMORY_CHECK_H_ */
