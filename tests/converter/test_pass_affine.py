"""fold_affine (numerics in the C engine) on small hand-built graphs."""

from __future__ import annotations

import numpy as np
from converter_testlib import GraphBuilder, conv2d_np
from onnx_testlib import engine_run, rand, rel_err
from passes_testlib import graph_bytes, op_list
from tether.converter._internal import passes
from tether.converter._internal.ops import Activation, OpType


def test_fold_affine_scales_weights_and_shifts_bias() -> None:
    gb = GraphBuilder()
    x = gb.input("x", (1, 5, 5, 3))
    c = gb.node(OpType.CONV_2D, [x, gb.const("w", rand((4, 3, 3, 3), 1)),
                                 gb.const("b", rand((4,), 2))], "c")
    m = gb.node(OpType.MUL, [c, gb.const("s", rand((1, 1, 1, 4), 3))], "m")
    a = gb.node(OpType.SUB, [m, gb.const("o", rand((4,), 4))], "a")
    gb.node(OpType.RELU, [a], "y")
    g = gb.graph("y")
    out, log = passes.run_passes(g, passes.OPTIMIZE_PIPELINE)
    assert op_list(out) == [OpType.CONV_2D] and out.nodes[0].activation == Activation.RELU
    assert log.counts["fold_affine"] == 2
    x_ = rand((1, 5, 5, 3), 9)
    t = g.tensors
    ref = np.maximum(conv2d_np(x_, t["w"].data, t["b"].data) * t["s"].data - t["o"].data, 0)
    assert rel_err(engine_run(graph_bytes(out), x_), ref) < 1e-5


def test_fold_affine_leaves_spatial_constants_alone() -> None:
    gb = GraphBuilder()
    x = gb.input("x", (1, 4, 4, 2))
    c = gb.node(OpType.DEPTHWISE_CONV_2D, [x, gb.const("w", rand((1, 3, 3, 2), 1)), None], "c",
                {"pads": (1, 1, 1, 1)})
    gb.node(OpType.MUL, [c, gb.const("s", rand((1, 4, 4, 1), 3))], "y")  # varies over H, W
    g = gb.graph("y")
    assert op_list(passes.fold_affine(g)) == [OpType.DEPTHWISE_CONV_2D, OpType.MUL]
