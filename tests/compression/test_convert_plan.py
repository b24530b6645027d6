"""QuantizationPlan -> tether.converter.convert -> int8 .tmodel run by the engine.

The engine's int8 output is compared with the Keras emulation of the same int8 graph
(`simulate_int8`) for PTQ plans and with the QAT model's fake-quant forward for QAT plans.
"""

import keras
import numpy as np
import pytest
from keras import layers
from tether.compression import (
    CalibrationConfig,
    CompressionError,
    QATConfig,
    QuantizationPlan,
    activation_qparams,
    calibrate,
    export_qat,
    fine_tune,
    prepare_qat,
    simulate_int8,
)
from tether.converter import convert
from tether.converter._internal.ops import DType, OpType
from tether.device import Engine

from tether.errors import ConversionError


def _tiny(seed: int = 0) -> keras.Model:
    """conv+BN+ReLU, depthwise+BN+ReLU6, conv+BN, residual add, GAP, dense softmax: the
    int8 ops MobileNetV2 needs (no pooling: the engine has no int8 pool kernel yet)."""
    keras.utils.set_random_seed(seed)
    x_in = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem_conv")(x_in)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    y = layers.BatchNormalization(name="dw_bn")(y)
    y = layers.ReLU(6.0, name="dw_relu6")(y)
    y = layers.Conv2D(8, 1, use_bias=False, name="pw")(y)
    y = layers.BatchNormalization(name="pw_bn")(y)
    x = layers.Add(name="add")([x, y])
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.1, name="dropout")(x)
    out = layers.Dense(4, activation="softmax", name="classifier")(x)
    model = keras.Model(x_in, out, name="tiny")
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n))
            layer.beta.assign(rng.normal(0, 0.2, n))
            layer.moving_mean.assign(rng.normal(0, 0.2, n))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, n))
    return model


def _data(n: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 8, 8, 1)).astype("float32")
    y = (x[:, :4].mean(axis=(1, 2, 3)) > x[:, 4:].mean(axis=(1, 2, 3))).astype("int64") * 3
    return x, y


def _engine(model: keras.Model, plan: QuantizationPlan, x: np.ndarray) -> np.ndarray:
    tm = convert(model, quantize="int8", plan=plan)
    eng = Engine(tm.to_bytes(), threads=1)
    return np.concatenate([np.asarray(eng.run(x[i:i + 1])) for i in range(len(x))])


