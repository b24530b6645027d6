/*
 * model.c — loads and validates a .tmodel image (converter/FORMAT.md) and answers queries.
 *
 * Every byte of the image is treated as hostile: each read is preceded by a range check,
 * all offset arithmetic is done in 64 bits with explicit overflow checks, and every failure
 * leaves a message in tether_last_error() naming the field at fault. Records are decoded
 * into the structs of internal.h; constant blobs are used in place (zero-copy).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"
#include "ukernels.h"

/* ---- format constants (FORMAT.md) --------------------------------------------------- */

#define HEADER_SIZE 64u
#define SECTION_RECORD 24u
#define TENSOR_RECORD 64u
#define OP_RECORD 32u
#define OPERAND_RECORD 4u
#define ATTR_RECORD 40u
#define BLOB_ALIGN 64u

enum {
  SECTION_STRINGS = 1,
  SECTION_TENSORS = 2,
  SECTION_OPS = 3,
  SECTION_OPERANDS = 4,
  SECTION_ATTRS = 5,
  SECTION_GRAPH_IO = 6,
  SECTION_METADATA = 7,
  SECTION_DATA = 8,
  SECTION_KINDS = 9,
};

static const char* const kSectionNames[SECTION_KINDS] = {
    "?", "STRINGS", "TENSORS", "OPS", "OPERANDS", "ATTRS", "GRAPH_IO", "METADATA", "DATA",
};

enum {
  ATTR_STRIDES = 1,
  ATTR_DILATIONS = 2,
  ATTR_PADS = 3,
  ATTR_GROUPS = 4,
  ATTR_DEPTH_MULTIPLIER = 5,
  ATTR_KERNEL = 6,
  ATTR_COUNT_INCLUDE_PAD = 7,
  ATTR_AXES = 8,
  ATTR_KEEPDIMS = 9,
  ATTR_AXIS = 10,
  ATTR_PADDINGS = 11,
  ATTR_VALUE = 12,
  ATTR_BETA = 13,
  ATTR_PERM = 14,
  ATTR_MIN = 15,
  ATTR_MAX = 16,
  ATTR_ALPHA = 17,
  ATTR_OFFSET = 18,
  ATTR_IDS = 19,
};

#define ATTR_MAX_VALUES 8u
#define ATTR_TYPE_INT 1u
#define ATTR_TYPE_FLOAT 2u

typedef struct attr_spec {
  const char* name;
  uint8_t type;
  uint8_t min_count;
  uint8_t max_count;
} attr_spec;

static const attr_spec kAttrSpecs[ATTR_IDS] = {
    {"?", 0, 0, 0},
    {"strides", ATTR_TYPE_INT, 2, 2},
    {"dilations", ATTR_TYPE_INT, 2, 2},
    {"pads", ATTR_TYPE_INT, 4, 4},
    {"groups", ATTR_TYPE_INT, 1, 1},
    {"depth_multiplier", ATTR_TYPE_INT, 1, 1},
    {"kernel", ATTR_TYPE_INT, 2, 2},
    {"count_include_pad", ATTR_TYPE_INT, 1, 1},
    {"axes", ATTR_TYPE_INT, 1, TETHER_MAX_DIMS},
    {"keepdims", ATTR_TYPE_INT, 1, 1},
    {"axis", ATTR_TYPE_INT, 1, 1},
    /* An attribute record holds at most 8 values, so PAD reaches rank 4 (FORMAT.md). */
    {"paddings", ATTR_TYPE_INT, 2, ATTR_MAX_VALUES},
    {"value", ATTR_TYPE_FLOAT, 1, 1},
    {"beta", ATTR_TYPE_FLOAT, 1, 1},
    {"perm", ATTR_TYPE_INT, 1, TETHER_MAX_DIMS},
    {"min", ATTR_TYPE_FLOAT, 1, 1},
    {"max", ATTR_TYPE_FLOAT, 1, 1},
    {"alpha", ATTR_TYPE_FLOAT, 1, 1},
    {"offset", ATTR_TYPE_FLOAT, 1, 1},
};

#define BIT(a) (1u << (a))

typedef struct op_spec {
  uint8_t min_inputs;
  uint16_t max_inputs;
  uint8_t optional_from;  /* inputs at or after this slot may be absent (0xFFFFFFFF) */
  uint32_t attrs;         /* BIT(attr id) for each accepted attribute */
  tether_prepare_fn prepare;
  tether_eval_fn eval;
} op_spec;

#define WINDOW_ATTRS (BIT(ATTR_STRIDES) | BIT(ATTR_DILATIONS) | BIT(ATTR_PADS))
#define NO_OPTIONAL 255

static const op_spec kOpSpecs[] = {
    [TETHER_OP_CONV_2D] = {2, 3, 2, WINDOW_ATTRS | BIT(ATTR_GROUPS), tether_conv2d_prepare,
                           tether_conv2d_eval},
    [TETHER_OP_DEPTHWISE_CONV_2D] = {2, 3, 2, WINDOW_ATTRS | BIT(ATTR_DEPTH_MULTIPLIER),
                                     tether_depthwise_conv2d_prepare,
                                     tether_depthwise_conv2d_eval},
    [TETHER_OP_FULLY_CONNECTED] = {2, 3, 2, 0, tether_fully_connected_prepare,
                                   tether_fully_connected_eval},
    [TETHER_OP_ADD] = {2, 2, NO_OPTIONAL, 0, tether_binary_prepare, tether_binary_eval},
    [TETHER_OP_MUL] = {2, 2, NO_OPTIONAL, 0, tether_binary_prepare, tether_binary_eval},
    [TETHER_OP_MAX_POOL_2D] = {1, 1, NO_OPTIONAL,
                               BIT(ATTR_STRIDES) | BIT(ATTR_PADS) | BIT(ATTR_KERNEL),
                               tether_pool_prepare, tether_pool_eval},
    [TETHER_OP_AVERAGE_POOL_2D] = {1, 1, NO_OPTIONAL,
                                   BIT(ATTR_STRIDES) | BIT(ATTR_PADS) | BIT(ATTR_KERNEL) |
                                       BIT(ATTR_COUNT_INCLUDE_PAD),
                                   tether_pool_prepare, tether_pool_eval},
    [TETHER_OP_MEAN] = {1, 1, NO_OPTIONAL, BIT(ATTR_AXES) | BIT(ATTR_KEEPDIMS),
                        tether_mean_prepare, tether_mean_eval},
    [TETHER_OP_RESHAPE] = {1, 1, NO_OPTIONAL, 0, tether_reshape_prepare, tether_reshape_eval},
    [TETHER_OP_CONCATENATION] = {1, UINT16_MAX, NO_OPTIONAL, BIT(ATTR_AXIS),
                                 tether_concat_prepare, tether_concat_eval},
    [TETHER_OP_PAD] = {1, 1, NO_OPTIONAL, BIT(ATTR_PADDINGS) | BIT(ATTR_VALUE),
                       tether_pad_prepare, tether_pad_eval},
    [TETHER_OP_SOFTMAX] = {1, 1, NO_OPTIONAL, BIT(ATTR_BETA), tether_softmax_prepare,
                           tether_softmax_eval},
    [TETHER_OP_RELU] = {1, 1, NO_OPTIONAL, 0, tether_activation_prepare,
                        tether_activation_eval},
    [TETHER_OP_RELU6] = {1, 1, NO_OPTIONAL, 0, tether_activation_prepare,
                         tether_activation_eval},
    [TETHER_OP_LOGISTIC] = {1, 1, NO_OPTIONAL, 0, tether_activation_prepare,
                            tether_activation_eval},
    [TETHER_OP_TANH] = {1, 1, NO_OPTIONAL, 0, tether_activation_prepare,
                        tether_activation_eval},
    [TETHER_OP_HARD_SWISH] = {1, 1, NO_OPTIONAL, 0, tether_activation_prepare,
                              tether_activation_eval},
    [TETHER_OP_QUANTIZE] = {1, 1, NO_OPTIONAL, 0, tether_quantize_prepare, tether_quantize_eval},
    [TETHER_OP_DEQUANTIZE] = {1, 1, NO_OPTIONAL, 0, tether_dequantize_prepare,
                              tether_dequantize_eval},
    [TETHER_OP_SUB] = {2, 2, NO_OPTIONAL, 0, tether_binary_prepare, tether_binary_eval},
    [TETHER_OP_DIV] = {2, 2, NO_OPTIONAL, 0, tether_binary_prepare, tether_binary_eval},
    [TETHER_OP_TRANSPOSE] = {1, 1, NO_OPTIONAL, BIT(ATTR_PERM), tether_transpose_prepare,
                             tether_transpose_eval},
    [TETHER_OP_CLAMP] = {1, 1, NO_OPTIONAL, BIT(ATTR_MIN) | BIT(ATTR_MAX),
                         tether_activation_prepare, tether_activation_eval},
    [TETHER_OP_HARD_SIGMOID] = {1, 1, NO_OPTIONAL, BIT(ATTR_ALPHA) | BIT(ATTR_OFFSET),
                                tether_activation_prepare, tether_activation_eval},
};

