"""The passes added for the ONNX/TFLite frontends and int8: simplify_transposes,
simplify_arithmetic, fold_affine, recognize_hard_swish, fuse_qdq, fold_dequantize_constants.

Numerics are checked by running the graph before and after a pass in the C engine (float
ops only); structure by the op lists.
"""

from __future__ import annotations

import numpy as np
from converter_testlib import GraphBuilder, conv2d_np
from onnx_testlib import engine_run, rand, rel_err
from tether.converter._internal import ir, passes, tmodel
from tether.converter._internal.ops import Activation, DType, OpType


def _bytes(g: ir.Graph) -> bytes:
    return tmodel.encode(tmodel.graph_to_file(g))


def _same_output(before: ir.Graph, after: ir.Graph, x: np.ndarray) -> None:
    assert rel_err(engine_run(_bytes(after), x), engine_run(_bytes(before), x)) < 1e-5


def _ops(g: ir.Graph) -> list[OpType]:
    return [n.op for n in g.nodes]


def test_transpose_moving_only_unit_dims_becomes_reshape() -> None:
    gb = GraphBuilder()
    x = gb.input("x", (1, 1, 1, 8))
    t = gb.node(OpType.TRANSPOSE, [x], "t", {"perm": (0, 3, 1, 2)})
    gb.node(OpType.RELU, [t], "y")
    g = gb.graph("y")
    out, rws = passes.simplify_transposes.apply(g)
    assert _ops(out) == [OpType.RESHAPE, OpType.RELU] and rws[0].kind == "transpose_to_reshape"
    assert out.tensors["t"].shape == (1, 8, 1, 1)


def test_real_transpose_is_kept_and_pairs_merge() -> None:
    gb = GraphBuilder()
    x = gb.input("x", (1, 2, 3, 4))
    a = gb.node(OpType.TRANSPOSE, [x], "a", {"perm": (0, 2, 3, 1)})
    gb.node(OpType.TRANSPOSE, [a], "y", {"perm": (0, 3, 1, 2)})
    g = gb.graph("y")
    out, _ = passes.run_passes(g, passes.OPTIMIZE_PIPELINE)
    # the two cancel: merged into an identity transpose, which is then a copy
    assert OpType.TRANSPOSE not in _ops(out)
    gb = GraphBuilder()
    x = gb.input("x", (1, 2, 3, 4))
    gb.node(OpType.TRANSPOSE, [x], "y", {"perm": (0, 2, 3, 1)})
    assert _ops(passes.simplify_transposes(gb.graph("y"))) == [OpType.TRANSPOSE]


def test_sub_and_div_by_constants_become_add_and_mul() -> None:
    gb = GraphBuilder()
    x = gb.input("x", (2, 3))
    s = gb.node(OpType.SUB, [x, gb.const("c", np.array([1, 2, 3], np.float32))], "s")
    d = gb.node(OpType.DIV, [s, gb.const("k", np.float32(4))], "d")
    gb.node(OpType.DIV, [gb.const("one", np.float32(1)), d], "y", shape=None)  # not rewritten
    g = gb.graph("y")
    out, rws = passes.simplify_arithmetic.apply(g)
    assert _ops(out) == [OpType.ADD, OpType.MUL, OpType.DIV]
    assert [r.kind for r in rws] == ["sub_to_add", "div_to_mul"]
    add, mul = out.nodes[0], out.nodes[1]
    np.testing.assert_array_equal(out.tensors[add.inputs[1]].data, [-1, -2, -3])
    assert float(out.tensors[mul.inputs[1]].data) == 0.25


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
    assert _ops(out) == [OpType.CONV_2D] and out.nodes[0].activation == Activation.RELU
    assert log.counts["fold_affine"] == 2
    x_ = rand((1, 5, 5, 3), 9)
    t = g.tensors
    ref = np.maximum(conv2d_np(x_, t["w"].data, t["b"].data) * t["s"].data - t["o"].data, 0)
    assert rel_err(engine_run(_bytes(out), x_), ref) < 1e-5


def test_fold_affine_leaves_spatial_constants_alone() -> None:
    gb = GraphBuilder()
    x = gb.input("x", (1, 4, 4, 2))
    c = gb.node(OpType.DEPTHWISE_CONV_2D, [x, gb.const("w", rand((1, 3, 3, 2), 1)), None], "c",
                {"pads": (1, 1, 1, 1)})
    gb.node(OpType.MUL, [c, gb.const("s", rand((1, 4, 4, 1), 3))], "y")  # varies over H, W
    g = gb.graph("y")
    assert _ops(passes.fold_affine(g)) == [OpType.DEPTHWISE_CONV_2D, OpType.MUL]


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
        assert _ops(out) == [OpType.CONV_2D], order
        assert out.nodes[0].activation == Activation.HARD_SWISH
        assert log.counts["recognize_hard_swish"] == 1
        _same_output(g, out, rand((1, 4, 4, 3), 5, -6, 6))


