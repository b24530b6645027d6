/*
 * model.c — the model half of the public API (tether.h): load (read and validate the image,
 * plan the arena, pack the weights), the dry-run memory query over the very same code,
 * destroy, and the graph I/O queries.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "api/api.h"
#include "format/format.h"

static int is_little_endian(void) {
  const uint16_t probe = 1;
  uint8_t first;
  memcpy(&first, &probe, 1);
  return first == 1;
}

static tether_status check_image(const void* data, const tether_allocator** allocator) {
  if (data == NULL) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "data is NULL");
  }
  if ((uintptr_t)data % 4 != 0) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT,
                            "data is not 4-byte aligned (64 recommended)");
  }
  if (*allocator == NULL) *allocator = tether_default_allocator();
  const tether_allocator* a = *allocator;
  if (a == NULL || a->allocate == NULL || a->deallocate == NULL) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT,
                            "no allocator given and this build has no default allocator");
  }
  if (!is_little_endian()) {
    return tether_set_error(TETHER_STATUS_UNSUPPORTED_HARDWARE,
                            "big-endian hosts are not supported (weights are used in place)");
  }
  return TETHER_STATUS_SUCCESS;
}

/*
 * Reads, validates, plans and packs an image: tether_model_load, and (with a dry-run
 * `tally`) tether_model_memory, which so counts the requests of this very code. On failure
 * everything allocated has been given back.
 */
static tether_status load(const void* data, size_t size, const tether_allocator* allocator,
                          tether_memory_tally* tally, struct tether_model** model_out) {
  struct tether_model* model = NULL;
  tether_status status = tether_format_read(data, size, allocator, tally, &model);
  if (status == TETHER_STATUS_SUCCESS) status = tether_plan_model(model);
  if (status == TETHER_STATUS_SUCCESS) status = tether_pack_weights(model);
  if (status != TETHER_STATUS_SUCCESS) {
    if (model != NULL) {
      tether_model_deallocate(model, model->unpacked, model->unpacked_bytes);
      allocator->deallocate(allocator->context, model);
    }
    return status;
  }
  *model_out = model;
  return TETHER_STATUS_SUCCESS;
}

tether_status tether_model_load(const void* data, size_t size, const tether_allocator* allocator,
                                tether_model_t* model_out) {
  if (model_out == NULL) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "model_out is NULL");
  }
  tether_status status = check_image(data, &allocator);
  struct tether_model* model = NULL;
  if (status == TETHER_STATUS_SUCCESS) status = load(data, size, allocator, NULL, &model);
  if (status != TETHER_STATUS_SUCCESS) return status;
  tether_clear_error();
  *model_out = model;
  return TETHER_STATUS_SUCCESS;
}

tether_status tether_model_memory(const void* data, size_t size,
                                  const tether_allocator* allocator, size_t* total_bytes_out,
                                  size_t* peak_bytes_out, size_t* resident_bytes_out,
                                  size_t* largest_block_out) {
  if (total_bytes_out == NULL || peak_bytes_out == NULL || resident_bytes_out == NULL ||
      largest_block_out == NULL) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT,
                            "total_bytes_out, peak_bytes_out, resident_bytes_out or "
                            "largest_block_out is NULL");
  }
  tether_status status = check_image(data, &allocator);
  if (status != TETHER_STATUS_SUCCESS) return status;
  tether_memory_tally tally;
  memset(&tally, 0, sizeof(tally));
  tally.dry_run = 1;
  struct tether_model* model = NULL;
  status = load(data, size, allocator, &tally, &model);
  if (status != TETHER_STATUS_SUCCESS) return status;
  /* A dry run allocated only the model block; its temporaries are back already. */
  allocator->deallocate(allocator->context, model);
  tether_clear_error();
  *total_bytes_out = tally.total;
  *peak_bytes_out = tally.peak;
  *resident_bytes_out = tally.live;
  *largest_block_out = tally.largest;
  return TETHER_STATUS_SUCCESS;
}

