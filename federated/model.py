"""Numpy models for federated runs: local training without TensorFlow.

Federated clients start in fresh processes (Ray actors, SuperNodes); importing TensorFlow
there costs 20-30 s each.  Two models train with plain numpy, so a 100-client simulation fits
on a laptop:

* an MLP (McMahan et al.'s "2NN" shape, default 784-200-10; ``hidden=0`` = softmax regression);
* a small CNN, ``conv5x5(c1)-relu-maxpool2-conv5x5(c2)-relu-maxpool2-dense(h)-relu-dense(classes)``
  with 'same' padding, NHWC, default c1=8, c2=16, h=128 (105,194 parameters on 28x28x1;
  ``hidden=0`` drops the hidden dense layer: 11,274).  Convolutions are
  im2col + one matmul; backprop is written by hand and checked against finite differences in
  ``tests/federated/test_model.py``.

Strategies never see either model: they work on the list of arrays it returns, as they would on
Keras weights.  :func:`gradient`, :func:`train` and :func:`evaluate` pick the model from the
parameters (a 4-D first array is the CNN).

>>> w = init_params(4, 3, hidden=5, seed=0)
>>> [a.shape for a in w]
[(4, 5), (5,), (5, 3), (3,)]
>>> [a.shape for a in init_cnn((8, 8, 1), 3, channels=(2, 4), hidden=5)]
[(5, 5, 1, 2), (2,), (5, 5, 2, 4), (4,), (16, 5), (5,), (5, 3), (3,)]
"""

from __future__ import annotations

import numpy as np

__all__ = ["evaluate", "gradient", "init_cnn", "init_params", "train"]


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


