/*
 * jni_harness.c — loads the Android libtether_jni.so (built without the NDK) into an ordinary
 * Linux process and drives its native methods through a minimal fake JNIEnv, the way
 * dev.tether.Model and dev.tether.Session do on a phone. Built for aarch64 with the cross
 * gcc and run under qemu-aarch64 (armv7: the armhf gcc and qemu-arm; no float crosses a call
 * by value, so its hard-float code calls the softfp library safely) by
 * tests/android_demo/test_native.py:
 *
 *   harness LIB.so MODEL.tmodel INPUTS.f32 [ELEMENTS]
 *     prints "isa NAME", then per input the top class and its probabilities; then loads a
 *     damaged copy of the model and prints the exception the bridge raised.
 *   exit 0 on success; 1 with a message when the library, a symbol or a call fails.
 *
 * Only the JNIEnv functions the bridge calls are filled in; any other is NULL, so a call to
 * one crashes the harness and fails the test.
 */
#include <dlfcn.h>
#include <jni.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- fake Java objects ------------------------------------------------------------------ */

typedef struct fake_buffer { void* address; jlong capacity; } fake_buffer;
typedef struct fake_array { jsize length; void* data; } fake_array;

static char g_exception[1024];

static jclass find_class(JNIEnv* env, const char* name) {
  (void)env;
  return (jclass)name;
}
static jint throw_new(JNIEnv* env, jclass cls, const char* message) {
  (void)env;
  if (g_exception[0] == '\0') snprintf(g_exception, sizeof(g_exception), "%s: %s", (const char*)cls, message);
  return 0;
}
static void* buffer_address(JNIEnv* env, jobject buffer) {
  (void)env;
  return ((fake_buffer*)buffer)->address;
}
static jlong buffer_capacity(JNIEnv* env, jobject buffer) {
  (void)env;
  return ((fake_buffer*)buffer)->capacity;
}
static jsize array_length(JNIEnv* env, jarray array) {
  (void)env;
  return ((fake_array*)array)->length;
}
static void get_floats(JNIEnv* env, jfloatArray a, jsize start, jsize n, jfloat* out) {
  (void)env;
  memcpy(out, (float*)((fake_array*)a)->data + start, (size_t)n * sizeof(float));
}
static void set_floats(JNIEnv* env, jfloatArray a, jsize start, jsize n, const jfloat* in) {
  (void)env;
  memcpy((float*)((fake_array*)a)->data + start, in, (size_t)n * sizeof(float));
}
static jintArray new_ints(JNIEnv* env, jsize n) {
  (void)env;
  fake_array* a = calloc(1, sizeof(*a));
  a->length = n;
  a->data = calloc((size_t)n + 1, sizeof(jint));
  return (jintArray)a;
}
static void set_ints(JNIEnv* env, jintArray a, jsize start, jsize n, const jint* in) {
  (void)env;
  memcpy((jint*)((fake_array*)a)->data + start, in, (size_t)n * sizeof(jint));
}
static jstring new_string(JNIEnv* env, const char* utf) {
  (void)env;
  return (jstring)strdup(utf);
}

static struct JNINativeInterface_ g_functions;
static JNIEnv g_env = &g_functions;

static void init_env(void) {
  g_functions.FindClass = find_class;
  g_functions.ThrowNew = throw_new;
  g_functions.GetDirectBufferAddress = buffer_address;
  g_functions.GetDirectBufferCapacity = buffer_capacity;
  g_functions.GetArrayLength = array_length;
  g_functions.GetFloatArrayRegion = get_floats;
  g_functions.SetFloatArrayRegion = set_floats;
  g_functions.NewIntArray = new_ints;
  g_functions.SetIntArrayRegion = set_ints;
  g_functions.NewStringUTF = new_string;
}

/* ---- the bridge's native methods ------------------------------------------------------- */

typedef jint (*align_offset_fn)(JNIEnv*, jclass, jobject);
typedef jlong (*model_memory_fn)(JNIEnv*, jclass, jobject, jlong, jobject);
typedef jlong (*model_load_fn)(JNIEnv*, jclass, jobject, jlong, jobject);
typedef void (*destroy_fn)(JNIEnv*, jclass, jlong);
typedef jintArray (*io_shape_fn)(JNIEnv*, jclass, jlong, jint, jint);
typedef jstring (*isa_fn)(JNIEnv*, jclass);
typedef jlong (*session_memory_fn)(JNIEnv*, jclass, jlong);
typedef jlong (*session_create_fn)(JNIEnv*, jclass, jlong, jobject);
typedef void (*session_run_fn)(JNIEnv*, jclass, jlong, jlong, jfloatArray, jfloatArray);

static void* lib;

static void* symbol(const char* name) {
  void* f = dlsym(lib, name);
  if (f == NULL) {
    fprintf(stderr, "missing symbol %s\n", name);
    exit(1);
  }
  return f;
}

