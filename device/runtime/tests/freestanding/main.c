/*
 * main.c — proves the core links and runs with -nostdlib: a static program with its own
 * _start, no C library and no libm (the core's freestanding.c supplies memcpy/expf/...).
 * It builds a small model with the test builder (whose few libc needs, a bump malloc,
 * strlen and stubs for stdio/exit, are supplied here, not by the core), loads it with a
 * caller allocator, runs it in a caller arena and checks the output against values
 * computed on the host with libm (see the table below); tether_model_memory sizes a static
 * pool the model then loads from to the byte; then a trainer fits a dense head in a caller
 * arena (train(), below). Exit status 0 = pass.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tether/tether.h"

/* ---- the libc subset the test builder needs ------------------------------------------- */

static _Alignas(64) unsigned char g_heap[16 << 20];
static size_t g_heap_used;

static void sys_exit(int code) {
#if defined(__x86_64__)
  __asm__ volatile("mov $60, %%eax\n\tsyscall" ::"D"(code) : "rax", "rcx", "r11", "memory");
#elif defined(__aarch64__)
  register long x0 __asm__("x0") = code;
  register long x8 __asm__("x8") = 93;
  __asm__ volatile("svc #0" ::"r"(x0), "r"(x8) : "memory");
#elif defined(__arm__)
  register long r0 __asm__("r0") = code;
  register long r7 __asm__("r7") = 1;
  __asm__ volatile("svc #0" ::"r"(r0), "r"(r7) : "memory");
#else
#error "no exit syscall for this architecture"
#endif
  for (;;) {
  }
}

void* aligned_alloc(size_t alignment, size_t size) {
  size_t at = (g_heap_used + alignment - 1) / alignment * alignment;
  if (at + size > sizeof(g_heap)) return NULL;
  g_heap_used = at + size;
  return g_heap + at;
}
void* malloc(size_t size) { return aligned_alloc(64, size); }
void* calloc(size_t n, size_t size) {
  void* p = malloc(n * size);
  if (p != NULL) memset(p, 0, n * size);
  return p;
}
void free(void* p) { (void)p; }
size_t strlen(const char* s) {
  size_t n = 0;
  while (s[n] != '\0') n++;
  return n;
}
FILE* stderr;
int fprintf(FILE* restrict f, const char* restrict format, ...) {
  (void)f;
  (void)format;
  return 0;
}
void exit(int code) {
  sys_exit(code);
  for (;;) {
  }
}

#include "tmodel_builder.h"

/* ---- the caller's allocator ----------------------------------------------------------- */

static void* bump_allocate(void* context, size_t size, size_t alignment) {
  (void)context;
  return aligned_alloc(alignment < 16 ? 16 : alignment, size);
}
static void bump_deallocate(void* context, void* p) {
  (void)context;
  (void)p;
}

/* A microcontroller's pool: one static buffer, handed out front to back, never freed. */
static _Alignas(64) unsigned char g_pool[64 << 10];
typedef struct pool {
  size_t capacity, used;
} pool;
static void* pool_allocate(void* context, size_t size, size_t alignment) {
  pool* p = (pool*)context;
  size_t at = (p->used + alignment - 1) / alignment * alignment;
  if (at > p->capacity || size > p->capacity - at) return NULL;
  p->used = at + size;
  return g_pool + at;
}
static void pool_deallocate(void* context, void* block) {
  (void)context;
  (void)block;
}

/* tether_model_memory sizes the pool before the load: exactly that many bytes load the
 * model, one fewer give out_of_memory; tether_session_memory more bytes of the same pool
 * then hold a session in a caller arena, one fewer do not. */
static int check_pool(const uint8_t* file, size_t size) {
  size_t total = 0, peak = 0, resident = 0, largest = 0;
  if (tether_model_memory(file, size, NULL, &total, &peak, &resident, &largest) !=
      TETHER_STATUS_INVALID_ARGUMENT) {
    return 7;  /* no default allocator here either */
  }
  pool scratch = {sizeof(g_pool), 0};
  const tether_allocator query = {&scratch, pool_allocate, pool_deallocate};
  if (tether_model_memory(file, size, &query, &total, &peak, &resident, &largest) !=
          TETHER_STATUS_SUCCESS ||
      total == 0 || total > sizeof(g_pool) || scratch.used > total) {
    return 8;
  }
  pool exact = {total, 0};
  const tether_allocator a = {&exact, pool_allocate, pool_deallocate};
  tether_model_t model = NULL;
  if (tether_model_load(file, size, &a, &model) != TETHER_STATUS_SUCCESS) return 9;
  size_t session_bytes = 0, arena_bytes = 0;
  static _Alignas(64) unsigned char arena[16 << 10];
  if (tether_session_memory(model, 1, &session_bytes) != TETHER_STATUS_SUCCESS ||
      session_bytes == 0 || session_bytes % TETHER_ARENA_ALIGNMENT != 0) {
    return 11;
  }
  if (tether_session_arena_size(model, &arena_bytes) != TETHER_STATUS_SUCCESS ||
      arena_bytes > sizeof(arena)) {
    return 14;
  }
  if (total + session_bytes > sizeof(g_pool)) return 15;
  tether_session_t session = NULL;
  exact.capacity = total + session_bytes - 1;
  if (tether_session_create(model, arena, arena_bytes, 1, &session) !=
      TETHER_STATUS_OUT_OF_MEMORY) {
    return 12;
  }
  exact.capacity = total + session_bytes;
  if (tether_session_create(model, arena, arena_bytes, 1, &session) != TETHER_STATUS_SUCCESS ||
      tether_session_invoke(session) != TETHER_STATUS_SUCCESS) {
    return 13;
  }
  tether_session_destroy(session);
  tether_model_destroy(model);
  pool short_by_one = {total - 1, 0};
  const tether_allocator b = {&short_by_one, pool_allocate, pool_deallocate};
  model = NULL;
  if (tether_model_load(file, size, &b, &model) != TETHER_STATUS_OUT_OF_MEMORY || model != NULL) {
    return 10;
  }
  return 0;
}