def init_cnn(input_shape: tuple[int, int, int], n_out: int, channels: tuple[int, int] = (8, 16),
             hidden: int = 128, seed: int = 0) -> list[np.ndarray]:
    """He-initialised [K1 (5,5,C,c1), b1, K2 (5,5,c1,c2), b2, W1 (H/4*W/4*c2, h), b1', W2 (h, n_out),
    b2'] in float32 (``hidden=0``: one dense layer W (H/4*W/4*c2, n_out), b).

    ``input_shape`` is (H, W, C) with H and W divisible by 4 (two 2x2 poolings).
    """
    h, w, c = input_shape
    if h % 4 or w % 4:
        raise ValueError(f"init_cnn: input height and width must be divisible by 4. "
                         f"Received: input_shape={input_shape}")
    c1, c2 = channels
    rng = np.random.default_rng(seed)

    def he(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    flat = (h // 4) * (w // 4) * c2
    convs = [he((5, 5, c, c1), 25 * c), np.zeros(c1, np.float32),
             he((5, 5, c1, c2), 25 * c1), np.zeros(c2, np.float32)]
    if hidden == 0:
        return convs + [he((flat, n_out), flat), np.zeros(n_out, np.float32)]
    return convs + [he((flat, hidden), flat), np.zeros(hidden, np.float32),
                    he((hidden, n_out), hidden), np.zeros(n_out, np.float32)]


def _is_cnn(params: list[np.ndarray]) -> bool:
    return np.ndim(params[0]) == 4


def _as_images(params: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """x as (n, H, W, C): H = W inferred from the dense layer (square inputs)."""
    if x.ndim == 4:
        return x
    cin, c2 = params[0].shape[2], params[2].shape[3]
    side = int(round(np.sqrt(params[4].shape[0] // c2))) * 4
    if side * side * cin != x[0].size:
        raise ValueError(f"CNN input: {x[0].size} features per example do not form a "
                         f"{side}x{side}x{cin} image (from the dense layer {params[4].shape})")
    return x.reshape(len(x), side, side, cin)


def _im2col(x: np.ndarray) -> np.ndarray:
    """(n, H, W, C) -> (n*H*W, 25*C) patches of a 5x5 'same' convolution, (kh, kw, c) order."""
    n, h, w, c = x.shape
    xp = np.zeros((n, h + 4, w + 4, c), x.dtype)
    xp[:, 2 : 2 + h, 2 : 2 + w, :] = x
    if c > 1:  # a strided view of the windows, copied once (faster than 25 narrow copies)
        win = np.lib.stride_tricks.sliding_window_view(xp, (5, 5), axis=(1, 2))  # n,H,W,C,5,5
        return np.ascontiguousarray(win.transpose(0, 1, 2, 4, 5, 3)).reshape(n * h * w, 25 * c)
    cols = np.empty((n, h, w, 25, c), x.dtype)
    for i in range(5):
        for j in range(5):
            cols[:, :, :, 5 * i + j, :] = xp[:, i : i + h, j : j + w, :]
    return cols.reshape(n * h * w, 25 * c)


def _col2im(dcols: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Adjoint of :func:`_im2col`: scatter-add patch gradients back onto (n, H, W, C)."""
    n, h, w, c = shape
    d = dcols.reshape(n, h, w, 25, c)
    dxp = np.zeros((n, h + 4, w + 4, c), dcols.dtype)
    for i in range(5):
        for j in range(5):
            dxp[:, i : i + h, j : j + w, :] += d[:, :, :, 5 * i + j, :]
    return dxp[:, 2 : 2 + h, 2 : 2 + w, :]


_QUAD = ((0, 0), (0, 1), (1, 0), (1, 1))
_CHUNK = 16  # examples per CNN forward/backward pass (im2col buffers stay in L2)


def _pool(a: np.ndarray) -> np.ndarray:
    """2x2 max pool of (n, H, W, C)."""
    return np.maximum(np.maximum(a[:, 0::2, 0::2], a[:, 0::2, 1::2]),
                      np.maximum(a[:, 1::2, 0::2], a[:, 1::2, 1::2]))


def _unpool(d: np.ndarray, a: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Gradient of :func:`_pool` times the ReLU mask (a > 0): ``d`` goes to every window
    position equal to its max. Ties are measure-zero for positive activations; all-zero
    windows (max 0) get nothing, as the ReLU mask would zero them anyway."""
    out = np.zeros_like(a)
    live = d * (m > 0)
    for di, dj in _QUAD:
        out[:, di::2, dj::2] = live * (a[:, di::2, dj::2] == m)
    return out


def _cnn_forward(params: list[np.ndarray], x: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    k1, b1, k2, b2 = params[:4]
    n, h, w, _ = x.shape
    cols1 = _im2col(x)
    a1 = np.maximum(cols1 @ k1.reshape(-1, k1.shape[3]) + b1, 0).reshape(n, h, w, -1)
    p1 = _pool(a1)
    cols2 = _im2col(p1)
    a2 = np.maximum(cols2 @ k2.reshape(-1, k2.shape[3]) + b2, 0).reshape(n, h // 2, w // 2, -1)
    p2 = _pool(a2)
    flat = p2.reshape(n, -1)
    head_acts, p = _forward(params[4:], flat)  # the dense head is an MLP on the pooled map
    cache = {"cols1": cols1, "a1": a1, "p1": p1, "cols2": cols2, "a2": a2, "p2": p2}
    cache.update({f"head{i}": a for i, a in enumerate(head_acts)})
    return cache, p


def _cnn_backward(params: list[np.ndarray], c: dict[str, np.ndarray], d: np.ndarray) -> list[np.ndarray]:
    k1, k2, head = params[0], params[2], params[4:]
    acts = [c[f"head{i}"] for i in range(len(head) // 2)]
    ghead, dflat = _mlp_backward(head, acts, d)
    da2 = _unpool(dflat.reshape(c["p2"].shape), c["a2"], c["p2"])
    da2f = da2.reshape(-1, da2.shape[3])
    gk2 = (c["cols2"].T @ da2f).reshape(k2.shape)
    gb2 = da2f.sum(axis=0)
    dp1 = _col2im(da2f @ k2.reshape(-1, k2.shape[3]).T, c["p1"].shape)
    da1 = _unpool(dp1, c["a1"], c["p1"])
    da1f = da1.reshape(-1, da1.shape[3])
    gk1 = (c["cols1"].T @ da1f).reshape(k1.shape)
    gb1 = da1f.sum(axis=0)
    return [gk1, gb1, gk2, gb2, *ghead]


def _probs(params: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    if _is_cnn(params):
        return _cnn_forward(params, _as_images(params, x))[1]
    return _forward(params, x.reshape(len(x), -1))[1]


def gradient(params: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[float, list[np.ndarray]]:
    """Mean cross-entropy and its gradient with respect to every parameter (MLP or CNN)."""
    if _is_cnn(params):
        # chunks of _CHUNK examples keep the im2col buffers in cache; the mean gradient is
        # the example-weighted sum of the chunk gradients
        xi, n = _as_images(params, x), len(x)
        loss, total = 0.0, [np.zeros_like(p) for p in params]
        for s in range(0, n, _CHUNK):
            cache, p = _cnn_forward(params, xi[s : s + _CHUNK])
            m, yy = len(p), y[s : s + _CHUNK]
            loss -= float(np.log(p[np.arange(m), yy] + 1e-12).sum()) / n
            d = p.copy()
            d[np.arange(m), yy] -= 1
            d /= n
            for t, g in zip(total, _cnn_backward(params, cache, d)):
                t += g
        return loss, total
    x = x.reshape(len(x), -1)
    acts, p = _forward(params, x)
    n = len(x)
    loss = float(-np.log(p[np.arange(n), y] + 1e-12).mean())
    d = p.copy()
    d[np.arange(n), y] -= 1
    d /= n
    return loss, _mlp_backward(params, acts, d)[0]


def _mlp_backward(params: list[np.ndarray], acts: list[np.ndarray],
                  d: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Gradients of an MLP's [W, b, ...] given d(loss)/d(logits), and d(loss)/d(input)."""
    grads: list[np.ndarray] = [np.empty(0)] * len(params)
    for i in range(len(params) - 2, -1, -2):
        a = acts[i // 2]
        grads[i] = a.T @ d
        grads[i + 1] = d.sum(axis=0)
        d = d @ params[i].T
        if i > 0:
            d = d * (a > 0)
    return grads, d


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
    """(mean cross-entropy, accuracy) on (x, y), in chunks of ``_CHUNK`` examples."""
    p = np.concatenate([_probs(params, x[s : s + _CHUNK]) for s in range(0, len(x), _CHUNK)])
    loss = float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())
    return loss, float((p.argmax(axis=1) == y).mean())
