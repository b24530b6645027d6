/*
 * tether.h — the public C API of the tether inference engine.
 *
 * The engine loads a `.tmodel` file (spec: converter/FORMAT.md), validates it once, and
 * runs it with no allocation after a session is created. A model is immutable and may be
 * shared by several sessions; a session holds the activations and is used by one thread
 * at a time.
 *
 * Usage:
 *
 *   tether_model_t model = NULL;
 *   if (tether_model_load(bytes, nbytes, NULL, &model) != TETHER_STATUS_SUCCESS) {
 *     fprintf(stderr, "%s\n", tether_last_error());   // names the field at fault
 *     return 1;
 *   }
 *   size_t arena_size = 0;
 *   tether_session_arena_size(model, &arena_size);
 *   void* arena = aligned_alloc(TETHER_ARENA_ALIGNMENT, arena_size);  // caller-owned
 *   tether_session_t session = NULL;
 *   tether_session_create(model, arena, arena_size, 1, &session);
 *   tether_session_set_input(session, 0, input, input_bytes);
 *   tether_session_invoke(session);
 *   tether_session_get_output(session, 0, output, output_bytes);
 *   tether_session_destroy(session);
 *   free(arena);
 *   tether_model_destroy(model);                       // `bytes` may be freed after this
 */
#ifndef TETHER_TETHER_H_
#define TETHER_TETHER_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- macros ------------------------------------------------------------------------ */

#define TETHER_VERSION_MAJOR 0
#define TETHER_VERSION_MINOR 1
/* The .tmodel major version this engine reads. */
#define TETHER_FORMAT_VERSION_MAJOR 1
/* Largest tensor rank. */
#define TETHER_MAX_DIMS 6
/* Required alignment of a caller-provided arena and of model buffers used in place. */
#define TETHER_ARENA_ALIGNMENT 64
/* Kernels may read (never write) this many bytes past the end of any buffer. */
#define TETHER_EXTRA_BYTES 16

/* ---- status ------------------------------------------------------------------------ */

/* Values are only ever appended. */
typedef enum tether_status {
  TETHER_STATUS_SUCCESS = 0,
  TETHER_STATUS_INVALID_ARGUMENT = 1,
  TETHER_STATUS_FORMAT_ERROR = 2,
  TETHER_STATUS_VERSION_MISMATCH = 3,
  TETHER_STATUS_UNSUPPORTED_OP = 4,
  TETHER_STATUS_UNSUPPORTED_HARDWARE = 5,
  TETHER_STATUS_OUT_OF_MEMORY = 6,
  TETHER_STATUS_IO_ERROR = 7,
} tether_status;

/* Element types; the ids are the .tmodel dtype ids. */
typedef enum tether_dtype {
  TETHER_DTYPE_FLOAT32 = 0,
  TETHER_DTYPE_INT8 = 1,
  TETHER_DTYPE_UINT8 = 2,
  TETHER_DTYPE_INT32 = 3,
} tether_dtype;

/* Which side of the graph an I/O query is about. */
typedef enum tether_io {
  TETHER_IO_INPUT = 0,
  TETHER_IO_OUTPUT = 1,
} tether_io;

/*
 * The op table, one X(id, NAME) per op in id order: the ids of converter/FORMAT.md's op
 * table (append-only; a removed op keeps its row). Everything that names ops comes from this
 * list: the enum below, the engine's name tables and the converter's Python enum
 * (converter/_internal/opcodes.py, generated from this header and checked by a test).
 */
