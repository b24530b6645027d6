/*
 * conv2d.c — CONV_2D: NHWC input, OHWI weights [OC, KH, KW, C/G], optional bias [OC],
 * any strides, dilations, explicit pads (top, left, bottom, right) and groups.
 *
 * Paths, chosen by prepare:
 *   - GEMM (groups 1, constant weights and bias): the weights are packed once at load into
 *     the model's packed block (ukernels.h layout, the model kernels' NR). A 1x1 stride-1
 *     unpadded conv is a GEMM straight on the NHWC input (M = N*H*W, K = C); any other
 *     kernel copies blocks of im2col rows (K = KH*KW*C, padding taps as zeros) into the
 *     arena scratch, at most ~64 KiB or 16 tiles of rows at a time, then runs the GEMM on
 *     them. Bias and RELU/RELU6/RELU_N1_TO_1 are applied in the micro-kernel's epilogue.
 *   - reference (groups > 1, or weights computed at run time): reference/conv.c.
 * int8 (input 0 int8): qs8_weights.c's prepare and packing, then the qs8 GEMM over the NHWC
 * input (1x1) or im2col blocks of the scratch, or the reference kernel (groups > 1).
 */
#include <stddef.h>
#include <string.h>

#include "ops/ops.h"

static tether_status check_bias(const struct tether_model* model, uint32_t op_index,
                                const tether_tensor* b, int32_t channels) {
  if (b == NULL) return TETHER_STATUS_SUCCESS;
  tether_status status = tether_check_f32(model, op_index, b, "input 2");
  if (status != TETHER_STATUS_SUCCESS) return status;
  return tether_check_shape(model, op_index, b, "input 2 (bias)", 1, &channels);
}

/* 1x1, stride 1, no padding: the NHWC input is the GEMM's A as it stands. */
static int is_pointwise(const tether_tensor* x, const tether_tensor* w, const tether_op_params* p) {
  (void)x;
  return w->shape[1] == 1 && w->shape[2] == 1 && p->stride_h == 1 && p->stride_w == 1 &&
         p->pad_top == 0 && p->pad_left == 0 && p->pad_bottom == 0 && p->pad_right == 0;
}

/* im2col rows per block: 16 tiles, fewer when K is long (about 64 KiB), at least one tile. */
static size_t im2col_rows(const tether_kernels* kt, size_t k) {
  size_t rows = (64 * 1024) / (k * sizeof(float));
  rows = rows / kt->gemm_mr * kt->gemm_mr;
  if (rows > 16 * kt->gemm_mr) rows = 16 * kt->gemm_mr;
  return rows < kt->gemm_mr ? kt->gemm_mr : rows;
}

