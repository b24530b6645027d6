/*
 * quantized.c — the int8 paths of CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, SUB, MUL and
 * the QUANTIZE / DEQUANTIZE ops (converter/FORMAT.md, "Integer (int8) execution").
 *
 * Arithmetic is TensorFlow Lite's int8 reference kernels', bit for bit:
 *   acc = bias[c] + sum w * (x - z_x)     (int32; taps in the padding contribute nothing)
 *   y   = clamp(z_y + MultiplyByQuantizedMultiplier(acc, M_c, shift_c), lo, hi)
 * with M_c, shift_c = QuantizeMultiplier((double)s_x * s_w[c] / s_y) computed at load into
 * the model's packed block (words [M_0..M_{C-1}, shift_0..shift_{C-1}]), and [lo, hi] the
 * fused activation's range in the quantized domain.
 *
 * Execution paths (op->quantized, chosen at prepare):
 *   Q8_GEMM   FULLY_CONNECTED, and CONV_2D with groups 1: the model's qs8 GEMM micro-kernel
 *             over packed panels (ukernels.h); 1x1 stride-1 unpadded convolutions read the
 *             NHWC input as A, other shapes go through im2col blocks in the scratch (taps in
 *             the padding filled with z_x, so they contribute nothing).
 *   Q8_DWCONV DEPTHWISE_CONV_2D with depth multiplier 1: the model's qs8 dwconv kernel.
 *   Q8_REF    everything else (grouped convolution, depth multiplier > 1): the reference
 *             kernels below, with the words [M_0..M_{C-1}, shift_0..shift_{C-1}].
 * Work is split over the pool by output rows / column panels; integer sums make the result
 * identical for any split.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../internal.h"
#include "../ukernels.h"

typedef struct q8_params {
  const int32_t* multiplier;
  const int32_t* shift;
  int32_t x_zero, y_zero, lo, hi;
} q8_params;

static inline int8_t q8_output(int64_t acc64, const q8_params* p, size_t c) {
  /* int32 two's-complement wrap of the sum (defined here; TFLite's int32 adds wrap the same
   * way in practice). Valid models never get near it. */
  const int32_t acc = (int32_t)(uint32_t)(uint64_t)acc64;
  int32_t v = tether_multiply_by_quantized_multiplier(acc, p->multiplier[c], p->shift[c]) +
              p->y_zero;
  v = v < p->lo ? p->lo : v;
  return (int8_t)(v > p->hi ? p->hi : v);
}

/* CONV_2D, weights [OC, KH, KW, C/G]. */
static void qs8_conv2d_ukernel__scalar(const tether_conv_geometry* g, const int8_t* x,
                                       const int8_t* w, const int32_t* bias, int8_t* y,
                                       const q8_params* p) {
  const size_t group_in = g->in_c / g->groups, group_out = g->out_c / g->groups;
  for (size_t n = 0; n < g->batch; n++) {
    const int8_t* x_n = x + n * g->in_h * g->in_w * g->in_c;
    for (size_t oh = 0; oh < g->out_h; oh++) {
      for (size_t ow = 0; ow < g->out_w; ow++) {
        int8_t* yp = y + ((n * g->out_h + oh) * g->out_w + ow) * g->out_c;
        for (size_t o = 0; o < g->out_c; o++) {
          const size_t c0 = (o / group_out) * group_in;
          int64_t acc = 0;  /* wraps to int32 below, as TFLite's int32 sum does */
          for (size_t kh = 0; kh < g->kernel_h; kh++) {
            const ptrdiff_t ih = (ptrdiff_t)oh * g->stride_h + (ptrdiff_t)kh * g->dilation_h - g->pad_top;
            if (ih < 0 || ih >= (ptrdiff_t)g->in_h) continue;
            for (size_t kw = 0; kw < g->kernel_w; kw++) {
              const ptrdiff_t iw = (ptrdiff_t)ow * g->stride_w + (ptrdiff_t)kw * g->dilation_w - g->pad_left;
              if (iw < 0 || iw >= (ptrdiff_t)g->in_w) continue;
              const int8_t* xp = x_n + ((size_t)ih * g->in_w + (size_t)iw) * g->in_c + c0;
              const int8_t* wp = w + ((o * g->kernel_h + kh) * g->kernel_w + kw) * group_in;
              for (size_t i = 0; i < group_in; i++) acc += (int32_t)wp[i] * ((int32_t)xp[i] - p->x_zero);
            }
          }
          if (bias != NULL) acc += bias[o];
          yp[o] = q8_output(acc, p, o);
        }
      }
    }
  }
}