#define OP_TYPE_COUNT (sizeof(kOpSpecs) / sizeof(kOpSpecs[0]))

/* ---- little-endian reads (callers have range-checked p .. p+width) -------------------- */

static uint16_t rd16(const uint8_t* p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static uint32_t rd32(const uint8_t* p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
         ((uint32_t)p[3] << 24);
}

static uint64_t rd64(const uint8_t* p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }

static int32_t rdi32(const uint8_t* p) {
  uint32_t u = rd32(p);
  int32_t i;
  memcpy(&i, &u, sizeof(i));
  return i;
}

static float rdf32(const uint8_t* p) {
  uint32_t u = rd32(p);
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

/* ---- CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320, as zlib's crc32) ----------- */

/*
 * The 256-entry table is rebuilt on the stack per call (2048 shift steps, negligible next
 * to hashing a model): no global state, so no initialisation race between threads.
 */
static void crc_table(uint32_t table[256]) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    table[i] = c;
  }
}

uint32_t tether_crc32(uint32_t crc, const void* data, size_t n) {
  uint32_t table[256];
  crc_table(table);
  const uint8_t* p = (const uint8_t*)data;
  crc = ~crc;
  for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

/* ---- helpers -------------------------------------------------------------------------- */

size_t tether_dtype_size(uint32_t dtype) {
  switch (dtype) {
    case TETHER_DTYPE_FLOAT32: return 4;
    case TETHER_DTYPE_INT8: return 1;
    case TETHER_DTYPE_UINT8: return 1;
    case TETHER_DTYPE_INT32: return 4;
  }
  return 0;
}

static const char* dtype_name(uint32_t dtype) {
  switch (dtype) {
    case TETHER_DTYPE_FLOAT32: return "float32";
    case TETHER_DTYPE_INT8: return "int8";
    case TETHER_DTYPE_UINT8: return "uint8";
    case TETHER_DTYPE_INT32: return "int32";
  }
  return "?";
}

const char* tether_shape_string(const tether_tensor* t, char* buffer, size_t capacity) {
  size_t n = tether_format(buffer, capacity, "[");
  for (uint32_t i = 0; i < t->ndim && n < capacity; i++) {
    n += tether_format(buffer + n, capacity - n, i == 0 ? "%d" : ", %d", t->shape[i]);
  }
  if (n < capacity) tether_format(buffer + n, capacity - n, "]");
  return buffer;
}

static uint32_t tensor_index(const struct tether_model* model, const tether_tensor* t) {
  return (uint32_t)(t - model->tensors);
}

tether_status tether_check_f32(const struct tether_model* model, uint32_t op_index,
                               const tether_tensor* t, const char* slot) {
  if (t->dtype == TETHER_DTYPE_FLOAT32) return TETHER_STATUS_SUCCESS;
  return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                         "%s (tensor %u '%s') is %s, expected float32", slot,
                         tensor_index(model, t), t->name, dtype_name(t->dtype));
}

tether_status tether_check_shape(const struct tether_model* model, uint32_t op_index,
                                 const tether_tensor* t, const char* slot, uint32_t ndim,
                                 const int32_t* expected) {
  int ok = t->ndim == ndim;
  for (uint32_t i = 0; ok && i < ndim; i++) ok = t->shape[i] == expected[i];
  if (ok) return TETHER_STATUS_SUCCESS;
  tether_tensor want;
  memset(&want, 0, sizeof(want));
  want.ndim = (uint8_t)ndim;
  for (uint32_t i = 0; i < ndim && i < TETHER_MAX_DIMS; i++) want.shape[i] = expected[i];
  char have_text[96], want_text[96];
  return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                         "%s (tensor %u '%s') has shape %s, expected %s", slot,
                         tensor_index(model, t), t->name,
                         tether_shape_string(t, have_text, sizeof(have_text)),
                         tether_shape_string(&want, want_text, sizeof(want_text)));
}

int64_t tether_window_output(int64_t in, int64_t pad_begin, int64_t pad_end, int64_t kernel,
                             int64_t stride, int64_t dilation) {
  int64_t span = dilation * (kernel - 1) + 1;
  int64_t room = in + pad_begin + pad_end - span;
  if (room < 0 || stride < 1) return 0;
  return room / stride + 1;
}