#define TETHER_OP_LIST(X) \
  X(1, CONV_2D) \
  X(2, DEPTHWISE_CONV_2D) \
  X(3, FULLY_CONNECTED) \
  X(4, ADD) \
  X(5, MUL) \
  X(6, MAX_POOL_2D) \
  X(7, AVERAGE_POOL_2D) \
  X(8, MEAN) \
  X(9, RESHAPE) \
  X(10, CONCATENATION) \
  X(11, PAD) \
  X(12, SOFTMAX) \
  X(13, RELU) \
  X(14, RELU6) \
  X(15, LOGISTIC) \
  X(16, TANH) \
  X(17, HARD_SWISH) \
  X(18, QUANTIZE) \
  X(19, DEQUANTIZE) \
  X(20, SUB) \
  X(21, DIV) \
  X(22, TRANSPOSE) \
  X(23, CLAMP) \
  X(24, HARD_SIGMOID) \
  X(25, LEAKY_RELU) \
  X(26, ELU) \
  X(27, PRELU) \
  X(28, MAXIMUM) \
  X(29, MINIMUM) \
  X(30, LRN) \
  X(31, SLICE) \
  X(32, RESIZE) \
  X(33, GATHER) \
  X(34, LAYER_NORM) \
  X(35, INSTANCE_NORM) \
  X(36, GELU) \
  X(37, REDUCE_MAX) \
  X(38, BATCH_MATMUL)

/* Op ids. TETHER_OP_COUNT is one past the largest id (ids start at 1). */
typedef enum tether_op {
#define TETHER_OP_ENUM_ENTRY_(id, name) TETHER_OP_##name = id,
  TETHER_OP_LIST(TETHER_OP_ENUM_ENTRY_)
#undef TETHER_OP_ENUM_ENTRY_
  TETHER_OP_COUNT
} tether_op;

/* Fused activations; the same numbers as FORMAT.md. */
typedef enum tether_activation {
  TETHER_ACT_NONE = 0,
  TETHER_ACT_RELU = 1,
  TETHER_ACT_RELU6 = 2,
  TETHER_ACT_RELU_N1_TO_1 = 3,
  TETHER_ACT_TANH = 4,
  TETHER_ACT_SIGMOID = 5,
  TETHER_ACT_HARD_SWISH = 6,
} tether_activation;

/* ---- allocator --------------------------------------------------------------------- */

/*
 * Memory for the engine's own bookkeeping (model and session structs). NULL wherever an
 * allocator is accepted means the C library's allocator (hosted builds only).
 * `deallocate(context, NULL)` must do nothing.
 */
typedef struct tether_allocator {
  void* context;
  void* (*allocate)(void* context, size_t size, size_t alignment);
  void (*deallocate)(void* context, void* pointer);
} tether_allocator;

/* ---- opaque handles ------------------------------------------------------------------ */

typedef struct tether_model* tether_model_t;
typedef struct tether_session* tether_session_t;

/* ---- library ----------------------------------------------------------------------- */

/* Static name of a status ("success", "format_error", ...); never NULL. */
const char* tether_status_string(tether_status status);

/*
 * Text of the last failure on the calling thread (e.g. "op 3 'conv2d_1' (CONV_2D): input 1
 * is tensor 99, out of range [0, 42)"). Empty if none. Owned by the library; valid until
 * the next call on this thread.
 */
const char* tether_last_error(void);

/* ---- model lifecycle ----------------------------------------------------------------- */

/*
 * Validates a .tmodel image (magic, version, size, checksum, every index and shape) and
 * wraps it. No weight is copied: `data` is borrowed and must stay valid and unchanged until
 * tether_model_destroy. `data` must be 4-byte aligned (64 for SIMD kernels to use weights
 * at full speed).
 *
 * @param data       caller-owned .tmodel bytes
 * @param size       bytes in `data`
 * @param allocator  for the model struct; NULL = malloc (hosted builds)
 * @param model_out  receives the handle; untouched on failure
 * @retval TETHER_STATUS_SUCCESS
 * @retval TETHER_STATUS_INVALID_ARGUMENT  a NULL pointer or misaligned data
 * @retval TETHER_STATUS_FORMAT_ERROR      truncated, bad magic, bad checksum, bad index/shape
 * @retval TETHER_STATUS_VERSION_MISMATCH  unknown major version
 * @retval TETHER_STATUS_UNSUPPORTED_OP    an op or activation id this engine lacks
 * @retval TETHER_STATUS_OUT_OF_MEMORY     the allocator failed
 */