/* DEPTHWISE_CONV_2D, weights [1, KH, KW, C*M]. */
static void qs8_dwconv2d_ukernel__scalar(const tether_conv_geometry* g, const int8_t* x,
                                         const int8_t* w, const int32_t* bias, int8_t* y,
                                         const q8_params* p) {
  const size_t m = g->depth_multiplier;
  for (size_t n = 0; n < g->batch; n++) {
    const int8_t* x_n = x + n * g->in_h * g->in_w * g->in_c;
    for (size_t oh = 0; oh < g->out_h; oh++) {
      for (size_t ow = 0; ow < g->out_w; ow++) {
        int8_t* yp = y + ((n * g->out_h + oh) * g->out_w + ow) * g->out_c;
        for (size_t o = 0; o < g->out_c; o++) {
          int64_t acc = 0;  /* wraps to int32 below, as TFLite's int32 sum does */
          for (size_t kh = 0; kh < g->kernel_h; kh++) {
            const ptrdiff_t ih = (ptrdiff_t)oh * g->stride_h + (ptrdiff_t)kh * g->dilation_h - g->pad_top;
            if (ih < 0 || ih >= (ptrdiff_t)g->in_h) continue;
            for (size_t kw = 0; kw < g->kernel_w; kw++) {
              const ptrdiff_t iw = (ptrdiff_t)ow * g->stride_w + (ptrdiff_t)kw * g->dilation_w - g->pad_left;
              if (iw < 0 || iw >= (ptrdiff_t)g->in_w) continue;
              acc += (int32_t)w[(kh * g->kernel_w + kw) * g->out_c + o] *
                     ((int32_t)x_n[((size_t)ih * g->in_w + (size_t)iw) * g->in_c + o / m] - p->x_zero);
            }
          }
          if (bias != NULL) acc += bias[o];
          yp[o] = q8_output(acc, p, o);
        }
      }
    }
  }
}

/* FULLY_CONNECTED, weights [O, K]. */
static void qs8_fc_ukernel__scalar(size_t rows, size_t k, size_t outputs, const int8_t* x,
                                   const int8_t* w, const int32_t* bias, int8_t* y,
                                   const q8_params* p) {
  for (size_t r = 0; r < rows; r++) {
    for (size_t o = 0; o < outputs; o++) {
      int64_t acc = 0;
      for (size_t i = 0; i < k; i++) acc += (int32_t)w[o * k + i] * ((int32_t)x[r * k + i] - p->x_zero);
      if (bias != NULL) acc += bias[o];
      y[r * outputs + o] = q8_output(acc, p, o);
    }
  }
}

/* ---- prepare ---------------------------------------------------------------------------- */

enum { Q8_REF = 1, Q8_GEMM = 2, Q8_DWCONV = 3 };

/* 1x1, stride 1, no padding: the NHWC input is the GEMM's A as it stands. */
static int q8_pointwise(const tether_tensor* w, const tether_op_params* p) {
  return w->shape[1] == 1 && w->shape[2] == 1 && p->stride_h == 1 && p->stride_w == 1 &&
         p->pad_top == 0 && p->pad_left == 0 && p->pad_bottom == 0 && p->pad_right == 0;
}

/* im2col rows per block: about 64 KiB of A, a multiple of MR, at most 64 tiles. */
static size_t im2col_rows(const tether_kernels* kt, size_t k) {
  const size_t mr = kt->qs8_gemm_mr;
  size_t rows = (64 * 1024) / k / mr * mr;
  if (rows > 64 * mr) rows = 64 * mr;
  return rows < mr ? mr : rows;
}

tether_status tether_q8_need_per_tensor(const struct tether_model* model, uint32_t op_index,
                                        const tether_tensor* t, const char* slot) {
  if (t->dtype != TETHER_DTYPE_INT8 || t->quant != 1) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "%s (tensor '%s') must be int8 quantized per tensor (dtype %u, "
                           "quant %u)",
                           slot, t->name, (unsigned)t->dtype, (unsigned)t->quant);
  }
  if (!(t->scale > 0.0f) || !isfinite(t->scale) || t->zero_point < -128 || t->zero_point > 127) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "%s (tensor '%s') needs a finite scale > 0 and a zero point in "
                           "[-128, 127]",
                           slot, t->name);
  }
  return TETHER_STATUS_SUCCESS;
}

