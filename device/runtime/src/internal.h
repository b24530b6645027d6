/*
 * internal.h — private structures shared by the loader, the session and the op files.
 *
 * Not part of the public API: nothing outside device/runtime/src (and the C tests) may
 * include it. A validated model is decoded once into these structs; the kernels then run
 * blind (every shape and index was checked at load time).
 */
#ifndef TETHER_INTERNAL_H_
#define TETHER_INTERNAL_H_

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "tether/tether.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifdef TETHER_DEBUG
#define TETHER_DCHECK(cond) ((cond) ? (void)0 : __builtin_trap())
#else
#define TETHER_DCHECK(cond) ((void)0)
#endif

/* Largest element count of one tensor (keeps every index computation far from overflow). */
#define TETHER_MAX_ELEMENTS ((size_t)INT32_MAX)
/* Marks an absent optional input in tether_node.inputs (the file's 0xFFFFFFFF). */
#define TETHER_NO_TENSOR UINT32_MAX
/* Most inputs an op may have (CONCATENATION is the only variadic op). */
#define TETHER_MAX_OP_INPUTS 65535u

#define TETHER_TENSOR_CONSTANT 0x01u
#define TETHER_TENSOR_SPARSE 0x02u   /* constant stored bitmask-encoded (FORMAT.md) */

/* ---- errors --------------------------------------------------------------------------- */

/*
 * Formats into the thread's last-error buffer and returns `status`. A small printf subset
 * without stdio: %s %c %d %u %x %zu %lld %llu %% (and %g-free: floats are not formatted).
 */
tether_status tether_set_error(tether_status status, const char* format, ...);
tether_status tether_set_error_v(tether_status status, const char* format, va_list args);
/* Clears the last error (called on success paths of the public entry points). */
void tether_clear_error(void);
/* Formats into `buffer` (always NUL-terminated when capacity > 0); returns chars written. */
size_t tether_format_v(char* buffer, size_t capacity, const char* format, va_list args);
size_t tether_format(char* buffer, size_t capacity, const char* format, ...);
/* Prepends "prefix: " to the current last error (used by the hosted file loader). */
void tether_prefix_error(const char* prefix);

/* ---- model ---------------------------------------------------------------------------- */

typedef struct tether_tensor {
  const char* name;
  uint8_t dtype;                     /* tether_dtype */
  uint8_t ndim;
  uint8_t quant;                     /* 0 none, 1 per-tensor, 2 per-channel */
  uint8_t flags;                     /* TETHER_TENSOR_CONSTANT */
  int32_t shape[TETHER_MAX_DIMS];    /* first ndim used, rest 1 */
  size_t elements;
  size_t bytes;
  const void* data;                  /* constants: in place in the model buffer, or (sparse
                                        ones) decoded into tether_model.unpacked */
  const uint8_t* sparse;             /* sparse constants: the encoded blob in the buffer */
  float scale;                       /* quant == 1: the scale, else 0 */
  int32_t zero_point;                /* quant == 1: the zero point, else 0 */
  uint32_t quant_axis;               /* quant == 2: the channel axis */
  uint32_t quant_count;              /* quant != 0: scales (1 or shape[quant_axis]) */
  const uint8_t* quant_params;       /* quant != 0: float scale[count], int32 zp[count] in
                                        the model buffer (read with memcpy) */
  int32_t producer;                  /* index of the op that writes it; -1 = none */
  /* Memory plan (non-constant tensors that some op or the graph I/O uses). */
  int32_t first_use;                 /* op index; -1 = not planned */
  int32_t last_use;
  size_t arena_offset;
} tether_tensor;

