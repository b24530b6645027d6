/*
 * pool.c — MAX_POOL_2D and AVERAGE_POOL_2D over NHWC, any strides and explicit pads.
 *
 * Padded cells never take part in a max; an average divides by the number of real cells
 * in the window, or by KH*KW when count_include_pad is set. Load rejects pads >= kernel, so
 * every window holds at least one real cell.
 */
#include <stddef.h>

#include "../internal.h"


void tether_f32_maxpool_ukernel__scalar(const tether_conv_geometry* g, const float* x, float* y) {
  const size_t c_count = g->in_c;
  for (size_t n = 0; n < g->batch; n++) {
    for (size_t oh = 0; oh < g->out_h; oh++) {
      size_t h0, h1;
      tether_clamp_window((ptrdiff_t)oh * g->stride_h - g->pad_top, g->kernel_h,
                          g->in_h, &h0, &h1);
      for (size_t ow = 0; ow < g->out_w; ow++) {
        size_t w0, w1;
        tether_clamp_window((ptrdiff_t)ow * g->stride_w - g->pad_left, g->kernel_w,
                            g->in_w, &w0, &w1);
        float* yp = y + ((n * g->out_h + oh) * g->out_w + ow) * c_count;
        for (size_t c = 0; c < c_count; c++) {
          float best = x[((n * g->in_h + h0) * g->in_w + w0) * c_count + c];
          for (size_t ih = h0; ih < h1; ih++) {
            for (size_t iw = w0; iw < w1; iw++) {
              const float v = x[((n * g->in_h + ih) * g->in_w + iw) * c_count + c];
              if (v > best) best = v;
            }
          }
          yp[c] = best;
        }
      }
    }
  }
}

void tether_f32_avgpool_ukernel__scalar(const tether_conv_geometry* g, int count_include_pad,
                                        const float* x, float* y) {
  const size_t c_count = g->in_c;
  for (size_t n = 0; n < g->batch; n++) {
    for (size_t oh = 0; oh < g->out_h; oh++) {
      size_t h0, h1;
      tether_clamp_window((ptrdiff_t)oh * g->stride_h - g->pad_top, g->kernel_h,
                          g->in_h, &h0, &h1);
      for (size_t ow = 0; ow < g->out_w; ow++) {
        size_t w0, w1;
        tether_clamp_window((ptrdiff_t)ow * g->stride_w - g->pad_left, g->kernel_w,
                            g->in_w, &w0, &w1);
        const size_t count = count_include_pad ? g->kernel_h * g->kernel_w
                                               : (h1 - h0) * (w1 - w0);
        float* yp = y + ((n * g->out_h + oh) * g->out_w + ow) * c_count;
        for (size_t c = 0; c < c_count; c++) {
          float sum = 0.0f;
          for (size_t ih = h0; ih < h1; ih++) {
            for (size_t iw = w0; iw < w1; iw++) {
              sum += x[((n * g->in_h + ih) * g->in_w + iw) * c_count + c];
            }
          }
          yp[c] = sum / (float)count;
        }
      }
    }
  }
}

tether_status tether_pool_prepare(const struct tether_model* model, uint32_t op_index,
                                  tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  const tether_op_params* p = &op->params;
  tether_status status = x->dtype == TETHER_DTYPE_INT8
                             ? tether_q8_pool_prepare(model, op_index, op)
                             : tether_check_f32(model, op_index, x, "input 0");
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (x->ndim != 4) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "input 0 must be [N,H,W,C], got rank %u", (unsigned)x->ndim);
  }
  if (p->kernel_h < 1 || p->kernel_w < 1) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "attribute kernel is required and must be >= 1, got [%d, %d]",
                           p->kernel_h, p->kernel_w);
  }
  if (p->pad_top >= p->kernel_h || p->pad_bottom >= p->kernel_h ||
      p->pad_left >= p->kernel_w || p->pad_right >= p->kernel_w) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "pads [%d, %d, %d, %d] must be smaller than kernel [%d, %d]",
                           p->pad_top, p->pad_left, p->pad_bottom, p->pad_right, p->kernel_h,
                           p->kernel_w);
  }
  if (p->count_include_pad != 0 && p->count_include_pad != 1) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "count_include_pad must be 0 or 1, got %d", p->count_include_pad);
  }
  return tether_check_window_output(model, op_index, x, y, p->kernel_h, p->kernel_w, 1, 1,
                                    x->shape[3]);
}

void tether_pool_eval(const struct tether_model* model, const tether_node* op, void* const* data,
                      void* scratch, struct tether_pool* pool) {
  (void)pool;
  (void)scratch;
  if (op->quantized) {
    tether_q8_pool_eval(model, op, data);
    return;
  }
  const tether_op_params* p = &op->params;
  const tether_conv_geometry g = tether_window_geometry(model, op);
  const float* xp = (const float*)data[op->inputs[0]];
  float* yp = (float*)data[op->outputs[0]];
  if (op->type == TETHER_OP_MAX_POOL_2D) {
    tether_f32_maxpool_ukernel__scalar(&g, xp, yp);
  } else {
    tether_f32_avgpool_ukernel__scalar(&g, p->count_include_pad, xp, yp);
  }
}

tether_conv_geometry tether_window_geometry(const struct tether_model* model,
                                            const tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  const tether_op_params* p = &op->params;
  const int pool = op->type == TETHER_OP_MAX_POOL_2D || op->type == TETHER_OP_AVERAGE_POOL_2D;
  const tether_tensor* w = pool ? NULL : tether_input(model, op, 1);
  const tether_conv_geometry g = {
      .batch = (size_t)x->shape[0], .in_h = (size_t)x->shape[1], .in_w = (size_t)x->shape[2],
      .in_c = (size_t)x->shape[3], .out_h = (size_t)y->shape[1], .out_w = (size_t)y->shape[2],
      .out_c = (size_t)y->shape[3],
      .kernel_h = pool ? (size_t)p->kernel_h : (size_t)w->shape[1],
      .kernel_w = pool ? (size_t)p->kernel_w : (size_t)w->shape[2],
      .groups = op->type == TETHER_OP_CONV_2D ? (size_t)p->groups : 1,
      .depth_multiplier =
          op->type == TETHER_OP_DEPTHWISE_CONV_2D ? (size_t)p->depth_multiplier : 1,
      .stride_h = p->stride_h, .stride_w = p->stride_w,
      .dilation_h = pool ? 1 : p->dilation_h, .dilation_w = pool ? 1 : p->dilation_w,
      .pad_top = p->pad_top, .pad_left = p->pad_left,
  };
  return g;
}