def _agree(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert got.shape == ref.shape and got.dtype == np.float32, (got.shape, got.dtype)
    top1 = float(np.mean(got.argmax(-1) == ref.argmax(-1)))
    diff = float(np.abs(got - ref).max())
    # softmax output in int8 has steps of 1/256; requantization rounds a step either way
    assert top1 >= 0.97 and diff <= 3 / 256, f"{what}: top-1 agreement {top1}, max abs diff {diff}"


@pytest.mark.parametrize("method, bias_correction", [("minmax", False), ("entropy", False),
                                                     ("mse", False), ("mse", True)])
def test_ptq_plan_runs_int8_in_engine_like_the_emulation(method, bias_correction):
    # Prepare
    model = _tiny()
    x, _ = _data()
    plan = calibrate(model, x[:64], CalibrationConfig(method, bias_correction=bias_correction))
    assert bool(plan.bias_corrections) == bias_correction
    # Execute
    tm = convert(model, quantize="int8", plan=plan)
    got = _engine(model, plan, x)
    # Assert: every compute op is int8, and the engine computes what the emulation computes
    t = tm.graph.tensors
    for node in tm.graph.nodes:
        if node.op not in (OpType.QUANTIZE, OpType.DEQUANTIZE):
            assert t[node.outputs[0]].dtype == DType.INT8, node.describe()
    _agree(got, simulate_int8(model, plan).predict(x, verbose=0), f"PTQ {method}")


def test_plan_ranges_land_on_the_tensors_of_their_keras_layers():
    model = _tiny()
    x, _ = _data()
    plan = calibrate(model, x[:32])
    ranges = dict(plan.activation_ranges)
    ranges["stem_relu"] = (0.0, 2.55)  # conv+BN+ReLU chain: the ReLU's (last layer's) range
    ranges["classifier:pre_activation"] = (-5.1, 5.1)
    ranges["image"] = (0.0, 1.275)
    tm = convert(model, quantize="int8", plan=QuantizationPlan(ranges, method="minmax"))
    quant = {name.removesuffix("/int8"): t.quant for name, t in tm.graph.tensors.items()
             if t.dtype == DType.INT8 and t.data is None}
    for key, tensor in (("stem_relu", "stem_relu"), ("image", "image"),
                        ("classifier:pre_activation", "classifier/pre_activation"),
                        ("add", "add"), ("gap", "gap")):
        scale, zp = activation_qparams(*ranges[key])
        assert quant[tensor].scale[0] == pytest.approx(scale, rel=1e-6), key
        assert quant[tensor].zero_point[0] == zp, key


def test_qat_export_runs_in_engine_like_the_qat_model():
    # Prepare: a short QAT run moves the ranges and the BN-folded kernels
    model = _tiny()
    x, y = _data(192)
    qat = prepare_qat(model, x[:64], QATConfig(ema_decay=0.9))
    fine_tune(qat, x, y, epochs=1, batch_size=32, learning_rate=1e-3)
    # Execute
    plain, plan = export_qat(qat)
    got = _engine(plain, plan, x[:96])
    # Assert: the learned ranges are what the converter used, and outputs follow the QAT model
    assert not any(isinstance(l, layers.BatchNormalization) for l in plain.layers)
    assert set(plan.activation_ranges) <= {l.name for l in plain.layers} | {"image"}
    _agree(got, qat.predict(x[:96], verbose=0), "QAT")


def test_bad_plans_fail_clearly():
    model = _tiny()
    x, _ = _data(32)
    plan = calibrate(model, x)
    extra = QuantizationPlan({**plan.activation_ranges, "conv_99": (0.0, 1.0)})
    with pytest.raises(ConversionError, match=r"does not have: \['conv_99'\]"):
        convert(model, quantize="int8", plan=extra)
    missing = QuantizationPlan({k: v for k, v in plan.activation_ranges.items() if k != "add"})
    with pytest.raises(ConversionError, match=r"no range for Keras layer 'add' \(tensor 'add'"):
        convert(model, quantize="int8", plan=missing)
    with pytest.raises(ConversionError, match="plan= needs quantize='int8'"):
        convert(model, plan=plan)
    with pytest.raises(ConversionError, match="not both"):
        convert(model, quantize="int8", plan=plan, calibration=x)
    with pytest.raises(ConversionError, match="must be a tether.compression.QuantizationPlan"):
        convert(model, quantize="int8", plan={"add": (0.0, 1.0)})
    other = calibrate(_tiny(1), x)  # same layer names, same model: fine
    convert(model, quantize="int8", plan=other)


@pytest.mark.parametrize("shape", [(4, 8, 8), (4, 8, 8, 3), (4, 9, 9, 1)])
def test_calibration_data_of_wrong_shape_fails_clearly(shape):
    bad = np.zeros(shape, "float32")
    with pytest.raises(CompressionError, match=r"does not fit model 'tiny' input"):
        calibrate(_tiny(), bad)
    with pytest.raises(ConversionError, match=r"does not fit input 'image' \[1, 8, 8, 1\]"):
        convert(_tiny(), quantize="int8", calibration=bad)


def test_cli_ptq_writes_an_int8_tmodel_the_engine_runs(tmp_path):
    import json

    from tether.cli.compress import app
    from typer.testing import CliRunner

    out = tmp_path / "demo_int8.tmodel"
    res = CliRunner().invoke(app, ["quantize", "demo_cnn", "--data", "digits", "--samples",
                                   "32", "--tmodel", str(out)])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.output)
    assert out.is_file() and rec["tmodel_bytes"] == out.stat().st_size
    # an untrained model: the engine's int8 accuracy tracks the emulation's, not a fixed number
    assert abs(rec["engine_int8_accuracy"] - rec["emulated_int8_accuracy"]) <= 0.05, rec