/* Decoded attributes; every op reads only the fields its table row lists. */
typedef struct tether_op_params {
  int32_t stride_h, stride_w;
  int32_t dilation_h, dilation_w;
  int32_t pad_top, pad_left, pad_bottom, pad_right;
  int32_t groups;
  int32_t depth_multiplier;
  int32_t kernel_h, kernel_w;        /* pools; 0 = not given */
  int32_t count_include_pad;
  int32_t axes[TETHER_MAX_DIMS];     /* MEAN */
  int32_t axes_count;                /* 0 = not given */
  int32_t keepdims;
  int32_t axis;                      /* CONCATENATION; -1 = not given */
  int32_t paddings[2 * TETHER_MAX_DIMS];
  int32_t paddings_count;            /* 0 = not given */
  float value;                       /* PAD */
  float beta;                        /* SOFTMAX */
  int32_t perm[TETHER_MAX_DIMS];     /* TRANSPOSE */
  int32_t perm_count;
  float clamp_min, clamp_max;        /* CLAMP */
  float alpha, offset;               /* HARD_SIGMOID */
} tether_op_params;

typedef struct tether_node {
  uint16_t type;                     /* tether_node */
  uint8_t activation;                /* tether_activation, applied to every output */
  const char* name;
  uint32_t input_count;
  uint32_t output_count;
  const uint32_t* inputs;            /* tensor indices; TETHER_NO_TENSOR = absent */
  const uint32_t* outputs;
  tether_op_params params;
  size_t scratch_bytes;              /* arena scratch this op's kernel needs */
  size_t scratch_offset;             /* where the plan put it in the arena */
  /* Set by prepare for the optimized paths (see ops/conv2d.c): */
  size_t packed_floats;              /* packed GEMM weights this op needs; 0 = none */
  const float* packed;               /* its part of tether_model.packed (after load) */
  uint8_t fused_activation;          /* 1 = the kernel applies `activation` itself */
  uint8_t quantized;                 /* 1 = the int8 path (ops/quantized.c) */
} tether_node;

struct tether_model {
  tether_allocator allocator;
  void* owned_buffer;                /* tether_model_load_file's copy of the file, or NULL */
  const uint8_t* data;
  size_t size;
  uint32_t tensor_count;
  tether_tensor* tensors;
  uint32_t op_count;
  tether_node* ops;
  uint32_t* operands;                /* decoded OPERANDS */
  uint32_t input_count;
  uint32_t output_count;
  uint32_t* inputs;
  uint32_t* outputs;
  size_t activation_bytes;           /* planned activations, a multiple of 64 */
  size_t scratch_bytes;              /* largest per-op scratch */
  size_t arena_size;                 /* activations and every op's scratch, as planned; at
                                      * most activation_bytes + scratch_bytes */
  /* Kernels chosen at load (ukernels.h) and the packed weights for them: one block from
   * `allocator`, 64-byte aligned, owned by the model, NULL when no op packs weights. */
  const struct tether_kernels* kernels;
  float* packed;
  size_t packed_bytes;
  /* Sparse constants decoded at load: one block from `allocator`, each tensor at a 64-byte
   * boundary, owned by the model, NULL when no constant is sparse. */
  void* unpacked;
  size_t unpacked_bytes;
  /* tether_model_memory's count of the loader's requests; NULL in a loaded model. */
  struct tether_memory_tally* tally;
};

/*
 * Every block the loader asks the model's allocator for goes through tether_model_allocate
 * (and every temporary back through tether_model_deallocate), so that tether_model_memory
 * counts the very requests tether_model_load makes. Each size is a multiple of
 * TETHER_ARENA_ALIGNMENT (round it with tether_round_block), so a bump allocator over a
 * 64-byte-aligned buffer never pads between blocks.
 */
typedef struct tether_memory_tally {
  int dry_run;          /* 1: the decoded sparse constants and the packed weights are counted,
                           not allocated (tether_model_memory) */
  size_t total;         /* sum of every request */
  size_t live;          /* requested and not yet given back */
  size_t peak;          /* most `live` reached */
  size_t largest;       /* largest single request */
} tether_memory_tally;

