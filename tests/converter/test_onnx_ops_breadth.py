"""ONNX ops real models use, at the oldest opset that defines them (within 7..) and the newest:
LeakyRelu, Elu, Selu, PRelu, variadic Sum/Max/Min/Mean, Dropout and Identity, Slice and Split
(on graph inputs and on tensors the importer holds channels-last).

Each model is built with onnx.helper, converted, run in the engine and in onnxruntime (graph
optimizations disabled) on seeded inputs; outputs agree within 1e-4 relative.
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

TOL = 1e-4
NEWEST = onnx.defs.onnx_opset_version()
X_SHAPE = (2, 3, 5, 4)  # NCHW


def _model(nodes, inputs, y_shape, inits, opset):
    g = h.make_graph(nodes, "ops",
                     [h.make_tensor_value_info(k, TensorProto.FLOAT, list(s))
                      for k, s in inputs.items()],
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, list(y_shape))],
                     [numpy_helper.from_array(np.asarray(v, np.float32), k)
                      for k, v in inits.items()])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 7 if opset >= 13 else 4
    return m


def _run_both(m, feeds):
    import onnxruntime as ort

    from tether.device import Engine

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ref = s.run(None, feeds)[0]
    tm = convert(m)
    eng = Engine(tm.to_bytes())
    names = [t.name for t in tm.report.inputs]
    y = np.asarray(eng.run({n: feeds[n] for n in names}))
    return tm, y, ref


def _unary_case(op, attrs):
    return [h.make_node(op, ["x"], ["y"], name=op.lower(), **attrs)], {}


UNARY = [  # (op, attributes, oldest opset in range)
    ("LeakyRelu", {}, 7), ("LeakyRelu", {"alpha": 0.2}, 7),
    ("Elu", {}, 7), ("Elu", {"alpha": 0.7}, 7),
    ("Selu", {}, 7), ("Selu", {"alpha": 1.5, "gamma": 0.9}, 7),
    ("Identity", {}, 7),
]


@pytest.mark.parametrize("op, attrs, oldest", UNARY, ids=lambda v: str(v))
@pytest.mark.parametrize("newest", [False, True], ids=["oldest", "newest"])
def test_unary_activations(op, attrs, oldest, newest) -> None:
    nodes, inits = _unary_case(op, attrs)
    m = _model(nodes, {"x": X_SHAPE}, X_SHAPE, inits, NEWEST if newest else oldest)
    x = rand(X_SHAPE, 11, -4, 4)
    tm, y, ref = _run_both(m, {"x": x})
    assert y.shape == ref.shape and y.dtype == np.float32
    assert rel_err(y, ref) < TOL, (op, np.abs(y - ref).max())
    expected = {"LeakyRelu": "LEAKY_RELU", "Elu": "ELU", "Selu": "ELU"}.get(op)
    if expected:
        assert expected in tm.report.ops_after
    else:
        assert "IDENTITY" not in tm.report.ops_after  # dropped, not a copy op


@pytest.mark.parametrize("opset", [7, 9, 12, NEWEST])
def test_dropout_in_inference_is_dropped(opset) -> None:
    attrs = {"ratio": 0.4} if opset < 12 else {}
    nodes = [h.make_node("Relu", ["x"], ["r"]),
             h.make_node("Dropout", ["r"], ["d", "mask"], name="drop", **attrs),
             h.make_node("Elu", ["d"], ["y"])]
    m = _model(nodes, {"x": X_SHAPE}, X_SHAPE, {}, opset)
    x = rand(X_SHAPE, 12, -2, 2)
    tm, y, ref = _run_both(m, {"x": x})
    assert rel_err(y, ref) < TOL
    assert set(tm.report.ops_after) <= {"RELU", "ELU", "TRANSPOSE", "RESHAPE"}, tm.report


@pytest.mark.parametrize("slope_shape", [(3, 1, 1), (1,), (5, 4)])
@pytest.mark.parametrize("opset", [7, NEWEST])
def test_prelu_per_channel_and_broadcast_slopes(slope_shape, opset) -> None:
    # a conv feeds the PRelu, so x is held NHWC and the [C,1,1] slope is re-laid out
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             h.make_node("PRelu", ["c", "slope"], ["y"], name="prelu")]
    inits = {"w": rand((3, 3, 3, 3), 13, -0.5, 0.5), "slope": rand(slope_shape, 14, 0.05, 0.5)}
    m = _model(nodes, {"x": X_SHAPE}, X_SHAPE, inits, opset)
    tm, y, ref = _run_both(m, {"x": rand(X_SHAPE, 15)})
    assert rel_err(y, ref) < TOL
    assert "PRELU" in tm.report.ops_after


VARIADIC = ["Sum", "Max", "Min", "Mean"]


@pytest.mark.parametrize("op", VARIADIC)
@pytest.mark.parametrize("count", [1, 2, 4])
def test_variadic_same_shape_at_opset_7(op, count) -> None:
    names = [f"x{i}" for i in range(count)]
    m = _model([h.make_node(op, names, ["y"], name=op.lower())],
               {n: X_SHAPE for n in names}, X_SHAPE, {}, 7)
    feeds = {n: rand(X_SHAPE, 20 + i, -3, 3) for i, n in enumerate(names)}
    _, y, ref = _run_both(m, feeds)
    assert rel_err(y, ref) < TOL


@pytest.mark.parametrize("op", VARIADIC)
def test_variadic_broadcasting_with_constants_at_newest(op) -> None:
    # Sum(conv(x), per-channel constant, x) with numpy broadcasting (opset 8 and later)
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             h.make_node(op, ["c", "k", "x"], ["y"], name=op.lower())]
    inits = {"w": rand((3, 3, 3, 3), 16, -0.5, 0.5), "k": rand((3, 1, 1), 17)}
    m = _model(nodes, {"x": X_SHAPE}, X_SHAPE, inits, NEWEST)
    _, y, ref = _run_both(m, {"x": rand(X_SHAPE, 18)})
    assert rel_err(y, ref) < TOL


def test_max_min_propagate_nan_as_onnxruntime() -> None:
    names = ["a", "b"]
    for op in ("Max", "Min"):
        m = _model([h.make_node(op, names, ["y"])], {n: (1, 4) for n in names}, (1, 4), {},
                   NEWEST)
        a = np.array([[np.nan, 1.0, -2.0, 3.0]], np.float32)
        b = np.array([[0.0, np.nan, 5.0, -3.0]], np.float32)
        _, y, ref = _run_both(m, {"a": a, "b": b})
        np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
        np.testing.assert_array_equal(y[~np.isnan(y)], ref[~np.isnan(ref)])


@pytest.mark.parametrize("attrs", [{"size": 5}, {"size": 3, "alpha": 0.5, "beta": 0.6,
                                                "bias": 2.0}, {"size": 1, "alpha": 1e-3}])  # ORT: odd sizes
@pytest.mark.parametrize("opset", [7, NEWEST])
def test_lrn(attrs, opset) -> None:
    shape = (1, 7, 4, 3)
    m = _model([h.make_node("LRN", ["x"], ["y"], name="lrn", **attrs)], {"x": shape}, shape,
               {}, opset)
    tm, y, ref = _run_both(m, {"x": rand(shape, 30, -4, 4)})
    assert rel_err(y, ref) < TOL
    assert "LRN" in tm.report.ops_after


# ------------------------------------------------------------------ classic CNNs, opset 7-9


def _classic_cnn(opset: int) -> onnx.ModelProto:
    """AlexNet/GoogLeNet-style: conv, ReLU, LRN, a Sum residual, MaxPool, Dropout with its
    mask, Flatten, Gemm, and Softmax with the pre-13 axis (its 2-D coercion), as old
    exporters wrote them (IR 3, initializers listed as inputs)."""
    inits = {"w1": rand((6, 3, 3, 3), 40, -0.5, 0.5), "b1": rand((6,), 41),
             "w2": rand((6, 6, 3, 3), 42, -0.3, 0.3), "b2": rand((6,), 43),
             "fw": rand((10, 6 * 4 * 4), 44, -0.2, 0.2), "fb": rand((10,), 45)}
    nodes = [h.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             h.make_node("LRN", ["r1"], ["n1"], size=5, alpha=1e-2, beta=0.75, name="norm1"),
             h.make_node("Conv", ["n1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             h.make_node("Sum", ["c2", "n1", "r1"], ["s"], name="residual"),
             h.make_node("MaxPool", ["s"], ["p"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1], name="pool"),
             h.make_node("Dropout", ["p"], ["d", "mask"], name="drop",
                         **({"ratio": 0.5} if opset < 12 else {})),
             h.make_node("Flatten", ["d"], ["f"], name="flatten"),
             h.make_node("Gemm", ["f", "fw", "fb"], ["g"], transB=1, name="fc"),
             h.make_node("Reshape", ["g", "shape"], ["g4"], name="to4d"),
             h.make_node("Softmax", ["g4"], ["y"], axis=1, name="prob")]
    inits["shape"] = np.array([1, 2, 5, 1], np.int64)
    inputs = [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])]
    inputs += [h.make_tensor_value_info(k, TensorProto.INT64 if k == "shape" else
                                        TensorProto.FLOAT, list(v.shape))
               for k, v in inits.items()]
    g = h.make_graph(nodes, "classic", inputs,
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 5, 1])],
                     [numpy_helper.from_array(v if k == "shape" else v.astype(np.float32), k)
                      for k, v in inits.items()])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 3
    return m


@pytest.mark.parametrize("opset", [7, 8, 9])
def test_classic_cnn_at_old_opsets_converts_and_matches(opset) -> None:
    m = _classic_cnn(opset)
    x = rand((1, 3, 8, 8), 46)
    tm, y, ref = _run_both(m, {"x": x})
    assert y.shape == ref.shape == (1, 2, 5, 1)
    assert rel_err(y, ref) < TOL
    # Softmax with axis=1 before opset 13 normalizes over all 10 values, not over axis 1
    np.testing.assert_allclose(y.sum(), 1.0, rtol=1e-5)
    assert f"onnx opset {opset} -> 13 upgraded" in str(tm.report)
    assert {"LRN", "MAX_POOL_2D", "FULLY_CONNECTED", "SOFTMAX"} <= set(tm.report.ops_after)


def test_unsupported_op_still_names_node_op_and_supported_list() -> None:
    m = _model([h.make_node("Relu", ["x"], ["r"]), h.make_node("Sin", ["r"], ["y"],
                                                                name="the_sin")],
               {"x": (1, 4)}, (1, 4), {}, 9)
    from tether.errors import ConversionError

    with pytest.raises(ConversionError, match=r"node 'the_sin' \(Sin\): op Sin is not "
                                              r"supported; supported ops: .*LRN.*PRelu"):
        convert(m)


def _ints_init(name, values):
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


SLICES = [  # (starts, ends, axes, steps): logical NCHW axes
    ([0, 1], [2, 3], [1, 2], None),
    ([1, -4], [1000, -1], [1, 3], None),             # clamped end, negative bounds
    ([0, 0, 1], [2, 5, 4], [0, 2, 3], [1, 2, 2]),    # steps
    ([-2], [-1], [-1], None),
    ([-1], [-2**63], [3], [-1]),                     # reversed (x[..., ::-1])
    ([4, 3], [0, -100], [2, 1], [-2, -1]),           # backwards with a stride, clamped end
]


@pytest.mark.parametrize("starts, ends, axes, steps", SLICES, ids=lambda v: str(v))
@pytest.mark.parametrize("opset", [7, 10, NEWEST], ids=["opset7", "opset10", "newest"])
@pytest.mark.parametrize("after_conv", [False, True], ids=["input", "after_conv"])
def test_slice(starts, ends, axes, steps, opset, after_conv) -> None:
    if opset < 10 and steps is not None:
        pytest.skip("Slice has steps from opset 10")
    inits = {}
    src = "x"
    nodes = []
    if after_conv:  # a tensor the importer holds channels-last
        inits["w"] = rand((3, 3, 1, 1), 3, -1, 1)
        nodes.append(h.make_node("Conv", ["x", "w"], ["c"], name="conv"))
        src = "c"
    if opset < 10:
        nodes.append(h.make_node("Slice", [src], ["y"], name="slice", starts=starts, ends=ends,
                                 axes=axes))
        extra = []
    else:
        names = ["starts", "ends", "axes"] + (["steps"] if steps is not None else [])
        nodes.append(h.make_node("Slice", [src] + names, ["y"], name="slice"))
        extra = [_ints_init(k, v) for k, v in zip(names, [starts, ends, axes, steps])]
    ref_x = np.zeros(X_SHAPE)
    index = [slice(None)] * 4
    for s, e, a, st in zip(starts, ends, axes, steps or [1] * len(starts)):
        index[a] = slice(s, e, st)
    y_shape = ref_x[tuple(index)].shape
    m = _model(nodes, {"x": X_SHAPE}, y_shape, inits, opset)
    m.graph.initializer.extend(extra)
    x = rand(X_SHAPE, 5, -2, 2)
    tm, y, ref = _run_both(m, {"x": x})
    assert y.shape == ref.shape == y_shape
    assert rel_err(y, ref) < TOL
    assert "SLICE" in tm.report.ops_after


@pytest.mark.parametrize("opset", [7, 13, NEWEST], ids=["opset7", "opset13", "newest"])
def test_split_into_parts_that_meet_again(opset) -> None:
    # x (N, 3, H, W) split on channels 1 + 2 after a conv (held channels-last), the parts
    # through different ops, concatenated back in the other order
    inits = {"w": rand((3, 3, 1, 1), 4, -1, 1)}
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], name="conv")]
    extra = []
    if opset < 13:
        nodes.append(h.make_node("Split", ["c"], ["a", "b"], name="split", axis=1, split=[1, 2]))
    else:
        nodes.append(h.make_node("Split", ["c", "sizes"], ["a", "b"], name="split", axis=1))
        extra = [_ints_init("sizes", [1, 2])]
    nodes += [h.make_node("Relu", ["a"], ["ra"], name="relu"),
              h.make_node("Sigmoid", ["b"], ["sb"], name="sigmoid"),
              h.make_node("Concat", ["sb", "ra"], ["y"], name="concat", axis=1)]
    m = _model(nodes, {"x": X_SHAPE}, X_SHAPE[:1] + (3,) + X_SHAPE[2:], inits, opset)
    m.graph.initializer.extend(extra)
    tm, y, ref = _run_both(m, {"x": rand(X_SHAPE, 6, -2, 2)})
    assert y.shape == ref.shape and rel_err(y, ref) < TOL
    assert tm.report.ops_after["SLICE"] == 2


@pytest.mark.parametrize("opset, axis, attrs", [
    (13, 3, {}),                    # no sizes: equal parts
    (18, 2, {"num_outputs": 2}),    # opset 18: 5 rows as 3 + 2
], ids=["equal", "num_outputs"])
def test_split_without_sizes(opset, axis, attrs) -> None:
    if opset > NEWEST:
        pytest.skip(f"the installed onnx defines opsets up to {NEWEST}")
    nodes = [h.make_node("Split", ["x"], ["a", "b"], name="split", axis=axis, **attrs),
             h.make_node("Mul", ["a", "a"], ["aa"], name="mul"),
             h.make_node("Concat", ["b", "aa"], ["y"], name="concat", axis=axis)]
    m = _model(nodes, {"x": X_SHAPE}, X_SHAPE, {}, opset)
    tm, y, ref = _run_both(m, {"x": rand(X_SHAPE, 7, -2, 2)})
    assert y.shape == ref.shape == X_SHAPE and rel_err(y, ref) < TOL


@pytest.mark.parametrize("node, says", [
    (h.make_node("Slice", ["x", "s", "e", "a", "zero"], ["y"], name="bad_slice"),
     "step 0 on axis 3"),
    (h.make_node("Split", ["x"], ["y", "z"], name="bad_split", axis=2), "does not split into 2"),
])
def test_slice_and_split_refuse_what_they_cannot_do(node, says) -> None:
    from tether.errors import ConversionError

    m = _model([node], {"x": X_SHAPE}, X_SHAPE, {}, NEWEST if node.op_type == "Slice" else 13)
    m.graph.initializer.extend([_ints_init("s", [3]), _ints_init("e", [0]),
                                _ints_init("a", [3]), _ints_init("zero", [0])])
    with pytest.raises(ConversionError, match=says) as info:
        convert(m)
    assert node.name in str(info.value)


def test_split_stays_int8_and_keeps_its_quantization() -> None:
    from tether.device import Engine

    inits = {"w": rand((4, 3, 1, 1), 8, -1, 1), "w2": rand((4, 4, 1, 1), 9, -1, 1)}
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             h.make_node("Split", ["c", "sizes"], ["a", "b"], name="split", axis=1),
             h.make_node("Concat", ["b", "a"], ["d"], name="concat", axis=1),
             h.make_node("Conv", ["d", "w2"], ["y"], name="conv2")]
    shape = (1,) + X_SHAPE[1:]
    m = _model(nodes, {"x": shape}, (1, 4) + X_SHAPE[2:], inits, 13)
    m.graph.initializer.extend([_ints_init("sizes", [1, 3])])
    calib = rand((32,) + shape, 10, -2, 2)
    tm = convert(m, quantize="int8", calibration=calib)
    slices = [n for n in tm.graph.nodes if n.op.name == "SLICE"]
    assert len(slices) == 2
    for n in slices:  # int8 in, int8 out, the same scale and zero point
        x, y = tm.graph.tensors[n.inputs[0]], tm.graph.tensors[n.outputs[0]]
        assert x.dtype.name == y.dtype.name == "INT8" and x.quant == y.quant
    x = rand(shape, 11, -2, 2)
    float_y = np.asarray(Engine(convert(m).to_bytes()).run(x))
    int8_y = np.asarray(Engine(tm.to_bytes()).run(x))
    assert np.abs(int8_y - float_y).max() < 0.05 * np.abs(float_y).max()
