/*
 * tmodel_builder.h — a tiny test-only .tmodel writer that follows converter/FORMAT.md, so
 * the C tests need no Python. Header-only; every function is static.
 *
 *   tb_builder* b = tb_new();
 *   uint32_t x = tb_tensor(b, "x", 4, (int32_t[]){1, 4, 4, 1}, NULL);        // activation
 *   uint32_t w = tb_tensor(b, "w", 4, (int32_t[]){2, 3, 3, 1}, weights);     // constant
 *   tb_op(b, TETHER_OP_CONV_2D, TETHER_ACT_RELU, "conv", 2, (uint32_t[]){x, w}, y);
 *   tb_attr_i(b, 3, 4, (int32_t[]){1, 1, 1, 1});                             // pads
 *   tb_graph_io(b, 1, &x, 1, &y);
 *   size_t size; uint8_t* file = tb_finish(b, &size);                       // 64-aligned
 */
#ifndef TETHER_TESTS_TMODEL_BUILDER_H_
#define TETHER_TESTS_TMODEL_BUILDER_H_

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tether/tether.h"

#define TB_MAX_TENSORS 512
#define TB_MAX_OPS 256
#define TB_MAX_OPERANDS 2048
#define TB_MAX_ATTRS 512
#define TB_MAX_STRINGS 16384

typedef struct tb_tensor_rec {
  uint32_t name;
  uint8_t dtype, ndim, flags;
  int32_t shape[6];
  const void* data;  /* constant contents (copied at tb_finish), or NULL */
  size_t data_size;
  uint8_t quant;     /* 0 none, 1 per tensor, 2 per channel (tb_quantize) */
  uint32_t quant_axis, quant_count;
  float scales[1024];
  int32_t zero_points[1024];
} tb_tensor_rec;

typedef struct tb_op_rec {
  uint16_t type;
  uint8_t activation;
  uint32_t name, input_count, output_count, first_operand, attr_count, first_attr;
} tb_op_rec;

typedef struct tb_attr_rec {
  uint16_t id;
  uint8_t type, count;
  uint32_t values[8];
} tb_attr_rec;

typedef struct tb_builder {
  char strings[TB_MAX_STRINGS];
  uint32_t strings_len;
  tb_tensor_rec tensors[TB_MAX_TENSORS];
  uint32_t tensor_count;
  tb_op_rec ops[TB_MAX_OPS];
  uint32_t op_count;
  uint32_t operands[TB_MAX_OPERANDS];
  uint32_t operand_count;
  tb_attr_rec attrs[TB_MAX_ATTRS];
  uint32_t attr_count;
  uint32_t inputs[64], outputs[64];
  uint32_t input_count, output_count;
} tb_builder;

static inline void tb_die(const char* what) {
  fprintf(stderr, "tmodel_builder: %s\n", what);
  exit(2);
}

static inline tb_builder* tb_new(void) {
  tb_builder* b = (tb_builder*)calloc(1, sizeof(tb_builder));
  if (b == NULL) tb_die("out of memory");
  b->strings_len = 1;  /* offset 0 is the empty string */
  return b;
}

static inline uint32_t tb_string(tb_builder* b, const char* s) {
  size_t n = strlen(s) + 1;
  if (n == 1) return 0;
  if (b->strings_len + n > TB_MAX_STRINGS) tb_die("too many strings");
  uint32_t off = b->strings_len;
  memcpy(b->strings + off, s, n);
  b->strings_len += (uint32_t)n;
  return off;
}

/* A float32 tensor; `data` != NULL makes it a constant (borrowed until tb_finish). */
static inline uint32_t tb_tensor(tb_builder* b, const char* name, uint32_t ndim, const int32_t* shape,
                          const float* data) {
  if (b->tensor_count == TB_MAX_TENSORS) tb_die("too many tensors");
  tb_tensor_rec* t = &b->tensors[b->tensor_count];
  t->name = tb_string(b, name);
  t->dtype = TETHER_DTYPE_FLOAT32;
  t->ndim = (uint8_t)ndim;
  size_t n = 1;
  for (uint32_t i = 0; i < ndim; i++) {
    t->shape[i] = shape[i];
    n *= (size_t)shape[i];
  }
  if (data != NULL) {
    t->flags = 1;
    t->data = data;
    t->data_size = n * 4;
  }
  return b->tensor_count++;
}