static tether_status conv2d_prepare(const struct tether_model* model, uint32_t op_index,
                                    tether_node* op) {
  if (tether_input(model, op, 0)->dtype == TETHER_DTYPE_INT8) {
    return tether_q8_weights_prepare(model, op_index, op, TETHER_Q8_CONV);
  }
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* w = tether_input(model, op, 1);
  const tether_tensor* b = op->input_count > 2 ? tether_input(model, op, 2) : NULL;
  const tether_tensor* y = tether_output(model, op, 0);
  const tether_op_params* p = &op->params;
  tether_status status = tether_check_f32(model, op_index, x, "input 0");
  if (status == TETHER_STATUS_SUCCESS) status = tether_check_f32(model, op_index, w, "input 1");
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (x->ndim != 4 || w->ndim != 4) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "needs input 0 [N,H,W,C] and input 1 [OC,KH,KW,C/G], got ranks %u "
                           "and %u",
                           (unsigned)x->ndim, (unsigned)w->ndim);
  }
  const int32_t groups = p->groups;
  if (groups < 1 || x->shape[3] % groups != 0 || w->shape[0] % groups != 0 ||
      w->shape[3] != x->shape[3] / groups) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "weights [%d, %d, %d, %d] do not fit %d input channels with "
                           "groups=%d",
                           w->shape[0], w->shape[1], w->shape[2], w->shape[3], x->shape[3],
                           groups);
  }
  status = check_bias(model, op_index, b, w->shape[0]);
  if (status != TETHER_STATUS_SUCCESS) return status;
  status = tether_check_window_output(model, op_index, x, y, w->shape[1], w->shape[2],
                                      p->dilation_h, p->dilation_w, w->shape[0]);
  if (status != TETHER_STATUS_SUCCESS) return status;
  const int constant = (w->flags & TETHER_TENSOR_CONSTANT) &&
                       (b == NULL || (b->flags & TETHER_TENSOR_CONSTANT));
  if (groups == 1 && constant) {
    const tether_kernels* kt = model->kernels;
    const size_t k = (size_t)w->shape[1] * (size_t)w->shape[2] * (size_t)w->shape[3];
    op->packed_floats = tether_f32_gemm_packed_floats(kt->gemm_nr, (size_t)w->shape[0], k);
    if (!is_pointwise(x, w, p)) op->scratch_bytes = im2col_rows(kt, k) * k * sizeof(float);
    tether_f32_minmax mm;
    op->fused_activation = (uint8_t)tether_f32_minmax_of(op->activation, &mm);
  }
  return TETHER_STATUS_SUCCESS;
}

static tether_status conv2d_pack(const struct tether_model* model, const tether_node* op,
                                 void* packed) {
  if (op->quantized) return tether_q8_weights_pack(model, op, TETHER_Q8_CONV, packed);
  if (packed == NULL) return TETHER_STATUS_SUCCESS;  /* nothing to check */
  const tether_tensor* w = tether_input(model, op, 1);
  const tether_tensor* b = op->input_count > 2 ? tether_input(model, op, 2) : NULL;
  const size_t k = (size_t)w->shape[1] * (size_t)w->shape[2] * (size_t)w->shape[3];
  tether_f32_gemm_pack(model->kernels->gemm_nr, (size_t)w->shape[0], k, (const float*)w->data,
                       b != NULL ? (const float*)b->data : NULL, (float*)packed);
  return TETHER_STATUS_SUCCESS;
}

/* Short runs (a few channels: a stem over 1 or 3 input channels) copied inline, not by a
 * libc call per tap: 4 to 16 floats as two fixed-size copies that overlap in the middle. */
static inline void copy_floats(float* dst, const float* src, size_t n) {
  if (n > 16) {
    memcpy(dst, src, n * sizeof(float));
  } else if (n >= 8) {
    memcpy(dst, src, 8 * sizeof(float));
    memcpy(dst + n - 8, src + n - 8, 8 * sizeof(float));
  } else if (n >= 4) {
    memcpy(dst, src, 4 * sizeof(float));
    memcpy(dst + n - 4, src + n - 4, 4 * sizeof(float));
  } else {
    for (size_t i = 0; i < n; i++) dst[i] = src[i];
  }
}

static inline void zero_floats(float* dst, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = 0.0f;
}

/* One im2col row, output position (oh, ow) of image x_n: per kernel row, the taps inside the
 * input (one contiguous run when dilation_w is 1) between zeros. */
