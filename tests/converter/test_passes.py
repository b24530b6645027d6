"""Each graph pass on small hand-built graphs, and the pass manager."""

from __future__ import annotations

import numpy as np
import pytest
from converter_testlib import GraphBuilder, act_np, conv2d_np, depthwise_np
from tether.converter._internal import ir, passes
from tether.converter._internal.ops import Activation, InternalOp, OpType

from tether.errors import ConversionError

RNG = np.random.default_rng(1)


def _rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _bn(gb, x, c, name="bn"):
    params = [gb.const(f"{name}/g", _rand(c)), gb.const(f"{name}/b", _rand(c)),
              gb.const(f"{name}/m", _rand(c)),
              gb.const(f"{name}/v", RNG.uniform(0.5, 2.0, c).astype(np.float32))]
    return gb.node(InternalOp.BATCH_NORM, [x, *params], name, {"epsilon": (1e-3,)})


def _bn_np(g, y, name="bn"):
    t = g.tensors
    gamma, beta, mean, var = (t[f"{name}/{k}"].data.astype(np.float64) for k in "gbmv")
    return (y - mean) / np.sqrt(var + 1e-3) * gamma + beta


def _ops(g):
    return [n.op for n in g.nodes]


def _snapshot(g):
    return (tuple(g.nodes), dict(g.tensors), g.inputs, g.outputs)


def _unchanged(p, g):
    before = _snapshot(g)
    out, rewrites = p.apply(g)
    assert _snapshot(g) == before  # never mutates its input
    return out, rewrites


# ---------------------------------------------------------------- fold_batch_norm


def test_fold_bn_into_conv_matches_conv_then_bn(gb) -> None:
    x = gb.input("x", (1, 7, 7, 3))
    w, b = gb.const("w", _rand(5, 3, 3, 3)), gb.const("b", _rand(5))
    c = gb.node(OpType.CONV_2D, [x, w, b], "conv", {"strides": (2, 2), "pads": (1, 1, 1, 1)})
    y = _bn(gb, c, 5)
    g = gb.graph(y)
    out, rewrites = _unchanged(passes.fold_batch_norm, g)
    assert _ops(out) == [OpType.CONV_2D] and out.outputs == ("bn",)
    assert rewrites[0].note == "folded bn into conv"
    n = out.nodes[0]
    xv = _rand(1, 7, 7, 3)
    ref = _bn_np(g, conv2d_np(xv, g.tensors["w"].data, g.tensors["b"].data, (2, 2),
                              pads=(1, 1, 1, 1)))
    got = conv2d_np(xv, out.tensors[n.inputs[1]].data, out.tensors[n.inputs[2]].data, (2, 2),
                    pads=(1, 1, 1, 1))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_fold_bn_into_depthwise_scales_last_axis(gb) -> None:
    x = gb.input("x", (1, 5, 5, 2))
    w = gb.const("w", _rand(1, 3, 3, 4))
    c = gb.node(OpType.DEPTHWISE_CONV_2D, [x, w, None], "dw", {"depth_multiplier": (2,)})
    g = gb.graph(_bn(gb, c, 4))
    out = passes.fold_batch_norm(g)
    n = out.nodes[0]
    xv = _rand(1, 5, 5, 2)
    ref = _bn_np(g, depthwise_np(xv, g.tensors["w"].data, None, depth_multiplier=2))
    got = depthwise_np(xv, out.tensors[n.inputs[1]].data, out.tensors[n.inputs[2]].data,
                       depth_multiplier=2)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_fold_bn_into_fully_connected(gb) -> None:
    x = gb.input("x", (2, 3, 4))
    w, b = gb.const("w", _rand(6, 4)), gb.const("b", _rand(6))
    f = gb.node(OpType.FULLY_CONNECTED, [x, w, b], "fc")
    g = gb.graph(_bn(gb, f, 6))
    out = passes.fold_batch_norm(g)
    n = out.nodes[0]
    xv = _rand(2, 3, 4)
    ref = _bn_np(g, xv @ g.tensors["w"].data.T + g.tensors["b"].data)
    got = xv @ out.tensors[n.inputs[1]].data.T + out.tensors[n.inputs[2]].data
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_bn_not_folded_when_conv_output_has_another_reader(gb) -> None:
    x = gb.input("x", (1, 4, 4, 2))
    c = gb.node(OpType.CONV_2D, [x, gb.const("w", _rand(2, 1, 1, 2)), None], "conv")
    y = _bn(gb, c, 2)
    s = gb.node(OpType.ADD, [c, y], "sum")
    g = gb.graph(s)
    out, rewrites = passes.fold_batch_norm.apply(g)
    assert rewrites == [] and out is g
    lowered = passes.lower_batch_norm(g)
    assert _ops(lowered) == [OpType.CONV_2D, OpType.MUL, OpType.ADD, OpType.ADD]
    mul, add = lowered.nodes[1], lowered.nodes[2]
    yv = _rand(1, 4, 4, 2)
    got = yv * lowered.tensors[mul.inputs[1]].data + lowered.tensors[add.inputs[1]].data
    np.testing.assert_allclose(got, _bn_np(g, yv), rtol=1e-5, atol=1e-5)


