"""GELU (op 36) and REDUCE_MAX (op 37) from ONNX: Gelu (opset 20, both `approximate`
values), the Erf and tanh chains older exporters emit (folded by recognize_gelu), a
standalone Erf refused, ReduceMax at opsets 1, 13 and 18 (axes attribute, then input),
keepdims, noop_with_empty_axes and negative axes, ReduceMean at 18 with an axes input, int8
REDUCE_MAX. Each model is built with onnx.helper, converted, run in the engine and in
onnxruntime (graph optimizations disabled) on seeded inputs: outputs agree within 1e-4
relative.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import helper as h
from onnx_testlib import convert_and_compare, engine_run, model, ort_run, rand
from tether.converter import convert

from tether.errors import ConversionError

TOL = 1e-4
NEWEST = onnx.defs.onnx_opset_version()
X_SHAPE = (2, 3, 5, 7)  # NCHW
PARITY: dict[str, float] = {}


def _check(m, x, label, op):
    tm, y, ref, err = convert_and_compare(m, x, label, PARITY)
    assert err < TOL, (label, np.abs(y - ref).max())
    assert op in tm.report.ops_after, (label, tm.report.ops_after)
    return tm


@pytest.mark.parametrize("opset", [20, NEWEST])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_onnx_gelu(opset, approximate):
    m = model([h.make_node("Gelu", ["x"], ["y"], approximate=approximate)], X_SHAPE, X_SHAPE,
              opset=opset)
    _check(m, rand(X_SHAPE, seed=1, lo=-6, hi=6), f"Gelu-{approximate}-{opset}", "GELU")


def _erf_chain(variant):
    """PyTorch's exported erf GELU: Div(x, √2) (or Mul(x, 1/√2)) → Erf → Add 1 → Mul x →
    Mul 0.5, and the other groupings."""
    inits = {"s": np.float32(math.sqrt(2) if variant != "mul" else 1 / math.sqrt(2)),
             "one": np.float32(1.0), "half": np.float32(0.5)}
    nodes = [h.make_node("Mul" if variant == "mul" else "Div", ["x", "s"], ["a"]),
             h.make_node("Erf", ["a"], ["e"]), h.make_node("Add", ["e", "one"], ["p"])]
    if variant == "half_first":  # (x * 0.5) * (1 + erf)
        nodes += [h.make_node("Mul", ["x", "half"], ["xh"]),
                  h.make_node("Mul", ["xh", "p"], ["y"])]
    elif variant == "gate_half":  # x * ((1 + erf) * 0.5)
        nodes += [h.make_node("Mul", ["p", "half"], ["ph"]), h.make_node("Mul", ["x", "ph"], ["y"])]
    else:  # (x * (1 + erf)) * 0.5
        nodes += [h.make_node("Mul", ["x", "p"], ["xp"]), h.make_node("Mul", ["xp", "half"], ["y"])]
    return nodes, inits


@pytest.mark.parametrize("opset", [13, NEWEST])
@pytest.mark.parametrize("variant", ["div", "mul", "half_first", "gate_half"])
def test_onnx_erf_chain_folds_to_gelu(opset, variant):
    nodes, inits = _erf_chain(variant)
    m = model(nodes, X_SHAPE, X_SHAPE, inits, opset=opset)
    tm = _check(m, rand(X_SHAPE, seed=2, lo=-5, hi=5), f"erf-chain-{variant}-{opset}", "GELU")
    assert "MUL" not in tm.report.ops_after and "ADD" not in tm.report.ops_after


@pytest.mark.parametrize("opset", [13, NEWEST])
def test_onnx_tanh_chain_folds_to_gelu(opset):
    inits = {"c": np.float32(0.044715), "k": np.float32(math.sqrt(2 / math.pi)),
             "one": np.float32(1.0), "half": np.float32(0.5)}
    nodes = [h.make_node("Mul", ["x", "x"], ["x2"]), h.make_node("Mul", ["x2", "x"], ["x3"]),
             h.make_node("Mul", ["x3", "c"], ["cx3"]), h.make_node("Add", ["x", "cx3"], ["in"]),
             h.make_node("Mul", ["in", "k"], ["ks"]), h.make_node("Tanh", ["ks"], ["t"]),
             h.make_node("Add", ["t", "one"], ["p"]), h.make_node("Mul", ["x", "p"], ["xp"]),
             h.make_node("Mul", ["xp", "half"], ["y"])]
    m = model(nodes, X_SHAPE, X_SHAPE, inits, opset=opset)
    tm = _check(m, rand(X_SHAPE, seed=3, lo=-5, hi=5), f"tanh-chain-{opset}", "GELU")
    assert "TANH" not in tm.report.ops_after


def test_onnx_standalone_erf_refused():
    m = model([h.make_node("Erf", ["x"], ["y"], name="erf_1")], X_SHAPE, X_SHAPE, opset=13)
    with pytest.raises(ConversionError, match=r"erf_1.*standalone Erf is not supported"):
        convert(m)


# (axes, keepdims) over NCHW, negative ids included
REDUCTIONS = [((1,), 1), ((1,), 0), ((2, 3), 1), ((2, 3), 0), ((-1,), 0), ((0, 2), 1),
              (None, 0), (None, 1)]


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMean"])
@pytest.mark.parametrize("opset", [1, 13, 18, NEWEST])
@pytest.mark.parametrize("axes,keepdims", REDUCTIONS)
def test_onnx_reduce(op, opset, axes, keepdims):
    inits: dict[str, np.ndarray] = {}
    if axes is not None and opset >= 18:
        inits["axes"] = np.asarray(axes, np.int64)
        node = h.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims)
    elif axes is not None:
        node = h.make_node(op, ["x"], ["y"], axes=list(axes), keepdims=keepdims)
    else:
        node = h.make_node(op, ["x"], ["y"], keepdims=keepdims)
    m = model([node], X_SHAPE, None, inits, opset=opset)
    want = "REDUCE_MAX" if op == "ReduceMax" else "MEAN"
    _check(m, rand(X_SHAPE, seed=4), f"{op}-{opset}-{axes}-{keepdims}", want)


def test_onnx_reduce_max_noop_with_empty_axes():
    m = model([h.make_node("ReduceMax", ["x"], ["y"], noop_with_empty_axes=1)], X_SHAPE,
              X_SHAPE, opset=18)
    x = rand(X_SHAPE, seed=5)
    np.testing.assert_array_equal(engine_run(convert(m).to_bytes(), x), ort_run(m, x))


def test_reduce_max_nan_propagates():
    m = model([h.make_node("ReduceMax", ["x"], ["y"], axes=[3], keepdims=0)], X_SHAPE, None,
              opset=13)
    x = rand(X_SHAPE, seed=6)
    x[0, 1, 2, 3] = np.nan
    x[1, 0, 0, 0] = np.inf
    y = engine_run(convert(m).to_bytes(), x)
    np.testing.assert_array_equal(y, ort_run(m, x))


def test_reduce_max_int8_keeps_quantization():
    """int8 REDUCE_MAX: the post-training int8 lowering keeps it int8, within one step."""
    m = model([h.make_node("ReduceMax", ["x"], ["y"], axes=[2, 3], keepdims=1)], X_SHAPE,
              None, opset=13)
    x = rand(X_SHAPE, seed=7)
    tm = convert(m, quantize="int8", calibration=[x])
    assert tm.report.ops_after == {"QUANTIZE": 1, "REDUCE_MAX": 1, "DEQUANTIZE": 1}
    y = engine_run(tm.to_bytes(), x)
    ref = ort_run(m, x)
    assert np.abs(y - ref).max() <= 2.0 / 255 + 1e-6
