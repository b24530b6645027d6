"""Weight-only int8/int4, calibration observers, the plan, BN folding and int8 emulation."""

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from keras import layers
from tether.compression import (
    CALIBRATION_METHODS,
    CalibrationConfig,
    CompressionError,
    QuantizationPlan,
    WeightQuantConfig,
    activation_qparams,
    calibrate,
    fold_batchnorm,
    pack_int4,
    quantize_weights,
    simulate_int8,
    unpack_int4,
)

from tether.models import demo_cnn


def _cnn():
    m = demo_cnn()
    rng = np.random.default_rng(0)
    for layer in m.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.2, n).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.2, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
    return m


@given(arrays(np.int8, st.integers(0, 33), elements=st.integers(-8, 7)))
def test_int4_pack_roundtrip_and_size(q):
    data = pack_int4(q)
    assert len(data) == (q.size + 1) // 2
    np.testing.assert_array_equal(unpack_int4(data, q.size), q)


@pytest.mark.parametrize("bits", [8, 4])
def test_weight_only_error_bound_and_size(bits):
    model = _cnn()
    qmodel, report = quantize_weights(model, WeightQuantConfig(bits=bits))
    qmax = 2 ** (bits - 1) - 1
    for name, (fbytes, qbytes, _) in report.layers.items():
        w = model.get_layer(name).kernel.numpy()
        wq = qmodel.get_layer(name).kernel.numpy()
        axis = 2 if name == "block_dw" else w.ndim - 1
        red = tuple(i for i in range(w.ndim) if i != axis)
        scale = np.abs(w).max(axis=red, keepdims=True) / qmax
        assert np.all(np.abs(wq - w) <= scale / 2 + 1e-7)  # round-to-nearest bound
        n_levels = len(np.unique(np.round(wq / scale)))
        assert n_levels <= 2 * qmax + 1
        channels = w.shape[axis]
        assert qbytes == (w.size if bits == 8 else (w.size + 1) // 2) + 4 * channels
        assert fbytes == 4 * w.size
    assert report.quantized_bytes < report.float_bytes / (3 if bits == 8 else 5)
    assert not np.array_equal(model.get_layer("stem_conv").kernel.numpy(),
                              qmodel.get_layer("stem_conv").kernel.numpy())


def test_weight_quant_bad_config():
    with pytest.raises(CompressionError, match="bits must be 4 or 8. Received: bits=3"):
        WeightQuantConfig(bits=3)
    with pytest.raises(CompressionError, match="no layer 'nope'"):
        quantize_weights(_cnn(), WeightQuantConfig(layers=("nope",)))


def test_fold_batchnorm_is_exact_and_removes_bn():
    model = _cnn()
    x = np.random.default_rng(1).uniform(size=(8, 8, 8, 1)).astype("float32")
    folded = fold_batchnorm(model)
    assert not any(isinstance(l, layers.BatchNormalization) for l in folded.layers)
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-6)


def test_minmax_ranges_are_the_observed_extremes():
    model = _cnn()
    x = np.random.default_rng(2).uniform(size=(40, 8, 8, 1)).astype("float32")
    plan = calibrate(model, x, CalibrationConfig("minmax", batch_size=16))
    probe = keras.Model(model.inputs, model.get_layer("block_add").output)
    out = probe.predict(x, verbose=0)
    assert plan.activation_ranges["block_add"] == pytest.approx((out.min(), out.max()), rel=1e-5)
    assert plan.activation_ranges["image"] == pytest.approx((x.min(), x.max()))
    assert set(plan.weight_scales) == {"stem_conv", "block_dw", "block_pw", "head_conv",
                                       "classifier"}
    assert plan.weight_scales["stem_conv"].shape == (16,)
    again = QuantizationPlan.from_json(plan.to_json())
    assert again.activation_ranges == plan.activation_ranges
    np.testing.assert_allclose(again.weight_scales["block_dw"], plan.weight_scales["block_dw"])


