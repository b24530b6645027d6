/*
 * tether_jni.c — the JNI bridge: the native methods of dev.tether.Tether over the public C API
 * (tether.h) and nothing else.
 *
 * Memory comes from Java: every block the engine uses is a direct ByteBuffer that the Java
 * side sizes with the engine's own queries and keeps alive as long as the handle:
 *   - the model bytes (used in place: tether_model_load borrows them);
 *   - the model's pool: a jt_model record, then tether_model_memory()'s bytes, handed out by
 *     a bump allocator that the model keeps as its allocator;
 *   - per session: its arena (tether_session_arena_size) and its struct block
 *     (tether_session_memory), lent to the model's allocator for the one create call;
 *   - per trainer: its arena (tether_trainer_arena_size).
 * So the glue calls no malloc, and the same file links against the freestanding core (no C
 * library: Android without the NDK) or a hosted build (the desktop JVM test).
 *
 * Handles are the addresses of a jt_model, a tether_session or a tether_trainer as jlong;
 * 0 (a closed handle) is refused with IllegalStateException. Engine failures throw
 * dev.tether.TetherException("<status>: <tether_last_error()>").
 */
#include <jni.h>
#include <stddef.h>
#include <stdint.h>

#include "tether/tether.h"

#define JT_ALIGN TETHER_ARENA_ALIGNMENT

typedef struct jt_model {
  tether_model_t model;
  tether_allocator allocator;
  uint8_t* pool;          /* the bump pool after this record */
  size_t pool_size, used;
  uint8_t* lend;          /* a session's struct block, lent for one tether_session_create */
  size_t lend_size;
} jt_model;

/* ---- errors -------------------------------------------------------------------------- */

static void throw_class(JNIEnv* env, const char* cls, const char* message) {
  jclass c = (*env)->FindClass(env, cls);
  if (c != NULL) (*env)->ThrowNew(env, c, message);
}

/* Copies at most cap-1 bytes of `s` to `out` at `at`; returns the new end. */
static size_t append(char* out, size_t cap, size_t at, const char* s) {
  while (*s != '\0' && at + 1 < cap) out[at++] = *s++;
  out[at] = '\0';
  return at;
}

static int fail_status(JNIEnv* env, tether_status status) {
  char message[600];
  size_t at = append(message, sizeof(message), 0, tether_status_string(status));
  at = append(message, sizeof(message), at, ": ");
  append(message, sizeof(message), at, tether_last_error());
  throw_class(env, "dev/tether/TetherException", message);
  return 1;
}

/* Nonzero (and an exception pending) when status is not success. */
static int failed(JNIEnv* env, tether_status status) {
  return status != TETHER_STATUS_SUCCESS ? fail_status(env, status) : 0;
}

static int closed(JNIEnv* env, jlong handle, const char* what) {
  if (handle != 0) return 0;
  char message[96];
  size_t at = append(message, sizeof(message), 0, what);
  append(message, sizeof(message), at, " is closed");
  throw_class(env, "java/lang/IllegalStateException", message);
  return 1;
}

static int bad_argument(JNIEnv* env, const char* message) {
  throw_class(env, "java/lang/IllegalArgumentException", message);
  return 1;
}

/* ---- direct buffers -------------------------------------------------------------------- */

static uint8_t* align_up(uint8_t* p) {
  return (uint8_t*)(((uintptr_t)p + JT_ALIGN - 1) / JT_ALIGN * JT_ALIGN);
}

/* The JT_ALIGN-aligned part of a direct buffer: its start and its bytes (NULL if the
 * buffer is not direct or has no aligned byte; an exception is then pending). */
static uint8_t* aligned_region(JNIEnv* env, jobject buffer, size_t* size_out) {
  uint8_t* base = (uint8_t*)(*env)->GetDirectBufferAddress(env, buffer);
  const jlong capacity = (*env)->GetDirectBufferCapacity(env, buffer);
  if (base == NULL || capacity < 0) {
    bad_argument(env, "the engine's memory must be a direct ByteBuffer");
    return NULL;
  }
  uint8_t* start = align_up(base);
  if ((size_t)(start - base) > (size_t)capacity) {
    bad_argument(env, "direct ByteBuffer too small to align");
    return NULL;
  }
  *size_out = (size_t)capacity - (size_t)(start - base);
  return start;
}

