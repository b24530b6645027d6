"""Split transfer learning: a digits model trained on 0-4 adapted on the "device" to 5-9
with part A in the engine (float32 and int8), the head trained by the engine's trainer on
cached features, and A and B joined into one .tmodel that computes B(A(x)) bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from tether.converter import convert, join
from tether.device import Engine
from tether.errors import ConversionError
from tether.transfer import FeatureCache, TransferError, fine_tune, split_keras, transfer


@pytest.fixture(scope="module")
def cloud():
    import keras

    from tether.data import digits

    d = digits()
    keras.utils.set_random_seed(0)
    x = keras.Input(d.x_train.shape[1:])
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    h = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    h = keras.layers.Dense(32, activation="relu", name="fc")(h)
    y = keras.layers.Dense(5, activation="softmax", name="out")(h)
    model = keras.Model(x, y)
    model.compile("adam", "sparse_categorical_crossentropy")
    old = d.y_train < 5
    model.fit(d.x_train[old], d.y_train[old], epochs=30, batch_size=32, verbose=0)
    new_tr, new_te = d.y_train >= 5, d.y_test >= 5
    return (model, d.x_train[new_tr][:250], d.y_train[new_tr][:250] - 5, d.x_test[new_te],
            d.y_test[new_te] - 5)


@pytest.mark.parametrize("quantize_a", [None, "int8"])
def test_transfer_to_new_classes_on_cached_features(cloud, quantize_a, tmp_path) -> None:
    model, x, y, xt, yt = cloud
    cache_dir = tmp_path / "cache"
    res = transfer(model, "gap", x, y, epochs=100, learning_rate=1e-2, train_layers=0,
                   quantize_a=quantize_a, x_test=xt, y_test=yt, seed=1)
    # 250 images of 5 unseen digits on features learnt from the other five
    assert res.accuracy is not None and res.accuracy > 0.8, res.accuracy
    assert res.history[-1] < 0.5 * res.history[0]
    # the joined model is B(A(x)) bit for bit
    with Engine(res.part_a) as a, Engine(res.part_b) as b, Engine(res.model) as ab:
        assert np.array_equal(ab.run(xt[:16]), b.run(a.run(xt[:16])))
    # a cache kept in a folder is computed once
    cache = FeatureCache(res.part_a, cache_dir)
    first = cache.features(x)
    again = FeatureCache(res.part_a, cache_dir)
    assert np.array_equal(again.features(x), first) and again.hits == 1 and again.computed == 0
    assert [p.suffix for p in cache_dir.iterdir()] == [".npy"]


def test_split_checks_the_cut(cloud) -> None:
    model = cloud[0]
    with pytest.raises(TransferError, match="no layer 'nope'"):
        split_keras(model, "nope", 5)
    with pytest.raises(TransferError, match="'out' is the output layer"):
        split_keras(model, "out", 5)
    a, b = split_keras(model, "gap", 3)
    assert a.output.shape[1:] == (64,) and b.output.shape[1:] == (3,)
    assert [layer.name for layer in b.layers] == ["gap", "fc", "device_head"]
    with pytest.raises(TransferError, match="labels must be one per image"):
        transfer(model, "gap", cloud[1], cloud[2] + 10, classes=5, epochs=1)


def test_join_refuses_parts_that_do_not_meet(cloud) -> None:
    model = cloud[0]
    a, b = split_keras(model, "fc", 3)
    _, other = split_keras(model, "gap", 3)
    with pytest.raises(ConversionError, match="part A's output 'fc' is FLOAT32 \\[1, 32\\]"):
        join(convert(a).to_bytes(), convert(other).to_bytes())
    assert join(convert(a).to_bytes(), convert(b).to_bytes()).report.outputs[0].shape == (1, 3)


@pytest.mark.parametrize("schedule", ["head", "staged", "full"])
def test_fine_tune_schedules_train_what_they_say(cloud, schedule) -> None:
    model, x, y, xt, yt = cloud
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}
    res = fine_tune(model, "gap", x, y, schedule=schedule, head_epochs=60, epochs=30,
                    unfreeze=1, learning_rate=1e-2, x_test=xt, y_test=yt, seed=1)
    # the caller's model is left as it was
    for layer in model.layers:
        for a, b in zip(before[layer.name], layer.get_weights()):
            np.testing.assert_array_equal(a, b)
    tuned = {layer.name: layer.get_weights() for layer in res.keras_model.layers}

    def moved(name: str) -> bool:
        return any(not np.array_equal(a, b) for a, b in zip(before[name], tuned[name]))

    conv1, conv2 = [layer.name for layer in model.layers if layer.weights][:2]
    # head: nothing before the cut moves; staged: the last conv (unfreeze=1) does, the
    # first does not; full: both do
    assert moved(conv2) == (schedule != "head")
    assert moved(conv1) == (schedule == "full")
    assert [s[0] for s in res.stages] == {"head": ["head"], "staged": ["head", "staged"],
                                          "full": ["full"]}[schedule]
    assert len(res.history) == {"head": 60, "staged": 90, "full": 30}[schedule]
    assert res.accuracy is not None and res.accuracy > 0.8, res.accuracy
    # the .tmodel computes what the fine-tuned Keras model does
    with Engine(res.model) as engine:
        np.testing.assert_allclose(engine.run(xt[:32]), res.keras_model.predict(xt[:32],
                                                                                verbose=0),
                                   atol=1e-5)


def test_fine_tune_checks_its_settings(cloud) -> None:
    model, x, y, _, _ = cloud
    with pytest.raises(TransferError, match="schedule must be one of head, staged, full"):
        fine_tune(model, "gap", x, y, schedule="all")
    with pytest.raises(TransferError, match="must be >= 0"):
        fine_tune(model, "gap", x, y, unfreeze=-1)
    with pytest.raises(TransferError, match="no layer 'nope'"):
        fine_tune(model, "nope", x, y)
