"""Unstructured magnitude pruning: schedule, fixed masks, strip, report, errors."""

import keras
import numpy as np
import pytest
from keras import layers
from tether.compression import (
    CompressionError,
    MagnitudePruning,
    PolynomialDecay,
    sparsity_report,
    strip_pruning,
)


def test_schedule_closed_form():
    s = PolynomialDecay(final_sparsity=0.8, initial_sparsity=0.2, begin_step=10, end_step=20,
                        power=3, frequency=5)
    assert s.sparsity(0) == pytest.approx(0.2)
    assert s.sparsity(15) == pytest.approx(0.8 + (0.2 - 0.8) * 0.5 ** 3)
    assert s.sparsity(99) == pytest.approx(0.8)
    assert [t for t in range(25) if s.should_update(t)] == [10, 15, 20]


@pytest.mark.parametrize("sparsity", [1.0, -0.1, 1.5])
def test_sparsity_outside_unit_interval_fails(sparsity):
    with pytest.raises(CompressionError, match=r"final_sparsity must be in \[0, 1\).*Received"):
        PolynomialDecay(final_sparsity=sparsity)


def _model():
    keras.utils.set_random_seed(0)
    x = keras.Input((6, 6, 1))
    h = layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    h = layers.Flatten()(h)
    return keras.Model(x, layers.Dense(3, name="fc")(h))


def test_masks_stay_fixed_after_each_step_and_strip_gives_plain_model():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 6, 6, 1)).astype("float32")
    y = rng.integers(0, 3, 128)
    model = _model()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    sched = PolynomialDecay(final_sparsity=0.75, begin_step=0, end_step=8, frequency=2)
    cb = MagnitudePruning(sched)
    seen = []

    class Probe(keras.callbacks.Callback):  # runs after the pruning callback each step
        def on_train_batch_end(self, batch, logs=None):
            k = model.get_layer("fc").kernel.numpy()
            seen.append(bool(np.all(k[cb.masks["fc"] == 0] == 0)))

    model.fit(x, y, batch_size=16, epochs=2, callbacks=[cb, Probe()], verbose=0)
    assert cb.step == 16 and all(seen)
    report = sparsity_report(model)
    for layer in report.layers:
        assert layer.sparsity == pytest.approx(0.75, abs=1 / layer.size)
    assert report.compression > 2.5  # 0.25 nnz * 4 B + 1 bit each vs 4 B
    plain = strip_pruning(model, cb)
    assert not any(isinstance(c, MagnitudePruning) for c in getattr(plain, "_callbacks", []))
    np.testing.assert_allclose(plain.predict(x[:4], verbose=0), model.predict(x[:4], verbose=0),
                               rtol=1e-6)
    assert sparsity_report(plain).sparsity == pytest.approx(report.sparsity)


def test_unknown_layer_name_fails_clearly():
    model = _model()
    model.compile("adam", "mse")
    cb = MagnitudePruning(PolynomialDecay(0.5), layers=["conv", "nope"])
    with pytest.raises(CompressionError, match="no layer 'nope'"):
        model.fit(np.zeros((2, 6, 6, 1)), np.zeros((2, 3)), callbacks=[cb], verbose=0)


def test_prune_weights_is_the_recipe_the_cli_and_bench_use() -> None:
    # The schedule ramps to the target over 70% of the steps with ~20 mask updates, and the
    # recipe returns a plain model whose pruned kernels hold that sparsity exactly.
    from tether.compression import PolynomialDecay, prune_weights, sparsity_report

    s = PolynomialDecay.over_steps(0.6, 200)
    assert (s.end_step, s.frequency, s.sparsity(s.end_step)) == (140, 10, 0.6)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 12)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(2)])
    plain = prune_weights(model, x, y, sparsity=0.6, epochs=2, batch_size=16)
    assert plain is not model
    assert sparsity_report(plain).sparsity == pytest.approx(0.6, abs=0.02)