JNIEXPORT jint JNICALL Java_dev_tether_Tether_alignOffset(JNIEnv* env, jclass cls,
                                                          jobject buffer) {
  (void)cls;
  uint8_t* base = (uint8_t*)(*env)->GetDirectBufferAddress(env, buffer);
  if (base == NULL) {
    bad_argument(env, "not a direct ByteBuffer");
    return 0;
  }
  return (jint)(align_up(base) - base);
}

/* ---- the model's allocator: a bump pool in Java memory ------------------------------- */

static void* jt_allocate(void* context, size_t size, size_t alignment) {
  jt_model* m = (jt_model*)context;
  if (m->lend != NULL && size <= m->lend_size && (uintptr_t)m->lend % alignment == 0) {
    void* block = m->lend;
    m->lend = NULL;
    return block;
  }
  size_t at = (m->used + alignment - 1) / alignment * alignment;
  if (at > m->pool_size || size > m->pool_size - at) return NULL;
  m->used = at + size;
  return m->pool + at;
}

/* Java owns every block: the garbage collector frees them after the handle is closed. */
static void jt_deallocate(void* context, void* block) {
  (void)context;
  (void)block;
}

static size_t record_bytes(void) { return (sizeof(jt_model) + JT_ALIGN - 1) / JT_ALIGN * JT_ALIGN; }

/* ---- model ---------------------------------------------------------------------------- */

/* Bytes of pool modelLoad needs for these model bytes (its record included), from
 * tether_model_memory; the query borrows `scratch` (a direct buffer) for its temporaries and
 * throws TetherException "out_of_memory: ..." when that is too small. */
JNIEXPORT jlong JNICALL Java_dev_tether_Tether_modelMemory(JNIEnv* env, jclass cls,
                                                           jobject data, jlong size,
                                                           jobject scratch) {
  (void)cls;
  size_t capacity = 0, scratch_size = 0;
  uint8_t* bytes = aligned_region(env, data, &capacity);
  if (bytes == NULL) return 0;
  if (size < 0 || (size_t)size > capacity) {
    bad_argument(env, "model size exceeds its buffer");
    return 0;
  }
  jt_model query = {0};
  query.pool = aligned_region(env, scratch, &scratch_size);
  if (query.pool == NULL) return 0;
  query.pool_size = scratch_size;
  const tether_allocator a = {&query, jt_allocate, jt_deallocate};
  size_t total = 0, peak = 0, resident = 0, largest = 0;
  if (failed(env, tether_model_memory(bytes, (size_t)size, &a, &total, &peak, &resident,
                                      &largest))) {
    return 0;
  }
  return (jlong)(record_bytes() + total);
}

/* Loads the model from `data` (aligned part, `size` bytes; borrowed until modelDestroy) with
 * `pool` (at least modelMemory's bytes past its aligned start) as its memory. */
JNIEXPORT jlong JNICALL Java_dev_tether_Tether_modelLoad(JNIEnv* env, jclass cls, jobject data,
                                                         jlong size, jobject pool) {
  (void)cls;
  size_t capacity = 0, pool_size = 0;
  uint8_t* bytes = aligned_region(env, data, &capacity);
  if (bytes == NULL) return 0;
  if (size < 0 || (size_t)size > capacity) {
    bad_argument(env, "model size exceeds its buffer");
    return 0;
  }
  uint8_t* region = aligned_region(env, pool, &pool_size);
  if (region == NULL) return 0;
  if (pool_size < record_bytes()) {
    bad_argument(env, "model pool smaller than modelMemory");
    return 0;
  }
  jt_model* m = (jt_model*)region;
  *m = (jt_model){0};
  m->pool = region + record_bytes();
  m->pool_size = pool_size - record_bytes();
  m->allocator = (tether_allocator){m, jt_allocate, jt_deallocate};
  if (failed(env, tether_model_load(bytes, (size_t)size, &m->allocator, &m->model))) return 0;
  return (jlong)(uintptr_t)m;
}