def test_bn_not_folded_into_conv_with_fused_activation(gb) -> None:
    x = gb.input("x", (1, 4, 4, 2))
    c = gb.node(OpType.CONV_2D, [x, gb.const("w", _rand(2, 1, 1, 2)), None], "conv",
                act=Activation.RELU)
    g = gb.graph(_bn(gb, c, 2))
    assert passes.fold_batch_norm.apply(g)[1] == []


# --------------------------------------------------------------- fuse_activations


@pytest.mark.parametrize("act_op, fused", [
    (OpType.RELU, Activation.RELU), (OpType.RELU6, Activation.RELU6),
    (OpType.LOGISTIC, Activation.SIGMOID), (OpType.TANH, Activation.TANH),
    (OpType.HARD_SWISH, Activation.HARD_SWISH)])
def test_fuse_activation_into_conv(gb, act_op, fused) -> None:
    x = gb.input("x", (1, 4, 4, 2))
    c = gb.node(OpType.CONV_2D, [x, gb.const("w", _rand(3, 1, 1, 2)), None], "conv")
    g = gb.graph(gb.node(act_op, [c], "act"))
    out, rewrites = _unchanged(passes.fuse_activations, g)
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
    w = gb.const("w", _rand(2, 1, 1, 2))
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


# ------------------------------------------------------------------------ fold_pad


def _padded_conv(gb, paddings, value=0.0, op=OpType.CONV_2D):
    x = gb.input("x", (1, 5, 5, 2))
    p = gb.node(OpType.PAD, [x], "pad", {"paddings": paddings, "value": (value,)})
    if op == OpType.MAX_POOL_2D:
        return gb.graph(gb.node(op, [p], "y", {"kernel": (3, 3), "strides": (2, 2)}))
    w = gb.const("w", _rand(3, 3, 3, 2 if op == OpType.CONV_2D else 1)) \
        if op == OpType.CONV_2D else gb.const("w", _rand(1, 3, 3, 2))
    return gb.graph(gb.node(op, [p, w, None], "y",
                            {"strides": (2, 2), "pads": (0, 0, 1, 0)}))


def test_fold_pad_into_conv_and_depthwise(gb) -> None:
    g = _padded_conv(gb, (0, 0, 1, 2, 0, 1, 0, 0))
    out, _ = _unchanged(passes.fold_pad, g)
    assert _ops(out) == [OpType.CONV_2D] and out.nodes[0].inputs[0] == "x"
    assert out.nodes[0].attrs["pads"] == (1, 0, 3, 1)  # (top, left, bottom, right)
    xv = _rand(1, 5, 5, 2)
    w = g.tensors["w"].data
    ref = conv2d_np(np.pad(xv, ((0, 0), (1, 2), (0, 1), (0, 0))), w, None, (2, 2),
                    pads=(0, 0, 1, 0))
    np.testing.assert_allclose(conv2d_np(xv, w, None, (2, 2), pads=(1, 0, 3, 1)), ref)


def test_fold_pad_into_depthwise() -> None:
    g = _padded_conv(GraphBuilder(), (0, 0, 1, 1, 1, 1, 0, 0), op=OpType.DEPTHWISE_CONV_2D)
    out = passes.fold_pad(g)
    assert _ops(out) == [OpType.DEPTHWISE_CONV_2D]
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
        g = gb.graph(gb.node(op, [p, gb.const("w", _rand(3, 3, 3, 3)), None], "y"))
    else:
        g = _padded_conv(gb, paddings, value, op)
    assert passes.fold_pad.apply(g)[1] == []


# --------------------------------------------------------------- remove_identities


def test_reshape_chain_becomes_one_reshape(gb) -> None:
    x = gb.input("x", (1, 2, 3, 4))
    r1 = gb.node(OpType.RESHAPE, [x], "r1", shape=(1, 24))
    r2 = gb.node(OpType.RESHAPE, [r1], "r2", shape=(4, 6))
    r3 = gb.node(OpType.RESHAPE, [r2], "r3", shape=(1, 24))
    g = gb.graph(gb.node(OpType.RELU, [r3], "y"))
    out = passes.run_passes(g, [passes.remove_identities])[0]
    assert _ops(out) == [OpType.RESHAPE, OpType.RELU]
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
    assert _ops(out) == [OpType.RESHAPE] and out.outputs == ("y",)


# ------------------------------------------------------------------ fold_constants


