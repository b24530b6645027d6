"""eliminate_dead_nodes on small hand-built graphs."""

from __future__ import annotations

from passes_testlib import op_list
from tether.converter._internal import passes
from tether.converter._internal.ops import OpType


def test_dead_branch_is_removed(gb) -> None:
    x = gb.input("x", (1, 4))
    d1 = gb.node(OpType.RELU, [x], "d1")
    gb.node(OpType.TANH, [d1], "d2")
    g = gb.graph(gb.node(OpType.LOGISTIC, [x], "y"))
    out, log = passes.run_passes(g, [passes.eliminate_dead_nodes])
    assert op_list(out) == [OpType.LOGISTIC] and set(out.tensors) == {"x", "y"}
    assert log.counts == {"eliminate_dead_node": 2}