/* A tensor of any dtype; `data` != NULL (element count x dtype size bytes) makes it a constant. */
static inline uint32_t tb_tensor_typed(tb_builder* b, const char* name, uint32_t dtype,
                                       uint32_t ndim, const int32_t* shape, const void* data) {
  uint32_t t = tb_tensor(b, name, ndim, shape, NULL);
  tb_tensor_rec* r = &b->tensors[t];
  r->dtype = (uint8_t)dtype;
  if (data != NULL) {
    size_t n = 1;
    for (uint32_t i = 0; i < ndim; i++) n *= (size_t)shape[i];
    r->flags = 1;
    r->data = data;
    r->data_size = n * (dtype == 1 || dtype == 2 ? 1 : 4);
  }
  return t;
}

/* Quantization of tensor t: count 1 = per tensor, else per channel along `axis`. */
static inline void tb_quantize(tb_builder* b, uint32_t t, uint32_t axis, uint32_t count,
                               const float* scales, const int32_t* zero_points) {
  tb_tensor_rec* r = &b->tensors[t];
  if (count > 1024) tb_die("too many quantization channels");
  r->quant = count == 1 && axis == 0 ? 1 : 2;
  r->quant_axis = axis;
  r->quant_count = count;
  for (uint32_t i = 0; i < count; i++) {
    r->scales[i] = scales[i];
    r->zero_points[i] = zero_points != NULL ? zero_points[i] : 0;
  }
}

/* Appends an op with one output; attributes added next with tb_attr_* belong to it. */
static inline uint32_t tb_op(tb_builder* b, uint32_t type, uint32_t activation, const char* name,
                      uint32_t input_count, const uint32_t* inputs, uint32_t output) {
  if (b->op_count == TB_MAX_OPS || b->operand_count + input_count + 1 > TB_MAX_OPERANDS) {
    tb_die("too many ops");
  }
  tb_op_rec* op = &b->ops[b->op_count];
  op->type = (uint16_t)type;
  op->activation = (uint8_t)activation;
  op->name = tb_string(b, name);
  op->input_count = input_count;
  op->output_count = 1;
  op->first_operand = b->operand_count;
  for (uint32_t i = 0; i < input_count; i++) b->operands[b->operand_count++] = inputs[i];
  b->operands[b->operand_count++] = output;
  op->first_attr = b->attr_count;
  op->attr_count = 0;
  return b->op_count++;
}

static inline void tb_attr_raw(tb_builder* b, uint32_t id, uint32_t type, uint32_t count,
                        const void* values) {
  if (b->op_count == 0 || b->attr_count == TB_MAX_ATTRS || count > 8) tb_die("bad attribute");
  tb_attr_rec* a = &b->attrs[b->attr_count++];
  a->id = (uint16_t)id;
  a->type = (uint8_t)type;
  a->count = (uint8_t)count;
  memset(a->values, 0, sizeof(a->values));
  memcpy(a->values, values, 4 * count);
  b->ops[b->op_count - 1].attr_count++;
}

static inline void tb_attr_i(tb_builder* b, uint32_t id, uint32_t count, const int32_t* values) {
  tb_attr_raw(b, id, 1, count, values);
}

static inline void tb_attr_f(tb_builder* b, uint32_t id, float value) { tb_attr_raw(b, id, 2, 1, &value); }

static inline void tb_graph_io(tb_builder* b, uint32_t input_count, const uint32_t* inputs,
                        uint32_t output_count, const uint32_t* outputs) {
  b->input_count = input_count;
  b->output_count = output_count;
  memcpy(b->inputs, inputs, 4 * input_count);
  memcpy(b->outputs, outputs, 4 * output_count);
}

