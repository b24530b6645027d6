/*
 * gemm.c — the drivers around the GEMM micro-kernels: weight packing (the layouts ukernels.h
 * documents), the row-block / column-panel loop that calls the model's kernel per tile, and
 * its split into tasks over the thread pool; the int8 depthwise weight packing.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "compute/compute.h"

/* ---- float32 ------------------------------------------------------------------------- */

size_t tether_f32_gemm_packed_floats(size_t nr, size_t n, size_t k) {
  return (n + nr - 1) / nr * (k + 1) * nr;
}

void tether_f32_gemm_pack(size_t nr, size_t n, size_t k, const float* w, const float* bias,
                          float* packed) {
  for (size_t n0 = 0; n0 < n; n0 += nr) {
    for (size_t j = 0; j < nr; j++) *packed++ = (n0 + j < n && bias != NULL) ? bias[n0 + j] : 0.0f;
    for (size_t kk = 0; kk < k; kk++) {
      for (size_t j = 0; j < nr; j++) *packed++ = n0 + j < n ? w[(n0 + j) * k + kk] : 0.0f;
    }
  }
}

void tether_f32_gemm_pack_kn(size_t nr, size_t n, size_t k, const float* w, float* packed) {
  for (size_t n0 = 0; n0 < n; n0 += nr) {
    const size_t nc = n - n0 < nr ? n - n0 : nr;
    for (size_t j = 0; j < nr; j++) *packed++ = 0.0f;
    for (size_t kk = 0; kk < k; kk++) {
      const float* row = w + kk * n + n0;
      for (size_t j = 0; j < nc; j++) packed[j] = row[j];
      for (size_t j = nc; j < nr; j++) packed[j] = 0.0f;
      packed += nr;
    }
  }
}

void tether_f32_gemm(const tether_kernels* kt, size_t m_begin, size_t m_end, size_t n,
                     size_t kc, const float* a, size_t a_stride, const float* packed, float* c,
                     size_t c_stride, const tether_f32_minmax* params) {
  const size_t mr = kt->gemm_mr, nr = kt->gemm_nr;
  const size_t panel = (kc + 1) * nr;
  /* Rows in blocks of about 64 KiB of A, so a block stays in L2 while the panels stream. */
  size_t block = (64 * 1024) / (kc * sizeof(float) + 1);
  block = block < mr ? mr : block / mr * mr;
  for (size_t m0 = m_begin; m0 < m_end; m0 += block) {
    const size_t m1 = m0 + block < m_end ? m0 + block : m_end;
    const float* w = packed;
    for (size_t n0 = 0; n0 < n; n0 += nr, w += panel) {
      const size_t nc = n - n0 < nr ? n - n0 : nr;
      for (size_t m = m0; m < m1; m += mr) {
        const size_t rows = m1 - m < mr ? m1 - m : mr;
        kt->gemm(rows, nc, kc, (const float*)((const char*)a + m * a_stride), a_stride, w,
                 (float*)((char*)c + m * c_stride) + n0, c_stride, params);
      }
    }
  }
}

/* The float GEMM split over a thread pool. */

typedef struct gemm_job {
  const tether_kernels* kt;
  size_t m, n, kc, a_stride, c_stride;
  const float* a;
  const float* packed;
  float* c;
  const tether_f32_minmax* params;
  size_t m_chunk, n_chunk, n_tasks;  /* rows and columns per task (multiples of MR, NR) */
} gemm_job;

static void gemm_task(void* context, size_t task) {
  const gemm_job* j = (const gemm_job*)context;
  const size_t m0 = (task / j->n_tasks) * j->m_chunk, n0 = (task % j->n_tasks) * j->n_chunk;
  const size_t m1 = m0 + j->m_chunk < j->m ? m0 + j->m_chunk : j->m;
  const size_t n1 = n0 + j->n_chunk < j->n ? n0 + j->n_chunk : j->n;
  const size_t panel = (j->kc + 1) * j->kt->gemm_nr;
  tether_f32_gemm(j->kt, m0, m1, n1 - n0, j->kc, j->a, j->a_stride,
                  j->packed + n0 / j->kt->gemm_nr * panel, j->c + n0, j->c_stride, j->params);
}

