"""Local training in the C engine's trainer: the code path a phone runs, for the MLP.

`train` has `model.train`'s contract (mini-batch SGD, E epochs, the same per-epoch shuffles):
the global [W1, b1, W2, b2, ...] become a `.tmodel` (`tether.converter.from_dense`), the
engine's trainer (`tether.device.Trainer`, plain SGD) runs the epochs, and the trained
tensors come back in the numpy layout. No TensorFlow is imported.
"""

from __future__ import annotations

import numpy as np

__all__ = ["train"]


def train(params: list[np.ndarray], x: np.ndarray, y: np.ndarray, epochs: int = 1,
          batch_size: int | None = 10, lr: float = 0.1,
          seed: int = 0) -> tuple[list[np.ndarray], float]:
    """E epochs of mini-batch SGD in the engine; returns the new parameters and the last
    epoch's mean loss (as `tether.federated.model.train`)."""
    from tether.converter import from_dense
    from tether.device import Trainer

    x = np.ascontiguousarray(x.reshape(len(x), -1), np.float32)
    y = np.asarray(y, np.int32)
    n = len(x)
    bs = n if batch_size is None or batch_size <= 0 else min(batch_size, n)
    trainer = Trainer(from_dense(params).to_bytes(), batch_size=bs, optimizer="sgd",
                      learning_rate=lr)
    rng = np.random.default_rng(seed)
    loss = 0.0
    for _ in range(epochs):
        order = rng.permutation(n)
        losses = [trainer.step(x[order[s:s + bs]], y[order[s:s + bs]]) for s in range(0, n, bs)]
        loss = float(np.mean(losses)) if losses else 0.0
    trained = trainer.params()
    out = []
    for i in range(0, len(params), 2):
        w, b = params[i], params[i + 1]
        out.append(trained[f"dense_{i // 2}/kernel"][0].reshape(w.shape[1], w.shape[0]).T.copy())
        out.append(trained[f"dense_{i // 2}/bias"][0].reshape(b.shape))
    trainer.close()
    return out, loss
