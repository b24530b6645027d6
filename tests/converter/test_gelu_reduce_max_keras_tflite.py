"""GELU and REDUCE_MAX from Keras (Activation("gelu"), Dense(activation="gelu"), gelu with
approximate=True as a functools.partial, GlobalMaxPooling1D/2D) and TFLite (GELU in both
forms, REDUCE_MAX over several axes, fp32; int8 REDUCE_MAX keeps LiteRT's integers).

Keras layers are compared with Keras's own outputs, TFLite models with LiteRT running the
same file: fp32 within 1e-4 relative, int8 REDUCE_MAX exact (the max of q moves integers).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from onnx_testlib import engine_run, litert_run, rel_err
from tether.converter import convert

TOL = 1e-4
L = keras.layers
PARITY: dict[str, float] = {}


def _x(seed: int, shape, lo=-4.0, hi=4.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(lo, hi, shape).astype(np.float32)


KERAS = [
    ("activation-gelu", (1, 6, 8), lambda: L.Activation("gelu"), "GELU"),
    ("activation-gelu-tanh", (1, 6, 8),
     lambda: L.Activation(functools.partial(keras.activations.gelu, approximate=True)), "GELU"),
    ("dense-gelu", (1, 6, 8), lambda: L.Dense(5, activation="gelu"), "GELU"),
    ("global-max-1d", (1, 9, 4), lambda: L.GlobalMaxPooling1D(), "REDUCE_MAX"),
    ("global-max-1d-keepdims", (1, 9, 4), lambda: L.GlobalMaxPooling1D(keepdims=True),
     "REDUCE_MAX"),
    ("global-max-2d", (1, 5, 7, 3), lambda: L.GlobalMaxPooling2D(), "MAX_POOL_2D"),
]


@pytest.mark.parametrize("name, shape, layer, op", KERAS, ids=[k[0] for k in KERAS])
def test_keras_layers_match_keras(name, shape, layer, op) -> None:
    x_in = keras.Input(shape[1:])
    m = keras.Model(x_in, layer()(x_in))
    x = _x(1, shape)
    ref = np.asarray(m(x))
    tm = convert(m)
    y = engine_run(tm.to_bytes(), x)
    assert y.shape == ref.shape and y.dtype == np.float32
    PARITY[name] = rel_err(y, ref)
    assert PARITY[name] < TOL, (name, np.abs(y - ref).max())
    assert op in tm.report.ops_after


def _tflite(fn, shape, int8: bool = False) -> bytes:
    spec = tf.TensorSpec(shape, tf.float32)
    f = tf.function(fn, input_signature=[spec])
    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    if int8:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        rep = [_x(100 + k, shape) for k in range(8)]
        conv.representative_dataset = lambda: ([r] for r in rep)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return bytes(conv.convert())


TFL = [
    ("gelu", (1, 5, 7, 3), lambda x: tf.nn.gelu(x, approximate=False), "GELU"),
    ("gelu-tanh", (1, 5, 7, 3), lambda x: tf.nn.gelu(x, approximate=True), "GELU"),
    ("reduce-max-hw", (1, 5, 7, 3), lambda x: tf.reduce_max(x, axis=[1, 2]), "REDUCE_MAX"),
    ("reduce-max-c-keep", (1, 5, 7, 3), lambda x: tf.reduce_max(x, axis=-1, keepdims=True),
     "REDUCE_MAX"),
]


@pytest.mark.parametrize("name, shape, fn, op", TFL, ids=[k[0] for k in TFL])
def test_tflite_matches_litert(name, shape, fn, op) -> None:
    content = _tflite(fn, shape)
    x = _x(2, shape)
    ref = litert_run(content, x)
    tm = convert(content)
    assert op in tm.report.ops_after, tm.report.ops_after
    y = engine_run(tm.to_bytes(), x)
    PARITY["tflite-" + name] = rel_err(y, ref)
    assert PARITY["tflite-" + name] < TOL, (name, np.abs(y - ref).max())


def test_tflite_int8_reduce_max_exact() -> None:
    shape = (1, 5, 7, 3)
    content = _tflite(lambda x: tf.reduce_max(x, axis=[1, 2], keepdims=True), shape, int8=True)
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content)
    d = it.get_input_details()[0]
    s, z = d["quantization"]
    q = np.clip(np.round(_x(3, shape) / s) + z, -128, 127).astype(np.int8)
    ref = litert_run(content, q)
    tm = convert(content)
    assert "REDUCE_MAX" in tm.report.ops_after
    y = engine_run(tm.to_bytes(), q)
    np.testing.assert_array_equal(y, ref)
