"""BATCH_MATMUL (op 38) from ONNX MatMul and TFLite BATCH_MATMUL.

ONNX MatMul at opset 7 (upgraded by the frontend) and the newest: both operands computed (3-D,
4-D), batch dims that broadcast ([2,1,M,K]·[1,3,K,N], [B,M,K]·[K,N] with B computed), a
constant B with batch dims, 1-D A and 1-D B (numpy's prepended / appended 1), a Transpose
feeding B folded into adjoint, and an attention block (Q·Kᵀ, Softmax, ·V); a constant 2-D B
still lowers to FULLY_CONNECTED. TFLite: tf.function / Keras models whose matmuls TensorFlow's
converter writes as BATCH_MATMUL (adj_x, adj_y). Each is converted, run in the engine and in
onnxruntime (graph optimizations disabled) or LiteRT on seeded inputs: within 1e-4 relative.
A shape mismatch names the node.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper
from onnx_testlib import convert_and_compare, model, rand, rel_err
from tether.converter import convert
from tether.converter._internal import ir
from tether.converter._internal.ops import OpType
from tether.device import Engine

from tether.errors import ConversionError

TOL = 1e-4
NEWEST = onnx.defs.onnx_opset_version()
OPSETS = pytest.mark.parametrize("opset", [7, NEWEST], ids=["opset7", "newest"])
PARITY: dict[str, float] = {}  # case -> worst relative error


def _two_input_model(nodes, shapes: dict[str, tuple[int, ...]], opset: int,
                     inits: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """Graph inputs `shapes` (float), output `y` from onnx shape inference."""
    g = h.make_graph(list(nodes), "g",
                     [h.make_tensor_value_info(k, TensorProto.FLOAT, list(v))
                      for k, v in shapes.items()], [],
                     [numpy_helper.from_array(np.asarray(v), k)
                      for k, v in (inits or {}).items()])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(m)
    (vi,) = [v for v in inferred.graph.value_info if v.name == "y"]
    m.graph.output.append(vi)
    return m


def _compare_feeds(m: onnx.ModelProto, feeds: dict[str, np.ndarray], label: str):
    """The engine against onnxruntime (optimizations off) on several named inputs."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ref = sess.run(None, feeds)[0]
    tm = convert(m)
    with Engine(tm.to_bytes()) as engine:
        y = np.asarray(engine.run(feeds))
    assert y.shape == ref.shape and y.dtype == np.float32, (label, y.shape, ref.shape)
    err = rel_err(y, ref)
    PARITY[label] = max(PARITY.get(label, 0.0), err)
    assert err < TOL, (label, np.abs(y - ref).max())
    return tm


# (A shape, B shape): both computed graph inputs
RUNTIME_CASES = [
    ((2, 5, 7), (2, 7, 3)),
    ((2, 3, 4, 6), (2, 3, 6, 5)),
    ((2, 1, 4, 6), (1, 3, 6, 5)),     # both broadcast
    ((3, 4, 9), (9, 17)),             # [B,M,K]·[K,N], B computed
    ((6, 8), (2, 3, 8, 5)),           # A broadcast over B's batch
    ((1, 19, 33), (1, 33, 21)),       # crosses the GEMM tiles
]


@OPSETS
@pytest.mark.parametrize("sa, sb", RUNTIME_CASES, ids=[f"{a}x{b}" for a, b in RUNTIME_CASES])
def test_onnx_matmul_of_two_computed_tensors(opset, sa, sb) -> None:
    m = _two_input_model([h.make_node("MatMul", ["a", "b"], ["y"], name="mm")],
                         {"a": sa, "b": sb}, opset)
    tm = _compare_feeds(m, {"a": rand(sa, 1), "b": rand(sb, 2)}, f"runtime {sa}x{sb}")
    assert tm.report.ops_after == {"BATCH_MATMUL": 1}, tm.report.ops_after


@OPSETS
def test_onnx_matmul_constant_b_with_batch_dims(opset) -> None:
    inits = {"w": rand((3, 6, 5), 3)}
    m = model([h.make_node("MatMul", ["x", "w"], ["y"], name="mm")], (3, 4, 6), None, inits,
              opset=opset)
    tm, y, ref, err = convert_and_compare(m, rand((3, 4, 6), 4), "const-b-batch", PARITY)
    assert err < TOL
    assert tm.report.ops_after == {"BATCH_MATMUL": 1}, tm.report.ops_after