static void im2col_row(const tether_conv_geometry* g, const float* x_n, size_t oh, size_t ow,
                       float* a) {
  const size_t ic = g->in_c, kw_n = g->kernel_w;
  const ptrdiff_t iw0 = (ptrdiff_t)ow * g->stride_w - g->pad_left;
  size_t kw_begin, kw_end;
  tether_window_taps(iw0, kw_n, g->dilation_w, (ptrdiff_t)g->in_w, &kw_begin, &kw_end);
  for (size_t kh = 0; kh < g->kernel_h; kh++, a += kw_n * ic) {
    const ptrdiff_t ih = (ptrdiff_t)oh * g->stride_h + (ptrdiff_t)kh * g->dilation_h - g->pad_top;
    if (ih < 0 || ih >= (ptrdiff_t)g->in_h || kw_begin >= kw_end) {
      zero_floats(a, kw_n * ic);
      continue;
    }
    const float* xr = x_n + (size_t)ih * g->in_w * ic;
    zero_floats(a, kw_begin * ic);
    if (g->dilation_w == 1) {
      copy_floats(a + kw_begin * ic, xr + (size_t)(iw0 + (ptrdiff_t)kw_begin) * ic,
                  (kw_end - kw_begin) * ic);
    } else {
      for (size_t kw = kw_begin; kw < kw_end; kw++) {
        copy_floats(a + kw * ic, xr + (size_t)(iw0 + (ptrdiff_t)kw * g->dilation_w) * ic, ic);
      }
    }
    zero_floats(a + kw_end * ic, (kw_n - kw_end) * ic);
  }
}

/* Copies im2col rows [m0, m0 + rows) of the output positions (n, oh, ow) into a. Positions
 * whose whole window lies inside the input (dilation_w 1) copy one run per kernel row with
 * no bounds work; the rest take im2col_row. */
static void im2col(const tether_conv_geometry* g, const float* x, size_t m0, size_t rows,
                   float* a) {
  const size_t ic = g->in_c, run = g->kernel_w * ic, k = g->kernel_h * run;
  const ptrdiff_t row_floats = (ptrdiff_t)(g->dilation_h * g->in_w * ic);
  const ptrdiff_t step = (ptrdiff_t)(g->stride_w * ic);
  /* Columns [lo, hi) have the window's columns inside the input. */
  size_t lo = 0, hi = 0;
  if (g->dilation_w == 1) tether_window_inside_columns(g, &lo, &hi);
  /* the position of row m0, then stepped (no division per row) */
  size_t ow = m0 % g->out_w, oh = (m0 / g->out_w) % g->out_h, n = m0 / (g->out_w * g->out_h);
  for (size_t r = 0; r < rows;) {
    const float* x_n = x + n * g->in_h * g->in_w * ic;
    const size_t seg_end = ow + (rows - r < g->out_w - ow ? rows - r : g->out_w - ow);
    const ptrdiff_t ih0 = (ptrdiff_t)oh * g->stride_h - g->pad_top;
    const int rows_inside =
        ih0 >= 0 && ih0 + (ptrdiff_t)(g->kernel_h - 1) * g->dilation_h < (ptrdiff_t)g->in_h;
    for (; ow < seg_end; ow++, r++, a += k) {
      if (!rows_inside || ow < lo || ow >= hi) {
        im2col_row(g, x_n, oh, ow, a);
        continue;
      }
      const float* src = x_n + (size_t)ih0 * g->in_w * ic +
                         ((ptrdiff_t)ow * step - (ptrdiff_t)g->pad_left * (ptrdiff_t)ic);
      for (size_t kh = 0; kh < g->kernel_h; kh++, src += row_floats) {
        copy_floats(a + kh * run, src, run);
      }
    }
    if (ow == g->out_w) {
      ow = 0;
      if (++oh == g->out_h) {
        oh = 0;
        n++;
      }
    }
  }
}

/* n bytes XORed with `flip8` (the flip byte in every lane): 8 at a time, the last 8
 * overlapping (runs of 8 or more), else byte by byte. */
static inline void copy_flip(uint8_t* dst, const uint8_t* src, size_t n, uint64_t flip8) {
  if (n < 8) {
    for (size_t i = 0; i < n; i++) dst[i] = (uint8_t)(src[i] ^ (uint8_t)flip8);
    return;
  }
  uint64_t v;
  for (size_t i = 0; i + 8 < n; i += 8) {
    memcpy(&v, src + i, 8);
    v ^= flip8;
    memcpy(dst + i, &v, 8);
  }
  memcpy(&v, src + n - 8, 8);
  v ^= flip8;
  memcpy(dst + n - 8, &v, 8);
}