tether_status tether_q8_conv_prepare(const struct tether_model* model, uint32_t op_index,
                                     tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* w = tether_input(model, op, 1);
  const tether_tensor* b = op->input_count > 2 ? tether_input(model, op, 2) : NULL;
  const tether_tensor* y = tether_output(model, op, 0);
  const tether_op_params* p = &op->params;
  tether_status status = tether_q8_need_per_tensor(model, op_index, x, "input 0");
  if (status == TETHER_STATUS_SUCCESS) status = tether_q8_need_per_tensor(model, op_index, y, "output 0");
  if (status != TETHER_STATUS_SUCCESS) return status;
  const int fc = op->type == TETHER_OP_FULLY_CONNECTED;
  const int dw = op->type == TETHER_OP_DEPTHWISE_CONV_2D;
  const uint32_t channel_axis = dw ? 3 : 0;
  if (w->dtype != TETHER_DTYPE_INT8 || !(w->flags & TETHER_TENSOR_CONSTANT) || w->quant == 0 ||
      (w->quant == 2 && w->quant_axis != channel_axis) || w->ndim != (fc ? 2 : 4)) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "int8 input 1 (weights '%s') must be a constant int8 tensor of rank "
                           "%d quantized per tensor or per channel along axis %u",
                           w->name, fc ? 2 : 4, channel_axis);
  }
  const int32_t channels = w->shape[channel_axis];
  for (uint32_t c = 0; c < w->quant_count; c++) {
    if (tether_quant_zero_point(w, c) != 0) {
      return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "int8 weights '%s' must be symmetric; zero point %u is %d", w->name,
                             c, tether_quant_zero_point(w, c));
    }
  }
  if (b != NULL && (b->dtype != TETHER_DTYPE_INT32 || !(b->flags & TETHER_TENSOR_CONSTANT) ||
                    b->ndim != 1 || b->shape[0] != channels)) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "int8 input 2 (bias '%s') must be a constant int32 [%d]", b->name,
                           channels);
  }
  if (fc) {
    if (x->ndim < 1 || w->shape[1] != x->shape[x->ndim - 1] ||
        y->elements != x->elements / (size_t)w->shape[1] * (size_t)w->shape[0] ||
        y->shape[y->ndim - 1] != w->shape[0]) {
      return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "needs input 0 [..., K], input 1 [O, K] and output [..., O]");
    }
  } else if (dw) {
    if (x->ndim != 4 || p->depth_multiplier < 1 || w->shape[0] != 1 ||
        (int64_t)w->shape[3] != (int64_t)x->shape[3] * p->depth_multiplier) {
      return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "needs input 0 [N,H,W,C] and input 1 [1,KH,KW,C*M]");
    }
  } else if (x->ndim != 4 || p->groups < 1 || x->shape[3] % p->groups != 0 ||
             w->shape[0] % p->groups != 0 || w->shape[3] != x->shape[3] / p->groups) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "needs input 0 [N,H,W,C] and input 1 [OC,KH,KW,C/G] with groups=%d",
                           p->groups);
  }
  if (!fc) {
    status = tether_check_window_output(model, op_index, x, y, w->shape[1], w->shape[2],
                                        p->dilation_h, p->dilation_w, channels);
    if (status != TETHER_STATUS_SUCCESS) return status;
  }
  int32_t lo, hi;
  if (!tether_q8_activation_range(op->activation, y->scale, y->zero_point, &lo, &hi)) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "fused activation %u is not supported on int8 outputs",
                           (unsigned)op->activation);
  }
  op->fused_activation = 1;
  const tether_kernels* kt = model->kernels;
  const size_t taps = fc ? 1 : (size_t)w->shape[1] * (size_t)w->shape[2];
  size_t bytes;
  if (fc || (!dw && p->groups == 1)) {
    const size_t k = fc ? (size_t)w->shape[1] : taps * (size_t)w->shape[3];
    op->quantized = Q8_GEMM;
    bytes = tether_qs8_gemm_packed_bytes(kt->qs8_gemm_nr, kt->qs8_gemm_kr, (size_t)channels, k);
    if (!fc && !q8_pointwise(w, p)) {
      const size_t kp = (k + kt->qs8_gemm_kr - 1) / kt->qs8_gemm_kr * kt->qs8_gemm_kr;
      op->scratch_bytes = im2col_rows(kt, kp) * kp;
    } else if (kt->qs8_gemm_xor && kt->qs8_gemm_mr * k > TETHER_QS8_A_BLOCK_BYTES) {
      op->scratch_bytes = x->elements;  /* rows too long to convert on the stack: all of A */
    }
  } else if (dw && p->depth_multiplier == 1) {
    op->quantized = Q8_DWCONV;
    bytes = tether_qs8_dwconv_packed_bytes((size_t)channels, taps);
  } else {
    op->quantized = Q8_REF;
    bytes = 8 * (size_t)channels;  /* multipliers, shifts */
  }
  op->packed_floats = (bytes + 3) / 4;  /* in 4-byte words */
  return TETHER_STATUS_SUCCESS;
}

