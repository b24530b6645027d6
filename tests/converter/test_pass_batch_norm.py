"""fold_batch_norm and lower_batch_norm on small hand-built graphs."""

from __future__ import annotations

import numpy as np
from converter_testlib import conv2d_np, depthwise_np
from passes_testlib import add_batch_norm, apply_unchanged, bn_np, op_list, rand_array
from tether.converter._internal import passes
from tether.converter._internal.ops import Activation, OpType


def test_fold_bn_into_conv_matches_conv_then_bn(gb) -> None:
    x = gb.input("x", (1, 7, 7, 3))
    w, b = gb.const("w", rand_array(5, 3, 3, 3)), gb.const("b", rand_array(5))
    c = gb.node(OpType.CONV_2D, [x, w, b], "conv", {"strides": (2, 2), "pads": (1, 1, 1, 1)})
    y = add_batch_norm(gb, c, 5)
    g = gb.graph(y)
    out, rewrites = apply_unchanged(passes.fold_batch_norm, g)
    assert op_list(out) == [OpType.CONV_2D] and out.outputs == ("bn",)
    assert rewrites[0].note == "folded bn into conv"
    n = out.nodes[0]
    xv = rand_array(1, 7, 7, 3)
    ref = bn_np(g, conv2d_np(xv, g.tensors["w"].data, g.tensors["b"].data, (2, 2),
                              pads=(1, 1, 1, 1)))
    got = conv2d_np(xv, out.tensors[n.inputs[1]].data, out.tensors[n.inputs[2]].data, (2, 2),
                    pads=(1, 1, 1, 1))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_fold_bn_into_depthwise_scales_last_axis(gb) -> None:
    x = gb.input("x", (1, 5, 5, 2))
    w = gb.const("w", rand_array(1, 3, 3, 4))
    c = gb.node(OpType.DEPTHWISE_CONV_2D, [x, w, None], "dw", {"depth_multiplier": (2,)})
    g = gb.graph(add_batch_norm(gb, c, 4))
    out = passes.fold_batch_norm(g)
    n = out.nodes[0]
    xv = rand_array(1, 5, 5, 2)
    ref = bn_np(g, depthwise_np(xv, g.tensors["w"].data, None, depth_multiplier=2))
    got = depthwise_np(xv, out.tensors[n.inputs[1]].data, out.tensors[n.inputs[2]].data,
                       depth_multiplier=2)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_fold_bn_into_fully_connected(gb) -> None:
    x = gb.input("x", (2, 3, 4))
    w, b = gb.const("w", rand_array(6, 4)), gb.const("b", rand_array(6))
    f = gb.node(OpType.FULLY_CONNECTED, [x, w, b], "fc")
    g = gb.graph(add_batch_norm(gb, f, 6))
    out = passes.fold_batch_norm(g)
    n = out.nodes[0]
    xv = rand_array(2, 3, 4)
    ref = bn_np(g, xv @ g.tensors["w"].data.T + g.tensors["b"].data)
    got = xv @ out.tensors[n.inputs[1]].data.T + out.tensors[n.inputs[2]].data
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_bn_not_folded_when_conv_output_has_another_reader(gb) -> None:
    x = gb.input("x", (1, 4, 4, 2))
    c = gb.node(OpType.CONV_2D, [x, gb.const("w", rand_array(2, 1, 1, 2)), None], "conv")
    y = add_batch_norm(gb, c, 2)
    s = gb.node(OpType.ADD, [c, y], "sum")
    g = gb.graph(s)
    out, rewrites = passes.fold_batch_norm.apply(g)
    assert rewrites == [] and out is g
    lowered = passes.lower_batch_norm(g)
    assert op_list(lowered) == [OpType.CONV_2D, OpType.MUL, OpType.ADD, OpType.ADD]
    mul, add = lowered.nodes[1], lowered.nodes[2]
    yv = rand_array(1, 4, 4, 2)
    got = yv * lowered.tensors[mul.inputs[1]].data + lowered.tensors[add.inputs[1]].data
    np.testing.assert_allclose(got, bn_np(g, yv), rtol=1e-5, atol=1e-5)


def test_bn_not_folded_into_conv_with_fused_activation(gb) -> None:
    x = gb.input("x", (1, 4, 4, 2))
    c = gb.node(OpType.CONV_2D, [x, gb.const("w", rand_array(2, 1, 1, 2)), None], "conv",
                act=Activation.RELU)
    g = gb.graph(add_batch_norm(gb, c, 2))
    assert passes.fold_batch_norm.apply(g)[1] == []