def _qdq_graph(bias_int32: bool) -> ir.Graph:
    gb = GraphBuilder()
    x = gb.input("x", (1, 4, 4, 2))
    xq = ir.Quantization((0.02,), (-3,))
    q = gb.node(OpType.QUANTIZE, [x], "xq")
    gb.tensors["xq"] = ir.Tensor("xq", (1, 4, 4, 2), DType.INT8, None, xq)
    dx = gb.node(OpType.DEQUANTIZE, [q], "dx")
    wq = ir.Quantization((0.01, 0.02, 0.03), (0, 0, 0), 0)
    w = gb.const("w8", np.arange(-27, 27, dtype=np.int8).reshape(3, 3, 3, 2), DType.INT8, wq)
    dw = gb.node(OpType.DEQUANTIZE, [w], "dw")
    if bias_int32:
        bq = ir.Quantization((0.0002, 0.0004, 0.0006), (0, 0, 0), 0)
        b = gb.node(OpType.DEQUANTIZE, [gb.const("b32", np.array([5, -7, 9], np.int32),
                                                 DType.INT32, bq)], "db")
    else:
        b = gb.const("bf", np.array([0.1, -0.2, 0.3], np.float32))
    c = gb.node(OpType.CONV_2D, [dx, dw, b], "c", {"pads": (1, 1, 1, 1)})
    r = gb.node(OpType.RELU, [c], "r")
    yq = gb.node(OpType.QUANTIZE, [r], "yq")
    gb.tensors["yq"] = ir.Tensor("yq", (1, 4, 4, 3), DType.INT8, None,
                                 ir.Quantization((0.05,), (-128,)))
    gb.node(OpType.DEQUANTIZE, [yq], "y")
    return gb.graph("y")


def test_fuse_qdq_keeps_integers_and_quantizes_float_bias() -> None:
    for bias_int32 in (True, False):
        g = _qdq_graph(bias_int32)
        out, log = passes.run_passes(g, passes.OPTIMIZE_PIPELINE)
        assert _ops(out) == [OpType.QUANTIZE, OpType.CONV_2D, OpType.DEQUANTIZE]
        conv = out.nodes[1]
        assert conv.activation == Activation.RELU and conv.outputs == ("yq",)
        xs, ws, bs = (out.tensors[n] for n in conv.inputs)  # type: ignore[index]
        assert xs.name == "xq" and ws.name == "w8" and bs.dtype == DType.INT32
        if bias_int32:
            assert bs.name == "b32"
        else:
            np.testing.assert_array_equal(bs.data, np.round(
                np.array([0.1, -0.2, 0.3]) / (0.02 * np.array([0.01, 0.02, 0.03]))))
            np.testing.assert_allclose(bs.quant.scale, [0.0002, 0.0004, 0.0006])
        assert log.counts["fuse_qdq"] == 1


def test_unfused_dequantize_of_constant_folds_to_float() -> None:
    gb = GraphBuilder()
    x = gb.input("x", (2, 3))
    k = gb.const("k8", np.array([[-2, 0, 4]], np.int8), DType.INT8,
                 ir.Quantization((0.5,), (1,)))
    d = gb.node(OpType.DEQUANTIZE, [k], "d")
    gb.node(OpType.HARD_SWISH, [gb.node(OpType.ADD, [x, d], "a")], "y")
    g = gb.graph("y")
    out = passes.fold_dequantize_constants(g)
    assert _ops(out) == [OpType.ADD, OpType.HARD_SWISH]
    np.testing.assert_array_equal(out.tensors["d"].data, [[-1.5, -0.5, 1.5]])
    x_ = rand((2, 3), 1, -4, 4)
    a_ = x_ + np.array([[-1.5, -0.5, 1.5]])
    assert rel_err(engine_run(_bytes(out), x_), a_ * np.clip(a_ + 3, 0, 6) / 6) < 1e-6


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
    assert _ops(out) == [OpType.MEAN, OpType.HARD_SIGMOID, OpType.MUL]
    assert log.counts["recognize_hard_sigmoid"] == 1
    hs = out.nodes[1]
    assert hs.inputs == ("m",) and hs.attrs == {"alpha": (1 / 6,), "offset": (0.5,)}
    x_ = rand((1, 4, 4, 3), 3, -8, 8)
    m_ = x_.mean(axis=(1, 2), keepdims=True)
    ref = x_ * np.clip(m_ + 3, 0, 6) / 6
    assert rel_err(engine_run(_bytes(out), x_), ref) < 1e-6


def test_x_times_hard_sigmoid_of_x_becomes_hard_swish() -> None:
    gb = GraphBuilder()
    x = gb.input("x", (2, 5))
    h = gb.node(OpType.HARD_SIGMOID, [x], "h", {"alpha": (1 / 6,), "offset": (0.5,)})
    gb.node(OpType.MUL, [h, x], "y")
    out = passes.recognize_hard_swish(gb.graph("y"))
    assert _ops(out) == [OpType.HARD_SWISH] and out.nodes[0].inputs == ("x",)
    gb = GraphBuilder()
    x = gb.input("x", (2, 5))
    h = gb.node(OpType.HARD_SIGMOID, [x], "h", {"alpha": (0.2,), "offset": (0.5,)})
    gb.node(OpType.MUL, [h, x], "y")
    assert _ops(passes.recognize_hard_swish(gb.graph("y"))) == [OpType.HARD_SIGMOID, OpType.MUL]