def test_split_activation_takes_the_range_of_the_layer_before_it():
    # conv+BN+hard-swish: the converter fuses the activation, then the int8 lowering splits
    # it off again and needs the value before it: the BN layer's range in the plan
    keras.utils.set_random_seed(0)
    x_in = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(x_in)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Activation("hard_swish", name="hswish")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(x_in, layers.Dense(4, activation="softmax", name="fc")(x), name="hs")
    x, _ = _data(64)
    plan = calibrate(model, x[:32])
    ranges = {**plan.activation_ranges, "bn": (-4.0, 4.0)}
    tm = convert(model, quantize="int8", plan=QuantizationPlan(ranges))
    t = tm.graph.tensors
    (conv,) = [n for n in tm.graph.nodes if n.op == OpType.CONV_2D]
    (hs,) = [n for n in tm.graph.nodes if n.op == OpType.HARD_SWISH]
    assert t[hs.outputs[0]].dtype == DType.INT8
    assert t[conv.outputs[0]].quant.scale[0] == pytest.approx(8.0 / 255)
    got = _engine(model, plan, x)
    _agree(got, simulate_int8(model, plan).predict(x, verbose=0), "hard-swish")


def _biased_dense() -> tuple[keras.Model, np.ndarray]:
    """Dense 64 -> 4 whose int8 weights err the same way on every input: per channel one
    weight 1.0 (scale 1/127) and 63 weights f_c/127 with |f_c| < 0.5, which round to 0."""
    f = np.array([0.3, -0.3, 0.45, 0.1])
    x_in = keras.Input((64,), name="x")
    fc = layers.Dense(4, name="fc")
    model = keras.Model(x_in, fc(x_in), name="biased")
    k = np.tile(f / 127, (64, 1))
    k[0] = 1.0
    fc.set_weights([k.astype("float32"), np.zeros(4, "float32")])
    return model, f


def test_bias_correction_reaches_the_int32_bias_and_removes_the_mean_error():
    # Prepare: positive inputs, so the weights' rounding error shifts every output's mean
    model, f = _biased_dense()
    rng = np.random.default_rng(0)
    calib = rng.uniform(0.5, 1.5, (256, 64)).astype("float32")
    x = rng.uniform(0.5, 1.5, (200, 64)).astype("float32")
    # Execute
    plans = {bc: calibrate(model, calib, CalibrationConfig(bias_correction=bc))
             for bc in (False, True)}
    got = {bc: _engine(model, p, x) for bc, p in plans.items()}
    tm = convert(model, quantize="int8", plan=plans[True])
    # Assert: the correction is E[W_q x] - E[W x] in closed form ...
    want = -f / 127 * calib[:, 1:].mean(axis=0).sum()
    np.testing.assert_allclose(plans[True].bias_corrections["fc"], want, rtol=1e-4)
    # ... the converter folded it into the int32 bias ...
    (node,) = [n for n in tm.graph.nodes if n.op == OpType.FULLY_CONNECTED]
    bias = tm.graph.tensors[node.inputs[2]]
    x_scale = tm.graph.tensors[node.inputs[0]].quant.scale[0]
    assert bias.dtype == DType.INT32
    np.testing.assert_array_equal(bias.data, np.round(-want / (x_scale / 127)).astype(np.int32))
    # ... and the engine's mean output error is gone (it was -f * 63/127 * E[x] ~ 0.15)
    ref = model.predict(x, verbose=0)
    err = {bc: (g - ref).mean(axis=0) for bc, g in got.items()}
    assert np.all(np.abs(err[False] - want) < 0.01), err[False]
    assert np.all(np.abs(err[True]) < 0.01), err[True]
    sim = simulate_int8(model, plans[True]).predict(x, verbose=0)
    assert np.abs(sim - got[True]).max() < 0.02


def test_bad_bias_corrections_fail_clearly():
    model, _ = _biased_dense()
    calib = np.random.default_rng(0).uniform(size=(32, 64)).astype("float32")
    plan = calibrate(model, calib, CalibrationConfig(bias_correction=True))
    ranges = plan.activation_ranges
    with pytest.raises(ConversionError, match="bias correction for 'dense_9', which is no conv"):
        convert(model, quantize="int8",
                plan=QuantizationPlan(ranges, bias_corrections={"dense_9": np.zeros(4)}))
    with pytest.raises(ConversionError, match=r"bias correction for node .*fc.* has shape \(3,\)"):
        convert(model, quantize="int8",
                plan=QuantizationPlan(ranges, bias_corrections={"fc": np.zeros(3)}))
    again = QuantizationPlan.from_json(plan.to_json())
    np.testing.assert_allclose(again.bias_corrections["fc"], plan.bias_corrections["fc"])
