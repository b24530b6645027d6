"""Keras 3 frontend and the public API: layers, weight layouts, errors, report, save/load."""

from __future__ import annotations

import os

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from converter_testlib import act_np, conv2d_np, depthwise_np
from tether.converter import TModel, convert, load
from tether.converter._internal.frontends.keras import SUPPORTED_LAYERS, same_padding
from tether.converter._internal.ops import OpType

from tether.errors import ConversionError, ModelFormatError

L = keras.layers


def _randomize_bn(model: keras.Model, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            ws = []
            for w in layer.get_weights():
                ws.append(rng.uniform(0.5, 1.5, w.shape).astype(np.float32))
            if layer.center:  # beta and mean may be negative
                ws[1] -= 1.0
            ws[-2] = rng.standard_normal(ws[-2].shape).astype(np.float32)
            layer.set_weights(ws)


def _file_ops(tm: TModel):
    return {op.name: op for op in tm.file.ops}


def _weights(tm: TModel, op):
    t = tm.file.tensors
    return t[op.inputs[1]].data, (None if op.inputs[2] is None else t[op.inputs[2]].data)


def _run_conv(tm: TModel, op, x):
    w, b = _weights(tm, op)
    a = op.attr_values()
    if op.type == OpType.CONV_2D:
        y = conv2d_np(x, w, b, a["strides"], a["dilations"], a["pads"], a["groups"][0])
    else:
        y = depthwise_np(x, w, b, a["strides"], a["dilations"], a["pads"],
                         a["depth_multiplier"][0])
    return act_np(y, op.activation)


def _small_cnn() -> keras.Model:
    inp = keras.Input((16, 16, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", name="conv1")(inp)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="relu1")(x)
    a = L.DepthwiseConv2D(3, padding="same", activation="relu6", name="dw")(x)
    b = L.MaxPooling2D(2, name="maxpool")(x)
    a = L.AveragePooling2D(3, strides=2, padding="same", name="avgpool")(a)
    s = L.Add(name="add")([a, b])
    c = L.Concatenate(name="concat")([s, b])
    c = L.ZeroPadding2D(((1, 0), (0, 1)), name="zpad")(c)
    c = L.Conv2D(8, 3, strides=2, use_bias=False, name="conv2")(c)
    c = L.Dropout(0.5, name="drop")(c)
    f = L.Flatten(name="flat")(c)
    out = L.Dense(10, activation="softmax", name="probs")(f)
    model = keras.Model(inp, out, name="small_cnn")
    _randomize_bn(model)
    return model


@pytest.fixture(scope="module")
def small_cnn() -> keras.Model:
    return _small_cnn()


def test_small_cnn_ops_and_report(small_cnn) -> None:
    tm = convert(small_cnn)
    after = tm.report.ops_after
    assert after == {"ADD": 1, "AVERAGE_POOL_2D": 1, "CONCATENATION": 1, "CONV_2D": 2,
                     "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "MAX_POOL_2D": 1,
                     "RESHAPE": 1, "SOFTMAX": 1}
    assert tm.report.ops_before["BATCH_NORM"] == 1 and tm.report.ops_before["IDENTITY"] == 1
    assert tm.report.action_counts == {"fold_batch_norm": 1, "fold_pad": 1,
                                       "fuse_activation": 2, "remove_identity": 1}
    assert "folded bn1 into conv1" in tm.report.actions
    assert tm.report.size_bytes == len(tm.to_bytes())
    assert tm.report.source == "keras:small_cnn"
    assert [(t.name, t.shape, str(t.dtype)) for t in tm.inputs] == [
        ("image", (1, 16, 16, 3), "float32")]
    assert [(t.name, t.shape) for t in tm.outputs] == [("probs", (1, 10))]
    ops = _file_ops(tm)
    assert ops["conv2"].attr_values()["pads"] == (1, 0, 0, 1)  # from ZeroPadding2D
    assert ops["avgpool"].attr_values()["count_include_pad"] == (0,)
    assert ops["concat"].attr_values()["axis"] == (3,)
    assert tm.metadata["producer"].startswith("tether ")


def test_small_cnn_conv_bn_relu_numerics(small_cnn) -> None:
    tm = convert(small_cnn)
    op = _file_ops(tm)["conv1"]
    x = np.random.default_rng(3).standard_normal((1, 16, 16, 3)).astype(np.float32)
    ref = keras.Model(small_cnn.input, small_cnn.get_layer("relu1").output)(x).numpy()
    np.testing.assert_allclose(_run_conv(tm, op, x), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layer", [
    L.Conv2D(5, (3, 2), strides=2, padding="same"),
    L.Conv2D(6, 3, dilation_rate=2, padding="same", activation="tanh"),
    L.Conv2D(6, 3, groups=2, padding="valid", activation="sigmoid"),
    L.Conv2D(4, 5, strides=(2, 3), padding="same", use_bias=False),
    L.DepthwiseConv2D(3, depth_multiplier=2, strides=2, padding="same"),
    L.DepthwiseConv2D(3, dilation_rate=2, padding="same", activation="hard_swish"),
], ids=["conv_s2_same", "conv_dil2", "conv_groups", "conv_s23", "dw_m2_s2", "dw_dil2"])
def test_conv_weight_layout_matches_keras(layer) -> None:
    inp = keras.Input((10, 9, 4))
    model = keras.Model(inp, layer(inp))
    rng = np.random.default_rng(0)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32)
                       for w in model.get_weights()])
    x = rng.standard_normal((1, 10, 9, 4)).astype(np.float32)
    tm = convert(model)
    (op,) = tm.file.ops
    np.testing.assert_allclose(_run_conv(tm, op, x), model(x).numpy(), rtol=1e-4, atol=1e-4)


