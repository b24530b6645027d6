/*
 * gather.c — GATHER's whole-op kernel: rows of `row_bytes` bytes picked along one axis.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "reference/reference.h"

/*
 * y[o, j, :] = x[o, idx[j] (+ n when negative), :] for o < outer, j < count, each row
 * `row_bytes` bytes; x is [outer, n, row], y [outer, count, row]. Every index lies in
 * [-n, n) (the caller checked them).
 */
void tether_ref_gather(size_t outer, size_t n, size_t row_bytes, const int32_t* idx,
                       size_t count, const void* x, void* y) {
  const uint8_t* xs = (const uint8_t*)x;
  uint8_t* ys = (uint8_t*)y;
  for (size_t o = 0; o < outer; o++) {
    const uint8_t* block = xs + o * n * row_bytes;
    for (size_t j = 0; j < count; j++) {
      const int64_t i = idx[j] < 0 ? (int64_t)idx[j] + (int64_t)n : (int64_t)idx[j];
      TETHER_DCHECK(i >= 0 && (size_t)i < n);
      memcpy(ys, block + (size_t)i * row_bytes, row_bytes);
      ys += row_bytes;
    }
  }
}
