"""Quantization-aware training with fake-quant (straight-through estimator).

`prepare_qat` rebuilds a float model so that training sees int8 rounding exactly where the
converter will put it:

- Each Conv2D / DepthwiseConv2D / Dense followed by a BatchNormalization becomes one
  `QATConv` layer that folds the BN into the kernel and bias on the fly, the way the
  converter folds it (moving statistics: `w' = w·γ/√(σ²+ε)`, `b' = (b−μ)·γ/√(σ²+ε) + β`;
  the statistics are frozen during QAT, γ and β train), then fake-quantizes the folded
  kernel per output channel to int8 (symmetric, [-127, 127]).
- Every tensor the int8 graph materialises (the input and each layer output that is not
  folded into a following BN or fused with a following ReLU) goes through a
  `FakeQuantRange` layer: int8 asymmetric with a range tracked as an exponential moving
  average of batch min/max, starting from a calibration.

`export_qat` returns the plain BN-folded float model and the `QuantizationPlan` with the
learned ranges: what the converter lowers to int8. A Conv/Dense with a softmax, sigmoid or
tanh activation is exported as the linear layer plus an `Activation` layer named
`<layer>_activation` (the int8 graph runs them as two ops; the range between them is
learned, the one after is the int8 spec's fixed range).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from tether.compression._errors import CompressionError
from tether.compression._graph import Node, parse, rebuild
from tether.compression.quantize import (
    _FUSABLE_ACT,
    _PASSTHROUGH,
    _WEIGHTED,
    PRE_ACTIVATION,
    QuantizationPlan,
    _bn_after,
    _channel_axis,
    _per_channel_scale,
    calibrate,
    split_activation,
)

__all__ = ["QATConfig", "export_qat", "prepare_qat"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QATConfig:
    """Attributes:
        ema_decay: Range EMA decay in [0, 1) (default 0.99); 0 uses each batch's range.
    """

    ema_decay: float = 0.99

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema_decay < 1.0:
            raise CompressionError(
                f"QATConfig.ema_decay must be in [0, 1). Received: ema_decay={self.ema_decay}")


def _layers() -> tuple[Any, Any]:
    import keras
    from keras import ops

    def ste_round(x: Any) -> Any:
        return x + ops.stop_gradient(ops.round(x) - x)

    class FakeQuantRange(keras.layers.Layer):
        """int8 asymmetric fake-quant with an EMA range (STE gradients inside the range)."""

        def __init__(self, lo: float = 0.0, hi: float = 1.0, ema_decay: float = 0.99,
                     **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.init_lo, self.init_hi, self.ema_decay = float(lo), float(hi), float(ema_decay)

        def build(self, input_shape: Any) -> None:
            self.lo = self.add_weight(shape=(), initializer=keras.initializers.Constant(
                self.init_lo), trainable=False, name="lo")
            self.hi = self.add_weight(shape=(), initializer=keras.initializers.Constant(
                self.init_hi), trainable=False, name="hi")

        def call(self, x: Any, training: bool = False) -> Any:
            if training:
                d = self.ema_decay
                self.lo.assign(d * self.lo + (1 - d) * ops.min(x))
                self.hi.assign(d * self.hi + (1 - d) * ops.max(x))
            lo = ops.minimum(self.lo, 0.0)
            hi = ops.maximum(self.hi, lo + 1e-6)
            scale = (hi - lo) / 255.0
            zp = ops.clip(ops.round(-128.0 - lo / scale), -128.0, 127.0)
            q = ops.clip(ste_round(x / scale) + zp, -128.0, 127.0)
            return (q - zp) * scale

        def compute_output_shape(self, input_shape: Any) -> Any:
            return input_shape

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "lo": self.init_lo, "hi": self.init_hi,
                    "ema_decay": self.ema_decay}

    class QATConv(keras.layers.Layer):
        """Conv2D / DepthwiseConv2D / Dense with an optional folded BN and per-channel
        int8 fake-quant of the folded kernel."""

        def __init__(self, kind: str, layer_config: dict[str, Any], with_bn: bool = False,
                     epsilon: float = 1e-3, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.kind, self.layer_config = kind, dict(layer_config)
            self.with_bn, self.epsilon = with_bn, float(epsilon)
            self.activation = keras.activations.get(self.layer_config.get("activation"))

        def build(self, input_shape: Any) -> None:
            c = self.layer_config
            cin = int(input_shape[-1])
            if self.kind == "Dense":
                kshape: tuple[int, ...] = (cin, int(c["units"]))
            elif self.kind == "Conv2D":
                kshape = tuple(c["kernel_size"]) + (cin, int(c["filters"]))
            else:
                kshape = tuple(c["kernel_size"]) + (cin, int(c.get("depth_multiplier", 1)))
            cout = kshape[-1] if self.kind != "DepthwiseConv2D" else cin * kshape[-1]
            self.kernel = self.add_weight(shape=kshape, name="kernel")
            self.bias = self.add_weight(shape=(cout,), initializer="zeros", name="bias")
            if self.with_bn:
                self.gamma = self.add_weight(shape=(cout,), initializer="ones", name="gamma")
                self.beta = self.add_weight(shape=(cout,), initializer="zeros", name="beta")
                self.moving_mean = self.add_weight(shape=(cout,), initializer="zeros",
                                                   trainable=False, name="moving_mean")
                self.moving_variance = self.add_weight(shape=(cout,), initializer="ones",
                                                       trainable=False, name="moving_variance")

        def folded(self) -> tuple[Any, Any]:
            k, b = self.kernel, self.bias
            if self.with_bn:
                scale = self.gamma / ops.sqrt(self.moving_variance + self.epsilon)
                if self.kind == "DepthwiseConv2D":
                    k = k * ops.reshape(scale, (k.shape[2], k.shape[3]))
                else:
                    k = k * scale
                b = (b - self.moving_mean) * scale + self.beta
            return k, b

        def call(self, x: Any) -> Any:
            k, b = self.folded()
            axis = 2 if self.kind == "DepthwiseConv2D" else len(k.shape) - 1
            red = tuple(i for i in range(len(k.shape)) if i != axis)
            s = ops.maximum(ops.max(ops.abs(k), axis=red, keepdims=True), 1e-12) / 127.0
            kq = ops.clip(ste_round(k / s), -127.0, 127.0) * s
            c = self.layer_config
            if self.kind == "Dense":
                y = ops.matmul(x, kq)
            elif self.kind == "Conv2D":
                y = ops.conv(x, kq, strides=c["strides"], padding=c["padding"],
                             dilation_rate=c["dilation_rate"])
            else:
                y = ops.depthwise_conv(x, kq, strides=c["strides"], padding=c["padding"],
                                       dilation_rate=c["dilation_rate"])
            return self.activation(y + b)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "kind": self.kind,
                    "layer_config": self.layer_config, "with_bn": self.with_bn,
                    "epsilon": self.epsilon}

    return FakeQuantRange, QATConv


def prepare_qat(model: Any, calibration: np.ndarray, config: QATConfig = QATConfig()) -> Any:
    """The fake-quant training model of `model` (weights copied; source unchanged).

    Args:
        model: Keras Functional/Sequential float model (ideally trained).
        calibration: Samples, (N,) + input shape, that initialise the ranges (min-max).
        config: EMA decay of the ranges.

    Returns:
        A Keras model to compile and `fit` as usual; pass it to `export_qat` afterwards.

    Raises:
        CompressionError: calibration data of the wrong shape; grouped/dilated conv
            layers are kept float (quantized by their output only).
    """
    import keras

    FakeQuantRange, QATConv = _layers()
    graph = parse(model)
    plan = calibrate(graph.model, calibration)
    folded_into = {bn.name: n for n in graph.order if (bn := _bn_after(graph, n)) is not None}
    producers = {v: k for k, v in folded_into.items()}

    def fused_with_next(name: str) -> bool:
        cons = graph.consumers(name)
        if len(cons) != 1 or name in graph.outputs:
            return False
        nxt = graph.nodes[cons[0]]
        return cons[0] in folded_into or (
            nxt.class_name in _FUSABLE_ACT + ("Activation",)
            and nxt.config.get("activation", "relu") in ("relu", "relu6"))

    def fn(node: Node, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if node.name in folded_into:
            return args[0]
        cls = node.class_name
        if cls in ("Conv2D", "DepthwiseConv2D", "Dense") and int(node.config.get("groups", 1)) == 1:
            bn = graph.nodes[producers[node.name]].layer if node.name in producers else None
            act = split_activation(node)
            lcfg = node.layer.get_config()
            if act is not None:  # softmax/sigmoid/tanh run as their own int8 op
                lcfg = {**lcfg, "activation": "linear"}
            layer = QATConv(cls, lcfg, with_bn=bn is not None,
                            epsilon=bn.epsilon if bn is not None else 1e-3,
                            name=node.name)
            out = layer(*args, **kwargs)
            layer.kernel.assign(np.asarray(node.layer.kernel))
            if getattr(node.layer, "use_bias", False):
                layer.bias.assign(np.asarray(node.layer.bias))
            if bn is not None:
                bw = {v.name: np.asarray(v) for v in bn.weights}
                n = bw["moving_mean"].shape[0]
                layer.gamma.assign(bw.get("gamma", np.ones(n, np.float32)))
                layer.beta.assign(bw.get("beta", np.zeros(n, np.float32)))
                layer.moving_mean.assign(bw["moving_mean"])
                layer.moving_variance.assign(bw["moving_variance"])
            if act is not None:
                lo, hi = plan.activation_ranges[node.name + PRE_ACTIVATION]
                out = FakeQuantRange(lo, hi, config.ema_decay, name=f"{node.name}__fq")(out)
                out = keras.layers.Activation(act, name=f"{node.name}_activation")(out)
                lo, hi = plan.activation_ranges[node.name]  # fixed by the int8 spec
                return FakeQuantRange(lo, hi, 1.0, name=f"{node.name}_activation__fq")(out)
        else:
            layer = type(node.layer).from_config(node.layer.get_config())
            out = layer(*args, **kwargs)
            layer.set_weights(node.layer.get_weights())
        out_name = producers.get(node.name, node.name)
        if fused_with_next(out_name) or cls in _PASSTHROUGH:  # int8 keeps the input's scale
            return out
        lo, hi = plan.activation_ranges[out_name]
        return FakeQuantRange(lo, hi, config.ema_decay, name=f"{out_name}__fq")(out)

    inner = rebuild(graph, fn, name=f"{graph.model.name}_qat_body")
    in_name = graph.inputs[0]
    x_in = keras.Input(batch_shape=tuple(inner.inputs[0].shape), name=in_name)
    lo, hi = plan.activation_ranges[in_name]
    x = FakeQuantRange(lo, hi, config.ema_decay, name=f"{in_name}__fq")(x_in)
    return keras.Model(x_in, inner(x), name=f"{graph.model.name}_qat")


def export_qat(qat_model: Any) -> tuple[Any, QuantizationPlan]:
    """(BN-folded plain float model, plan with the learned ranges) from a `prepare_qat` model.

    The float model has the folded kernels and biases (no BN); the plan keys each range by
    the Keras layer name in the exported model whose output it quantizes (and the input by
    its InputLayer name), and holds the per-channel int8 scales of the folded kernels.
    `tether.converter.convert(plain, quantize="int8", plan=plan)` lowers the pair to the
    int8 `.tmodel` whose engine output follows the QAT model's fake-quant forward.
    """
    import keras

    body = next((l for l in qat_model.layers if isinstance(l, keras.Model)), None)
    if body is None:
        raise CompressionError(
            f"export_qat: model '{qat_model.name}' was not made by prepare_qat")
    ranges: dict[str, tuple[float, float]] = {}
    for layer in list(qat_model.layers) + list(body.layers):
        if layer.name.endswith("__fq"):  # the range of the tensor it quantizes
            ranges[layer.name[:-4]] = (float(np.asarray(layer.lo)), float(np.asarray(layer.hi)))
    graph = parse(body)

    def fn(node: Node, args: list[Any], kwargs: dict[str, Any]) -> Any:
        layer = node.layer
        if node.name.endswith("__fq"):
            return args[0]
        if type(layer).__name__ == "QATConv":
            cfg = dict(layer.layer_config)
            cfg["use_bias"] = True
            new = getattr(keras.layers, layer.kind).from_config(cfg)
            out = new(*args, **kwargs)
            k, b = layer.folded()
            new.kernel.assign(np.asarray(k))
            new.bias.assign(np.asarray(b))
            return out
        new = type(layer).from_config(layer.get_config())
        out = new(*args, **kwargs)
        new.set_weights(layer.get_weights())
        return out

    plain = rebuild(graph, fn, name=qat_model.name.removesuffix("_qat"))
    # the folded conv's output took the BN's name in the plan: alias it to the conv
    names = {l.name for l in plain.layers}
    folded_alias = {}
    for node in graph.nodes.values():
        if type(node.layer).__name__ == "QATConv" and node.layer.with_bn:
            cons = graph.consumers(node.name)
            if len(cons) == 1 and cons[0].endswith("__fq"):
                folded_alias[node.name] = cons[0][:-4]
    for conv, bn in folded_alias.items():
        if bn in ranges and conv not in ranges:
            ranges[conv] = ranges[bn]
    in_name = plain.inputs[0].name
    for n in list(ranges):  # the folded BNs are gone from the export
        if n not in names and n != in_name:
            logger.debug("QAT range for %s has no layer in the export", n)
            del ranges[n]
    pgraph = parse(plain)
    for name in pgraph.order:  # pooling/reshape/dropout outputs keep their input's range
        node = pgraph.nodes[name]
        if name not in ranges and node.class_name in _PASSTHROUGH and node.inputs[0] in ranges:
            ranges[name] = ranges[node.inputs[0]]
    scales = {l.name: _per_channel_scale(np.asarray(l.kernel),
                                         _channel_axis(type(l).__name__, np.asarray(l.kernel)), 127)
              for l in plain.layers if type(l).__name__ in _WEIGHTED}
    return plain, QuantizationPlan(ranges, scales, "qat")
