"""Hinton distillation: closed-form loss on fixed logits, and a smoke training run."""

import keras
import numpy as np
import pytest
from keras import layers
from tether.compression import (
    CompressionError,
    DistillationConfig,
    Distiller,
    distill,
    distillation_loss,
)


def _np_loss(y, s, t, temp, alpha):
    def log_softmax(z):
        z = z - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

    hard = -log_softmax(s)[np.arange(len(y)), y]
    pt, lpt, lps = np.exp(log_softmax(t / temp)), log_softmax(t / temp), log_softmax(s / temp)
    kl = (pt * (lpt - lps)).sum(axis=-1)
    return np.mean((1 - alpha) * hard + alpha * temp ** 2 * kl)


@pytest.mark.parametrize("temp, alpha", [(1.0, 0.5), (4.0, 0.9), (2.5, 0.0), (8.0, 1.0)])
def test_loss_matches_closed_form(temp, alpha):
    rng = np.random.default_rng(0)
    s = rng.normal(size=(6, 5)).astype("float32") * 3
    t = rng.normal(size=(6, 5)).astype("float32") * 3
    y = rng.integers(0, 5, size=6)
    got = float(distillation_loss(y, s, t, temp, alpha))
    assert got == pytest.approx(_np_loss(y, s, t, temp, alpha), rel=1e-5, abs=1e-6)


def test_t_squared_factor():
    # Soft term only: doubling T with logits scaled by 2 leaves the KL equal, so the loss
    # must grow exactly 4x (T^2).
    s = np.array([[2.0, -1.0, 0.5]], "float32")
    t = np.array([[0.0, 1.0, 3.0]], "float32")
    y = np.array([2])
    l1 = float(distillation_loss(y, s, t, 1.0, 1.0))
    l2 = float(distillation_loss(y, 2 * s, 2 * t, 2.0, 1.0))
    assert l2 == pytest.approx(4 * l1, rel=1e-5)
    assert l1 > 0


def _mlp(units, softmax, seed):
    keras.utils.set_random_seed(seed)
    x = keras.Input((8,))
    h = layers.Dense(units, activation="relu")(x)
    return keras.Model(x, layers.Dense(3, activation="softmax" if softmax else None)(h))


def test_distill_trains_student_and_freezes_teacher():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0.5)
    teacher, student = _mlp(32, True, 0), _mlp(4, False, 1)
    t_before = [w.copy() for w in teacher.get_weights()]
    s_before = [w.copy() for w in student.get_weights()]
    hist = distill(teacher, student, x, y, config=DistillationConfig(3.0, 0.5), epochs=3,
                   batch_size=64, learning_rate=1e-2)
    losses = hist.history["loss"]
    assert losses[-1] < losses[0]
    assert all(np.array_equal(a, b) for a, b in zip(t_before, teacher.get_weights()))
    assert not all(np.array_equal(a, b) for a, b in zip(s_before, student.get_weights()))
    # frozen only while distilling: the teacher (or a model pruned from it) trains again
    assert teacher.trainable and len(teacher.trainable_weights) == 4


def test_distill_takes_a_learning_rate_schedule_and_callbacks():
    import keras

    rng = np.random.default_rng(1)
    x = rng.normal(size=(128, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    teacher, student = _mlp(16, True, 0), _mlp(4, False, 1)
    seen = []
    cb = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(b))
    distill(teacher, student, x, y, epochs=2, batch_size=32, callbacks=[cb],
            learning_rate=keras.optimizers.schedules.CosineDecay(1e-2, decay_steps=8))
    assert len(seen) == 8  # 2 epochs x 4 batches


@pytest.mark.parametrize("kwargs, field", [({"temperature": 0.0}, "temperature"),
                                           ({"alpha": 1.5}, "alpha")])
def test_bad_config(kwargs, field):
    with pytest.raises(CompressionError, match=f"DistillationConfig.{field}.*Received"):
        DistillationConfig(**kwargs)


def test_class_count_mismatch():
    x = keras.Input((8,))
    other = keras.Model(x, layers.Dense(4)(x))
    with pytest.raises(CompressionError, match="same classes"):
        Distiller(_mlp(4, True, 0), other)


def test_pre_softmax_logits_are_exact_where_log_p_clips():
    from tether.compression.distillation import pre_softmax_logits

    teacher = _mlp(16, True, 0)
    last = teacher.layers[-1]
    last.kernel.assign(last.kernel.numpy() * 40.0)  # very confident: p of wrong classes ~0
    x = np.random.default_rng(0).normal(size=(32, 8)).astype("float32")
    z = np.asarray(pre_softmax_logits(teacher)(x))
    p = teacher.predict(x, verbose=0)
    e = np.exp(z - z.max(-1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(-1, keepdims=True), p, rtol=1e-4, atol=1e-6)
    assert (z.max(-1) - z.min(-1)).max() > 20  # spread log(clip(p)) would cap at ~16
    assert pre_softmax_logits(_mlp(4, False, 1)) is None  # logits already