tether_status tether_model_load(const void* data, size_t size, const tether_allocator* allocator,
                                tether_model_t* model_out);

/*
 * What tether_model_load(data, size, allocator, ...) would ask `allocator` for, without
 * loading: the image is validated exactly as tether_model_load does (same checks, same
 * status, same tether_last_error text on failure) and, for the kernels of the current ISA
 * (tether_isa), the model's requests are counted: the model struct block, the decoded
 * sparse constants (format 1.1), the packed weights, and the load's temporaries (memory
 * planner work space, int8 per-channel words). Every request is a multiple of
 * TETHER_ARENA_ALIGNMENT bytes and asks for at most that alignment, so a bump allocator
 * that never frees, over a TETHER_ARENA_ALIGNMENT-aligned buffer of *total_bytes_out
 * bytes, is enough to load the model. Sessions allocate separately (session struct; the
 * arena unless one is passed in; tether_model_load_file adds the file's bytes).
 *
 * The query itself borrows `allocator` for the model struct block and small temporaries,
 * all given back before it returns and never more at once than *peak_bytes_out (it does
 * not decode the sparse constants or pack weights).
 *
 * @param data                caller-owned .tmodel bytes (as tether_model_load; not kept)
 * @param size                bytes in `data`
 * @param allocator           lent to the query as above; NULL = malloc (hosted builds)
 * @param total_bytes_out     receives the sum of every request tether_model_load makes
 * @param peak_bytes_out      receives the most bytes held at once during the load (for an
 *                            allocator that reuses freed blocks)
 * @param resident_bytes_out  receives the bytes held once the load returns, until
 *                            tether_model_destroy
 * @param largest_block_out   receives the largest single request
 * @retval TETHER_STATUS_SUCCESS           all four outputs set (untouched on failure)
 * @retval TETHER_STATUS_INVALID_ARGUMENT  a NULL pointer or misaligned data
 * @retval TETHER_STATUS_OUT_OF_MEMORY     the allocator failed during the query
 * @retval (others as tether_model_load, for the same images)
 */
tether_status tether_model_memory(const void* data, size_t size,
                                  const tether_allocator* allocator, size_t* total_bytes_out,
                                  size_t* peak_bytes_out, size_t* resident_bytes_out,
                                  size_t* largest_block_out);

/*
 * Reads a .tmodel file into memory owned by the model, then as tether_model_load.
 * Hosted builds only.
 *
 * @param path       file path (caller-owned, not kept)
 * @param model_out  receives the handle; untouched on failure
 * @retval TETHER_STATUS_IO_ERROR  the file cannot be opened or read
 * @retval (others as tether_model_load)
 */
tether_status tether_model_load_file(const char* path, tether_model_t* model_out);

/* Frees the model. NULL does nothing. Sessions made from it must be destroyed first. */
void tether_model_destroy(tether_model_t model);

/* ---- model queries ------------------------------------------------------------------- */

/* Number of graph inputs (kind = TETHER_IO_INPUT) or outputs; 0 for a NULL model. */
size_t tether_model_io_count(tether_model_t model, tether_io kind);

/*
 * Name of input/output `index`; owned by the model. NULL if the index is out of range.
 */
const char* tether_model_io_name(tether_model_t model, tether_io kind, size_t index);

/*
 * Finds an input/output by name.
 * @retval TETHER_STATUS_SUCCESS           *index_out set
 * @retval TETHER_STATUS_INVALID_ARGUMENT  no such name (tether_last_error says which)
 */
tether_status tether_model_io_find(tether_model_t model, tether_io kind, const char* name,
                                   size_t* index_out);

/*
 * Shape and dtype of input/output `index`. `dims_out` must hold TETHER_MAX_DIMS values.
 * @retval TETHER_STATUS_SUCCESS
 * @retval TETHER_STATUS_INVALID_ARGUMENT  index out of range or NULL pointer
 */
tether_status tether_model_io_shape(tether_model_t model, tether_io kind, size_t index,
                                    size_t* ndim_out, int32_t* dims_out,
                                    tether_dtype* dtype_out);

