"""RESIZE from Keras (UpSampling2D, Resizing) and TFLite (RESIZE_BILINEAR,
RESIZE_NEAREST_NEIGHBOR with align_corners / half_pixel_centers, fp32 and full int8).

Keras layers are compared with Keras's own outputs, TFLite models with LiteRT running the
same file: fp32 within 1e-4 relative; int8 integers equal to LiteRT's reference kernels
(`OpResolverType.BUILTIN_REF`: nearest copies values, bilinear is ResizeBilinearInteger, the
engine's arithmetic) and, for nearest, to its default path; LiteRT's default bilinear runs in
XNNPACK, whose own fixed point lands within 1 LSB of the reference kernel.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from onnx_testlib import engine_run, rel_err
from tether.converter import convert

from tether.errors import ConversionError

TOL = 1e-4
L = keras.layers
X_SHAPE = (1, 5, 7, 3)


def _x(seed: int, shape=X_SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2, 2, shape).astype(np.float32)


# ---------------------------------------------------------------------------------- Keras

KERAS = [
    ("upsampling-nearest", lambda: L.UpSampling2D((2, 3), interpolation="nearest")),
    ("upsampling-bilinear", lambda: L.UpSampling2D((3, 2), interpolation="bilinear")),
    ("resizing-bilinear-up", lambda: L.Resizing(9, 11, interpolation="bilinear")),
    ("resizing-bilinear-down", lambda: L.Resizing(3, 4, interpolation="bilinear")),
    ("resizing-nearest-up", lambda: L.Resizing(8, 13, interpolation="nearest")),
    ("resizing-nearest-down", lambda: L.Resizing(2, 5, interpolation="nearest")),
]


@pytest.mark.parametrize("name, layer", KERAS, ids=[k[0] for k in KERAS])
def test_keras_layers_match_keras(name, layer) -> None:
    x_in = keras.Input(X_SHAPE[1:])
    m = keras.Model(x_in, layer()(x_in))
    x = _x(1)
    ref = np.asarray(m(x))
    tm = convert(m)
    y = engine_run(tm.to_bytes(), x)
    assert y.shape == ref.shape and y.dtype == np.float32
    assert rel_err(y, ref) < TOL, (name, np.abs(y - ref).max())
    assert "RESIZE" in tm.report.ops_after


def test_keras_refusals_name_the_layer() -> None:
    x_in = keras.Input(X_SHAPE[1:])
    m = keras.Model(x_in, L.Resizing(4, 4, crop_to_aspect_ratio=True, name="crop")(x_in))
    with pytest.raises(ConversionError, match=r"'crop' \(Resizing\): crop_to_aspect_ratio=True"):
        convert(m)
    m = keras.Model(x_in, L.UpSampling2D(2, interpolation="bicubic", name="bic")(x_in))
    with pytest.raises(ConversionError, match=r"'bic' \(UpSampling2D\): interpolation='bicubic'"):
        convert(m)


# --------------------------------------------------------------------------------- TFLite

TFL = [  # (name, bilinear, align_corners, half_pixel_centers, output size)
    ("bilinear-asymmetric-up", True, False, False, (9, 12)),
    ("bilinear-half_pixel-up", True, False, True, (11, 10)),
    ("bilinear-half_pixel-down", True, False, True, (3, 4)),
    ("bilinear-align_corners-up", True, True, False, (9, 13)),
    ("bilinear-align_corners-down", True, True, False, (2, 3)),
    ("nearest-asymmetric-up", False, False, False, (10, 15)),
    ("nearest-asymmetric-down", False, False, False, (3, 4)),
    ("nearest-half_pixel-up", False, False, True, (8, 11)),
    ("nearest-half_pixel-down", False, False, True, (2, 5)),
    ("nearest-align_corners-up", False, True, False, (9, 13)),
    ("nearest-align_corners-down", False, True, False, (3, 4)),
]


def _tflite(bilinear: bool, align: bool, half: bool, size, int8: bool) -> bytes:
    spec = tf.TensorSpec(X_SHAPE, tf.float32)

    @tf.function(input_signature=[spec])
    def f(x):
        op = tf.raw_ops.ResizeBilinear if bilinear else tf.raw_ops.ResizeNearestNeighbor
        return op(images=x, size=tf.constant(size, tf.int32), align_corners=align,
                  half_pixel_centers=half)

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    if int8:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        rep = [_x(100 + k) for k in range(8)]
        conv.representative_dataset = lambda: ([r] for r in rep)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return bytes(conv.convert())


def _litert(content: bytes, x: np.ndarray, reference: bool) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
    it = Interpreter(model_content=content, experimental_op_resolver_type=kind)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


@pytest.mark.parametrize("name, bilinear, align, half, size", TFL, ids=[t[0] for t in TFL])
def test_tflite_fp32_matches_litert(name, bilinear, align, half, size) -> None:
    content = _tflite(bilinear, align, half, size, int8=False)
    x = _x(2)
    ref = _litert(content, x, reference=False)
    tm = convert(content)
    y = engine_run(tm.to_bytes(), x)
    assert y.shape == ref.shape and y.dtype == np.float32
    assert rel_err(y, ref) < TOL, (name, np.abs(y - ref).max())
    assert "RESIZE" in tm.report.ops_after


@pytest.mark.parametrize("name, bilinear, align, half, size", TFL, ids=[t[0] for t in TFL])
def test_tflite_int8_integers_equal_litert(name, bilinear, align, half, size) -> None:
    content = _tflite(bilinear, align, half, size, int8=True)
    tm = convert(content)
    ops = tm.report.ops_after
    assert "RESIZE" in ops and "QUANTIZE" not in ops and "DEQUANTIZE" not in ops, ops
    from ai_edge_litert.interpreter import Interpreter

    d = Interpreter(model_content=content).get_input_details()[0]
    s, z = d["quantization"]
    for seed in range(3):
        xq = np.clip(np.round(_x(10 + seed) / s) + z, -128, 127).astype(np.int8)
        y = engine_run(tm.to_bytes(), xq)
        assert y.dtype == np.int8
        for reference in (True, False):  # TFLite's reference kernel, then XNNPACK's
            ref = _litert(content, xq, reference)
            assert y.shape == ref.shape
            diff = np.abs(y.astype(np.int32) - ref.astype(np.int32))
            # LiteRT's default path runs RESIZE_BILINEAR in XNNPACK, whose int8 kernel
            # interpolates with its own fixed point: up to 1 LSB from TFLite's reference
            # kernel (the engine's arithmetic). Nearest copies values on every path.
            slack = 1 if bilinear and not reference else 0
            assert diff.max() <= slack, (name, "reference" if reference else "default",
                                         int(diff.max()), int((diff > 0).sum()))


def _keras_resizers() -> keras.Model:
    x_in = keras.Input(X_SHAPE[1:])
    a = L.Resizing(9, 11, interpolation="bilinear")(x_in)
    b = L.Resizing(4, 6, interpolation="nearest")(a)
    return keras.Model(x_in, L.UpSampling2D(2, interpolation="bilinear")(b))


def test_keras_model_through_tflite_converter() -> None:
    # tf.lite.TFLiteConverter on a Keras model, fp32 and full int8 (float interface)
    from tether.peers import keras_to_tflite

    m = _keras_resizers()
    x = _x(3)
    fp32 = keras_to_tflite(m)
    tm = convert(fp32)
    assert tm.report.ops_after.get("RESIZE") == 3
    assert rel_err(engine_run(tm.to_bytes(), x), _litert(fp32, x, False)) < TOL
    int8 = keras_to_tflite(m, np.stack([_x(100 + k)[0] for k in range(8)]))
    tq = convert(int8)
    assert tq.report.ops_after.get("RESIZE") == 3
    y = engine_run(tq.to_bytes(), x)
    (deq,) = [n for n in tq.graph.nodes if n.op.name == "DEQUANTIZE"]
    s = tq.graph.tensors[deq.inputs[0]].quant.scale[0]
    assert np.abs(y - _litert(int8, x, True)).max() <= 1e-6 + 1e-6 * s  # same integers
    assert np.abs(y - _litert(int8, x, False)).max() <= s * 1.0001  # XNNPACK: 1 LSB


def test_post_training_int8_keeps_resize_int8() -> None:
    # the converter's own int8 lowering: nearest and half_pixel bilinear run in int8
    m = _keras_resizers()
    calib = np.concatenate([_x(200 + k) for k in range(8)])
    tm = convert(m, quantize="int8", calibration=calib)
    resizes = [n for n in tm.graph.nodes if n.op.name == "RESIZE"]
    assert len(resizes) == 3
    assert all(tm.graph.tensors[n.inputs[0]].dtype.name == "INT8" for n in resizes)
    x = _x(4)
    ref = np.asarray(m(x))
    assert rel_err(engine_run(tm.to_bytes(), x), ref) < 0.05
