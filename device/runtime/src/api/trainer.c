/*
 * trainer.c — the tether_trainer_* entry points (tether.h): argument checks around the head
 * trainer of train/ (layout in head.c, steps and export in step.c).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "api/api.h"
#include "train/train.h"

void tether_train_config_default(tether_train_config* config) {
  if (config == NULL) return;
  memset(config, 0, sizeof(*config));
  config->batch_size = 32;
  config->optimizer = TETHER_OPTIMIZER_ADAM;
  config->learning_rate = 1e-3f;
  config->beta_1 = 0.9f;
  config->beta_2 = 0.999f;
  config->epsilon = 1e-7f;
  config->decay_steps = 1;
}

size_t tether_train_config_size(void) { return sizeof(tether_train_config); }

tether_status tether_trainer_arena_size(tether_model_t model, const tether_train_config* config,
                                        size_t* size_out) {
  if (model == NULL || config == NULL || size_out == NULL) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "NULL model, config or size_out");
  }
  size_t size = 0;
  tether_status status = tether_train_layout(model, config, NULL, &size, NULL);
  if (status != TETHER_STATUS_SUCCESS) return status;
  tether_clear_error();
  *size_out = size;
  return TETHER_STATUS_SUCCESS;
}

tether_status tether_trainer_create(tether_model_t model, const tether_train_config* config,
                                    void* arena, size_t arena_size,
                                    tether_trainer_t* trainer_out) {
  if (model == NULL || config == NULL || arena == NULL || trainer_out == NULL) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT,
                            "NULL model, config, arena or trainer_out");
  }
  if ((uintptr_t)arena % TETHER_ARENA_ALIGNMENT != 0) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "arena is not %u-byte aligned",
                            (unsigned)TETHER_ARENA_ALIGNMENT);
  }
  size_t need = 0;
  tether_status status = tether_train_layout(model, config, NULL, &need, NULL);
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (arena_size < need) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT,
                            "arena has %zu bytes, the trainer needs %zu", arena_size, need);
  }
  struct tether_trainer* t = NULL;
  status = tether_train_layout(model, config, (uint8_t*)arena, &need, &t);
  if (status != TETHER_STATUS_SUCCESS) return status;
  tether_clear_error();
  *trainer_out = t;
  return TETHER_STATUS_SUCCESS;
}

static tether_status check(tether_trainer_t t) {
  if (t == NULL || t->magic != TETHER_TRAIN_MAGIC) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT,
                            "trainer is NULL or was destroyed");
  }
  return TETHER_STATUS_SUCCESS;
}

static tether_status check_rows(tether_trainer_t t, const float* inputs, size_t rows) {
  tether_status status = check(t);
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (inputs == NULL) return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "inputs is NULL");
  if (rows < 1 || rows > t->config.batch_size) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT,
                            "rows is %zu; a step takes 1 to batch_size (%u) rows", rows,
                            t->config.batch_size);
  }
  return TETHER_STATUS_SUCCESS;
}

static tether_status check_batch(tether_trainer_t t, const float* inputs, const int32_t* labels,
                                 size_t rows) {
  tether_status status = check_rows(t, inputs, rows);
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (labels == NULL) return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "labels is NULL");
  for (size_t r = 0; r < rows; r++) {
    if (labels[r] < 0 || (size_t)labels[r] >= t->classes) {
      return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT,
                              "label %zu is %d; the head has %zu classes", r, (int)labels[r],
                              t->classes);
    }
  }
  return TETHER_STATUS_SUCCESS;
}

tether_status tether_trainer_step(tether_trainer_t trainer, const float* inputs,
                                  const int32_t* labels, size_t rows, float* loss_out) {
  tether_status status = check_batch(trainer, inputs, labels, rows);
  if (status != TETHER_STATUS_SUCCESS) return status;
  const float loss = tether_train_step(trainer, inputs, labels, rows);
  if (loss_out != NULL) *loss_out = loss;
  tether_clear_error();
  return TETHER_STATUS_SUCCESS;
}

tether_status tether_trainer_gradients(tether_trainer_t trainer, const float* inputs,
                                       const int32_t* labels, size_t rows, float* loss_out) {
  tether_status status = check_batch(trainer, inputs, labels, rows);
  if (status != TETHER_STATUS_SUCCESS) return status;
  const float loss = tether_train_gradients(trainer, inputs, labels, rows, 0);
  if (loss_out != NULL) *loss_out = loss;
  tether_clear_error();
  return TETHER_STATUS_SUCCESS;
}

tether_status tether_trainer_set_penalty(tether_trainer_t trainer, size_t index,
                                         const float* fisher, const float* anchor) {
  tether_status status = check(trainer);
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (index >= trainer->param_count || fisher == NULL) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT,
                            "param %zu out of range [0, %u), or fisher is NULL", index,
                            trainer->param_count);
  }
  tether_train_param* p = &trainer->params[index];
  if (p->fisher == NULL) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT,
                            "EWC is off: create the trainer with ewc_lambda > 0");
  }
  for (size_t j = 0; j < p->elements; j++) {
    if (!(fisher[j] >= 0.0f) || !(fisher[j] < 3.4e38f)) {
      return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT,
                              "fisher[%zu] of param %zu is negative or not finite", j, index);
    }
  }
  memcpy(p->fisher, fisher, p->elements * sizeof(float));
  memcpy(p->anchor, anchor != NULL ? anchor : p->value, p->elements * sizeof(float));
  tether_clear_error();
  return TETHER_STATUS_SUCCESS;
}

tether_status tether_trainer_predict(tether_trainer_t trainer, const float* inputs, size_t rows,
                                     float* outputs) {
  tether_status status = check_rows(trainer, inputs, rows);
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (outputs == NULL) return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "outputs is NULL");
  tether_train_forward(trainer, inputs, rows, 0);
  memcpy(outputs, trainer->ops[trainer->op_count - 1].y,
         rows * trainer->classes * sizeof(float));
  tether_clear_error();
  return TETHER_STATUS_SUCCESS;
}

size_t tether_trainer_input_elements(tether_trainer_t trainer) {
  return check(trainer) == TETHER_STATUS_SUCCESS ? trainer->x_elements : 0;
}

size_t tether_trainer_classes(tether_trainer_t trainer) {
  return check(trainer) == TETHER_STATUS_SUCCESS ? trainer->classes : 0;
}

size_t tether_trainer_param_count(tether_trainer_t trainer) {
  return check(trainer) == TETHER_STATUS_SUCCESS ? trainer->param_count : 0;
}

tether_status tether_trainer_param(tether_trainer_t trainer, size_t index, const char** name_out,
                                   size_t* elements_out, const float** value_out,
                                   const float** gradient_out) {
  tether_status status = check(trainer);
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (index >= trainer->param_count) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "param %zu out of range [0, %u)",
                            index, trainer->param_count);
  }
  const tether_train_param* p = &trainer->params[index];
  if (name_out != NULL) *name_out = trainer->model->tensors[p->tensor].name;
  if (elements_out != NULL) *elements_out = p->elements;
  if (value_out != NULL) *value_out = p->value;
  if (gradient_out != NULL) *gradient_out = p->grad;
  return TETHER_STATUS_SUCCESS;
}

size_t tether_trainer_export_size(tether_trainer_t trainer) {
  return check(trainer) == TETHER_STATUS_SUCCESS ? trainer->model->size : 0;
}

tether_status tether_trainer_export(tether_trainer_t trainer, void* out, size_t size) {
  tether_status status = check(trainer);
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (out == NULL || size != trainer->model->size) {
    return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT,
                            "export needs a buffer of exactly %zu bytes (got %zu%s)",
                            trainer->model->size, size, out == NULL ? ", NULL" : "");
  }
  tether_train_export(trainer, (uint8_t*)out);
  tether_clear_error();
  return TETHER_STATUS_SUCCESS;
}

void tether_trainer_destroy(tether_trainer_t trainer) {
  if (trainer != NULL && trainer->magic == TETHER_TRAIN_MAGIC) trainer->magic = 0;
}