static int run(void) {
  (void)tb_failures;
  /* x [1,4,4,1] -> conv 3x3 pad 1 (w = 1, b = 0.5) -> mean -> logistic; x -> tanh */
  static float w[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, b0[1] = {0.5f};
  tb_builder* b = tb_new();
  uint32_t x = tb_tensor(b, "x", 4, (const int32_t[]){1, 4, 4, 1}, NULL);
  uint32_t cw = tb_tensor(b, "w", 4, (const int32_t[]){1, 3, 3, 1}, w);
  uint32_t cb = tb_tensor(b, "b", 1, (const int32_t[]){1}, b0);
  uint32_t h = tb_tensor(b, "h", 4, (const int32_t[]){1, 4, 4, 1}, NULL);
  uint32_t m = tb_tensor(b, "m", 2, (const int32_t[]){1, 1}, NULL);
  uint32_t y = tb_tensor(b, "y", 2, (const int32_t[]){1, 1}, NULL);
  uint32_t z = tb_tensor(b, "z", 4, (const int32_t[]){1, 4, 4, 1}, NULL);
  tb_op(b, TETHER_OP_CONV_2D, TETHER_ACT_NONE, "conv", 3, (const uint32_t[]){x, cw, cb}, h);
  tb_attr_i(b, 3, 4, (const int32_t[]){1, 1, 1, 1});
  tb_op(b, TETHER_OP_MEAN, TETHER_ACT_NONE, "mean", 1, &h, m);
  tb_attr_i(b, 8, 2, (const int32_t[]){1, 2});
  tb_op(b, TETHER_OP_LOGISTIC, TETHER_ACT_NONE, "sigmoid", 1, &m, y);
  tb_op(b, TETHER_OP_TANH, TETHER_ACT_NONE, "tanh", 1, &x, z);
  tb_graph_io(b, 1, &x, 2, (const uint32_t[]){y, z});
  size_t size = 0;
  uint8_t* file = tb_finish(b, &size);
  const int pool_status = check_pool(file, size);
  if (pool_status != 0) return pool_status;
  const tether_allocator allocator = {NULL, bump_allocate, bump_deallocate};
  tether_model_t model = NULL;
  if (tether_model_load(file, size, &allocator, &model) != TETHER_STATUS_SUCCESS) return 2;
  /* No default allocator in this build: NULL must be refused, not crash. */
  tether_model_t refused = NULL;
  if (tether_model_load(file, size, NULL, &refused) != TETHER_STATUS_INVALID_ARGUMENT) return 3;
  size_t arena_size = 0;
  tether_session_arena_size(model, &arena_size);
  void* arena = aligned_alloc(TETHER_ARENA_ALIGNMENT, arena_size);
  tether_session_t session = NULL;
  if (tether_session_create(model, arena, arena_size, 4, &session) != TETHER_STATUS_SUCCESS) {
    return 4;
  }
  float input[16];
  for (int i = 0; i < 16; i++) input[i] = (float)(i % 5) * 0.25f - 0.5f;
  tether_session_set_input(session, 0, input, sizeof(input));
  if (tether_session_invoke(session) != TETHER_STATUS_SUCCESS) return 5;
  float out_y = 0, out_z[16];
  tether_session_get_output(session, 0, &out_y, sizeof(out_y));
  tether_session_get_output(session, 1, out_z, sizeof(out_z));
  /* Host values (Python math, float64): the conv's mean is 0.265625; sigmoid of it. */
  const double want_y = 0.5660185351961015;
  const double want_z[5] = {-0.46211715726000974, -0.24491866240370913, 0.0,
                            0.24491866240370913, 0.46211715726000974};
  double worst = (double)out_y - want_y;
  worst = worst < 0 ? -worst : worst;
  for (int i = 0; i < 16; i++) {
    double e = (double)out_z[i] - want_z[i % 5];
    e = e < 0 ? -e : e;
    if (e > worst) worst = e;
  }
  if (!(worst < 1e-6)) return 6;
  tether_session_destroy(session);
  tether_model_destroy(model);
  return 0;
}

/* The trainer with no C library: the core's logf / sqrtf / cosf against host values, then
 * Adam with a cosine schedule on a dense head (x [1, 4] -> FULLY_CONNECTED 4->3 -> SOFTMAX) in
 * a caller arena: the loss falls, and a session of the exported image gives predict's bits. */
float logf(float x);
float sqrtf(float x);
float cosf(float x);

static float absf(float v) { return v < 0 ? -v : v; }

static int train(void) {
  /* float32 of the float64 values: log 3 = 1.0986123, sqrt 2 = 1.4142135, cos 2.5 = -0.8011436 */
  if (absf(logf(3.0f) - 1.0986123f) > 2e-7f || sqrtf(2.0f) != 1.41421354f ||
      absf(cosf(2.5f) + 0.8011436f) > 2e-7f || sqrtf(0.25f) != 0.5f || logf(1.0f) != 0.0f) {
    return 20;
  }
  static float w[12] = {0.1f, -0.2f, 0.3f, 0.0f, -0.1f, 0.2f, 0.1f, 0.3f, 0.2f, 0.1f, -0.3f, 0.1f};
  static float bias[3] = {0, 0, 0};
  tb_builder* b = tb_new();
  uint32_t x = tb_tensor(b, "x", 2, (const int32_t[]){1, 4}, NULL);
  uint32_t wt = tb_tensor(b, "w", 2, (const int32_t[]){3, 4}, w);
  uint32_t bt = tb_tensor(b, "b", 1, (const int32_t[]){3}, bias);
  uint32_t z = tb_tensor(b, "z", 2, (const int32_t[]){1, 3}, NULL);
  uint32_t y = tb_tensor(b, "y", 2, (const int32_t[]){1, 3}, NULL);
  tb_op(b, TETHER_OP_FULLY_CONNECTED, TETHER_ACT_NONE, "dense", 3, (const uint32_t[]){x, wt, bt}, z);
  tb_op(b, TETHER_OP_SOFTMAX, TETHER_ACT_NONE, "softmax", 1, &z, y);
  tb_graph_io(b, 1, &x, 1, &y);
  size_t size = 0;
  uint8_t* file = tb_finish(b, &size);
  const tether_allocator allocator = {NULL, bump_allocate, bump_deallocate};
  tether_model_t model = NULL;
  if (tether_model_load(file, size, &allocator, &model) != TETHER_STATUS_SUCCESS) return 21;
  tether_train_config cfg;
  tether_train_config_default(&cfg);
  cfg.batch_size = 6;
  cfg.learning_rate = 0.05f;
  cfg.schedule = TETHER_LR_COSINE;
  cfg.decay_steps = 50;
  size_t bytes = 0;
  if (tether_trainer_arena_size(model, &cfg, &bytes) != TETHER_STATUS_SUCCESS) return 22;
  void* arena = aligned_alloc(TETHER_ARENA_ALIGNMENT, bytes);
  tether_trainer_t t = NULL;
  if (tether_trainer_create(model, &cfg, arena, bytes, &t) != TETHER_STATUS_SUCCESS) return 23;
  float xs[24];
  int32_t ys[6];
  for (int r = 0; r < 6; r++) {
    ys[r] = r % 3;
    for (int i = 0; i < 4; i++) xs[r * 4 + i] = (i == ys[r] ? 1.0f : 0.0f) + 0.1f * (float)r;
  }
  float first = 0, loss = 0;
  for (int s = 0; s < 50; s++) {
    if (tether_trainer_step(t, xs, ys, 6, &loss) != TETHER_STATUS_SUCCESS) return 24;
    if (s == 0) first = loss;
  }
  if (!(loss < 0.5f * first)) return 25;
  float probs[18];
  tether_trainer_predict(t, xs, 6, probs);
  uint8_t* image = (uint8_t*)aligned_alloc(64, (size + 63) / 64 * 64);
  if (tether_trainer_export(t, image, size) != TETHER_STATUS_SUCCESS) return 26;
  tether_model_t trained = NULL;
  if (tether_model_load(image, size, &allocator, &trained) != TETHER_STATUS_SUCCESS) return 27;
  size_t arena_size = 0;
  tether_session_arena_size(trained, &arena_size);
  tether_session_t session = NULL;
  tether_session_create(trained, aligned_alloc(64, arena_size), arena_size, 1, &session);
  for (int r = 0; r < 6; r++) {
    float out[3];
    tether_session_set_input(session, 0, xs + r * 4, 4 * sizeof(float));
    tether_session_invoke(session);
    tether_session_get_output(session, 0, out, sizeof(out));
    if (memcmp(out, probs + r * 3, sizeof(out)) != 0) return 28;
  }
  tether_trainer_destroy(t);
  return 0;
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((force_align_arg_pointer))  /* _start is entered with no return address */
#endif
void _start(void) {
  const int status = run();
  sys_exit(status != 0 ? status : train());
}
