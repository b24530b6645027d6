"""fuse_activations on small hand-built graphs."""

from __future__ import annotations

import pytest
from passes_testlib import apply_unchanged, rand_array
from tether.converter._internal import passes
from tether.converter._internal.ops import Activation, OpType


@pytest.mark.parametrize("act_op, fused", [
    (OpType.RELU, Activation.RELU), (OpType.RELU6, Activation.RELU6),
    (OpType.LOGISTIC, Activation.SIGMOID), (OpType.TANH, Activation.TANH),
    (OpType.HARD_SWISH, Activation.HARD_SWISH)])
def test_fuse_activation_into_conv(gb, act_op, fused) -> None:
    x = gb.input("x", (1, 4, 4, 2))
    c = gb.node(OpType.CONV_2D, [x, gb.const("w", rand_array(3, 1, 1, 2)), None], "conv")
    g = gb.graph(gb.node(act_op, [c], "act"))
    out, rewrites = apply_unchanged(passes.fuse_activations, g)
    assert [(n.op, n.activation, n.outputs) for n in out.nodes] == [
        (OpType.CONV_2D, fused, ("act",))]
    assert "conv" not in out.tensors and rewrites[0].kind == "fuse_activation"


def test_fuse_activation_into_add_and_pool(gb) -> None:
    x = gb.input("x", (1, 4, 4, 2))
    a = gb.node(OpType.ADD, [x, x], "add")
    r = gb.node(OpType.RELU, [a], "relu")
    p = gb.node(OpType.MAX_POOL_2D, [r], "pool", {"kernel": (2, 2), "strides": (2, 2)})
    g = gb.graph(gb.node(OpType.RELU6, [p], "relu6"))
    out = passes.fuse_activations(g)
    assert [(n.op, n.activation) for n in out.nodes] == [
        (OpType.ADD, Activation.RELU), (OpType.MAX_POOL_2D, Activation.RELU6)]


def test_no_fusion_when_producer_is_shared_or_activated_or_output(gb) -> None:
    x = gb.input("x", (1, 4, 4, 2))
    w = gb.const("w", rand_array(2, 1, 1, 2))
    c1 = gb.node(OpType.CONV_2D, [x, w, None], "c1")
    r1 = gb.node(OpType.RELU, [c1], "r1")
    s = gb.node(OpType.ADD, [c1, r1], "shared")  # c1 read twice
    c2 = gb.node(OpType.CONV_2D, [s, w, None], "c2", act=Activation.TANH)
    r2 = gb.node(OpType.RELU, [c2], "r2")  # c2 already activated
    c3 = gb.node(OpType.CONV_2D, [r2, w, None], "c3")
    r3 = gb.node(OpType.RELU, [c3], "r3")
    sm = gb.node(OpType.SOFTMAX, [r3], "sm")
    r4 = gb.node(OpType.RELU, [sm], "r4")  # softmax cannot carry it
    g = gb.graph(r4, c3)  # c3 is also a graph output
    assert passes.fuse_activations.apply(g)[1] == []
