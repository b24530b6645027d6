"""ONNX models from older exporters: opsets 7..newest, upgraded inside the frontend.

Each model is built with onnx.helper at an old opset, converted with no manual step, and
compared with onnxruntime (graph optimizations disabled) on seeded inputs at 1e-4 relative.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, numpy_helper
from onnx import helper as h
from onnx_testlib import engine_run, ort_run, rand, rel_err
from tether.converter import convert

from tether.errors import ConversionError

TOL = 1e-4
NEWEST = onnx.defs.onnx_opset_version()


def old_model(nodes, x_shape, y_shape, inits=None, *, opset: int, ir: int = 3,
              inits_as_inputs: bool = False) -> onnx.ModelProto:
    """A model as an old exporter wrote it: IR `ir`, initializers listed as inputs or not."""
    inits = inits or {}
    inputs = [h.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))]
    if inits_as_inputs:
        inputs += [h.make_tensor_value_info(k, TensorProto.FLOAT, list(np.shape(v)))
                   for k, v in inits.items()]
    g = h.make_graph(list(nodes), "old", inputs,
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, list(y_shape))],
                     [numpy_helper.from_array(np.asarray(v, np.float32), k)
                      for k, v in inits.items()])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = ir
    return m


def check(m, x, tol: float = TOL):
    tm = convert(m)
    ref = ort_run(m, x)
    y = engine_run(tm.to_bytes(), x)
    assert y.shape == ref.shape and y.dtype == np.float32
    err = rel_err(y, ref)
    assert err < tol, f"max rel err {err:.3g} (max abs {np.abs(y - ref).max():.3g})"
    return tm


@pytest.mark.parametrize("opset", [7, 9, 11, 12])
def test_softmax_before_13_coerces_to_2d(opset) -> None:
    # axis=1 of a [N, C, H, W] tensor: one softmax over C*H*W per image, not over C
    m = old_model([h.make_node("Softmax", ["x"], ["y"], axis=1)], [2, 3, 4, 5], [2, 3, 4, 5],
                  opset=opset, ir=7 if opset >= 11 else 3)
    x = rand((2, 3, 4, 5), 1, -3, 3)
    tm = check(m, x)
    assert any("upgraded" in c for c in tm.report.source_changes)
    y = engine_run(tm.to_bytes(), x)
    np.testing.assert_allclose(y.reshape(2, -1).sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("opset", [7, 9, 10])
def test_clip_and_pad_attributes_before_11(opset) -> None:
    nodes = [h.make_node("Clip", ["x"], ["c"], min=-0.25, max=0.5),
             h.make_node("Pad", ["c"], ["y"], pads=[0, 0, 1, 2, 0, 0, 2, 1], value=0.75,
                         mode="constant")]
    m = old_model(nodes, [1, 3, 4, 4], [1, 3, 7, 7], opset=opset)
    check(m, rand((1, 3, 4, 4), 2))


@pytest.mark.parametrize("opset", [7, 8, 9, 14, NEWEST])
def test_batch_norm_and_dropout_with_unused_mask(opset) -> None:
    c = 4
    nodes = [h.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["bn"],
                         epsilon=1e-3, **({"spatial": 1} if opset < 9 else {})),
             h.make_node("Dropout", ["bn"], ["y", "mask"],
                         **({"ratio": 0.3} if opset < 12 else {}))]
    inits = {"s": rand((c,), 3, 0.5, 1.5), "b": rand((c,), 4), "m": rand((c,), 5),
             "v": rand((c,), 6, 0.5, 1.5)}
    m = old_model(nodes, [1, c, 3, 3], [1, c, 3, 3], inits, opset=opset,
                  ir=3 if opset < 9 else 8, inits_as_inputs=opset < 9)
    tm = check(m, rand((1, c, 3, 3), 7))
    assert set(tm.report.ops_after) <= {"ADD", "MUL", "TRANSPOSE", "RESHAPE"}, tm.report.ops_after


def test_ir3_initializers_not_listed_as_inputs() -> None:
    nodes = [h.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["c"], ["y"])]
    m = old_model(nodes, [1, 3, 5, 5], [1, 2, 5, 5],
                  {"w": rand((2, 3, 3, 3), 8), "b": rand((2,), 9)}, opset=8, ir=3)
    with pytest.raises(Exception):  # what a user hits without the frontend's help
        onnx.version_converter.convert_version(m, 13)
    tm = check(m, rand((1, 3, 5, 5), 10))
    assert any("not listed as graph inputs" in c for c in tm.report.source_changes)
    assert "source change: onnx opset 8 -> 13 upgraded" in str(tm.report)


def test_batch_norm_spatial_0_is_refused_by_name() -> None:
    nodes = [h.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], spatial=0,
                         name="bn_pa")]
    inits = {k: np.ones((2, 3, 3), np.float32) for k in "sbmv"}
    m = old_model(nodes, [1, 2, 3, 3], [1, 2, 3, 3], inits, opset=7, inits_as_inputs=True)
    with pytest.raises(ConversionError, match=r"'bn_pa' \(BatchNormalization\): attribute "
                                              r"spatial=0"):
        convert(m)


def test_used_dropout_mask_is_refused_by_name() -> None:
    nodes = [h.make_node("Dropout", ["x"], ["d", "mask"], name="drop"),
             h.make_node("Cast", ["mask"], ["mf"], to=TensorProto.FLOAT),
             h.make_node("Add", ["d", "mf"], ["y"])]
    m = old_model(nodes, [1, 4], [1, 4], opset=13, ir=8)
    with pytest.raises(ConversionError, match=r"'drop' \(Dropout\): output 1 'mask'"):
        convert(m)


def test_opset_newer_than_installed_onnx_is_named() -> None:
    m = old_model([h.make_node("Relu", ["x"], ["y"])], [1, 4], [1, 4], opset=NEWEST + 1, ir=8)
    with pytest.raises(ConversionError, match=rf"opset {NEWEST + 1} is newer than the "
                                              r"installed onnx .* upgrade the onnx package"):
        convert(m)


def test_no_upgrade_at_13_and_later() -> None:
    m = old_model([h.make_node("Relu", ["x"], ["y"])], [1, 4], [1, 4], opset=13, ir=8)
    assert convert(m).report.source_changes == ()
