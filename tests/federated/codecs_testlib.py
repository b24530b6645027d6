"""Hypothesis strategies the codec tests share."""

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=9)
arrays = st.one_of(
    hnp.arrays(np.float32, shapes, elements=st.floats(-1e3, 1e3, width=32)),
    hnp.arrays(np.float64, shapes, elements=st.floats(-1e3, 1e3)),
)