/* Shifts MultiplyByQuantizedMultiplier can apply: x << 30 at most (and >> 31, which
 * QuantizeMultiplier guarantees by flushing smaller multipliers to 0). */
static tether_status check_shifts(const struct tether_model* model, const tether_node* op,
                                  const int32_t* shifts, size_t count, size_t stride) {
  for (size_t i = 0; i < count; i++) {
    if (shifts[i * stride] > 30) {
      return tether_op_error(model, (uint32_t)(op - model->ops), TETHER_STATUS_FORMAT_ERROR,
                             "int8 requantization scale %zu is 2^%d or more (scales out of "
                             "range: s_x * s_w / s_y must be below 2^30)",
                             i, (int)shifts[i * stride] - 1);
    }
  }
  return TETHER_STATUS_SUCCESS;
}

static void q8_pack_words(const struct tether_model* model, const tether_node* op,
                          int32_t* words);

static size_t q8_channels(const struct tether_model* model, const tether_node* op) {
  const tether_tensor* w = tether_input(model, op, 1);
  return (size_t)w->shape[op->type == TETHER_OP_DEPTHWISE_CONV_2D ? 3 : 0];
}

/* CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED on the GEMM or dwconv path: the
 * per-channel words go through a temporary block, then into the kernel's packed layout
 * (packed == NULL: the checks alone). */
static tether_status q8_pack_kernel(const struct tether_model* model, const tether_node* op,
                                    int32_t* packed) {
  const size_t channels = q8_channels(model, op);
  const size_t words_bytes = tether_round_block(8 * channels);
  int32_t* words = (int32_t*)tether_model_allocate(model, words_bytes, 64);
  if (words == NULL) {
    return tether_op_error(model, (uint32_t)(op - model->ops), TETHER_STATUS_OUT_OF_MEMORY,
                           "cannot allocate %zu bytes to pack int8 weights", words_bytes);
  }
  q8_pack_words(model, op, words);
  tether_status status = check_shifts(model, op, words + channels, channels, 1);
  if (status == TETHER_STATUS_SUCCESS && packed != NULL) {
    const tether_tensor* x = tether_input(model, op, 0);
    const tether_tensor* w = tether_input(model, op, 1);
    const tether_tensor* b = op->input_count > 2 ? tether_input(model, op, 2) : NULL;
    const int8_t* wd = (const int8_t*)w->data;
    const int32_t* bd = b != NULL ? (const int32_t*)b->data : NULL;
    const tether_kernels* kt = model->kernels;
    if (op->quantized == Q8_DWCONV) {
      tether_qs8_dwconv_pack(channels, (size_t)w->shape[1] * (size_t)w->shape[2], wd, bd,
                             words, words + channels, x->zero_point, packed);
    } else {
      tether_qs8_gemm_pack(kt->qs8_gemm_nr, kt->qs8_gemm_kr, kt->qs8_gemm_xor, channels,
                           w->elements / channels, wd, bd, words, words + channels,
                           x->zero_point, packed);
    }
  }
  tether_model_deallocate(model, words, words_bytes);
  return status;
}

/* Whether an op packs through q8_pack_kernel (else its words are its whole packed part). */
static int q8_kernel_path(const tether_node* op) {
  return (op->type == TETHER_OP_CONV_2D || op->type == TETHER_OP_DEPTHWISE_CONV_2D ||
          op->type == TETHER_OP_FULLY_CONNECTED) &&
         op->quantized != Q8_REF;
}

tether_status tether_q8_check(const struct tether_model* model, const tether_node* op) {
  if (q8_kernel_path(op)) return q8_pack_kernel(model, op, NULL);
  /* The words (a few, or 2 per channel) into a temporary of the dry run's own: not one of
   * the loader's requests, so not counted. */
  const tether_allocator* a = &model->allocator;
  const size_t bytes = op->packed_floats * sizeof(int32_t);
  int32_t* words = (int32_t*)a->allocate(a->context, bytes, 64);
  if (words == NULL) {
    return tether_op_error(model, (uint32_t)(op - model->ops), TETHER_STATUS_OUT_OF_MEMORY,
                           "cannot allocate %zu bytes to check int8 scales", bytes);
  }
  tether_status status = tether_q8_pack(model, op, words);
  a->deallocate(a->context, words);
  return status;
}

