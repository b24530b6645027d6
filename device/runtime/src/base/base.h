/*
 * base.h — the bottom of the engine: the decoded model every layer reads, error reporting and
 * the allocation tally. Includes nothing of the engine but the public header.
 *
 * Layers (device/README.md): api/ platform/ -> format/ -> plan/ -> ops/ -> reference/ ->
 * compute/ -> base/ -> micro-kernels (ukernels.h, f32-gemm/ ...). A validated model is
 * decoded once into these structs; the kernels then run blind (every shape and index was
 * checked at load time). Not part of the public API.
 */
#ifndef TETHER_BASE_H_
#define TETHER_BASE_H_

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

#define TETHER_TENSOR_CONSTANT 0x01u
#define TETHER_TENSOR_SPARSE 0x02u   /* constant stored bitmask-encoded (FORMAT.md) */

/* A tensor's quantization (the tensor record's `quant` byte, FORMAT.md). */
typedef enum tether_quant {
  TETHER_QUANT_NONE = 0,
  TETHER_QUANT_PER_TENSOR = 1,
  TETHER_QUANT_PER_CHANNEL = 2,
} tether_quant;

/* Attribute ids (FORMAT.md, "Attributes"); an op's registry row lists the ones it takes. */
typedef enum tether_attr {
  TETHER_ATTR_STRIDES = 1,
  TETHER_ATTR_DILATIONS = 2,
  TETHER_ATTR_PADS = 3,
  TETHER_ATTR_GROUPS = 4,
  TETHER_ATTR_DEPTH_MULTIPLIER = 5,
  TETHER_ATTR_KERNEL = 6,
  TETHER_ATTR_COUNT_INCLUDE_PAD = 7,
  TETHER_ATTR_AXES = 8,
  TETHER_ATTR_KEEPDIMS = 9,
  TETHER_ATTR_AXIS = 10,
  TETHER_ATTR_PADDINGS = 11,
  TETHER_ATTR_VALUE = 12,
  TETHER_ATTR_BETA = 13,
  TETHER_ATTR_PERM = 14,
  TETHER_ATTR_MIN = 15,
  TETHER_ATTR_MAX = 16,
  TETHER_ATTR_ALPHA = 17,
  TETHER_ATTR_OFFSET = 18,
  TETHER_ATTR_SIZE = 19,
  TETHER_ATTR_BEGIN = 20,
  TETHER_ATTR_STEPS = 21,
  TETHER_ATTR_INTERPOLATION = 22,
  TETHER_ATTR_COORDINATE_MODE = 23,
  TETHER_ATTR_NEAREST_MODE = 24,
  TETHER_ATTR_SCALES = 25,
  TETHER_ATTR_EPSILON = 26,
  TETHER_ATTR_ADJOINT = 27,
  TETHER_ATTR_APPROXIMATE = 28,
  TETHER_ATTR_MODE = 29,
  TETHER_ATTR_COUNT = 30,      /* one past the last id */
} tether_attr;
#define TETHER_ATTR_BIT(id) (1u << (id))

/* ---- errors (error.c) ----------------------------------------------------------------- */

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

/* ---- the decoded model ---------------------------------------------------------------- */

