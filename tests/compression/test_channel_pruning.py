"""Structured channel pruning: dependency groups, exactness, MAC targets, MobileNetV2."""

import keras
import numpy as np
import pytest
from keras import layers
from tether.compression import (
    ChannelPruningConfig,
    CompressionError,
    count_macs,
    dependency_groups,
    prune_channels,
)


def _branchy(seed: int = 0) -> keras.Model:
    """Residual add, depthwise passthrough, channel concat, BN after conv, GAP+Flatten+Dense."""
    keras.utils.set_random_seed(seed)
    x_in = keras.Input((8, 8, 3), name="img")
    a = layers.Conv2D(8, 3, padding="same", name="a_conv")(x_in)
    a = layers.BatchNormalization(name="a_bn")(a)
    a = layers.ReLU(name="a_relu")(a)
    b = layers.DepthwiseConv2D(3, padding="same", name="b_dw")(a)
    b = layers.BatchNormalization(name="b_bn")(b)
    b = layers.Conv2D(8, 1, name="b_pw")(b)
    r = layers.Add(name="res")([a, b])
    c1 = layers.Conv2D(6, 1, activation="relu", name="c1")(r)
    c2 = layers.Conv2D(4, 3, padding="same", activation="relu", name="c2")(r)
    cat = layers.Concatenate(name="cat")([c1, c2])
    d = layers.Conv2D(6, 1, activation="relu", name="d")(cat)
    p = layers.MaxPooling2D(2, name="pool")(d)
    f = layers.Flatten(name="flat")(p)
    out = layers.Dense(5, name="logits")(f)
    return keras.Model(x_in, out, name="branchy")


def _randomize_bn(model: keras.Model, rng: np.random.Generator) -> None:
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.1, n).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.1, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, n).astype("float32"))


def test_dependency_groups_tie_residual_add_and_split_concat():
    groups = {frozenset(g) for g in dependency_groups(_branchy())}
    assert frozenset({"a_conv", "b_pw"}) in groups  # tied by the residual Add
    assert frozenset({"c1"}) in groups and frozenset({"c2"}) in groups  # concat parts
    assert frozenset({"d"}) in groups


def test_pruning_zeroed_channels_leaves_outputs_unchanged():
    # Prepare: zero channels 1 and 5 of the residual group (both producers, their BNs
    # and the depthwise bias), channels 0, 2 of c1 and 3 of c2, channels 0, 3, 4 of d.
    model = _branchy()
    rng = np.random.default_rng(0)
    _randomize_bn(model, rng)
    dead_res, dead_c1, dead_c2, dead_d = [1, 5], [0, 2], [3], [0, 3, 4]

    def zero_out(name, chans):
        layer = model.get_layer(name)
        k, bias = layer.kernel.numpy(), layer.bias.numpy()
        k[..., chans] = 0
        bias[chans] = 0
        layer.kernel.assign(k)
        layer.bias.assign(bias)

    for name in ("a_conv", "b_pw"):
        zero_out(name, dead_res)
    bn = model.get_layer("a_bn")
    for var in (bn.gamma, bn.beta):
        v = var.numpy()
        v[dead_res] = 0
        var.assign(v)
    dw = model.get_layer("b_dw")
    bias = dw.bias.numpy()
    bias[dead_res] = 0
    dw.bias.assign(bias)
    bbn = model.get_layer("b_bn")
    for var in (bbn.beta, bbn.moving_mean):  # BN of a zero channel must stay zero
        v = var.numpy()
        v[dead_res] = 0
        var.assign(v)
    zero_out("c1", dead_c1)
    zero_out("c2", dead_c2)
    zero_out("d", dead_d)
    x = rng.uniform(size=(4, 8, 8, 3)).astype("float32")
    before = np.asarray(model(x, training=False))

    # Execute: fraction 0.25 keeps ceil(0.75 n): 6/8, 5/6, 3/4, 5/6, so every removed
    # channel is one of the zeroed (zero-importance) ones.
    pruned, report = prune_channels(model, ChannelPruningConfig(fraction=0.25))
    keep = report.channels
    assert keep["a_conv"] == (8, 6) and keep["b_pw"] == (8, 6)
    assert keep["c1"] == (6, 5) and keep["c2"] == (4, 3) and keep["d"] == (6, 5)
    after = np.asarray(pruned(x, training=False))

    # Assert: shapes first, then values; the smaller model computes the same function.
    assert after.shape == before.shape and after.dtype == before.dtype
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
    assert pruned.get_layer("b_dw").kernel.shape[2] == 6
    assert pruned.get_layer("d").kernel.shape[2] == 8  # 5 + 3 after concat
    assert pruned.get_layer("logits").kernel.shape[0] == 4 * 4 * 5  # flatten of 4x4x5
    assert report.macs_after == count_macs(pruned) < report.macs_before


def test_bn_importance_prunes_zero_gamma_channels():
    model = _branchy()
    rng = np.random.default_rng(1)
    _randomize_bn(model, rng)
    bn = model.get_layer("a_bn")
    g = bn.gamma.numpy()
    g[[2, 7]] = 0.0
    bn.gamma.assign(g)
    pruned, report = prune_channels(model, ChannelPruningConfig(0.25, importance="bn",
                                                                exclude=("c1", "c2", "d")))
    assert report.channels["a_conv"] == (8, 6)
    assert report.channels["c1"] == (6, 6)
    kept_gamma = pruned.get_layer("a_bn").gamma.numpy()
    assert np.all(kept_gamma > 0) and kept_gamma.shape == (6,)


