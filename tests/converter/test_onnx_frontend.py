"""ONNX frontend: ops, the NCHW -> NHWC layout handling, errors; engine vs onnxruntime.

Hand-built graphs (onnx.helper) run in onnxruntime with graph optimizations disabled and in
the C engine; outputs must agree within 1e-4 relative max error.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import helper as h
from onnx_testlib import engine_run, model, ort_run, rand, rel_err
from tether.converter import convert
from tether.converter._internal.frontends.onnx import from_onnx

from tether.errors import ConversionError, ModelFormatError

TOL = 1e-4
TO_NCHW = h.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2])


def _w(*shape: int, seed: int = 1) -> np.ndarray:
    return rand(shape, seed, -0.5, 0.5)


def _check(m, x, *, max_transposes: int | None = 0):
    tm = convert(m)
    ops = tm.report.ops_after
    if max_transposes is not None:
        assert ops.get("TRANSPOSE", 0) <= max_transposes, ops
    ref = ort_run(m, x)
    y = engine_run(tm.to_bytes(), x)
    assert rel_err(y, ref) < TOL
    return tm


def _nhwc_out(src: str) -> onnx.NodeProto:
    return h.make_node("Transpose", [src], ["y"], perm=[0, 2, 3, 1])


def test_nhwc_interface_conv_block_has_no_transposes() -> None:
    # the tf2onnx pattern: NHWC in -> Transpose -> NCHW ops -> Transpose -> NHWC out
    nodes = [TO_NCHW,
             h.make_node("Conv", ["xt", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
             h.make_node("BatchNormalization", ["c1", "g", "be", "mu", "var"], ["bn"],
                         epsilon=1e-3),
             h.make_node("Relu", ["bn"], ["r"]),
             h.make_node("Conv", ["r", "wd"], ["dw"], group=8, pads=[2, 2, 2, 2],
                         dilations=[2, 2], kernel_shape=[3, 3]),
             h.make_node("Clip", ["dw", "lo", "hi"], ["r6"]),
             h.make_node("Conv", ["r6", "wg"], ["gc"], group=2),  # grouped 1x1
             h.make_node("HardSwish", ["gc"], ["hs"]),
             h.make_node("Add", ["hs", "bias4"], ["a"]),  # per-channel broadcast [C,1,1]
             _nhwc_out("a")]
    inits = {"w1": _w(8, 3, 3, 3), "b1": _w(8, seed=2), "g": rand((8,), 3, 0.5, 1.5),
             "be": _w(8, seed=4), "mu": _w(8, seed=5), "var": rand((8,), 6, 0.5, 1.5),
             "wd": _w(8, 1, 3, 3, seed=7), "lo": np.float32(0), "hi": np.float32(6),
             "wg": _w(6, 4, 1, 1, seed=8), "bias4": _w(6, 1, 1, seed=9)}
    m = model(nodes, [1, 16, 16, 3], [1, 8, 8, 6], inits)
    tm = _check(m, rand((1, 16, 16, 3)))
    ops = tm.report.ops_after
    assert "BATCH_NORM" not in ops and "RELU" not in ops and "RELU6" not in ops
    assert ops["CONV_2D"] == 2 and ops["DEPTHWISE_CONV_2D"] == 1


def _nchw_model():
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], pads=[0, 1, 0, 1]),
             h.make_node("Sigmoid", ["c"], ["s"]),
             h.make_node("Mul", ["c", "s"], ["y"]),
             ]
    return model(nodes, [1, 3, 10, 12], [1, 4, 8, 12], {"w": _w(4, 3, 3, 3)})


def test_nchw_interface_keeps_layout_with_one_transpose_each_way() -> None:
    g = from_onnx(_nchw_model())
    assert g.inputs == ("x",) and g.outputs == ("y",)
    assert g.tensors["x"].shape == (1, 3, 10, 12) and g.tensors["y"].shape == (1, 4, 8, 12)
    assert g.op_counts() == {"CONV_2D": 1, "LOGISTIC": 1, "MUL": 1, "TRANSPOSE": 2}
    first, last = g.nodes[0], g.nodes[-1]
    assert first.op.name == "TRANSPOSE" and first.attrs["perm"] == (0, 2, 3, 1)
    assert last.op.name == "TRANSPOSE" and last.attrs["perm"] == (0, 3, 1, 2)
    assert convert(_nchw_model()).report.ops_after["TRANSPOSE"] == 2


def test_nchw_interface_engine_matches_onnxruntime() -> None:
    # needs the engine's TRANSPOSE (op id 22)
    _check(_nchw_model(), rand((1, 3, 10, 12)), max_transposes=2)


@pytest.mark.parametrize("op, attrs, hw", [
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, 9),
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, 10),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, 9),
    ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}, 7),
    ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}, 6),
    ("MaxPool", {"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER", "strides": [2, 2]}, 7),
])
def test_pools_with_pads_and_ceil_mode(op, attrs, hw) -> None:
    nodes = [TO_NCHW, h.make_node(op, ["xt"], ["p"], **attrs), _nhwc_out("p")]
    m = model(nodes, [1, hw, hw, 4], None)
    _check(m, rand((1, hw, hw, 4)))


def test_global_pool_flatten_gemm_softmax_head() -> None:
    nodes = [TO_NCHW, h.make_node("GlobalAveragePool", ["xt"], ["g"]),
             h.make_node("Flatten", ["g"], ["f"]),
             h.make_node("Gemm", ["f", "w", "b"], ["fc"], transB=1, alpha=0.5, beta=2.0),
             h.make_node("Softmax", ["fc"], ["y"])]
    m = model(nodes, [2, 5, 5, 6], [2, 10], {"w": _w(10, 6), "b": _w(10, seed=3)})
    tm = _check(m, rand((2, 5, 5, 6)))
    assert tm.report.ops_after == {"FULLY_CONNECTED": 1, "MEAN": 1, "RESHAPE": 1, "SOFTMAX": 1}


def test_matmul_reshape_squeeze_unsqueeze_reduce_mean() -> None:
    shape = h.make_node("Constant", [], ["shp"],
                        value=onnx.numpy_helper.from_array(np.array([1, 12], np.int64)))
    nodes = [TO_NCHW,
             h.make_node("ReduceMean", ["xt"], ["m"], axes=[2, 3], keepdims=1),   # [1,3,1,1]
             h.make_node("Squeeze", ["m", "ax23"], ["sq"]),                     # [1,3]
             h.make_node("MatMul", ["sq", "w"], ["mm"]),                        # [1,12]
             shape, h.make_node("Reshape", ["mm", "shp"], ["r"]),
             h.make_node("Unsqueeze", ["r", "ax1"], ["u"]),                     # [1,1,12]
             h.make_node("Identity", ["u"], ["y"])]
    m = model(nodes, [1, 4, 4, 3], [1, 1, 12],
              {"w": _w(3, 12), "ax23": np.array([2, 3], np.int64),
               "ax1": np.array([1], np.int64)}, opset=17)
    _check(m, rand((1, 4, 4, 3)))


def test_pad_concat_and_broadcast_arithmetic() -> None:
    nodes = [TO_NCHW,
             h.make_node("Pad", ["xt", "pads", "zero"], ["p"]),
             h.make_node("Conv", ["p", "w"], ["c"]),                              # [1,4,6,6]
             h.make_node("Concat", ["c", "xt"], ["cat"], axis=1),                 # [1,7,6,6]
             h.make_node("Sub", ["cat", "k"], ["s"]),
             h.make_node("Div", ["s", "two"], ["d"]),
             h.make_node("Mul", ["d", "cat"], ["mu"]),
             h.make_node("Tanh", ["mu"], ["t"]),
             _nhwc_out("t")]
    m = model(nodes, [1, 6, 6, 3], [1, 6, 6, 7],
              {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "zero": np.float32(0),
               "w": _w(4, 3, 3, 3), "k": _w(7, 1, 1), "two": np.float32(2.0)})
    tm = _check(m, rand((1, 6, 6, 3)))
    assert "PAD" not in tm.report.ops_after  # folded into the conv
    assert tm.report.action_counts.get("fold_pad") == 1


def test_sub_div_clamp_hard_sigmoid_need_ops_20_to_24() -> None:
    # SUB/DIV with a non-constant divisor, CLAMP (Clip to [-1, 2]) and HARD_SIGMOID: these
    # stay as file ops 20, 21, 23, 24 and need the engine's new kernels.
    nodes = [h.make_node("Clip", ["x", "lo", "hi"], ["c"]),
             h.make_node("HardSigmoid", ["x"], ["hsg"], alpha=0.3, beta=0.4),
             h.make_node("Sub", ["c", "hsg"], ["s"]),
             h.make_node("Add", ["hsg", "one"], ["den"]),
             h.make_node("Div", ["s", "den"], ["y"])]
    m = model(nodes, [1, 5, 7], [1, 5, 7], {"lo": np.float32(-1), "hi": np.float32(2),
                                            "one": np.float32(1)})
    tm = convert(m)
    assert {"CLAMP", "HARD_SIGMOID", "SUB", "DIV"} <= set(tm.report.ops_after)
    x = rand((1, 5, 7), lo=-4, hi=4)
    assert rel_err(engine_run(tm.to_bytes(), x), ort_run(m, x)) < TOL


def test_transposes_cancel_and_nchw_softmax_axis() -> None:
    nodes = [TO_NCHW, h.make_node("Softmax", ["xt"], ["s"], axis=1), _nhwc_out("s")]
    m = model(nodes, [1, 3, 3, 5], [1, 3, 3, 5])
    tm = _check(m, rand((1, 3, 3, 5)))
    assert tm.report.ops_after == {"SOFTMAX": 1}


def test_constant_subgraphs_are_evaluated_at_import() -> None:
    # Shape -> Gather -> Unsqueeze -> Concat -> Reshape: the exporters' dynamic-shape idiom
    nodes = [h.make_node("Shape", ["x"], ["s"]),
             h.make_node("Gather", ["s", "i0"], ["n"], axis=0),
             h.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
             h.make_node("Concat", ["n1", "m1"], ["shape"], axis=0),
             h.make_node("Reshape", ["x", "shape"], ["r"]),
             h.make_node("Relu", ["r"], ["y"])]
    m = model(nodes, [2, 3, 4], [2, 12], {"i0": np.array(0, np.int64),
                                          "ax0": np.array([0], np.int64),
                                          "m1": np.array([-1], np.int64)})
    tm = _check(m, rand((2, 3, 4)))
    assert tm.report.ops_after == {"RELU": 1, "RESHAPE": 1}


# ---------------------------------------------------------------------------------- errors


def test_unsupported_op_names_node_op_and_frontend() -> None:
    nodes = [h.make_node("Relu", ["x"], ["r"], name="act"),
             h.make_node("Sin", ["r"], ["y"], name="the_sin")]
    m = model(nodes, [1, 4], [1, 4])
    with pytest.raises(ConversionError, match=r"onnx: node 'the_sin' \(Sin\): op Sin is not "
                                              r"supported"):
        convert(m)


@pytest.mark.parametrize("node, inits, text", [
    (h.make_node("Pad", ["x", "pads"], ["y"], mode="wrap", name="pad1"),
     {"pads": np.array([0, 1, 0, 1], np.int64)}, r"'pad1' \(Pad\): attribute mode='wrap'"),
    (h.make_node("Gemm", ["x", "w"], ["y"], transA=1, name="g1"), {"w": np.ones((4, 4), "f")},
     r"'g1' \(Gemm\): attribute transA=1"),
    (h.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], auto_pad="FULL", name="mp"),
     {}, r"'mp' \(MaxPool\): attribute auto_pad='FULL' is not supported"),
    (h.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
     {"w": np.ones((1, 1, 1, 1, 1, 4, 4), "f")},
     r"'mm' \(MatMul\): inputs of rank 7 are not supported \(at most 6\)"),
])
def test_unsupported_attribute_names_value(node, inits, text) -> None:
    m = model([node], [1, 1, 4, 4] if node.op_type == "MaxPool" else [4, 4], None, inits)
    with pytest.raises(ConversionError, match=text):
        from_onnx(m)


def test_malformed_onnx_files(tmp_path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a protobuf \xff\xff\xff")
    with pytest.raises(ModelFormatError, match="onnx"):
        convert(str(bad))
    good = model([h.make_node("Relu", ["x"], ["y"])], [1, 4], [1, 4]).SerializeToString()
    with pytest.raises(ModelFormatError, match="onnx"):
        convert(good[: len(good) // 2])
    # a dangling input reference fails the checker
    dangling = model([h.make_node("Relu", ["nope"], ["y"])], [1, 4], [1, 4])
    with pytest.raises(ModelFormatError, match="onnx: invalid model"):
        convert(dangling)


def test_dynamic_shape_is_rejected() -> None:
    m = model([h.make_node("Relu", ["x"], ["y"])], [1, "n"], [1, "n"])
    with pytest.raises(ConversionError, match="input 'x' has shape"):
        convert(m)