/*
 * Per-tensor quantization of input/output `index` (scale 0 and zero point 0 for float).
 * @retval TETHER_STATUS_SUCCESS
 * @retval TETHER_STATUS_INVALID_ARGUMENT  index out of range or NULL pointer
 */
tether_status tether_model_io_quantization(tether_model_t model, tether_io kind, size_t index,
                                           float* scale_out, int32_t* zero_point_out);

/* Number of ops after conversion; 0 for a NULL model. */
size_t tether_model_op_count(tether_model_t model);

/* ---- session lifecycle --------------------------------------------------------------- */

/*
 * Bytes of arena a session of this model needs (activations, planned from tensor
 * lifetimes, plus scratch).
 * @retval TETHER_STATUS_SUCCESS
 * @retval TETHER_STATUS_INVALID_ARGUMENT  NULL pointer
 */
tether_status tether_session_arena_size(tether_model_t model, size_t* size_out);

/* Most threads a session may run an invoke on (the caller included). */
#define TETHER_MAX_THREADS 64

/*
 * Creates a session. Nothing is allocated after this returns.
 *
 * @param model        borrowed; must outlive the session
 * @param arena        caller-owned, TETHER_ARENA_ALIGNMENT-aligned, at least
 *                     tether_session_arena_size bytes; NULL = the session allocates its
 *                     own arena with malloc (hosted builds)
 * @param arena_size   bytes in `arena` (ignored when arena is NULL)
 * @param num_threads  worker threads for invoke; 0 or 1 = the calling thread only, at most
 *                     TETHER_MAX_THREADS (more is TETHER_STATUS_INVALID_ARGUMENT)
 * @param session_out  receives the handle; untouched on failure
 * @retval TETHER_STATUS_SUCCESS
 * @retval TETHER_STATUS_INVALID_ARGUMENT  NULL model, misaligned or too small arena
 * @retval TETHER_STATUS_OUT_OF_MEMORY     the allocator failed
 */
tether_status tether_session_create(tether_model_t model, void* arena, size_t arena_size,
                                    uint32_t num_threads, tether_session_t* session_out);

/*
 * What tether_session_create(model, arena, ..., num_threads, ...) with a caller arena asks
 * the model's allocator for: the session struct block and, in hosted builds with
 * num_threads > 1, the thread pool. With a bump allocator (e.g. one over memory a JNI
 * caller hands in), this many more bytes of TETHER_ARENA_ALIGNMENT-aligned pool per session
 * are enough; every request asks for at most that alignment. Add
 * tether_session_arena_size when the session is to allocate its own arena (arena NULL).
 *
 * @param model        the model the session is for (borrowed)
 * @param num_threads  as tether_session_create (more than TETHER_MAX_THREADS counts as that)
 * @param bytes_out    receives the sum of the requests, each rounded up to
 *                     TETHER_ARENA_ALIGNMENT bytes
 * @retval TETHER_STATUS_SUCCESS
 * @retval TETHER_STATUS_INVALID_ARGUMENT  NULL pointer
 */
tether_status tether_session_memory(tether_model_t model, uint32_t num_threads,
                                    size_t* bytes_out);

/* Frees the session (not a caller-provided arena). NULL does nothing. */
void tether_session_destroy(tether_session_t session);

/* ---- session use --------------------------------------------------------------------- */

/*
 * Copies `size` bytes into input `index`; `size` must equal the tensor's byte size.
 * @retval TETHER_STATUS_SUCCESS
 * @retval TETHER_STATUS_INVALID_ARGUMENT  index out of range, NULL data or wrong size
 */
tether_status tether_session_set_input(tether_session_t session, size_t index, const void* data,
                                       size_t size);

/*
 * Copies output `index` (after invoke) into `data`; `size` must equal its byte size.
 * @retval TETHER_STATUS_SUCCESS
 * @retval TETHER_STATUS_INVALID_ARGUMENT  index out of range, NULL data or wrong size
 */
