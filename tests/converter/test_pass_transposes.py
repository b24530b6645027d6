"""simplify_transposes (numerics in the C engine) on small hand-built graphs."""

from __future__ import annotations

from converter_testlib import GraphBuilder
from passes_testlib import op_list
from tether.converter._internal import passes
from tether.converter._internal.ops import OpType


def test_transpose_moving_only_unit_dims_becomes_reshape() -> None:
    gb = GraphBuilder()
    x = gb.input("x", (1, 1, 1, 8))
    t = gb.node(OpType.TRANSPOSE, [x], "t", {"perm": (0, 3, 1, 2)})
    gb.node(OpType.RELU, [t], "y")
    g = gb.graph("y")
    out, rws = passes.simplify_transposes.apply(g)
    assert op_list(out) == [OpType.RESHAPE, OpType.RELU] and rws[0].kind == "transpose_to_reshape"
    assert out.tensors["t"].shape == (1, 8, 1, 1)


def test_real_transpose_is_kept_and_pairs_merge() -> None:
    gb = GraphBuilder()
    x = gb.input("x", (1, 2, 3, 4))
    a = gb.node(OpType.TRANSPOSE, [x], "a", {"perm": (0, 2, 3, 1)})
    gb.node(OpType.TRANSPOSE, [a], "y", {"perm": (0, 3, 1, 2)})
    g = gb.graph("y")
    out, _ = passes.run_passes(g, passes.OPTIMIZE_PIPELINE)
    # the two cancel: merged into an identity transpose, which is then a copy
    assert OpType.TRANSPOSE not in op_list(out)
    gb = GraphBuilder()
    x = gb.input("x", (1, 2, 3, 4))
    gb.node(OpType.TRANSPOSE, [x], "y", {"perm": (0, 2, 3, 1)})
    assert op_list(passes.simplify_transposes(gb.graph("y"))) == [OpType.TRANSPOSE]
