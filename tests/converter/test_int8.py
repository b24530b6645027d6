"""Post-training int8: calibration evaluator, quantization parameters, graph structure, and
the engine's int8 output against the float source."""

from __future__ import annotations

import numpy as np
import pytest
from converter_testlib import GraphBuilder
from onnx_testlib import engine_run, rand, rel_err
from tether.converter import convert, load
from tether.converter._internal import ir
from tether.converter._internal.calibrate import evaluate, tensor_ranges
from tether.converter._internal.ops import Activation, DType, OpType
from tether.converter._internal.quantize import quantize_int8

from tether.errors import ConversionError

keras = pytest.importorskip("keras")
L = keras.layers


def _graph() -> ir.Graph:
    gb = GraphBuilder()
    x = gb.input("x", (1, 8, 8, 3))
    w = gb.const("w", rand((6, 3, 3, 3), 1, -0.5, 0.5))
    b = gb.const("b", rand((6,), 2, -0.2, 0.2))
    c = gb.node(OpType.CONV_2D, [x, w, b], "c", {"pads": (1, 1, 1, 1)}, Activation.RELU6)
    dw = gb.const("dw", rand((1, 3, 3, 6), 3, -0.5, 0.5))
    d = gb.node(OpType.DEPTHWISE_CONV_2D, [c, dw, None], "d", {"strides": (2, 2)})
    hs = gb.node(OpType.HARD_SWISH, [d], "hs")
    a = gb.node(OpType.ADD, [hs, gb.const("k", rand((6,), 4))], "a")
    m = gb.node(OpType.MEAN, [a], "m", {"axes": (1, 2), "keepdims": (0,)})
    fw = gb.const("fw", rand((5, 6), 5))
    f = gb.node(OpType.FULLY_CONNECTED, [m, fw, gb.const("fb", rand((5,), 6))], "f")
    gb.node(OpType.SOFTMAX, [f], "y", {"beta": (1.0,)})
    return gb.graph("y")


def test_evaluator_matches_the_engine_in_float() -> None:
    g = _graph()
    x = rand((1, 8, 8, 3), 7)
    ref = evaluate(g, {"x": x})["y"]
    from tether.converter._internal import tmodel

    data = tmodel.encode(tmodel.graph_to_file(g))
    assert rel_err(engine_run(data, x), ref) < 1e-5


def test_ranges_cover_every_sample_and_include_relu6_clamp() -> None:
    g = _graph()
    xs = [rand((1, 8, 8, 3), s, -2, 2) for s in range(4)]
    r = tensor_ranges(g, xs)
    assert set(r) == {"x", "c", "d", "hs", "a", "m", "f", "y"}
    assert r["x"][0] >= -2 and r["x"][1] <= 2 and r["x"][1] - r["x"][0] > 3
    assert r["c"][0] >= 0 and r["c"][1] <= 6
    with pytest.raises(ConversionError, match="does not fit input"):
        tensor_ranges(g, [np.zeros((2, 3))])


def test_quantized_graph_parameters() -> None:
    g = _graph()
    xs = [rand((1, 8, 8, 3), s) for s in range(4)]
    q = quantize_int8(g, tensor_ranges(g, xs))
    ops = q.op_counts()
    # every op int8 (hard-swish included): QUANTIZE after the input, DEQUANTIZE at the end
    assert ops["QUANTIZE"] == 1 and ops["DEQUANTIZE"] == 1 and ops["HARD_SWISH"] == 1
    hs = next(n for n in q.nodes if n.op == OpType.HARD_SWISH)
    assert all(q.tensors[t].dtype == DType.INT8 for t in hs.inputs + hs.outputs)  # type: ignore[operator]
    assert q.inputs == ("x",) and q.outputs == ("y",)
    assert q.tensors["x"].dtype == DType.FLOAT32 and q.tensors["y"].dtype == DType.FLOAT32
    conv = next(n for n in q.nodes if n.op == OpType.CONV_2D)
    xq, wq, bq = (q.tensors[n] for n in conv.inputs)  # type: ignore[index]
    assert xq.dtype == DType.INT8 and wq.dtype == DType.INT8 and bq.dtype == DType.INT32
    assert wq.quant.axis == 0 and set(wq.quant.zero_point) == {0}
    w = np.asarray(g.tensors["w"].data, np.float64)
    s_w = np.asarray(wq.quant.scale)
    np.testing.assert_allclose(s_w, np.abs(w).reshape(6, -1).max(1) / 127, rtol=1e-6)
    assert np.abs(wq.data * s_w[:, None, None, None] - w).max() <= s_w.max() / 2 + 1e-7
    np.testing.assert_allclose(bq.quant.scale, xq.quant.scale[0] * s_w, rtol=1e-6)
    b = np.asarray(g.tensors["b"].data, np.float64)
    np.testing.assert_array_equal(bq.data, np.round(b / (xq.quant.scale[0] * s_w)))
    dw = next(n for n in q.nodes if n.op == OpType.DEPTHWISE_CONV_2D)
    assert q.tensors[dw.inputs[1]].quant.axis == 3  # type: ignore[index]
    sm = next(n for n in q.nodes if n.op == OpType.SOFTMAX)
    assert q.tensors[sm.outputs[0]].quant == ir.Quantization((1 / 256,), (-128,))
    # every float tensor range is representable: the zero point puts 0 on the grid
    for t in q.tensors.values():
        if t.dtype == DType.INT8 and t.quant.axis is None and not t.is_constant:
            assert -128 <= t.quant.zero_point[0] <= 127