@OPSETS
def test_onnx_matmul_constant_a(opset) -> None:
    inits = {"w": rand((4, 6), 3)}
    m = model([h.make_node("MatMul", ["w", "x"], ["y"], name="mm")], (2, 6, 5), None, inits,
              opset=opset)
    tm, _, _, err = convert_and_compare(m, rand((2, 6, 5), 4), "const-a", PARITY)
    assert err < TOL
    assert tm.report.ops_after == {"BATCH_MATMUL": 1}, tm.report.ops_after


@OPSETS
def test_onnx_matmul_constant_2d_b_stays_fully_connected(opset) -> None:
    m = model([h.make_node("MatMul", ["x", "w"], ["y"])], (2, 4, 6), None,
              {"w": rand((6, 5), 3)}, opset=opset)
    tm, _, _, err = convert_and_compare(m, rand((2, 4, 6), 4), "fc", PARITY)
    assert err < TOL
    assert tm.report.ops_after == {"FULLY_CONNECTED": 1}, tm.report.ops_after


# (A shape, B shape) with a 1-D operand
ONE_D_CASES = [
    ((6,), (2, 6, 5)),     # 1-D A: [6] -> [1, 6], the 1 dropped: [2, 5]
    ((2, 4, 6), (6,)),     # 1-D B: [6] -> [6, 1], the 1 dropped: [2, 4]
    ((3, 6), (6,)),
    ((6,), (6,)),          # a dot product: []
]


@OPSETS
@pytest.mark.parametrize("sa, sb", ONE_D_CASES, ids=[f"{a}x{b}" for a, b in ONE_D_CASES])
def test_onnx_matmul_one_d_operands(opset, sa, sb) -> None:
    m = _two_input_model([h.make_node("MatMul", ["a", "b"], ["y"], name="mm")],
                         {"a": sa, "b": sb}, opset)
    tm = _compare_feeds(m, {"a": rand(sa, 5), "b": rand(sb, 6)}, f"1-D {sa}x{sb}")
    assert tm.report.ops_after.get("BATCH_MATMUL") == 1, tm.report.ops_after


@OPSETS
def test_onnx_transpose_into_b_becomes_adjoint(opset) -> None:
    nodes = [h.make_node("Transpose", ["b"], ["bt"], perm=[0, 2, 1]),
             h.make_node("MatMul", ["a", "bt"], ["y"], name="mm")]
    m = _two_input_model(nodes, {"a": (2, 5, 8), "b": (2, 7, 8)}, opset)
    tm = _compare_feeds(m, {"a": rand((2, 5, 8), 7), "b": rand((2, 7, 8), 8)}, "adj-b")
    assert tm.report.ops_after == {"BATCH_MATMUL": 1}, tm.report.ops_after  # no TRANSPOSE


@OPSETS
def test_onnx_attention_block(opset) -> None:
    """softmax(Q·Kᵀ / √d)·V over [batch, heads, seq, d] from one input through projections."""
    b, heads, seq, d = 1, 2, 6, 4
    e = heads * d
    inits = {"wq": rand((e, e), 11, -0.5, 0.5), "wk": rand((e, e), 12, -0.5, 0.5),
             "wv": rand((e, e), 13, -0.5, 0.5), "shape": np.array([b, seq, heads, d], np.int64),
             "scale": np.array(1 / np.sqrt(d), np.float32),
             "out_shape": np.array([b, seq, e], np.int64)}
    nodes = []
    for p in "qkv":
        nodes += [h.make_node("MatMul", ["x", f"w{p}"], [f"{p}0"]),
                  h.make_node("Reshape", [f"{p}0", "shape"], [f"{p}1"]),
                  h.make_node("Transpose", [f"{p}1"], [p],
                              perm=[0, 2, 3, 1] if p == "k" else [0, 2, 1, 3])]
    nodes += [h.make_node("MatMul", ["q", "k"], ["s0"], name="qk"),
              h.make_node("Mul", ["s0", "scale"], ["s"]),
              h.make_node("Softmax", ["s"], ["p"], axis=3),  # the last axis at every opset
              h.make_node("MatMul", ["p", "v"], ["o"], name="pv"),
              h.make_node("Transpose", ["o"], ["o1"], perm=[0, 2, 1, 3]),
              h.make_node("Reshape", ["o1", "out_shape"], ["y"])]
    m = model(nodes, (b, seq, e), (b, seq, e), inits, opset=opset)
    tm, y, ref, err = convert_and_compare(m, rand((b, seq, e), 14), "attention", PARITY)
    assert err < TOL, np.abs(y - ref).max()
    assert tm.report.ops_after["BATCH_MATMUL"] == 2, tm.report.ops_after


