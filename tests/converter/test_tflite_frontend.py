"""TFLite frontend: fp32 and int8 flatbuffers from TensorFlow's converter, errors.

Engine outputs are compared with LiteRT running the same .tflite.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("ai_edge_litert")

from onnx_testlib import engine_run, litert_run, rand, rel_err
from tether.converter import convert
from tether.converter._internal.frontends.tflite import from_tflite
from tether.converter._internal.ops import DType

from tether.errors import ConversionError, ModelFormatError
from tether.peers import keras_to_tflite

L = keras.layers
TOL = 1e-4


def _randomize(model: keras.Model, seed: int = 0) -> keras.Model:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.2, c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
    return model


@pytest.fixture(scope="module")
def block() -> tuple[keras.Model, bytes]:
    """Conv/BN/ReLU6, depthwise, SE multiply, hard-swish, residual add, pool, dense head."""
    keras.utils.set_random_seed(0)
    x = keras.Input((20, 20, 3))
    y = L.Rescaling(1 / 127.5, offset=-1)(x)
    y = L.ZeroPadding2D(((0, 1), (0, 1)))(y)
    y = L.Conv2D(8, 3, strides=2, use_bias=False)(y)
    y = L.BatchNormalization()(y)
    y = L.ReLU(6.0)(y)
    d = L.DepthwiseConv2D(3, padding="same")(y)
    d = L.Activation("hard_swish")(d)
    se = L.GlobalAveragePooling2D(keepdims=True)(d)
    se = L.Conv2D(8, 1, activation="sigmoid")(se)
    d = L.Multiply()([d, se])
    y = L.Add()([y, d])
    y = L.MaxPooling2D(2)(y)
    y = L.AveragePooling2D(2, padding="same")(y)
    y = L.Flatten()(y)
    y = L.Dense(10, activation="softmax")(y)
    m = _randomize(keras.Model(x, y, name="block"))
    return m, keras_to_tflite(m)


def test_fp32_block_matches_litert(block) -> None:
    _, content = block
    tm = convert(content)
    x = rand((1, 20, 20, 3), lo=0, hi=255)
    assert rel_err(engine_run(tm.to_bytes(), x), litert_run(content, x)) < TOL
    assert tm.report.source == "tflite:<bytes>"
    assert "HARD_SWISH" in tm.report.ops_after or tm.report.action_counts.get("fuse_activation")


def test_fp32_from_path_keeps_io(tmp_path, block) -> None:
    _, content = block
    p = tmp_path / "m.tflite"
    p.write_bytes(content)
    g = from_tflite(str(p), batch_size=2)
    assert g.tensors[g.inputs[0]].shape == (2, 20, 20, 3)
    assert g.tensors[g.outputs[0]].shape == (2, 10)
    tm = convert(str(p), batch_size=2)
    x = rand((2, 20, 20, 3), lo=0, hi=255)
    assert rel_err(engine_run(tm.to_bytes(), x), litert_run(content, x)) < TOL


@pytest.fixture(scope="module")
def int8_block(block) -> tuple[keras.Model, bytes]:
    m, _ = block
    rep = np.random.default_rng(1).uniform(0, 255, (16, 20, 20, 3)).astype(np.float32)
    return m, keras_to_tflite(m, rep)


def test_int8_import_keeps_tflite_integers(int8_block) -> None:
    from ai_edge_litert.interpreter import Interpreter

    _, content = int8_block
    g = from_tflite(content)
    it = Interpreter(model_content=content)
    details = {d["name"]: d for d in it.get_tensor_details()}
    int8 = [t for t in g.tensors.values() if t.dtype == DType.INT8]
    assert int8, "the int8 model imported without int8 tensors"
    checked = 0
    for t in g.tensors.values():
        d = details.get(t.name)
        if d is None or t.quant is None:
            continue
        q = d["quantization_parameters"]
        np.testing.assert_array_equal(np.asarray(t.quant.scale, np.float32), q["scales"])
        np.testing.assert_array_equal(np.asarray(t.quant.zero_point), q["zero_points"])
        if t.is_constant:
            np.testing.assert_array_equal(t.data, it.get_tensor(d["index"]))
            checked += 1
    assert checked >= 4  # weights and int32 biases kept bit for bit
    ops = g.op_counts()
    assert ops["QUANTIZE"] >= 1 and ops["DEQUANTIZE"] >= 1


def test_int8_engine_top1_matches_litert(int8_block) -> None:
    _, content = int8_block
    tm = convert(content)
    ops = tm.report.ops_after
    # the int8 activations stay separate ops with TFLite's quantization (not fused)
    assert ops["HARD_SWISH"] == 1 and ops["LOGISTIC"] == 1 and ops["QUANTIZE"] == 1
    assert all(t.dtype == DType.INT8 for t in tm.graph.tensors.values()
               if t.quant is not None and not t.is_constant)
    xs = np.random.default_rng(2).uniform(0, 255, (20, 1, 20, 20, 3)).astype(np.float32)
    data = tm.to_bytes()
    ys = [engine_run(data, x) for x in xs]
    refs = [litert_run(content, x) for x in xs]
    assert sum(int(np.argmax(y) == np.argmax(r)) for y, r in zip(ys, refs)) == len(xs)
    # LiteRT's XNNPACK path rounds int8 convolutions in float: at most 1 LSB (1/256) apart
    assert max(float(np.abs(y - r).max()) for y, r in zip(ys, refs)) <= 1 / 256 + 1e-7


# ---------------------------------------------------------------------------------- errors


def test_unsupported_op_names_node_op_and_frontend() -> None:
    x = keras.Input((4, 4, 2))
    y = L.Activation("exponential", name="exp_act")(x)
    y = L.Conv2D(2, 1)(y)  # (the last op's tensor is named after the signature instead)
    content = keras_to_tflite(keras.Model(x, y))
    with pytest.raises(ConversionError, match=r"tflite: node '[^']*exp_act[^']*' \(EXP\): op EXP "
                                              r"is not supported"):
        convert(content)


def test_malformed_tflite_files(tmp_path, block) -> None:
    _, content = block
    with pytest.raises(ModelFormatError, match="not a TFLite flatbuffer"):
        from_tflite(b"\0\0\0\0XXXX" + content[8:])
    with pytest.raises(ModelFormatError, match="tflite"):
        from_tflite(content[:200])
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(content[:8] + bytes(64))
    with pytest.raises((ModelFormatError, ConversionError), match="tflite"):
        convert(str(bad))


@pytest.mark.slow
def test_int8_mobilenet_v2_top1_matches_litert_on_200_inputs() -> None:
    # the criterion; needs the engine's int8 kernels and QUANTIZE/DEQUANTIZE
    keras.utils.set_random_seed(0)
    m = keras.applications.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35, weights=None,
                                       classifier_activation=None)
    _randomize(m)
    rng = np.random.default_rng(3)
    content = keras_to_tflite(m, rng.uniform(-1, 1, (32, 64, 64, 3)).astype(np.float32))
    tm = convert(content)
    ops = tm.report.ops_after
    assert ops["QUANTIZE"] == 1 and ops["DEQUANTIZE"] == 1 and "BATCH_NORM" not in ops
    xs = rng.uniform(-1, 1, (200, 1, 64, 64, 3)).astype(np.float32)
    data = tm.to_bytes()
    same = sum(int(np.argmax(engine_run(data, x)) == np.argmax(litert_run(content, x)))
               for x in xs)
    assert same == 200


@pytest.fixture(scope="module")
def slicing() -> tuple[keras.Model, bytes]:
    """Cropping2D and a strided crop (STRIDED_SLICE), a split in equal and unequal parts
    (SPLIT, SPLIT_V), a shrunk axis (STRIDED_SLICE with shrink_axis_mask), a backwards
    slice (negative strides)."""
    keras.utils.set_random_seed(1)
    x = keras.Input((9, 8, 6))
    y = L.Conv2D(6, 1)(x)
    y = L.Cropping2D(((1, 2), (0, 1)))(y)                       # 6 x 7
    a, b = L.Lambda(lambda t: keras.ops.split(t, 2, axis=-1))(y)
    c, d = L.Lambda(lambda t: keras.ops.split(t, [1], axis=-1))(a)
    e = L.Lambda(lambda t: t[:, ::2, 1:, :])(b)                  # 3 x 6
    f = L.Lambda(lambda t: t[:, 2, :, :])(d)                     # shrunk: 7 x 2
    g = L.Lambda(lambda t: t[:, ::-2, ::-1, :])(b)               # backwards: 3 x 7
    y = L.Concatenate()([L.Flatten()(c), L.Flatten()(e), L.Flatten()(f), L.Flatten()(g)])
    m = keras.Model(x, L.Dense(5)(y), name="slicing")
    return m, keras_to_tflite(m)


def test_slices_and_splits_match_litert(slicing) -> None:
    _, content = slicing
    tm = convert(content)
    x = rand((1, 9, 8, 6), 3, -1, 1)
    assert rel_err(engine_run(tm.to_bytes(), x), litert_run(content, x)) < TOL
    assert tm.report.ops_after["SLICE"] >= 5, tm.report.ops_after


def test_int8_slices_keep_tflite_integers(slicing) -> None:
    model, _ = slicing
    rep = np.random.default_rng(2).uniform(-1, 1, (16, 9, 8, 6)).astype(np.float32)
    content = keras_to_tflite(model, rep)
    g = from_tflite(content)
    slices = [n for n in g.nodes if n.op.name == "SLICE"]
    assert slices and all(g.tensors[n.inputs[0]].dtype == DType.INT8 for n in slices)
    x = rand((1, 9, 8, 6), 30, -1, 1)
    got, want = engine_run(convert(content).to_bytes(), x), litert_run(content, x)
    step = float(np.min(np.abs(np.diff(np.unique(want))))) if np.unique(want).size > 1 else 1.0
    assert np.abs(got - want).max() <= 1e-6 + 1e-3 * step, np.abs(got - want).max()


@pytest.fixture(scope="module")
def dilated() -> keras.Model:
    """Dilated convolutions, which TensorFlow's converter writes as SPACE_TO_BATCH_ND, the
    convolution, BATCH_TO_SPACE_ND (Conv1D with EXPAND_DIMS and RESHAPE between)."""
    keras.utils.set_random_seed(4)
    x = keras.Input((19, 17, 4))
    a = L.Conv2D(6, 3, dilation_rate=(2, 3), padding="same", activation="relu")(x)
    b = L.Conv2D(6, 3, dilation_rate=2, padding="valid")(x)                   # 15 x 13
    c = L.DepthwiseConv2D(3, dilation_rate=2, padding="same")(a)
    r = L.Reshape((19, 17 * 6))(c)
    d = L.Conv1D(5, 3, dilation_rate=2, padding="same", activation="relu")(r)
    e = L.Conv1D(5, 3, dilation_rate=3)(r)                                    # 13 x 5
    y = L.Concatenate()([L.Flatten()(v) for v in (b, d, e)])
    return keras.Model(x, L.Dense(4)(y), name="dilated")


def test_dilated_convolutions_fold_space_to_batch(dilated) -> None:
    content = keras_to_tflite(dilated)
    tm = convert(content)
    ops = tm.report.ops_after
    assert ops["CONV_2D"] == 4 and ops["DEPTHWISE_CONV_2D"] == 1, ops
    assert "SLICE" not in ops, ops  # the crops folded into the convolutions' padding
    x = rand((1, 19, 17, 4), 5, -1, 1)
    assert rel_err(engine_run(tm.to_bytes(), x), litert_run(content, x)) < TOL


def test_int8_dilated_convolutions_keep_tflite_integers(dilated) -> None:
    rep = np.random.default_rng(3).uniform(-1, 1, (16, 19, 17, 4)).astype(np.float32)
    content = keras_to_tflite(dilated, rep)
    x = rand((1, 19, 17, 4), 31, -1, 1)
    got = engine_run(convert(content).to_bytes(), x)
    np.testing.assert_array_equal(got, litert_run(content, x, reference=True))


def test_space_to_batch_outside_a_dilated_convolution_is_refused() -> None:
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((1, 8, 8, 2), tf.float32)])
    def f(x):
        return tf.space_to_batch_nd(x, [2, 2], [[0, 0], [0, 0]]) * 2.0

    content = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()],
                                                              f).convert()
    with pytest.raises(ConversionError, match=r"\(MUL\): input 0 .* SPACE_TO_BATCH_ND's batched "
                                              r"tensor; only a dilated convolution"):
        convert(content)
