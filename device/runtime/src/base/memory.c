/*
 * memory.c — what the loader asks the model's allocator for (counted for tether_model_memory)
 * and the element sizes of the file's dtypes.
 */
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

void tether_tally_request(tether_memory_tally* tally, size_t size) {
  if (tally == NULL) return;
  tally->total += size;
  tally->live += size;
  if (tally->live > tally->peak) tally->peak = tally->live;
  if (size > tally->largest) tally->largest = size;
}

void* tether_tally_allocate(tether_memory_tally* tally, const tether_allocator* allocator,
                            size_t size, size_t alignment) {
  tether_tally_request(tally, size);
  return allocator->allocate(allocator->context, size, alignment);
}

void* tether_model_allocate(const struct tether_model* model, size_t size, size_t alignment) {
  return tether_tally_allocate(model->tally, &model->allocator, size, alignment);
}

void tether_model_deallocate(const struct tether_model* model, void* block, size_t size) {
  if (block == NULL) return;
  if (model->tally != NULL) model->tally->live -= size;
  model->allocator.deallocate(model->allocator.context, block);
}

size_t tether_dtype_size(uint32_t dtype) {
  switch (dtype) {
    case TETHER_DTYPE_FLOAT32: return 4;
    case TETHER_DTYPE_INT8: return 1;
    case TETHER_DTYPE_UINT8: return 1;
    case TETHER_DTYPE_INT32: return 4;
  }
  return 0;
}

const char* tether_dtype_name(uint32_t dtype) {
  switch (dtype) {
    case TETHER_DTYPE_FLOAT32: return "float32";
    case TETHER_DTYPE_INT8: return "int8";
    case TETHER_DTYPE_UINT8: return "uint8";
    case TETHER_DTYPE_INT32: return "int32";
  }
  return "?";
}