MISMATCHES = [
    ((2, 4, 6), (3, 6, 5), r"batch dims \[2\] of A \[2, 4, 6\] and \[3\] of B \[3, 6, 5\] do "
                           r"not broadcast"),
    ((2, 4, 6), (2, 5, 3), r"A \[2, 4, 6\] has K=6 but B \[2, 5, 3\] has K=5"),
]


@pytest.mark.parametrize("sa, sb, text", MISMATCHES, ids=["batch", "k"])
def test_onnx_matmul_shape_mismatch_names_the_node(sa, sb, text) -> None:
    g = h.make_graph([h.make_node("MatMul", ["a", "b"], ["y"], name="bad_mm")], "g",
                     [h.make_tensor_value_info("a", TensorProto.FLOAT, list(sa)),
                      h.make_tensor_value_info("b", TensorProto.FLOAT, list(sb))],
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 5])])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", NEWEST)])
    m.ir_version = 8
    with pytest.raises(ConversionError, match=r"onnx: node 'bad_mm' \(MatMul\): .*" + text):
        convert(m)


def test_int8_quantization_lowers_batch_matmul_to_int8() -> None:
    """quantize='int8': BATCH_MATMUL runs int8 (TFLite's BatchMatMul) between the int8 dense
    layer and the output; its constant RHS quantized asymmetric per tensor from its min/max,
    as TensorFlow's converter quantizes it."""
    from onnx_testlib import engine_run, ort_run

    m = model([h.make_node("MatMul", ["x", "w"], ["h"]), h.make_node("Relu", ["h"], ["r"]),
               h.make_node("MatMul", ["r", "r2"], ["y"])], (2, 4, 6), None,
              {"w": rand((6, 6), 1), "r2": rand((2, 6, 3), 2) + 0.3})
    calibration = np.stack([rand((2, 4, 6), s) for s in range(64)])
    tm = convert(m, quantize="int8", calibration=calibration)
    assert tm.report.ops_after == {"QUANTIZE": 1, "FULLY_CONNECTED": 1, "BATCH_MATMUL": 1,
                                   "DEQUANTIZE": 1}, tm.report.ops_after
    (mm,) = [n for n in tm.graph.nodes if n.op == OpType.BATCH_MATMUL]
    a, b, y = (tm.graph.tensors[t] for t in (*mm.inputs, *mm.outputs))
    assert {a.dtype.name, b.dtype.name, y.dtype.name} == {"INT8"}
    r2 = rand((2, 6, 3), 2) + 0.3
    assert b.is_constant and b.quant.axis is None and b.quant.zero_point != (0,)
    assert int(b.data.min()) == -128 and int(b.data.max()) == 127
    real = b.quant.scale[0] * (b.data.astype(np.int32) - b.quant.zero_point[0])
    np.testing.assert_allclose(real, r2, atol=b.quant.scale[0] / 2 + 1e-6)
    for s in range(3):
        x = rand((2, 4, 6), 100 + s)
        assert rel_err(engine_run(tm.to_bytes(), x), ort_run(m, x)) < 0.05