tether_status tether_check_window_output(const struct tether_model* model, uint32_t op_index,
                                         const tether_tensor* x, const tether_tensor* y,
                                         int32_t kernel_h, int32_t kernel_w, int32_t dilation_h,
                                         int32_t dilation_w, int32_t channels) {
  const tether_op_params* p = &model->ops[op_index].params;
  int64_t oh = tether_window_output(x->shape[1], p->pad_top, p->pad_bottom, kernel_h,
                                    p->stride_h, dilation_h);
  int64_t ow = tether_window_output(x->shape[2], p->pad_left, p->pad_right, kernel_w,
                                    p->stride_w, dilation_w);
  if (oh < 1 || ow < 1 || oh > INT32_MAX || ow > INT32_MAX) {
    char text[96];
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "kernel %dx%d with dilations [%d, %d] does not fit input 0 %s "
                           "padded by [%d, %d, %d, %d]",
                           kernel_h, kernel_w, dilation_h, dilation_w,
                           tether_shape_string(x, text, sizeof(text)), p->pad_top, p->pad_left,
                           p->pad_bottom, p->pad_right);
  }
  const int32_t expected[4] = {x->shape[0], (int32_t)oh, (int32_t)ow, channels};
  /* The output has the input's dtype (float32, or int8 on the int8 paths). */
  if (y->dtype != x->dtype) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "output 0 (tensor '%s') has dtype %u, input 0 has %u", y->name,
                           (unsigned)y->dtype, (unsigned)x->dtype);
  }
  return tether_check_shape(model, op_index, y, "output 0", 4, expected);
}

static int is_little_endian(void) {
  const uint16_t probe = 1;
  uint8_t first;
  memcpy(&first, &probe, 1);
  return first == 1;
}

/* ---- loading -------------------------------------------------------------------------- */

typedef struct range {
  uint64_t offset;
  uint64_t size;
  int present;
} range;

typedef struct loader {
  const uint8_t* base;
  uint64_t size;
  range sections[SECTION_KINDS];
  struct tether_model* model;
  tether_memory_tally* tally;        /* tether_model_memory's count; NULL when loading */
  uint32_t operand_total;
  uint32_t attr_total;
} loader;

static const char* string_at(const loader* l, uint32_t offset) {
  /* STRINGS ends with a NUL (checked), so any in-range offset starts a terminated string. */
  return (const char*)(l->base + l->sections[SECTION_STRINGS].offset + offset);
}

static int string_ok(const loader* l, uint32_t offset) {
  return offset < l->sections[SECTION_STRINGS].size;
}

/* A blob of `bytes` at file offset `offset` lies in DATA at a 64-byte boundary. */
static int blob_ok(const loader* l, uint64_t offset, uint64_t bytes) {
  const range* data = &l->sections[SECTION_DATA];
  if (!data->present || offset % BLOB_ALIGN != 0) return 0;
  if (offset < data->offset || offset - data->offset > data->size) return 0;
  return bytes <= data->size - (offset - data->offset);
}

static tether_status read_header(loader* l) {
  const uint8_t* p = l->base;
  static const uint8_t kMagic[8] = {0x54, 0x4D, 0x4F, 0x44, 0x0D, 0x0A, 0x1A, 0x0A};
  if (l->size < HEADER_SIZE) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                            "truncated: buffer has %llu bytes, fewer than the %u-byte header",
                            (unsigned long long)l->size, HEADER_SIZE);
  }
  if (memcmp(p, kMagic, sizeof(kMagic)) != 0) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                            "bad magic: not a .tmodel file (expected 54 4D 4F 44 0D 0A 1A 0A, "
                            "got %x %x %x %x %x %x %x %x)",
                            p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]);
  }
  uint16_t major = rd16(p + 8);
  if (major != TETHER_FORMAT_VERSION_MAJOR) {
    return tether_set_error(TETHER_STATUS_VERSION_MISMATCH,
                            "version_major is %u; this engine reads version %u files",
                            (unsigned)major, (unsigned)TETHER_FORMAT_VERSION_MAJOR);
  }
  uint32_t header_size = rd32(p + 12);
  if (header_size != HEADER_SIZE) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR, "header_size is %u, expected %u",
                            header_size, HEADER_SIZE);
  }
  uint64_t file_size = rd64(p + 16);
  if (file_size > l->size) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                            "truncated: header says %llu bytes, buffer has %llu",
                            (unsigned long long)file_size, (unsigned long long)l->size);
  }
  if (file_size != l->size) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                            "file_size mismatch: header says %llu bytes, buffer has %llu",
                            (unsigned long long)file_size, (unsigned long long)l->size);
  }
  uint32_t stored = rd32(p + 24);
  static const uint8_t kZero[4] = {0, 0, 0, 0};
  uint32_t crc = tether_crc32(0, p, 24);
  crc = tether_crc32(crc, kZero, 4);
  crc = tether_crc32(crc, p + 28, (size_t)(l->size - 28));
  if (crc != stored) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                            "checksum mismatch: header says %x, contents give %x "
                            "(the file is damaged)",
                            stored, crc);
  }
  return TETHER_STATUS_SUCCESS;
}

static tether_status read_sections(loader* l) {
  const uint8_t* p = l->base;
  uint32_t count = rd32(p + 28);
  uint64_t offset = rd64(p + 32);
  if (offset % 8 != 0 || offset > l->size ||
      (uint64_t)count * SECTION_RECORD > l->size - offset) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                            "section directory (%u entries at offset %llu) out of range "
                            "[0, %llu) or not 8-byte aligned",
                            count, (unsigned long long)offset, (unsigned long long)l->size);
  }
  for (uint32_t i = 0; i < count; i++) {
    const uint8_t* s = p + offset + (uint64_t)i * SECTION_RECORD;
    uint32_t kind = rd32(s);
    uint64_t off = rd64(s + 8);
    uint64_t size = rd64(s + 16);
    if (kind == 0 || kind >= SECTION_KINDS) continue;  /* unknown kinds are skipped */
    if (off % 8 != 0 || off > l->size || size > l->size - off) {
      return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                              "section %u (%s): offset %llu size %llu out of range [0, %llu) "
                              "or offset not a multiple of 8",
                              i, kSectionNames[kind], (unsigned long long)off,
                              (unsigned long long)size, (unsigned long long)l->size);
    }
    if (l->sections[kind].present) {
      return tether_set_error(TETHER_STATUS_FORMAT_ERROR, "section %u: %s appears twice", i,
                              kSectionNames[kind]);
    }
    l->sections[kind].offset = off;
    l->sections[kind].size = size;
    l->sections[kind].present = 1;
  }
  static const struct {
    uint32_t kind;
    uint32_t record;
  } kRequired[] = {
      {SECTION_STRINGS, 1},       {SECTION_TENSORS, TENSOR_RECORD}, {SECTION_OPS, OP_RECORD},
      {SECTION_OPERANDS, OPERAND_RECORD}, {SECTION_ATTRS, ATTR_RECORD},
      {SECTION_GRAPH_IO, 4},      {SECTION_DATA, 1},
  };
  for (size_t i = 0; i < sizeof(kRequired) / sizeof(kRequired[0]); i++) {
    const range* r = &l->sections[kRequired[i].kind];
    const char* name = kSectionNames[kRequired[i].kind];
    if (!r->present) {
      return tether_set_error(TETHER_STATUS_FORMAT_ERROR, "required section %s is missing", name);
    }
    if (r->size % kRequired[i].record != 0) {
      return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                              "section %s: size %llu is not a whole number of %u-byte records",
                              name, (unsigned long long)r->size, kRequired[i].record);
    }
  }
  const range* strings = &l->sections[SECTION_STRINGS];
  if (strings->size == 0 || p[strings->offset] != 0 ||
      p[strings->offset + strings->size - 1] != 0) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                            "section STRINGS must start and end with a NUL byte");
  }
  if (l->sections[SECTION_DATA].offset % BLOB_ALIGN != 0) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                            "section DATA: offset %llu is not a multiple of %u",
                            (unsigned long long)l->sections[SECTION_DATA].offset, BLOB_ALIGN);
  }
  const range* meta = &l->sections[SECTION_METADATA];
  if (meta->present) {
    const uint8_t* m = p + meta->offset;
    if (meta->size < 4 || rd32(m) > (meta->size - 4) / 8) {
      return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                              "section METADATA: count does not fit its %llu bytes",
                              (unsigned long long)meta->size);
    }
    uint32_t pairs = rd32(m);
    for (uint32_t i = 0; i < 2 * pairs; i++) {
      uint32_t s = rd32(m + 4 + 4 * (uint64_t)i);
      if (!string_ok(l, s)) {
        return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                                "METADATA entry %u: %s string offset %u out of range [0, %llu)",
                                i / 2, (i % 2) ? "value" : "key", s,
                                (unsigned long long)strings->size);
      }
    }
  }
  return TETHER_STATUS_SUCCESS;
}

