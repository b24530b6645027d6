/*
 * ops.h — the op layer: one registry row per op (its operands, attributes and hooks), the
 * checks every op's prepare shares (common.c) and what op files share with each other.
 *
 * An op file (one per op family, every dtype) defines a row per op with TETHER_OP_DEF(NAME);
 * registry.c collects the rows, the names and the count from tether.h's TETHER_OP_LIST, so a
 * new op is one list row, one op file and its FORMAT.md row. Includes reference/, compute/,
 * base/ and the micro-kernel header only.
 */
#ifndef TETHER_OPS_H_
#define TETHER_OPS_H_

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"
#include "compute/compute.h"
#include "reference/reference.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the registry (registry.c) ------------------------------------------------------- */

/*
 * prepare checks shapes, dtypes and attributes once at load (reporting through
 * tether_op_error) and chooses the execution path: op->quantized, op->scratch_bytes,
 * op->packed_floats, op->fused_activation. pack writes op->packed_floats floats of packed
 * weights into `packed`, or (packed == NULL, tether_model_memory's dry run) runs the same
 * checks without writing. eval runs the op: `data[t]` is the storage of tensor t.
 */
typedef tether_status (*tether_prepare_fn)(const struct tether_model* model, uint32_t op_index,
                                           tether_node* op);
typedef tether_status (*tether_pack_fn)(const struct tether_model* model, const tether_node* op,
                                        void* packed);
struct tether_pool;
typedef void (*tether_eval_fn)(const struct tether_model* model, const tether_node* op,
                               void* const* data, void* scratch, struct tether_pool* pool);

#define TETHER_NO_OPTIONAL 255u

typedef struct tether_op_def {
  uint8_t min_inputs;
  uint16_t max_inputs;
  uint8_t optional_from;     /* inputs at or after this slot may be absent; TETHER_NO_OPTIONAL */
  uint32_t attrs;            /* TETHER_ATTR_BIT(id) for each attribute the op takes */
  uint32_t required_attrs;   /* those it cannot do without */
  tether_prepare_fn prepare;
  tether_pack_fn pack;       /* NULL: the op packs nothing */
  tether_eval_fn eval;
} tether_op_def;

/* The row of op NAME (an entry of TETHER_OP_LIST), defined in the op's file. */
#define TETHER_OP_DEF(name) const tether_op_def tether_op_def_##name

/* The attribute bit of TETHER_ATTR_<name>, for registry rows. */
#define TETHER_ATTR(name) TETHER_ATTR_BIT(TETHER_ATTR_##name)
/* Strides, dilations and pads: what every window op takes. */
#define TETHER_WINDOW_ATTRS (TETHER_ATTR(STRIDES) | TETHER_ATTR(DILATIONS) | TETHER_ATTR(PADS))

/* The row of op id `type`, or NULL for an id this engine does not know. */
const tether_op_def* tether_op_def_for(uint32_t type);
/* Static name of an op id ("CONV_2D"), or "?" for an unknown id. */
const char* tether_op_type_name(uint32_t type);

/* Packs the weights of every op with packed_floats > 0 into model->packed (after validation);
 * in a dry run (model->tally->dry_run) counts the block and runs the pack checks only. */
tether_status tether_pack_weights(struct tether_model* model);
/* Eval of one op with caller-chosen storage on the calling thread (tests use it): first the
 * op's run-time check (op->check) if it has one, whose failure skips the eval and is returned. */
tether_status tether_op_eval(const struct tether_model* model, uint32_t op_index,
                             void* const* data, void* scratch);
/* The same with work split over `pool` (NULL = the calling thread); the session's invoke. */
tether_status tether_op_eval_parallel(const struct tether_model* model, uint32_t op_index,
                                      void* const* data, void* scratch,
                                      struct tether_pool* pool);

/* An op's work in multiply-add equivalents (products for convolutions and matrix products,
 * a quarter per element moved for the rest): ops under TETHER_PARALLEL_MIN_WORK run on the
 * calling thread, where waking the pool and sharing its cache lines would cost more than
 * the split saves (a pool round trip is about a microsecond). */
#ifndef TETHER_PARALLEL_MIN_WORK
#define TETHER_PARALLEL_MIN_WORK (1u << 17)
#endif
uint64_t tether_op_work(const struct tether_model* model, const tether_node* op);

/* ---- shared checks and geometry (common.c) --------------------------------------------- */

/* Reports a format error prefixed "op N 'name' (TYPE): " and returns `status`. */
tether_status tether_op_error(const struct tether_model* model, uint32_t op_index,
                              tether_status status, const char* format, ...);

static inline const tether_tensor* tether_input(const struct tether_model* model,
                                                const tether_node* op, uint32_t i) {
  return op->inputs[i] == TETHER_NO_TENSOR ? NULL : &model->tensors[op->inputs[i]];
}
static inline const tether_tensor* tether_output(const struct tether_model* model,
                                                 const tether_node* op, uint32_t i) {
  return &model->tensors[op->outputs[i]];
}
/* Writes "[1, 2, 3]" into buffer (capacity >= 96 is always enough). */
const char* tether_shape_string(const tether_tensor* t, char* buffer, size_t capacity);
/* Checks dtype float32 for `slot` (e.g. "input 0"); reports and returns non-success. */
tether_status tether_check_f32(const struct tether_model* model, uint32_t op_index,
                               const tether_tensor* t, const char* slot);
/* Checks that t has exactly the expected shape; reports names and both shapes. */
tether_status tether_check_shape(const struct tether_model* model, uint32_t op_index,
                                 const tether_tensor* t, const char* slot, uint32_t ndim,
                                 const int32_t* expected);