JNIEXPORT void JNICALL Java_dev_tether_Tether_modelDestroy(JNIEnv* env, jclass cls,
                                                           jlong model) {
  (void)env;
  (void)cls;
  if (model != 0) tether_model_destroy(((jt_model*)(uintptr_t)model)->model);
}

/* Shape of input (kind 0) or output (kind 1) `index`; float32 only is what the bridge
 * moves, so the dtype is checked by the session calls, not here. */
JNIEXPORT jintArray JNICALL Java_dev_tether_Tether_ioShape(JNIEnv* env, jclass cls,
                                                           jlong model, jint kind,
                                                           jint index) {
  (void)cls;
  if (closed(env, model, "Model")) return NULL;
  size_t ndim = 0;
  int32_t dims[TETHER_MAX_DIMS];
  tether_dtype dtype;
  if (index < 0 || failed(env, tether_model_io_shape(((jt_model*)(uintptr_t)model)->model,
                                                     kind == 0 ? TETHER_IO_INPUT : TETHER_IO_OUTPUT,
                                                     (size_t)index, &ndim, dims, &dtype))) {
    if (index < 0) bad_argument(env, "negative index");
    return NULL;
  }
  jintArray out = (*env)->NewIntArray(env, (jsize)ndim);
  if (out != NULL) (*env)->SetIntArrayRegion(env, out, 0, (jsize)ndim, (const jint*)dims);
  return out;
}

JNIEXPORT jint JNICALL Java_dev_tether_Tether_ioCount(JNIEnv* env, jclass cls, jlong model,
                                                      jint kind) {
  (void)cls;
  if (closed(env, model, "Model")) return 0;
  return (jint)tether_model_io_count(((jt_model*)(uintptr_t)model)->model,
                                     kind == 0 ? TETHER_IO_INPUT : TETHER_IO_OUTPUT);
}

JNIEXPORT jstring JNICALL Java_dev_tether_Tether_isa(JNIEnv* env, jclass cls) {
  (void)cls;
  return (*env)->NewStringUTF(env, tether_isa());
}

/* ---- session -------------------------------------------------------------------------- */

/* Bytes of direct buffer sessionCreate needs: the arena and the session's struct block,
 * each aligned (JT_ALIGN of slack in front). */
JNIEXPORT jlong JNICALL Java_dev_tether_Tether_sessionMemory(JNIEnv* env, jclass cls,
                                                             jlong model) {
  (void)cls;
  if (closed(env, model, "Model")) return 0;
  tether_model_t tm = ((jt_model*)(uintptr_t)model)->model;
  size_t arena = 0, block = 0;
  if (failed(env, tether_session_arena_size(tm, &arena)) ||
      failed(env, tether_session_memory(tm, 1, &block))) {
    return 0;
  }
  return (jlong)((arena + JT_ALIGN - 1) / JT_ALIGN * JT_ALIGN + block + JT_ALIGN);
}

JNIEXPORT jlong JNICALL Java_dev_tether_Tether_sessionCreate(JNIEnv* env, jclass cls,
                                                             jlong model, jobject memory) {
  (void)cls;
  if (closed(env, model, "Model")) return 0;
  jt_model* m = (jt_model*)(uintptr_t)model;
  size_t size = 0, arena = 0, block = 0;
  uint8_t* region = aligned_region(env, memory, &size);
  if (region == NULL) return 0;
  if (failed(env, tether_session_arena_size(m->model, &arena)) ||
      failed(env, tether_session_memory(m->model, 1, &block))) {
    return 0;
  }
  const size_t arena_span = (arena + JT_ALIGN - 1) / JT_ALIGN * JT_ALIGN;
  if (size < arena_span + block) {
    bad_argument(env, "session memory smaller than sessionMemory");
    return 0;
  }
  m->lend = region + arena_span;
  m->lend_size = block;
  tether_session_t session = NULL;
  const tether_status status = tether_session_create(m->model, region, arena, 1, &session);
  m->lend = NULL;
  if (failed(env, status)) return 0;
  return (jlong)(uintptr_t)session;
}