def test_constant_subgraph_is_folded(gb) -> None:
    x = gb.input("x", (1, 3))
    a = gb.const("a", np.array([1.0, -2.0, 3.0], np.float32))
    b = gb.const("b", np.array([0.5, 0.5, 0.5], np.float32))
    s = gb.node(OpType.ADD, [a, b], "s", act=Activation.RELU)
    r = gb.node(OpType.RESHAPE, [s], "r", shape=(1, 3))
    g = gb.graph(gb.node(OpType.MUL, [x, r], "y"))
    out, log = passes.run_passes(g, [passes.fold_constants])
    assert _ops(out) == [OpType.MUL]
    np.testing.assert_array_equal(out.tensors[out.nodes[0].inputs[1]].data,
                                  [[1.5, 0.0, 3.5]])
    assert log.counts == {"fold_constant": 2}


def test_graph_output_is_not_folded_into_a_constant(gb) -> None:
    x = gb.input("x", (1, 3))
    c = gb.node(OpType.RELU, [gb.const("c", np.ones(3, np.float32))], "c_out")
    g = gb.graph(gb.node(OpType.ADD, [x, x], "y"), c)
    assert passes.fold_constants.apply(g)[1] == []


# ------------------------------------------------------------ eliminate_dead_nodes


def test_dead_branch_is_removed(gb) -> None:
    x = gb.input("x", (1, 4))
    d1 = gb.node(OpType.RELU, [x], "d1")
    gb.node(OpType.TANH, [d1], "d2")
    g = gb.graph(gb.node(OpType.LOGISTIC, [x], "y"))
    out, log = passes.run_passes(g, [passes.eliminate_dead_nodes])
    assert _ops(out) == [OpType.LOGISTIC] and set(out.tensors) == {"x", "y"}
    assert log.counts == {"eliminate_dead_node": 2}


# -------------------------------------------------------------------- pass manager


def test_pipeline_reaches_fixed_point_and_records(gb) -> None:
    x = gb.input("x", (1, 6, 6, 3))
    p = gb.node(OpType.PAD, [x], "pad", {"paddings": (0, 0, 1, 1, 1, 1, 0, 0)})
    c = gb.node(OpType.CONV_2D, [p, gb.const("w", _rand(4, 3, 3, 3)), None], "conv")
    d = gb.node(InternalOp.IDENTITY, [c], "dropout")
    b = _bn(gb, d, 4)
    y = gb.node(OpType.RELU6, [b], "relu")
    g = gb.graph(y)
    before = _snapshot(g)
    out, log = passes.run_passes(g, passes.OPTIMIZE_PIPELINE)
    assert _snapshot(g) == before
    assert [(n.op, n.activation, n.attrs["pads"]) for n in out.nodes] == [
        (OpType.CONV_2D, Activation.RELU6, (1, 1, 1, 1))]
    assert out.outputs == ("relu",)
    assert log.counts == {"fold_batch_norm": 1, "fold_pad": 1, "fuse_activation": 1,
                          "remove_identity": 1}
    assert "folded bn into conv" in log.actions
    assert log.iterations >= 2
    xv = _rand(1, 6, 6, 3)
    n = out.nodes[0]
    ref = np.clip(_bn_np(g, conv2d_np(xv, g.tensors["w"].data, None, pads=(1, 1, 1, 1))), 0, 6)
    got = act_np(conv2d_np(xv, out.tensors[n.inputs[1]].data, out.tensors[n.inputs[2]].data,
                           pads=n.attrs["pads"]), n.activation)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_manager_validates_after_each_pass(gb) -> None:
    x = gb.input("x", (1, 4))
    g = gb.graph(gb.node(OpType.RELU, [x], "y"))

    def break_shape(m):
        i, n = m.nodes["n"]
        if m.graph.tensors["y"].shape != (1, 4):
            return None
        bad = ir.Tensor("y", (1, 5))
        return passes.Rewrite("break", "broke it", (i,), (n,), (bad,))

    broken = passes.RewritePass("breaker", ((passes.op(OpType.RELU, capture="n"), break_shape),))
    with pytest.raises(ConversionError, match="after pass breaker.*output shapes"):
        passes.run_passes(g, [broken])


def test_validate_rejects_use_before_definition(gb) -> None:
    x = gb.input("x", (1, 4))
    a = gb.node(OpType.RELU, [x], "a")
    b = gb.node(OpType.TANH, [a], "b")
    g = gb.graph(b)
    swapped = ir.Graph(g.tensors, tuple(reversed(g.nodes)), g.inputs, g.outputs, "g")
    with pytest.raises(ConversionError, match="'a' is used before it is defined"):
        ir.validate(swapped)
    with pytest.raises(ConversionError, match="not a tensor"):
        ir.validate(ir.Graph(g.tensors, g.nodes, g.inputs, ("nope",), "g"))