/* Output size of a window op; returns 0 when the window does not fit. */
int64_t tether_window_output(int64_t in, int64_t pad_begin, int64_t pad_end, int64_t kernel,
                             int64_t stride, int64_t dilation);
/*
 * Checks y = [N, OH, OW, channels] for a window op over x = [N, H, W, C] with the op's
 * strides and pads and the given kernel and dilations (FORMAT.md's output formula).
 */
tether_status tether_check_window_output(const struct tether_model* model, uint32_t op_index,
                                         const tether_tensor* x, const tether_tensor* y,
                                         int32_t kernel_h, int32_t kernel_w, int32_t dilation_h,
                                         int32_t dilation_w, int32_t channels);
/* The window geometry of a convolution (kernel from the weights' shape) or a pool (kernel
 * from its attribute), from its validated tensors and params. */
tether_conv_geometry tether_window_geometry(const struct tether_model* model,
                                            const tether_node* op);

/* Scale / zero point of channel c (any c for per-tensor quantization). */
float tether_quant_scale(const tether_tensor* t, uint32_t c);
int32_t tether_quant_zero_point(const tether_tensor* t, uint32_t c);
/* Checks that `t` (named `slot` in errors) is int8, per tensor, with a finite scale > 0 and a
 * zero point in [-128, 127]. */
tether_status tether_q8_need_per_tensor(const struct tether_model* model, uint32_t op_index,
                                        const tether_tensor* t, const char* slot);
/* zero_point + round(f / scale), the rounded value saturated to +-2^20 first (keeps the int
 * conversion defined for tiny scales and infinite bounds; callers clamp to int8). */
int32_t tether_q8_quantize_value(float f, float scale, int32_t zero_point);
/* Checks that y is quantized exactly like x (ops that move int8 values without arithmetic). */
tether_status tether_q8_need_same_quant(const struct tether_model* model, uint32_t op_index,
                                        const tether_tensor* x, const tether_tensor* y);
/* Checks that the op's fused activation clamps in the quantized domain of y. */
tether_status tether_q8_need_fused_range(const struct tether_model* model, uint32_t op_index,
                                         const tether_node* op, const tether_tensor* y);
/* int8 clamp range of a fused activation; returns 0 for activations int8 cannot fuse. */
int tether_q8_activation_range(uint32_t activation, float scale, int32_t zero_point,
                               int32_t* lo, int32_t* hi);
/* Checks requantization shifts MultiplyByQuantizedMultiplier can apply (x << 30 at most):
 * shifts[i * stride] for i < count. */
tether_status tether_q8_check_shifts(const struct tether_model* model, const tether_node* op,
                                     const int32_t* shifts, size_t count, size_t stride);

/* The [min, max] clamp of a fused activation the GEMM/dwconv epilogues can apply; returns 0
 * for activations they cannot (tanh, sigmoid, hard swish). */
int tether_f32_minmax_of(uint32_t activation, tether_f32_minmax* out);
/* Applies a fused activation in place to n floats (activation.c). */
void tether_f32_activation_apply(float* y, size_t n, uint32_t activation);

/* ---- the int8 weight ops' shared part (qs8_weights.c) ---------------------------------- */

/* Execution paths of an int8 CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED (op->quantized). */
enum {
  TETHER_Q8_REF = 1,     /* the reference kernel over per-channel words */
  TETHER_Q8_GEMM = 2,    /* the model's qs8 GEMM over packed panels */
  TETHER_Q8_DWCONV = 3,  /* the model's qs8 depthwise kernel */
};
/* How the weights of an int8 weight op are laid out. */
typedef enum tether_q8_weights_kind {
  TETHER_Q8_CONV,        /* [OC, KH, KW, C/G], channel axis 0 */
  TETHER_Q8_DEPTHWISE,   /* [1, KH, KW, C*M], channel axis 3 */
  TETHER_Q8_DENSE,       /* [O, K], channel axis 0 */
} tether_q8_weights_kind;
/* 1x1, stride 1, no padding: the NHWC input is the GEMM's A as it stands. */
int tether_q8_pointwise(const tether_tensor* w, const tether_op_params* p);
/* The int8 prepare of a weight op: quantization, shapes, fused activation, path, packed size
 * and scratch. */
tether_status tether_q8_weights_prepare(const struct tether_model* model, uint32_t op_index,
                                        tether_node* op, tether_q8_weights_kind kind);
/* The int8 pack of a weight op (its requantization words, then the kernel's layout). */
tether_status tether_q8_weights_pack(const struct tether_model* model, const tether_node* op,
                                     tether_q8_weights_kind kind, void* packed);
/* What every int8 path of a weight op reads: its tensors and their storage, the channel
 * count, and the requantization for the reference kernels (from the packed words) and for
 * the micro-kernels. */
typedef struct tether_q8_operands {
  const tether_tensor* x;
  const tether_tensor* w;
  const tether_tensor* y;
  size_t channels;
  tether_qs8_ref_params ref;
  tether_qs8_params kernel;
  const int8_t* x_data;
  const int8_t* w_data;
  const int32_t* bias;   /* NULL = none */
  int8_t* y_data;
} tether_q8_operands;
tether_q8_operands tether_q8_weights_operands(const struct tether_model* model,
                                              const tether_node* op, void* const* data,
                                              tether_q8_weights_kind kind);
/* A as the u8 bytes x ^ 0x80 that XOR kernels read. */
void tether_q8_flip(const int8_t* src, size_t n, int8_t* dst);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* TETHER_OPS_H_ */
