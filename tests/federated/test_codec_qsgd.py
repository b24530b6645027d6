"""QSGD (dense and Elias-gamma sparse modes): properties (Hypothesis) and exact checks."""

from __future__ import annotations


import numpy as np
from tether.federated import codecs


def test_qsgd_sparse_elias_mode_is_chosen_and_decodes() -> None:
    x = np.zeros(100_000, np.float32)
    x[::997] = 1.0  # very sparse: Elias gamma beats 2 bits per element
    c = codecs.QSGD(2, bucket=100_000, seed=0)
    p = c.encode(x)
    assert p[6 + 4 + 1] == 1  # mode byte = sparse
    assert len(p) < 100_000 * 2 / 8 / 4
    ys = np.stack([codecs.decode(c.encode(x)) for _ in range(300)])
    assert abs(ys.sum(axis=1).mean() - x.sum()) < 6 * ys.sum(axis=1).std() / np.sqrt(300) + 1e-3