/* `bytes` rounded up to TETHER_ARENA_ALIGNMENT (callers keep it far below SIZE_MAX). */
static inline size_t tether_round_block(size_t bytes) {
  return (bytes + TETHER_ARENA_ALIGNMENT - 1) / TETHER_ARENA_ALIGNMENT * TETHER_ARENA_ALIGNMENT;
}
/* Counts a request of `size` bytes in `tally` (NULL = none) without allocating it. */
void tether_tally_request(tether_memory_tally* tally, size_t size);
/* model->allocator.allocate, counted in model->tally; NULL when the allocator fails. */
void* tether_model_allocate(const struct tether_model* model, size_t size, size_t alignment);
/* Gives back a block of `size` bytes from tether_model_allocate (NULL does nothing). */
void tether_model_deallocate(const struct tether_model* model, void* block, size_t size);

/* Static name of an op id ("CONV_2D"), or "?" for an unknown id. */
const char* tether_op_type_name(uint32_t type);

/* Reports a format error prefixed "op N 'name' (TYPE): " and returns `status`. */
tether_status tether_op_error(const struct tether_model* model, uint32_t op_index,
                              tether_status status, const char* format, ...);

/* Byte size of one element of `dtype` (0 for an unknown id). */
size_t tether_dtype_size(uint32_t dtype);

/* Monotonic nanoseconds (hosted.c); 0 in builds without a clock. */
uint64_t tether_now_ns(void);

/* Default allocator (hosted.c, malloc-based) or NULL in builds without one. */
const tether_allocator* tether_default_allocator(void);

/* Computes the memory plan: arena offsets, lifetimes, activation/scratch/arena sizes. */
tether_status tether_plan_memory(struct tether_model* model);

/* ---- ops ------------------------------------------------------------------------------ */

/*
 * Per op family: prepare checks shapes and attributes once at load (reporting through
 * tether_op_error), eval runs the reference kernel. `data[t]` is the storage of tensor t.
 */
typedef tether_status (*tether_prepare_fn)(const struct tether_model* model, uint32_t op_index,
                                           tether_node* op);
struct tether_pool;
typedef void (*tether_eval_fn)(const struct tether_model* model, const tether_node* op,
                               void* const* data, void* scratch, struct tether_pool* pool);

#define TETHER_DECLARE_OP(family)                                                           \
  tether_status tether_##family##_prepare(const struct tether_model* model, uint32_t op_index, \
                                          tether_node* op);                                     \
  void tether_##family##_eval(const struct tether_model* model, const tether_node* op,         \
                              void* const* data, void* scratch, struct tether_pool* pool)

TETHER_DECLARE_OP(conv2d);
TETHER_DECLARE_OP(depthwise_conv2d);
TETHER_DECLARE_OP(fully_connected);
TETHER_DECLARE_OP(binary);
TETHER_DECLARE_OP(pool);
TETHER_DECLARE_OP(mean);
TETHER_DECLARE_OP(reshape);
TETHER_DECLARE_OP(concat);
TETHER_DECLARE_OP(pad);
TETHER_DECLARE_OP(softmax);
TETHER_DECLARE_OP(activation);
TETHER_DECLARE_OP(transpose);

/* Packs the weights of every op with packed_floats > 0 into model->packed (after validation);
 * in a dry run (model->tally->dry_run) counts the block and runs the int8 checks only. */
tether_status tether_pack_weights(struct tether_model* model);
/* The [min, max] clamp of a fused activation the GEMM/dwconv epilogues can apply; returns 0
 * for activations they cannot (tanh, sigmoid, hard swish). */
struct tether_f32_minmax;
int tether_f32_minmax_of(uint32_t activation, struct tether_f32_minmax* out);
void conv2d_pack(const struct tether_model* model, const tether_node* op, float* packed);
void fully_connected_pack(const struct tether_model* model, const tether_node* op, float* packed);

/* Applies a fused activation in place to n floats. */
void tether_f32_activation_apply(float* y, size_t n, uint32_t activation);
float tether_f32_activation_one(float x, uint32_t activation);