def test_dense_layout_on_nd_input() -> None:
    inp = keras.Input((3, 5))
    model = keras.Model(inp, L.Dense(4)(inp))
    x = np.random.default_rng(1).standard_normal((2, 3, 5)).astype(np.float32)
    tm = convert(model, batch_size=2)
    (op,) = tm.file.ops
    w, b = _weights(tm, op)
    assert op.type == OpType.FULLY_CONNECTED and w.shape == (4, 5)
    assert tm.inputs[0].shape == (2, 3, 5)
    np.testing.assert_allclose(x @ w.T + b, model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_sequential_and_nested_models() -> None:
    block = keras.Sequential([keras.Input((8, 8, 4)), L.Conv2D(4, 1, name="c"),
                              L.BatchNormalization(name="bn"), L.ReLU(6.0, name="r6")],
                             name="block")
    inner_in = keras.Input((8, 8, 4))
    inner = keras.Model(inner_in, L.Add(name="res")([inner_in, block(inner_in)]), name="inner")
    inp = keras.Input((8, 8, 4), name="x")
    y = inner(inp)
    y = L.GlobalAveragePooling2D(keepdims=True, name="gap")(y)
    y = L.Reshape((4,), name="rs")(y)
    model = keras.Model(inp, L.Dense(3, name="head")(y))
    _randomize_bn(block)
    tm = convert(model)
    assert [op.name for op in tm.file.ops] == ["inner/block/c", "inner/res", "gap", "rs",
                                                "head"]
    ops = _file_ops(tm)
    assert ops["gap"].attr_values() == {"axes": (1, 2), "keepdims": (1,)}
    x = np.random.default_rng(2).standard_normal((1, 8, 8, 4)).astype(np.float32)
    ref = keras.Model(block.inputs[0], block.get_layer("r6").output)(x).numpy()
    np.testing.assert_allclose(_run_conv(tm, ops["inner/block/c"], x), ref, rtol=1e-4,
                               atol=1e-4)
    seq = keras.Sequential([keras.Input((6,)), L.Dense(4, activation="relu"), L.Dropout(0.1),
                            L.Dense(2)], name="seq")
    tm2 = convert(seq)
    assert [(op.type, op.activation.name) for op in tm2.file.ops] == [
        (OpType.FULLY_CONNECTED, "RELU"), (OpType.FULLY_CONNECTED, "NONE")]


def test_global_pools_and_activations() -> None:
    inp = keras.Input((6, 6, 2))
    a = L.GlobalMaxPooling2D(name="gmp")(inp)
    b = L.GlobalAveragePooling2D(name="gap")(inp)
    c = L.Multiply(name="mul")([a, b])
    d = L.Activation("hard_swish", name="hs")(c)
    e = L.Softmax(name="sm")(d)
    tm = convert(keras.Model(inp, [e, L.Activation("linear", name="lin")(c)]))
    assert sorted(op.type.name for op in tm.file.ops) == [
        "HARD_SWISH", "MAX_POOL_2D", "MEAN", "MUL", "RESHAPE", "RESHAPE", "SOFTMAX"]
    # 'lin' is a graph output and 'mul' has two readers: the identity stays as a copy
    assert [t.name for t in tm.outputs] == ["sm", "lin"]
    assert tm.report.action_counts["lower_identity"] == 1
    (gmp,) = [op for op in tm.file.ops if op.type == OpType.MAX_POOL_2D]
    assert gmp.name == "gmp" and gmp.attr_values()["kernel"] == (6, 6)


def test_optimize_false_keeps_layers_and_lowers_internal_ops(small_cnn) -> None:
    tm = convert(small_cnn, optimize=False)
    after = tm.report.ops_after
    assert "BATCH_NORM" not in after and "IDENTITY" not in after
    assert after["MUL"] == 1 and after["RELU"] == 1 and after["PAD"] == 1
    assert tm.report.actions == ("lowered bn1 to MUL+ADD", "lowered drop (IDENTITY) to RESHAPE")
    assert load(tm.to_bytes()).report.ops_after == after


@pytest.mark.parametrize("layer, cls", [
    (L.LSTM(4, name="lstm"), "LSTM"),
    (L.Conv2DTranspose(2, 3, name="deconv"), "Conv2DTranspose"),
])
def test_unsupported_layer_error(layer, cls) -> None:
    inp = keras.Input((5, 5, 2) if cls != "LSTM" else (5, 2))
    model = keras.Model(inp, layer(inp))
    with pytest.raises(ConversionError) as e:
        convert(model)
    msg = str(e.value)
    assert f"layer '{layer.name}' ({cls}) is not supported" in msg
    assert ", ".join(SUPPORTED_LAYERS) in msg and "Conv2D, Cropping1D" in msg


@pytest.mark.parametrize("layer, text", [
    (L.ReLU(threshold=0.5, name="thresholded"), "threshold=0.5"),
    (L.ReLU(max_value=0.0, name="r0"), "max_value=0.0"),
    (L.Activation("softplus", name="sp"), "activation 'softplus' is not supported"),
    (L.Conv2D(2, 3, data_format="channels_first", name="cf"), "data_format='channels_first'"),
    (L.Softmax(axis=1, name="sm1"), "axis=1"),
])
def test_unsupported_attribute_errors(layer, text) -> None:
    inp = keras.Input((4, 4, 4))
    model = keras.Model(inp, layer(inp))
    with pytest.raises(ConversionError, match=f"layer '{layer.name}' .*{text}"):
        convert(model)


def test_non_keras_source_is_rejected() -> None:
    with pytest.raises(ConversionError, match="supported sources: keras.Model"):
        convert(object())


def test_dynamic_input_shape_is_rejected() -> None:
    inp = keras.Input((None, 3), name="seq_in")
    with pytest.raises(ConversionError, match="input 'seq_in'.*unknown dimension"):
        convert(keras.Model(inp, L.Dense(2)(inp)))


def test_same_padding_puts_extra_at_end() -> None:
    assert same_padding(8, 3, 2) == (0, 1)
    assert same_padding(7, 3, 2) == (1, 1)
    assert same_padding(9, 4, 1) == (1, 2)
    assert same_padding(5, 3, 1, dilation=2) == (2, 2)


def test_save_load_round_trip(tmp_path, small_cnn) -> None:
    tm = convert(small_cnn)
    path = tmp_path / "m.tmodel"
    tm.save(path)
    assert path.read_bytes() == tm.to_bytes()
    assert os.listdir(tmp_path) == ["m.tmodel"]
    loaded = load(path)
    assert loaded.to_bytes() == tm.to_bytes()
    assert loaded.inputs == tm.inputs and loaded.outputs == tm.outputs
    assert loaded.report.ops_after == tm.report.ops_after
    with pytest.raises(ModelFormatError, match="m.tmodel.*truncated"):
        path.write_bytes(tm.to_bytes()[:100])
        load(path)


def test_save_failure_leaves_no_partial_file(tmp_path, small_cnn) -> None:
    tm = convert(small_cnn)
    target = tmp_path / "dir_in_the_way"
    target.mkdir()
    with pytest.raises(OSError):
        tm.save(target)
    assert sorted(os.listdir(tmp_path)) == ["dir_in_the_way"]


@pytest.fixture(scope="module")
def mobilenet() -> keras.Model:
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None)
    _randomize_bn(model, seed=5)
    return model


