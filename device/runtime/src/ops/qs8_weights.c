/*
 * qs8_weights.c — what the int8 weight ops (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED)
 * share: the prepare that checks their quantization and chooses the path, and the packing of
 * their requantization words and weights (converter/FORMAT.md, "Integer (int8) execution").
 * Each op's file (conv2d.c, depthwise_conv2d.c, fully_connected.c) runs its own paths.
 *
 * Arithmetic is TensorFlow Lite's int8 reference kernels', bit for bit:
 *   acc = bias[c] + sum w * (x - z_x)     (int32; taps in the padding contribute nothing)
 *   y   = clamp(z_y + MultiplyByQuantizedMultiplier(acc, M_c, shift_c), lo, hi)
 * with M_c, shift_c = QuantizeMultiplier((double)s_x * s_w[c] / s_y) computed at load into
 * the model's packed block (words [M_0..M_{C-1}, shift_0..shift_{C-1}]), and [lo, hi] the
 * fused activation's range in the quantized domain.
 *
 * Execution paths (op->quantized, chosen at prepare):
 *   TETHER_Q8_GEMM    dense layers and ungrouped convolutions: the model's qs8 GEMM
 *                     micro-kernel over packed panels (ukernels.h); 1x1 stride-1 unpadded
 *                     convolutions read the NHWC input as A, other shapes go through im2col
 *                     blocks in the scratch (taps in the padding filled with z_x, so they
 *                     contribute nothing).
 *   TETHER_Q8_DWCONV  depthwise convolutions with depth multiplier 1: the model's qs8 dwconv
 *                     kernel.
 *   TETHER_Q8_REF     everything else (grouped convolution, depth multiplier > 1): the
 *                     reference kernels (reference/conv.c) over the words.
 * Work is split over the pool by output rows / column panels; integer sums make the result
 * identical for any split.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ops/ops.h"

/* 1x1, stride 1, no padding: the NHWC input is the GEMM's A as it stands. */
int tether_q8_pointwise(const tether_tensor* w, const tether_op_params* p) {
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

tether_status tether_q8_weights_prepare(const struct tether_model* model, uint32_t op_index,
                                        tether_node* op, tether_q8_weights_kind kind) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* w = tether_input(model, op, 1);
  const tether_tensor* b = op->input_count > 2 ? tether_input(model, op, 2) : NULL;
  const tether_tensor* y = tether_output(model, op, 0);
  const tether_op_params* p = &op->params;
  tether_status status = tether_q8_need_per_tensor(model, op_index, x, "input 0");
  if (status == TETHER_STATUS_SUCCESS) {
    status = tether_q8_need_per_tensor(model, op_index, y, "output 0");
  }
  if (status != TETHER_STATUS_SUCCESS) return status;
  const int fc = kind == TETHER_Q8_DENSE;
  const int dw = kind == TETHER_Q8_DEPTHWISE;
  const uint32_t channel_axis = dw ? 3 : 0;
  if (w->dtype != TETHER_DTYPE_INT8 || !(w->flags & TETHER_TENSOR_CONSTANT) ||
      w->quant == TETHER_QUANT_NONE ||
      (w->quant == TETHER_QUANT_PER_CHANNEL && w->quant_axis != channel_axis) ||
      w->ndim != (fc ? 2 : 4)) {
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
    op->quantized = TETHER_Q8_GEMM;
    bytes = tether_qs8_gemm_packed_bytes(kt->qs8_gemm_nr, kt->qs8_gemm_kr, (size_t)channels, k);
    if (!fc && !tether_q8_pointwise(w, p)) {
      const size_t kp = (k + kt->qs8_gemm_kr - 1) / kt->qs8_gemm_kr * kt->qs8_gemm_kr;
      op->scratch_bytes = im2col_rows(kt, kp) * kp;
    } else if (kt->qs8_gemm_xor && kt->qs8_gemm_mr * k > TETHER_QS8_A_BLOCK_BYTES) {
      op->scratch_bytes = x->elements;  /* rows too long to convert on the stack: all of A */
    }
  } else if (dw && p->depth_multiplier == 1) {
    op->quantized = TETHER_Q8_DWCONV;
    bytes = tether_qs8_dwconv_packed_bytes((size_t)channels, taps);
  } else {
    op->quantized = TETHER_Q8_REF;
    bytes = 8 * (size_t)channels;  /* multipliers, shifts */
  }
  op->packed_floats = (bytes + 3) / 4;  /* in 4-byte words */
  return TETHER_STATUS_SUCCESS;
}

/* Per channel c: M_c, shift_c = QuantizeMultiplier(s_x * s_w[c] / s_y), as words
 * [M_0..M_{C-1}, shift_0..shift_{C-1}]. */
static void q8_pack_words(const struct tether_model* model, const tether_node* op, size_t channels,
                          int32_t* words) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* w = tether_input(model, op, 1);
  const tether_tensor* y = tether_output(model, op, 0);
  for (size_t c = 0; c < channels; c++) {
    const double real = (double)x->scale * (double)tether_quant_scale(w, (uint32_t)c) /
                        (double)y->scale;
    tether_quantize_multiplier(real, &words[c], &words[channels + c]);
  }
}

