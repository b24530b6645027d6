/*
 * serial.c — the thread pool's stand-in for freestanding builds: no threads, every task runs
 * on the calling thread (threadpool.c is the hosted version).
 */
#include <stddef.h>

#include "compute/compute.h"

tether_status tether_pool_create(const tether_allocator* allocator, uint32_t threads,
                                 struct tether_pool** pool_out) {
  (void)allocator;
  (void)threads;
  *pool_out = NULL;
  return TETHER_STATUS_SUCCESS;
}

void tether_pool_destroy(struct tether_pool* pool) { (void)pool; }

size_t tether_pool_bytes(uint32_t threads) {
  (void)threads;
  return 0;
}

size_t tether_pool_threads(const struct tether_pool* pool) {
  (void)pool;
  return 1;
}

void tether_parallelize(struct tether_pool* pool, tether_task_fn fn, void* context,
                        size_t count) {
  (void)pool;
  for (size_t i = 0; i < count; i++) fn(context, i);
}
