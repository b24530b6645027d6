"""LAYER_NORM (op 34) and INSTANCE_NORM (op 35) from ONNX and Keras.

ONNX LayerNormalization at opset 17 and the newest, over several axes (3-D and NCHW 4-D
inputs, scale and bias broadcast, bias absent); the decomposed form older exporters emit
(ReduceMean, Sub, Pow / Mul, ReduceMean, Add, Sqrt, Div / Reciprocal+Mul, then Mul(gamma),
Add(beta)) at opsets 11 and 13, folded into one LAYER_NORM; InstanceNormalization at opsets 6
and the newest after a Conv (NCHW held NHWC); Keras LayerNormalization (axis -1, a tuple of
trailing axes, center/scale off) and GroupNormalization with one channel per group; the
TFLite form of Keras's LayerNormalization (NEG, SQUARED_DIFFERENCE, RSQRT), folded too. Each
is converted, run in the engine and in onnxruntime (graph optimizations disabled), Keras or
LiteRT on
seeded inputs: outputs agree within 1e-4 relative. What is refused names the node.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import helper as h
from onnx_testlib import convert_and_compare, engine_run, model, ort_run, rand, rel_err
from tether.converter import convert

from tether.errors import ConversionError

TOL = 1e-4
NEWEST = onnx.defs.onnx_opset_version()
PARITY: dict[str, float] = {}  # case -> worst relative error (the report's figures)


def _check(m, x, label, op):
    tm, y, ref, err = convert_and_compare(m, x, label, PARITY)
    assert err < TOL, (label, np.abs(y - ref).max())
    assert op in tm.report.ops_after, tm.report.ops_after
    return tm


# (x shape, axis, scale shape, with bias)
LN_CASES = [
    ((2, 5, 16), -1, (16,), True),
    ((2, 5, 16), -2, (5, 16), True),
    ((2, 5, 16), 1, (1, 16), False),
    ((1, 3, 4, 6), -1, (6,), True),     # NCHW 4-D: normalized over W
    ((1, 3, 4, 6), 1, (3, 1, 1), True),  # over C, H, W (GroupNorm(1) style), scale per C
    ((3, 7), 0, (3, 7), True),
]


@pytest.mark.parametrize("opset", [17, NEWEST], ids=["opset17", "newest"])
@pytest.mark.parametrize("shape, axis, s_shape, bias", LN_CASES,
                         ids=[f"{c[0]}-axis{c[1]}" for c in LN_CASES])
def test_onnx_layer_normalization(opset, shape, axis, s_shape, bias) -> None:
    inits = {"scale": rand(s_shape, 1, 0.5, 1.5)}
    ins = ["x", "scale"]
    if bias:
        inits["bias"] = rand(s_shape, 2)
        ins.append("bias")
    node = h.make_node("LayerNormalization", ins, ["y"], name="ln", axis=axis, epsilon=1e-5)
    m = model([node], shape, shape, inits, opset=opset)
    x = rand(shape, 3, -2, 3)
    _check(m, x, f"onnx-layernorm-{opset}-{shape}-axis{axis}", "LAYER_NORM")


def test_onnx_layer_normalization_after_conv() -> None:
    # NCHW conv output normalized over its last axis (W): the layout goes back to NCHW first
    w = rand((4, 3, 3, 3), 5)
    conv = h.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1])
    ln = h.make_node("LayerNormalization", ["c", "scale", "bias"], ["y"], name="ln", axis=-1)
    m = model([conv, ln], (1, 3, 5, 6), (1, 4, 5, 6),
              {"w": w, "scale": rand((6,), 6), "bias": rand((6,), 7)}, opset=17)
    _check(m, rand((1, 3, 5, 6), 8), "onnx-conv-layernorm", "LAYER_NORM")


def test_onnx_layer_normalization_refuses_used_statistics() -> None:
    node = h.make_node("LayerNormalization", ["x", "scale"], ["y", "mean"], name="ln_stats")
    g = h.make_graph([node], "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 8])],
                     [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 8]),
                      h.make_tensor_value_info("mean", onnx.TensorProto.FLOAT, [2, 1])],
                     [onnx.numpy_helper.from_array(np.ones(8, np.float32), "scale")])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    with pytest.raises(ConversionError, match=r"ln_stats.*Mean / InvStdDev"):
        convert(m)


def _decomposed(opset, reciprocal, pow_form, affine=True, axes=(-1,)):
    """The layer norm as PyTorch / tf2onnx spell it before opset 17."""
    nodes = [h.make_node("ReduceMean", ["x"], ["mean"], name="mean", axes=list(axes)),
             h.make_node("Sub", ["x", "mean"], ["d"], name="sub")]
    if pow_form:
        nodes.append(h.make_node("Pow", ["d", "two"], ["sq"], name="pow"))
    else:
        nodes.append(h.make_node("Mul", ["d", "d"], ["sq"], name="square"))
    nodes += [h.make_node("ReduceMean", ["sq"], ["var"], name="var", axes=list(axes)),
              h.make_node("Add", ["var", "eps"], ["ve"], name="add_eps"),
              h.make_node("Sqrt", ["ve"], ["std"], name="sqrt")]
    if reciprocal:
        nodes += [h.make_node("Reciprocal", ["std"], ["inv"], name="recip"),
                  h.make_node("Mul", ["d", "inv"], ["n"], name="norm")]
    else:
        nodes.append(h.make_node("Div", ["d", "std"], ["n"], name="norm"))
    inits = {"two": np.asarray(2.0, np.float32), "eps": np.asarray(1e-5, np.float32)}
    if affine:
        nodes += [h.make_node("Mul", ["n", "gamma"], ["g"], name="gamma_mul"),
                  h.make_node("Add", ["g", "beta"], ["y"], name="beta_add")]
        inits.update(gamma=rand((16,), 1, 0.5, 1.5), beta=rand((16,), 2))
    else:
        nodes[-1].output[0] = "y"
    return model(nodes, (2, 5, 16), (2, 5, 16), inits, opset=opset)


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("reciprocal", [False, True], ids=["div", "reciprocal"])
@pytest.mark.parametrize("pow_form", [True, False], ids=["pow", "mul"])
def test_onnx_decomposed_layer_norm_folds(opset, reciprocal, pow_form) -> None:
    m = _decomposed(opset, reciprocal, pow_form)
    tm = _check(m, rand((2, 5, 16), 3, -2, 3),
                f"onnx-decomposed-{opset}-{'recip' if reciprocal else 'div'}-"
                f"{'pow' if pow_form else 'mul'}", "LAYER_NORM")
    assert dict(tm.report.ops_after) == {"LAYER_NORM": 1}, tm.report.ops_after


def test_onnx_decomposed_layer_norm_without_affine_and_unoptimized() -> None:
    m = _decomposed(13, False, True, affine=False)
    x = rand((2, 5, 16), 4)
    tm = convert(m, optimize=False)  # the lowering alone folds the chain (SQRT has no op)
    err = rel_err(engine_run(tm.to_bytes(), x), ort_run(m, x))
    PARITY["onnx-decomposed-unoptimized"] = err
    assert err < TOL


def test_onnx_standalone_sqrt_is_refused() -> None:
    m = model([h.make_node("Sqrt", ["x"], ["y"], name="lonely_sqrt")], (2, 3), (2, 3))
    with pytest.raises(ConversionError, match="lonely_sqrt.*Sqrt"):
        convert(m)


@pytest.mark.parametrize("opset", [6, NEWEST], ids=["opset6", "newest"])
def test_onnx_instance_normalization_after_conv(opset) -> None:
    w = rand((4, 3, 3, 3), 5)
    conv = h.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1])
    inorm = h.make_node("InstanceNormalization", ["c", "scale", "B"], ["y"], name="inorm",
                        epsilon=1e-5)
    relu_out = h.make_node("Relu", ["y"], ["z"], name="relu")
    m = model([conv, inorm, relu_out], (2, 3, 6, 7), (2, 4, 6, 7),
              {"w": w, "scale": rand((4,), 6, 0.5, 1.5), "B": rand((4,), 7)}, opset=opset,
              y="z")
    _check(m, rand((2, 3, 6, 7), 8, -2, 2), f"onnx-instancenorm-{opset}", "INSTANCE_NORM")


def test_onnx_instance_normalization_3d_input() -> None:
    node = h.make_node("InstanceNormalization", ["x", "scale", "B"], ["y"], name="inorm1d",
                       epsilon=1e-3)
    m = model([node], (2, 5, 9), (2, 5, 9),
              {"scale": rand((5,), 1), "B": rand((5,), 2)}, opset=NEWEST)
    _check(m, rand((2, 5, 9), 3), "onnx-instancenorm-1d", "INSTANCE_NORM")


def test_int8_quantized_model_keeps_layer_norm_float() -> None:
    # conv -> layer norm -> conv: the convs go int8, the layer norm stays float between them
    w1, w2 = rand((4, 3, 3, 3), 1), rand((2, 4, 1, 1), 2)
    nodes = [h.make_node("Conv", ["x", "w1"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
             h.make_node("LayerNormalization", ["c", "scale", "bias"], ["n"], name="ln",
                         axis=1),
             h.make_node("Conv", ["n", "w2"], ["y"], name="conv2")]
    m = model(nodes, (1, 3, 6, 6), (1, 2, 6, 6),
              {"w1": w1, "w2": w2, "scale": rand((4, 6, 6), 3), "bias": rand((4, 6, 6), 4)},
              opset=17)
    calib = rand((16, 1, 3, 6, 6), 5)
    tm = convert(m, quantize="int8", calibration=calib)
    ops = dict(tm.report.ops_after)
    assert ops.get("LAYER_NORM") == 1 and "QUANTIZE" in ops and "DEQUANTIZE" in ops, ops
    x = calib[0]
    y, ref = engine_run(tm.to_bytes(), x), ort_run(m, x)
    assert y.shape == ref.shape
    assert rel_err(y, ref) < 0.1  # int8 convs around it


# ---------------------------------------------------------------------------- Keras

keras = pytest.importorskip("keras")


def _keras_check(model_k, x, label, op):
    ref = np.asarray(model_k(x))
    tm = convert(model_k)
    y = engine_run(tm.to_bytes(), x)
    assert y.shape == ref.shape and y.dtype == np.float32, (label, y.shape, ref.shape)
    err = rel_err(y, ref)
    PARITY[label] = err
    assert err < TOL, (label, np.abs(y - ref).max())
    assert op in tm.report.ops_after, tm.report.ops_after


def _randomized(layer):
    rng = np.random.default_rng(0)
    layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in
                       layer.get_weights()])


@pytest.mark.parametrize("axis, center, scale", [
    (-1, True, True), ((-2, -1), True, True), (-1, False, True), (-1, True, False),
    (-1, False, False), ((1, 2), True, True)])
def test_keras_layer_normalization(axis, center, scale) -> None:
    inp = keras.Input((5, 12))
    ln = keras.layers.LayerNormalization(axis=axis, center=center, scale=scale, epsilon=1e-3)
    out = ln(keras.layers.Dense(12)(inp))
    m = keras.Model(inp, out)
    _randomized(ln)
    _keras_check(m, rand((1, 5, 12), 1, -2, 2), f"keras-layernorm-{axis}-{center}-{scale}",
                 "LAYER_NORM")


@pytest.mark.parametrize("axis, center, scale", [
    (-1, True, True), ((2, 3), True, True), (-1, False, True), (-1, True, False),
    (-1, False, False)])
def test_tflite_layer_normalization_folds(axis, center, scale) -> None:
    """TensorFlow writes Keras's LayerNormalization as MEAN, NEG, SQUARED_DIFFERENCE, MEAN,
    ADD, RSQRT, MUL (gamma), MUL, [ADD beta], MUL, ADD: one LAYER_NORM after conversion."""
    pytest.importorskip("ai_edge_litert")
    from onnx_testlib import litert_run
    from tether.peers import keras_to_tflite

    inp = keras.Input((6, 5, 8))
    ln = keras.layers.LayerNormalization(axis=axis, center=center, scale=scale, epsilon=1e-3)
    m = keras.Model(inp, ln(keras.layers.Dense(8)(inp)))
    _randomized(ln)
    content = keras_to_tflite(m)
    tm = convert(content)
    assert tm.report.ops_after["LAYER_NORM"] == 1
    assert {"MUL", "ADD", "SUB", "DIV", "MEAN"}.isdisjoint(tm.report.ops_after), \
        tm.report.ops_after
    x = rand((1, 6, 5, 8), 4, -2, 2)
    assert rel_err(engine_run(tm.to_bytes(), x), litert_run(content, x)) < 1e-4


@pytest.mark.parametrize("opset", [11, 13, 17])
@pytest.mark.parametrize("center, scale", [(True, True), (False, False)])
def test_tf2onnx_layer_normalization_folds(opset, center, scale) -> None:
    """tf2onnx writes Keras's LayerNormalization in the same distributed form (Neg,
    Reciprocal of Sqrt) at every opset: one LAYER_NORM, equal to onnxruntime."""
    pytest.importorskip("tf2onnx")
    import tensorflow as tf
    import tf2onnx

    inp = keras.Input((6, 5, 8))
    ln = keras.layers.LayerNormalization(center=center, scale=scale, epsilon=1e-3)
    m = keras.Model(inp, ln(keras.layers.Dense(8)(inp)))
    _randomized(ln)
    spec = (tf.TensorSpec((1, 6, 5, 8), tf.float32, name="x"),)
    proto, _ = tf2onnx.convert.from_function(tf.function(lambda t: m(t), input_signature=spec),
                                             input_signature=spec, opset=opset)
    assert "Neg" in {n.op_type for n in proto.graph.node}
    tm = convert(proto)
    assert tm.report.ops_after["LAYER_NORM"] == 1
    assert {"MUL", "ADD", "SUB", "DIV", "MEAN"}.isdisjoint(tm.report.ops_after)
    x = rand((1, 6, 5, 8), 5, -2, 2)
    assert rel_err(engine_run(tm.to_bytes(), x), ort_run(proto, x)) < 1e-4


def test_keras_layer_normalization_conv() -> None:
    inp = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inp)
    ln = keras.layers.LayerNormalization()
    m = keras.Model(inp, keras.layers.ReLU()(ln(x)))
    _randomized(ln)
    _keras_check(m, rand((1, 6, 6, 3), 2), "keras-conv-layernorm", "LAYER_NORM")


def test_keras_group_normalization_as_instance_norm() -> None:
    inp = keras.Input((6, 5, 4))
    gn = keras.layers.GroupNormalization(groups=4, epsilon=1e-3)
    m = keras.Model(inp, gn(keras.layers.Conv2D(4, 3, padding="same")(inp)))
    _randomized(gn)
    _keras_check(m, rand((1, 6, 5, 4), 3), "keras-groupnorm-instance", "INSTANCE_NORM")


def test_keras_group_normalization_other_groups_refused() -> None:
    inp = keras.Input((6, 5, 4))
    m = keras.Model(inp, keras.layers.GroupNormalization(groups=2, name="gn2")(inp))
    with pytest.raises(ConversionError, match="gn2"):
        convert(m)


@pytest.mark.parametrize("opset", [7, NEWEST], ids=["opset7", "newest"])
def test_onnx_neg(opset) -> None:
    m = model([h.make_node("Neg", ["x"], ["n"], name="neg"),
               h.make_node("Relu", ["n"], ["y"], name="relu")], (1, 3, 4, 5), (1, 3, 4, 5),
              opset=opset)
    _, _, _, err = convert_and_compare(m, rand((1, 3, 4, 5), 6, -2, 2), "neg")
    assert err < 1e-6
