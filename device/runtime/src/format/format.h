/*
 * format.h — the .tmodel reader (converter/FORMAT.md): record sizes, section kinds, the
 * little-endian reads, CRC-32 and the sparse-constant codec. Every byte of an image is
 * treated as hostile (reader.c). Includes ops/ (each op's registry row and prepare) and what
 * lies below it.
 */
#ifndef TETHER_FORMAT_H_
#define TETHER_FORMAT_H_

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base/base.h"
#include "ops/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- record sizes and section kinds (FORMAT.md) -------------------------------------- */

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

#define ATTR_MAX_VALUES 8u
#define ATTR_TYPE_INT 1u
#define ATTR_TYPE_FLOAT 2u

/* ---- little-endian reads (callers have range-checked p .. p+width) -------------------- */

static inline uint16_t rd16(const uint8_t* p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static inline uint32_t rd32(const uint8_t* p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
         ((uint32_t)p[3] << 24);
}

static inline uint64_t rd64(const uint8_t* p) { return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32); }

static inline int32_t rdi32(const uint8_t* p) {
  uint32_t u = rd32(p);
  int32_t i;
  memcpy(&i, &u, sizeof(i));
  return i;
}

static inline float rdf32(const uint8_t* p) {
  uint32_t u = rd32(p);
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

/* Table-driven CRC-32 (zlib polynomial) over n bytes, continuing from `crc` (start 0). */
uint32_t tether_crc32(uint32_t crc, const void* data, size_t n);

/* ---- sparse constants (sparse.c; FORMAT.md, "Sparse constants") ---------------------- */

/* Validates a bitmask-encoded blob of `size` bytes for tensor `t` (number `index`, element
 * size `elem`; elements already checked against TETHER_MAX_ELEMENTS). */
tether_status tether_sparse_check(const uint8_t* p, uint64_t size, const tether_tensor* t,
                                  uint32_t index, size_t elem);
/* Decodes every sparse constant into one block from the model's allocator (as the packed
 * weights are), each at a 64-byte boundary; the blobs were validated. */
tether_status tether_sparse_unpack(struct tether_model* m);

/*
 * Reads and validates an image: the header and its checksum, the sections, every tensor
 * (sparse ones decoded), the graph I/O and every op (its registry row, attributes and
 * prepare). *model_out is set as soon as the model block exists (also on failure, so that
 * the caller gives back what was allocated); requests are counted in `tally` (NULL = none).
 */
tether_status tether_format_read(const void* data, size_t size,
                                 const tether_allocator* allocator, tether_memory_tally* tally,
                                 struct tether_model** model_out);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* TETHER_FORMAT_H_ */
