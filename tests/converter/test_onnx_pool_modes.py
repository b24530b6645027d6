"""ONNX MaxPool and AveragePool as older and newer exporters write them: dilations (MaxPool
10+, AveragePool 19+), ceil_mode (10+), count_include_pad (AveragePool 7+) in every pairing,
and GoogLeNet's `MaxPool k3 s2 ceil_mode=1` on odd sizes.

Each model is built with onnx.helper, converted, run in the engine and in onnxruntime (graph
optimizations disabled) on seeded inputs; outputs agree within 1e-5 relative. onnxruntime's
AveragePool with count_include_pad=1 and ceil_mode=1 divides by the window's cells inside the
explicitly padded input (the cells ceil_mode adds past the pads are not counted); the
converter lowers the explicit pads to a zero PAD there. int8: the quantizer keeps the pools
int8 with their input's quantization, and the engine's integers equal a numpy reference of
FORMAT.md's int8 pools over the dilated taps.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto
from onnx import helper as h
from onnx_testlib import convert_and_compare, engine_run, ort_run, rand, rel_err
from tether.converter import convert

TOL = 1e-5


def _out(size: int, k: int, s: int, d: int, pb: int, pe: int, ceil: bool) -> int:
    """onnxruntime's pooled size; with ceil_mode, a last window starting in the end pad goes."""
    span = size + pb + pe - d * (k - 1) - 1
    if not ceil:
        return span // s + 1
    out = -(-span // s) + 1
    return out - 1 if (out - 1) * s >= size + pb else out


def _pool_model(op: str, x_shape: tuple[int, ...], opset: int, k: tuple[int, int],
                s: tuple[int, int] = (1, 1), d: tuple[int, int] = (1, 1),
                pads: tuple[int, int, int, int] = (0, 0, 0, 0), ceil: int = 0,
                include: int = 0) -> onnx.ModelProto:
    attrs: dict = {"kernel_shape": list(k), "strides": list(s), "pads": list(pads)}
    if d != (1, 1):
        attrs["dilations"] = list(d)
    if ceil:
        attrs["ceil_mode"] = 1
    if include:
        attrs["count_include_pad"] = 1
    y_shape = x_shape[:2] + tuple(
        _out(x_shape[2 + i], k[i], s[i], d[i], pads[i], pads[i + 2], bool(ceil)) for i in (0, 1))
    g = h.make_graph([h.make_node(op, ["x"], ["y"], name="pool", **attrs)], "pool",
                     [h.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, list(y_shape))])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 7 if opset >= 13 else 4
    onnx.checker.check_model(m)
    return m


def _check(m: onnx.ModelProto, x: np.ndarray):
    tm, y, ref, err = convert_and_compare(m, x)
    assert err < TOL, np.abs(y - ref).max()
    return tm


# ----------------------------------------------------------------------- MaxPool dilations

MAX_CASES = [  # (x HxW, kernel, strides, dilations, pads t,l,b,r, ceil_mode)
    ((9, 10), (3, 3), (1, 1), (2, 2), (0, 0, 0, 0), 0),
    ((9, 10), (3, 3), (2, 2), (2, 2), (1, 1, 1, 1), 0),
    ((11, 8), (2, 3), (2, 1), (3, 2), (1, 2, 0, 1), 0),
    ((9, 10), (3, 2), (2, 3), (1, 3), (2, 0, 1, 1), 1),
    ((10, 11), (3, 3), (2, 2), (2, 2), (0, 0, 0, 0), 1),
    ((12, 9), (2, 2), (3, 3), (3, 3), (1, 1, 1, 1), 1),
    ((7, 7), (3, 3), (3, 2), (2, 1), (2, 1, 2, 0), 1),
    ((13, 13), (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), 1),
]


