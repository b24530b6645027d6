"""The conversion report: ops before/after, rewrites, size and parity per source runtime."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from onnx_testlib import rand
from tether.converter import convert

from tether.errors import ConversionError
from tether.peers import keras_to_onnx, keras_to_tflite

L = keras.layers


@pytest.fixture(scope="module")
def cnn() -> keras.Model:
    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 2))
    y = L.Conv2D(4, 3, padding="same", use_bias=False)(x)
    y = L.BatchNormalization()(y)
    y = L.ReLU()(y)
    y = L.GlobalAveragePooling2D()(y)
    return keras.Model(x, L.Dense(3)(y), name="cnn")


def test_parity_against_each_source_runtime(cnn) -> None:
    for src, runtime in ((cnn, "keras"), (keras_to_onnx(cnn), "onnxruntime"),
                         (keras_to_tflite(cnn), "litert")):
        tm = convert(src, samples=rand((3, 1, 8, 8, 2)))
        p = tm.report.parity
        assert p is not None and p.runtime == runtime and p.samples == 3
        assert p.max_rel_error < 1e-4 and p.top1_agreement == 1.0
        text = str(tm.report)
        assert f"parity vs {runtime} on 3 inputs" in text
        assert f"size: {len(tm.to_bytes()):,} bytes" in text
    assert convert(cnn).report.parity is None


def test_report_text_lists_ops_and_rewrites(cnn) -> None:
    tm = convert(cnn, samples=2)
    text = str(tm.report)
    assert "ops before (5): BATCH_NORM 1, CONV_2D 1, FULLY_CONNECTED 1, MEAN 1, RELU 1" in text
    assert "ops after (3): CONV_2D 1, FULLY_CONNECTED 1, MEAN 1" in text
    assert "fold_batch_norm 1" in text and "fuse_activation 1" in text
    assert tm.report.parity is not None and tm.report.parity.samples == 2


def test_parity_samples_must_fit_the_input(cnn) -> None:
    with pytest.raises(ConversionError, match="do not fit the input shape"):
        convert(cnn, samples=np.zeros((2, 5, 5)))