/* Copies im2col rows [m0, m0 + rows) of the output positions (n, oh, ow) into a, rows
 * `row_bytes` apart (K rounded up to the kernel's K-step, the extra bytes zero: their weights
 * are zero), each byte XORed with `flip` (0x80 for kernels that read u8, else 0); taps in the
 * padding hold z_x (flipped alike), which the packed bias cancels. */
static void q8_im2col(const tether_conv_geometry* g, const int8_t* x, int8_t x_zero,
                      uint8_t flip, size_t m0, size_t rows, size_t row_bytes, int8_t* a) {
  const size_t ic = g->in_c, run = g->kernel_w * ic;
  const size_t k = g->kernel_h * run;
  const int8_t fill = (int8_t)((uint8_t)x_zero ^ flip);
  const uint64_t flip8 = (uint64_t)flip * 0x0101010101010101ull;
  /* Columns [lo, hi) have the window's columns inside the input: with the rows inside too,
   * one run per kernel row, no bounds work. */
  size_t lo = 0, hi = 0;
  if (g->dilation_w == 1) tether_window_inside_columns(g, &lo, &hi);
  /* The output position of row m0, then stepped along (no divisions per row). */
  size_t ow = m0 % g->out_w, oh = (m0 / g->out_w) % g->out_h, n = m0 / (g->out_w * g->out_h);
  for (size_t r = 0; r < rows; r++) {
    const uint8_t* x_n = (const uint8_t*)x + n * g->in_h * g->in_w * ic;
    const ptrdiff_t ih0 = (ptrdiff_t)oh * g->stride_h - g->pad_top;
    const ptrdiff_t iw0 = (ptrdiff_t)ow * g->stride_w - g->pad_left;
    if (ow >= lo && ow < hi && ih0 >= 0 &&
        ih0 + (ptrdiff_t)(g->kernel_h - 1) * g->dilation_h < (ptrdiff_t)g->in_h) {
      const uint8_t* src = x_n + ((size_t)ih0 * g->in_w + (size_t)iw0) * ic;
      for (size_t kh = 0; kh < g->kernel_h; kh++, src += g->dilation_h * g->in_w * ic) {
        copy_flip((uint8_t*)a + kh * run, src, run, flip8);
      }
      a += k;
    } else {
      for (size_t kh = 0; kh < g->kernel_h; kh++) {
        const ptrdiff_t ih = ih0 + (ptrdiff_t)kh * g->dilation_h;
        const int row_inside = ih >= 0 && ih < (ptrdiff_t)g->in_h;
        const uint8_t* x_row = x_n + (row_inside ? (size_t)ih * g->in_w * ic : 0);
        if (row_inside && g->dilation_w == 1 && iw0 >= 0 &&
            iw0 + (ptrdiff_t)g->kernel_w <= (ptrdiff_t)g->in_w) {  /* one contiguous run */
          copy_flip((uint8_t*)a, x_row + (size_t)iw0 * ic, run, flip8);
          a += run;
          continue;
        }
        for (size_t kw = 0; kw < g->kernel_w; kw++) {
          const ptrdiff_t iw = iw0 + (ptrdiff_t)kw * g->dilation_w;
          if (!row_inside || iw < 0 || iw >= (ptrdiff_t)g->in_w) {
            for (size_t i = 0; i < ic; i++) a[i] = fill;
          } else {
            const uint8_t* src = x_row + (size_t)iw * ic;
            for (size_t i = 0; i < ic; i++) a[i] = (int8_t)(src[i] ^ flip);
          }
          a += ic;
        }
      }
    }
    for (size_t i = k; i < row_bytes; i++) *a++ = 0;
    if (++ow == g->out_w) {
      ow = 0;
      if (++oh == g->out_h) {
        oh = 0;
        n++;
      }
    }
  }
}

/* One block of im2col rows split over the pool: each task copies its own rows and runs the
 * GEMM on them over all panels (rows are independent, so any split gives the same bytes). */