/* ---- sparse constants (FORMAT.md, "Sparse constants") --------------------------------- */

#define SPARSE_HEADER 16u
#define SPARSE_BITMASK 1u

static uint32_t popcount8(uint8_t v) {
  uint32_t n = 0;
  for (; v != 0; v &= (uint8_t)(v - 1)) n++;
  return n;
}

/* Validates a bitmask-encoded blob of `size` bytes for tensor `t` (elements already
 * checked against TETHER_MAX_ELEMENTS, so every sum below fits in 64 bits). */
static tether_status check_sparse(const uint8_t* p, uint64_t size, const tether_tensor* t,
                                  uint32_t index, size_t elem) {
  if (size < SPARSE_HEADER) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                            "tensor %u '%s': sparse data_size %llu is shorter than the %u-byte "
                            "sparse header",
                            index, t->name, (unsigned long long)size, SPARSE_HEADER);
  }
  uint32_t encoding = rd32(p), reserved = rd32(p + 4);
  uint64_t count = rd64(p + 8);
  if (encoding != SPARSE_BITMASK || reserved != 0) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                            "tensor %u '%s': sparse encoding %u (reserved %u); this engine "
                            "reads encoding 1 (bitmask) with reserved 0",
                            index, t->name, encoding, reserved);
  }
  uint64_t elements = t->elements;
  if (count > elements) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                            "tensor %u '%s': sparse nonzero_count %llu exceeds its %llu "
                            "elements",
                            index, t->name, (unsigned long long)count,
                            (unsigned long long)elements);
  }
  uint64_t mask_bytes = (elements + 7) / 8;
  uint64_t expected = SPARSE_HEADER + (mask_bytes + 7) / 8 * 8 + count * elem;
  if (size != expected) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                            "tensor %u '%s': sparse data_size %llu, expected %llu (16 + mask "
                            "%llu rounded to 8 + %llu values x %zu)",
                            index, t->name, (unsigned long long)size,
                            (unsigned long long)expected, (unsigned long long)mask_bytes,
                            (unsigned long long)count, elem);
  }
  const uint8_t* mask = p + SPARSE_HEADER;
  uint64_t set = 0;
  for (uint64_t i = 0; i < mask_bytes; i++) set += popcount8(mask[i]);
  if (elements % 8 != 0 && (mask[mask_bytes - 1] >> (elements % 8)) != 0) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                            "tensor %u '%s': sparse mask has bits set past its %llu elements",
                            index, t->name, (unsigned long long)elements);
  }
  if (set != count) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                            "tensor %u '%s': sparse mask has %llu bits set but nonzero_count "
                            "is %llu",
                            index, t->name, (unsigned long long)set, (unsigned long long)count);
  }
  return TETHER_STATUS_SUCCESS;
}

/* Decodes every sparse constant into one block from the model's allocator (as the packed
 * weights are), each at a 64-byte boundary; the blobs were validated by check_sparse. */
static tether_status unpack_sparse(struct tether_model* m) {
  uint64_t total = 0;
  for (uint32_t t = 0; t < m->tensor_count; t++) {
    if (m->tensors[t].sparse != NULL) total += ((uint64_t)m->tensors[t].bytes + 63) / 64 * 64;
  }
  if (total == 0) return TETHER_STATUS_SUCCESS;
  if (total > SIZE_MAX / 2) {
    return tether_set_error(TETHER_STATUS_OUT_OF_MEMORY,
                            "sparse constants decode to %llu bytes", (unsigned long long)total);
  }
  if (m->tally != NULL && m->tally->dry_run) {
    tether_tally_request(m->tally, (size_t)total);  /* validation never reads the values */
    return TETHER_STATUS_SUCCESS;
  }
  uint8_t* block = (uint8_t*)tether_model_allocate(m, (size_t)total, TETHER_ARENA_ALIGNMENT);
  if (block == NULL) {
    return tether_set_error(TETHER_STATUS_OUT_OF_MEMORY,
                            "cannot allocate %llu bytes for the decoded sparse constants",
                            (unsigned long long)total);
  }
  m->unpacked = block;
  m->unpacked_bytes = (size_t)total;
  uint8_t* out = block;
  for (uint32_t i = 0; i < m->tensor_count; i++) {
    tether_tensor* t = &m->tensors[i];
    if (t->sparse == NULL) continue;
    size_t elem = tether_dtype_size(t->dtype);
    const uint8_t* mask = t->sparse + SPARSE_HEADER;
    const uint8_t* value = mask + ((t->elements + 7) / 8 + 7) / 8 * 8;
    memset(out, 0, t->bytes);
    for (size_t e = 0; e < t->elements; e++) {
      if (mask[e / 8] & (1u << (e % 8))) {
        memcpy(out + e * elem, value, elem);
        value += elem;
      }
    }
    t->data = out;
    out += (t->bytes + 63) / 64 * 64;
  }
  return TETHER_STATUS_SUCCESS;
}