tether_status tether_session_get_output(tether_session_t session, size_t index, void* data,
                                        size_t size);

/*
 * Pointer to the arena storage of input/output `index`, for zero-copy use. Valid until the
 * session is destroyed; output contents are valid after invoke and until the next invoke.
 * @retval TETHER_STATUS_SUCCESS
 * @retval TETHER_STATUS_INVALID_ARGUMENT  index out of range or NULL pointer
 */
tether_status tether_session_io_data(tether_session_t session, tether_io kind, size_t index,
                                     void** data_out);

/*
 * Runs every op in order. A session serves one thread at a time: an invoke that starts while
 * another thread's invoke of the same session runs is refused (it never races or hangs).
 * @retval TETHER_STATUS_SUCCESS
 * @retval TETHER_STATUS_INVALID_ARGUMENT  NULL session, the session is being invoked by
 *                                         another thread, or an input holds control data out
 *                                         of range (a GATHER index; tether_last_error() names
 *                                         the op, the position and the value); the outputs
 *                                         are then undefined
 */
tether_status tether_session_invoke(tether_session_t session);

/* ---- on-device training ------------------------------------------------------------- */

/*
 * A trainer fits the dense layers of a model's *head* on the device: the chain of ops from
 * the tensor `head_input` (the features of a frozen part A, computed by a session of another
 * model or cached) to the model's first output. Head ops: FULLY_CONNECTED (float32, constant
 * dense weights and bias, fused activation NONE, RELU or RELU6), RELU, RELU6, MEAN (e.g.
 * global average pooling), RESHAPE and a final SOFTMAX. The loss is softmax cross-entropy
 * with int labels, averaged over the batch (computed from the logits: the SOFTMAX's input, or
 * the output when the head does not end in one), plus `l2 * sum(W^2)` over trained kernels
 * (Keras's L2 regularizer) and, with EWC, `(ewc_lambda / 2) * sum(F (w - w*)^2)`. Optimizers and schedule follow Keras 3: SGD with momentum
 * (m = momentum * m - lr * g; w += m), Adam (alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t);
 * w -= alpha * m / (sqrt(v) + epsilon)), CosineDecay.
 *
 * Everything lives in the caller's arena (tether_trainer_arena_size bytes): the trainer, the
 * weights being trained, gradients, optimizer slots, one batch of activations and the packed
 * copies the forward pass runs on. Nothing is allocated, ever; the model is only read and
 * must outlive the trainer. The forward pass runs the engine's own kernels, so
 * tether_trainer_predict gives bit for bit what a session of the exported model gives.
 * A trainer serves one thread at a time.
 */
typedef struct tether_trainer* tether_trainer_t;

typedef enum tether_optimizer {
  TETHER_OPTIMIZER_SGD = 0,
  TETHER_OPTIMIZER_ADAM = 1,
} tether_optimizer;

typedef enum tether_lr_schedule {
  TETHER_LR_CONSTANT = 0,
  TETHER_LR_COSINE = 1,     /* Keras CosineDecay(learning_rate, decay_steps, final_lr_ratio) */
} tether_lr_schedule;

/* Training settings; tether_train_config_default fills Keras's defaults. */
typedef struct tether_train_config {
  const char* head_input;   /* tensor name where the head starts; NULL = graph input 0 */
  uint32_t batch_size;      /* most rows one step takes (default 32) */
  uint32_t optimizer;       /* tether_optimizer (default ADAM) */
  float learning_rate;      /* default 1e-3 */
  float momentum;           /* SGD; 0 = plain SGD (default 0) */
  float beta_1, beta_2;     /* Adam (default 0.9, 0.999) */
  float epsilon;            /* Adam, added to sqrt(v) (default 1e-7) */
  float l2;                 /* L2 factor on trained kernels (default 0) */
  float dropout;            /* inverted dropout rate on each trained layer's input while
                               training, in [0, 1) (default 0 = off) */
  uint32_t schedule;        /* tether_lr_schedule (default CONSTANT) */
  uint32_t decay_steps;     /* COSINE: steps to decay over (>= 1) */
  float final_lr_ratio;     /* COSINE: Keras's alpha (default 0) */
  uint32_t train_layers;    /* the last N dense layers train, the others stay frozen;
                               0 = every dense layer of the head (default 0) */
  uint64_t seed;            /* dropout's random stream (default 0) */
  float ewc_lambda;         /* elastic weight consolidation: adds (ewc_lambda / 2) *
                               sum(fisher * (w - anchor)^2) per trained tensor (set with
                               tether_trainer_set_penalty); 0 = off (default) */
} tether_train_config;