typedef struct tether_tensor {
  const char* name;
  uint8_t dtype;                     /* tether_dtype */
  uint8_t ndim;
  uint8_t quant;                     /* tether_quant */
  uint8_t flags;                     /* TETHER_TENSOR_CONSTANT */
  int32_t shape[TETHER_MAX_DIMS];    /* first ndim used, rest 1 */
  size_t elements;
  size_t bytes;
  const void* data;                  /* constants: in place in the model buffer, or (sparse
                                        ones) decoded into tether_model.unpacked */
  const uint8_t* sparse;             /* sparse constants: the encoded blob in the buffer */
  float scale;                       /* TETHER_QUANT_PER_TENSOR: the scale, else 0 */
  int32_t zero_point;                /* TETHER_QUANT_PER_TENSOR: the zero point, else 0 */
  uint32_t quant_axis;               /* TETHER_QUANT_PER_CHANNEL: the channel axis */
  uint32_t quant_count;              /* quantized: scales (1 or shape[quant_axis]) */
  const uint8_t* quant_params;       /* quantized: float scale[count], int32 zp[count] in
                                        the model buffer (read with memcpy) */
  int32_t producer;                  /* index of the op that writes it; -1 = none */
  size_t arena_offset;               /* the arena plan (api/arena.c), where `planned` */
  uint8_t planned;                   /* 1 = some op or the graph I/O uses it: it has arena bytes */
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
  int32_t axes[TETHER_MAX_DIMS];     /* reduced axes */
  int32_t axes_count;                /* 0 = not given */
  int32_t keepdims;
  int32_t axis;                      /* the joined axis; -1 = not given */
  int32_t paddings[2 * TETHER_MAX_DIMS];
  int32_t paddings_count;            /* 0 = not given */
  float value;                       /* the padding value */
  float beta;                        /* softmax scale */
  int32_t perm[TETHER_MAX_DIMS];     /* output axis i = input axis perm[i] */
  int32_t perm_count;
  float clamp_min, clamp_max;        /* bounds of a clamp */
  float alpha, offset;               /* the hard sigmoid's slope and offset; LEAKY_RELU's and
                                        ELU's alpha; LRN's alpha and bias */
  int32_t size;                      /* LRN's window of channels; 0 = not given */
  int32_t begin[TETHER_MAX_DIMS];    /* SLICE: first index per axis */
  int32_t begin_count;               /* 0 = not given */
  int32_t steps[TETHER_MAX_DIMS];    /* SLICE: stride per axis */
  int32_t steps_count;               /* 0 = not given (all 1) */
  int32_t interpolation;             /* RESIZE: 0 nearest, 1 bilinear */
  int32_t coordinate_mode;           /* RESIZE: output -> input coordinate (FORMAT.md) */
  int32_t nearest_mode;              /* RESIZE: rounding of a nearest source coordinate */
  float scale_h, scale_w;            /* RESIZE: the out/in factors of the coordinate map */
  int32_t scales_count;              /* 0 = not given (OH/H and OW/W) */
  float epsilon;                     /* LAYER_NORM, INSTANCE_NORM: added to the variance */
  int32_t approximate;               /* GELU: 0 erf form, 1 tanh approximation */
  int32_t mode;                      /* PAD: 0 constant, 1 reflect, 2 edge, 3 symmetric */
  int32_t adjoint[2];                /* BATCH_MATMUL: transpose A's / B's last two dims */
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
  /* Set by the op's prepare for its execution path (ops/): */
  size_t packed_floats;              /* packed GEMM weights this op needs; 0 = none */
  const float* packed;               /* its part of tether_model.packed (after load) */
  uint8_t fused_activation;          /* 1 = the kernel applies `activation` itself */
  uint8_t quantized;                 /* nonzero = an int8 path (the op file's own codes) */
  uint8_t serial;                    /* 1 = too little work to share with the thread pool: the
                                        invoke runs it on the calling thread (set at load) */
  /* The check of run-time control data (GATHER's indices when they are not constant): the
   * invoke calls it before eval and stops with its status (tether_set_error). NULL = none. */
  tether_status (*check)(const struct tether_model* model, const struct tether_node* op,
                         void* const* data);
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
  /* Kernels chosen at load (compute/compute.h) and the packed weights for them: one block from
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

/* v clamped to [lo, hi]. */
static inline int32_t tether_clamp_i32(int32_t v, int32_t lo, int32_t hi) {
  return v < lo ? lo : v > hi ? hi : v;
}

/* `bytes` rounded up to TETHER_ARENA_ALIGNMENT (callers keep it far below SIZE_MAX). */
static inline size_t tether_round_block(size_t bytes) {
  return (bytes + TETHER_ARENA_ALIGNMENT - 1) / TETHER_ARENA_ALIGNMENT * TETHER_ARENA_ALIGNMENT;
}
/* Counts a request of `size` bytes in `tally` (NULL = none) without allocating it. */
void tether_tally_request(tether_memory_tally* tally, size_t size);
/* allocator->allocate, counted in `tally` (NULL = none); NULL when the allocator fails. */
void* tether_tally_allocate(tether_memory_tally* tally, const tether_allocator* allocator,
                            size_t size, size_t alignment);
/* model->allocator.allocate, counted in model->tally; NULL when the allocator fails. */
void* tether_model_allocate(const struct tether_model* model, size_t size, size_t alignment);
/* Gives back a block of `size` bytes from tether_model_allocate (NULL does nothing). */
void tether_model_deallocate(const struct tether_model* model, void* block, size_t size);

/* Byte size of one element of `dtype` (0 for an unknown id) and its name ("?" if unknown). */
size_t tether_dtype_size(uint32_t dtype);
const char* tether_dtype_name(uint32_t dtype);

/* ---- what the platform supplies (platform/hosted.c or platform/freestanding.c) ---------- */

/* Monotonic nanoseconds; 0 in builds without a clock. */
uint64_t tether_now_ns(void);
/* The malloc-based default allocator, or NULL in builds without one. */
const tether_allocator* tether_default_allocator(void);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* TETHER_BASE_H_ */