def test_mobilenet_v2(mobilenet) -> None:
    tm = convert(mobilenet)
    after = tm.report.ops_after
    assert after == {"ADD": 10, "CONV_2D": 35, "DEPTHWISE_CONV_2D": 17, "FULLY_CONNECTED": 1,
                     "MEAN": 1, "SOFTMAX": 1}
    assert tm.report.action_counts == {"fold_batch_norm": 52, "fold_pad": 4,
                                       "fuse_activation": 35}
    assert load(tm.to_bytes()).to_bytes() == tm.to_bytes()
    ops = _file_ops(tm)
    probe = keras.Model(mobilenet.input, [mobilenet.get_layer(n).output for n in (
        "Conv1_relu", "block_1_expand_relu", "block_1_depthwise_relu")])
    x = np.random.default_rng(4).standard_normal((1, 96, 96, 3)).astype(np.float32)
    conv1, expand, dw = (t.numpy() for t in probe(x))
    np.testing.assert_allclose(_run_conv(tm, ops["Conv1"], x), conv1, rtol=1e-4, atol=1e-4)
    assert ops["block_1_depthwise"].attr_values()["pads"] == (0, 0, 1, 1)  # ZeroPadding2D
    np.testing.assert_allclose(_run_conv(tm, ops["block_1_depthwise"], expand), dw,
                               rtol=1e-4, atol=1e-4)