/* Fills `config` with the defaults above. */
void tether_train_config_default(tether_train_config* config);

/* sizeof(tether_train_config), for bindings that mirror the struct. */
size_t tether_train_config_size(void);

/*
 * Bytes of arena a trainer of `model` with `config` needs (a multiple of
 * TETHER_ARENA_ALIGNMENT). Validates the head exactly as tether_trainer_create does.
 * @retval TETHER_STATUS_SUCCESS
 * @retval TETHER_STATUS_INVALID_ARGUMENT  NULL pointer, unknown head_input, a bad setting
 * @retval TETHER_STATUS_UNSUPPORTED_OP    a head op the trainer does not run (named)
 */
tether_status tether_trainer_arena_size(tether_model_t model, const tether_train_config* config,
                                        size_t* size_out);

/*
 * Creates a trainer in `arena` (TETHER_ARENA_ALIGNMENT-aligned, at least
 * tether_trainer_arena_size bytes), starting from the model's weights.
 * @retval (as tether_trainer_arena_size), INVALID_ARGUMENT for a small or misaligned arena
 */
tether_status tether_trainer_create(tether_model_t model, const tether_train_config* config,
                                    void* arena, size_t arena_size, tether_trainer_t* trainer_out);

/*
 * One optimizer step on `rows` (1..batch_size) head inputs (float32, each the head input's
 * element count, back to back) with labels in [0, classes).
 * @param loss_out  receives the batch's loss before the update (NULL = not wanted)
 * @retval TETHER_STATUS_INVALID_ARGUMENT  NULL pointer, rows out of range, a label out of range
 */
tether_status tether_trainer_step(tether_trainer_t trainer, const float* inputs,
                                  const int32_t* labels, size_t rows, float* loss_out);

/*
 * The head's output (probabilities when it ends in SOFTMAX) for `rows` (1..batch_size)
 * inputs with the current weights, dropout off: `rows` x classes floats into `outputs`.
 */
tether_status tether_trainer_predict(tether_trainer_t trainer, const float* inputs, size_t rows,
                                     float* outputs);

/*
 * The loss and every trained tensor's gradient for `rows` inputs, dropout off, without an
 * update (e.g. per-example gradients for a Fisher diagonal); gradients as tether_trainer_param
 * gives them.
 * @retval (as tether_trainer_step)
 */
tether_status tether_trainer_gradients(tether_trainer_t trainer, const float* inputs,
                                       const int32_t* labels, size_t rows, float* loss_out);

/*
 * Elastic weight consolidation for trained tensor `index`: the Fisher diagonal (one value per
 * element, >= 0) and the anchor (the weights learnt before; NULL = the current values), both
 * copied. Needs ewc_lambda > 0 at create.
 * @retval TETHER_STATUS_INVALID_ARGUMENT  NULL trainer or fisher, index out of range, EWC off,
 *                                         a negative or non-finite Fisher value
 */
tether_status tether_trainer_set_penalty(tether_trainer_t trainer, size_t index,
                                         const float* fisher, const float* anchor);

/* Elements of one head input and classes of the output; 0 for a NULL trainer. */
size_t tether_trainer_input_elements(tether_trainer_t trainer);
size_t tether_trainer_classes(tether_trainer_t trainer);

/* Trained tensors (each dense layer's weights, then its bias); 0 for a NULL trainer. */
size_t tether_trainer_param_count(tether_trainer_t trainer);