static tether_status read_tensor(loader* l, uint32_t index, tether_tensor* t) {
  const uint8_t* r = l->base + l->sections[SECTION_TENSORS].offset + (uint64_t)index * TENSOR_RECORD;
  uint32_t name = rd32(r);
  if (!string_ok(l, name)) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                            "tensor %u: name offset %u out of range [0, %llu)", index, name,
                            (unsigned long long)l->sections[SECTION_STRINGS].size);
  }
  t->name = string_at(l, name);
  t->dtype = r[4];
  t->ndim = r[5];
  t->quant = r[6];
  t->flags = r[7];
  t->producer = -1;
  t->first_use = -1;
  t->last_use = -1;
  size_t elem = tether_dtype_size(t->dtype);
  if (elem == 0) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR, "tensor %u '%s': unknown dtype %u",
                            index, t->name, (unsigned)t->dtype);
  }
  if ((t->flags & ~(TETHER_TENSOR_CONSTANT | TETHER_TENSOR_SPARSE)) != 0 ||
      (t->flags & (TETHER_TENSOR_CONSTANT | TETHER_TENSOR_SPARSE)) == TETHER_TENSOR_SPARSE) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                            "tensor %u '%s': flags 0x%x has unknown bits or sparse (bit 1) "
                            "without constant (bit 0)",
                            index, t->name, (unsigned)t->flags);
  }
  if (t->ndim > TETHER_MAX_DIMS) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                            "tensor %u '%s': ndim %u exceeds the maximum of %u", index, t->name,
                            (unsigned)t->ndim, (unsigned)TETHER_MAX_DIMS);
  }
  uint64_t elements = 1;
  for (uint32_t d = 0; d < TETHER_MAX_DIMS; d++) {
    int32_t dim = rdi32(r + 8 + 4 * d);
    if (d >= t->ndim) {
      t->shape[d] = 1;
      continue;
    }
    if (dim < 1) {
      return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                              "tensor %u '%s': shape[%u] is %d, must be >= 1", index, t->name,
                              d, dim);
    }
    t->shape[d] = dim;
    elements *= (uint64_t)dim;
    if (elements > TETHER_MAX_ELEMENTS) {
      return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                              "tensor %u '%s': more than %llu elements", index, t->name,
                              (unsigned long long)TETHER_MAX_ELEMENTS);
    }
  }
  if (elements > SIZE_MAX / elem) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                            "tensor %u '%s': %llu elements do not fit this machine's address "
                            "space",
                            index, t->name, (unsigned long long)elements);
  }
  t->elements = (size_t)elements;
  t->bytes = (size_t)elements * elem;

  uint32_t quant_axis = rd32(r + 32);
  uint32_t quant_count = rd32(r + 36);
  uint64_t quant_offset = rd64(r + 40);
  uint64_t data_offset = rd64(r + 48);
  uint64_t data_size = rd64(r + 56);
  if (t->quant > 2) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR, "tensor %u '%s': unknown quant kind %u",
                            index, t->name, (unsigned)t->quant);
  }
  if (t->quant != 0) {
    uint32_t expected = t->quant == 1 ? 1u
                        : quant_axis < t->ndim ? (uint32_t)t->shape[quant_axis]
                                               : 0u;
    if ((t->quant == 1 && quant_axis != 0) || quant_count != expected || expected == 0) {
      return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                              "tensor %u '%s': quant_axis %u / quant_count %u do not fit "
                              "quant kind %u and rank %u",
                              index, t->name, quant_axis, quant_count, (unsigned)t->quant,
                              (unsigned)t->ndim);
    }
    if (!blob_ok(l, quant_offset, 8ull * quant_count)) {
      return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                              "tensor %u '%s': quant_offset %llu (%u scales) is not a "
                              "64-aligned range inside DATA",
                              index, t->name, (unsigned long long)quant_offset, quant_count);
    }
    const uint8_t* q = l->base + quant_offset;
    for (uint32_t c = 0; c < quant_count; c++) {
      float scale = rdf32(q + 4 * (uint64_t)c);
      if (!(isfinite(scale) && scale > 0.0f)) {
        return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                                "tensor %u '%s': scale[%u] is not finite and > 0", index,
                                t->name, c);
      }
    }
    if (t->quant == 1) {
      t->scale = rdf32(q);
      t->zero_point = rdi32(q + 4);
    }
    t->quant_axis = quant_axis;
    t->quant_count = quant_count;
    t->quant_params = q;
  } else if (quant_axis != 0 || quant_count != 0 || quant_offset != 0) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                            "tensor %u '%s': quant is 0 but quant fields are set", index,
                            t->name);
  }

  if (t->flags & TETHER_TENSOR_SPARSE) {
    if (!blob_ok(l, data_offset, data_size)) {
      return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                              "tensor %u '%s': sparse data at offset %llu (%llu bytes) is not a "
                              "64-aligned range inside DATA",
                              index, t->name, (unsigned long long)data_offset,
                              (unsigned long long)data_size);
    }
    tether_status status = check_sparse(l->base + data_offset, data_size, t, index, elem);
    if (status != TETHER_STATUS_SUCCESS) return status;
    t->sparse = l->base + data_offset;
  } else if (t->flags & TETHER_TENSOR_CONSTANT) {
    if (data_size != t->bytes) {
      return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                              "tensor %u '%s': data_size %llu, expected %zu (shape x %s)",
                              index, t->name, (unsigned long long)data_size, t->bytes,
                              dtype_name(t->dtype));
    }
    if (!blob_ok(l, data_offset, data_size)) {
      return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                              "tensor %u '%s': data at offset %llu (%llu bytes) is not a "
                              "64-aligned range inside DATA",
                              index, t->name, (unsigned long long)data_offset,
                              (unsigned long long)data_size);
    }
    t->data = l->base + data_offset;
  } else if (data_offset != 0 || data_size != 0) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                            "tensor %u '%s': not constant but data_offset/data_size are set",
                            index, t->name);
  }
  return TETHER_STATUS_SUCCESS;
}

static tether_status read_graph_io(loader* l) {
  struct tether_model* m = l->model;
  const range* io = &l->sections[SECTION_GRAPH_IO];
  const uint8_t* p = l->base + io->offset;
  if (io->size < 8) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                            "section GRAPH_IO: %llu bytes, fewer than its 8-byte counts",
                            (unsigned long long)io->size);
  }
  uint64_t in = rd32(p), out = rd32(p + 4);
  if (8 + 4 * (in + out) > io->size) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                            "section GRAPH_IO: %llu inputs and %llu outputs do not fit its "
                            "%llu bytes",
                            (unsigned long long)in, (unsigned long long)out,
                            (unsigned long long)io->size);
  }
  for (uint64_t i = 0; i < in + out; i++) {
    uint32_t t = rd32(p + 8 + 4 * i);
    const char* side = i < in ? "input" : "output";
    uint64_t slot = i < in ? i : i - in;
    if (t >= m->tensor_count) {
      return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                              "graph %s %llu is tensor %u, out of range [0, %u)", side,
                              (unsigned long long)slot, t, m->tensor_count);
    }
    if (m->tensors[t].flags & TETHER_TENSOR_CONSTANT) {
      return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                              "graph %s %llu is tensor %u '%s', a constant", side,
                              (unsigned long long)slot, t, m->tensors[t].name);
    }
    if (i < in) {
      m->inputs[i] = t;
    } else {
      m->outputs[i - in] = t;
    }
  }
  return TETHER_STATUS_SUCCESS;
}