def test_percentile_and_entropy_clip_outliers():
    x_in = keras.Input((64,), name="x")
    model = keras.Model(x_in, layers.Activation("linear", name="id")(x_in))
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 64)).astype("float32")
    x[0, 0] = 60.0  # one outlier among 12800 values
    r = {m: calibrate(model, x, CalibrationConfig(m, percentile=99.9)).activation_ranges["id"]
         for m in CALIBRATION_METHODS}
    assert r["minmax"][1] == pytest.approx(60.0)
    for m in ("percentile", "entropy"):
        lo, hi = r[m]
        assert 2.0 < hi < 10.0 and -10.0 < lo < -2.0, (m, r[m])
    # mse keeps it: clipping 60 to ~4 costs more squared error than a 64/255 step adds to
    # the other 12,799 values (rounding error variance step^2/12 each)
    assert r["mse"][1] > 50.0, r["mse"]


def test_activation_qparams_make_zero_exact():
    scale, zp = activation_qparams(-1.0, 3.0)
    assert scale == pytest.approx(4.0 / 255)
    assert -128 <= zp <= 127 and abs(zp * scale + 128 * scale - 1.0) < scale


def test_simulated_int8_is_close_to_float():
    model = _cnn()
    x = np.random.default_rng(4).uniform(size=(64, 8, 8, 1)).astype("float32")
    plan = calibrate(model, x)
    sim = simulate_int8(model, plan)
    ref, got = model.predict(x, verbose=0), sim.predict(x, verbose=0)
    assert got.shape == ref.shape
    diff = np.abs(got - ref).max()
    assert 0 < diff < 0.02, diff  # quantization changes outputs, but only a little


@pytest.mark.parametrize("shape", [(10, 8, 8), (10, 8, 8, 3), (10, 28, 28, 1)])
def test_calibration_data_of_wrong_shape_fails_clearly(shape):
    with pytest.raises(CompressionError, match=r"does not fit model 'demo_cnn' input .*\(None, 8, 8, 1\)"):
        calibrate(_cnn(), np.zeros(shape, "float32"))


@pytest.mark.parametrize("kwargs, field", [({"method": "kl"}, "method"),
                                           ({"percentile": 40.0}, "percentile"),
                                           ({"num_bins": 10}, "num_bins"),
                                           ({"batch_size": 0}, "batch_size"),
                                           ({"bias_correction": "yes"}, "bias_correction")])
def test_bad_calibration_config(kwargs, field):
    with pytest.raises(CompressionError, match=f"CalibrationConfig.{field}.*Received"):
        CalibrationConfig(**kwargs)


def test_softmax_output_has_the_fixed_range_and_logits_are_calibrated():
    model = _cnn()
    x = np.random.default_rng(5).uniform(size=(32, 8, 8, 1)).astype("float32")
    for method in CALIBRATION_METHODS:
        plan = calibrate(model, x, CalibrationConfig(method))
        assert plan.activation_ranges["classifier"] == (0.0, 1.0)
        lo, hi = plan.activation_ranges["classifier:pre_activation"]
        assert lo < 0 < hi
        sim = simulate_int8(model, plan)
        diff = np.abs(sim.predict(x, verbose=0) - model.predict(x, verbose=0)).max()
        assert diff < 0.03, (method, diff)  # int8 softmax steps are 1/256


def test_entropy_threshold_of_a_relu_of_a_gaussian():
    x_in = keras.Input((64,), name="x")
    model = keras.Model(x_in, layers.ReLU(name="relu")(x_in))
    x = np.random.default_rng(6).normal(size=(300, 64)).astype("float32")
    x[0, 0] = 40.0  # one outlier
    lo, hi = calibrate(model, x, CalibrationConfig("entropy")).activation_ranges["relu"]
    assert lo == 0.0 and 2.5 < hi < 6.0, hi  # a few sigma: past the bulk, short of 40


def test_entropy_is_not_fooled_by_repeated_values():
    # A ReLU layer over a flat background: each channel repeats one constant on 60% of the
    # samples (what a conv+BN does to MNIST's zero pixels). KL over the raw histogram reads
    # those spikes as information lost and clipped a quarter of the signal (t ~ 0.6).
    x_in = keras.Input((16,), name="x")
    model = keras.Model(x_in, layers.ReLU(name="relu")(x_in))
    rng = np.random.default_rng(0)
    x = rng.normal(0.3, 1.0, size=(2000, 16)).astype("float32")
    background = rng.uniform(size=(2000, 1)) < 0.6
    x = np.where(background, np.linspace(-0.3, 0.6, 16, dtype="float32"), x)
    out = np.maximum(x, 0.0)
    lo, hi = calibrate(model, x, CalibrationConfig("entropy")).activation_ranges["relu"]
    assert lo == 0.0
    assert np.percentile(out[out > 0], 99) < hi <= out.max(), hi