void tether_f32_gemm_parallel(struct tether_pool* pool, const tether_kernels* kt, size_t m,
                              size_t n, size_t kc, const float* a, size_t a_stride,
                              const float* packed, float* c, size_t c_stride,
                              const tether_f32_minmax* params) {
  const size_t threads = tether_pool_threads(pool);
  if (threads <= 1 || m == 0) {
    tether_f32_gemm(kt, 0, m, n, kc, a, a_stride, packed, c, c_stride, params);
    return;
  }
  /* About 4 tasks per thread, but none smaller than TETHER_MIN_TASK_MACS (a small GEMM, the
   * late layers of a small model, runs whole rather than paying a hand-off per slice): rows
   * first, then column panels when there are few row tiles. Every output element is
   * computed the same way whatever the split. */
  const size_t mr = kt->gemm_mr, nr = kt->gemm_nr;
  const size_t m_tiles = (m + mr - 1) / mr, n_panels = (n + nr - 1) / nr;
  const size_t by_work = tether_tasks_for_work((double)m * (double)n * (double)kc);
  const size_t target = by_work < 4 * threads ? by_work : 4 * threads;
  if (target <= 1) {
    tether_f32_gemm(kt, 0, m, n, kc, a, a_stride, packed, c, c_stride, params);
    return;
  }
  const size_t m_tasks = m_tiles < target ? m_tiles : target;
  size_t n_tasks = (target + m_tasks - 1) / m_tasks;
  if (n_tasks > n_panels) n_tasks = n_panels;
  gemm_job j = {kt, m, n, kc, a_stride, c_stride, a, packed, c, params, 0, 0, 0};
  j.m_chunk = (m_tiles + m_tasks - 1) / m_tasks * mr;
  j.n_chunk = (n_panels + n_tasks - 1) / n_tasks * nr;
  j.n_tasks = (n + j.n_chunk - 1) / j.n_chunk;
  const size_t rows_tasks = (m + j.m_chunk - 1) / j.m_chunk;
  tether_parallelize(pool, gemm_task, &j, rows_tasks * j.n_tasks);
}

/* ---- int8 ------------------------------------------------------------------------------ */

size_t tether_qs8_gemm_panel_bytes(size_t nr, size_t kr, size_t k) {
  return 16 * nr + (k + kr - 1) / kr * kr * nr;
}

size_t tether_qs8_gemm_packed_bytes(size_t nr, size_t kr, size_t n, size_t k) {
  return (n + nr - 1) / nr * tether_qs8_gemm_panel_bytes(nr, kr, k);
}

void tether_qs8_gemm_pack(size_t nr, size_t kr, int xor_a, size_t n, size_t k, const int8_t* w,
                          const int32_t* bias, const int32_t* multiplier, const int32_t* shift,
                          int32_t x_zero, void* packed) {
  uint8_t* out = (uint8_t*)packed;
  const size_t kgroups = (k + kr - 1) / kr;
  /* The zero point folded into the bias: acc = sum (x + offset) * w + bias', offset = 128
   * when A is read as x ^ 0x80, so bias' = bias - (x_zero + offset) * sum w (mod 2^32). */
  const uint32_t fold = (uint32_t)(x_zero + (xor_a ? 128 : 0));
  for (size_t n0 = 0; n0 < n; n0 += nr) {
    int32_t* head = (int32_t*)(void*)out;
    for (size_t j = 0; j < nr; j++) {
      const size_t o = n0 + j;
      int32_t b = 0, m = 0, l = 0, r = 0;
      if (o < n) {
        uint32_t sum = 0;
        for (size_t kk = 0; kk < k; kk++) sum += (uint32_t)(int32_t)w[o * k + kk];
        b = (int32_t)((bias != NULL ? (uint32_t)bias[o] : 0u) - fold * sum);
        m = multiplier[o];
        l = shift[o] > 0 ? shift[o] : 0;
        r = shift[o] > 0 ? 0 : -shift[o];
      }
      head[j] = b;
      head[nr + j] = m;
      head[2 * nr + j] = l;
      head[3 * nr + j] = r;
    }
    int8_t* wp = (int8_t*)(out + 16 * nr);
    for (size_t g = 0; g < kgroups; g++) {
      for (size_t j = 0; j < nr; j++) {
        for (size_t kk = 0; kk < kr; kk++) {
          const size_t o = n0 + j, kidx = g * kr + kk;
          *wp++ = (o < n && kidx < k) ? w[o * k + kidx] : 0;
        }
      }
    }
    out += tether_qs8_gemm_panel_bytes(nr, kr, k);
  }
}