static size_t q8_channels(const struct tether_model* model, const tether_node* op,
                          tether_q8_weights_kind kind) {
  const tether_tensor* w = tether_input(model, op, 1);
  return (size_t)w->shape[kind == TETHER_Q8_DEPTHWISE ? 3 : 0];
}

/* The GEMM or dwconv path: the per-channel words go through a temporary block (one of the
 * loader's requests), then into the kernel's packed layout (packed == NULL: the checks
 * alone). */
static tether_status q8_pack_kernel(const struct tether_model* model, const tether_node* op,
                                    size_t channels, void* packed) {
  const size_t words_bytes = tether_round_block(8 * channels);
  int32_t* words = (int32_t*)tether_model_allocate(model, words_bytes, 64);
  if (words == NULL) {
    return tether_op_error(model, (uint32_t)(op - model->ops), TETHER_STATUS_OUT_OF_MEMORY,
                           "cannot allocate %zu bytes to pack int8 weights", words_bytes);
  }
  q8_pack_words(model, op, channels, words);
  tether_status status = tether_q8_check_shifts(model, op, words + channels, channels, 1);
  if (status == TETHER_STATUS_SUCCESS && packed != NULL) {
    const tether_tensor* x = tether_input(model, op, 0);
    const tether_tensor* w = tether_input(model, op, 1);
    const tether_tensor* b = op->input_count > 2 ? tether_input(model, op, 2) : NULL;
    const int8_t* wd = (const int8_t*)w->data;
    const int32_t* bd = b != NULL ? (const int32_t*)b->data : NULL;
    const tether_kernels* kt = model->kernels;
    if (op->quantized == TETHER_Q8_DWCONV) {
      tether_qs8_dwconv_pack(channels, (size_t)w->shape[1] * (size_t)w->shape[2], wd, bd,
                             words, words + channels, x->zero_point, (int32_t*)packed);
    } else {
      tether_qs8_gemm_pack(kt->qs8_gemm_nr, kt->qs8_gemm_kr, kt->qs8_gemm_xor, channels,
                           w->elements / channels, wd, bd, words, words + channels,
                           x->zero_point, packed);
    }
  }
  tether_model_deallocate(model, words, words_bytes);
  return status;
}

tether_status tether_q8_weights_pack(const struct tether_model* model, const tether_node* op,
                                     tether_q8_weights_kind kind, void* packed) {
  const size_t channels = q8_channels(model, op, kind);
  if (op->quantized != TETHER_Q8_REF) return q8_pack_kernel(model, op, channels, packed);
  /* The reference path's packed part is the words alone. A dry run computes them into a
   * temporary of its own: not one of the loader's requests, so not counted. */
  int32_t* words = (int32_t*)packed;
  const tether_allocator* a = &model->allocator;
  const size_t bytes = op->packed_floats * sizeof(int32_t);
  if (packed == NULL) {
    words = (int32_t*)a->allocate(a->context, bytes, 64);
    if (words == NULL) {
      return tether_op_error(model, (uint32_t)(op - model->ops), TETHER_STATUS_OUT_OF_MEMORY,
                             "cannot allocate %zu bytes to check int8 scales", bytes);
    }
  }
  q8_pack_words(model, op, channels, words);
  const tether_status status = tether_q8_check_shifts(model, op, words + channels, channels, 1);
  if (packed == NULL) a->deallocate(a->context, words);
  return status;
}

tether_q8_operands tether_q8_weights_operands(const struct tether_model* model,
                                              const tether_node* op, void* const* data,
                                              tether_q8_weights_kind kind) {
  tether_q8_operands o;
  o.x = tether_input(model, op, 0);
  o.w = tether_input(model, op, 1);
  o.y = tether_output(model, op, 0);
  o.channels = q8_channels(model, op, kind);
  const int32_t* words = (const int32_t*)(const void*)op->packed;
  /* TFLite's FULLY_CONNECTED rounds x * M once, its convolutions twice. */
  const int32_t single = kind == TETHER_Q8_DENSE;
  const tether_qs8_ref_params ref = {words, words + o.channels, o.x->zero_point,
                                     o.y->zero_point, -128, 127, single};
  o.ref = ref;
  tether_q8_activation_range(op->activation, o.y->scale, o.y->zero_point, &o.ref.lo, &o.ref.hi);
  const tether_qs8_params kernel = {o.x->zero_point, o.y->zero_point, o.ref.lo, o.ref.hi,
                                    single};
  o.kernel = kernel;
  const int has_bias = op->input_count > 2 && op->inputs[2] != TETHER_NO_TENSOR;
  o.x_data = (const int8_t*)data[op->inputs[0]];
  o.w_data = (const int8_t*)data[op->inputs[1]];
  o.bias = has_bias ? (const int32_t*)data[op->inputs[2]] : NULL;
  o.y_data = (int8_t*)data[op->outputs[0]];
  return o;
}

/* A as the u8 bytes x ^ 0x80 that XOR kernels read. */
void tether_q8_flip(const int8_t* src, size_t n, int8_t* dst) {
  const uint8_t* s = (const uint8_t*)src;
  uint8_t* d = (uint8_t*)dst;
  for (size_t i = 0; i < n; i++) d[i] = (uint8_t)(s[i] ^ 0x80u);
}