JNIEXPORT void JNICALL Java_dev_tether_Tether_sessionDestroy(JNIEnv* env, jclass cls,
                                                             jlong session) {
  (void)env;
  (void)cls;
  tether_session_destroy((tether_session_t)(uintptr_t)session);
}

/* The float32 storage of input/output `index` and its element count (NULL on failure, an
 * exception pending). */
static float* float_io(JNIEnv* env, tether_session_t s, jlong model, tether_io kind,
                       size_t index, size_t* elements_out) {
  size_t ndim = 0, elements = 1;
  int32_t dims[TETHER_MAX_DIMS];
  tether_dtype dtype;
  void* data = NULL;
  if (failed(env, tether_model_io_shape(((jt_model*)(uintptr_t)model)->model, kind, index,
                                        &ndim, dims, &dtype)) ||
      failed(env, tether_session_io_data(s, kind, index, &data))) {
    return NULL;
  }
  if (dtype != TETHER_DTYPE_FLOAT32) {
    throw_class(env, "dev/tether/TetherException",
                kind == TETHER_IO_INPUT
                    ? "invalid_argument: the model's input is not float32 (the bridge moves "
                      "float32 tensors; convert with float inputs and outputs)"
                    : "invalid_argument: the model's output is not float32 (the bridge moves "
                      "float32 tensors; convert with float inputs and outputs)");
    return NULL;
  }
  for (size_t d = 0; d < ndim; d++) elements *= (size_t)dims[d];
  *elements_out = elements;
  return (float*)data;
}

/* input -> input 0, invoke, output 0 -> output (both float32, lengths checked). */
JNIEXPORT void JNICALL Java_dev_tether_Tether_sessionRun(JNIEnv* env, jclass cls, jlong model,
                                                         jlong session, jfloatArray input,
                                                         jfloatArray output) {
  (void)cls;
  if (closed(env, model, "Model") || closed(env, session, "Session")) return;
  tether_session_t s = (tether_session_t)(uintptr_t)session;
  size_t in_n = 0, out_n = 0;
  float* in = float_io(env, s, model, TETHER_IO_INPUT, 0, &in_n);
  if (in == NULL) return;
  float* out = float_io(env, s, model, TETHER_IO_OUTPUT, 0, &out_n);
  if (out == NULL) return;
  if ((size_t)(*env)->GetArrayLength(env, input) != in_n ||
      (size_t)(*env)->GetArrayLength(env, output) != out_n) {
    bad_argument(env, "input or output length differs from the model's tensor");
    return;
  }
  (*env)->GetFloatArrayRegion(env, input, 0, (jsize)in_n, in);
  if (failed(env, tether_session_invoke(s))) return;
  (*env)->SetFloatArrayRegion(env, output, 0, (jsize)out_n, out);
}

/* ---- trainer -------------------------------------------------------------------------- */

/* The trainer's settings from Java's values (head_input borrowed from `name`). */
static void train_config(tether_train_config* c, const char* name, jint batch, jint optimizer,
                         jfloat learning_rate, jint train_layers, jlong seed) {
  tether_train_config_default(c);
  c->head_input = name;
  c->batch_size = (uint32_t)batch;
  c->optimizer = (uint32_t)optimizer;
  c->learning_rate = learning_rate;
  c->train_layers = (uint32_t)train_layers;
  c->seed = (uint64_t)seed;
}

/* Arena bytes of a trainer of `model` with these settings (JT_ALIGN of slack included);
 * with `arena` non-NULL, creates the trainer in it instead and returns its handle. */
