"""recognize_hard_swish and recognize_hard_sigmoid (numerics in the C engine) on small hand-built graphs."""

from __future__ import annotations

import numpy as np
from converter_testlib import GraphBuilder
from onnx_testlib import engine_run, rand, rel_err
from passes_testlib import assert_same_output, graph_bytes, op_list
from tether.converter._internal import passes
from tether.converter._internal.ops import Activation, OpType


def test_hard_swish_chains_are_recognized_in_both_orders() -> None:
    for order in ("inner", "outer"):
        gb = GraphBuilder()
        x = gb.input("x", (1, 4, 4, 3))
        c = gb.node(OpType.CONV_2D, [x, gb.const("w", rand((3, 1, 1, 3), 1)), None], "c")
        a = gb.node(OpType.ADD, [c, gb.const("three", np.float32(3))], "a")
        r = gb.node(OpType.RELU6, [a], "r")
        sixth = gb.const("sixth", np.float32(1 / 6))
        if order == "inner":
            hs = gb.node(OpType.MUL, [r, sixth], "hs")
            gb.node(OpType.MUL, [c, hs], "y")
        else:
            p = gb.node(OpType.MUL, [c, r], "p")
            gb.node(OpType.MUL, [p, sixth], "y")
        g = gb.graph("y")
        out, log = passes.run_passes(g, passes.OPTIMIZE_PIPELINE)
        assert op_list(out) == [OpType.CONV_2D], order
        assert out.nodes[0].activation == Activation.HARD_SWISH
        assert log.counts["recognize_hard_swish"] == 1
        assert_same_output(g, out, rand((1, 4, 4, 3), 5, -6, 6))


def test_squeeze_excite_gate_becomes_hard_sigmoid() -> None:
    gb = GraphBuilder()
    x = gb.input("x", (1, 4, 4, 3))
    m = gb.node(OpType.MEAN, [x], "m", {"axes": (1, 2), "keepdims": (1,)})
    a = gb.node(OpType.ADD, [m, gb.const("three", np.float32(3))], "a")
    r = gb.node(OpType.RELU6, [a], "r")
    gate = gb.node(OpType.MUL, [gb.const("sixth", np.float32(1 / 6)), r], "gate")
    gb.node(OpType.MUL, [x, gate], "y")
    g = gb.graph("y")
    out, log = passes.run_passes(g, passes.OPTIMIZE_PIPELINE)
    assert op_list(out) == [OpType.MEAN, OpType.HARD_SIGMOID, OpType.MUL]
    assert log.counts["recognize_hard_sigmoid"] == 1
    hs = out.nodes[1]
    assert hs.inputs == ("m",) and hs.attrs == {"alpha": (1 / 6,), "offset": (0.5,)}
    x_ = rand((1, 4, 4, 3), 3, -8, 8)
    m_ = x_.mean(axis=(1, 2), keepdims=True)
    ref = x_ * np.clip(m_ + 3, 0, 6) / 6
    assert rel_err(engine_run(graph_bytes(out), x_), ref) < 1e-6


def test_x_times_hard_sigmoid_of_x_becomes_hard_swish() -> None:
    gb = GraphBuilder()
    x = gb.input("x", (2, 5))
    h = gb.node(OpType.HARD_SIGMOID, [x], "h", {"alpha": (1 / 6,), "offset": (0.5,)})
    gb.node(OpType.MUL, [h, x], "y")
    out = passes.recognize_hard_swish(gb.graph("y"))
    assert op_list(out) == [OpType.HARD_SWISH] and out.nodes[0].inputs == ("x",)
    gb = GraphBuilder()
    x = gb.input("x", (2, 5))
    h = gb.node(OpType.HARD_SIGMOID, [x], "h", {"alpha": (0.2,), "offset": (0.5,)})
    gb.node(OpType.MUL, [h, x], "y")
    assert op_list(passes.recognize_hard_swish(gb.graph("y"))) == [OpType.HARD_SIGMOID, OpType.MUL]