def test_convert_int8_api_round_trips_and_rejects_bad_args() -> None:
    x = keras.Input((8, 8, 3))
    y = L.Conv2D(4, 3, activation="relu")(x)
    y = L.GlobalAveragePooling2D()(y)
    m = keras.Model(x, L.Dense(3)(y))
    cal = rand((6, 1, 8, 8, 3))
    tm = convert(m, quantize="int8", calibration=cal)
    assert tm.report.ops_after["QUANTIZE"] == 1 and tm.report.ops_after["DEQUANTIZE"] == 1
    assert load(tm.to_bytes()).report.ops_after == tm.report.ops_after
    with pytest.raises(ConversionError, match="needs calibration"):
        convert(m, quantize="int8")
    with pytest.raises(ConversionError, match="'int4' is not supported"):
        convert(m, quantize="int4", calibration=cal)
    with pytest.raises(ConversionError, match="without quantize"):
        convert(m, calibration=cal)


def _against_keras(m, tm, xs: np.ndarray) -> tuple[list[float], int]:
    """The int8 model `tm` beside Keras model `m` on each of `xs`: the relative errors and how
    many top-1 classes agree."""
    data = tm.to_bytes()
    errs, agree = [], 0
    for x_ in xs:
        ref = np.asarray(m(x_, training=False))
        y_ = engine_run(data, x_)
        errs.append(rel_err(y_, ref))
        agree += int(np.argmax(y_) == np.argmax(ref))
    return errs, agree


def test_int8_engine_matches_float_source_top1() -> None:
    # needs the engine's int8 kernels (MEAN included) and QUANTIZE/DEQUANTIZE (18, 19).
    # Min-max ranges from 32 samples: an input beyond them saturates the int8 logits, so
    # single samples may be off by more than the typical ~1-2%.
    keras.utils.set_random_seed(0)
    x = keras.Input((12, 12, 3))
    y = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    y = L.DepthwiseConv2D(3, strides=2, activation="relu6")(y)
    y = L.GlobalAveragePooling2D()(y)
    m = keras.Model(x, L.Dense(10)(y))
    cal = rand((32, 1, 12, 12, 3), 1)
    tm = convert(m, quantize="int8", calibration=cal)
    errs, agree = _against_keras(m, tm, rand((20, 1, 12, 12, 3), 2))
    assert np.median(errs) < 0.05 and max(errs) < 0.3
    assert agree >= 18


def test_int8_conv_chain_engine_close_to_float_source() -> None:
    # conv/depthwise/fully-connected/reshape only: the int8 kernels the engine has first
    keras.utils.set_random_seed(1)
    x = keras.Input((12, 12, 3))
    y = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    y = L.DepthwiseConv2D(3, strides=2, activation="relu6")(y)
    y = L.Conv2D(8, 1)(y)
    m = keras.Model(x, L.Dense(10)(L.Flatten()(y)))
    tm = convert(m, quantize="int8", calibration=rand((32, 1, 12, 12, 3), 1))
    assert set(tm.report.ops_after) == {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED",
                                        "RESHAPE", "QUANTIZE", "DEQUANTIZE"}
    errs, agree = _against_keras(m, tm, rand((20, 1, 12, 12, 3), 2))
    assert np.median(errs) < 0.05 and max(errs) < 0.3  # (see the test above on outliers)
    assert agree >= 18


# --------------------------------------------- pools, concat, pad and activations in int8