static int is_graph_input(const struct tether_model* m, uint32_t t) {
  for (uint32_t i = 0; i < m->input_count; i++) {
    if (m->inputs[i] == t) return 1;
  }
  return 0;
}

static tether_status read_attrs(loader* l, uint32_t op_index, uint32_t first, uint32_t count) {
  struct tether_model* m = l->model;
  tether_node* op = &m->ops[op_index];
  tether_op_params* pr = &op->params;
  pr->stride_h = pr->stride_w = 1;
  pr->dilation_h = pr->dilation_w = 1;
  pr->groups = 1;
  pr->depth_multiplier = 1;
  pr->axis = -1;
  pr->beta = 1.0f;
  if ((uint64_t)first + count > l->attr_total) {
    return tether_op_error(m, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "attributes [%u, %llu) out of range [0, %u)", first,
                           (unsigned long long)first + count, l->attr_total);
  }
  uint32_t seen = 0;
  const uint8_t* base = l->base + l->sections[SECTION_ATTRS].offset;
  const uint32_t required = op->type == TETHER_OP_TRANSPOSE ? BIT(ATTR_PERM)
                            : op->type == TETHER_OP_CLAMP   ? BIT(ATTR_MIN) | BIT(ATTR_MAX)
                            : op->type == TETHER_OP_HARD_SIGMOID ? BIT(ATTR_ALPHA) | BIT(ATTR_OFFSET)
                                                                 : 0;
  for (uint32_t a = 0; a < count; a++) {
    const uint8_t* r = base + (uint64_t)(first + a) * ATTR_RECORD;
    uint16_t id = rd16(r);
    uint8_t type = r[2], n = r[3];
    if (id == 0 || id >= ATTR_IDS || !(kOpSpecs[op->type].attrs & BIT(id))) {
      return tether_op_error(m, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "attribute %u (record %u) has id %u, which this op does not take",
                             a, first + a, (unsigned)id);
    }
    const attr_spec* spec = &kAttrSpecs[id];
    if (seen & BIT(id)) {
      return tether_op_error(m, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "attribute %u: %s given twice", a, spec->name);
    }
    seen |= BIT(id);
    if (type != spec->type || n < spec->min_count || n > spec->max_count ||
        n > ATTR_MAX_VALUES) {
      return tether_op_error(m, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "attribute %u (%s): type %u with %u values, expected type %u "
                             "with %u..%u values",
                             a, spec->name, (unsigned)type, (unsigned)n, (unsigned)spec->type,
                             (unsigned)spec->min_count, (unsigned)spec->max_count);
    }
    int32_t v[ATTR_MAX_VALUES];
    for (uint32_t k = 0; k < ATTR_MAX_VALUES; k++) v[k] = rdi32(r + 8 + 4 * k);
    switch (id) {
      case ATTR_STRIDES: pr->stride_h = v[0]; pr->stride_w = v[1]; break;
      case ATTR_DILATIONS: pr->dilation_h = v[0]; pr->dilation_w = v[1]; break;
      case ATTR_PADS:
        pr->pad_top = v[0]; pr->pad_left = v[1]; pr->pad_bottom = v[2]; pr->pad_right = v[3];
        break;
      case ATTR_GROUPS: pr->groups = v[0]; break;
      case ATTR_DEPTH_MULTIPLIER: pr->depth_multiplier = v[0]; break;
      case ATTR_KERNEL: pr->kernel_h = v[0]; pr->kernel_w = v[1]; break;
      case ATTR_COUNT_INCLUDE_PAD: pr->count_include_pad = v[0]; break;
      case ATTR_AXES:
        pr->axes_count = n;
        for (int k = 0; k < n; k++) pr->axes[k] = v[k];
        break;
      case ATTR_KEEPDIMS: pr->keepdims = v[0]; break;
      case ATTR_AXIS: pr->axis = v[0]; break;
      case ATTR_PADDINGS:
        pr->paddings_count = n;
        for (int k = 0; k < n; k++) pr->paddings[k] = v[k];
        break;
      case ATTR_VALUE: pr->value = rdf32(r + 8); break;
      case ATTR_BETA: pr->beta = rdf32(r + 8); break;
      case ATTR_PERM:
        pr->perm_count = n;
        for (int k = 0; k < n; k++) pr->perm[k] = v[k];
        break;
      case ATTR_MIN: pr->clamp_min = rdf32(r + 8); break;
      case ATTR_MAX: pr->clamp_max = rdf32(r + 8); break;
      case ATTR_ALPHA: pr->alpha = rdf32(r + 8); break;
      case ATTR_OFFSET: pr->offset = rdf32(r + 8); break;
    }
  }
  if ((seen & required) != required) {
    return tether_op_error(m, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "a required attribute is missing (TRANSPOSE needs perm, CLAMP min "
                           "and max, HARD_SIGMOID alpha and offset)");
  }
  /* Values shared by the window ops; each op's prepare checks the rest. */
  if (pr->stride_h < 1 || pr->stride_w < 1 || pr->dilation_h < 1 || pr->dilation_w < 1) {
    return tether_op_error(m, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "strides [%d, %d] and dilations [%d, %d] must be >= 1",
                           pr->stride_h, pr->stride_w, pr->dilation_h, pr->dilation_w);
  }
  if (pr->pad_top < 0 || pr->pad_left < 0 || pr->pad_bottom < 0 || pr->pad_right < 0) {
    return tether_op_error(m, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "pads [%d, %d, %d, %d] must be >= 0", pr->pad_top, pr->pad_left,
                           pr->pad_bottom, pr->pad_right);
  }
  return TETHER_STATUS_SUCCESS;
}