tether_status tether_q8_pack(const struct tether_model* model, const tether_node* op,
                             int32_t* words) {
  if (q8_kernel_path(op)) return q8_pack_kernel(model, op, words);
  q8_pack_words(model, op, words);
  switch (op->type) {
    case TETHER_OP_MEAN:
    case TETHER_OP_QUANTIZE: return check_shifts(model, op, words + 1, 1, 1);
    case TETHER_OP_MUL: return check_shifts(model, op, words + 1, 1, 1);
    case TETHER_OP_ADD:
    case TETHER_OP_SUB: return check_shifts(model, op, words + 1, 3, 2);
    default: {
      const size_t channels = q8_channels(model, op);
      return check_shifts(model, op, words + channels, channels, 1);
    }
  }
}

static void q8_pack_words(const struct tether_model* model, const tether_node* op,
                          int32_t* words) {
  const tether_tensor* x = tether_input(model, op, 0);
  if (op->type == TETHER_OP_MEAN) {
    tether_q8_mean_pack(model, op, words);
    return;
  }
  if (op->type == TETHER_OP_MUL) {  /* TFLite Mul int8: M = s_a * s_b / s_y */
    const tether_tensor* x2 = tether_input(model, op, 1);
    const tether_tensor* y = tether_output(model, op, 0);
    tether_quantize_multiplier((double)x->scale * (double)x2->scale / (double)y->scale,
                               &words[0], &words[1]);
    return;
  }
  if (op->type == TETHER_OP_ADD || op->type == TETHER_OP_SUB) {
    /* TFLite PrepareGeneralSubOp / Add int8, left shift 20; SUB negates input 2's multiplier */
    const tether_tensor* x2 = tether_input(model, op, 1);
    const tether_tensor* y = tether_output(model, op, 0);
    const float larger = x->scale > x2->scale ? x->scale : x2->scale;
    const double twice_max = (double)(2.0f * larger);
    tether_quantize_multiplier((double)x->scale / twice_max, &words[0], &words[1]);
    tether_quantize_multiplier((double)x2->scale / twice_max, &words[2], &words[3]);
    tether_quantize_multiplier(twice_max / (double)((float)(1 << 20) * y->scale), &words[4],
                               &words[5]);
    if (op->type == TETHER_OP_SUB) words[2] = -words[2];
    return;
  }
  if (op->type == TETHER_OP_QUANTIZE) {  /* int8 -> int8: TFLite Requantize */
    const tether_tensor* y = tether_output(model, op, 0);
    tether_quantize_multiplier((double)x->scale / (double)y->scale, &words[0], &words[1]);
    return;
  }
  const tether_tensor* w = tether_input(model, op, 1);
  const tether_tensor* y = tether_output(model, op, 0);
  const size_t channels = q8_channels(model, op);
  for (size_t c = 0; c < channels; c++) {
    const double real = (double)x->scale * (double)tether_quant_scale(w, (uint32_t)c) /
                        (double)y->scale;
    tether_quantize_multiplier(real, &words[c], &words[channels + c]);
  }
}

static void q8_flip(const int8_t* src, size_t n, int8_t* dst);

/* Copies im2col rows [m0, m0 + rows) of the output positions (n, oh, ow) into a, rows
 * `row_bytes` apart (K rounded up to the kernel's K-step, the extra bytes zero: their weights
 * are zero), each byte XORed with `flip` (0x80 for kernels that read u8, else 0); taps in the
 * padding hold z_x (flipped alike), which the packed bias cancels. */