typedef struct q8_im2col_job {
  const tether_conv_geometry* g;
  const tether_kernels* kt;
  const int8_t* x;
  int8_t x_zero;
  uint8_t flip;
  size_t m0, rows, task_rows, kpad;
  int8_t* a;
  const void* packed;
  int8_t* y;
  const tether_qs8_params* params;
} q8_im2col_job;

static void q8_im2col_task(void* context, size_t task) {
  const q8_im2col_job* j = (const q8_im2col_job*)context;
  const size_t r0 = task * j->task_rows;
  const size_t r1 = r0 + j->task_rows < j->rows ? r0 + j->task_rows : j->rows;
  int8_t* a = j->a + r0 * j->kpad;
  q8_im2col(j->g, j->x, j->x_zero, j->flip, j->m0 + r0, r1 - r0, j->kpad, a);
  tether_qs8_gemm(j->kt, 0, r1 - r0, j->g->out_c, j->kpad, a, j->kpad, 1, j->packed,
                  j->y + (j->m0 + r0) * j->g->out_c, j->g->out_c, j->params);
}

static void q8_conv2d_eval(const struct tether_model* model, const tether_node* op,
                           void* const* data, void* scratch, struct tether_pool* pool) {
  const tether_q8_operands o = tether_q8_weights_operands(model, op, data, TETHER_Q8_CONV);
  const tether_kernels* kt = model->kernels;
  const tether_op_params* p = &op->params;
  const tether_conv_geometry g = tether_window_geometry(model, op);
  if (op->quantized == TETHER_Q8_GEMM) {
    const size_t m = g.batch * g.out_h * g.out_w;
    const size_t k = g.kernel_h * g.kernel_w * g.in_c;
    if (tether_q8_pointwise(o.w, p)) {
      const int8_t* a = o.x_data;
      if (op->scratch_bytes != 0) {  /* XOR kernel, rows too long for the driver's block */
        tether_q8_flip(o.x_data, o.x->elements, (int8_t*)scratch);
        a = (const int8_t*)scratch;
      }
      tether_qs8_gemm_parallel(pool, kt, m, g.out_c, k, a, k, op->scratch_bytes != 0,
                               op->packed, o.y_data, g.out_c, &o.kernel);
      return;
    }
    /* Rows of K rounded up to the K-step: same packed groups, no tail in the kernel. */
    const size_t kpad = (k + kt->qs8_gemm_kr - 1) / kt->qs8_gemm_kr * kt->qs8_gemm_kr;
    const size_t block = op->scratch_bytes / kpad;
    q8_im2col_job j = {&g, kt, o.x_data, (int8_t)o.x->zero_point,
                       (uint8_t)(kt->qs8_gemm_xor ? 0x80 : 0),
                       0, 0, 0, kpad, (int8_t*)scratch, op->packed, o.y_data, &o.kernel};
    const size_t threads = tether_pool_threads(pool), mr = kt->qs8_gemm_mr;
    for (size_t m0 = 0; m0 < m; m0 += block) {
      j.m0 = m0;
      j.rows = m - m0 < block ? m - m0 : block;
      /* About 4 tasks per thread, whole MR tiles each (one task on one thread). */
      const size_t tiles = (j.rows + mr - 1) / mr;
      const size_t tasks = threads == 1 ? 1 : tiles < 4 * threads ? tiles : 4 * threads;
      j.task_rows = (tiles + tasks - 1) / tasks * mr;
      tether_parallelize(pool, q8_im2col_task, &j, (j.rows + j.task_rows - 1) / j.task_rows);
    }
    return;
  }
  tether_ref_qs8_conv2d(&g, o.x_data, o.w_data, o.bias, o.y_data, &o.ref);
}

/* Rows [t * chunk, (t + 1) * chunk) of the im2col GEMM, `sub` rows at a time through task
 * t's slice of the scratch (the tasks are at most the pool's threads: slices never meet). */
