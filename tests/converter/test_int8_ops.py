"""int8 pools, concatenation, pad, activations (ELU, GELU, LEAKY_RELU and PRELU included),
BATCH_MATMUL, MAXIMUM and MINIMUM: TensorFlow's full-integer quantizer -> LiteRT
and the same .tflite -> tether's TFLite frontend -> the engine, integers compared exactly.

Models take and return int8 (inference_input/output_type int8), so both runtimes see the
same integers in and must give the same integers out (FORMAT.md "Integer (int8) execution").
The oracle is LiteRT running TFLite's reference kernels (OpResolverType.BUILTIN_REF): LiteRT's
default path (the XNNPACK delegate) and its optimized builtin kernels (ruy GEMM) can round an
int8 convolution's output 1 LSB differently from the reference, and XNNPACK builds the
LOGISTIC/TANH tables rounding ties to even (TFLite: half away from zero), so an input whose
table value lands exactly on .5 differs by 1 LSB. Models without convolutions or dense
layers are checked against LiteRT's default path too, within that 1 LSB.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx_testlib import engine_run
from tether.converter import convert

L = keras.layers
CI = settings(max_examples=6, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])


def int8_tflite(model: keras.Model, rep: np.ndarray) -> bytes:
    """TensorFlow's full-integer converter with int8 inputs and outputs."""
    c = tf.lite.TFLiteConverter.from_keras_model(model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = lambda: ([x[None].astype(np.float32)] for x in rep)
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    c.inference_input_type = tf.int8
    c.inference_output_type = tf.int8
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return bytes(c.convert())


def litert(content: bytes, x: np.ndarray, delegates: bool = False,
           builtin: bool = False) -> np.ndarray:
    """LiteRT's reference kernels; `builtin`: its builtin kernels (for ops the reference
    resolver lacks), `delegates`: its default path (XNNPACK)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = (OpResolverType.AUTO if delegates
            else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if builtin
            else OpResolverType.BUILTIN_REF)
    it = Interpreter(model_content=content, experimental_op_resolver_type=kind)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def litert_ops(content: bytes) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    return [o["op_name"] for o in Interpreter(model_content=content)._get_ops_details()]


def check_exact(model: keras.Model, lo: float, hi: float, seed: int = 0, inputs: int = 3,
                expect: str | None = None) -> str:
    """Quantizes `model` with TF (calibration uniform in [lo, hi]) and checks tether's
    integers equal LiteRT's on random int8 inputs; returns the LiteRT op list."""
    shape = tuple(model.inputs[0].shape[1:])
    rng = np.random.default_rng(seed)
    content = int8_tflite(model, rng.uniform(lo, hi, (24, *shape)).astype(np.float32))
    ops = litert_ops(content)
    if expect is not None:
        assert expect in ops, ops
    data = convert(content).to_bytes()
    for k in range(inputs):
        x = rng.integers(-128, 128, (1, *shape)).astype(np.int8)
        if k == 0 and x.size >= 256:  # every int8 value at least once
            x.reshape(-1)[:256] = np.arange(-128, 128)
        want = litert(content, x)
        if not any(op in ops for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")):
            xnnpack = litert(content, x, delegates=True).astype(np.int32)
            assert np.abs(xnnpack - want).max() <= 1, ops
        got = engine_run(data, x)
        assert got.dtype == np.int8 and got.shape == want.shape, (got.dtype, got.shape)
        diff = np.abs(got.astype(np.int32) - want).max()
        assert diff == 0, f"{ops}: input {k}: {int((got != want).sum())} of {got.size} " \
                          f"integers differ, max {diff} LSB"
    return " ".join(ops)


def model_of(shape: tuple[int, ...], fn) -> keras.Model:
    x = keras.Input(shape)
    return keras.Model(x, fn(x))


def int8_island(content: bytes, op: str) -> bytes:
    """Rewrites TF's DEQUANTIZE -> `op` -> QUANTIZE (a float op between int8 tensors) into one
    int8 `op` reading and writing those int8 tensors: the model LiteRT's int8 kernel runs
    (TensorFlow's quantizer leaves ELU float, LiteRT has its int8 table)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(content, 0)
    sg = m.subgraphs[0]
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    kinds = [names[max(m.operatorCodes[o.opcodeIndex].builtinCode,
                       m.operatorCodes[o.opcodeIndex].deprecatedBuiltinCode)]
             for o in sg.operators]
    assert kinds == ["DEQUANTIZE", op, "QUANTIZE"], kinds
    deq, mid, q = sg.operators
    mid.inputs, mid.outputs = list(deq.inputs), list(q.outputs)
    sg.operators = [mid]
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


# -------------------------------------------------------------------------- elementwise ops


@pytest.mark.parametrize("act,expect,lo,hi", [
    ("sigmoid", "LOGISTIC", -7, 5),
    ("tanh", "TANH", -3, 2),
    ("hard_swish", "HARD_SWISH", -5, 4),
    ("hard_swish", "HARD_SWISH", -0.5, 9),
    ("relu", None, -2, 3),
])
def test_activation_exact(act: str, expect: str | None, lo: float, hi: float) -> None:
    check_exact(model_of((16, 16), lambda x: L.Activation(act)(x)), lo, hi, expect=expect)


@given(act=st.sampled_from(["sigmoid", "tanh", "hard_swish"]),
       lo=st.floats(-40, -0.05), hi=st.floats(0.05, 40))
@CI
def test_activation_exact_over_input_scales(act: str, lo: float, hi: float) -> None:
    # input scales from ~4e-4 to ~0.3: hard-swish's relu-ish multiplier shifts both ways
    check_exact(model_of((256,), lambda x: L.Activation(act)(x)), lo, hi, inputs=1)


@pytest.mark.parametrize("act,expect", [("sigmoid", "LOGISTIC"), ("tanh", "TANH"),
                                        ("hard_swish", "HARD_SWISH")])
def test_activation_after_conv_stays_separate_and_exact(act: str, expect: str) -> None:
    # TFLite keeps conv -> activation as two int8 ops with their own quantization; fusing
    # them would lose the conv output's quantization (passes.fuse_activations keeps them)
    keras.utils.set_random_seed(1)
    m = model_of((6, 6, 3), lambda x: L.Conv2D(5, 3, padding="same", activation=act)(x))
    check_exact(m, -2, 2, expect=expect)


def _prelu(shared_axes=None):
    init = keras.initializers.RandomUniform(-0.4, 1.3, seed=2)  # negative and > 1 slopes too
    return L.PReLU(alpha_initializer=init, shared_axes=shared_axes)


@pytest.mark.parametrize("name,fn,expect,lo,hi", [
    ("gelu", lambda x: L.Activation("gelu")(x), "GELU", -5, 4),
    ("gelu_narrow", lambda x: L.Activation("gelu")(x), "GELU", -1, 0.7),
    ("gelu_tanh", lambda x: keras.activations.gelu(x, approximate=True), "GELU", -5, 4),
    ("leaky_relu", lambda x: L.LeakyReLU(0.3)(x), "LEAKY_RELU", -3, 2),
    ("leaky_relu_0.01", lambda x: L.LeakyReLU(0.01)(x), "LEAKY_RELU", -9, 4),
    ("leaky_relu_1.7", lambda x: L.LeakyReLU(1.7)(x), "LEAKY_RELU", -2, 3),
])
def test_table_and_leaky_activations_exact(name: str, fn, expect: str, lo: float,
                                           hi: float) -> None:
    check_exact(model_of((16, 16), fn), lo, hi, expect=expect)


@pytest.mark.parametrize("shape,shared_axes", [((5, 4, 3), None), ((5, 4, 3), [1, 2]),
                                               ((6, 7), [1]), ((20,), None)])
def test_prelu_exact(shape: tuple[int, ...], shared_axes: list[int] | None) -> None:
    keras.utils.set_random_seed(3)
    check_exact(model_of(shape, lambda x: _prelu(shared_axes)(x)), -3, 2, inputs=4,
                expect="PRELU")


def test_prelu_after_conv_exact() -> None:
    keras.utils.set_random_seed(4)
    m = model_of((6, 6, 3), lambda x: _prelu([1, 2])(L.Conv2D(5, 3, padding="same")(x)))
    check_exact(m, -2, 2, expect="PRELU")


@pytest.mark.parametrize("lo,hi", [(-6, 3), (-0.8, 5), (-2, 0.3)])
def test_elu_table_exact(lo: float, hi: float) -> None:
    # TensorFlow's quantizer keeps ELU float; LiteRT's int8 ELU (a table of expm1) runs the
    # same tensors once the DEQUANTIZE / QUANTIZE around it are removed. The reference
    # resolver has no ELU: its builtin kernel (the same table) is the oracle
    shape = (16, 16)
    rng = np.random.default_rng(0)
    content = int8_island(int8_tflite(model_of(shape, lambda x: L.ELU()(x)),
                                      rng.uniform(lo, hi, (24, *shape)).astype(np.float32)),
                          "ELU")
    data = convert(content).to_bytes()
    for k in range(3):
        x = rng.integers(-128, 128, (1, *shape)).astype(np.int8)
        if k == 0:
            x.reshape(-1)[:256] = np.arange(-128, 128)
        want, got = litert(content, x, builtin=True), engine_run(data, x)
        assert got.dtype == np.int8 and got.shape == want.shape
        assert np.array_equal(got, want), int((got != want).sum())


LAYERS = {  # name -> (input shape, model body, an op TF's quantizer must have emitted)
    "hard_silu": ((20,), lambda x: L.Activation("hard_silu")(x), "HARD_SWISH"),
    "relu6_after_concat": ((5,), lambda x: L.ReLU(6.0)(L.Concatenate()([x, L.Dense(3)(x)])),
                           "RELU6"),
    "relu_after_add": ((5,), lambda x: L.ReLU()(L.Add()([x, L.Dense(5)(x)])), "ADD"),
    "relu_after_max_pool": ((4, 4, 2), lambda x: L.ReLU()(L.MaxPooling2D(2)(L.Conv2D(3, 1)(x))),
                            "MAX_POOL_2D"),
    "permute_dense3d": ((3, 5), lambda x: L.Permute((2, 1))(L.Dense(4)(x)), "TRANSPOSE"),
    "dense_sigmoid": ((5,), lambda x: L.Dense(6, activation="sigmoid")(x), "LOGISTIC"),
    "pad_constant": ((4, 4, 2), lambda x: L.Conv2D(2, 2)(keras.ops.pad(
        x, [[0, 0], [1, 2], [2, 0], [0, 0]], constant_values=1.5)), "PADV2"),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_exact(name: str) -> None:
    keras.utils.set_random_seed(5)
    shape, fn, expect = LAYERS[name]
    check_exact(model_of(shape, fn), -3, 3, expect=expect)


# ------------------------------------------------------- batch matmul, maximum, minimum


class _Fn(L.Layer):
    """A layer running `fn` (keras.ops) in call: a model body without Dense layers."""

    def __init__(self, fn, **kwargs):
        super().__init__(**kwargs)
        self.fn = fn

    def call(self, x):
        return self.fn(x)


def _t(x):
    return keras.ops.swapaxes(x, -1, -2)


MATMULS = {  # name -> (input shape, model body); TF folds the swapaxes into adj_x / adj_y
    "computed": ((2, 6, 8), lambda x: _Fn(lambda t: keras.ops.matmul(
        t * 1.5, keras.ops.reshape(t - 0.25, (-1, 2, 8, 6))))(x)),
    "transpose_b": ((2, 6, 8), lambda x: _Fn(lambda t: keras.ops.matmul(t * 1.5, _t(t + 0.5)))(x)),
    "transpose_a": ((2, 6, 8), lambda x: _Fn(lambda t: keras.ops.matmul(_t(t * 1.5), t - 0.25))(x)),
    "broadcast": ((3, 5, 4), lambda x: _Fn(lambda t: keras.ops.matmul(
        t * 2.0, keras.ops.reshape(t[:, :1] - 1.0, (-1, 1, 4, 5))))(x)),
    # a batched constant RHS stays BATCH_MATMUL (a 2-D one becomes FULLY_CONNECTED)
    "constant_rhs": ((2, 6, 8), lambda x: _Fn(lambda t: keras.ops.matmul(
        t, np.random.default_rng(4).normal(0, 0.3, (2, 8, 3)).astype(np.float32) + 0.1))(x)),
}


@pytest.mark.parametrize("name", sorted(MATMULS))
def test_batch_matmul_exact(name: str) -> None:
    """TFLite's int8 BatchMatMul: int32 sums of (a - z_a)(b - z_b), both zero points nonzero,
    s_a s_b / s_y as one multiplier; both operands computed (adjoint flags), or a constant RHS
    TensorFlow quantized asymmetric per tensor."""
    keras.utils.set_random_seed(3)
    shape, fn = MATMULS[name]
    check_exact(model_of(shape, fn), -2, 2, inputs=6, expect="BATCH_MATMUL")


@given(lo=st.floats(-8, -0.1), hi=st.floats(0.1, 8), scale=st.floats(0.05, 20))
@CI
def test_batch_matmul_exact_over_scales(lo: float, hi: float, scale: float) -> None:
    body = _Fn(lambda t: keras.ops.matmul(t * scale, _t(t - 0.25)))
    check_exact(model_of((3, 5, 7), body), lo, hi, inputs=2, expect="BATCH_MATMUL")


MINMAX = {  # name -> (model body, the op); TF gives inputs and output one quantization
    "maximum_layer": (lambda x: L.Maximum()([_Fn(lambda t: t * 1.5)(x),
                                             _Fn(lambda t: t - 0.5)(x)]), "MAXIMUM"),
    "minimum_layer": (lambda x: L.Minimum()([_Fn(lambda t: t * 1.5)(x),
                                             _Fn(lambda t: t - 0.5)(x)]), "MINIMUM"),
    "maximum_constant": (lambda x: _Fn(lambda t: keras.ops.maximum(t, 0.5))(x), "MAXIMUM"),
    "minimum_constant_row": (lambda x: _Fn(lambda t: keras.ops.minimum(
        t, np.linspace(-3, 5, 6).astype(np.float32)))(x), "MINIMUM"),
}


@pytest.mark.parametrize("name", sorted(MINMAX))
def test_maximum_minimum_exact(name: str) -> None:
    fn, op = MINMAX[name]
    ops = check_exact(model_of((4, 6), fn), -2, 2, inputs=4, expect=op)
    assert "QUANTIZE" not in ops.split(), ops  # one shared quantization, no requantization


# --------------------------------------------------------------------------------- pools


@given(h=st.integers(2, 9), w=st.integers(2, 9), c=st.integers(1, 5), k=st.integers(1, 3),
       s=st.integers(1, 2), same=st.booleans(), avg=st.booleans())
@CI
def test_pool_exact(h: int, w: int, c: int, k: int, s: int, same: bool, avg: bool) -> None:
    k = min(k, h, w)
    layer = (L.AveragePooling2D if avg else L.MaxPooling2D)(
        k, strides=s, padding="same" if same else "valid")
    check_exact(model_of((h, w, c), layer), -3, 4, inputs=2,
                expect="AVERAGE_POOL_2D" if avg else "MAX_POOL_2D")


def test_global_and_padded_average_pool_exact() -> None:
    check_exact(model_of((7, 5, 4), lambda x: L.AveragePooling2D(3, 2, padding="same")(x)),
                -1, 6, expect="AVERAGE_POOL_2D")


@given(h=st.integers(1, 9), w=st.integers(1, 11), c=st.sampled_from([3, 16, 40]),
       k=st.sampled_from([2, 3, 5]), s=st.integers(1, 2), d=st.integers(1, 2))
@CI
def test_depthwise_same_padding_exact(h: int, w: int, c: int, k: int, s: int, d: int) -> None:
    """SAME-padded int8 depthwise convolutions (small inputs take the engine's padded copy,
    every window inside it) equal TFLite's reference kernels."""
    if d > 1 and s > 1:
        s = 1  # Keras refuses strides with dilation
    check_exact(model_of((h, w, c), L.DepthwiseConv2D(k, strides=s, dilation_rate=d,
                                                      padding="same")), -1, 1, inputs=2,
                expect="DEPTHWISE_CONV_2D")


def test_residual_add_split_over_threads_is_exact() -> None:
    """An ADD big enough to be split over the pool (64x64x16 int8): 1, 2 and 3 threads give
    TFLite's integers, byte for byte."""
    from tether.device import Engine

    rng = np.random.default_rng(3)
    model = model_of((64, 64, 16), lambda x: L.Add()([L.ReLU()(x), x]))
    content = int8_tflite(model, rng.uniform(-1, 1, (24, 64, 64, 16)).astype(np.float32))
    assert "ADD" in litert_ops(content)
    data = convert(content).to_bytes()
    x = rng.integers(-128, 128, (1, 64, 64, 16)).astype(np.int8)
    want = litert(content, x)
    for threads in (1, 2, 3):
        got = np.asarray(Engine(data, threads=threads).run(x))
        assert np.array_equal(got, want), threads


def test_dense_rounds_once_like_tflite() -> None:
    """TFLite's int8 FULLY_CONNECTED rounds x * M once where its convolutions round twice
    (SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT): over 512 outputs and 40
    inputs a few land where the two differ (4 of 20,480 here with two roundings)."""
    check_exact(model_of((256,), L.Dense(512)), -1, 1, inputs=40, expect="FULLY_CONNECTED")


@pytest.mark.parametrize("avg", [False, True])
def test_pool_wide_channels_exact(avg: bool) -> None:
    """More channels than the kernel's block of 256 (the sums are kept per block)."""
    layer = (L.AveragePooling2D if avg else L.MaxPooling2D)(3, strides=2, padding="same")
    check_exact(model_of((5, 4, 300), layer), -1, 6, inputs=2,
                expect="AVERAGE_POOL_2D" if avg else "MAX_POOL_2D")


# ------------------------------------------------------------------------ concat and pad


@given(n=st.integers(1, 6), m=st.integers(1, 6), axis=st.sampled_from([-1, 1]))
@CI
def test_concat_of_differently_scaled_branches_exact(n: int, m: int, axis: int) -> None:
    keras.utils.set_random_seed(n * 7 + m)

    def fn(x):
        a = L.Conv2D(n, 1)(x)
        b = L.Conv2D(m if axis == -1 else 3, 1, activation="relu")(x)
        return L.Concatenate(axis=axis)([a, b] if axis == -1 else [x, b])

    check_exact(model_of((4, 3, 3), fn), -2, 2, inputs=2, expect="CONCATENATION")


@given(t=st.integers(0, 2), b=st.integers(0, 2), lft=st.integers(0, 2), r=st.integers(0, 2))
@CI
def test_zero_padding_exact(t: int, b: int, lft: int, r: int) -> None:
    keras.utils.set_random_seed(t + b)

    def fn(x):
        y = L.ZeroPadding2D(((t, b), (lft, r)))(x)
        return L.Conv2D(2, 2)(y)  # keeps the PAD from folding into the output

    check_exact(model_of((4, 5, 2), fn), 0.5, 3, inputs=2)


@given(k=st.integers(2, 40), lo=st.floats(-20, -0.5), hi=st.floats(0.5, 20))
@CI
def test_softmax_exact_over_input_scales(k: int, lo: float, hi: float) -> None:
    check_exact(model_of((k,), lambda x: L.Softmax()(x)), lo, hi, inputs=4, expect="SOFTMAX")


def test_softmax_exact() -> None:
    keras.utils.set_random_seed(3)
    m = model_of((24,), lambda x: L.Softmax()(L.Dense(10)(x)))
    check_exact(m, -3, 3, inputs=5, expect="SOFTMAX")


# -------------------------------------------------------------------------- whole blocks


def test_mobilenet_v3_style_block_exact() -> None:
    keras.utils.set_random_seed(4)

    def fn(x):
        y = L.ZeroPadding2D(1)(x)
        y = L.Conv2D(8, 3, strides=2)(y)
        y = L.Activation("hard_swish")(y)
        d = L.DepthwiseConv2D(3, padding="same")(y)
        d = L.Activation("hard_swish")(d)
        se = L.GlobalAveragePooling2D(keepdims=True)(d)
        se = L.Conv2D(4, 1, activation="relu")(se)
        se = L.Conv2D(8, 1, activation="sigmoid")(se)
        d = L.Multiply()([d, se])
        c = L.Concatenate()([y, d])
        c = L.MaxPooling2D(2)(c)
        c = L.AveragePooling2D(2, padding="same")(c)
        c = L.Activation("tanh")(L.Dense(6)(L.Flatten()(c)))
        return L.Softmax()(L.Dense(5)(c))

    ops = check_exact(model_of((12, 12, 3), fn), -1, 1, inputs=4)
    for op in ("HARD_SWISH", "LOGISTIC", "TANH", "CONCATENATION", "MAX_POOL_2D",
               "AVERAGE_POOL_2D", "PAD", "SOFTMAX"):
        assert op in ops, ops


@pytest.mark.slow
def test_mobilenet_v3_small_int8_bit_exact() -> None:
    # 19 int8 HARD_SWISH ops, hard-sigmoid SE blocks (ADD+RELU6, MUL), MEAN, conv/depthwise
    keras.utils.set_random_seed(0)
    m = keras.applications.MobileNetV3Small(input_shape=(96, 96, 3), weights=None,
                                            include_preprocessing=False,
                                            classifier_activation=None)
    ops = check_exact(m, -1, 1, inputs=8, expect="HARD_SWISH")
    assert ops.count("HARD_SWISH") >= 10
