"""signSGD and majority vote: properties (Hypothesis) and exact checks."""

from __future__ import annotations


import numpy as np
from codecs_testlib import arrays
from hypothesis import given, settings
from tether.federated import codecs


@settings(max_examples=50, deadline=None)
@given(x=arrays)
def test_signsgd_is_deterministic_scaled_sign(x: np.ndarray) -> None:
    c = codecs.make("signsgd")
    p = c.encode(x)
    assert p == c.encode(x)  # deterministic
    y = codecs.decode(p)
    scale = np.float32(np.mean(np.abs(x.astype(np.float64))))
    expected = np.where(x > 0, scale, -scale).astype(x.dtype)
    assert np.array_equal(y, expected)


def test_majority_vote_closed_form() -> None:
    c = codecs.SignSGD()
    ps = [c.encode(np.array([1.0, -1.0, 2.0])), c.encode(np.array([1.0, 1.0, -2.0])),
          c.encode(np.array([-4.0, -1.0, -2.0]))]
    # scales 4/3, 4/3, 7/3 -> median 4/3; votes +1, -1, -1
    assert np.allclose(codecs.majority_vote(ps), np.array([1.0, -1.0, -1.0]) * np.float32(4 / 3))
