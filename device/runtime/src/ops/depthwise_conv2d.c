/*
 * depthwise_conv2d.c — DEPTHWISE_CONV_2D: NHWC input, weights [1, KH, KW, C*M], optional
 * bias [C*M], any strides, dilations, explicit pads and depth multiplier M.
 * With M = 1 the model kernels' dwconv micro-kernel runs (weights used in place, bias and
 * RELU/RELU6/RELU_N1_TO_1 fused); M > 1 runs the reference kernel (reference/conv.c).
 * int8 (input 0 int8): qs8_weights.c's prepare and packing, then the model's qs8 dwconv
 * kernel (M = 1) or the int8 reference kernel.
 */
#include <stddef.h>
#include <string.h>

#include "ops/ops.h"

typedef struct dw_job {
  const tether_conv_geometry* g;
  tether_f32_dwconv_ukernel_fn fn;
  tether_f32_minmax mm;
  const float* x;
  const float* w;
  const float* bias;
  float* y;
  size_t rows;  /* output rows per task */
} dw_job;

static void dw_task(void* context, size_t task) {
  const dw_job* j = (const dw_job*)context;
  const size_t begin = task * j->rows;
  const size_t end = begin + j->rows < j->g->out_h ? begin + j->rows : j->g->out_h;
  j->fn(j->g, begin, end, j->x, j->w, j->bias, j->y, &j->mm);
}

/* int8, depth multiplier 1: inputs up to this many bytes once padded are copied into a
 * scratch block with z_x in the padding, so that every window lies inside it and the kernel
 * runs only its fast interior path (on small maps most outputs touch the padding). A tap in
 * the padding then adds (z_x - z_x) * w = 0, as when it is skipped: the same integers. */
#define Q8_DW_PAD_COPY_BYTES (64 * 1024)

/* The padded input's rows and columns: what the windows of all outputs span. */
static void q8_dw_padded_extent(const tether_conv_geometry* g, size_t* rows, size_t* cols) {
  *rows = (g->out_h - 1) * (size_t)g->stride_h + (g->kernel_h - 1) * (size_t)g->dilation_h + 1;
  *cols = (g->out_w - 1) * (size_t)g->stride_w + (g->kernel_w - 1) * (size_t)g->dilation_w + 1;
}

static tether_status depthwise_conv2d_prepare(const struct tether_model* model,
                                              uint32_t op_index, tether_node* op) {
  if (tether_input(model, op, 0)->dtype == TETHER_DTYPE_INT8) {
    const tether_status status =
        tether_q8_weights_prepare(model, op_index, op, TETHER_Q8_DEPTHWISE);
    if (status != TETHER_STATUS_SUCCESS || op->quantized != TETHER_Q8_DWCONV) return status;
    const tether_op_params* p = &op->params;
    if (p->pad_top > 0 || p->pad_left > 0 || p->pad_bottom > 0 || p->pad_right > 0) {
      const tether_conv_geometry g = tether_window_geometry(model, op);
      size_t rows, cols;
      q8_dw_padded_extent(&g, &rows, &cols);
      const uint64_t bytes = (uint64_t)g.batch * rows * cols * g.in_c;
      if (bytes <= Q8_DW_PAD_COPY_BYTES) op->scratch_bytes = (size_t)bytes;
    }
    return TETHER_STATUS_SUCCESS;
  }
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* w = tether_input(model, op, 1);
  const tether_tensor* b = op->input_count > 2 ? tether_input(model, op, 2) : NULL;
  const tether_tensor* y = tether_output(model, op, 0);
  const tether_op_params* p = &op->params;
  tether_status status = tether_check_f32(model, op_index, x, "input 0");
  if (status == TETHER_STATUS_SUCCESS) status = tether_check_f32(model, op_index, w, "input 1");
  if (status != TETHER_STATUS_SUCCESS) return status;
  const int32_t m = p->depth_multiplier;
  if (x->ndim != 4 || w->ndim != 4 || m < 1 || w->shape[0] != 1 ||
      (int64_t)w->shape[3] != (int64_t)x->shape[3] * m) {
    char xs[96], ws[96];
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "needs input 0 [N,H,W,C] and input 1 [1,KH,KW,C*M] with "
                           "depth_multiplier M=%d, got %s and %s",
                           m, tether_shape_string(x, xs, sizeof(xs)),
                           tether_shape_string(w, ws, sizeof(ws)));
  }
  if (b != NULL) {
    status = tether_check_f32(model, op_index, b, "input 2");
    if (status == TETHER_STATUS_SUCCESS) {
      status = tether_check_shape(model, op_index, b, "input 2 (bias)", 1, &w->shape[3]);
    }
    if (status != TETHER_STATUS_SUCCESS) return status;
  }
  status = tether_check_window_output(model, op_index, x, y, w->shape[1], w->shape[2],
                                      p->dilation_h, p->dilation_w, w->shape[3]);
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (m == 1) {
    tether_f32_minmax mm;
    op->fused_activation = (uint8_t)tether_f32_minmax_of(op->activation, &mm);
  }
  return TETHER_STATUS_SUCCESS;
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

