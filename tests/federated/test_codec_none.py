"""The identity codec: properties (Hypothesis) and exact checks."""

from __future__ import annotations


import numpy as np
from codecs_testlib import arrays
from hypothesis import given, settings
from tether.federated import codecs


@settings(max_examples=50, deadline=None)
@given(x=arrays)
def test_none_round_trips_exactly(x: np.ndarray) -> None:
    assert np.array_equal(codecs.decode(codecs.make("none").encode(x)), x, equal_nan=True)