def test_entropy_keeps_the_range_of_discrete_values():
    # digits' pixels take 17 values k/16: isolated spikes, each its own bucket at any
    # threshold, so KL ties everywhere and the full range must win (float rounding once
    # broke the tie towards 1/16)
    x_in = keras.Input((64,), name="x")
    model = keras.Model(x_in, layers.Activation("linear", name="id")(x_in))
    x = np.random.default_rng(7).integers(0, 17, size=(100, 64)).astype("float32") / 16
    assert calibrate(model, x, CalibrationConfig("entropy")).activation_ranges["id"] == (0.0, 1.0)


@pytest.mark.slow
def test_entropy_calibrated_cnn_keeps_the_accuracy_of_minmax():
    from tether.compression import fine_tune
    from tether.compression._common import accuracy

    from tether.data import digits

    ds = digits()
    model = _cnn()
    fine_tune(model, ds.x_train, ds.y_train, epochs=5, batch_size=32, learning_rate=3e-3)
    acc = {m: accuracy(simulate_int8(model, calibrate(model, ds.x_train[:200],
                                                      CalibrationConfig(m))),
                       ds.x_test, ds.y_test) for m in ("minmax", "entropy")}
    assert acc["minmax"] > 0.6, acc  # the model learned something
    assert acc["entropy"] >= acc["minmax"] - 0.01, acc


def _int8_mse(x: np.ndarray, lo: float, hi: float) -> float:
    scale, zp = activation_qparams(lo, hi)
    q = np.clip(np.round(x / scale) + zp, -128, 127)
    return float(np.mean((x - (q - zp) * scale) ** 2))


@pytest.mark.parametrize("dist", ["laplace", "relu_normal", "skewed"])
def test_mse_range_has_less_quantization_error_than_its_neighbours(dist):
    # Prepare: heavy-tailed, one-sided and asymmetric activations
    rng = np.random.default_rng(8)
    x = {"laplace": rng.laplace(size=(400, 64)),
         "relu_normal": np.maximum(rng.normal(size=(400, 64)), 0.0),
         "skewed": rng.gamma(1.5, size=(400, 64)) - 0.8}[dist].astype("float32")
    x_in = keras.Input((64,), name="x")
    model = keras.Model(x_in, layers.Activation("linear", name="id")(x_in))
    # Execute
    r = {m: calibrate(model, x, CalibrationConfig(m)).activation_ranges["id"]
         for m in ("minmax", "mse")}
    # Assert: the chosen range beats min-max and a narrower and a wider clip on the data
    lo, hi = r["mse"]
    err = _int8_mse(x, lo, hi)
    assert err < _int8_mse(x, *r["minmax"]), (dist, r)
    assert err <= _int8_mse(x, lo * 0.8, hi * 0.8) and err <= _int8_mse(x, lo * 1.25, hi * 1.25)
    assert (lo, hi) != r["minmax"] and x.min() <= lo <= 0.0 <= hi <= x.max()


def test_mse_keeps_the_range_of_discrete_values():
    # digits' pixels k/16: repeated values (bin means, not centres, are quantized), so the
    # range stays near [0, 1]; a step that fits the grid a little better may clip 1.0 by a
    # fraction of a step, and only when that lowers the error on the data
    x_in = keras.Input((64,), name="x")
    model = keras.Model(x_in, layers.Activation("linear", name="id")(x_in))
    x = np.random.default_rng(7).integers(0, 17, size=(100, 64)).astype("float32") / 16
    lo, hi = calibrate(model, x, CalibrationConfig("mse")).activation_ranges["id"]
    assert lo == 0.0 and 1.0 - 1 / 255 < hi <= 1.0, hi
    assert _int8_mse(x, lo, hi) <= _int8_mse(x, 0.0, 1.0)
