"""Integer graph inputs and GATHER: ONNX Gather (opsets 1, 11, 13) on a constant table with
int64/int32 ids and with constant indices on computed tensors, the Keras Embedding layer, TFLite
GATHER, int8 tables, and the errors: a constant index outside its table at conversion, an id
outside it at run time (the engine's invalid_argument, through `tether.device.Engine`), ids that
int32 cannot hold (the binding's range check).

Each model is converted, run in the engine and in its source runtime (onnxruntime with graph
optimizations disabled, Keras, LiteRT) on seeded inputs; outputs agree within 1e-4 relative.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, numpy_helper
from onnx import helper as h
from onnx_testlib import rand, rel_err
from tether.converter import convert
from tether.device import Engine
from tether.errors import ConversionError, EngineError

TOL = 1e-4
V, E, T, C = 50, 8, 6, 4  # vocabulary, embedding width, tokens, classes
ONNX_TYPES = {np.int64: TensorProto.INT64, np.int32: TensorProto.INT32}


def _ort(m, feeds):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, feeds)[0]


def _onnx_model(nodes, inputs, y_shape, inits, opset):
    """inputs: name -> (shape, numpy dtype); inits: name -> array (kept in its dtype)."""
    g = h.make_graph(nodes, "gather",
                     [h.make_tensor_value_info(k, ONNX_TYPES.get(dt, TensorProto.FLOAT),
                                               list(s)) for k, (s, dt) in inputs.items()],
                     [h.make_tensor_value_info("y", TensorProto.FLOAT, list(y_shape))],
                     [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 7 if opset >= 13 else 4
    return m


def _embedding_classifier(opset: int, ids_dtype=np.int64):
    """ids -> Gather(table) -> ReduceMean over tokens -> Gemm -> Softmax."""
    rng = np.random.default_rng(3)
    table = rng.standard_normal((V, E)).astype(np.float32)
    w = rng.standard_normal((E, C)).astype(np.float32)
    b = rng.standard_normal(C).astype(np.float32)
    mean = (h.make_node("ReduceMean", ["emb"], ["pooled"], axes=[1], keepdims=0)
            if opset < 18 else
            h.make_node("ReduceMean", ["emb", "axes"], ["pooled"], keepdims=0))
    nodes = [h.make_node("Gather", ["table", "ids"], ["emb"], name="lookup", axis=0), mean,
             h.make_node("Gemm", ["pooled", "w", "b"], ["logits"]),
             h.make_node("Softmax", ["logits"], ["y"], axis=1)]
    inits = {"table": table, "w": w, "b": b}
    if opset >= 18:
        inits["axes"] = np.array([1], np.int64)
    return _onnx_model(nodes, {"ids": ((1, T), ids_dtype)}, (1, C), inits, opset)


@pytest.mark.parametrize("opset, ids_dtype", [(1, np.int64), (11, np.int64), (13, np.int64),
                                              (13, np.int32)],
                         ids=["opset1-int64", "opset11-int64", "opset13-int64", "opset13-int32"])
def test_onnx_embedding_classifier_matches_onnxruntime(opset, ids_dtype) -> None:
    # Prepare: negative ids count from the end from opset 11 on
    m = _embedding_classifier(opset, ids_dtype)
    lo = -V if opset >= 11 else 0
    ids = np.random.default_rng(opset).integers(lo, V, (4, 1, T)).astype(ids_dtype)
    # Execute
    tm = convert(m)
    engine = Engine(tm.to_bytes())
    ys = [engine.run(x) for x in ids]
    # Assert: the input is recorded as int32, the ids narrowed by the binding
    assert engine.inputs[0].dtype == np.int32 and tm.report.inputs[0].dtype == np.int32
    assert "GATHER" in tm.report.ops_after
    # onnxruntime runs nothing below opset 7 (no Gemm-1): opset 1 is checked against the
    # same graph at opset 13, whose Gather, ReduceMean and Gemm mean the same
    ref_model = m if opset >= 7 else _embedding_classifier(13, ids_dtype)
    for x, y in zip(ids, ys):
        ref = _ort(ref_model, {"ids": x})
        assert y.shape == ref.shape and y.dtype == np.float32
        assert rel_err(y, ref) < TOL, np.abs(y - ref).max()


def test_onnx_id_outside_the_table_is_the_engines_error() -> None:
    engine = Engine(convert(_embedding_classifier(13)).to_bytes())
    ids = np.array([[0, 1, 2, V, 3, 4]], np.int64)
    with pytest.raises(EngineError, match=r"invalid_argument.*'lookup' \(GATHER\): index 50 at "
                                          r"position 3 of 'ids' is outside \[-50, 50\)"):
        engine.run(ids)
    assert engine.run(np.array([[0, 1, 2, -V, 3, 4]], np.int64)).shape == (1, C)  # still usable


def test_binding_narrows_int64_ids_with_a_range_check() -> None:
    engine = Engine(convert(_embedding_classifier(13)).to_bytes())
    with pytest.raises(EngineError, match=r"input 'ids' is int32; value 4294967296 at index "
                                          r"\(0, 2\) is outside int32's range"):
        engine.run(np.array([[0, 1, 2**32, 3, 4, 5]], np.int64))
    with pytest.raises(EngineError, match=r"input 'ids' is int32; received a float32 array"):
        engine.run(np.zeros((1, T), np.float32))


X_SHAPE = (2, 3, 5, 4)  # NCHW
GATHERS = [  # (axis, constant indices, output shape)
    (1, [2, 0, -1], (2, 3, 5, 4)),     # pick / reorder channels (held channels-last)
    (1, [-2], (2, 1, 5, 4)),
    (1, 1, (2, 5, 4)),                 # a scalar index drops the axis
    (2, [[4, 0], [1, -3]], (2, 3, 2, 2, 4)),
    (-1, [3, 3, 0], (2, 3, 5, 3)),
    (0, [1], (1, 3, 5, 4)),
]


@pytest.mark.parametrize("axis, idx, y_shape", GATHERS, ids=lambda v: str(v))
@pytest.mark.parametrize("after_conv", [False, True], ids=["input", "after_conv"])
@pytest.mark.parametrize("opset", [11, 13])
def test_onnx_gather_constant_indices_on_a_computed_tensor(axis, idx, y_shape, after_conv,
                                                           opset) -> None:
    rng = np.random.default_rng(5)
    inits = {"i": np.asarray(idx, np.int64)}
    nodes = []
    src = "x"
    if after_conv:  # the importer holds the conv's output channels-last
        inits["w"] = rng.standard_normal((3, 3, 3, 3)).astype(np.float32)
        nodes.append(h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]))
        src = "c"
    nodes += [h.make_node("Relu", [src], ["r"]),
              h.make_node("Gather", ["r", "i"], ["y"], name="pick", axis=axis)]
    m = _onnx_model(nodes, {"x": (X_SHAPE, np.float32)}, y_shape, inits, opset)
    x = rand(X_SHAPE, 7)
    y = Engine(convert(m).to_bytes()).run(x)
    ref = _ort(m, {"x": x})
    assert y.shape == ref.shape == y_shape
    assert rel_err(y, ref) < TOL, np.abs(y - ref).max()


def test_onnx_constant_index_outside_is_refused_at_conversion() -> None:
    nodes = [h.make_node("Gather", ["x", "i"], ["y"], name="pick", axis=1)]
    m = _onnx_model(nodes, {"x": (X_SHAPE, np.float32)}, (2, 1, 5, 4),
                    {"i": np.array([3], np.int64)}, 13)
    with pytest.raises(ConversionError, match=r"node 'pick' \(Gather\): index 3 of 'i' is "
                                              r"outside \[-3, 2\] \(axis 1 of 'x', size 3\)"):
        convert(m)


def test_onnx_computed_float_indices_are_refused() -> None:
    nodes = [h.make_node("Gather", ["t", "x"], ["y"], name="lookup", axis=0)]
    m = _onnx_model(nodes, {"x": ((1, 2), np.float32)}, (1, 2, 3),
                    {"t": np.zeros((4, 3), np.float32)}, 13)
    with pytest.raises(ConversionError, match=r"'lookup' \(Gather\): indices 'x' are float32"):
        convert(m)


# ---------------------------------------------------------------------- Keras


def _keras_embedding_model(dtype: str):
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    i = keras.Input((7,), dtype=dtype, name="ids")
    x = keras.layers.Embedding(40, 8, name="emb")(i)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(i, keras.layers.Dense(3, activation="softmax")(x))


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_keras_embedding_matches_keras(dtype) -> None:
    m = _keras_embedding_model(dtype)
    ids = np.random.default_rng(1).integers(0, 40, (5, 7)).astype(dtype)
    tm = convert(m)
    y = Engine(tm.to_bytes()).run(ids)  # a stack of 5 items for a batch-1 model
    ref = m.predict(ids, verbose=0)
    assert y.shape == ref.shape and y.dtype == np.float32
    assert rel_err(y, ref) < TOL, np.abs(y - ref).max()
    assert tm.report.inputs[0].dtype == np.int32


def test_keras_embedding_int8_keeps_the_table_quantized() -> None:
    m = _keras_embedding_model("int32")
    rng = np.random.default_rng(2)
    tm = convert(m, quantize="int8",
                 calibration=rng.integers(0, 40, (32, 1, 7)).astype(np.int32))
    ids = rng.integers(0, 40, (8, 7)).astype(np.int32)
    y = Engine(tm.to_bytes()).run(ids)
    ref = m.predict(ids, verbose=0)
    assert "GATHER" in tm.report.ops_after and "QUANTIZE" not in tm.report.ops_after
    assert np.abs(y - ref).max() < 0.02


def test_keras_embedding_with_mask_zero_is_refused() -> None:
    keras = pytest.importorskip("keras")
    i = keras.Input((4,), dtype="int32")
    x = keras.layers.Embedding(10, 2, mask_zero=True, name="masked")(i)
    m = keras.Model(i, keras.layers.GlobalAveragePooling1D()(x))
    # Keras computes the mask with keras.ops first (refused there, or at the layer)
    with pytest.raises(ConversionError, match=r"mask_zero=True|'not_equal'"):
        convert(m)


# ---------------------------------------------------------------------- TFLite


@pytest.mark.parametrize("axis, idx_input", [(0, True), (1, False)])
def test_tflite_gather_matches_litert(axis, idx_input) -> None:
    tf = pytest.importorskip("tensorflow")
    from onnx_testlib import litert_run

    rng = np.random.default_rng(4)
    table = rng.standard_normal((30, 6)).astype(np.float32)
    if idx_input:  # ids in, fp32 table
        @tf.function(input_signature=[tf.TensorSpec([1, 5], tf.int32)])
        def f(ids):
            return tf.reduce_mean(tf.gather(tf.constant(table), ids, axis=0), axis=1)

        x = rng.integers(0, 30, (1, 5)).astype(np.int32)
    else:  # constant indices on a computed tensor
        @tf.function(input_signature=[tf.TensorSpec([1, 30, 6], tf.float32)])
        def f(v):
            return tf.gather(tf.nn.relu(v), [4, 0, 29, 4], axis=axis)

        x = rng.standard_normal((1, 30, 6)).astype(np.float32)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    content = conv.convert()
    tm = convert(content)
    assert "GATHER" in tm.report.ops_after
    y = Engine(tm.to_bytes()).run(x)
    ref = litert_run(content, x)
    assert y.shape == ref.shape
    assert rel_err(y, ref) < TOL, np.abs(y - ref).max()