def _mixed_block(seed: int = 0) -> keras.Model:
    """Zero padding, conv + hard-swish, SE (sigmoid), tanh branch, concat, pools, dense."""
    keras.utils.set_random_seed(seed)
    x = keras.Input((12, 12, 3))
    y = L.Conv2D(8, 3, strides=2, activation="hard_swish")(x)
    d = L.DepthwiseConv2D(3, padding="same")(y)
    d = L.Activation("hard_swish")(d)
    se = L.GlobalAveragePooling2D(keepdims=True)(d)
    se = L.Conv2D(8, 1, activation="sigmoid")(se)
    d = L.Multiply()([d, se])
    t = L.Conv2D(4, 1, activation="tanh")(y)
    c = L.Concatenate()([d, t, y])
    c = L.ZeroPadding2D(((0, 1), (1, 0)))(c)  # a PAD before a pool stays a PAD
    c = L.MaxPooling2D(2)(c)
    c = L.AveragePooling2D(2, padding="same")(c)
    c = L.Flatten()(c)
    return keras.Model(x, L.Dense(10)(L.Dense(16, activation="relu6")(c)))


def test_fused_activations_split_into_int8_ops_with_pre_activation_ranges() -> None:
    gb = GraphBuilder()
    x = gb.input("x", (1, 6, 6, 2))
    c = gb.node(OpType.CONV_2D, [x, gb.const("w", rand((4, 3, 3, 2), 1)), None], "c",
                {"pads": (1, 1, 1, 1)}, Activation.HARD_SWISH)
    s = gb.node(OpType.FULLY_CONNECTED, [gb.node(OpType.RESHAPE, [c], "r", shape=(1, 144)),
                                         gb.const("fw", rand((3, 144), 2)), None], "s",
                act=Activation.SIGMOID)
    g = gb.graph(s)
    r = tensor_ranges(g, [rand((1, 6, 6, 2), k, -2, 2) for k in range(4)])
    pre = r["c:pre_activation"]
    assert pre[0] < r["c"][0] and r["c"][0] >= -0.375  # hard-swish's minimum is -3/8
    q = quantize_int8(g, r)
    assert q.op_counts() == {"QUANTIZE": 1, "CONV_2D": 1, "HARD_SWISH": 1, "RESHAPE": 1,
                             "FULLY_CONNECTED": 1, "LOGISTIC": 1, "DEQUANTIZE": 1}
    conv = next(n for n in q.nodes if n.op == OpType.CONV_2D)
    assert conv.activation == Activation.NONE
    mid = q.tensors[conv.outputs[0]]
    lo, hi = min(pre[0], 0), max(pre[1], 0)
    assert mid.dtype == DType.INT8 and abs(mid.quant.scale[0] - (hi - lo) / 255) < 1e-9
    lg = next(n for n in q.nodes if n.op == OpType.LOGISTIC)
    assert q.tensors[lg.outputs[0]].quant == ir.Quantization((1 / 256,), (-128,))
    # without pre-activation ranges (e.g. a plan keyed by layer) the node stays float
    q2 = quantize_int8(g, {k: v for k, v in r.items() if not k.endswith(":pre_activation")})
    assert q2.op_counts()["CONV_2D"] == 1 and "HARD_SWISH" not in q2.op_counts()
    assert q2.tensors[next(n for n in q2.nodes if n.op == OpType.CONV_2D).outputs[0]].dtype \
        == DType.FLOAT32


def test_int8_pools_concat_pad_activations_run_end_to_end() -> None:
    m = _mixed_block()
    cal = rand((32, 1, 12, 12, 3), 1)
    tm = convert(m, quantize="int8", calibration=cal)
    ops = tm.report.ops_after
    for op in ("PAD", "HARD_SWISH", "LOGISTIC", "TANH", "CONCATENATION", "MAX_POOL_2D",
               "AVERAGE_POOL_2D"):
        assert ops.get(op, 0) >= 1, (op, ops)
    assert ops["QUANTIZE"] == 1 and ops["DEQUANTIZE"] == 1  # the whole body runs in int8
    floats = [t.name for t in tm.graph.tensors.values()
              if t.dtype == DType.FLOAT32 and not t.is_constant]
    assert sorted(floats) == sorted(tm.graph.inputs + tm.graph.outputs)
    errs, agree = _against_keras(m, tm, rand((20, 1, 12, 12, 3), 2))
    assert np.median(errs) < 0.08 and agree >= 17, (np.median(errs), max(errs), agree)