/* Shared shape helpers for prepare functions. */
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

/* ---- integer quantization (quantization.c; TFLite's arithmetic) ------------------------ */

/* real = multiplier * 2^(shift - 31), multiplier in [2^30, 2^31) (TFLite QuantizeMultiplier). */
void tether_quantize_multiplier(double real, int32_t* multiplier, int32_t* shift);
int32_t tether_saturating_rounding_doubling_high_mul(int32_t a, int32_t b);
int32_t tether_rounding_divide_by_pot(int32_t x, int32_t exponent);
/* TFLite MultiplyByQuantizedMultiplier: round(x * multiplier * 2^(shift - 31)). */
int32_t tether_multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int32_t shift);
/* Scale / zero point of channel c (any c for per-tensor quantization). */
float tether_quant_scale(const tether_tensor* t, uint32_t c);
int32_t tether_quant_zero_point(const tether_tensor* t, uint32_t c);
/* int8 clamp range of a fused activation; returns 0 for activations int8 cannot fuse. */
int tether_q8_activation_range(uint32_t activation, float scale, int32_t zero_point,
                               int32_t* lo, int32_t* hi);

/* int8 op families (ops/quantized.c), reached from the float families' prepare/eval. */
tether_status tether_q8_conv_prepare(const struct tether_model* model, uint32_t op_index,
                                     tether_node* op);
void tether_q8_conv_eval(const struct tether_model* model, const tether_node* op,
                         void* const* data, void* scratch, struct tether_pool* pool);
/* Checks that `t` (named `slot` in errors) is int8, per tensor, with a finite scale > 0 and a
 * zero point in [-128, 127]. */
tether_status tether_q8_need_per_tensor(const struct tether_model* model, uint32_t op_index,
                                        const tether_tensor* t, const char* slot);
/* Computes an int8 op's packed words (multipliers, shifts); rejects unusable scales. */
tether_status tether_q8_pack(const struct tether_model* model, const tether_node* op,
                             int32_t* words);
/* tether_q8_pack's checks alone (tether_model_memory): the same words, computed into
 * temporaries, and the same errors; reads no weight data. */
tether_status tether_q8_check(const struct tether_model* model, const tether_node* op);
void tether_q8_mean_pack(const struct tether_model* model, const tether_node* op,
                         int32_t* words);
tether_status tether_q8_add_prepare(const struct tether_model* model, uint32_t op_index,
                                    tether_node* op);
/* Adds `count` elements; a_index / b_index (NULL = identity) give each one's source index. */
void tether_q8_add_elements(const tether_node* op, const tether_tensor* a, const tether_tensor* b,
                            const tether_tensor* y, const int8_t* ad, const int8_t* bd,
                            size_t count, const size_t* a_index, const size_t* b_index,
                            int8_t* yd);
TETHER_DECLARE_OP(quantize);
TETHER_DECLARE_OP(dequantize);

/* int8 pools, CONCATENATION, PAD and elementwise ops (ops/quantized_ops.c): prepare checks the
 * quantization and sets op->quantized; the float family's eval hands the op over. */
tether_status tether_q8_pool_prepare(const struct tether_model* model, uint32_t op_index,
                                     tether_node* op);
void tether_q8_pool_eval(const struct tether_model* model, const tether_node* op,
                         void* const* data);
tether_status tether_q8_concat_prepare(const struct tether_model* model, uint32_t op_index,
                                       tether_node* op);
void tether_q8_concat_eval(const struct tether_model* model, const tether_node* op,
                           void* const* data);
tether_status tether_q8_pad_prepare(const struct tether_model* model, uint32_t op_index,
                                    tether_node* op);
void tether_q8_pad_eval(const struct tether_model* model, const tether_node* op,
                        void* const* data);
tether_status tether_q8_unary_prepare(const struct tether_model* model, uint32_t op_index,
                                      tether_node* op);
void tether_q8_unary_eval(const struct tether_model* model, const tether_node* op,
                          void* const* data);

