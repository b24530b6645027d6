"""Engine outputs against Keras on seeded inputs (tolerance 1e-4 max abs error)."""

import numpy as np
import pytest

from tether.converter import convert
from tether.device import Engine


TOLERANCE = 1e-4


def keras_predict(model, x):
    return np.asarray(model.predict(x, batch_size=256, verbose=0))


def assert_close(actual, expected, what):
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == np.float32, f"{what}: dtype {actual.dtype}"
    diff = float(np.abs(actual - expected).max())
    assert diff <= TOLERANCE, f"{what}: max abs diff {diff:.3e} > {TOLERANCE}"


def test_demo_cnn_matches_keras_on_the_digits_test_split(trained_demo_cnn, demo_tmodel_bytes,
                                                          digits):
    engine = Engine(demo_tmodel_bytes)
    expected = keras_predict(trained_demo_cnn, digits.x_test)
    actual = engine.run(digits.x_test)
    assert_close(actual, expected, "demo_cnn on digits test")
    keras_acc = (expected.argmax(1) == digits.y_test).mean()
    engine_acc = (actual.argmax(1) == digits.y_test).mean()
    assert engine_acc == keras_acc
    np.testing.assert_array_equal(actual.argmax(1), expected.argmax(1))


def test_engine_from_file_equals_engine_from_bytes(demo_tmodel_bytes, digits, tmp_path):
    p = tmp_path / "m.tmodel"
    p.write_bytes(demo_tmodel_bytes)
    a = Engine(p).run(digits.x_test[:7])
    b = Engine(demo_tmodel_bytes).run(digits.x_test[:7])
    np.testing.assert_array_equal(a, b)


def test_every_way_into_run_gives_the_same_bytes(demo_tmodel_bytes, digits):
    """One image through run()'s one-step C call (device/_run.c: a contiguous array in the
    input's dtype, with or without the batch axis), through its ctypes fallback (a strided
    view) and through the general path (a stack of images): the same bytes each time, and
    the returned arrays are the caller's own (the next run does not overwrite them)."""
    from tether.device import _engine

    assert _engine._fast is not None, "device/_run.c was not built"
    engine = Engine(demo_tmodel_bytes)
    x = np.ascontiguousarray(digits.x_test[:1])
    one_step = engine.run(x)
    no_batch = engine.run(x[0])
    strided = engine.run(np.asfortranarray(x[0]))
    stacked = engine.run(digits.x_test[:2])[:1]
    np.testing.assert_array_equal(one_step, stacked)
    np.testing.assert_array_equal(no_batch, one_step[0])
    np.testing.assert_array_equal(strided, one_step[0])
    engine.run(digits.x_test[1:2])
    np.testing.assert_array_equal(one_step, stacked)


@pytest.mark.parametrize("head", [None, "softmax"])
def test_mobilenet_v2_035_96_matches_keras(head):
    """With non-trivial BN statistics; `None` compares logits, which a 1000-way softmax
    would squash near 1e-3."""
    import keras

    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None,
                                           classifier_activation=head)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c),
                               rng.normal(0, 0.1, c), rng.uniform(0.5, 1.5, c)])
    engine = Engine(convert(model).to_bytes())
    x = rng.random((3, 96, 96, 3), dtype=np.float32)
    expected = keras_predict(model, x)
    if head is None:
        assert np.abs(expected).max() > 0.05  # not a comparison of two near-zeros
    assert_close(engine.run(x), expected, f"MobileNetV2(0.35, 96), head={head}")


def test_small_functional_graph_with_every_foundation_layer():
    import keras
    from keras import layers

    keras.utils.set_random_seed(3)
    a = keras.Input((9, 7, 3), name="a")
    x = layers.ZeroPadding2D(((1, 0), (2, 1)))(a)
    x = layers.Conv2D(6, 3, strides=2, activation="relu6")(x)
    x = layers.BatchNormalization()(x)
    y = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)
    y = layers.ReLU()(y)
    z = layers.Conv2D(12, 1, padding="same")(x)
    s = layers.Add()([y, z])
    c = layers.Concatenate()([s, y])
    p = layers.AveragePooling2D(2, padding="same")(c)
    q = layers.MaxPooling2D(2, strides=1)(c)
    g = layers.Concatenate()([layers.GlobalAveragePooling2D()(p), layers.Flatten()(q)])
    d = layers.Dropout(0.5)(g)
    out = layers.Dense(5)(layers.Dense(16, activation="relu")(d))
    out = layers.Softmax()(out)
    model = keras.Model(a, out)
    # Give BN non-trivial statistics.
    bn = [l for l in model.layers if isinstance(l, layers.BatchNormalization)][0]
    rng = np.random.default_rng(1)
    bn.set_weights([rng.uniform(0.5, 1.5, 6), rng.normal(0, 0.2, 6), rng.normal(0, 0.3, 6),
                    rng.uniform(0.5, 2.0, 6)])
    x = rng.random((4, 9, 7, 3), dtype=np.float32)
    assert_close(Engine(convert(model).to_bytes()).run(x), keras_predict(model, x),
                 "functional graph")
