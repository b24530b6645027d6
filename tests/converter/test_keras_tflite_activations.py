"""ELU, LeakyReLU, PReLU and Conv1D from Keras, and ELU, LEAKY_RELU, PRELU and Conv1D's
EXPAND_DIMS + CONV_2D + RESHAPE from TFLite (dilated: SPACE_TO_BATCH_ND before, BATCH_TO_SPACE_ND
after), and ReLU with negative_slope / max_value.

Each small Keras model (the activation after a Conv2D or as a conv's `activation`; Conv1D
with each padding, stride 2, dilation 2, groups) runs in the engine against Keras's own
outputs, and its `tf.lite.TFLiteConverter.from_keras_model` fp32 file against LiteRT: within
1e-5 relative (max |y - ref| / max |ref|). Full-integer LEAKY_RELU / PRELU files import as
int8 ops.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert")

from onnx_testlib import engine_run, litert_run, rel_err
from tether.converter import convert
from tether.converter._internal.frontends.keras import from_keras
from tether.converter._internal.ops import DType

from tether.errors import ConversionError
from tether.peers import keras_to_tflite

TOL = 1e-5
L = keras.layers
PARITY: dict[str, float] = {}


def _x(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2.0, 2.0, shape).astype(np.float32)


def _after_conv2d(act: Callable[[], object]) -> Callable[[], keras.Model]:
    def build() -> keras.Model:
        x = keras.Input((6, 7, 3))
        return keras.Model(x, act()(L.Conv2D(4, 3, padding="same")(x)))
    return build


def _conv2d(**kw) -> Callable[[], keras.Model]:
    def build() -> keras.Model:
        x = keras.Input((6, 7, 3))
        return keras.Model(x, L.Conv2D(4, 3, **kw)(x))
    return build


def _conv1d(**kw) -> Callable[[], keras.Model]:
    def build() -> keras.Model:
        x = keras.Input((17, 4))
        args = {"filters": 6, "kernel_size": 3, **kw}
        return keras.Model(x, L.Conv1D(**args)(x))
    return build


# (id, model builder, an op the converted file holds, runs through TFLite too)
MODELS = [
    ("elu", _after_conv2d(L.ELU), "ELU", True),
    ("elu-alpha0.5", _after_conv2d(lambda: L.ELU(alpha=0.5)), "ELU", False),  # TFLite: SELECT
    ("leaky-relu", _after_conv2d(L.LeakyReLU), "LEAKY_RELU", True),
    ("leaky-relu-0.05", _after_conv2d(lambda: L.LeakyReLU(negative_slope=0.05)), "LEAKY_RELU",
     True),
    ("activation-elu", _after_conv2d(lambda: L.Activation("elu")), "ELU", True),
    ("activation-leaky-relu", _after_conv2d(lambda: L.Activation("leaky_relu")),
     "LEAKY_RELU", True),
    ("conv2d-elu", _conv2d(activation="elu"), "ELU", True),
    ("conv2d-leaky-relu", _conv2d(activation="leaky_relu"), "LEAKY_RELU", True),
    ("prelu-per-element", _after_conv2d(L.PReLU), "PRELU", True),
    ("prelu-per-channel", _after_conv2d(lambda: L.PReLU(shared_axes=[1, 2])), "PRELU", True),
    ("prelu-shared-h", _after_conv2d(lambda: L.PReLU(shared_axes=[1])), "PRELU", True),
    ("conv1d-valid", _conv1d(padding="valid"), "CONV_2D", True),
    ("conv1d-same", _conv1d(padding="same"), "CONV_2D", True),
    ("conv1d-causal", _conv1d(padding="causal"), "CONV_2D", True),
    ("conv1d-same-stride2", _conv1d(padding="same", strides=2), "CONV_2D", True),
    ("conv1d-valid-stride2", _conv1d(padding="valid", strides=2, kernel_size=4), "CONV_2D",
     True),
    ("conv1d-same-dilation2", _conv1d(padding="same", dilation_rate=2), "CONV_2D", True),
    ("conv1d-causal-dilation2", _conv1d(padding="causal", dilation_rate=2), "CONV_2D", True),
    ("conv1d-valid-dilation2", _conv1d(padding="valid", dilation_rate=2), "CONV_2D", True),
    ("conv1d-groups2-relu", _conv1d(groups=2, activation="relu"), "CONV_2D", True),
    ("conv1d-elu-nobias", _conv1d(padding="same", activation="elu", use_bias=False), "ELU",
     True),
    ("conv1d-leaky-relu", _conv1d(padding="causal", activation="leaky_relu"), "LEAKY_RELU",
     True),
    ("relu-slope", _after_conv2d(lambda: L.ReLU(negative_slope=0.1)), "LEAKY_RELU", True),
    ("relu-max4", _after_conv2d(lambda: L.ReLU(max_value=4.0)), "CLAMP", False),
    ("relu-slope-max", _after_conv2d(lambda: L.ReLU(max_value=0.5, negative_slope=0.3)), "CLAMP",
     False),
]
IDS = [m[0] for m in MODELS]


def _model(build: Callable[[], keras.Model]) -> keras.Model:
    """The model with random weights everywhere (PReLU's alpha starts at zero)."""
    keras.utils.set_random_seed(0)
    m = build()
    rng = np.random.default_rng(3)
    for layer in m.layers:
        if isinstance(layer, L.PReLU):
            layer.alpha.assign(rng.uniform(-0.5, 0.8, layer.alpha.shape).astype("float32"))
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.uniform(-0.5, 0.5, layer.bias.shape).astype("float32"))
    return m