void tether_qs8_gemm(const tether_kernels* kt, size_t m_begin, size_t m_end, size_t n,
                     size_t kc, const int8_t* a, size_t a_stride, int a_u8, const void* packed,
                     int8_t* c, size_t c_stride, const tether_qs8_params* params) {
  const size_t mr = kt->qs8_gemm_mr, nr = kt->qs8_gemm_nr;
  const size_t panel = tether_qs8_gemm_panel_bytes(nr, kt->qs8_gemm_kr, kc);
  /* XOR kernels get A as u8 bytes x ^ 0x80: converted here a block of rows at a time (once
   * for all panels, instead of in the kernel's inner loop once per panel). */
  const int convert = kt->qs8_gemm_xor && !a_u8;
  int8_t a_u8_block[TETHER_QS8_A_BLOCK_BYTES];
  /* Rows in blocks of about 16 KiB of A, so a block stays in L1 while the panels stream. */
  size_t block = TETHER_QS8_A_BLOCK_BYTES / (kc + (convert ? 0 : 1));
  block = block < mr ? mr : block / mr * mr;
  TETHER_DCHECK(!convert || block * kc <= TETHER_QS8_A_BLOCK_BYTES);
  for (size_t m0 = m_begin; m0 < m_end; m0 += block) {
    const size_t m1 = m0 + block < m_end ? m0 + block : m_end;
    const int8_t* ab = (const int8_t*)((const char*)a + m0 * a_stride);
    size_t ab_stride = a_stride;
    if (convert) {
      for (size_t r = 0; r < m1 - m0; r++) {
        const uint8_t* src = (const uint8_t*)ab + r * a_stride;
        uint8_t* dst = (uint8_t*)a_u8_block + r * kc;
        for (size_t k = 0; k < kc; k++) dst[k] = (uint8_t)(src[k] ^ 0x80u);
      }
      ab = a_u8_block;
      ab_stride = kc;
    }
    const uint8_t* w = (const uint8_t*)packed;
    for (size_t n0 = 0; n0 < n; n0 += nr, w += panel) {
      const size_t nc = n - n0 < nr ? n - n0 : nr;
      for (size_t m = m0; m < m1; m += mr) {
        const size_t rows = m1 - m < mr ? m1 - m : mr;
        kt->qs8_gemm(rows, nc, kc, ab + (m - m0) * ab_stride, ab_stride, w,
                     (int8_t*)((char*)c + m * c_stride) + n0, c_stride, params);
      }
    }
  }
}

/* The int8 GEMM split over a thread pool. */

typedef struct qs8_gemm_job {
  const tether_kernels* kt;
  size_t m, n, kc, a_stride, c_stride;
  int a_u8;
  const int8_t* a;
  const uint8_t* packed;
  int8_t* c;
  const tether_qs8_params* params;
  size_t m_chunk, n_chunk, n_tasks;  /* rows and columns per task (multiples of MR, NR) */
} qs8_gemm_job;

static void qs8_gemm_task(void* context, size_t task) {
  const qs8_gemm_job* j = (const qs8_gemm_job*)context;
  const size_t m0 = (task / j->n_tasks) * j->m_chunk, n0 = (task % j->n_tasks) * j->n_chunk;
  const size_t m1 = m0 + j->m_chunk < j->m ? m0 + j->m_chunk : j->m;
  const size_t n1 = n0 + j->n_chunk < j->n ? n0 + j->n_chunk : j->n;
  const size_t panel = tether_qs8_gemm_panel_bytes(j->kt->qs8_gemm_nr, j->kt->qs8_gemm_kr, j->kc);
  tether_qs8_gemm(j->kt, m0, m1, n1 - n0, j->kc, j->a, j->a_stride, j->a_u8,
                  j->packed + n0 / j->kt->qs8_gemm_nr * panel, j->c + n0, j->c_stride,
                  j->params);
}

