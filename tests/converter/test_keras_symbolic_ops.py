"""Keras frontend additions: keras.ops arithmetic on symbolic tensors (MobileNetV3's x + 3,
x * (1/6)), Normalization (EfficientNet), swish; checked in the engine against Keras."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from onnx_testlib import engine_run, rand, rel_err
from tether.converter import convert

from tether.errors import ConversionError

L = keras.layers


def test_symbolic_arithmetic_and_hard_swish_form() -> None:
    x = keras.Input((6, 6, 3))
    c = L.Conv2D(4, 3, padding="same")(x)
    hs = L.Multiply()([c, L.ReLU(6.0)(c + 3.0) * (1.0 / 6.0)])   # MobileNetV3 hard_swish
    y = (hs - 0.5) / 2.0
    y = 1.5 * y
    m = keras.Model(x, y)
    tm = convert(m)
    assert tm.report.action_counts.get("recognize_hard_swish") == 1
    # hard-swish fused into the conv; - 0.5 -> ADD, / 2 -> MUL, 1.5 * -> MUL
    assert tm.report.ops_after == {"ADD": 1, "CONV_2D": 1, "MUL": 2}
    x_ = rand((1, 6, 6, 3), 1, -3, 3)
    assert rel_err(engine_run(tm.to_bytes(), x_), np.asarray(m(x_))) < 1e-5


def test_normalization_and_swish() -> None:
    x = keras.Input((5, 5, 3))
    y = L.Normalization(mean=[0.1, 0.2, 0.3], variance=[1.0, 4.0, 0.25])(x)
    y = L.Conv2D(4, 1, activation="swish")(y)
    m = keras.Model(x, y)
    tm = convert(m)
    x_ = rand((1, 5, 5, 3), 2)
    assert rel_err(engine_run(tm.to_bytes(), x_), np.asarray(m(x_))) < 1e-5


def test_unsupported_symbolic_op_is_named() -> None:
    x = keras.Input((4,))
    y = keras.ops.exp(x)
    m = keras.Model(x, L.Dense(2)(y))
    with pytest.raises(ConversionError, match=r"operation '[^']+' \(keras.ops Exp\) is not "
                                              "supported"):
        convert(m)