@pytest.mark.parametrize("name, build, op, _tfl", MODELS, ids=IDS)
def test_keras_matches_keras(name, build, op, _tfl) -> None:
    m = _model(build)
    x = _x((2,) + tuple(m.inputs[0].shape[1:]))
    ref = np.asarray(m(x))
    tm = convert(m, batch_size=2)
    y = engine_run(tm.to_bytes(), x)
    assert y.shape == ref.shape and y.dtype == np.float32
    PARITY[f"keras/{name}"] = rel_err(y, ref)
    assert PARITY[f"keras/{name}"] < TOL, (name, np.abs(y - ref).max())
    assert op in tm.report.ops_after


@pytest.mark.parametrize("name, build, op", [m[:3] for m in MODELS if m[3]],
                         ids=[m[0] for m in MODELS if m[3]])
def test_tflite_matches_litert(name, build, op) -> None:
    content = keras_to_tflite(_model(build))
    m = _model(build)
    x = _x((1,) + tuple(m.inputs[0].shape[1:]))
    ref = litert_run(content, x)
    tm = convert(content)
    y = engine_run(tm.to_bytes(), x)
    PARITY[f"tflite/{name}"] = rel_err(y, ref)
    assert PARITY[f"tflite/{name}"] < TOL, (name, np.abs(y - ref).max())
    assert op in tm.report.ops_after


def test_keras_activation_alphas_are_recorded() -> None:
    """Layers carry their own alpha; activation='elu' / 'leaky_relu' Keras's defaults."""
    x = keras.Input((4, 4, 2))
    y = L.Activation("elu")(L.Activation("leaky_relu")(x))
    y = L.LeakyReLU(negative_slope=0.05)(L.ELU(alpha=0.5)(L.LeakyReLU()(y)))
    g = from_keras(keras.Model(x, y))
    alphas = [(n.op.name, n.attrs["alpha"]) for n in g.nodes]
    assert alphas == [("LEAKY_RELU", (0.2,)), ("ELU", (1.0,)), ("LEAKY_RELU", (0.3,)),
                      ("ELU", (0.5,)), ("LEAKY_RELU", (0.05,))]


@pytest.mark.parametrize("name", ["leaky-relu", "prelu-per-channel", "prelu-per-element"])
def test_tflite_int8_leaky_relu_and_prelu_keep_tflite_integers(name: str) -> None:
    """TensorFlow's full-integer LEAKY_RELU / PRELU import as int8 ops with the file's
    quantization (PRELU's slope an int8 constant of its own); bit-exactness against LiteRT's
    reference kernels is tests/converter/test_int8_ops.py's."""
    build, op = next((b, o) for n, b, o, _ in MODELS if n == name)
    m = _model(build)
    content = keras_to_tflite(m, representative=_x((8, 6, 7, 3)))
    tm = convert(content)
    node = next(n for n in tm.graph.nodes if n.op.name == op)
    tensors = [tm.graph.tensors[t] for t in node.inputs + node.outputs]
    assert all(t.dtype == DType.INT8 and t.quant is not None for t in tensors), tensors
    if op == "PRELU":
        assert tensors[1].is_constant and tensors[1].quant.zero_point == (0,)
    x = _x((1, 6, 7, 3), seed=4)
    ref = litert_run(content, x)
    assert rel_err(engine_run(tm.to_bytes(), x), ref) < 0.02