static inline void tb_w16(uint8_t* p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}
static inline void tb_w32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void tb_w64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint32_t tb_r32(const uint8_t* p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t tb_r64(const uint8_t* p) {
  return (uint64_t)tb_r32(p) | ((uint64_t)tb_r32(p + 4) << 32);
}

/* Independent bitwise CRC-32 (zlib's), so the engine's table-driven one is cross-checked. */
static inline uint32_t tb_crc32(const uint8_t* p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

/* Recomputes the header checksum after a deliberate edit. */
static inline void tb_reseal(uint8_t* file, size_t size) {
  tb_w32(file + 24, 0);
  tb_w32(file + 24, tb_crc32(file, size));
}

/* File offset of section `kind` (0 if absent); *size_out gets its size. */
static inline uint64_t tb_section(const uint8_t* file, uint32_t kind, uint64_t* size_out) {
  uint32_t count = tb_r32(file + 28);
  uint64_t dir = tb_r64(file + 32);
  for (uint32_t i = 0; i < count; i++) {
    const uint8_t* s = file + dir + 24 * (uint64_t)i;
    if (tb_r32(s) == kind) {
      if (size_out) *size_out = tb_r64(s + 16);
      return tb_r64(s + 8);
    }
  }
  return 0;
}

static inline size_t tb_align(size_t v, size_t a) { return (v + a - 1) / a * a; }

/* Serializes to a zero-padded, 64-byte-aligned buffer (free with free()); frees nothing. */
static inline uint8_t* tb_finish(const tb_builder* b, size_t* size_out) {
  enum { SECTIONS = 8 };
  size_t sizes[SECTIONS + 1] = {0};
  sizes[1] = b->strings_len;
  sizes[2] = 64 * (size_t)b->tensor_count;
  sizes[3] = 32 * (size_t)b->op_count;
  sizes[4] = 4 * (size_t)b->operand_count;
  sizes[5] = 40 * (size_t)b->attr_count;
  sizes[6] = 8 + 4 * (size_t)(b->input_count + b->output_count);
  sizes[7] = 4 + 8;  /* one metadata pair: producer */
  size_t offsets[SECTIONS + 1] = {0};
  size_t pos = 64 + 24 * SECTIONS;
  for (int k = 1; k <= 7; k++) {
    pos = tb_align(pos, 8);
    offsets[k] = pos;
    pos += sizes[k];
  }
  pos = tb_align(pos, 64);
  offsets[8] = pos;
  size_t blob_offsets[TB_MAX_TENSORS] = {0};
  size_t quant_offsets[TB_MAX_TENSORS] = {0};
  for (uint32_t t = 0; t < b->tensor_count; t++) {
    if (b->tensors[t].quant) {
      pos = tb_align(pos, 64);
      quant_offsets[t] = pos;
      pos += 8 * (size_t)b->tensors[t].quant_count;
    }
    if (!b->tensors[t].data) continue;
    pos = tb_align(pos, 64);
    blob_offsets[t] = pos;
    pos += b->tensors[t].data_size;
  }
  sizes[8] = pos - offsets[8];
  size_t size = tb_align(pos, 8);
  uint8_t* f = (uint8_t*)aligned_alloc(64, tb_align(size + 64, 64));
  if (f == NULL) tb_die("out of memory");
  memset(f, 0, size + 64);

  static const uint8_t magic[8] = {0x54, 0x4D, 0x4F, 0x44, 0x0D, 0x0A, 0x1A, 0x0A};
  memcpy(f, magic, 8);
  tb_w16(f + 8, 1);
  tb_w16(f + 10, 0);
  tb_w32(f + 12, 64);
  tb_w64(f + 16, size);
  tb_w32(f + 28, SECTIONS);
  tb_w64(f + 32, 64);
  for (int k = 1; k <= SECTIONS; k++) {
    uint8_t* s = f + 64 + 24 * (k - 1);
    tb_w32(s, (uint32_t)k);
    tb_w64(s + 8, offsets[k]);
    tb_w64(s + 16, sizes[k]);
  }
  memcpy(f + offsets[1], b->strings, b->strings_len);
  for (uint32_t t = 0; t < b->tensor_count; t++) {
    const tb_tensor_rec* r = &b->tensors[t];
    uint8_t* p = f + offsets[2] + 64 * (size_t)t;
    tb_w32(p, r->name);
    p[4] = r->dtype;
    p[5] = r->ndim;
    p[6] = r->quant;
    p[7] = r->flags;
    if (r->quant) {
      tb_w32(p + 32, r->quant_axis);
      tb_w32(p + 36, r->quant_count);
      tb_w64(p + 40, quant_offsets[t]);
      memcpy(f + quant_offsets[t], r->scales, 4 * (size_t)r->quant_count);
      memcpy(f + quant_offsets[t] + 4 * (size_t)r->quant_count, r->zero_points,
             4 * (size_t)r->quant_count);
    }
    for (int d = 0; d < 6; d++) tb_w32(p + 8 + 4 * d, (uint32_t)(d < r->ndim ? r->shape[d] : 0));
    if (r->data) {
      tb_w64(p + 48, blob_offsets[t]);
      tb_w64(p + 56, r->data_size);
      memcpy(f + blob_offsets[t], r->data, r->data_size);
    }
  }
  for (uint32_t i = 0; i < b->op_count; i++) {
    const tb_op_rec* r = &b->ops[i];
    uint8_t* p = f + offsets[3] + 32 * (size_t)i;
    tb_w16(p, r->type);
    p[2] = r->activation;
    tb_w32(p + 4, r->name);
    tb_w32(p + 8, r->input_count);
    tb_w32(p + 12, r->output_count);
    tb_w32(p + 16, r->first_operand);
    tb_w32(p + 20, r->attr_count);
    tb_w32(p + 24, r->first_attr);
  }
  for (uint32_t i = 0; i < b->operand_count; i++) tb_w32(f + offsets[4] + 4 * (size_t)i, b->operands[i]);
  for (uint32_t i = 0; i < b->attr_count; i++) {
    const tb_attr_rec* r = &b->attrs[i];
    uint8_t* p = f + offsets[5] + 40 * (size_t)i;
    tb_w16(p, r->id);
    p[2] = r->type;
    p[3] = r->count;
    for (int k = 0; k < 8; k++) tb_w32(p + 8 + 4 * k, r->values[k]);
  }
  uint8_t* io = f + offsets[6];
  tb_w32(io, b->input_count);
  tb_w32(io + 4, b->output_count);
  for (uint32_t i = 0; i < b->input_count; i++) tb_w32(io + 8 + 4 * i, b->inputs[i]);
  for (uint32_t i = 0; i < b->output_count; i++) {
    tb_w32(io + 8 + 4 * (b->input_count + i), b->outputs[i]);
  }
  uint8_t* meta = f + offsets[7];
  tb_w32(meta, 1);
  tb_w32(meta + 4, 0);  /* key "" */
  tb_w32(meta + 8, 0);  /* value "" */
  tb_reseal(f, size);
  *size_out = size;
  return f;
}

/* ---- small shared test helpers ----------------------------------------------------- */

static int tb_failures;

#define TB_CHECK(cond, ...)                                       \
  do {                                                            \
    if (!(cond)) {                                                \
      fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                               \
      fprintf(stderr, "\n");                                      \
      tb_failures++;                                              \
    }                                                             \
  } while (0)

/* Deterministic xorshift generator. */
static uint64_t tb_rng_state = 0x9E3779B97F4A7C15ull;
static inline uint32_t tb_rand(void) {
  uint64_t x = tb_rng_state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  tb_rng_state = x;
  return (uint32_t)(x >> 32);
}
/* Uniform integer in [lo, hi]. */
static inline int tb_range(int lo, int hi) { return lo + (int)(tb_rand() % (uint32_t)(hi - lo + 1)); }
static inline float tb_uniform(float lo, float hi) {
  return lo + (hi - lo) * (float)(tb_rand() >> 8) / (float)(1u << 24);
}

#endif  /* TETHER_TESTS_TMODEL_BUILDER_H_ */