static void check(const char* what) {
  if (g_exception[0] != '\0') {
    fprintf(stderr, "%s threw %s\n", what, g_exception);
    exit(1);
  }
}

static fake_buffer direct(jlong bytes) {
  fake_buffer b = {calloc(1, (size_t)bytes + 64), bytes + 64};
  return b;
}

/* Model.load: the model bytes in an aligned direct buffer, the pool the engine asks for. */
static jlong load(const uint8_t* bytes, long size, fake_buffer* data) {
  align_offset_fn align_offset = (align_offset_fn)symbol("Java_dev_tether_Tether_alignOffset");
  model_memory_fn model_memory = (model_memory_fn)symbol("Java_dev_tether_Tether_modelMemory");
  model_load_fn model_load = (model_load_fn)symbol("Java_dev_tether_Tether_modelLoad");
  *data = direct(size);
  jint offset = align_offset(&g_env, NULL, (jobject)data);
  memcpy((uint8_t*)data->address + offset, bytes, (size_t)size);
  jlong need = 0;
  for (jlong scratch = 1 << 16;; scratch *= 4) {
    fake_buffer s = direct(scratch);
    g_exception[0] = '\0';
    need = model_memory(&g_env, NULL, (jobject)data, size, (jobject)&s);
    if (strstr(g_exception, "out_of_memory") == NULL || scratch > (1 << 28)) break;
  }
  if (g_exception[0] != '\0') return 0;
  fake_buffer pool = direct(need);
  fake_buffer* kept = malloc(sizeof(*kept));
  *kept = pool;
  return model_load(&g_env, NULL, (jobject)data, size, (jobject)kept);
}

int main(int argc, char** argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s LIB.so MODEL.tmodel INPUTS.f32 [ELEMENTS]\n", argv[0]);
    return 1;
  }
  init_env();
  lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    return 1;
  }
  FILE* f = fopen(argv[2], "rb");
  if (f == NULL) return 1;
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t* bytes = malloc((size_t)size);
  if (fread(bytes, 1, (size_t)size, f) != (size_t)size) return 1;
  fclose(f);
  const long elements = argc > 4 ? atol(argv[4]) : 28 * 28;

  isa_fn isa = (isa_fn)symbol("Java_dev_tether_Tether_isa");
  printf("isa %s\n", (const char*)isa(&g_env, NULL));

  fake_buffer data;
  jlong model = load(bytes, size, &data);
  check("modelLoad");
  io_shape_fn io_shape = (io_shape_fn)symbol("Java_dev_tether_Tether_ioShape");
  fake_array* shape = (fake_array*)io_shape(&g_env, NULL, model, 1, 0);
  check("ioShape");
  long classes = 1;
  for (jsize d = 0; d < shape->length; d++) classes *= ((jint*)shape->data)[d];

  session_memory_fn session_memory =
      (session_memory_fn)symbol("Java_dev_tether_Tether_sessionMemory");
  session_create_fn session_create =
      (session_create_fn)symbol("Java_dev_tether_Tether_sessionCreate");
  session_run_fn session_run = (session_run_fn)symbol("Java_dev_tether_Tether_sessionRun");
  fake_buffer memory = direct(session_memory(&g_env, NULL, model));
  jlong session = session_create(&g_env, NULL, model, (jobject)&memory);
  check("sessionCreate");

  f = fopen(argv[3], "rb");
  if (f == NULL) return 1;
  float* image = malloc((size_t)elements * sizeof(float));
  float* probs = malloc((size_t)classes * sizeof(float));
  fake_array in = {(jsize)elements, image}, out = {(jsize)classes, probs};
  while (fread(image, sizeof(float), (size_t)elements, f) == (size_t)elements) {
    session_run(&g_env, NULL, model, session, (jfloatArray)&in, (jfloatArray)&out);
    check("sessionRun");
    long best = 0;
    for (long c = 1; c < classes; c++) if (probs[c] > probs[best]) best = c;
    printf("%ld", best);
    for (long c = 0; c < classes; c++) printf(" %.9g", probs[c]);
    printf("\n");
  }
  fclose(f);
  ((destroy_fn)symbol("Java_dev_tether_Tether_sessionDestroy"))(&g_env, NULL, session);
  ((destroy_fn)symbol("Java_dev_tether_Tether_modelDestroy"))(&g_env, NULL, model);

  bytes[size / 2] ^= 0x55;  /* a damaged file must become an exception, not a crash */
  g_exception[0] = '\0';
  fake_buffer damaged;
  if (load(bytes, size, &damaged) != 0) {
    fprintf(stderr, "a damaged model loaded\n");
    return 1;
  }
  printf("damaged %s\n", g_exception);
  return 0;
}
