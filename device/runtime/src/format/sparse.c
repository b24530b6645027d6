/*
 * sparse.c — bitmask-encoded constants (FORMAT.md, "Sparse constants"): the blob's checks and
 * its decoding into one block of the model's allocator at load.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "format/format.h"

#define SPARSE_HEADER 16u
#define SPARSE_BITMASK 1u

static uint32_t popcount8(uint8_t v) {
  uint32_t n = 0;
  for (; v != 0; v &= (uint8_t)(v - 1)) n++;
  return n;
}

/* Validates a bitmask-encoded blob of `size` bytes for tensor `t` (elements already
 * checked against TETHER_MAX_ELEMENTS, so every sum below fits in 64 bits). */
tether_status tether_sparse_check(const uint8_t* p, uint64_t size, const tether_tensor* t,
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
 * weights are), each at a 64-byte boundary; the blobs were validated by tether_sparse_check. */
tether_status tether_sparse_unpack(struct tether_model* m) {
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
