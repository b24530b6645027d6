"""DepthToSpace (DCR and CRD) and SpaceToDepth: ONNX (opsets 1, 11, 13), TFLite DEPTH_TO_SPACE
and SPACE_TO_DEPTH, and the exporters' own spellings: PyTorch's PixelShuffle
(Reshape -> Transpose -> Reshape, CRD order) and ShuffleNet's channel shuffle.

All lower to RESHAPE -> 6-D TRANSPOSE -> RESHAPE channels-last (the engine's TRANSPOSE moves any
dtype at rank 6, int8 keeping its quantization), so each model is converted, run in the engine
and in its source runtime (onnxruntime with graph optimizations disabled, LiteRT); moves of
values agree exactly, convolutions around them within 1e-4 relative.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, numpy_helper
from onnx import helper as h
from onnx_testlib import ort_run, rand, rel_err
from tether.converter import convert
from tether.device import Engine
from tether.errors import ConversionError

TOL = 1e-4


def _model(nodes, x_shape, y_shape, opset, inits=None):
    g = h.make_graph(nodes, "depth_space",
                     [h.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, list(y_shape))],
                     [numpy_helper.from_array(np.asarray(v), k)
                      for k, v in (inits or {}).items()])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 7 if opset >= 13 else 4
    return m


@pytest.mark.parametrize("opset, mode", [(1, None), (11, "DCR"), (11, "CRD"), (13, "DCR"),
                                         (13, "CRD")])
@pytest.mark.parametrize("after_conv", [False, True], ids=["input", "after_conv"])
def test_onnx_depth_to_space(opset, mode, after_conv) -> None:
    kw = {"mode": mode} if mode else {}
    nodes, inits, x_shape = [], {}, (2, 12, 3, 5)
    src = "x"
    if after_conv:  # the importer holds the conv's output channels-last already
        x_shape = (2, 3, 3, 5)
        inits["w"] = rand((12, 3, 3, 3), 9)
        nodes.append(h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]))
        src = "c"
    nodes.append(h.make_node("DepthToSpace", [src], ["y"], name="d2s", blocksize=2, **kw))
    m = _model(nodes, x_shape, (2, 3, 6, 10), opset, inits)
    x = rand(x_shape, 1)
    tm = convert(m)
    y = Engine(tm.to_bytes()).run(x)
    ref = ort_run(m, x)
    assert y.shape == ref.shape == (2, 3, 6, 10) and y.dtype == np.float32
    if after_conv:
        assert rel_err(y, ref) < TOL, np.abs(y - ref).max()
    else:
        np.testing.assert_array_equal(y, ref)
    assert "TRANSPOSE" in tm.report.ops_after


@pytest.mark.parametrize("opset", [1, 13])
@pytest.mark.parametrize("block", [2, 3])
def test_onnx_space_to_depth(opset, block) -> None:
    x_shape = (1, 2, 3 * block, 2 * block)
    m = _model([h.make_node("SpaceToDepth", ["x"], ["y"], blocksize=block)], x_shape,
               (1, 2 * block * block, 3, 2), opset)
    x = rand(x_shape, 2)
    np.testing.assert_array_equal(Engine(convert(m).to_bytes()).run(x), ort_run(m, x))


def test_onnx_depth_to_space_refuses_a_block_that_does_not_divide() -> None:
    m = _model([h.make_node("DepthToSpace", ["x"], ["y"], name="d2s", blocksize=3)],
               (1, 8, 2, 2), (1, 1, 6, 6), 13)
    with pytest.raises(ConversionError, match=r"node 'd2s' \(DepthToSpace\): attribute "
                                              r"blocksize=3 must be >= 1 and divide channels 8"):
        convert(m)


def _conv_then(nodes_after, shape_inits, y_shape, c_out=8):
    """x [1,3,4,5] -> Conv (c_out channels) -> `nodes_after` reading 'c' and writing 'y'."""
    inits = {"w": rand((c_out, 3, 3, 3), 4)}
    inits.update({k: np.asarray(v, np.int64) for k, v in shape_inits.items()})
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])] + nodes_after
    return _model(nodes, (1, 3, 4, 5), y_shape, 13, inits)


def test_pytorch_pixel_shuffle_pattern_converts_and_matches() -> None:
    # torch.nn.PixelShuffle(2) as torch.onnx exports it: CRD order
    m = _conv_then([h.make_node("Reshape", ["c", "s1"], ["r"]),
                    h.make_node("Transpose", ["r"], ["t"], perm=[0, 1, 4, 2, 5, 3]),
                    h.make_node("Reshape", ["t", "s2"], ["y"])],
                   {"s1": [1, 2, 2, 2, 4, 5], "s2": [1, 2, 8, 10]}, (1, 2, 8, 10))
    x = rand((1, 3, 4, 5), 3)
    tm = convert(m)
    y = Engine(tm.to_bytes()).run(x)
    ref = ort_run(m, x)
    assert y.shape == ref.shape and rel_err(y, ref) < TOL, np.abs(y - ref).max()
    # the same as DepthToSpace(CRD): the same ops
    d2s = _conv_then([h.make_node("DepthToSpace", ["c"], ["y"], blocksize=2, mode="CRD")], {},
                     (1, 2, 8, 10))
    assert convert(d2s).report.ops_after == tm.report.ops_after
    np.testing.assert_array_equal(Engine(convert(d2s).to_bytes()).run(x), y)


def test_shufflenet_channel_shuffle_converts_and_matches() -> None:
    m = _conv_then([h.make_node("Reshape", ["c", "s1"], ["r"]),
                    h.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]),
                    h.make_node("Reshape", ["t", "s2"], ["r2"]),
                    h.make_node("Relu", ["r2"], ["y"])],
                   {"s1": [1, 2, 4, 4, 5], "s2": [1, 8, 4, 5]}, (1, 8, 4, 5))
    x = rand((1, 3, 4, 5), 5)
    y = Engine(convert(m).to_bytes()).run(x)
    ref = ort_run(m, x)
    assert y.shape == ref.shape and rel_err(y, ref) < TOL, np.abs(y - ref).max()


def test_depth_to_space_int8_moves_values_unchanged() -> None:
    m = _conv_then([h.make_node("DepthToSpace", ["c"], ["y"], blocksize=2, mode="DCR")], {},
                   (1, 2, 8, 10))
    calib = rand((16, 1, 3, 4, 5), 6)
    tm = convert(m, quantize="int8", calibration=calib)
    x = rand((1, 3, 4, 5), 7)
    y = Engine(tm.to_bytes()).run(x)
    ref = ort_run(m, x)
    assert "TRANSPOSE" in tm.report.ops_after and "DEQUANTIZE" in tm.report.ops_after
    assert y.shape == ref.shape and rel_err(y, ref) < 0.05


@pytest.mark.parametrize("op", ["depth_to_space", "space_to_depth"])
def test_tflite_depth_space_matches_litert(op) -> None:
    tf = pytest.importorskip("tensorflow")
    from onnx_testlib import litert_run

    shape = [1, 3, 5, 8] if op == "depth_to_space" else [1, 4, 6, 3]
    fn = getattr(tf.nn, op)

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)])
    def f(v):
        return fn(tf.nn.relu(v), 2)

    content = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()],
                                                              f).convert()
    x = rand(shape, 8)
    tm = convert(content)
    assert "TRANSPOSE" in tm.report.ops_after
    np.testing.assert_array_equal(Engine(tm.to_bytes()).run(x), litert_run(content, x))