/* ---- reference kernels (plain C; the oracle for any optimized kernel) ------------------- */

typedef struct tether_conv_geometry {
  size_t batch, in_h, in_w, in_c;
  size_t out_h, out_w, out_c;
  size_t kernel_h, kernel_w;
  size_t groups;            /* CONV_2D */
  size_t depth_multiplier;  /* DEPTHWISE_CONV_2D */
  ptrdiff_t stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left;
} tether_conv_geometry;

/* The window geometry of a CONV_2D / DEPTHWISE_CONV_2D (kernel from the weights' shape) or a
 * MAX/AVERAGE_POOL_2D (kernel from its attribute), from its validated tensors and params. */
tether_conv_geometry tether_window_geometry(const struct tether_model* model,
                                            const tether_node* op);

/* Clamps the pooling window [start, start + k) to the input rows/columns [0, n). */
static inline void tether_clamp_window(ptrdiff_t start, size_t k, size_t n, size_t* begin,
                                       size_t* end) {
  const ptrdiff_t b = start < 0 ? 0 : start;
  ptrdiff_t e = start + (ptrdiff_t)k;
  if (e > (ptrdiff_t)n) e = (ptrdiff_t)n;
  *begin = (size_t)b;
  *end = e > b ? (size_t)e : (size_t)b;
}

void tether_f32_conv2d_ukernel__scalar(const tether_conv_geometry* g, const float* x,
                                       const float* w, const float* bias, float* y);
void tether_f32_dwconv2d_ukernel__scalar(const tether_conv_geometry* g, const float* x,
                                         const float* w, const float* bias, float* y);
void tether_f32_gemv_ukernel__scalar(size_t rows, size_t k, size_t outputs, const float* x,
                                     const float* w, const float* bias, float* y);
void tether_f32_maxpool_ukernel__scalar(const tether_conv_geometry* g, const float* x, float* y);
void tether_f32_avgpool_ukernel__scalar(const tether_conv_geometry* g, int count_include_pad,
                                        const float* x, float* y);
void tether_f32_activation_ukernel__scalar(size_t n, const float* x, float* y,
                                           uint32_t activation);
void tether_f32_softmax_ukernel__scalar(size_t rows, size_t n, float beta, const float* x,
                                        float* y);

/* Table-driven CRC-32 (zlib polynomial) over n bytes, continuing from `crc` (start 0). */
uint32_t tether_crc32(uint32_t crc, const void* data, size_t n);

/* Eval of one op with caller-chosen storage on the calling thread (tests use it). */
void tether_op_eval(const struct tether_model* model, uint32_t op_index, void* const* data,
                    void* scratch);
/* The same with work split over `pool` (NULL = the calling thread); the session's invoke. */
void tether_op_eval_parallel(const struct tether_model* model, uint32_t op_index,
                             void* const* data, void* scratch, struct tether_pool* pool);

/* ---- thread pool (threadpool.c; a serial stand-in in freestanding builds) --------------- */

typedef void (*tether_task_fn)(void* context, size_t task);
/*
 * Creates a pool of `threads` - 1 workers (the caller is the last thread) with `allocator`;
 * *pool_out = NULL for threads <= 1. No allocation after this.
 */
tether_status tether_pool_create(const tether_allocator* allocator, uint32_t threads,
                                 struct tether_pool** pool_out);
void tether_pool_destroy(struct tether_pool* pool);
/* Threads in the pool, the caller included (1 for NULL). */
size_t tether_pool_threads(const struct tether_pool* pool);
/*
 * Runs fn(context, i) for i in [0, count) on the pool's threads and the caller, and returns
 * when all are done. Which thread runs a task is unspecified, so tasks must write disjoint
 * outputs and never depend on one another: results then do not depend on the thread count.
 */
void tether_parallelize(struct tether_pool* pool, tether_task_fn fn, void* context,
                        size_t count);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* TETHER_INTERNAL_H_ */
