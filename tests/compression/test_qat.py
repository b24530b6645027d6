"""QAT: fake-quant with BN folded as the converter folds it; export to plain model + plan."""

import numpy as np
import pytest
from keras import layers
from tether.compression import (
    CompressionError,
    QATConfig,
    calibrate,
    export_qat,
    fine_tune,
    prepare_qat,
    simulate_int8,
)

from tether.models import demo_cnn


def _data(n=192, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 8, 8, 1)).astype("float32")
    y = (x[:, :4].mean(axis=(1, 2, 3)) > x[:, 4:].mean(axis=(1, 2, 3))).astype("int64") * 3
    return x, y


def test_qat_model_starts_as_the_ptq_emulation():
    model = demo_cnn()
    x, _ = _data()
    qat = prepare_qat(model, x[:64])
    sim = simulate_int8(model, calibrate(model, x[:64]))
    np.testing.assert_allclose(qat.predict(x, verbose=0), sim.predict(x, verbose=0),
                               atol=1e-5)
    names = {l.name for l in qat.layers[-1].layers}
    assert "stem_bn" not in names and "stem_conv" in names  # BN folded into the conv
    assert "stem_conv__fq" not in names  # fused with the ReLU: quantized after it


def test_training_updates_weights_and_export_matches_qat_model():
    model = demo_cnn()
    x, y = _data()
    qat = prepare_qat(model, x[:64], QATConfig(ema_decay=0.9))
    before = [w.copy() for w in qat.get_weights()]
    fine_tune(qat, x, y, epochs=1, batch_size=32, learning_rate=1e-3)
    changed = sum(not np.array_equal(a, b) for a, b in zip(before, qat.get_weights()))
    assert changed > 10  # STE lets gradients reach kernels, BN gammas and ranges move

    plain, plan = export_qat(qat)
    assert not any(isinstance(l, layers.BatchNormalization) for l in plain.layers)
    assert plan.method == "qat" and "image" in plan.activation_ranges
    assert plan.weight_scales["block_pw"].shape == (16,)
    # what the converter would build from (plain, plan) computes what QAT trained
    sim = simulate_int8(plain, plan)
    np.testing.assert_allclose(sim.predict(x, verbose=0), qat.predict(x, verbose=0),
                               atol=1e-5)


def test_bad_qat_config_and_calibration_shape():
    with pytest.raises(CompressionError, match=r"ema_decay must be in \[0, 1\). Received: ema_decay=1.0"):
        QATConfig(ema_decay=1.0)
    with pytest.raises(CompressionError, match="does not fit model"):
        prepare_qat(demo_cnn(), np.zeros((4, 28, 28, 1), "float32"))