void tether_qs8_gemm_parallel(struct tether_pool* pool, const tether_kernels* kt, size_t m,
                              size_t n, size_t kc, const int8_t* a, size_t a_stride, int a_u8,
                              const void* packed, int8_t* c, size_t c_stride,
                              const tether_qs8_params* params) {
  const size_t threads = tether_pool_threads(pool);
  if (threads <= 1 || m == 0) {
    tether_qs8_gemm(kt, 0, m, n, kc, a, a_stride, a_u8, packed, c, c_stride, params);
    return;
  }
  /* About 4 tasks per thread: rows first, then column panels when there are few row tiles.
   * Every output element is computed the same way whatever the split (integer sums). */
  const size_t mr = kt->qs8_gemm_mr, nr = kt->qs8_gemm_nr;
  const size_t m_tiles = (m + mr - 1) / mr, n_panels = (n + nr - 1) / nr;
  const size_t target = 4 * threads;
  const size_t m_tasks = m_tiles < target ? m_tiles : target;
  size_t n_tasks = (target + m_tasks - 1) / m_tasks;
  if (n_tasks > n_panels) n_tasks = n_panels;
  qs8_gemm_job j = {kt, m, n, kc, a_stride, c_stride, a_u8, a, (const uint8_t*)packed, c,
                    params, 0, 0, 0};
  j.m_chunk = (m_tiles + m_tasks - 1) / m_tasks * mr;
  j.n_chunk = (n_panels + n_tasks - 1) / n_tasks * nr;
  j.n_tasks = (n + j.n_chunk - 1) / j.n_chunk;
  const size_t rows_tasks = (m + j.m_chunk - 1) / j.m_chunk;
  tether_parallelize(pool, qs8_gemm_task, &j, rows_tasks * j.n_tasks);
}

size_t tether_qs8_dwconv_packed_bytes(size_t channels, size_t taps) {
  return 4 * (5 + taps) * channels + (channels + 15) / 16 * ((taps + 1) / 2) * 64;
}

void tether_qs8_dwconv_pack(size_t channels, size_t taps, const int8_t* w, const int32_t* bias,
                            const int32_t* multiplier, const int32_t* shift, int32_t x_zero,
                            int32_t* packed) {
  for (size_t c = 0; c < channels; c++) {
    packed[c] = bias != NULL ? bias[c] : 0;
    packed[channels + c] = multiplier[c];
    packed[2 * channels + c] = shift[c] > 0 ? shift[c] : 0;
    packed[3 * channels + c] = shift[c] > 0 ? 0 : -shift[c];
  }
  int32_t* wp = packed + 4 * channels;
  for (size_t t = 0; t < taps * channels; t++) wp[t] = (int32_t)(uint16_t)(int16_t)w[t];
  /* Inside windows: the zero point folded into the bias, taps paired for 16-bit dots. */
  int32_t* bias_in = wp + taps * channels;
  for (size_t c = 0; c < channels; c++) {
    uint32_t sum = 0;
    for (size_t t = 0; t < taps; t++) sum += (uint32_t)(int32_t)w[t * channels + c];
    bias_in[c] = (int32_t)((uint32_t)packed[c] - (uint32_t)x_zero * sum);
  }
  int16_t* pairs = (int16_t*)(void*)(bias_in + channels);
  /* Position of channel j (0..15) in the 16-bit unpacklo / unpackhi order. */
  static const uint8_t kSlot[16] = {0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15};
  for (size_t c0 = 0; c0 < channels; c0 += 16) {
    for (size_t p = 0; p < (taps + 1) / 2; p++) {
      for (size_t j = 0; j < 16; j++) {
        const size_t c = c0 + j, t0 = 2 * p, t1 = 2 * p + 1;
        pairs[2 * kSlot[j]] = c < channels ? w[t0 * channels + c] : 0;
        pairs[2 * kSlot[j] + 1] = c < channels && t1 < taps ? w[t1 * channels + c] : 0;
      }
      pairs += 32;
    }
  }
}
