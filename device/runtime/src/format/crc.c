/*
 * crc.c — CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320, as zlib's crc32): the
 * checksum in every .tmodel header.
 */
#include <stddef.h>
#include <stdint.h>

#include "format/format.h"

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
