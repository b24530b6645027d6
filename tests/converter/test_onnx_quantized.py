"""ONNX int8: QDQ models (QuantizeLinear/DequantizeLinear pairs) and QOperator models
(QLinearConv, QLinearMatMul) from onnxruntime's static quantizer keep their integers."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
quantization = pytest.importorskip("onnxruntime.quantization")

from onnx import helper as h
from onnx import numpy_helper
from onnx_testlib import engine_run, model, ort_run, rand
from tether.converter import convert
from tether.converter._internal.ops import DType, OpType

from tether.errors import ConversionError

Q = quantization


def _float_model(head: str) -> onnx.ModelProto:
    nodes = [h.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]),
             h.make_node("Conv", ["xt", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["c"], ["r"]),
             h.make_node("Conv", ["r", "wd", "bd"], ["d"], group=8, pads=[1, 1, 1, 1],
                         strides=[2, 2]),
             h.make_node("Relu", ["d"], ["r2"]),
             h.make_node("GlobalAveragePool", ["r2"], ["g"]),
             h.make_node("Flatten", ["g"], ["f"])]
    inits = {"w": rand((8, 3, 3, 3), 1, -.5, .5), "b": rand((8,), 2),
             "wd": rand((8, 1, 3, 3), 3, -.5, .5), "bd": rand((8,), 4)}
    if head == "gemm":
        nodes.append(h.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1))
        inits.update(fw=rand((5, 8), 5), fb=rand((5,), 6))
    else:
        nodes.append(h.make_node("MatMul", ["f", "fw"], ["y"]))
        inits.update(fw=rand((8, 5), 5))
    return model(nodes, [1, 8, 8, 3], [1, 5], inits)


def _quantize(tmp_path, head: str, fmt, act, **kw) -> bytes:
    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(_float_model(head), src)

    class Reader(Q.CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"x": rand((1, 8, 8, 3), i)} for i in range(16)])

        def get_next(self):
            return next(self.it, None)

    Q.quantize_static(str(src), str(dst), Reader(), quant_format=fmt, activation_type=act,
                      weight_type=Q.QuantType.QInt8, per_channel=True, **kw)
    return dst.read_bytes()


def _initializers(data: bytes) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load_from_string(data).graph.initializer}


def _engine_top1(tm, data: bytes) -> None:
    xs = [rand((1, 8, 8, 3), 100 + i) for i in range(20)]
    agree = sum(int(np.argmax(engine_run(tm.to_bytes(), x)) == np.argmax(ort_run(data, x)))
                for x in xs)
    assert agree >= 19


@pytest.mark.parametrize("act", ["QInt8", "QUInt8"])
def test_qdq_model_lowers_to_int8_ops_with_its_integers(tmp_path, act) -> None:
    data = _quantize(tmp_path, "gemm", Q.QuantFormat.QDQ, getattr(Q.QuantType, act))
    tm = convert(data)
    g = tm.graph
    assert tm.report.ops_after["QUANTIZE"] == 1 and tm.report.ops_after["DEQUANTIZE"] == 1
    assert tm.report.action_counts["fuse_qdq"] >= 4
    inits = _initializers(data)
    conv = next(n for n in g.nodes if n.op == OpType.CONV_2D)
    x, w, b = (g.tensors[i] for i in conv.inputs)  # type: ignore[index]
    assert (x.dtype, w.dtype, b.dtype) == (DType.INT8, DType.INT8, DType.INT32)
    w_src = next(v for k, v in inits.items() if v.dtype == np.int8 and v.shape == (8, 3, 3, 3))
    np.testing.assert_array_equal(w.data, np.transpose(w_src, (0, 2, 3, 1)))
    dw = next(n for n in g.nodes if n.op == OpType.DEPTHWISE_CONV_2D)
    assert g.tensors[dw.inputs[1]].quant.axis == 3  # type: ignore[index]
    fc = next(n for n in g.nodes if n.op == OpType.FULLY_CONNECTED)
    assert g.tensors[fc.inputs[0]].dtype == DType.INT8  # type: ignore[index]


@pytest.mark.parametrize("act", ["QInt8", "QUInt8"])
def test_qdq_model_engine_top1_matches_onnxruntime(tmp_path, act) -> None:
    # needs the engine's int8 kernels and QUANTIZE/DEQUANTIZE (op ids 18, 19)
    data = _quantize(tmp_path, "gemm", Q.QuantFormat.QDQ, getattr(Q.QuantType, act))
    _engine_top1(convert(data), data)


def test_qoperator_model_qlinearconv_qlinearmatmul(tmp_path) -> None:
    data = _quantize(tmp_path, "matmul", Q.QuantFormat.QOperator, Q.QuantType.QInt8,
                     op_types_to_quantize=["Conv", "MatMul"])
    ops = [n.op_type for n in onnx.load_from_string(data).graph.node]
    assert "QLinearConv" in ops and "QLinearMatMul" in ops
    tm = convert(data)
    g = tm.graph
    int8_ops = [n.op for n in g.nodes
                if g.tensors[n.inputs[0]].dtype == DType.INT8 and n.op != OpType.DEQUANTIZE]  # type: ignore[index]
    assert int8_ops == [OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D, OpType.FULLY_CONNECTED]
    fc = next(n for n in g.nodes if n.op == OpType.FULLY_CONNECTED)
    w_src = next(v for v in _initializers(data).values() if v.dtype == np.int8 and v.shape == (8, 5))
    np.testing.assert_array_equal(g.tensors[fc.inputs[1]].data, w_src.T)  # type: ignore[index]


def test_qoperator_model_engine_top1_matches_onnxruntime(tmp_path) -> None:
    # needs the engine's int8 kernels and QUANTIZE/DEQUANTIZE (op ids 18, 19)
    data = _quantize(tmp_path, "matmul", Q.QuantFormat.QOperator, Q.QuantType.QInt8,
                     op_types_to_quantize=["Conv", "MatMul"])
    _engine_top1(convert(data), data)


def test_contrib_domain_op_is_named(tmp_path) -> None:
    data = _quantize(tmp_path, "gemm", Q.QuantFormat.QOperator, Q.QuantType.QInt8)
    with pytest.raises(ConversionError, match=r"onnx: node .*QLinearGlobalAveragePool.*domain "
                                              r"'com.microsoft' is not supported"):
        convert(data)
