/*
 * reader.c — reads and validates a .tmodel image (converter/FORMAT.md) into the decoded model
 * of base.h.
 *
 * Every byte of the image is treated as hostile: each read is preceded by a range check,
 * all offset arithmetic is done in 64 bits with explicit overflow checks, and every failure
 * leaves a message in tether_last_error() naming the field at fault. Constant blobs are used
 * in place (zero-copy); each op is checked against its registry row (ops/registry.c) and
 * handed to its prepare.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "format/format.h"

static const char* const kSectionNames[SECTION_KINDS] = {
    "?", "STRINGS", "TENSORS", "OPS", "OPERANDS", "ATTRS", "GRAPH_IO", "METADATA", "DATA",
};

typedef struct attr_spec {
  const char* name;
  uint8_t type;
  uint8_t min_count;
  uint8_t max_count;
} attr_spec;

static const attr_spec kAttrSpecs[TETHER_ATTR_COUNT] = {
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
    {"size", ATTR_TYPE_INT, 1, 1},
    {"begin", ATTR_TYPE_INT, 1, TETHER_MAX_DIMS},
    {"steps", ATTR_TYPE_INT, 1, TETHER_MAX_DIMS},
    {"interpolation", ATTR_TYPE_INT, 1, 1},
    {"coordinate_mode", ATTR_TYPE_INT, 1, 1},
    {"nearest_mode", ATTR_TYPE_INT, 1, 1},
    {"scales", ATTR_TYPE_FLOAT, 2, 2},
    [TETHER_ATTR_EPSILON] = {"epsilon", ATTR_TYPE_FLOAT, 1, 1},
    [TETHER_ATTR_ADJOINT] = {"adjoint", ATTR_TYPE_INT, 2, 2},
    [TETHER_ATTR_APPROXIMATE] = {"approximate", ATTR_TYPE_INT, 1, 1},
    [TETHER_ATTR_MODE] = {"mode", ATTR_TYPE_INT, 1, 1},
};

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

/* Whether the NUL-terminated `s` is well-formed UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF), as the converter's reader requires of every string. */
static int utf8_ok(const char* s) {
  const uint8_t* p = (const uint8_t*)s;
  while (*p != 0) {
    const uint8_t c = *p;
    uint32_t n, cp;
    if (c < 0x80) {
      p++;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1Fu;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0Fu;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07u;
    } else {
      return 0;
    }
    for (uint32_t k = 1; k <= n; k++) {
      if ((p[k] & 0xC0) != 0x80) return 0;  /* also stops at the NUL */
      cp = cp << 6 | (p[k] & 0x3Fu);
    }
    static const uint32_t kMin[4] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    p += n + 1;
  }
  return 1;
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
    if (meta->size < 4 || meta->size != 4 + 8 * (uint64_t)rd32(m)) {
      return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                              "section METADATA: %llu bytes, not 4 + 8 x its count",
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
      if (!utf8_ok(string_at(l, s))) {
        return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                                "METADATA entry %u: %s is not valid UTF-8", i / 2,
                                (i % 2) ? "value" : "key");
      }
    }
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
  if (!utf8_ok(t->name)) {
    t->name = "";
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR, "tensor %u: name is not valid UTF-8",
                            index);
  }
  t->dtype = r[4];
  t->ndim = r[5];
  t->quant = r[6];
  t->flags = r[7];
  t->producer = -1;
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
  if (t->quant > TETHER_QUANT_PER_CHANNEL) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR, "tensor %u '%s': unknown quant kind %u",
                            index, t->name, (unsigned)t->quant);
  }
  if (t->quant != TETHER_QUANT_NONE) {
    uint32_t expected = t->quant == TETHER_QUANT_PER_TENSOR ? 1u
                        : quant_axis < t->ndim ? (uint32_t)t->shape[quant_axis]
                                               : 0u;
    if ((t->quant == TETHER_QUANT_PER_TENSOR && quant_axis != 0) || quant_count != expected || expected == 0) {
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
    if (t->quant == TETHER_QUANT_PER_TENSOR) {
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
    tether_status status = tether_sparse_check(l->base + data_offset, data_size, t, index, elem);
    if (status != TETHER_STATUS_SUCCESS) return status;
    t->sparse = l->base + data_offset;
  } else if (t->flags & TETHER_TENSOR_CONSTANT) {
    if (data_size != t->bytes) {
      return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                              "tensor %u '%s': data_size %llu, expected %zu (shape x %s)",
                              index, t->name, (unsigned long long)data_size, t->bytes,
                              tether_dtype_name(t->dtype));
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
  if (8 + 4 * (in + out) != io->size) {
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR,
                            "section GRAPH_IO: %llu inputs and %llu outputs need 8 + 4 x their "
                            "count bytes, not %llu",
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
  pr->epsilon = 1e-5f;
  if ((uint64_t)first + count > l->attr_total) {
    return tether_op_error(m, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "attributes [%u, %llu) out of range [0, %u)", first,
                           (unsigned long long)first + count, l->attr_total);
  }
  uint32_t seen = 0;
  const uint8_t* base = l->base + l->sections[SECTION_ATTRS].offset;
  const tether_op_def* def = tether_op_def_for(op->type);
  for (uint32_t a = 0; a < count; a++) {
    const uint8_t* r = base + (uint64_t)(first + a) * ATTR_RECORD;
    uint16_t id = rd16(r);
    uint8_t type = r[2], n = r[3];
    if (id == 0 || id >= TETHER_ATTR_COUNT || !(def->attrs & TETHER_ATTR_BIT(id))) {
      return tether_op_error(m, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "attribute %u (record %u) has id %u, which this op does not take",
                             a, first + a, (unsigned)id);
    }
    const attr_spec* spec = &kAttrSpecs[id];
    if (seen & TETHER_ATTR_BIT(id)) {
      return tether_op_error(m, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "attribute %u: %s given twice", a, spec->name);
    }
    seen |= TETHER_ATTR_BIT(id);
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
      case TETHER_ATTR_STRIDES: pr->stride_h = v[0]; pr->stride_w = v[1]; break;
      case TETHER_ATTR_DILATIONS: pr->dilation_h = v[0]; pr->dilation_w = v[1]; break;
      case TETHER_ATTR_PADS:
        pr->pad_top = v[0]; pr->pad_left = v[1]; pr->pad_bottom = v[2]; pr->pad_right = v[3];
        break;
      case TETHER_ATTR_GROUPS: pr->groups = v[0]; break;
      case TETHER_ATTR_DEPTH_MULTIPLIER: pr->depth_multiplier = v[0]; break;
      case TETHER_ATTR_KERNEL: pr->kernel_h = v[0]; pr->kernel_w = v[1]; break;
      case TETHER_ATTR_COUNT_INCLUDE_PAD: pr->count_include_pad = v[0]; break;
      case TETHER_ATTR_AXES:
        pr->axes_count = n;
        for (int k = 0; k < n; k++) pr->axes[k] = v[k];
        break;
      case TETHER_ATTR_KEEPDIMS: pr->keepdims = v[0]; break;
      case TETHER_ATTR_AXIS: pr->axis = v[0]; break;
      case TETHER_ATTR_PADDINGS:
        pr->paddings_count = n;
        for (int k = 0; k < n; k++) pr->paddings[k] = v[k];
        break;
      case TETHER_ATTR_VALUE: pr->value = rdf32(r + 8); break;
      case TETHER_ATTR_BETA: pr->beta = rdf32(r + 8); break;
      case TETHER_ATTR_PERM:
        pr->perm_count = n;
        for (int k = 0; k < n; k++) pr->perm[k] = v[k];
        break;
      case TETHER_ATTR_MIN: pr->clamp_min = rdf32(r + 8); break;
      case TETHER_ATTR_MAX: pr->clamp_max = rdf32(r + 8); break;
      case TETHER_ATTR_ALPHA: pr->alpha = rdf32(r + 8); break;
      case TETHER_ATTR_OFFSET: pr->offset = rdf32(r + 8); break;
      case TETHER_ATTR_SIZE: pr->size = v[0]; break;
      case TETHER_ATTR_BEGIN:
        pr->begin_count = n;
        for (int k = 0; k < n; k++) pr->begin[k] = v[k];
        break;
      case TETHER_ATTR_STEPS:
        pr->steps_count = n;
        for (int k = 0; k < n; k++) pr->steps[k] = v[k];
        break;
      case TETHER_ATTR_INTERPOLATION: pr->interpolation = v[0]; break;
      case TETHER_ATTR_COORDINATE_MODE: pr->coordinate_mode = v[0]; break;
      case TETHER_ATTR_NEAREST_MODE: pr->nearest_mode = v[0]; break;
      case TETHER_ATTR_SCALES:
        pr->scales_count = n;
        pr->scale_h = rdf32(r + 8);
        pr->scale_w = rdf32(r + 12);
        break;
      case TETHER_ATTR_EPSILON: pr->epsilon = rdf32(r + 8); break;
      case TETHER_ATTR_APPROXIMATE: pr->approximate = v[0]; break;
      case TETHER_ATTR_MODE: pr->mode = v[0]; break;
      case TETHER_ATTR_ADJOINT: pr->adjoint[0] = v[0]; pr->adjoint[1] = v[1]; break;
    }
  }
  const uint32_t missing = def->required_attrs & ~seen;
  if (missing != 0) {
    uint32_t id = 1;
    while (!(missing & TETHER_ATTR_BIT(id))) id++;
    return tether_op_error(m, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "required attribute %s is missing", kAttrSpecs[id].name);
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
  if (!utf8_ok(op->name)) {
    op->name = "";
    return tether_set_error(TETHER_STATUS_FORMAT_ERROR, "op %u: name is not valid UTF-8", index);
  }
  const tether_op_def* spec = tether_op_def_for(type);
  if (spec == NULL) {
    return tether_set_error(TETHER_STATUS_UNSUPPORTED_OP,
                            "op %u '%s': unknown op id %u (this engine knows ids 1..%u)", index,
                            op->name, (unsigned)type, (unsigned)(TETHER_OP_COUNT - 1));
  }
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
      if (spec->optional_from != TETHER_NO_OPTIONAL && i >= spec->optional_from) continue;
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
  op->serial = tether_op_work(m, op) < TETHER_PARALLEL_MIN_WORK;
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
  uint8_t* block = (uint8_t*)tether_tally_allocate(l->tally, allocator, (size_t)total, 16);
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
  status = tether_sparse_unpack(m);
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
  return TETHER_STATUS_SUCCESS;
}

/* The checks of the arguments tether_model_load and tether_model_memory share; a NULL
 * *allocator becomes the default one. */

tether_status tether_format_read(const void* data, size_t size,
                                 const tether_allocator* allocator, tether_memory_tally* tally,
                                 struct tether_model** model_out) {
  loader l;
  memset(&l, 0, sizeof(l));
  l.base = (const uint8_t*)data;
  l.size = size;
  l.tally = tally;
  tether_status status = read_header(&l);
  if (status == TETHER_STATUS_SUCCESS) status = read_sections(&l);
  if (status == TETHER_STATUS_SUCCESS) status = allocate_model(&l, allocator);
  *model_out = l.model;
  if (status == TETHER_STATUS_SUCCESS) status = validate(&l);
  return status;
}
