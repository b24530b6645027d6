"""Top-k sparsification: properties (Hypothesis) and exact checks."""

from __future__ import annotations


import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tether.federated import codecs


@settings(max_examples=50, deadline=None)
@given(x=hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=2, max_side=30),
                    elements=st.floats(-100, 100, width=32)))
def test_topk_keeps_exactly_the_largest(x: np.ndarray) -> None:
    y = codecs.decode(codecs.TopK(0.2).encode(x))
    k = max(1, int(np.ceil(0.2 * x.size)))
    kept = y != 0
    assert kept.sum() <= k
    assert np.array_equal(y[kept], x[kept])  # kept values are exact
    if kept.any() and (~kept).any():
        assert np.abs(x[~kept]).max() <= np.abs(x[kept]).min()
