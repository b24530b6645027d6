"""ONNX Resize (opsets 10, 11, 13, 18, 19) and Upsample (7, 9) into the engine's RESIZE.

Every coordinate transformation mode at the oldest and newest opset that defines it, every
nearest_mode, up- and down-scaling with integer and non-integer scales, scales and sizes
inputs, the opset-18 `axes` form; each model is built with onnx.helper, converted, run in the
engine and in onnxruntime (graph optimizations disabled) on seeded inputs: outputs agree
within 1e-4 relative (nearest picks the same cells, so it is exact). What the engine cannot do
is refused naming the node, the op and what is supported.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import helper as h
from onnx_testlib import convert_and_compare, model, rand
from tether.converter import convert

from tether.errors import ConversionError

TOL = 1e-4
NEWEST = onnx.defs.onnx_opset_version()
X_SHAPE = (1, 3, 5, 7)  # NCHW

# (name, mode, coordinate_transformation_mode, nearest_mode, oldest opset that defines it)
MODES = [
    ("nearest-half_pixel-rpf", "nearest", "half_pixel", "round_prefer_floor", 11),
    ("nearest-half_pixel-rpc", "nearest", "half_pixel", "round_prefer_ceil", 11),
    ("nearest-half_pixel-floor", "nearest", "half_pixel", "floor", 11),
    ("nearest-half_pixel-ceil", "nearest", "half_pixel", "ceil", 11),
    ("nearest-pytorch_half_pixel", "nearest", "pytorch_half_pixel", "round_prefer_floor", 11),
    ("nearest-align_corners", "nearest", "align_corners", "round_prefer_ceil", 11),
    ("nearest-asymmetric-floor", "nearest", "asymmetric", "floor", 11),
    ("nearest-asymmetric-rpc", "nearest", "asymmetric", "round_prefer_ceil", 11),
    ("nearest-tf_half_pixel_for_nn", "nearest", "tf_half_pixel_for_nn", "floor", 11),
    ("linear-half_pixel", "linear", "half_pixel", None, 11),
    ("linear-pytorch_half_pixel", "linear", "pytorch_half_pixel", None, 11),
    ("linear-align_corners", "linear", "align_corners", None, 11),
    ("linear-asymmetric", "linear", "asymmetric", None, 11),
    ("linear-tf_half_pixel_for_nn", "linear", "tf_half_pixel_for_nn", None, 11),
]
SCALES = [(2.0, 3.0), (0.5, 0.6), (1.7, 0.35), (1.0, 2.5), (0.8, 1.3)]
SIZES = [(10, 3), (1, 9), (4, 7)]

PARITY: dict[str, float] = {}  # mode -> worst relative error seen (the report's figures)


def _check(m, x, label):
    tm, y, ref, err = convert_and_compare(m, x, label, PARITY)
    assert err < TOL, (label, np.abs(y - ref).max())
    assert "RESIZE" in tm.report.ops_after
    return err


def _resize_node(mode, coord, nearest, opset, inputs, **extra):
    attrs = {"mode": mode, **extra}
    if opset >= 11:
        attrs["coordinate_transformation_mode"] = coord
        if nearest is not None:
            attrs["nearest_mode"] = nearest
    return h.make_node("Resize", inputs, ["y"], name="resize", **attrs)


@pytest.mark.parametrize("name, mode, coord, nearest, oldest", MODES, ids=[m[0] for m in MODES])
@pytest.mark.parametrize("newest", [False, True], ids=["oldest", "newest"])
@pytest.mark.parametrize("scales", SCALES, ids=lambda s: f"s{s[0]}x{s[1]}")
def test_resize_scales(name, mode, coord, nearest, oldest, newest, scales) -> None:
    opset = NEWEST if newest else oldest
    inits = {"roi": np.zeros(0, np.float32),
             "scales": np.asarray((1, 1) + scales, np.float32)}
    node = _resize_node(mode, coord, nearest, opset, ["x", "roi", "scales"])
    m = model([node], X_SHAPE, None, inits, opset=opset)
    _check(m, rand(X_SHAPE, 3, -2, 2), name)


@pytest.mark.parametrize("name, mode, coord, nearest, oldest", MODES, ids=[m[0] for m in MODES])
@pytest.mark.parametrize("newest", [False, True], ids=["oldest", "newest"])
@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_resize_sizes(name, mode, coord, nearest, oldest, newest, sizes) -> None:
    opset = NEWEST if newest else oldest
    inits = {"roi": np.zeros(0, np.float32), "scales": np.zeros(0, np.float32),
             "sizes": np.asarray((1, 3) + sizes, np.int64)}
    node = _resize_node(mode, coord, nearest, opset, ["x", "roi", "scales", "sizes"])
    m = model([node], X_SHAPE, None, inits, opset=opset)
    _check(m, rand(X_SHAPE, 4, -2, 2), name)


@pytest.mark.parametrize("opset", sorted({13, 18, 19, NEWEST}))
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_optional_inputs_and_axes(opset, mode) -> None:
    # opset 13+: roi and scales may be left out ("" inputs); 18+: `axes` names the scaled axes
    if opset >= 18:
        inits = {"sizes": np.asarray([9, 4], np.int64)}
        node = _resize_node(mode, "half_pixel", None, opset, ["x", "", "", "sizes"],
                            axes=[2, 3])
    else:
        inits = {"scales": np.asarray([1, 1, 1.5, 0.7], np.float32)}
        node = _resize_node(mode, "half_pixel", None, opset, ["x", "", "scales"])
    m = model([node], X_SHAPE, None, inits, opset=opset)
    _check(m, rand(X_SHAPE, 5), f"{mode}-axes" if opset >= 18 else f"{mode}-optional")


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", [(2.0, 3.0), (0.5, 0.6), (1.7, 0.35)], ids=str)
def test_resize_opset10(mode, scales) -> None:
    # Resize-10: X and scales only; asymmetric coordinates (ONNX Runtime: nearest rounds up
    # when downscaling)
    inits = {"scales": np.asarray((1, 1) + scales, np.float32)}
    m = model([h.make_node("Resize", ["x", "scales"], ["y"], name="r10", mode=mode)],
              X_SHAPE, None, inits, opset=10)
    _check(m, rand(X_SHAPE, 6), f"{mode}-opset10")


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", [(2.0, 3.0), (1.5, 2.5), (1.0, 1.3)], ids=str)
def test_upsample(mode, scales) -> None:
    # Upsample-7 (scales attribute) and Upsample-9 (scales input)
    x = rand(X_SHAPE, 7)
    m7 = model([h.make_node("Upsample", ["x"], ["y"], name="up7", mode=mode,
                            scales=[1.0, 1.0, *scales])], X_SHAPE, None, None, opset=7)
    _check(m7, x, f"{mode}-upsample7")
    m9 = model([h.make_node("Upsample", ["x", "s"], ["y"], name="up9", mode=mode)], X_SHAPE,
               None, {"s": np.asarray((1, 1) + scales, np.float32)}, opset=9)
    _check(m9, x, f"{mode}-upsample9")


def test_resize_between_convs_keeps_layout() -> None:
    # conv -> resize -> conv: one layout change at each end of the graph, none around RESIZE
    w = rand((4, 3, 3, 3), 8)
    nodes = [h.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1]),
             _resize_node("linear", "half_pixel", None, 13, ["a", "", "s"]),
             h.make_node("Conv", ["y0", "w2"], ["y"])]
    nodes[1].output[0] = "y0"
    inits = {"w": w, "w2": rand((2, 4, 1, 1), 9), "s": np.asarray([1, 1, 2, 2], np.float32)}
    m = model(nodes, X_SHAPE, None, inits, opset=13)
    _check(m, rand(X_SHAPE, 10), "linear-in-graph")
    ops = convert(m).report.ops_after
    assert ops.get("TRANSPOSE", 0) == 2, ops


REFUSED = [
    ("cubic", {"mode": "cubic"}, None, "mode='cubic' is not supported"),
    ("crop", {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"}, None,
     "tf_crop_and_resize' is not supported"),
    ("antialias", {"mode": "linear", "antialias": 1}, 18, "antialias=1 is not supported"),
    ("policy", {"mode": "nearest", "keep_aspect_ratio_policy": "not_larger"}, 18,
     "keep_aspect_ratio_policy='not_larger' is not supported"),
]


@pytest.mark.parametrize("label, attrs, opset, needle", REFUSED, ids=[r[0] for r in REFUSED])
def test_resize_refusals(label, attrs, opset, needle) -> None:
    opset = opset or 13
    if opset >= 18 and "keep_aspect_ratio_policy" in attrs:
        inits = {"sizes": np.asarray([1, 3, 8, 8], np.int64)}
        inputs = ["x", "", "", "sizes"]
    else:
        inits = {"roi": np.zeros(8, np.float32), "scales": np.asarray([1, 1, 2, 2], np.float32)}
        inputs = ["x", "roi", "scales"]
    m = model([h.make_node("Resize", inputs, ["y"], name="bad_resize", **attrs)], X_SHAPE,
              None, inits, opset=opset)
    with pytest.raises(ConversionError) as e:
        convert(m)
    msg = str(e.value)
    assert "'bad_resize' (Resize)" in msg and needle in msg, msg
    assert "\n" not in msg


def test_resize_refuses_channel_scaling() -> None:
    m = model([h.make_node("Resize", ["x", "", "s"], ["y"], name="chan", mode="nearest")],
              X_SHAPE, None, {"s": np.asarray([1, 2, 2, 2], np.float32)}, opset=13)
    with pytest.raises(ConversionError, match=r"'chan' \(Resize\).*only the two spatial axes"):
        convert(m)


def test_resize_refuses_rank3() -> None:
    m = model([h.make_node("Resize", ["x", "", "s"], ["y"], name="r3", mode="linear")],
              (1, 3, 5), None, {"s": np.asarray([1, 1, 2], np.float32)}, opset=13)
    with pytest.raises(ConversionError, match=r"'r3' \(Resize\).*only 4-D NCHW"):
        convert(m)


def test_zz_parity_figures() -> None:
    # The worst relative error per mode over this file's cases (printed with -s).
    assert PARITY, "run the parity cases first"
    for k in sorted(PARITY):
        print(f"{k:40s} {PARITY[k]:.3g}")
    assert max(PARITY.values()) < TOL
