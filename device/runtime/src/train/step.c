/*
 * step.c — one training step of a head: the forward pass (dense layers by the session's GEMM
 * over the trainer's packed weights, every other op by its registry eval, row by row, so the
 * outputs are the ones a session of the exported model computes), softmax cross-entropy on
 * the logits, the backward pass (plain loops: heads are small), L2, and SGD-momentum or Adam
 * as Keras 3 applies them. Also the export of the trained image.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "format/format.h"
#include "ops/ops.h"
#include "train/train.h"

/* splitmix64: the dropout stream (any seed is fine, including 0). */
static uint64_t next_random(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static void dropout(struct tether_trainer* t, tether_train_op* h, const float* x, size_t n) {
  const float rate = t->config.dropout, scale = 1.0f / (1.0f - rate);
  for (size_t i = 0; i < n; i++) {
    const float u = (float)(next_random(&t->rng) >> 40) * (1.0f / 16777216.0f);  /* [0, 1) */
    h->keep[i] = u >= rate;
    h->dropped[i] = h->keep[i] ? x[i] * scale : 0.0f;
  }
}

void tether_train_forward(struct tether_trainer* t, const float* x, size_t rows, int training) {
  const struct tether_model* m = t->model;
  const float* in = x;
  for (uint32_t q = 0; q < t->op_count; q++) {
    tether_train_op* h = &t->ops[q];
    const tether_node* op = &m->ops[h->op_index];
    if (h->kind == TETHER_TRAIN_DENSE) {
      const float* a = in;
      if (training && h->dropped != NULL) {
        dropout(t, h, in, rows * h->x_elements);
        a = h->dropped;
      }
      tether_f32_minmax mm;
      tether_f32_minmax_of(op->fused_activation ? op->activation : TETHER_ACT_NONE, &mm);
      tether_f32_gemm_parallel(NULL, m->kernels, rows * (h->x_elements / h->k), h->n, h->k, a,
                               h->k * sizeof(float), h->param >= 0 ? h->packed : op->packed,
                               h->y, h->n * sizeof(float), &mm);
    } else {
      for (size_t r = 0; r < rows; r++) {
        t->data[h->x_tensor] = (void*)(uintptr_t)(in + r * h->x_elements);
        t->data[h->y_tensor] = h->y + r * h->y_elements;
        tether_op_eval(m, h->op_index, t->data, t->scratch);
      }
    }
    in = h->y;
  }
}

/* dx for MEAN: each input element gets its output's gradient / the reduced count. */
static void mean_backward(const struct tether_model* m, const tether_train_op* h,
                          const float* g, float* dx, size_t rows) {
  const tether_tensor* x = &m->tensors[h->x_tensor];
  const tether_op_params* p = &m->ops[h->op_index].params;
  uint32_t reduced = 0;
  for (int32_t a = 0; a < p->axes_count; a++) reduced |= 1u << p->axes[a];
  size_t stride[TETHER_MAX_DIMS] = {0}, step = 1, count = 1;
  for (uint32_t d = x->ndim; d-- > 0;) {
    if (reduced & (1u << d)) {
      count *= (size_t)x->shape[d];
    } else {
      stride[d] = step;
      step *= (size_t)x->shape[d];
    }
  }
  const float inv = 1.0f / (float)count;
  for (size_t r = 0; r < rows; r++) {
    const float* gr = g + r * h->y_elements;
    float* dr = dx + r * h->x_elements;
    size_t index[TETHER_MAX_DIMS] = {0}, yi = 0;
    for (size_t i = 0; i < h->x_elements; i++) {
      dr[i] = gr[yi] * inv;
      for (uint32_t d = x->ndim; d-- > 0;) {
        index[d]++;
        yi += stride[d];
        if (index[d] < (size_t)x->shape[d]) break;
        yi -= stride[d] * index[d];
        index[d] = 0;
      }
    }
  }
}

static void dense_backward(const struct tether_trainer* t, const tether_train_op* h,
                           const float* x, float* g, float* dx, size_t rows) {
  const struct tether_model* m = t->model;
  const size_t n = h->n, k = h->k, mrows = rows * (h->x_elements / k);
  const float* y = h->y;
  if (h->activation == TETHER_ACT_RELU) {
    for (size_t i = 0; i < mrows * n; i++) g[i] = y[i] > 0.0f ? g[i] : 0.0f;
  } else if (h->activation == TETHER_ACT_RELU6) {
    for (size_t i = 0; i < mrows * n; i++) g[i] = y[i] > 0.0f && y[i] < 6.0f ? g[i] : 0.0f;
  }
  const float* a = h->dropped != NULL ? h->dropped : x;
  const float* w = h->param >= 0
                       ? t->params[h->param].value
                       : (const float*)m->tensors[m->ops[h->op_index].inputs[1]].data;
  if (h->param >= 0) {
    float* dw = t->params[h->param].grad;
    memset(dw, 0, n * k * sizeof(float));
    for (size_t r = 0; r < mrows; r++) {
      const float* ar = a + r * k;
      for (size_t o = 0; o < n; o++) {
        const float go = g[r * n + o];
        if (go == 0.0f) continue;
        float* dwo = dw + o * k;
        for (size_t j = 0; j < k; j++) dwo[j] += go * ar[j];
      }
    }
    if (h->has_bias) {
      float* db = t->params[h->param + 1].grad;
      for (size_t o = 0; o < n; o++) {
        float s = 0.0f;
        for (size_t r = 0; r < mrows; r++) s += g[r * n + o];
        db[o] = s;
      }
    }
  }
  if (dx == NULL) return;
  for (size_t r = 0; r < mrows; r++) {
    float* dr = dx + r * k;
    for (size_t j = 0; j < k; j++) dr[j] = 0.0f;
    for (size_t o = 0; o < n; o++) {
      const float go = g[r * n + o];
      if (go == 0.0f) continue;
      const float* wo = w + o * k;
      for (size_t j = 0; j < k; j++) dr[j] += go * wo[j];
    }
  }
  if (h->dropped != NULL) {
    const float scale = 1.0f / (1.0f - t->config.dropout);
    for (size_t i = 0; i < mrows * k; i++) dx[i] = h->keep[i] ? dx[i] * scale : 0.0f;
  }
}

static float learning_rate(const struct tether_trainer* t) {
  const tether_train_config* c = &t->config;
  if (c->schedule != TETHER_LR_COSINE) return c->learning_rate;
  const float s = (float)(t->steps < c->decay_steps ? t->steps : c->decay_steps);
  const float cosine = 0.5f * (1.0f + cosf(3.14159265358979f * s / (float)c->decay_steps));
  return c->learning_rate * ((1.0f - c->final_lr_ratio) * cosine + c->final_lr_ratio);
}

static void update(struct tether_trainer* t) {
  const tether_train_config* c = &t->config;
  const float lr = learning_rate(t);
  float alpha = 0.0f;
  if (c->optimizer == TETHER_OPTIMIZER_ADAM) {
    t->beta_1_power *= c->beta_1;
    t->beta_2_power *= c->beta_2;
    alpha = lr * sqrtf(1.0f - t->beta_2_power) / (1.0f - t->beta_1_power);
  }
  for (uint32_t i = 0; i < t->param_count; i++) {
    tether_train_param* p = &t->params[i];
    float* w = p->value;
    const float* g = p->grad;
    if (c->optimizer == TETHER_OPTIMIZER_ADAM) {
      const float b1 = 1.0f - c->beta_1, b2 = 1.0f - c->beta_2;
      for (size_t j = 0; j < p->elements; j++) {
        p->m[j] += (g[j] - p->m[j]) * b1;
        p->v[j] += (g[j] * g[j] - p->v[j]) * b2;
        w[j] -= (p->m[j] * alpha) / (sqrtf(p->v[j]) + c->epsilon);
      }
    } else if (p->m != NULL) {
      for (size_t j = 0; j < p->elements; j++) {
        p->m[j] = c->momentum * p->m[j] - lr * g[j];
        w[j] += p->m[j];
      }
    } else {
      for (size_t j = 0; j < p->elements; j++) w[j] -= lr * g[j];
    }
  }
  t->steps++;
  const struct tether_model* m = t->model;
  for (uint32_t q = 0; q < t->op_count; q++) {
    const tether_train_op* h = &t->ops[q];
    if (h->param < 0) continue;
    tether_f32_gemm_pack(m->kernels->gemm_nr, h->n, h->k, t->params[h->param].value,
                         h->has_bias ? t->params[h->param + 1].value : NULL, h->packed);
  }
}

float tether_train_gradients(struct tether_trainer* t, const float* x, const int32_t* labels,
                             size_t rows, int training) {
  const struct tether_model* m = t->model;
  tether_train_forward(t, x, rows, training);
  /* The logits: the SOFTMAX's input, or the head's output. */
  const uint32_t last = t->op_count - 1;
  const int softmax = t->ops[last].kind == TETHER_TRAIN_SOFTMAX;
  const int32_t top = softmax ? (int32_t)last - 1 : (int32_t)last;
  const float* logits = top >= 0 ? t->ops[top].y : x;
  const float beta = softmax ? m->ops[t->ops[last].op_index].params.beta : 1.0f;
  const size_t c = t->classes;
  float* g = t->grad_a;
  double loss = 0.0;
  for (size_t r = 0; r < rows; r++) {
    const float* z = logits + r * c;
    float mx = beta * z[0];
    for (size_t j = 1; j < c; j++) mx = beta * z[j] > mx ? beta * z[j] : mx;
    double sum = 0.0;
    for (size_t j = 0; j < c; j++) sum += (double)expf(beta * z[j] - mx);
    const float lse = mx + logf((float)sum);
    loss += (double)(lse - beta * z[labels[r]]);
    const float* p = softmax ? t->ops[last].y + r * c : t->probs + r * c;
    if (!softmax) {
      for (size_t j = 0; j < c; j++) t->probs[r * c + j] = expf(beta * z[j] - lse);
    }
    for (size_t j = 0; j < c; j++) {
      g[r * c + j] = beta * (p[j] - (j == (size_t)labels[r] ? 1.0f : 0.0f)) / (float)rows;
    }
  }
  loss /= (double)rows;
  for (int32_t q = top; q >= t->first_trained; q--) {
    tether_train_op* h = &t->ops[q];
    const float* xin = q > 0 ? t->ops[q - 1].y : x;
    float* dx = q > t->first_trained ? (g == t->grad_a ? t->grad_b : t->grad_a) : NULL;
    switch (h->kind) {
      case TETHER_TRAIN_DENSE: dense_backward(t, h, xin, g, dx, rows); break;
      case TETHER_TRAIN_RELU:
        for (size_t i = 0; dx != NULL && i < rows * h->x_elements; i++) {
          dx[i] = h->y[i] > 0.0f ? g[i] : 0.0f;
        }
        break;
      case TETHER_TRAIN_RELU6:
        for (size_t i = 0; dx != NULL && i < rows * h->x_elements; i++) {
          dx[i] = h->y[i] > 0.0f && h->y[i] < 6.0f ? g[i] : 0.0f;
        }
        break;
      case TETHER_TRAIN_MEAN:
        if (dx != NULL) mean_backward(m, h, g, dx, rows);
        break;
      default:  /* RESHAPE: the same elements */
        if (dx != NULL) memcpy(dx, g, rows * h->x_elements * sizeof(float));
        break;
    }
    if (dx != NULL) g = dx;
  }
  const float l2 = t->config.l2;
  for (uint32_t i = 0; i < t->param_count && l2 > 0.0f; i++) {
    tether_train_param* p = &t->params[i];
    if (!p->kernel) continue;
    double sq = 0.0;
    for (size_t j = 0; j < p->elements; j++) {
      sq += (double)p->value[j] * p->value[j];
      p->grad[j] += 2.0f * l2 * p->value[j];
    }
    loss += (double)l2 * sq;
  }
  const float lambda = t->config.ewc_lambda;
  for (uint32_t i = 0; i < t->param_count && lambda > 0.0f; i++) {
    tether_train_param* p = &t->params[i];
    double penalty = 0.0;
    for (size_t j = 0; j < p->elements; j++) {
      const float d = p->value[j] - p->anchor[j];
      penalty += (double)p->fisher[j] * d * d;
      p->grad[j] += lambda * p->fisher[j] * d;
    }
    loss += 0.5 * (double)lambda * penalty;
  }
  return (float)loss;
}

float tether_train_step(struct tether_trainer* t, const float* x, const int32_t* labels,
                        size_t rows) {
  const float loss = tether_train_gradients(t, x, labels, rows, 1);
  update(t);
  return loss;
}

void tether_train_export(const struct tether_trainer* t, uint8_t* out) {
  const struct tether_model* m = t->model;
  memcpy(out, m->data, m->size);
  for (uint32_t i = 0; i < t->param_count; i++) {
    const tether_train_param* p = &t->params[i];
    const size_t offset = (size_t)((const uint8_t*)m->tensors[p->tensor].data - m->data);
    memcpy(out + offset, p->value, p->elements * sizeof(float));
  }
  memset(out + 24, 0, 4);  /* the header's checksum covers the file with itself zeroed */
  const uint32_t crc = tether_crc32(0, out, m->size);
  for (int b = 0; b < 4; b++) out[24 + b] = (uint8_t)(crc >> (8 * b));
}