static tether_status read_op(loader* l, uint32_t index) {
  struct tether_model* m = l->model;
  tether_node* op = &m->ops[index];
  const uint8_t* r = l->base + l->sections[SECTION_OPS].offset + (uint64_t)index * OP_RECORD;
  uint16_t type = rd16(r);
  uint8_t activation = r[2];
  uint32_t name = rd32(r + 4);
  uint32_t input_count = rd32(r + 8);
  uint32_t output_count = rd32(r + 12);
  uint32_t first_operand = rd32(r + 16);
  uint32_t attr_count = rd32(r + 20);
  uint32_t first_attr = rd32(r + 24);
  op->name = "";
  op->type = type;
  if (!string_ok(l, name)) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                            "op %u: name offset %u out of range [0, %llu)", index, name,
                            (unsigned long long)l->sections[SECTION_STRINGS].size);
  }
  op->name = string_at(l, name);
  if (type == 0 || type >= OP_TYPE_COUNT || kOpSpecs[type].prepare == NULL) {
    return tether_set_error(TETHER_STATUS_UNSUPPORTED_OP,
                            "op %u '%s': unknown op id %u (this engine knows ids 1..%u)", index,
                            op->name, (unsigned)type, (unsigned)(OP_TYPE_COUNT - 1));
  }
  const op_spec* spec = &kOpSpecs[type];
  if (activation > TETHER_ACT_HARD_SWISH) {
    return tether_op_error(m, index, TETHER_STATUS_UNSUPPORTED_OP,
                           "unknown fused activation id %u", (unsigned)activation);
  }
  op->activation = activation;
  if (input_count < spec->min_inputs || input_count > spec->max_inputs || output_count != 1) {
    return tether_op_error(m, index, TETHER_STATUS_FORMAT_ERROR,
                           "has %u inputs and %u outputs, expected %u..%u inputs and 1 output",
                           input_count, output_count, (unsigned)spec->min_inputs,
                           (unsigned)spec->max_inputs);
  }
  uint64_t end = (uint64_t)first_operand + input_count + output_count;
  if (end > l->operand_total) {
    return tether_op_error(m, index, TETHER_STATUS_FORMAT_ERROR,
                           "operands [%u, %llu) out of range [0, %u)", first_operand,
                           (unsigned long long)end, l->operand_total);
  }
  op->input_count = input_count;
  op->output_count = output_count;
  op->inputs = m->operands + first_operand;
  op->outputs = op->inputs + input_count;
  for (uint32_t i = 0; i < input_count; i++) {
    uint32_t t = op->inputs[i];
    if (t == TETHER_NO_TENSOR) {
      if (spec->optional_from != NO_OPTIONAL && i >= spec->optional_from) continue;
      return tether_op_error(m, index, TETHER_STATUS_FORMAT_ERROR,
                             "input %u is absent (0xFFFFFFFF) but required", i);
    }
    if (t >= m->tensor_count) {
      return tether_op_error(m, index, TETHER_STATUS_FORMAT_ERROR,
                             "input %u is tensor %u, out of range [0, %u)", i, t,
                             m->tensor_count);
    }
    const tether_tensor* tt = &m->tensors[t];
    if (!(tt->flags & TETHER_TENSOR_CONSTANT) && tt->producer < 0 && !is_graph_input(m, t)) {
      return tether_op_error(m, index, TETHER_STATUS_FORMAT_ERROR,
                             "input %u is tensor %u '%s', which is neither a constant, a graph "
                             "input nor the output of an earlier op",
                             i, t, tt->name);
    }
  }
  for (uint32_t o = 0; o < output_count; o++) {
    uint32_t t = op->outputs[o];
    if (t >= m->tensor_count) {
      return tether_op_error(m, index, TETHER_STATUS_FORMAT_ERROR,
                             "output %u is tensor %u, out of range [0, %u)", o, t,
                             m->tensor_count);
    }
    tether_tensor* tt = &m->tensors[t];
    const char* why = (tt->flags & TETHER_TENSOR_CONSTANT) ? "a constant"
                      : is_graph_input(m, t)                ? "a graph input"
                      : tt->producer >= 0                   ? "written by an earlier op"
                                                            : NULL;
    if (why != NULL) {
      return tether_op_error(m, index, TETHER_STATUS_FORMAT_ERROR,
                             "output %u is tensor %u '%s', which is %s", o, t, tt->name, why);
    }
  }
  tether_status status = read_attrs(l, index, first_attr, attr_count);
  if (status != TETHER_STATUS_SUCCESS) return status;
  status = spec->prepare(m, index, op);
  if (status != TETHER_STATUS_SUCCESS) return status;
  for (uint32_t o = 0; o < output_count; o++) {
    tether_tensor* tt = &m->tensors[op->outputs[o]];
    /* Only float outputs get the float activation epilogue; an int8 kernel must apply
     * (fuse) the activation itself or the op is rejected. */
    if (op->activation != TETHER_ACT_NONE && tt->dtype != TETHER_DTYPE_FLOAT32 &&
        !op->fused_activation) {
      return tether_op_error(m, index, TETHER_STATUS_FORMAT_ERROR,
                             "fused activation %u on a non-float32 output",
                             (unsigned)op->activation);
    }
    tt->producer = (int32_t)index;
  }
  return TETHER_STATUS_SUCCESS;
}

/* Bytes from `offset` rounded up to `align` (a power of two); 0 on overflow. */
static size_t align_up(size_t offset, size_t align) {
  size_t r = (offset + align - 1) & ~(align - 1);
  return r < offset ? 0 : r;
}

/* ---- what the loader asks the allocator for ------------------------------------------- */

void tether_tally_request(tether_memory_tally* tally, size_t size) {
  if (tally == NULL) return;
  tally->total += size;
  tally->live += size;
  if (tally->live > tally->peak) tally->peak = tally->live;
  if (size > tally->largest) tally->largest = size;
}

static void* tally_allocate(tether_memory_tally* tally, const tether_allocator* allocator,
                            size_t size, size_t alignment) {
  tether_tally_request(tally, size);
  return allocator->allocate(allocator->context, size, alignment);
}

void* tether_model_allocate(const struct tether_model* model, size_t size, size_t alignment) {
  return tally_allocate(model->tally, &model->allocator, size, alignment);
}

void tether_model_deallocate(const struct tether_model* model, void* block, size_t size) {
  if (block == NULL) return;
  if (model->tally != NULL) model->tally->live -= size;
  model->allocator.deallocate(model->allocator.context, block);
}

static tether_status allocate_model(loader* l, const tether_allocator* allocator) {
  uint64_t tensors = l->sections[SECTION_TENSORS].size / TENSOR_RECORD;
  uint64_t ops = l->sections[SECTION_OPS].size / OP_RECORD;
  uint64_t operands = l->sections[SECTION_OPERANDS].size / OPERAND_RECORD;
  uint64_t attrs = l->sections[SECTION_ATTRS].size / ATTR_RECORD;
  const uint8_t* io = l->base + l->sections[SECTION_GRAPH_IO].offset;
  uint64_t inputs = l->sections[SECTION_GRAPH_IO].size >= 8 ? rd32(io) : 0;
  uint64_t outputs = l->sections[SECTION_GRAPH_IO].size >= 8 ? rd32(io + 4) : 0;
  if (tensors > UINT32_MAX || ops > INT32_MAX || operands > UINT32_MAX || attrs > UINT32_MAX ||
      inputs + outputs > l->sections[SECTION_GRAPH_IO].size / 4) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                            "record counts out of range (tensors %llu, ops %llu, graph inputs "
                            "%llu, outputs %llu)",
                            (unsigned long long)tensors, (unsigned long long)ops,
                            (unsigned long long)inputs, (unsigned long long)outputs);
  }
  /* Every count is bounded by the file size, so these sums cannot overflow 64 bits. */
  uint64_t off_tensors = align_up(sizeof(struct tether_model), 16);
  uint64_t off_ops = off_tensors + tensors * sizeof(tether_tensor);
  off_ops = (off_ops + 15) & ~(uint64_t)15;
  uint64_t off_operands = off_ops + ops * sizeof(tether_node);
  off_operands = (off_operands + 15) & ~(uint64_t)15;
  uint64_t off_io = off_operands + operands * 4;
  /* A whole number of 64-byte blocks, as every request of the loader. */
  uint64_t total = (off_io + (inputs + outputs) * 4 + TETHER_ARENA_ALIGNMENT - 1) /
                   TETHER_ARENA_ALIGNMENT * TETHER_ARENA_ALIGNMENT;
  if (total > SIZE_MAX / 2) {
    return tether_set_error(TETHER_STATUS_OUT_OF_MEMORY,
                            "model bookkeeping needs %llu bytes", (unsigned long long)total);
  }
  uint8_t* block = (uint8_t*)tally_allocate(l->tally, allocator, (size_t)total, 16);
  if (block == NULL) {
    return tether_set_error(TETHER_STATUS_OUT_OF_MEMORY,
                            "cannot allocate %llu bytes for the model",
                            (unsigned long long)total);
  }
  memset(block, 0, (size_t)total);
  struct tether_model* m = (struct tether_model*)block;
  m->allocator = *allocator;
  m->tally = l->tally;
  m->kernels = tether_kernels_current();
  m->data = l->base;
  m->size = (size_t)l->size;
  m->tensor_count = (uint32_t)tensors;
  m->tensors = (tether_tensor*)(block + off_tensors);
  m->op_count = (uint32_t)ops;
  m->ops = (tether_node*)(block + off_ops);
  m->operands = (uint32_t*)(block + off_operands);
  m->input_count = (uint32_t)inputs;
  m->output_count = (uint32_t)outputs;
  m->inputs = (uint32_t*)(block + off_io);
  m->outputs = m->inputs + inputs;
  l->model = m;
  l->operand_total = (uint32_t)operands;
  l->attr_total = (uint32_t)attrs;
  const uint8_t* od = l->base + l->sections[SECTION_OPERANDS].offset;
  for (uint64_t i = 0; i < operands; i++) m->operands[i] = rd32(od + 4 * i);
  return TETHER_STATUS_SUCCESS;
}