@pytest.mark.parametrize("hw, k, s, d, pads, ceil", MAX_CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("opset", [10, 12, 19])
def test_max_pool_dilations_strides_pads_ceil(hw, k, s, d, pads, ceil, opset) -> None:
    m = _pool_model("MaxPool", (2, 3) + hw, opset, k, s, d, pads, ceil)
    tm = _check(m, rand((2, 3) + hw, 3, -4, 4))
    (pool,) = [n for n in tm.graph.nodes if n.op.name == "MAX_POOL_2D"]
    assert tuple(pool.attrs.get("dilations", (1, 1))) == d


def test_max_pool_sweep_of_dilations_1_to_3() -> None:
    """Every dilation 1..3 per axis, with strides 1..2, end pads and ceil_mode, at opset 12."""
    for (dh, dw), (sh, sw), ceil in itertools.product(
            itertools.product((1, 2, 3), repeat=2), ((1, 1), (2, 2), (1, 2)), (0, 1)):
        m = _pool_model("MaxPool", (1, 2, 8, 9), 12, (2, 3), (sh, sw), (dh, dw), (1, 0, 0, 2),
                        ceil)
        _check(m, rand((1, 2, 8, 9), dh * 7 + dw, -3, 3))


@pytest.mark.parametrize("pads, ceil", [((0, 0, 0, 0), 0), ((1, 1, 1, 1), 0)])
def test_max_pool_at_opset_8_without_dilations(pads, ceil) -> None:
    m = _pool_model("MaxPool", (2, 3, 9, 8), 8, (3, 3), (2, 2), pads=pads, ceil=ceil)
    _check(m, rand((2, 3, 9, 8), 5, -2, 2))


@pytest.mark.parametrize("hw", [(7, 7), (15, 15), (13, 11), (27, 27), (9, 14)])
def test_googlenet_max_pool_k3_s2_ceil_mode_on_odd_sizes(hw) -> None:
    m = _pool_model("MaxPool", (1, 4) + hw, 10, (3, 3), (2, 2), ceil=1)
    assert [d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim][2:] == [
        -(-(v - 3) // 2) + 1 for v in hw]
    _check(m, rand((1, 4) + hw, 7, -1, 1))


def test_dilated_window_missing_the_input_is_refused_in_one_line() -> None:
    from tether.errors import ConversionError

    # taps -1 and 2 of a 2-row input: onnxruntime gives -FLT_MAX; the converter refuses
    m = _pool_model("MaxPool", (1, 1, 2, 2), 12, (2, 2), d=(3, 3), pads=(1, 1, 1, 1))
    with pytest.raises(ConversionError, match=r"node 'pool' \(MaxPool\).*holds no input cell") \
            as info:
        convert(m)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------ AveragePool ceil × include_pad

AVG_CASES = [  # (x HxW, kernel, strides, pads t,l,b,r)
    ((9, 10), (3, 3), (2, 2), (0, 0, 0, 0)),
    ((9, 10), (3, 3), (2, 2), (1, 1, 1, 1)),
    ((8, 11), (2, 3), (2, 2), (1, 2, 0, 1)),
    ((10, 7), (3, 2), (3, 2), (2, 0, 1, 1)),
    ((7, 7), (3, 3), (2, 3), (0, 1, 2, 0)),
]


@pytest.mark.parametrize("hw, k, s, pads", AVG_CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("include", [0, 1])
@pytest.mark.parametrize("ceil, opset", [(0, 7), (0, 10), (1, 10), (0, 19), (1, 19)])
def test_average_pool_ceil_mode_and_count_include_pad(hw, k, s, pads, include, ceil,
                                                      opset) -> None:
    m = _pool_model("AveragePool", (2, 3) + hw, opset, k, s, pads=pads, ceil=ceil,
                    include=include)
    tm = _check(m, rand((2, 3) + hw, 9, -4, 4))
    ops = tm.report.ops_after
    (pool,) = [n for n in tm.graph.nodes if n.op.name == "AVERAGE_POOL_2D"]
    extends = any(_out(hw[i], k[i], s[i], 1, pads[i], pads[i + 2], True)
                  != _out(hw[i], k[i], s[i], 1, pads[i], pads[i + 2], False) for i in (0, 1))
    if include and ceil and extends:  # the explicit pads became a zero PAD (when there are any)
        assert tuple(pool.attrs["count_include_pad"]) == (0,)
        assert ("PAD" in ops) == any(pads)
    else:
        assert tuple(pool.attrs["count_include_pad"]) == (include,) and "PAD" not in ops


@pytest.mark.parametrize("d, include, ceil", [((2, 2), 0, 0), ((2, 3), 1, 0), ((3, 2), 0, 1),
                                              ((2, 2), 1, 1), ((1, 3), 1, 1)])
def test_average_pool_dilations_at_opset_19(d, include, ceil) -> None:
    m = _pool_model("AveragePool", (2, 3, 11, 10), 19, (3, 2), (2, 2), d, (1, 1, 2, 1), ceil,
                    include)
    _check(m, rand((2, 3, 11, 10), 13, -2, 2))


# --------------------------------------------------------------------------------- int8


def _q8_pool_ref(q: np.ndarray, avg: bool, k, s, d, pads, out_hw, include: bool,
                 zero: int) -> np.ndarray:
    """FORMAT.md's int8 pools over NHWC q: max of the taps inside; or (sum ± n/2) / n
    truncated, n the taps inside (or KH·KW with count_include_pad, padding counting zero)."""
    n, hh, ww, c = q.shape
    y = np.zeros((n,) + tuple(out_hw) + (c,), np.int32)
    for i, j in itertools.product(range(out_hw[0]), range(out_hw[1])):
        rows = [r for r in (i * s[0] - pads[0] + a * d[0] for a in range(k[0])) if 0 <= r < hh]
        cols = [c_ for c_ in (j * s[1] - pads[1] + b * d[1] for b in range(k[1])) if 0 <= c_ < ww]
        win = q[:, rows][:, :, cols].astype(np.int64)
        if not avg:
            y[:, i, j] = win.max(axis=(1, 2))
            continue
        cells = len(rows) * len(cols)
        count = k[0] * k[1] if include else cells
        total = win.sum(axis=(1, 2)) + (count - cells) * zero
        y[:, i, j] = np.where(total > 0, (total + count // 2) // count,
                              -((-total + count // 2) // count))
    return np.clip(y, -128, 127)


@pytest.mark.parametrize("op, d, pads, ceil, include", [
    ("MaxPool", (2, 3), (1, 1, 2, 1), 1, 0),
    ("MaxPool", (3, 2), (0, 1, 0, 1), 0, 0),
    ("AveragePool", (2, 2), (1, 1, 1, 1), 0, 1),
    ("AveragePool", (2, 3), (1, 0, 2, 1), 1, 0),
])
def test_int8_dilated_pools_match_the_integer_reference(op, d, pads, ceil, include) -> None:
    from tether.device import Engine

    x_shape, k, s = (1, 3, 11, 12), (3, 2), (2, 2)
    m = _pool_model(op, x_shape, 19, k, s, d, pads, ceil, include)
    tm = convert(m, quantize="int8", calibration=rand((16,) + x_shape[1:], 2, -3, 3))
    (pool,) = [n for n in tm.graph.nodes if n.op.name.endswith("_POOL_2D")]
    xt, yt = tm.graph.tensors[pool.inputs[0]], tm.graph.tensors[pool.outputs[0]]
    assert xt.dtype.name == yt.dtype.name == "INT8" and xt.quant == yt.quant
    scale, zero = float(xt.quant.scale[0]), int(xt.quant.zero_point[0])
    x = rand(x_shape, 4, -3, 3)
    y = np.asarray(Engine(tm.to_bytes()).run(x))
    # the graph input's QUANTIZE, as FORMAT.md: round half away from zero of x / s, in float32
    v = np.transpose(x, (0, 2, 3, 1)) / np.float32(scale)
    q = np.clip(np.sign(v) * np.floor(np.abs(v) + np.float32(0.5)) + zero, -128, 127)
    want_q = _q8_pool_ref(q.astype(np.int32), op == "AveragePool", k, s, d,
                          tuple(pool.attrs["pads"]), yt.shape[1:3], include, zero)
    want = np.transpose(np.float32(scale) * (want_q - zero).astype(np.float32), (0, 3, 1, 2))
    assert y.shape == want.shape
    assert np.array_equal(y, want), np.abs(y - want).max()
    assert rel_err(y, ort_run(m, x)) < 0.05  # and near the float model


def test_int8_average_pool_ceil_mode_count_include_pad_through_pad() -> None:
    """The lowering's zero PAD stays int8 (filled with the zero point) ahead of the pool."""
    x_shape = (1, 4, 10, 10)  # 10 + 2 pads: ceil_mode adds a sixth window past the pads
    m = _pool_model("AveragePool", x_shape, 10, (3, 3), (2, 2), pads=(1, 1, 1, 1), ceil=1,
                    include=1)
    tm = convert(m, quantize="int8", calibration=rand((16,) + x_shape[1:], 2, -2, 2))
    kinds = {n.op.name: tm.graph.tensors[n.outputs[0]].dtype.name for n in tm.graph.nodes}
    assert kinds["PAD"] == kinds["AVERAGE_POOL_2D"] == "INT8"
    x = rand(x_shape, 6, -2, 2)
    ref = ort_run(m, x)
    y = engine_run(tm.to_bytes(), x)
    assert np.abs(y - ref).max() < 0.05 * np.abs(ref).max()