def test_int8_quantization_of_computed_operands_with_adjoint() -> None:
    """x @ x^T (the Transpose folded into adjoint) quantized by tether: both operands the
    same int8 tensor, one int8 BATCH_MATMUL, close to onnxruntime."""
    from onnx_testlib import engine_run, ort_run

    m = model([h.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
               h.make_node("MatMul", ["x", "t"], ["y"])], (2, 4, 6), None)
    tm = convert(m, quantize="int8",
                 calibration=np.stack([rand((2, 4, 6), s) for s in range(64)]))
    (mm,) = [n for n in tm.graph.nodes if n.op == OpType.BATCH_MATMUL]
    assert mm.attrs["adjoint"] == (0, 1) and mm.inputs[0] == mm.inputs[1]
    assert tm.graph.tensors[mm.outputs[0]].dtype.name == "INT8"
    errs = [rel_err(engine_run(tm.to_bytes(), x), ort_run(m, x))
            for x in (rand((2, 4, 6), 100 + s) for s in range(5))]
    assert max(errs) < 0.03, errs


def test_opdef_shape_rule() -> None:
    node = ir.Node(OpType.BATCH_MATMUL, "n", ("a", "b"), ("y",), {"adjoint": (1, 0)})
    assert ir.infer_output_shapes(node, [(2, 1, 6, 4), (3, 6, 5)], [(2, 3, 4, 5)]) == \
        [(2, 3, 4, 5)]
    with pytest.raises(ir.ShapeError, match="has K=6 but B"):
        ir.infer_output_shapes(node, [(6, 4), (5, 6)], [(4, 6)])


# ---------------------------------------------------------------------------------- TFLite


def _tflite_function(fn, shape) -> bytes:
    tf = pytest.importorskip("tensorflow")
    spec = tf.TensorSpec(shape, tf.float32)
    f = tf.function(fn, input_signature=[spec])
    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    return bytes(conv.convert())


def _tflite_ops(content: bytes) -> set[str]:
    from ai_edge_litert import schema_py_generated as schema

    mdl = schema.ModelT.InitFromPackedBuf(content, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return {names[max(c.builtinCode, c.deprecatedBuiltinCode)] for c in mdl.operatorCodes}


def _tflite_check(content: bytes, x: np.ndarray, label: str) -> None:
    pytest.importorskip("ai_edge_litert")
    from onnx_testlib import engine_run, litert_run

    assert "BATCH_MATMUL" in _tflite_ops(content)
    ref = litert_run(content, x)
    tm = convert(content)
    assert "BATCH_MATMUL" in tm.report.ops_after, tm.report.ops_after
    y = engine_run(tm.to_bytes(), x)
    assert y.shape == ref.shape
    PARITY[label] = rel_err(y, ref)
    assert PARITY[label] < TOL, (label, np.abs(y - ref).max())


TFL = [
    ("x-xT", (2, 5, 7), lambda tf: lambda x: tf.matmul(x, x, transpose_b=True)),
    ("xT-x", (2, 5, 7), lambda tf: lambda x: tf.matmul(x, x, transpose_a=True)),
    ("split-broadcast", (1, 2, 3, 8),
     lambda tf: lambda x: tf.matmul(x[..., :4], tf.reshape(x[:, :1, :, 4:], [1, 1, 4, 3]))),
]


@pytest.mark.parametrize("name, shape, fn", TFL, ids=[t[0] for t in TFL])
def test_tflite_batch_matmul_matches_litert(name, shape, fn) -> None:
    tf = pytest.importorskip("tensorflow")
    content = _tflite_function(fn(tf), shape)
    _tflite_check(content, rand(shape, 21), "tflite-" + name)


def test_keras_ops_matmul_layer_through_tflite() -> None:
    """A Keras model whose layer calls keras.ops.matmul (self-attention scores), converted
    by TensorFlow's converter: BATCH_MATMUL in the file, LiteRT's numbers in the engine."""
    keras = pytest.importorskip("keras")
    tf = pytest.importorskip("tensorflow")

    class Scores(keras.layers.Layer):
        def call(self, x):
            s = keras.ops.matmul(x, keras.ops.transpose(x, (0, 2, 1)))
            return keras.ops.matmul(keras.ops.softmax(s, axis=-1), x)

    x_in = keras.Input((6, 4), batch_size=1)
    m = keras.Model(x_in, Scores()(keras.layers.Dense(4)(x_in)))
    conv = tf.lite.TFLiteConverter.from_keras_model(m)
    _tflite_check(bytes(conv.convert()), rand((1, 6, 4), 22), "keras-ops-matmul")
