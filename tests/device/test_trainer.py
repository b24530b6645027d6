"""The engine's head trainer (`tether.device.Trainer`) against TensorFlow/Keras: gradients
after one step, the loss over 100 steps of SGD-momentum and of Adam with a cosine schedule,
the accuracy of a head trained on digits features, and the exported model."""

from __future__ import annotations

import numpy as np
import pytest

from tether.converter import convert
from tether.device import Engine, Trainer
from tether.errors import EngineError


def _head(features: int, hidden: int, classes: int, l2: float, seed: int, side: int = 2):
    import keras

    keras.utils.set_random_seed(seed)
    reg = keras.regularizers.L2(l2) if l2 else None
    x = keras.Input((side, side, features))
    h = keras.layers.GlobalAveragePooling2D()(x)
    h = keras.layers.Dense(hidden, activation="relu", kernel_regularizer=reg,
                           bias_initializer=keras.initializers.RandomUniform(-0.1, 0.1))(h)
    y = keras.layers.Dense(classes, activation="softmax",
                           kernel_regularizer=reg,
                           bias_initializer=keras.initializers.RandomUniform(-0.1, 0.1))(h)
    return keras.Model(x, y)


def _logits_twin(model):
    """The same layers and weights with the last activation off (Keras's loss from logits)."""
    import keras

    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    twin.layers[-1].activation = keras.activations.linear
    return twin


def _data(n: int, features: int, classes: int, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.uniform(0, 0.5, (n, 2, 2, features)).astype(np.float32)
    x[np.arange(n), :, :, y % features] += 1.5
    return x, y.astype(np.int32)


def _keras_steps(twin, optimizer, x, y, batch: int, steps: int):
    """Keras's own training loop over the same batches: losses before each update."""
    import keras
    import tensorflow as tf

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    losses, grads_first = [], None
    for s in range(steps):
        i = (s * batch) % len(x)
        xb, yb = x[i:i + batch], y[i:i + batch]
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, twin(xb, training=True)) + tf.add_n(twin.losses or [0.0])
        grads = tape.gradient(loss, twin.trainable_variables)
        if grads_first is None:
            grads_first = [np.asarray(g) for g in grads]
        optimizer.apply(grads, twin.trainable_variables)
        losses.append(float(loss))
    return losses, grads_first


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_gradients_and_100_steps_match_keras(optimizer) -> None:
    import keras

    features, hidden, classes, batch = 6, 12, 4, 16
    model = _head(features, hidden, classes, 1e-3, seed=1)
    x, y = _data(160, features, classes, seed=2)
    blob = convert(model, sparse=None).to_bytes()
    lr = 0.05 if optimizer == "sgd" else 0.01
    trainer = Trainer(blob, batch_size=batch, optimizer=optimizer, learning_rate=lr,
                      momentum=0.9, l2=1e-3, schedule="cosine", decay_steps=80,
                      final_lr_ratio=0.1)
    schedule = keras.optimizers.schedules.CosineDecay(lr, 80, alpha=0.1)
    opt = (keras.optimizers.SGD(schedule, momentum=0.9) if optimizer == "sgd"
           else keras.optimizers.Adam(schedule))
    want, grads = _keras_steps(_logits_twin(model), opt, x, y, batch, 100)
    got = []
    for s in range(100):
        i = (s * batch) % len(x)
        got.append(trainer.step(x[i:i + batch], y[i:i + batch]))
        if s == 0:  # gradients of the first step: Keras orders kernel, bias per layer
            mine = [g for _, g in trainer.params().values()]
            assert len(mine) == len(grads) == 4
            for a, b in zip(mine, grads):
                b = b.T.reshape(-1) if b.ndim == 2 else b  # Keras kernels are [in, out]
                np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * np.abs(b).max())
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert got[-1] < 0.5 * got[0]


def test_the_engine_trained_head_matches_keras_accuracy_on_digits() -> None:
    import keras
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32).reshape(-1, 1, 1, 64)  # 64 features per image
    y = d.target.astype(np.int32)
    xtr, ytr, xte, yte = x[:1300], y[:1300], x[1300:], y[1300:]
    model = _head(64, 64, 10, 0.0, seed=3, side=1)
    twin = _logits_twin(model)
    trainer = Trainer(convert(model, sparse=None).to_bytes(), batch_size=50, learning_rate=3e-3)
    _keras_steps(twin, keras.optimizers.Adam(3e-3), np.tile(xtr, (15, 1, 1, 1)),
                 np.tile(ytr, 15), 50, 26 * 15)
    for _ in range(15):
        for i in range(0, 1300, 50):
            trainer.step(xtr[i:i + 50], ytr[i:i + 50])
    keras_acc = float(np.mean(np.asarray(twin(xte)).argmax(1) == yte))
    engine_acc = trainer.evaluate(xte, yte)
    assert engine_acc > 0.9 and abs(engine_acc - keras_acc) <= 0.01, (engine_acc, keras_acc)


def test_export_runs_bit_identical_and_saves_whole(tmp_path) -> None:
    model = _head(6, 8, 3, 0.0, seed=4)
    x, y = _data(64, 6, 3, seed=5)
    blob = convert(model, sparse=None).to_bytes()
    trainer = Trainer(blob, batch_size=32, learning_rate=0.02, dropout=0.2, seed=7)
    history = trainer.fit(x, y, epochs=20)
    assert history[-1] < history[0]
    probs = trainer.predict(x)
    trained = trainer.export()
    assert len(trained) == len(blob) and trained != blob
    with Engine(trained) as engine:
        for i in range(len(x)):
            out = engine.run(x[i:i + 1])
            assert np.array_equal(out.reshape(-1), probs[i]), i
    trainer.save(tmp_path / "head.tmodel")
    assert (tmp_path / "head.tmodel").read_bytes() == trained
    assert not [p for p in tmp_path.iterdir() if p.name != "head.tmodel"]
    # the original weights were untouched: a fresh trainer starts from them
    fresh = Trainer(blob, batch_size=32)
    assert not np.array_equal(fresh.predict(x), probs)


def test_errors_name_the_fault() -> None:
    model = _head(6, 8, 3, 0.0, seed=4)
    blob = convert(model, sparse=None).to_bytes()
    with pytest.raises(EngineError, match="'nope' is not a non-constant tensor"):
        Trainer(blob, head_input="nope")
    with pytest.raises(EngineError, match="optimizer must be one of"):
        Trainer(blob, optimizer="rmsprop")
    trainer = Trainer(blob, batch_size=4)
    x, y = _data(4, 6, 3, seed=1)
    with pytest.raises(EngineError, match="label 1 is 9"):
        trainer.step(x, np.array([0, 9, 1, 2]))
    with pytest.raises(EngineError, match="rows is 8"):
        trainer.step(np.concatenate([x, x]), np.concatenate([y, y]))
    with pytest.raises(EngineError, match="must hold the head input's 24 values"):
        trainer.step(x[:, :1], y)
    trainer.close()
    with pytest.raises(EngineError, match="closed"):
        trainer.predict(x)
    pruned = model.layers[-1].kernel.numpy()
    pruned[:-1] = 0.0  # mostly zeros: the converter stores the kernel sparse
    model.layers[-1].kernel.assign(pruned)
    with pytest.raises(EngineError, match="stored sparse"):  # weights must be written back
        Trainer(convert(model).to_bytes())