def test_rescaling_and_identity_layers() -> None:
    inp = keras.Input((4, 4, 2))
    x = L.Rescaling(1 / 127.5, offset=-1.0, name="scale")(inp)
    x = L.Identity(name="ident")(x)
    x = L.GaussianNoise(0.1, name="noise")(x)
    model = keras.Model(inp, L.Conv2D(3, 1, name="conv")(x))
    tm = convert(model)
    assert [op.type for op in tm.file.ops] == [OpType.MUL, OpType.ADD, OpType.CONV_2D]
    assert tm.report.action_counts["remove_identity"] == 2
    x = np.random.default_rng(6).uniform(0, 255, (1, 4, 4, 2)).astype(np.float32)
    mul, add, conv = tm.file.ops
    t = tm.file.tensors
    h = x * t[mul.inputs[1]].data + t[add.inputs[1]].data
    np.testing.assert_allclose(_run_conv(tm, conv, h), model(x).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layer, shape", [
    ("Cropping1D", (9, 4)), ("Cropping2D", (9, 8, 3)), ("Cropping3D", (6, 7, 5, 2))])
def test_cropping_is_a_slice(layer, shape) -> None:
    import keras

    from tether.device import Engine

    crop = {"Cropping1D": (2, 3), "Cropping2D": ((1, 2), (0, 3)),
            "Cropping3D": ((1, 1), (2, 0), (0, 2))}[layer]
    x = keras.Input(shape)
    m = keras.Model(x, getattr(keras.layers, layer)(crop)(keras.layers.Dense(3)(x)))
    tm = convert(m)
    data = np.random.default_rng(0).normal(size=(2,) + shape).astype(np.float32)
    np.testing.assert_allclose(Engine(tm.to_bytes()).run(data), m.predict(data, verbose=0),
                               atol=1e-5)
    assert tm.report.ops_after["SLICE"] == 1
