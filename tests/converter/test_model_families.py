"""keras.applications families through all three frontends (Keras; ONNX from tf2onnx; TFLite
from TensorFlow's converter): engine vs the source runtime within 1e-4 relative max error.

Small input sizes keep them quick; BatchNormalization statistics are randomized so that
folding them is actually tested. Marked slow (they still run in CI).
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")

from onnx_testlib import engine_run, litert_run, ort_run, rel_err
from tether.converter import convert

from tether.peers import keras_to_onnx, keras_to_tflite

A = keras.applications
TOL = 1e-4
STANDALONE_ACTIVATIONS = {"RELU", "RELU6", "LOGISTIC", "TANH", "HARD_SWISH", "CLAMP",
                          "HARD_SIGMOID"}

FAMILIES = {
    "MobileNet": lambda: A.MobileNet(input_shape=(64, 64, 3), alpha=0.25, weights=None,
                                     classifier_activation=None),
    "MobileNetV2": lambda: A.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35, weights=None,
                                         classifier_activation=None),
    "MobileNetV3Small": lambda: A.MobileNetV3Small(input_shape=(64, 64, 3), alpha=0.75,
                                                   weights=None, classifier_activation=None),
    "MobileNetV3Large": lambda: A.MobileNetV3Large(input_shape=(64, 64, 3), alpha=0.75,
                                                   weights=None, classifier_activation=None),
    "ResNet50": lambda: A.ResNet50(input_shape=(32, 32, 3), weights=None,
                                   classifier_activation=None),
    "EfficientNetB0": lambda: A.EfficientNetB0(input_shape=(32, 32, 3), weights=None,
                                               classifier_activation=None),
}


def _randomize_bn(model: keras.Model) -> None:
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.1, c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
            if layer.gamma is not None:
                layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype("float32"))


def _onnx_export(model: keras.Model) -> bytes:
    return keras_to_onnx(model)


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_converts_from_all_frontends(family) -> None:
    keras.utils.set_random_seed(0)
    model = FAMILIES[family]()
    _randomize_bn(model)
    lo, hi = (0.0, 255.0) if family in ("ResNet50", "EfficientNetB0") else (-1.0, 1.0)
    shape = (1, *model.inputs[0].shape[1:])
    xs = np.random.default_rng(0).uniform(lo, hi, (2, *shape)).astype(np.float32)
    onnx_bytes = _onnx_export(model)
    tflite_bytes = keras_to_tflite(model)
    sources = {
        "keras": (model, lambda x: np.asarray(model(x, training=False))),
        "onnx": (onnx.load_from_string(onnx_bytes), lambda x: ort_run(onnx_bytes, x)),
        "tflite": (tflite_bytes, lambda x: litert_run(tflite_bytes, x)),
    }
    for frontend, (src, run) in sources.items():
        tm = convert(src)
        ops = tm.report.ops_after
        assert "BATCH_NORM" not in ops, (frontend, ops)
        assert "TRANSPOSE" not in ops, (frontend, ops)
        if family == "MobileNetV2":
            assert not STANDALONE_ACTIVATIONS & set(ops), (frontend, ops)
        data = tm.to_bytes()
        for x in xs:
            err = rel_err(engine_run(data, x), run(x))
            assert err < TOL, (frontend, err)
