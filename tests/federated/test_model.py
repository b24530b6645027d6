"""The numpy CNN's hand-written backprop against central finite differences, and it learns."""

from __future__ import annotations

import numpy as np
import pytest

from tether.federated import model


def _numeric_grad(params: list[np.ndarray], x: np.ndarray, y: np.ndarray, i: int,
                  idx: tuple[int, ...], eps: float = 1e-6) -> float:
    plus = [p.copy() for p in params]
    minus = [p.copy() for p in params]
    plus[i][idx] += eps
    minus[i][idx] -= eps
    return (model.gradient(plus, x, y)[0] - model.gradient(minus, x, y)[0]) / (2 * eps)


@pytest.mark.parametrize(("channels", "hidden"), [((2, 3), 0), ((3, 4), 5)])
def test_cnn_gradient_matches_finite_differences(channels: tuple[int, int], hidden: int) -> None:
    rng = np.random.default_rng(1)
    params = [p.astype(np.float64) for p in model.init_cnn((8, 8, 2), 3, channels=channels, hidden=hidden, seed=2)]
    params = [p + 0.05 * rng.standard_normal(p.shape) for p in params]  # non-zero biases too
    x = rng.standard_normal((4, 8, 8, 2))
    y = np.array([0, 1, 2, 1])
    _, grads = model.gradient(params, x, y)
    for i, (p, g) in enumerate(zip(params, grads)):
        assert g.shape == p.shape, (i, g.shape, p.shape)
        for _ in range(6):
            idx = tuple(int(rng.integers(s)) for s in p.shape)
            num = _numeric_grad(params, x, y, i, idx)
            assert abs(num - g[idx]) <= 1e-6 + 1e-4 * abs(num), (i, idx, num, g[idx])


def test_mlp_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(0)
    params = [p.astype(np.float64) + 0.01 for p in model.init_params(6, 3, hidden=5, seed=0)]
    x = rng.standard_normal((5, 6))
    y = np.array([0, 1, 2, 0, 1])
    _, grads = model.gradient(params, x, y)
    for i, (p, g) in enumerate(zip(params, grads)):
        idx = tuple(int(rng.integers(s)) for s in p.shape)
        assert abs(_numeric_grad(params, x, y, i, idx) - g[idx]) < 1e-5


def test_cnn_rejects_wrong_input_size() -> None:
    params = model.init_cnn((8, 8, 1), 3, channels=(2, 2))
    with pytest.raises(ValueError, match="do not form a 8x8x1 image"):
        model.gradient(params, np.zeros((2, 60)), np.array([0, 1]))
    with pytest.raises(ValueError, match="divisible by 4"):
        model.init_cnn((10, 10, 1), 3)


def test_cnn_learns_digits() -> None:
    """Five epochs on sklearn's 8x8 digits beat 90% on held-out digits (97% measured)."""
    from tether.data import load

    ds = load("digits")
    xtr, xte = ds.x_train.reshape(len(ds.x_train), 8, 8, 1), ds.x_test.reshape(len(ds.x_test), 8, 8, 1)
    params = model.init_cnn((8, 8, 1), 10, channels=(8, 16), seed=0)
    params, _ = model.train(params, xtr, ds.y_train, epochs=5, batch_size=16, lr=0.1, seed=0)
    _, acc = model.evaluate(params, xte, ds.y_test)
    assert acc > 0.9, acc