static void q8_im2col(const tether_conv_geometry* g, const int8_t* x, int8_t x_zero,
                      uint8_t flip, size_t m0, size_t rows, size_t row_bytes, int8_t* a) {
  const size_t ic = g->in_c;
  const size_t k = g->kernel_h * g->kernel_w * ic;
  const int8_t fill = (int8_t)((uint8_t)x_zero ^ flip);
  /* The output position of row m0, then stepped along (no divisions per row). */
  size_t ow = m0 % g->out_w, oh = (m0 / g->out_w) % g->out_h, n = m0 / (g->out_w * g->out_h);
  for (size_t r = 0; r < rows; r++) {
    const uint8_t* x_n = (const uint8_t*)x + n * g->in_h * g->in_w * ic;
    const ptrdiff_t ih0 = (ptrdiff_t)oh * g->stride_h - g->pad_top;
    const ptrdiff_t iw0 = (ptrdiff_t)ow * g->stride_w - g->pad_left;
    for (size_t kh = 0; kh < g->kernel_h; kh++) {
      const ptrdiff_t ih = ih0 + (ptrdiff_t)kh * g->dilation_h;
      const int row_inside = ih >= 0 && ih < (ptrdiff_t)g->in_h;
      const uint8_t* x_row = x_n + (row_inside ? (size_t)ih * g->in_w * ic : 0);
      if (row_inside && g->dilation_w == 1 && iw0 >= 0 &&
          iw0 + (ptrdiff_t)g->kernel_w <= (ptrdiff_t)g->in_w) {  /* one contiguous run */
        const uint8_t* src = x_row + (size_t)iw0 * ic;
        const size_t run = g->kernel_w * ic;
        const uint64_t flip8 = (uint64_t)flip * 0x0101010101010101ull;
        size_t i = 0;
        for (; i + 8 <= run; i += 8) {  /* 8 bytes at a time, never past the run */
          uint64_t v;
          memcpy(&v, src + i, 8);
          v ^= flip8;
          memcpy(a + i, &v, 8);
        }
        for (; i < run; i++) a[i] = (int8_t)(src[i] ^ flip);
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

/* A as the u8 bytes x ^ 0x80 that XOR kernels read. */
static void q8_flip(const int8_t* src, size_t n, int8_t* dst) {
  const uint8_t* s = (const uint8_t*)src;
  uint8_t* d = (uint8_t*)dst;
  for (size_t i = 0; i < n; i++) d[i] = (uint8_t)(s[i] ^ 0x80u);
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

typedef struct q8_dw_job {
  const tether_conv_geometry* g;
  tether_qs8_dwconv_ukernel_fn fn;
  const int8_t* x;
  const int32_t* w;
  int8_t* y;
  const tether_qs8_params* params;
  size_t rows;  /* output rows per task */
} q8_dw_job;

static void q8_dw_task(void* context, size_t task) {
  const q8_dw_job* j = (const q8_dw_job*)context;
  const size_t begin = task * j->rows;
  const size_t end = begin + j->rows < j->g->out_h ? begin + j->rows : j->g->out_h;
  j->fn(j->g, begin, end, j->x, j->w, j->y, j->params);
}

void tether_q8_conv_eval(const struct tether_model* model, const tether_node* op,
                         void* const* data, void* scratch, struct tether_pool* pool) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* w = tether_input(model, op, 1);
  const tether_tensor* y = tether_output(model, op, 0);
  const int has_bias = op->input_count > 2 && op->inputs[2] != TETHER_NO_TENSOR;
  const size_t channels = q8_channels(model, op);
  const int32_t* words = (const int32_t*)(const void*)op->packed;
  q8_params qp = {words, words + channels, x->zero_point, y->zero_point, -128, 127};
  tether_q8_activation_range(op->activation, y->scale, y->zero_point, &qp.lo, &qp.hi);
  const tether_qs8_params kp = {x->zero_point, y->zero_point, qp.lo, qp.hi};
  const tether_kernels* kt = model->kernels;
  const int8_t* xd = (const int8_t*)data[op->inputs[0]];
  const int8_t* wd = (const int8_t*)data[op->inputs[1]];
  const int32_t* bd = has_bias ? (const int32_t*)data[op->inputs[2]] : NULL;
  int8_t* yd = (int8_t*)data[op->outputs[0]];
  if (op->type == TETHER_OP_FULLY_CONNECTED) {
    const size_t k = (size_t)w->shape[1];
    if (op->quantized == Q8_GEMM) {
      const int8_t* a = xd;
      if (op->scratch_bytes != 0) {  /* XOR kernel, rows too long for the driver's block */
        q8_flip(xd, x->elements, (int8_t*)scratch);
        a = (const int8_t*)scratch;
      }
      tether_qs8_gemm_parallel(pool, kt, x->elements / k, channels, k, a, k,
                               op->scratch_bytes != 0, op->packed, yd, channels, &kp);
    } else {
      qs8_fc_ukernel__scalar(x->elements / k, k, channels, xd, wd, bd, yd, &qp);
    }
    return;
  }
  const tether_op_params* p = &op->params;
  const tether_conv_geometry g = tether_window_geometry(model, op);
  if (op->quantized == Q8_GEMM) {
    const size_t m = g.batch * g.out_h * g.out_w;
    const size_t k = g.kernel_h * g.kernel_w * g.in_c;
    if (q8_pointwise(w, p)) {
      const int8_t* a = xd;
      if (op->scratch_bytes != 0) {  /* XOR kernel, rows too long for the driver's block */
        q8_flip(xd, x->elements, (int8_t*)scratch);
        a = (const int8_t*)scratch;
      }
      tether_qs8_gemm_parallel(pool, kt, m, g.out_c, k, a, k, op->scratch_bytes != 0,
                               op->packed, yd, g.out_c, &kp);
      return;
    }
    /* Rows of K rounded up to the K-step: same packed groups, no tail in the kernel. */
    const size_t kpad = (k + kt->qs8_gemm_kr - 1) / kt->qs8_gemm_kr * kt->qs8_gemm_kr;
    const size_t block = op->scratch_bytes / kpad;
    q8_im2col_job j = {&g, kt, xd, (int8_t)x->zero_point, (uint8_t)(kt->qs8_gemm_xor ? 0x80 : 0),
                       0, 0, 0, kpad, (int8_t*)scratch, op->packed, yd, &kp};
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
  if (op->quantized == Q8_DWCONV) {
    q8_dw_job j = {&g, kt->qs8_dwconv, xd, (const int32_t*)(const void*)op->packed, yd, &kp, 0};
    /* Output rows split into about 4 tasks per thread; rows are independent. */
    const size_t threads = tether_pool_threads(pool);
    const size_t tasks_wanted = 4 * threads;
    j.rows = threads == 1 ? g.out_h : (g.out_h + tasks_wanted - 1) / tasks_wanted;
    tether_parallelize(pool, q8_dw_task, &j, (g.out_h + j.rows - 1) / j.rows);
    return;
  }
  if (op->type == TETHER_OP_DEPTHWISE_CONV_2D) {
    qs8_dwconv2d_ukernel__scalar(&g, xd, wd, bd, yd, &qp);
  } else {
    qs8_conv2d_ukernel__scalar(&g, xd, wd, bd, yd, &qp);
  }
}

/* ---- QUANTIZE / DEQUANTIZE ---------------------------------------------------------------- */

tether_status tether_quantize_prepare(const struct tether_model* model, uint32_t op_index,
                                      tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  tether_status status = tether_q8_need_per_tensor(model, op_index, y, "output 0");
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (x->dtype == TETHER_DTYPE_INT8) {
    status = tether_q8_need_per_tensor(model, op_index, x, "input 0");
    if (status != TETHER_STATUS_SUCCESS) return status;
    op->quantized = 1;
    op->packed_floats = 2;  /* requantize: multiplier, shift */
  } else if (x->dtype != TETHER_DTYPE_FLOAT32) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "input 0 (tensor '%s') must be float32 or int8", x->name);
  }
  return tether_check_shape(model, op_index, y, "output 0", x->ndim, x->shape);
}

void tether_quantize_eval(const struct tether_model* model, const tether_node* op,
                          void* const* data, void* scratch, struct tether_pool* pool) {
  (void)scratch;
  (void)pool;
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  int8_t* yd = (int8_t*)data[op->outputs[0]];
  if (op->quantized) {  /* TFLite Requantize */
    const int32_t* words = (const int32_t*)(const void*)op->packed;
    const int8_t* xd = (const int8_t*)data[op->inputs[0]];
    for (size_t i = 0; i < x->elements; i++) {
      int32_t v = tether_multiply_by_quantized_multiplier((int32_t)xd[i] - x->zero_point,
                                                          words[0], words[1]) +
                  y->zero_point;
      yd[i] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
    }
    return;
  }
  /* TFLite AffineQuantize: round(x / s) + z in float, clamped (the model's vcvt kernel). */
  model->kernels->qs8_quantize(x->elements, (const float*)data[op->inputs[0]], yd, y->scale,
                               y->zero_point);
}

tether_status tether_dequantize_prepare(const struct tether_model* model, uint32_t op_index,
                                        tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  tether_status status = tether_q8_need_per_tensor(model, op_index, x, "input 0");
  if (status == TETHER_STATUS_SUCCESS) status = tether_check_f32(model, op_index, y, "output 0");
  if (status != TETHER_STATUS_SUCCESS) return status;
  return tether_check_shape(model, op_index, y, "output 0", x->ndim, x->shape);
}

void tether_dequantize_eval(const struct tether_model* model, const tether_node* op,
                            void* const* data, void* scratch, struct tether_pool* pool) {
  (void)scratch;
  (void)pool;
  const tether_tensor* x = tether_input(model, op, 0);
  const int8_t* xd = (const int8_t*)data[op->inputs[0]];
  float* yd = (float*)data[op->outputs[0]];
  const double scale = (double)x->scale;
  for (size_t i = 0; i < x->elements; i++) {
    yd[i] = (float)(scale * (double)((int32_t)xd[i] - x->zero_point));
  }
}

/* ---- ADD ------------------------------------------------------------------------------------ */

tether_status tether_q8_add_prepare(const struct tether_model* model, uint32_t op_index,
                                    tether_node* op) {
  const tether_tensor* a = tether_input(model, op, 0);
  const tether_tensor* b = tether_input(model, op, 1);
  const tether_tensor* y = tether_output(model, op, 0);
  tether_status status = tether_q8_need_per_tensor(model, op_index, a, "input 0");
  if (status == TETHER_STATUS_SUCCESS) status = tether_q8_need_per_tensor(model, op_index, b, "input 1");
  if (status == TETHER_STATUS_SUCCESS) status = tether_q8_need_per_tensor(model, op_index, y, "output 0");
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (op->type != TETHER_OP_ADD && op->type != TETHER_OP_SUB && op->type != TETHER_OP_MUL) {
    return tether_op_error(model, op_index, TETHER_STATUS_UNSUPPORTED_OP,
                           "int8 %s is not implemented yet (int8 ADD, SUB and MUL are)",
                           tether_op_type_name(op->type));
  }
  int32_t lo, hi;
  if (!tether_q8_activation_range(op->activation, y->scale, y->zero_point, &lo, &hi)) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "fused activation %u is not supported on int8 outputs",
                           (unsigned)op->activation);
  }
  op->quantized = 1;
  op->fused_activation = 1;
  /* words: ADD/SUB: input 1, input 2 and output multipliers and shifts; MUL: one pair. */
  op->packed_floats = op->type == TETHER_OP_MUL ? 2 : 6;
  return TETHER_STATUS_SUCCESS;
}

/*
 * ADD/SUB: y = clamp(z_y + R_out(R_1((a - z_a) << 20) ± R_2((b - z_b) << 20))), each R a
 * MultiplyByQuantizedMultiplier; `a_index`/`b_index` give the broadcast element of each input.
 */
void tether_q8_add_elements(const tether_node* op, const tether_tensor* a, const tether_tensor* b,
                            const tether_tensor* y, const int8_t* ad, const int8_t* bd,
                            size_t count, const size_t* a_index, const size_t* b_index,
                            int8_t* yd) {
  const int32_t* w = (const int32_t*)(const void*)op->packed;
  int32_t lo = -128, hi = 127;
  tether_q8_activation_range(op->activation, y->scale, y->zero_point, &lo, &hi);
  if (op->type == TETHER_OP_MUL) {  /* y = clamp(z_y + MBQM((a - z_a) * (b - z_b), M, shift)) */
    for (size_t i = 0; i < count; i++) {
      const int32_t va = (int32_t)ad[a_index != NULL ? a_index[i] : i] - a->zero_point;
      const int32_t vb = (int32_t)bd[b_index != NULL ? b_index[i] : i] - b->zero_point;
      int32_t v = tether_multiply_by_quantized_multiplier(va * vb, w[0], w[1]) + y->zero_point;
      v = v < lo ? lo : v > hi ? hi : v;
      yd[i] = (int8_t)v;
    }
    return;
  }
  if (a_index == NULL && b_index == NULL) {  /* same shapes: the SIMD kernel of this CPU */
    const tether_qs8_add_params kp = {
        a->zero_point, b->zero_point, y->zero_point, lo, hi,
        w[0], w[1] > 0 ? w[1] : 0, w[1] > 0 ? 0 : -w[1],
        w[2], w[3] > 0 ? w[3] : 0, w[3] > 0 ? 0 : -w[3],
        w[4], w[5] > 0 ? w[5] : 0, w[5] > 0 ? 0 : -w[5]};
    tether_kernels_current()->qs8_vadd(count, ad, bd, yd, &kp);
    return;
  }
  for (size_t i = 0; i < count; i++) {
    const int32_t va = ((int32_t)ad[a_index != NULL ? a_index[i] : i] - a->zero_point) * (1 << 20);
    const int32_t vb = ((int32_t)bd[b_index != NULL ? b_index[i] : i] - b->zero_point) * (1 << 20);
    const int32_t sum = tether_multiply_by_quantized_multiplier(va, w[0], w[1]) +
                        tether_multiply_by_quantized_multiplier(vb, w[2], w[3]);
    int32_t v = tether_multiply_by_quantized_multiplier(sum, w[4], w[5]) + y->zero_point;
    v = v < lo ? lo : v > hi ? hi : v;
    yd[i] = (int8_t)v;
  }
}
