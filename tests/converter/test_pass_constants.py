"""fold_constants on small hand-built graphs."""

from __future__ import annotations

import numpy as np
from passes_testlib import op_list
from tether.converter._internal import passes
from tether.converter._internal.ops import Activation, OpType


def test_constant_subgraph_is_folded(gb) -> None:
    x = gb.input("x", (1, 3))
    a = gb.const("a", np.array([1.0, -2.0, 3.0], np.float32))
    b = gb.const("b", np.array([0.5, 0.5, 0.5], np.float32))
    s = gb.node(OpType.ADD, [a, b], "s", act=Activation.RELU)
    r = gb.node(OpType.RESHAPE, [s], "r", shape=(1, 3))
    g = gb.graph(gb.node(OpType.MUL, [x, r], "y"))
    out, log = passes.run_passes(g, [passes.fold_constants])
    assert op_list(out) == [OpType.MUL]
    np.testing.assert_array_equal(out.tensors[out.nodes[0].inputs[1]].data,
                                  [[1.5, 0.0, 3.5]])
    assert log.counts == {"fold_constant": 2}


def test_graph_output_is_not_folded_into_a_constant(gb) -> None:
    x = gb.input("x", (1, 3))
    c = gb.node(OpType.RELU, [gb.const("c", np.ones(3, np.float32))], "c_out")
    g = gb.graph(gb.node(OpType.ADD, [x, x], "y"), c)
    assert passes.fold_constants.apply(g)[1] == []
