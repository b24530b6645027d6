"""simplify_arithmetic (numerics in the C engine) on small hand-built graphs."""

from __future__ import annotations

import numpy as np
from converter_testlib import GraphBuilder
from passes_testlib import op_list
from tether.converter._internal import passes
from tether.converter._internal.ops import OpType


def test_sub_and_div_by_constants_become_add_and_mul() -> None:
    gb = GraphBuilder()
    x = gb.input("x", (2, 3))
    s = gb.node(OpType.SUB, [x, gb.const("c", np.array([1, 2, 3], np.float32))], "s")
    d = gb.node(OpType.DIV, [s, gb.const("k", np.float32(4))], "d")
    gb.node(OpType.DIV, [gb.const("one", np.float32(1)), d], "y", shape=None)  # not rewritten
    g = gb.graph("y")
    out, rws = passes.simplify_arithmetic.apply(g)
    assert op_list(out) == [OpType.ADD, OpType.MUL, OpType.DIV]
    assert [r.kind for r in rws] == ["sub_to_add", "div_to_mul"]
    add, mul = out.nodes[0], out.nodes[1]
    np.testing.assert_array_equal(out.tensors[add.inputs[1]].data, [-1, -2, -3])
    assert float(out.tensors[mul.inputs[1]].data) == 0.25