typedef struct conv_rows_job {
  const tether_conv_geometry* g;
  const tether_kernels* kt;
  const float* x;
  float* scratch;
  size_t m, k, chunk, sub;
  const float* packed;
  float* y;
  const tether_f32_minmax* mm;
} conv_rows_job;

static void conv_rows_task(void* context, size_t t) {
  const conv_rows_job* j = (const conv_rows_job*)context;
  float* a = j->scratch + t * j->sub * j->k;
  const size_t end = (t + 1) * j->chunk < j->m ? (t + 1) * j->chunk : j->m;
  const size_t n = j->g->out_c;
  for (size_t m0 = t * j->chunk; m0 < end; m0 += j->sub) {
    const size_t rows = end - m0 < j->sub ? end - m0 : j->sub;
    im2col(j->g, j->x, m0, rows, a);
    tether_f32_gemm(j->kt, 0, rows, n, j->k, a, j->k * sizeof(float), j->packed,
                    j->y + m0 * n, n * sizeof(float), j->mm);
  }
}

static void conv2d_eval(const struct tether_model* model, const tether_node* op,
                        void* const* data, void* scratch, struct tether_pool* pool) {
  if (op->quantized) {
    q8_conv2d_eval(model, op, data, scratch, pool);
    return;
  }
  const int has_bias = op->input_count > 2 && op->inputs[2] != TETHER_NO_TENSOR;
  const tether_conv_geometry g = tether_window_geometry(model, op);
  if (op->packed != NULL) {
    const tether_kernels* kt = model->kernels;
    tether_f32_minmax mm;
    tether_f32_minmax_of(op->fused_activation ? op->activation : TETHER_ACT_NONE, &mm);
    const float* xd = (const float*)data[op->inputs[0]];
    float* yd = (float*)data[op->outputs[0]];
    const size_t m = g.batch * g.out_h * g.out_w;
    const size_t k = g.kernel_h * g.kernel_w * g.in_c;
    if (op->scratch_bytes == 0) {
      tether_f32_gemm_parallel(pool, kt, m, g.out_c, k, xd, k * sizeof(float), op->packed, yd,
                               g.out_c * sizeof(float), &mm);
      return;
    }
    const size_t block = op->scratch_bytes / (k * sizeof(float));
    float* a = (float*)scratch;
    const size_t threads = tether_pool_threads(pool), mr = kt->gemm_mr;
    const size_t tiles = (m + mr - 1) / mr;
    if (threads > 1 && tiles >= 4 * threads && block / threads >= mr) {
      /* Many rows (a stem at full resolution): each thread's task copies and multiplies its
       * own share of whole tiles in its own slice of the scratch, no hand-off per block. */
      conv_rows_job j = {&g, kt, xd, a, m, k, (tiles + threads - 1) / threads * mr,
                         block / threads / mr * mr, (const float*)op->packed, yd, &mm};
      tether_parallelize(pool, conv_rows_task, &j, (m + j.chunk - 1) / j.chunk);
      return;
    }
    for (size_t m0 = 0; m0 < m; m0 += block) {
      const size_t rows = m - m0 < block ? m - m0 : block;
      im2col(&g, xd, m0, rows, a);
      tether_f32_gemm_parallel(pool, kt, rows, g.out_c, k, a, k * sizeof(float), op->packed,
                               yd + m0 * g.out_c, g.out_c * sizeof(float), &mm);
    }
    return;
  }
  tether_ref_f32_conv2d(&g, (const float*)data[op->inputs[0]],
                                    (const float*)data[op->inputs[1]],
                                    has_bias ? (const float*)data[op->inputs[2]] : NULL,
                                    (float*)data[op->outputs[0]]);
}

TETHER_OP_DEF(CONV_2D) = {2, 3, 2, TETHER_WINDOW_ATTRS | TETHER_ATTR(GROUPS), 0, conv2d_prepare,
                          conv2d_pack, conv2d_eval};
