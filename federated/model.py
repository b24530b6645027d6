"""A numpy multilayer perceptron for federated runs: local training without TensorFlow.

Federated clients start in fresh processes (Ray actors, SuperNodes); importing TensorFlow
there costs 20-30 s each.  This model (McMahan et al.'s "2NN" shape, default 784-200-10) trains
with plain numpy, so a 100-client simulation fits on a laptop.  Strategies never see it: they
work on the list of arrays it returns, as they would on Keras weights.

>>> w = init_params(4, 3, hidden=5, seed=0)
>>> [a.shape for a in w]
[(4, 5), (5,), (5, 3), (3,)]
"""

from __future__ import annotations

import numpy as np

__all__ = ["evaluate", "gradient", "init_params", "train"]


def init_params(n_in: int, n_out: int, hidden: int = 200, seed: int = 0) -> list[np.ndarray]:
    """He-initialised [W1 (n_in, h), b1, W2 (h, n_out), b2] in float32; hidden=0 gives softmax regression."""
    rng = np.random.default_rng(seed)
    if hidden == 0:
        return [np.zeros((n_in, n_out), np.float32), np.zeros(n_out, np.float32)]
    return [
        (rng.standard_normal((n_in, hidden)) * np.sqrt(2.0 / n_in)).astype(np.float32),
        np.zeros(hidden, np.float32),
        (rng.standard_normal((hidden, n_out)) * np.sqrt(2.0 / hidden)).astype(np.float32),
        np.zeros(n_out, np.float32),
    ]


def _forward(params: list[np.ndarray], x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    acts = [x]
    h = x
    for i in range(0, len(params) - 2, 2):
        h = np.maximum(h @ params[i] + params[i + 1], 0)
        acts.append(h)
    logits = h @ params[-2] + params[-1]
    logits = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return acts, p


def gradient(params: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[float, list[np.ndarray]]:
    """Mean cross-entropy and its gradient with respect to every parameter."""
    x = x.reshape(len(x), -1)
    acts, p = _forward(params, x)
    n = len(x)
    loss = float(-np.log(p[np.arange(n), y] + 1e-12).mean())
    d = p.copy()
    d[np.arange(n), y] -= 1
    d /= n
    grads: list[np.ndarray] = [np.empty(0)] * len(params)
    for i in range(len(params) - 2, -1, -2):
        a = acts[i // 2]
        grads[i] = a.T @ d
        grads[i + 1] = d.sum(axis=0)
        if i > 0:
            d = (d @ params[i].T) * (a > 0)
    return loss, grads


def train(params: list[np.ndarray], x: np.ndarray, y: np.ndarray, epochs: int = 1,
          batch_size: int | None = 10, lr: float = 0.1, seed: int = 0) -> tuple[list[np.ndarray], float]:
    """E epochs of mini-batch SGD (Algorithm 12.1's ClientUpdate); batch_size None = full batch.

    Returns the new parameters (float32) and the last epoch's mean loss.
    """
    w = [p.astype(np.float32, copy=True) for p in params]
    rng = np.random.default_rng(seed)
    n = len(x)
    bs = n if batch_size is None or batch_size <= 0 else min(batch_size, n)
    loss = 0.0
    for _ in range(epochs):
        order = rng.permutation(n)
        losses = []
        for s in range(0, n, bs):
            idx = order[s : s + bs]
            l, g = gradient(w, x[idx], y[idx])
            losses.append(l)
            for p, gp in zip(w, g):
                p -= np.float32(lr) * gp.astype(np.float32)
        loss = float(np.mean(losses)) if losses else 0.0
    return w, loss


def evaluate(params: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) on (x, y)."""
    _, p = _forward(params, x.reshape(len(x), -1))
    loss = float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())
    return loss, float((p.argmax(axis=1) == y).mean())