/*
 * Trained tensor `index`: its model tensor name, element count, current values and the
 * gradient of the last step (both owned by the trainer, valid until the next step).
 * @retval TETHER_STATUS_INVALID_ARGUMENT  NULL trainer or index out of range
 */
tether_status tether_trainer_param(tether_trainer_t trainer, size_t index, const char** name_out,
                                   size_t* elements_out, const float** value_out,
                                   const float** gradient_out);

/*
 * Writes the model with the trained weights, a complete .tmodel image of exactly the
 * model's size (tether_model_load's checks pass; the checksum is recomputed), into `out`.
 * @retval TETHER_STATUS_INVALID_ARGUMENT  NULL pointer or `size` is not the model's size
 */
tether_status tether_trainer_export(tether_trainer_t trainer, void* out, size_t size);

/* Bytes tether_trainer_export writes; 0 for a NULL trainer. */
size_t tether_trainer_export_size(tether_trainer_t trainer);

/* Ends the trainer (its arena may then be reused). NULL does nothing. */
void tether_trainer_destroy(tether_trainer_t trainer);

/* ---- kernel selection ---------------------------------------------------------------- */

/*
 * Kernels and memory. tether_model_load picks the kernels (below) and, for every
 * CONV_2D / FULLY_CONNECTED whose weights are constants, packs them once into the layout
 * of the chosen GEMM micro-kernel (panels of NR output channels, bias first). The packed
 * copy lives in one block obtained from the model's allocator at load time (so it counts
 * in the model's memory, not in the session arena) and is freed by tether_model_destroy;
 * int8 ops keep their per-channel requantization multipliers in the same block. Sparse
 * constants (format 1.1) are decoded into another such block; depthwise weights and all
 * other constants are used in place from `data`. tether_model_memory reports these
 * requests before a load. Sessions still allocate
 * nothing after create; num_threads > 1 starts that many - 1 worker threads (hosted builds)
 * and results are bit-identical for any thread count.
 */

/*
 * Name of the instruction set whose kernels models loaded from now on use: "scalar",
 * "avx2" (AVX2 + FMA), "avx512" (AVX-512F) or "neon". By default the best the CPU supports;
 * hosted builds honour the TETHER_ISA environment variable (same names, or "auto") until
 * tether_set_isa is called. Static string; never NULL.
 */
const char* tether_isa(void);

/*
 * Chooses the kernels for models loaded after this call (a loaded model keeps the kernels,
 * and the packed weights, it was loaded with). Not synchronised: call it before loading
 * models on other threads. Meant for tests and benchmarks.
 *
 * @param isa  "auto", "scalar", "avx2", "avx512" or "neon" (caller-owned, not kept)
 * @retval TETHER_STATUS_SUCCESS
 * @retval TETHER_STATUS_INVALID_ARGUMENT      NULL isa
 * @retval TETHER_STATUS_UNSUPPORTED_HARDWARE  unknown name, or this CPU or build lacks it
 */
tether_status tether_set_isa(const char* isa);

/* ---- profiling (hosted builds) ------------------------------------------------------- */

/*
 * Turns per-op timing of tether_session_invoke on or off, and clears the sums. Timing adds
 * two clock reads per op.
 * @retval TETHER_STATUS_SUCCESS
 * @retval TETHER_STATUS_INVALID_ARGUMENT      NULL session
 * @retval TETHER_STATUS_UNSUPPORTED_HARDWARE  no clock in this build (freestanding)
 */
tether_status tether_session_set_profiling(tether_session_t session, bool enable);

/*
 * Op `op_index`'s type and its mean wall time in milliseconds over the invokes made since
 * profiling was turned on (0 when there were none).
 * @retval TETHER_STATUS_SUCCESS
 * @retval TETHER_STATUS_INVALID_ARGUMENT  NULL pointer or op index out of range
 */
tether_status tether_session_op_profile(tether_session_t session, size_t op_index,
                                        tether_op* type_out, double* ms_out);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* TETHER_TETHER_H_ */
