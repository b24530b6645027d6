"""Error feedback: properties (Hypothesis) and exact checks."""

from __future__ import annotations


import numpy as np
from tether.federated import codecs


def test_error_feedback_accumulates_residual() -> None:
    ef = codecs.ErrorFeedback(codecs.TopK(0.25))
    g = np.array([4.0, 3.0, 2.0, 1.0])
    total = np.zeros(4)
    for _ in range(4):
        total += codecs.decode(ef.encode(g))
    # sent + residual == sum of inputs; without feedback only coordinate 0 would ever be sent
    assert np.allclose(total + ef.state["0"], 4 * g)
    assert np.count_nonzero(total) == 3
