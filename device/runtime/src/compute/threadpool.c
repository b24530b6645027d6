/*
 * threadpool.c — a small pthread pool for invoke (hosted builds; serial.c stands in for it
 * in freestanding builds).
 *
 * One job at a time: tether_parallelize writes (fn, context), then publishes one 64-bit
 * state word = generation (16 bits) | task count (24) | next task (24) and wakes the
 * workers. Every thread, the caller included, claims tasks by compare-and-swap on that word,
 * which fails once the word belongs to another job, so a slow worker can never claim a task
 * of the next job with the previous job's parameters. The caller waits until `done` reaches
 * the count.
 * Workers spin briefly on the state word before sleeping on the condition variable, since
 * ops follow one another within microseconds during invoke; the caller, once out of tasks,
 * spins briefly and then yields until the last task is done.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "compute/compute.h"

#define MAX_THREADS TETHER_MAX_THREADS
#define SPIN_ROUNDS 4000
#define WAIT_SPINS 256

struct tether_pool {
  tether_allocator allocator;
  size_t threads;  /* workers + the caller */
  pthread_t workers[MAX_THREADS];
  size_t started;
  pthread_mutex_t mutex;
  pthread_cond_t wake;
  atomic_uint_least64_t state;  /* generation << 48 | count << 24 | next */
  atomic_int stop;
  /* The current job (written before `state` is published). */
  tether_task_fn fn;
  void* context;
  atomic_size_t done;
};

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __asm__ volatile("pause");
#elif defined(__aarch64__) || defined(__arm__)
  __asm__ volatile("yield");
#endif
}

#define GEN(s) ((unsigned)((s) >> 48))
#define COUNT(s) ((size_t)(((s) >> 24) & 0xFFFFFFu))
#define NEXT(s) ((size_t)((s) & 0xFFFFFFu))

/* Claims and runs tasks of job `gen` until none is left or the job is no longer current. */
static void run_tasks(struct tether_pool* p, unsigned gen) {
  uint_least64_t s = atomic_load_explicit(&p->state, memory_order_acquire);
  for (;;) {
    if (GEN(s) != gen || NEXT(s) >= COUNT(s)) return;
    if (!atomic_compare_exchange_weak_explicit(&p->state, &s, s + 1, memory_order_acq_rel,
                                               memory_order_acquire)) {
      continue;  /* s now holds the current word */
    }
    p->fn(p->context, NEXT(s));
    atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
    s = atomic_load_explicit(&p->state, memory_order_acquire);
  }
}

static void* worker_main(void* arg) {
  struct tether_pool* p = (struct tether_pool*)arg;
  unsigned seen = GEN(atomic_load_explicit(&p->state, memory_order_acquire));
  for (;;) {
    unsigned now = seen;
    for (int spin = 0; spin < SPIN_ROUNDS; spin++) {
      now = GEN(atomic_load_explicit(&p->state, memory_order_acquire));
      if (now != seen || atomic_load_explicit(&p->stop, memory_order_relaxed)) break;
      cpu_relax();
    }
    if (now == seen && !atomic_load_explicit(&p->stop, memory_order_relaxed)) {
      pthread_mutex_lock(&p->mutex);
      while ((now = GEN(atomic_load_explicit(&p->state, memory_order_acquire))) == seen &&
             !atomic_load_explicit(&p->stop, memory_order_relaxed)) {
        pthread_cond_wait(&p->wake, &p->mutex);
      }
      pthread_mutex_unlock(&p->mutex);
    }
    if (atomic_load_explicit(&p->stop, memory_order_acquire)) return NULL;
    seen = now;
    run_tasks(p, now);
  }
}

tether_status tether_pool_create(const tether_allocator* a, uint32_t threads,
                                 struct tether_pool** pool_out) {
  *pool_out = NULL;
  if (threads <= 1) return TETHER_STATUS_SUCCESS;
  if (threads > MAX_THREADS) threads = MAX_THREADS;
  struct tether_pool* p = (struct tether_pool*)a->allocate(a->context, sizeof(*p), 64);
  if (p == NULL) {
    return tether_set_error(TETHER_STATUS_OUT_OF_MEMORY, "cannot allocate the thread pool");
  }
  memset(p, 0, sizeof(*p));
  p->allocator = *a;
  p->threads = threads;
  atomic_init(&p->state, 0);
  atomic_init(&p->stop, 0);
  atomic_init(&p->done, 0);
  pthread_mutex_init(&p->mutex, NULL);
  pthread_cond_init(&p->wake, NULL);
  for (size_t i = 0; i + 1 < threads; i++) {
    if (pthread_create(&p->workers[i], NULL, worker_main, p) != 0) {
      tether_pool_destroy(p);
      return tether_set_error(TETHER_STATUS_OUT_OF_MEMORY,
                              "cannot start worker thread %zu of %u", i + 1, (unsigned)threads);
    }
    p->started++;
  }
  *pool_out = p;
  return TETHER_STATUS_SUCCESS;
}

size_t tether_pool_bytes(uint32_t threads) {
  return threads <= 1 ? 0 : sizeof(struct tether_pool);
}

void tether_pool_destroy(struct tether_pool* p) {
  if (p == NULL) return;
  pthread_mutex_lock(&p->mutex);
  atomic_store_explicit(&p->stop, 1, memory_order_release);
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->mutex);
  for (size_t i = 0; i < p->started; i++) pthread_join(p->workers[i], NULL);
  pthread_cond_destroy(&p->wake);
  pthread_mutex_destroy(&p->mutex);
  tether_allocator a = p->allocator;
  a.deallocate(a.context, p);
}

size_t tether_pool_threads(const struct tether_pool* p) { return p != NULL ? p->threads : 1; }

void tether_parallelize(struct tether_pool* p, tether_task_fn fn, void* context, size_t count) {
  if (p == NULL || count <= 1 || count > 0xFFFFFFu) {
    for (size_t i = 0; i < count; i++) fn(context, i);
    return;
  }
  p->fn = fn;
  p->context = context;
  atomic_store_explicit(&p->done, 0, memory_order_relaxed);
  const unsigned gen =
      (GEN(atomic_load_explicit(&p->state, memory_order_relaxed)) + 1u) & 0xFFFFu;
  pthread_mutex_lock(&p->mutex);
  atomic_store_explicit(&p->state, (uint_least64_t)gen << 48 | (uint_least64_t)count << 24,
                        memory_order_release);
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->mutex);
  run_tasks(p, gen);
  /* Spin briefly, then yield: on a loaded machine the worker holding the last task may be
   * waiting for this very core. */
  for (unsigned spin = 0; atomic_load_explicit(&p->done, memory_order_acquire) < count; spin++) {
    if (spin < WAIT_SPINS) {
      cpu_relax();
    } else {
      sched_yield();
    }
  }
}