static void q8_depthwise_conv2d_eval(const struct tether_model* model, const tether_node* op,
                                     void* const* data, void* scratch,
                                     struct tether_pool* pool) {
  const tether_q8_operands o = tether_q8_weights_operands(model, op, data, TETHER_Q8_DEPTHWISE);
  const tether_kernels* kt = model->kernels;
  tether_conv_geometry g = tether_window_geometry(model, op);
  if (op->quantized == TETHER_Q8_DWCONV) {
    const int8_t* x = o.x_data;
    if (op->scratch_bytes != 0) {  /* small input: padded copy, then no window at an edge */
      size_t rows, cols;
      q8_dw_padded_extent(&g, &rows, &cols);
      const size_t c = g.in_c;
      int8_t* xp = (int8_t*)scratch;
      const int zx = (int)(int8_t)o.x->zero_point;
      /* Input columns [0, count) land at [left, left + count); pads are >= 0 (the reader). */
      const size_t left = (size_t)g.pad_left < cols ? (size_t)g.pad_left : cols;
      const size_t count = g.in_w < cols - left ? g.in_w : cols - left;
      for (size_t n = 0; n < g.batch; n++) {
        for (size_t r = 0; r < rows; r++) {
          int8_t* row = xp + (n * rows + r) * cols * c;
          const ptrdiff_t ih = (ptrdiff_t)r - g.pad_top;
          if (ih < 0 || ih >= (ptrdiff_t)g.in_h) {  /* a padding row */
            memset(row, zx, cols * c);
            continue;
          }
          memset(row, zx, left * c);
          memcpy(row + left * c, o.x_data + ((n * g.in_h + (size_t)ih) * g.in_w) * c, count * c);
          memset(row + (left + count) * c, zx, (cols - left - count) * c);
        }
      }
      x = xp;
      g.in_h = rows;
      g.in_w = cols;
      g.pad_top = g.pad_left = 0;
    }
    q8_dw_job j = {&g, kt->qs8_dwconv, x, (const int32_t*)(const void*)op->packed,
                   o.y_data, &o.kernel, 0};
    /* Output rows split into about 4 tasks per thread; rows are independent. */
    const size_t threads = tether_pool_threads(pool);
    const size_t tasks_wanted = 4 * threads;
    j.rows = threads == 1 ? g.out_h : (g.out_h + tasks_wanted - 1) / tasks_wanted;
    tether_parallelize(pool, q8_dw_task, &j, (g.out_h + j.rows - 1) / j.rows);
    return;
  }
  tether_ref_qs8_dwconv2d(&g, o.x_data, o.w_data, o.bias, o.y_data, &o.ref);
}

static tether_status depthwise_conv2d_pack(const struct tether_model* model,
                                           const tether_node* op, void* packed) {
  return tether_q8_weights_pack(model, op, TETHER_Q8_DEPTHWISE, packed);
}

static void depthwise_conv2d_eval(const struct tether_model* model, const tether_node* op,
                                  void* const* data, void* scratch, struct tether_pool* pool) {
  if (op->quantized) {
    q8_depthwise_conv2d_eval(model, op, data, scratch, pool);
    return;
  }
  (void)scratch;
  const int has_bias = op->input_count > 2 && op->inputs[2] != TETHER_NO_TENSOR;
  const tether_conv_geometry g = tether_window_geometry(model, op);
  if (g.depth_multiplier == 1) {
    dw_job j;
    j.g = &g;
    j.fn = model->kernels->dwconv;
    tether_f32_minmax_of(op->fused_activation ? op->activation : TETHER_ACT_NONE, &j.mm);
    j.x = (const float*)data[op->inputs[0]];
    j.w = (const float*)data[op->inputs[1]];
    j.bias = has_bias ? (const float*)data[op->inputs[2]] : NULL;
    j.y = (float*)data[op->outputs[0]];
    /* Output rows split into about 4 tasks per thread; rows are independent. */
    const size_t tasks_wanted = 4 * tether_pool_threads(pool);
    j.rows = (g.out_h + tasks_wanted - 1) / tasks_wanted;
    if (tether_pool_threads(pool) == 1) j.rows = g.out_h;
    tether_parallelize(pool, dw_task, &j, (g.out_h + j.rows - 1) / j.rows);
    return;
  }
  tether_ref_f32_dwconv2d(&g, (const float*)data[op->inputs[0]],
                                      (const float*)data[op->inputs[1]],
                                      has_bias ? (const float*)data[op->inputs[2]] : NULL,
                                      (float*)data[op->outputs[0]]);
}

TETHER_OP_DEF(DEPTHWISE_CONV_2D) = {2, 3, 2, TETHER_WINDOW_ATTRS | TETHER_ATTR(DEPTH_MULTIPLIER), 0,
                                    depthwise_conv2d_prepare, depthwise_conv2d_pack,
                                    depthwise_conv2d_eval};
