"""PAD reflect, edge and symmetric modes (attribute 29) from ONNX Pad and TFLite MIRROR_PAD.

ONNX Pad at opset 2 (attributes `mode`, `pads`, `value`), 11 (pads and constant_value
inputs), 18 (the `axes` input) and the newest opset onnxruntime runs, in constant, reflect
and edge modes, on the graph input and after a Conv (the model is NCHW, the engine holds NHWC:
pads on C, H and W must land on the engine's axes), each converted, run in the engine and in
onnxruntime (graph optimizations disabled) on seeded inputs: outputs agree within 1e-5
relative (padding copies values, so a PAD alone is exact). TFLite MIRROR_PAD (REFLECT,
SYMMETRIC) from `tf.pad` against LiteRT, float32 and int8 (exact). Only a constant-zero PAD is
folded into the convolution that reads it. What the engine cannot do is refused on one line
naming the node, the op and what is supported.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import helper as h
from onnx_testlib import (
    convert_and_compare,
    engine_run,
    litert_run,
    model,
    rand,
    rel_err,
)
from tether.converter import convert

from tether.errors import ConversionError

TOL = 1e-5
X_SHAPE = (1, 3, 5, 6)  # NCHW
# ONNX pads: (N, C, H, W) begins then ends; every one below each axis's size (reflect)
PADS = (0, 1, 2, 1, 0, 2, 1, 3)
MODES = ["constant", "reflect", "edge"]


def _ort_runs(opset: int) -> bool:
    m = model([h.make_node("Relu", ["x"], ["y"])], (1, 2), (1, 2), opset=opset)
    try:
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - onnxruntime's "opset not supported" is a plain Fail
        return False
    return True


def _newest_ort_opset() -> int:
    """The newest default-domain opset that both onnx and onnxruntime know."""
    return next((o for o in range(onnx.defs.onnx_opset_version(), 20, -1) if _ort_runs(o)), 21)


NEWEST = _newest_ort_opset()
OPSETS = [2, 11, NEWEST]

PARITY: dict[str, float] = {}  # case -> worst relative error seen (the report's figures)


def _check(m, x, label, op="PAD"):
    tm, y, ref, err = convert_and_compare(m, x, label, PARITY)
    assert err <= TOL, (label, np.abs(y - ref).max())
    if op is not None:
        assert op in tm.report.ops_after, tm.report.ops_after
    return tm


def _pad(opset, mode, pads, src, out, value=None, name="pad"):
    """Pad node (and its initializers) in the form `opset` defines."""
    if opset < 11:
        attrs = {"mode": mode, "pads": list(pads)}
        if value is not None:
            attrs["value"] = value
        return [h.make_node("Pad", [src], [out], name=name, **attrs)], {}
    inits = {f"{name}_pads": np.asarray(pads, np.int64)}
    inputs = [src, f"{name}_pads"]
    if value is not None:
        inits[f"{name}_value"] = np.asarray(value, np.float32)
        inputs.append(f"{name}_value")
    return [h.make_node("Pad", inputs, [out], name=name, mode=mode)], inits


@pytest.mark.parametrize("opset", OPSETS, ids=lambda o: f"opset{o}")
@pytest.mark.parametrize("mode", MODES)
def test_pad_graph_input(mode, opset) -> None:
    value = 0.5 if mode == "constant" else None
    nodes, inits = _pad(opset, mode, PADS, "x", "y", value)
    _check(model(nodes, X_SHAPE, None, inits, opset=opset), rand(X_SHAPE, 1),
           f"{mode}-input-opset{opset}")


@pytest.mark.parametrize("opset", OPSETS, ids=lambda o: f"opset{o}")
@pytest.mark.parametrize("mode", MODES)
def test_pad_after_conv(mode, opset) -> None:
    # conv (NCHW 3 -> 4 channels) -> pad on C, H and W: the engine pads NHWC axes 3, 1, 2
    conv = h.make_node("Conv", ["x", "w", "b"], ["a"], pads=[1, 1, 1, 1])
    nodes, inits = _pad(opset, mode, (0, 2, 1, 2, 0, 3, 2, 1), "a", "y")
    inits.update({"w": rand((4, 3, 3, 3), 2), "b": rand((4,), 3)})
    _check(model([conv] + nodes, X_SHAPE, None, inits, opset=opset), rand(X_SHAPE, 4),
           f"{mode}-after-conv-opset{opset}")


@pytest.mark.parametrize("mode", MODES)
def test_pad_axes_input(mode) -> None:
    # opset 18's axes input: pads for H and W only (negative axis ids)
    inits = {"p": np.asarray([2, 1, 1, 3], np.int64), "ax": np.asarray([-2, -1], np.int64)}
    node = h.make_node("Pad", ["x", "p", "", "ax"], ["y"], name="pad", mode=mode)
    _check(model([node], X_SHAPE, None, inits, opset=18), rand(X_SHAPE, 5),
           f"{mode}-axes-opset18")


@pytest.mark.parametrize("mode", MODES)
def test_only_constant_zero_pad_folds_into_conv(mode) -> None:
    # conv -> pad (H, W) -> conv: the pad sits in the engine's NHWC layout between the two
    first = h.make_node("Conv", ["x", "w0"], ["a"], pads=[1, 1, 1, 1])
    nodes, inits = _pad(13, mode, (0, 0, 1, 2, 0, 0, 2, 1), "a", "p")
    conv = h.make_node("Conv", ["p", "w"], ["y"])
    inits.update({"w0": rand((3, 3, 3, 3), 5), "w": rand((4, 3, 3, 3), 6)})
    tm = _check(model([first] + nodes + [conv], X_SHAPE, None, inits, opset=13),
                rand(X_SHAPE, 7), f"{mode}-before-conv", op=None)
    assert ("PAD" in tm.report.ops_after) == (mode != "constant"), tm.report.ops_after


def test_pad_constant_input_is_folded_with_its_mode() -> None:
    # a reflect PAD of a constant becomes a constant; the numpy reference honours the mode
    c = rand((1, 3, 5, 6), 8)
    nodes, inits = _pad(13, "reflect", PADS, "c", "pc")
    inits["c"] = c
    add = h.make_node("Add", ["x", "pc"], ["y"])
    y_shape = (1, 6, 8, 10)
    tm = _check(model(nodes + [add], y_shape, None, inits, opset=13), rand(y_shape, 9),
                "reflect-constant-folded", op=None)
    assert "PAD" not in tm.report.ops_after, tm.report.ops_after


REFUSED = [
    ("wrap", "wrap", PADS, 19, "mode='wrap' is not supported"),
    ("reflect-too-far", "reflect", (0, 0, 5, 0, 0, 0, 0, 0), 13,
     "pads (5, 0) on axis 2 must each be < its size 5"),
]


@pytest.mark.parametrize("label, mode, pads, opset, needle", REFUSED, ids=[r[0] for r in REFUSED])
def test_pad_refusals(label, mode, pads, opset, needle) -> None:
    nodes, inits = _pad(opset, mode, pads, "x", "y", name="bad_pad")
    y_shape = tuple(d + pads[i] + pads[i + 4] for i, d in enumerate(X_SHAPE))
    m = model(nodes, X_SHAPE, y_shape, inits, opset=opset)
    with pytest.raises(ConversionError) as e:
        convert(m)
    msg = str(e.value)
    assert "'bad_pad' (Pad)" in msg and needle in msg, msg
    assert "\n" not in msg


# ---- TFLite MIRROR_PAD ------------------------------------------------------------------

TF_SHAPE = (1, 5, 6, 3)  # NHWC
TF_PADS = [[0, 0], [2, 1], [1, 3], [1, 2]]


def _tflite(mode: str, int8: bool = False) -> bytes:
    tf = pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    spec = tf.TensorSpec(TF_SHAPE, tf.float32)
    f = tf.function(lambda x: tf.pad(x, TF_PADS, mode=mode), input_signature=[spec])
    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    if int8:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        rep = [rand(TF_SHAPE, 100 + k, -3.0, 3.0) for k in range(8)]
        conv.representative_dataset = lambda: ([r] for r in rep)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return bytes(conv.convert())


@pytest.mark.parametrize("mode", ["REFLECT", "SYMMETRIC"])
def test_tflite_mirror_pad(mode) -> None:
    content = _tflite(mode)
    x = rand(TF_SHAPE, 11, -3.0, 3.0)
    ref = litert_run(content, x)
    tm = convert(content)
    assert "PAD" in tm.report.ops_after, tm.report.ops_after
    y = engine_run(tm.to_bytes(), x)
    PARITY["tflite-" + mode] = rel_err(y, ref)
    assert PARITY["tflite-" + mode] <= TOL
    np.testing.assert_array_equal(y, np.pad(x, TF_PADS, mode=mode.lower()))


@pytest.mark.parametrize("mode", ["REFLECT", "SYMMETRIC"])
def test_tflite_int8_mirror_pad_exact(mode) -> None:
    content = _tflite(mode, int8=True)
    from ai_edge_litert.interpreter import Interpreter

    d = Interpreter(model_content=content).get_input_details()[0]
    s, z = d["quantization"]
    q = np.clip(np.round(rand(TF_SHAPE, 12, -3.0, 3.0) / s) + z, -128, 127).astype(np.int8)
    ref = litert_run(content, q)
    tm = convert(content)
    assert "PAD" in tm.report.ops_after, tm.report.ops_after
    y = engine_run(tm.to_bytes(), q)
    np.testing.assert_array_equal(y, ref)
    PARITY["tflite-int8-" + mode] = 0.0


def test_zz_parity_figures() -> None:
    # The worst relative error per case over this file's cases (printed with -s).
    assert PARITY, "run the parity cases first"
    for k in sorted(PARITY):
        print(f"{k:40s} {PARITY[k]:.3g}")
    assert max(PARITY.values()) <= TOL
