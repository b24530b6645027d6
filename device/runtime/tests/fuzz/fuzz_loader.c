/*
 * fuzz_loader.c — libFuzzer target for the .tmodel loader and, on models it accepts, session
 * create + invoke (with 1 or 2 threads); tether_model_memory must agree with the load on every
 * input (memory_check.h).
 *
 * The input is treated as a .tmodel file whose checksum is recomputed first, so mutations
 * get past the CRC check into the parser and the shape checks instead of dying there. Models whose
 * arena or arithmetic would make one run slow (> ~50 M multiply-adds, > 16 MiB arena) are
 * loaded but not run.
 *
 *   scripts/fuzz.sh SECONDS        builds with clang -fsanitize=fuzzer,address,undefined
 *   fuzz_replay FILE...            (ctest) replays the seed corpus and past findings
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "tether/tether.h"
#include "tmodel_builder.h"
#include "memory_check.h"

/* Rough count of the scalar work one invoke does. */
static double invoke_cost(const struct tether_model* m) {
  double cost = 0;
  for (uint32_t i = 0; i < m->op_count; i++) {
    const tether_node* op = &m->ops[i];
    double out = 0;
    for (uint32_t o = 0; o < op->output_count; o++) out += (double)m->tensors[op->outputs[o]].elements;
    for (uint32_t k = 0; k < op->input_count; k++) {
      if (op->inputs[k] != TETHER_NO_TENSOR) cost += (double)m->tensors[op->inputs[k]].elements;
    }
    cost += out;
    if (op->input_count > 1 && op->inputs[1] != TETHER_NO_TENSOR) {
      const tether_tensor* y = &m->tensors[op->outputs[0]];
      const double w = (double)m->tensors[op->inputs[1]].elements;
      const double channels = y->ndim > 0 && y->shape[y->ndim - 1] > 0 ? y->shape[y->ndim - 1] : 1;
      cost += out * (w / channels + 1);
    }
    if (op->params.kernel_h > 0 && op->params.kernel_w > 0) {
      cost += out * (double)op->params.kernel_h * (double)op->params.kernel_w;
    }
    if (op->type == TETHER_OP_MEAN || op->type == TETHER_OP_SOFTMAX) {
      cost += (double)m->tensors[op->inputs[0]].elements * 2;
    }
  }
  return cost;
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)tb_failures;
  uint8_t* file = (uint8_t*)aligned_alloc(64, (size + 64) / 64 * 64);
  if (file == NULL) return 0;
  memcpy(file, data, size);
  if (size >= 28) tb_reseal(file, size);
  /* tether_model_memory must give load's verdict and, on success, its exact requests. */
  char why[768];
  if (tm_compare(file, size, why, sizeof(why)) != 0) {
    fprintf(stderr, "tether_model_memory disagrees with tether_model_load: %s\n", why);
    abort();
  }
  tether_model_t model = NULL;
  if (tether_model_load(file, size, NULL, &model) == TETHER_STATUS_SUCCESS) {
    size_t arena_size = 0;
    tether_session_arena_size(model, &arena_size);
    if (arena_size <= ((size_t)16 << 20) && invoke_cost(model) < 5e7) {
      tether_session_t session = NULL;
      const uint32_t threads = size % 2 ? 2 : 1;
      if (tether_session_create(model, NULL, 0, threads, &session) == TETHER_STATUS_SUCCESS) {
        tether_session_invoke(session);
        tether_session_invoke(session);
        tether_session_destroy(session);
      }
    }
    tether_model_destroy(model);
  }
  free(file);
  return 0;
}
