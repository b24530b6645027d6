"""fuse_qdq and fold_dequantize_constants on small hand-built graphs."""

from __future__ import annotations

import numpy as np
from converter_testlib import GraphBuilder
from onnx_testlib import engine_run, rand, rel_err
from passes_testlib import graph_bytes, op_list
from tether.converter._internal import ir, passes
from tether.converter._internal.ops import Activation, DType, OpType


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
        assert op_list(out) == [OpType.QUANTIZE, OpType.CONV_2D, OpType.DEQUANTIZE]
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
    assert op_list(out) == [OpType.ADD, OpType.HARD_SWISH]
    np.testing.assert_array_equal(out.tensors["d"].data, [[-1.5, -0.5, 1.5]])
    x_ = rand((2, 3), 1, -4, 4)
    a_ = x_ + np.array([[-1.5, -0.5, 1.5]])
    assert rel_err(engine_run(graph_bytes(out), x_), a_ * np.clip(a_ + 3, 0, 6) / 6) < 1e-6