def test_mac_target_is_met_on_mobilenet_v2():
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None)
    pruned, report = prune_channels(model, ChannelPruningConfig(0.5, target="macs"))
    assert report.macs_before == count_macs(model)
    assert report.macs_after <= 0.5 * report.macs_before
    assert report.macs_after > 0.4 * report.macs_before  # not overshooting wildly
    assert report.params_after < report.params_before
    assert "predictions" in report.fixed  # class count is never pruned
    out = pruned(np.zeros((1, 96, 96, 3), "float32"), training=False)
    assert tuple(out.shape) == (1, 1000)


def test_sequential_model_is_supported():
    model = keras.Sequential([keras.Input((6, 6, 1)), layers.Conv2D(4, 3, name="c"),
                              layers.Flatten(), layers.Dense(3, name="out")])
    pruned, report = prune_channels(model, ChannelPruningConfig(0.5))
    assert report.channels["c"] == (4, 2)
    assert tuple(pruned(np.zeros((1, 6, 6, 1), "float32")).shape) == (1, 3)


@pytest.mark.parametrize("kwargs, field", [
    ({"fraction": 1.0}, "fraction"), ({"fraction": -0.1}, "fraction"),
    ({"target": "flops"}, "target"), ({"importance": "l2"}, "importance"),
    ({"min_channels": 0}, "min_channels"), ({"allocation": "greedy"}, "allocation"),
    ({"allocation": "latency"}, "allocation"), ({"tile": 0}, "tile"),
    ({"max_group_fraction": 1.0}, "max_group_fraction"),
])
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(CompressionError, match=f"ChannelPruningConfig.{field}.*Received"):
        ChannelPruningConfig(**kwargs)


def test_unknown_exclude_layer_fails_clearly():
    with pytest.raises(CompressionError, match="no layer 'nope'"):
        prune_channels(_branchy(), ChannelPruningConfig(0.5, exclude=("nope",)))


def test_unreachable_mac_target_fails_clearly():
    x = keras.Input((4, 4, 1))
    model = keras.Model(x, layers.Conv2D(2, 1, name="only")(x))  # output channels fixed
    with pytest.raises(CompressionError, match="cannot be reached"):
        prune_channels(model, ChannelPruningConfig(0.5, target="macs"))


def test_count_macs_closed_form():
    x = keras.Input((6, 6, 4))
    h = layers.DepthwiseConv2D(3, padding="same")(x)        # 6*6*9*4      = 1296
    h = layers.SeparableConv2D(8, 3)(h)                      # 4*4*9*4 + 4*4*4*8 = 1088
    h = layers.GlobalAveragePooling2D()(h)
    model = keras.Model(x, layers.Dense(5)(h))               # 8*5          = 40
    assert count_macs(model) == 1296 + 1088 + 40


def test_separable_conv_channels_are_pruned_and_sliced():
    keras.utils.set_random_seed(0)
    x = keras.Input((6, 6, 3))
    h = layers.Conv2D(8, 1, name="c")(x)
    h = layers.SeparableConv2D(6, 3, padding="same", name="sep")(h)
    model = keras.Model(x, layers.Dense(2, name="out")(layers.GlobalAveragePooling2D()(h)))
    pruned, report = prune_channels(model, ChannelPruningConfig(0.5))
    assert report.channels["c"] == (8, 4) and report.channels["sep"] == (6, 3)
    assert pruned.get_layer("sep").depthwise_kernel.shape[2] == 4
    assert tuple(pruned.get_layer("sep").pointwise_kernel.shape) == (1, 1, 4, 3)


def _wide(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    x = keras.Input((8, 8, 3))
    h = layers.Conv2D(64, 3, padding="same", activation="relu", name="c1")(x)
    h = layers.Conv2D(64, 3, padding="same", activation="relu", name="c2")(h)
    h = layers.Conv2D(48, 1, activation="relu", name="c3")(h)
    h = layers.GlobalAveragePooling2D()(h)
    return keras.Model(x, layers.Dense(4, name="out")(h))


def test_latency_allocation_meets_target_in_tile_aligned_steps():
    model = _wide()
    cfg = ChannelPruningConfig(0.5, target="macs", allocation="latency", tile=32, round_to=8,
                               max_group_fraction=0.6)
    pruned, report = prune_channels(model, cfg)
    assert report.macs_after <= 0.5 * report.macs_before
    for name in ("c1", "c2", "c3"):
        before, after = report.channels[name]
        assert after % 8 == 0 and after >= 0.4 * before, (name, before, after)
    # the padded cost the greedy minimises never exceeds what uniform pruning pays
    from tether.compression._graph import parse
    from tether.compression.channel_pruning import _Analysis

    def padded(m: keras.Model) -> int:
        return _Analysis(parse(m)).total_macs({}, 32)

    uniform, _ = prune_channels(model, ChannelPruningConfig(0.5, target="macs", round_to=8))
    assert padded(pruned) <= padded(uniform)
    out = pruned(np.zeros((1, 8, 8, 3), "float32"))
    assert tuple(out.shape) == (1, 4)


def test_tile_padding_in_the_cost():
    from tether.compression._graph import parse
    from tether.compression.channel_pruning import _Analysis

    x = keras.Input((4, 4, 2))
    model = keras.Model(x, layers.Conv2D(20, 1, name="c")(x))
    an = _Analysis(parse(model))
    assert an.total_macs({}) == 16 * 2 * 20
    assert an.total_macs({}, 16) == 16 * 2 * 32  # 20 outputs take two 16-wide panels


def test_latency_allocation_unreachable_fails_clearly():
    cfg = ChannelPruningConfig(0.9, target="macs", allocation="latency", round_to=8,
                               max_group_fraction=0.5)
    with pytest.raises(CompressionError, match="allocation='latency'.*max_group_fraction"):
        prune_channels(_wide(), cfg)
