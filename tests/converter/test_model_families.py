"""keras.applications families through all three frontends (Keras; ONNX from tf2onnx; TFLite
from TensorFlow's converter): engine vs the source runtime within 1e-4 relative max error.

Small input sizes keep them quick; BatchNormalization scales are randomized and statistics
set from data (`_randomize_bn`) so that folding them is actually tested and the outputs depend
on the input; a perturbed weight must fail the check. Marked slow (they still run in CI).
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")

from onnx_testlib import engine_run, litert_run, ort_run, rel_err
from tether.cloud.batchnorm import recalibrate_batchnorm
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


def _randomize_bn(model: keras.Model, lo: float, hi: float) -> None:
    """Random BN scales and shifts, then moving statistics from a batch of inputs: folding
    them is tested, and activations keep their scale through depth (with the defaults an
    untrained network's activations shrink until its outputs no longer depend on its input,
    and no parity check on it could fail)."""
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            if layer.gamma is not None:
                layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
            if layer.beta is not None:
                layer.beta.assign(rng.normal(0, 0.1, c).astype("float32"))
    images = rng.uniform(lo, hi, (8, *model.inputs[0].shape[1:])).astype(np.float32)
    recalibrate_batchnorm(model, images)


def _range(family: str) -> tuple[float, float]:
    return (0.0, 255.0) if family in ("ResNet50", "EfficientNetB0") else (-1.0, 1.0)


def _onnx_export(model: keras.Model) -> bytes:
    return keras_to_onnx(model)


def _family(family: str) -> tuple[keras.Model, keras.Model, np.ndarray]:
    """The float32 model, its float64 twin (same weights) and two seeded inputs."""
    keras.utils.set_random_seed(0)
    model = FAMILIES[family]()
    lo, hi = _range(family)
    _randomize_bn(model, lo, hi)
    keras.config.set_dtype_policy("float64")
    try:
        twin = FAMILIES[family]()
    finally:
        keras.config.set_dtype_policy("float32")
    twin.set_weights([w.astype(np.float64) for w in model.get_weights()])
    shape = (1, *model.inputs[0].shape[1:])
    xs = np.random.default_rng(0).uniform(lo, hi, (2, *shape)).astype(np.float32)
    return model, twin, xs


def _tolerance(model: keras.Model, twin: keras.Model, xs: np.ndarray) -> float:
    """TOL, or twice Keras's own float32 error against the exact (float64) answer where
    depth amplifies rounding beyond it: a runtime is held to what float32 can do."""
    noise = max(rel_err(np.asarray(model(x, training=False)),
                        np.asarray(twin(x.astype(np.float64), training=False))) for x in xs)
    return max(TOL, 2 * noise)


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_converts_from_all_frontends(family) -> None:
    model, twin, xs = _family(family)
    tol = _tolerance(model, twin, xs)
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
            y = engine_run(data, x)
            exact = np.asarray(twin(x.astype(np.float64), training=False))
            assert rel_err(y, exact) < tol, (frontend, "vs exact", rel_err(y, exact), tol)
            # Two float32 runtimes, each within tol of the exact answer
            assert rel_err(y, run(x)) < 2 * tol, (frontend, rel_err(y, run(x)), tol)


def _perturb_one_weight(model: keras.Model) -> str:
    """Doubles the largest weight of the middle convolution; returns its layer name."""
    convs = [layer for layer in model.layers
             if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))]
    layer = convs[len(convs) // 2]
    kernel = layer.kernel.numpy()
    kernel[np.unravel_index(np.argmax(np.abs(kernel)), kernel.shape)] *= 2.0
    layer.kernel.assign(kernel)
    return layer.name


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_check_fails_on_a_perturbed_weight(family) -> None:
    # The check above can fail: the engine's model, converted before one weight of the
    # source doubled, is further from the source than five times the tolerance.
    model, twin, xs = _family(family)
    tol = _tolerance(model, twin, xs)
    data = convert(model).to_bytes()
    x = xs[0]
    assert rel_err(engine_run(data, x), np.asarray(model(x, training=False))) < 2 * tol
    name = _perturb_one_weight(model)
    err = rel_err(engine_run(data, x), np.asarray(model(x, training=False)))
    assert err > 5 * tol, (name, err, tol)