static tether_status validate(loader* l) {
  struct tether_model* m = l->model;
  tether_status status;
  for (uint32_t t = 0; t < m->tensor_count; t++) {
    status = read_tensor(l, t, &m->tensors[t]);
    if (status != TETHER_STATUS_SUCCESS) return status;
  }
  status = unpack_sparse(m);
  if (status != TETHER_STATUS_SUCCESS) return status;
  status = read_graph_io(l);
  if (status != TETHER_STATUS_SUCCESS) return status;
  for (uint32_t i = 0; i < m->op_count; i++) {
    status = read_op(l, i);
    if (status != TETHER_STATUS_SUCCESS) return status;
  }
  for (uint32_t o = 0; o < m->output_count; o++) {
    uint32_t t = m->outputs[o];
    if (m->tensors[t].producer < 0 && !is_graph_input(m, t)) {
      return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                              "graph output %u is tensor %u '%s', which no op writes", o, t,
                              m->tensors[t].name);
    }
  }
  return tether_plan_memory(m);
}

/* The checks of the arguments tether_model_load and tether_model_memory share; a NULL
 * *allocator becomes the default one. */
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
  loader l;
  memset(&l, 0, sizeof(l));
  l.base = (const uint8_t*)data;
  l.size = size;
  l.tally = tally;
  tether_status status = read_header(&l);
  if (status == TETHER_STATUS_SUCCESS) status = read_sections(&l);
  if (status == TETHER_STATUS_SUCCESS) status = allocate_model(&l, allocator);
  if (status == TETHER_STATUS_SUCCESS) status = validate(&l);
  if (status == TETHER_STATUS_SUCCESS) status = tether_pack_weights(l.model);
  if (status != TETHER_STATUS_SUCCESS) {
    if (l.model != NULL) {
      tether_model_deallocate(l.model, l.model->unpacked, l.model->unpacked_bytes);
      allocator->deallocate(allocator->context, l.model);
    }
    return status;
  }
  *model_out = l.model;
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
  if (t->quant == 2) {
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

void tether_op_eval(const struct tether_model* model, uint32_t op_index, void* const* data,
                    void* scratch) {
  tether_op_eval_parallel(model, op_index, data, scratch, NULL);
}

void tether_op_eval_parallel(const struct tether_model* model, uint32_t op_index,
                             void* const* data, void* scratch, struct tether_pool* pool) {
  const tether_node* op = &model->ops[op_index];
  kOpSpecs[op->type].eval(model, op, data, scratch, pool);
  if (op->activation != TETHER_ACT_NONE && !op->fused_activation) {
    const tether_tensor* y = &model->tensors[op->outputs[0]];
    tether_f32_activation_apply((float*)data[op->outputs[0]], y->elements, op->activation);
  }
}

/* ---- packed weights ------------------------------------------------------------------- */

tether_status tether_pack_weights(struct tether_model* m) {
  uint64_t total = 0;
  for (uint32_t i = 0; i < m->op_count; i++) {
    /* 16 floats of padding per op keep every op's panel 64-byte aligned. */
    if (m->ops[i].packed_floats > 0) total += ((uint64_t)m->ops[i].packed_floats + 15) / 16 * 16;
  }
  if (total == 0) return TETHER_STATUS_SUCCESS;
  if (total > SIZE_MAX / 8) {
    return tether_set_error(TETHER_STATUS_OUT_OF_MEMORY, "packed weights need %llu floats",
                            (unsigned long long)total);
  }
  if (m->tally != NULL && m->tally->dry_run) {
    tether_tally_request(m->tally, (size_t)total * sizeof(float));
    for (uint32_t i = 0; i < m->op_count; i++) {
      if (m->ops[i].packed_floats == 0 || !m->ops[i].quantized) continue;
      tether_status status = tether_q8_check(m, &m->ops[i]);
      if (status != TETHER_STATUS_SUCCESS) return status;
    }
    return TETHER_STATUS_SUCCESS;
  }
  float* block = (float*)tether_model_allocate(m, (size_t)total * sizeof(float),
                                               TETHER_ARENA_ALIGNMENT);
  if (block == NULL) {
    return tether_set_error(TETHER_STATUS_OUT_OF_MEMORY,
                            "cannot allocate %llu bytes for packed weights",
                            (unsigned long long)total * 4);
  }
  m->packed = block;
  m->packed_bytes = (size_t)total * sizeof(float);
  float* p = block;
  for (uint32_t i = 0; i < m->op_count; i++) {
    tether_node* op = &m->ops[i];
    if (op->packed_floats == 0) continue;
    if (op->quantized) {
      tether_status status = tether_q8_pack(m, op, (int32_t*)(void*)p);
      if (status != TETHER_STATUS_SUCCESS) {
        tether_model_deallocate(m, block, (size_t)total * sizeof(float));
        m->packed = NULL;
        return status;
      }
    } else if (op->type == TETHER_OP_CONV_2D) {
      conv2d_pack(m, op, p);
    } else {
      fully_connected_pack(m, op, p);
    }
    op->packed = p;
    p += (op->packed_floats + 15) / 16 * 16;
  }
  return TETHER_STATUS_SUCCESS;
}
