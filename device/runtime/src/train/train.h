/*
 * train.h — on-device training of a model's head (the tether_trainer_* entry points in
 * api/trainer.c are its only users): which ops form the head and where everything lives in
 * the caller's arena (head.c), the forward pass over the engine's own kernels, the backward
 * pass, the loss and the optimizers (step.c).
 *
 * Layer: below api/, above format/ (the exported image's checksum), ops/ (the forward pass
 * runs each non-dense op's registry eval, so it computes what a session computes), compute/
 * (the dense layers run the session's GEMM over the trainer's packed copy) and base/.
 */
#ifndef TETHER_TRAIN_H_
#define TETHER_TRAIN_H_

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"
#include "compute/compute.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Most ops one head may hold. */
#define TETHER_TRAIN_MAX_OPS 32
#define TETHER_TRAIN_MAGIC 0x54524E52u  /* "TRNR": a live trainer */

typedef enum tether_train_kind {
  TETHER_TRAIN_DENSE = 0,
  TETHER_TRAIN_RELU = 1,
  TETHER_TRAIN_RELU6 = 2,
  TETHER_TRAIN_MEAN = 3,
  TETHER_TRAIN_RESHAPE = 4,
  TETHER_TRAIN_SOFTMAX = 5,
} tether_train_kind;

/* One op of the head, with its activations for one batch. */
typedef struct tether_train_op {
  uint32_t op_index;           /* in the model */
  uint32_t kind;               /* tether_train_kind */
  uint32_t x_tensor, y_tensor;
  size_t x_elements, y_elements;  /* per row */
  float* y;                    /* batch_size * y_elements */
  /* dense layers */
  size_t k, n;                 /* inputs and outputs of the GEMM; rows of it per row: x/k */
  uint8_t activation;          /* fused: NONE, RELU or RELU6 */
  int32_t param;               /* its weights are params[param], bias params[param + 1]
                                  (when has_bias); -1 = frozen (runs the model's packing) */
  uint8_t has_bias;
  float* packed;               /* the trained weights packed for the GEMM */
  float* dropped;              /* dropout: the input with dropped elements zeroed and the
                                  kept scaled (batch_size * x_elements), NULL = no dropout */
  uint8_t* keep;               /* dropout: 1 = kept */
} tether_train_op;

/* One trained tensor with its gradient and optimizer slots. */
typedef struct tether_train_param {
  uint32_t tensor;             /* in the model */
  size_t elements;
  int kernel;                  /* 1 = a dense layer's weights (L2 applies) */
  float* value;
  float* grad;
  float* m;                    /* SGD momentum / Adam first moment (NULL without) */
  float* v;                    /* Adam second moment */
  float* fisher;               /* EWC: the Fisher diagonal and the anchor (NULL without) */
  float* anchor;
} tether_train_param;

struct tether_trainer {
  uint32_t magic;
  const struct tether_model* model;
  tether_train_config config;  /* head_input is not kept (NULL) */
  uint32_t x_tensor;           /* the head input */
  size_t x_elements, classes;
  uint32_t op_count;
  tether_train_op ops[TETHER_TRAIN_MAX_OPS];
  uint32_t param_count;
  tether_train_param params[2 * TETHER_TRAIN_MAX_OPS];
  int32_t first_trained;       /* first op with a trained parameter (backward stops there) */
  float* grad_a;               /* two gradient buffers, batch_size * the widest tensor */
  float* grad_b;
  float* probs;                /* batch_size * classes: softmax of the logits */
  void** data;                 /* per tensor: the storage a registry eval reads/writes */
  void* scratch;               /* the largest op scratch of the head */
  uint64_t steps;
  float beta_1_power, beta_2_power;  /* Adam: beta^steps */
  uint64_t rng;
};

/*
 * Lays a trainer of `model` out over `arena` (NULL: only counts). On success *size_out is the
 * bytes needed (a multiple of TETHER_ARENA_ALIGNMENT) and, with an arena of that size,
 * *trainer_out the initialized trainer inside it.
 */
tether_status tether_train_layout(const struct tether_model* model,
                                  const tether_train_config* config, uint8_t* arena,
                                  size_t* size_out, struct tether_trainer** trainer_out);

/* Forward pass over `rows` inputs; training = 1 applies dropout. Outputs in ops[].y. */
void tether_train_forward(struct tether_trainer* t, const float* x, size_t rows, int training);

/* The loss and the gradients of every param for `rows` inputs (training = 1: dropout on). */
float tether_train_gradients(struct tether_trainer* t, const float* x, const int32_t* labels,
                             size_t rows, int training);

/* tether_train_gradients with dropout, then the optimizer update; returns the loss. */
float tether_train_step(struct tether_trainer* t, const float* x, const int32_t* labels,
                        size_t rows);

/* Writes the model image with the trained values (checksum recomputed) into `out`. */
void tether_train_export(const struct tether_trainer* t, uint8_t* out);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* TETHER_TRAIN_H_ */
