/*
 * hosted.c — what needs a hosted C library: the malloc-based default allocator and
 * tether_model_load_file. A freestanding build leaves this file out and provides its own
 * tether_default_allocator (returning NULL makes a NULL allocator argument an error).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/base.h"
#include "compute/compute.h"

static void* default_allocate(void* context, size_t size, size_t alignment) {
  (void)context;
  if (alignment < sizeof(void*)) alignment = sizeof(void*);
  if (size == 0) size = 1;
  void* p = NULL;
  if (posix_memalign(&p, alignment, size) != 0) return NULL;
  return p;
}

static void default_deallocate(void* context, void* pointer) {
  (void)context;
  free(pointer);
}

static const tether_allocator kDefaultAllocator = {NULL, default_allocate, default_deallocate};

const tether_allocator* tether_default_allocator(void) { return &kDefaultAllocator; }

static tether_status io_error(const char* path, const char* what, int error) {
  char reason[128];
  const char* text = strerror(error);
  /* "No such file or directory" -> "no such file or directory" (lower-case, like the rest). */
  size_t n = 0;
  for (; text[n] != '\0' && n + 1 < sizeof(reason); n++) {
    reason[n] = (n == 0 && text[n] >= 'A' && text[n] <= 'Z') ? (char)(text[n] - 'A' + 'a')
                                                              : text[n];
  }
  reason[n] = '\0';
  return tether_set_error(TETHER_STATUS_IO_ERROR, "%s: cannot %s: %s", path, what, reason);
}

tether_status tether_model_load_file(const char* path, tether_model_t* model_out) {
  if (path == NULL || model_out == NULL) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "NULL path or model_out");
  }
  FILE* f = fopen(path, "rb");
  if (f == NULL) return io_error(path, "open", errno);
  long size = -1;
  if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
  if (size < 0 || fseek(f, 0, SEEK_SET) != 0) {
    int error = errno;
    fclose(f);
    return io_error(path, "determine the size of", error);
  }
  const tether_allocator* a = tether_default_allocator();
  void* buffer = a->allocate(a->context, (size_t)size, TETHER_ARENA_ALIGNMENT);
  if (buffer == NULL) {
    fclose(f);
    return tether_set_error(TETHER_STATUS_OUT_OF_MEMORY, "%s: cannot allocate %ld bytes", path,
                            size);
  }
  size_t got = fread(buffer, 1, (size_t)size, f);
  int read_failed = ferror(f);
  int error = errno;
  fclose(f);
  if (got != (size_t)size || read_failed) {
    a->deallocate(a->context, buffer);
    return read_failed ? io_error(path, "read", error)
                       : tether_set_error(TETHER_STATUS_IO_ERROR,
                                          "%s: cannot read: got %zu of %ld bytes", path, got,
                                          size);
  }
  tether_model_t model = NULL;
  tether_status status = tether_model_load(buffer, (size_t)size, a, &model);
  if (status != TETHER_STATUS_SUCCESS) {
    a->deallocate(a->context, buffer);
    tether_prefix_error(path);
    return status;
  }
  model->owned_buffer = buffer;
  *model_out = model;
  return TETHER_STATUS_SUCCESS;
}

const char* tether_isa_from_environment(void) { return getenv("TETHER_ISA"); }

uint64_t tether_now_ns(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return 0;
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
