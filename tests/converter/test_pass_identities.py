"""remove_identities (and the IDENTITY lowering at a graph output) on small hand-built graphs."""

from __future__ import annotations

import numpy as np
from passes_testlib import op_list
from tether.converter._internal import passes
from tether.converter._internal.ops import InternalOp, OpType


def test_reshape_chain_becomes_one_reshape(gb) -> None:
    x = gb.input("x", (1, 2, 3, 4))
    r1 = gb.node(OpType.RESHAPE, [x], "r1", shape=(1, 24))
    r2 = gb.node(OpType.RESHAPE, [r1], "r2", shape=(4, 6))
    r3 = gb.node(OpType.RESHAPE, [r2], "r3", shape=(1, 24))
    g = gb.graph(gb.node(OpType.RELU, [r3], "y"))
    out = passes.run_passes(g, [passes.remove_identities])[0]
    assert op_list(out) == [OpType.RESHAPE, OpType.RELU]
    assert out.nodes[0].inputs == ("x",) and out.tensors[out.nodes[0].outputs[0]].shape == (1, 24)


def test_identities_removed_and_output_name_kept(gb) -> None:
    x = gb.input("x", (1, 8))
    a = gb.node(OpType.RELU, [x], "a")
    i1 = gb.node(InternalOp.IDENTITY, [a], "dropout")
    r = gb.node(OpType.RESHAPE, [i1], "same", shape=(1, 8))
    m = gb.node(OpType.MUL, [r, gb.const("one", np.ones(8, np.float32))], "times_one")
    p = gb.node(OpType.PAD, [m], "nopad", {"paddings": (0, 0, 0, 0)})
    g = gb.graph(gb.node(InternalOp.IDENTITY, [p], "out"))
    out = passes.run_passes(g, [passes.remove_identities])[0]
    assert [(n.op, n.outputs) for n in out.nodes] == [(OpType.RELU, ("out",))]
    assert out.outputs == ("out",)


def test_identity_from_input_to_output_is_lowered_to_copy(gb) -> None:
    x = gb.input("x", (1, 8))
    g = gb.graph(gb.node(InternalOp.IDENTITY, [x], "y"))
    assert passes.remove_identities.apply(g)[1] == []
    out = passes.lower_internal_ops(g)
    assert op_list(out) == [OpType.RESHAPE] and out.outputs == ("y",)