void tether_model_destroy(tether_model_t model) {
  if (model == NULL) return;
  tether_allocator allocator = model->allocator;
  void* owned = model->owned_buffer;
  allocator.deallocate(allocator.context, model->packed);
  allocator.deallocate(allocator.context, model->unpacked);
  allocator.deallocate(allocator.context, model);
  allocator.deallocate(allocator.context, owned);
}

/* ---- queries -------------------------------------------------------------------------- */

static const tether_tensor* io_tensor(tether_model_t model, tether_io kind, size_t index) {
  if (model == NULL) return NULL;
  if (kind == TETHER_IO_INPUT && index < model->input_count) {
    return &model->tensors[model->inputs[index]];
  }
  if (kind == TETHER_IO_OUTPUT && index < model->output_count) {
    return &model->tensors[model->outputs[index]];
  }
  return NULL;
}

static tether_status io_range_error(tether_model_t model, tether_io kind, size_t index) {
  if (model == NULL) return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "model is NULL");
  return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "%s index %zu out of range [0, %zu)",
                          kind == TETHER_IO_INPUT ? "input" : "output", index,
                          tether_model_io_count(model, kind));
}

size_t tether_model_io_count(tether_model_t model, tether_io kind) {
  if (model == NULL) return 0;
  if (kind == TETHER_IO_INPUT) return model->input_count;
  if (kind == TETHER_IO_OUTPUT) return model->output_count;
  return 0;
}

const char* tether_model_io_name(tether_model_t model, tether_io kind, size_t index) {
  const tether_tensor* t = io_tensor(model, kind, index);
  return t != NULL ? t->name : NULL;
}

tether_status tether_model_io_find(tether_model_t model, tether_io kind, const char* name,
                                   size_t* index_out) {
  if (model == NULL || name == NULL || index_out == NULL) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "NULL model, name or index_out");
  }
  size_t count = tether_model_io_count(model, kind);
  for (size_t i = 0; i < count; i++) {
    if (strcmp(io_tensor(model, kind, i)->name, name) == 0) {
      *index_out = i;
      return TETHER_STATUS_SUCCESS;
    }
  }
  return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "the model has no %s named '%s'",
                          kind == TETHER_IO_INPUT ? "input" : "output", name);
}

tether_status tether_model_io_shape(tether_model_t model, tether_io kind, size_t index,
                                    size_t* ndim_out, int32_t* dims_out,
                                    tether_dtype* dtype_out) {
  const tether_tensor* t = io_tensor(model, kind, index);
  if (t == NULL) return io_range_error(model, kind, index);
  if (ndim_out == NULL || dims_out == NULL || dtype_out == NULL) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "NULL output pointer");
  }
  *ndim_out = t->ndim;
  for (size_t i = 0; i < TETHER_MAX_DIMS; i++) dims_out[i] = i < t->ndim ? t->shape[i] : 0;
  *dtype_out = (tether_dtype)t->dtype;
  return TETHER_STATUS_SUCCESS;
}

tether_status tether_model_io_quantization(tether_model_t model, tether_io kind, size_t index,
                                           float* scale_out, int32_t* zero_point_out) {
  const tether_tensor* t = io_tensor(model, kind, index);
  if (t == NULL) return io_range_error(model, kind, index);
  if (scale_out == NULL || zero_point_out == NULL) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "NULL output pointer");
  }
  if (t->quant == TETHER_QUANT_PER_CHANNEL) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT,
                            "%s %zu '%s' is quantized per channel, not per tensor",
                            kind == TETHER_IO_INPUT ? "input" : "output", index, t->name);
  }
  *scale_out = t->scale;
  *zero_point_out = t->zero_point;
  return TETHER_STATUS_SUCCESS;
}

size_t tether_model_op_count(tether_model_t model) {
  return model != NULL ? model->op_count : 0;
}