@pytest.mark.slow
def test_mobilenet_v3_small_ptq_runs_int8_end_to_end() -> None:
    keras.utils.set_random_seed(0)
    m = keras.applications.MobileNetV3Small(input_shape=(96, 96, 3), weights=None,
                                            include_preprocessing=False,
                                            classifier_activation=None)
    rng = np.random.default_rng(0)
    for layer in m.layers:  # non-trivial BN statistics, so logits are not flat
        if isinstance(layer, L.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.1, c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
    tm = convert(m, quantize="int8", calibration=rand((32, 1, 96, 96, 3), 1))
    ops = tm.report.ops_after
    assert ops["QUANTIZE"] == 1 and ops["DEQUANTIZE"] == 1 and ops["HARD_SWISH"] >= 10
    errs, agree = _against_keras(m, tm, rand((20, 1, 96, 96, 3), 2))
    assert np.median(errs) < 0.05 and agree >= 18, (np.median(errs), agree)


# ----------------------------------------------- ELU, GELU, LEAKY_RELU and PRELU in int8


def _alpha_block(seed: int = 0, elu_alpha: float = 1.0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    x = keras.Input((10, 10, 3))
    y = L.Conv2D(8, 3, padding="same")(x)
    y = L.PReLU(alpha_initializer=keras.initializers.RandomUniform(-0.3, 0.6),
                shared_axes=[1, 2])(y)
    y = L.ELU(alpha=elu_alpha)(L.DepthwiseConv2D(3, padding="same")(y))
    y = L.LeakyReLU(0.2)(L.Conv2D(8, 1)(y))
    y = L.Activation("gelu")(L.Conv2D(6, 3, strides=2)(y))
    y = L.PReLU(alpha_initializer=keras.initializers.RandomUniform(0.0, 0.5))(
        L.Dense(12)(L.Flatten()(y)))
    return keras.Model(x, L.Dense(10)(y))


def test_alpha_activations_lower_to_int8_ops_close_to_float() -> None:
    m = _alpha_block()
    tm = convert(m, quantize="int8", calibration=rand((32, 1, 10, 10, 3), 1))
    ops = tm.report.ops_after
    for op in ("PRELU", "ELU", "LEAKY_RELU", "GELU"):
        node = next(n for n in tm.graph.nodes if n.op.name == op)
        assert all(tm.graph.tensors[t].dtype == DType.INT8 for t in node.inputs + node.outputs), op
    assert ops["QUANTIZE"] == 1 and ops["DEQUANTIZE"] == 1 and ops["PRELU"] == 2, ops
    # PRELU's constant slope: symmetric per tensor, as TensorFlow's converter quantizes it
    for p in (n for n in tm.graph.nodes if n.op == OpType.PRELU):
        slope = tm.graph.tensors[p.inputs[1]]
        assert slope.is_constant and slope.quant.zero_point == (0,) and len(slope.quant.scale) == 1
        assert int(np.abs(slope.data).max()) == 127
    errs, agree = _against_keras(m, tm, rand((20, 1, 10, 10, 3), 2))
    assert np.median(errs) < 0.05 and agree >= 17, (np.median(errs), max(errs), agree)


def test_elu_with_alpha_other_than_one_stays_float() -> None:
    # TFLite's int8 ELU has no alpha: ELU(alpha=0.5) runs in float32 between int8 neighbours
    m = _alpha_block(elu_alpha=0.5)
    tm = convert(m, quantize="int8", calibration=rand((16, 1, 10, 10, 3), 1))
    elu = next(n for n in tm.graph.nodes if n.op == OpType.ELU)
    assert tm.graph.tensors[elu.inputs[0]].dtype == DType.FLOAT32
    assert tm.report.ops_after["QUANTIZE"] == 2 and tm.report.ops_after["DEQUANTIZE"] == 2
    x_ = rand((1, 10, 10, 3), 3)
    assert rel_err(engine_run(tm.to_bytes(), x_), np.asarray(m(x_))) < 0.1


# ------------------------------------------------- BATCH_MATMUL, MAXIMUM, MINIMUM (PTQ)


def _same_quant(tm, node: ir.Node) -> bool:
    qs = {tm.graph.tensors[t].quant for t in node.inputs + node.outputs}
    return len(qs) == 1 and all(tm.graph.tensors[t].dtype == DType.INT8
                                for t in node.inputs + node.outputs)


class _Matmul(L.Layer):
    def call(self, a, b):
        return keras.ops.matmul(a, keras.ops.swapaxes(b, -1, -2))


def test_matmul_maximum_minimum_lower_to_int8_close_to_float() -> None:
    """tether's PTQ of a TFLite float file: a Keras block with keras.ops.matmul of two computed tensors, Maximum and
    Minimum of conv branches and keras.ops.maximum with a constant runs int8 end to end; each
    MAXIMUM/MINIMUM's inputs and output share its output's quantization, written so by the
    producers (no requantization, as TensorFlow's quantizer propagates it)."""
    keras.utils.set_random_seed(2)
    x = keras.Input((6, 6, 4))
    a = L.Conv2D(5, 3, padding="same")(x)
    b = L.Conv2D(5, 1)(x)
    y = L.Maximum()([a, b])
    y = L.Minimum()([y, L.Conv2D(5, 1)(x)])
    q = L.Reshape((36, 5))(y)
    k = L.Reshape((36, 5))(L.Conv2D(5, 1)(x))
    s = _Matmul()(q, k)  # [36, 36]
    y = keras.ops.maximum(L.Dense(8)(s), -0.25)
    m = keras.Model(x, L.Dense(4)(L.Flatten()(y)))
    pytest.importorskip("tensorflow")
    from tether.peers import keras_to_tflite

    # TensorFlow's float file (tether's Keras frontend has no Maximum layer), quantized by tether
    tm = convert(keras_to_tflite(m), quantize="int8", calibration=rand((64, 1, 6, 6, 4), 1))
    ops = tm.report.ops_after
    assert ops["QUANTIZE"] == 1 and ops["DEQUANTIZE"] == 1, ops
    assert ops["MAXIMUM"] == 2 and ops["MINIMUM"] == 1 and ops["BATCH_MATMUL"] == 1, ops
    for n in tm.graph.nodes:
        if n.op in (OpType.MAXIMUM, OpType.MINIMUM):
            assert _same_quant(tm, n), n.describe()
        if n.op == OpType.BATCH_MATMUL:
            assert all(tm.graph.tensors[t].dtype == DType.INT8 for t in n.inputs + n.outputs)
            assert n.attrs["adjoint"] == (0, 1), n.attrs
    errs = [rel_err(engine_run(tm.to_bytes(), x_), np.asarray(m(x_)))
            for x_ in rand((10, 1, 6, 6, 4), 2)]
    assert np.median(errs) < 0.05 and max(errs) < 0.1, (np.median(errs), max(errs))


def test_onnx_variadic_max_min_share_one_quantization() -> None:
    """ONNX Max/Min over three inputs (a chain of MAXIMUM / MINIMUM) quantized by tether: the
    chain shares the last op's quantization; a constant is quantized with it; an input that
    other ops read too is requantized once (int8 -> int8 QUANTIZE); close to onnxruntime."""
    from onnx import helper as h
    from onnx_testlib import model, ort_run

    m = model([h.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
               h.make_node("MatMul", ["x", "t"], ["s"]),
               h.make_node("Max", ["s", "x2", "k"], ["mx"]),
               h.make_node("Min", ["mx", "s", "k2"], ["y"])], (2, 4, 6), None,
              {"x2": rand((2, 4, 4), 5), "k": np.float32(-0.5), "k2": np.float32(2.0)})
    tm = convert(m, quantize="int8",
                 calibration=np.stack([rand((2, 4, 6), s) for s in range(64)]))
    ops = tm.report.ops_after
    assert ops == {"QUANTIZE": 2, "BATCH_MATMUL": 1, "MAXIMUM": 2, "MINIMUM": 2,
                   "DEQUANTIZE": 1}, ops
    shared = [n for n in tm.graph.nodes if n.op in (OpType.MAXIMUM, OpType.MINIMUM)]
    assert all(_same_quant(tm, n) for n in shared)
    assert len({tm.graph.tensors[n.outputs[0]].quant for n in shared}) == 1
    (req,) = [n for n in tm.graph.nodes if n.op == OpType.QUANTIZE
              and tm.graph.tensors[n.inputs[0]].dtype == DType.INT8]
    assert req.inputs[0] == next(n for n in tm.graph.nodes
                                 if n.op == OpType.BATCH_MATMUL).outputs[0]
    errs = [rel_err(engine_run(tm.to_bytes(), x_), ort_run(m, x_))
            for x_ in (rand((2, 4, 6), 100 + s) for s in range(8))]
    assert max(errs) < 0.03, errs
