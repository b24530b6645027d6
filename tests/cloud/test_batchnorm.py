"""recalibrate_batchnorm: moving statistics become the data's (OFA's BN recalibration)."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tether.cloud.batchnorm import recalibrate_batchnorm


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.layers.Conv2D(4, 3, padding="same", use_bias=False),
                              keras.layers.BatchNormalization(name="inner_bn")], name="inner")
    x_in = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv")(x_in)
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = inner(x)
    return keras.Model(x_in, x)


def test_one_batch_gives_the_data_statistics() -> None:
    model = _model()
    x = np.random.default_rng(0).normal(2.0, 3.0, (40, 8, 8, 2)).astype(np.float32)
    assert recalibrate_batchnorm(model, x, batch_size=64) == 2
    bn = model.get_layer("bn")
    pre = np.asarray(keras.Model(model.input, model.get_layer("conv").output)(x), np.float64)
    np.testing.assert_allclose(bn.moving_mean.numpy(), pre.mean(axis=(0, 1, 2)), rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(), pre.var(axis=(0, 1, 2)), rtol=1e-3)
    # In inference mode the nested model's BN output is normalized over the data too.
    y = np.asarray(model(x, training=False), np.float64)
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=2e-3)
    np.testing.assert_allclose(y.var(axis=(0, 1, 2)), 1.0, rtol=1e-2)
    # What the call changed is put back.
    assert bn.momentum == 0.9 and bn.trainable


def test_batches_average_their_statistics() -> None:
    model = _model()
    model.get_layer("bn").trainable = False  # frozen layers are recalibrated too
    x = np.random.default_rng(1).normal(0.0, 1.0, (25, 8, 8, 2)).astype(np.float32)
    recalibrate_batchnorm(model, x, batch_size=12)  # 12 + 13 (a last batch of 1 is merged)
    pre = np.asarray(keras.Model(model.input, model.get_layer("conv").output)(x), np.float64)
    parts = [pre[:12], pre[12:]]
    want_mean = np.mean([p.mean(axis=(0, 1, 2)) for p in parts], axis=0)
    want_var = np.mean([p.var(axis=(0, 1, 2)) for p in parts], axis=0)
    bn = model.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), want_mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), want_var, rtol=1e-3)
    assert not bn.trainable


def test_needs_two_images() -> None:
    with pytest.raises(ValueError, match="at least 2 images"):
        recalibrate_batchnorm(_model(), np.zeros((1, 8, 8, 2), np.float32))