static jlong trainer(JNIEnv* env, jlong model, jobject arena, jstring head_input, jint batch,
                     jint optimizer, jfloat learning_rate, jint train_layers, jlong seed) {
  if (closed(env, model, "Model")) return 0;
  if (batch < 1 || optimizer < 0 || train_layers < 0) {
    bad_argument(env, "batch size must be >= 1, optimizer and trainLayers >= 0");
    return 0;
  }
  tether_model_t tm = ((jt_model*)(uintptr_t)model)->model;
  const char* name = head_input != NULL ? (*env)->GetStringUTFChars(env, head_input, NULL) : NULL;
  if (head_input != NULL && name == NULL) return 0;
  tether_train_config c;
  train_config(&c, name, batch, optimizer, learning_rate, train_layers, seed);
  size_t need = 0;
  tether_status status = tether_trainer_arena_size(tm, &c, &need);
  jlong result = 0;
  if (status == TETHER_STATUS_SUCCESS && arena == NULL) {
    result = (jlong)(need + JT_ALIGN);
  } else if (status == TETHER_STATUS_SUCCESS) {
    size_t size = 0;
    uint8_t* region = aligned_region(env, arena, &size);
    tether_trainer_t t = NULL;
    if (region != NULL) {
      status = tether_trainer_create(tm, &c, region, size, &t);
      if (status == TETHER_STATUS_SUCCESS) result = (jlong)(uintptr_t)t;
    }
  }
  if (name != NULL) (*env)->ReleaseStringUTFChars(env, head_input, name);
  failed(env, status);
  return result;
}

JNIEXPORT jlong JNICALL Java_dev_tether_Tether_trainerMemory(
    JNIEnv* env, jclass cls, jlong model, jstring head_input, jint batch, jint optimizer,
    jfloat learning_rate, jint train_layers, jlong seed) {
  (void)cls;
  return trainer(env, model, NULL, head_input, batch, optimizer, learning_rate, train_layers,
                 seed);
}

JNIEXPORT jlong JNICALL Java_dev_tether_Tether_trainerCreate(
    JNIEnv* env, jclass cls, jlong model, jobject arena, jstring head_input, jint batch,
    jint optimizer, jfloat learning_rate, jint train_layers, jlong seed) {
  (void)cls;
  if (arena == NULL) {
    bad_argument(env, "NULL arena");
    return 0;
  }
  return trainer(env, model, arena, head_input, batch, optimizer, learning_rate, train_layers,
                 seed);
}

JNIEXPORT void JNICALL Java_dev_tether_Tether_trainerDestroy(JNIEnv* env, jclass cls,
                                                             jlong trainer_handle) {
  (void)env;
  (void)cls;
  tether_trainer_destroy((tether_trainer_t)(uintptr_t)trainer_handle);
}

JNIEXPORT jint JNICALL Java_dev_tether_Tether_trainerInputElements(JNIEnv* env, jclass cls,
                                                                   jlong t) {
  (void)cls;
  if (closed(env, t, "Trainer")) return 0;
  return (jint)tether_trainer_input_elements((tether_trainer_t)(uintptr_t)t);
}

JNIEXPORT jint JNICALL Java_dev_tether_Tether_trainerClasses(JNIEnv* env, jclass cls, jlong t) {
  (void)cls;
  if (closed(env, t, "Trainer")) return 0;
  return (jint)tether_trainer_classes((tether_trainer_t)(uintptr_t)t);
}

/* Checks that `inputs` holds rows x the head input's elements (and `extra`, when not
 * NULL, rows x extra_per_row values). */
static int rows_fit(JNIEnv* env, tether_trainer_t t, jarray inputs, jint rows, jarray extra,
                    size_t extra_per_row) {
  const size_t per_row = tether_trainer_input_elements(t);
  if (rows < 1 || (size_t)(*env)->GetArrayLength(env, inputs) != (size_t)rows * per_row ||
      (extra != NULL &&
       (size_t)(*env)->GetArrayLength(env, extra) != (size_t)rows * extra_per_row)) {
    bad_argument(env, "array lengths differ from rows x the head's input or output size");
    return 0;
  }
  return 1;
}

