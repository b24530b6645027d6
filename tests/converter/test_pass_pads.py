"""fold_pad on small hand-built graphs."""

from __future__ import annotations

import numpy as np
import pytest
from converter_testlib import GraphBuilder, conv2d_np
from passes_testlib import apply_unchanged, op_list, rand_array
from tether.converter._internal import passes
from tether.converter._internal.ops import OpType


def _padded_conv(gb, paddings, value=0.0, op=OpType.CONV_2D):
    x = gb.input("x", (1, 5, 5, 2))
    p = gb.node(OpType.PAD, [x], "pad", {"paddings": paddings, "value": (value,)})
    if op == OpType.MAX_POOL_2D:
        return gb.graph(gb.node(op, [p], "y", {"kernel": (3, 3), "strides": (2, 2)}))
    w = gb.const("w", rand_array(3, 3, 3, 2 if op == OpType.CONV_2D else 1)) \
        if op == OpType.CONV_2D else gb.const("w", rand_array(1, 3, 3, 2))
    return gb.graph(gb.node(op, [p, w, None], "y",
                            {"strides": (2, 2), "pads": (0, 0, 1, 0)}))


def test_fold_pad_into_conv_and_depthwise(gb) -> None:
    g = _padded_conv(gb, (0, 0, 1, 2, 0, 1, 0, 0))
    out, _ = apply_unchanged(passes.fold_pad, g)
    assert op_list(out) == [OpType.CONV_2D] and out.nodes[0].inputs[0] == "x"
    assert out.nodes[0].attrs["pads"] == (1, 0, 3, 1)  # (top, left, bottom, right)
    xv = rand_array(1, 5, 5, 2)
    w = g.tensors["w"].data
    ref = conv2d_np(np.pad(xv, ((0, 0), (1, 2), (0, 1), (0, 0))), w, None, (2, 2),
                    pads=(0, 0, 1, 0))
    np.testing.assert_allclose(conv2d_np(xv, w, None, (2, 2), pads=(1, 0, 3, 1)), ref)


def test_fold_pad_into_depthwise() -> None:
    g = _padded_conv(GraphBuilder(), (0, 0, 1, 1, 1, 1, 0, 0), op=OpType.DEPTHWISE_CONV_2D)
    out = passes.fold_pad(g)
    assert op_list(out) == [OpType.DEPTHWISE_CONV_2D]
    assert out.nodes[0].attrs["pads"] == (1, 1, 2, 1)


@pytest.mark.parametrize("paddings, value, op", [
    ((0, 0, 1, 1, 1, 1, 0, 0), 0.0, OpType.MAX_POOL_2D),  # max pool ignores padded cells
    ((0, 0, 1, 1, 1, 1, 0, 0), 1.0, OpType.CONV_2D),      # non-zero pad value
    ((0, 0, 1, 1, 1, 1, 0, 1), 0.0, OpType.CONV_2D),      # channel padding
])
def test_pad_not_folded(gb, paddings, value, op) -> None:
    if op == OpType.CONV_2D and paddings[7]:
        x = gb.input("x", (1, 5, 5, 2))
        p = gb.node(OpType.PAD, [x], "pad", {"paddings": paddings})
        g = gb.graph(gb.node(op, [p, gb.const("w", rand_array(3, 3, 3, 3)), None], "y"))
    else:
        g = _padded_conv(gb, paddings, value, op)
    assert passes.fold_pad.apply(g)[1] == []