/* One optimizer step on `rows` head inputs; returns the batch's loss before the update. */
JNIEXPORT jfloat JNICALL Java_dev_tether_Tether_trainerStep(JNIEnv* env, jclass cls, jlong t,
                                                            jfloatArray inputs,
                                                            jintArray labels, jint rows) {
  (void)cls;
  if (closed(env, t, "Trainer")) return 0.0f;
  tether_trainer_t tr = (tether_trainer_t)(uintptr_t)t;
  if (!rows_fit(env, tr, inputs, rows, labels, 1)) return 0.0f;
  jfloat* x = (*env)->GetFloatArrayElements(env, inputs, NULL);
  jint* y = x != NULL ? (*env)->GetIntArrayElements(env, labels, NULL) : NULL;
  float loss = 0.0f;
  tether_status status = TETHER_STATUS_OUT_OF_MEMORY;
  if (y != NULL) {
    status = tether_trainer_step(tr, x, (const int32_t*)y, (size_t)rows, &loss);
    (*env)->ReleaseIntArrayElements(env, labels, y, JNI_ABORT);
  }
  if (x != NULL) (*env)->ReleaseFloatArrayElements(env, inputs, x, JNI_ABORT);
  if (x != NULL && y != NULL) failed(env, status);
  return loss;
}

/* The head's output for `rows` inputs with the current weights into `outputs`. */
JNIEXPORT void JNICALL Java_dev_tether_Tether_trainerPredict(JNIEnv* env, jclass cls, jlong t,
                                                             jfloatArray inputs, jint rows,
                                                             jfloatArray outputs) {
  (void)cls;
  if (closed(env, t, "Trainer")) return;
  tether_trainer_t tr = (tether_trainer_t)(uintptr_t)t;
  if (!rows_fit(env, tr, inputs, rows, outputs, tether_trainer_classes(tr))) return;
  jfloat* x = (*env)->GetFloatArrayElements(env, inputs, NULL);
  jfloat* y = x != NULL ? (*env)->GetFloatArrayElements(env, outputs, NULL) : NULL;
  tether_status status = TETHER_STATUS_OUT_OF_MEMORY;
  if (y != NULL) {
    status = tether_trainer_predict(tr, x, (size_t)rows, y);
    (*env)->ReleaseFloatArrayElements(env, outputs, y, 0);
  }
  if (x != NULL) (*env)->ReleaseFloatArrayElements(env, inputs, x, JNI_ABORT);
  if (x != NULL && y != NULL) failed(env, status);
}

/* The whole model with the trained weights (.tmodel bytes), written into `out` (a direct
 * buffer of at least trainerExportSize bytes); returns the bytes written. */
JNIEXPORT jlong JNICALL Java_dev_tether_Tether_trainerExportSize(JNIEnv* env, jclass cls,
                                                                 jlong t) {
  (void)cls;
  if (closed(env, t, "Trainer")) return 0;
  return (jlong)tether_trainer_export_size((tether_trainer_t)(uintptr_t)t);
}

JNIEXPORT jbyteArray JNICALL Java_dev_tether_Tether_trainerExport(JNIEnv* env, jclass cls,
                                                                  jlong t, jobject scratch) {
  (void)cls;
  if (closed(env, t, "Trainer")) return NULL;
  tether_trainer_t tr = (tether_trainer_t)(uintptr_t)t;
  const size_t n = tether_trainer_export_size(tr);
  uint8_t* out = (uint8_t*)(*env)->GetDirectBufferAddress(env, scratch);
  const jlong capacity = (*env)->GetDirectBufferCapacity(env, scratch);
  if (out == NULL || capacity < 0 || (size_t)capacity < n) {
    bad_argument(env, "export buffer must be a direct ByteBuffer of trainerExportSize bytes");
    return NULL;
  }
  if (failed(env, tether_trainer_export(tr, out, n))) return NULL;
  jbyteArray bytes = (*env)->NewByteArray(env, (jsize)n);
  if (bytes != NULL) (*env)->SetByteArrayRegion(env, bytes, 0, (jsize)n, (const jbyte*)out);
  return bytes;
}
