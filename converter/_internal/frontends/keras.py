"""Keras 3 frontend: Sequential and Functional models (nested models included) -> IR.

Every layer becomes one or a few IR nodes with weights already in the file's layout
(FORMAT.md): Conv2D kernels [KH,KW,IC/G,OC] -> [OC,KH,KW,IC/G], DepthwiseConv2D kernels
[KH,KW,C,M] -> [1,KH,KW,C*M], Dense kernels [K,O] -> [O,K]; Conv1D kernels [K,IC/G,OC] ->
[OC,1,K,IC/G], a CONV_2D on an [N,1,W,C] view between RESHAPEs. Activations become standalone
ops and BatchNormalization an internal op; the passes fuse and fold them.

TensorFlow and Keras are imported lazily, inside the functions that need them.
"""

from __future__ import annotations

import functools
import math

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from tether.converter._internal import ir
from tether.converter._internal.calibrate import pre_activation_key, pre_activation_tensor
from tether.converter._internal.ops import AnyOp, DType, InternalOp, OpType

from tether.errors import ConversionError

__all__ = ["SUPPORTED_LAYERS", "from_keras", "same_padding"]

logger = logging.getLogger(__name__)

_NO_OPS = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
           "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization",
           "Identity")


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow 'SAME' padding of one spatial axis: (begin, end), the extra cell at the end.

    out = ceil(size / stride); total = max((out - 1) * stride + (kernel - 1) * dilation + 1
    - size, 0); begin = total // 2.

    >>> same_padding(7, 3, 2)
    (1, 1)
    >>> same_padding(8, 3, 2)
    (0, 1)
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _np(value: Any) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(value))


def _gelu_approximate(fn: Any) -> int | None:
    """1 / 0 for keras.activations.gelu with / without approximate=True (also as a
    functools.partial of it, the way to pass approximate=True), None for anything else."""
    import keras

    if isinstance(fn, functools.partial) and fn.func is keras.activations.gelu and not fn.args:
        return int(bool(fn.keywords.get("approximate", False)))
    return 0 if fn is keras.activations.gelu else None


def _activation_name(fn: Any) -> str:
    import keras

    if isinstance(fn, functools.partial) and _gelu_approximate(fn) is not None:
        return "gelu"
    if fn is None:
        return "linear"
    name = keras.activations.serialize(fn)
    if isinstance(name, dict):
        name = name.get("config", name.get("class_name", repr(fn)))
    return str(name)


_ACTIVATION_OPS: Mapping[str, OpType | None] = {
    "linear": None,
    "relu": OpType.RELU,
    "relu6": OpType.RELU6,
    "sigmoid": OpType.LOGISTIC,
    "tanh": OpType.TANH,
    "hard_silu": OpType.HARD_SWISH,
    "hard_swish": OpType.HARD_SWISH,
    "softmax": OpType.SOFTMAX,
    "silu": OpType.MUL,  # x * sigmoid(x), emitted as LOGISTIC then MUL
    "swish": OpType.MUL,
    "gelu": OpType.GELU,  # approximate from _gelu_approximate
    "elu": OpType.ELU,  # keras.activations.elu: alpha 1.0
    "leaky_relu": OpType.LEAKY_RELU,  # keras.activations.leaky_relu: negative_slope 0.2
}

# alpha of the activation functions that have one (their Keras defaults)
_ACTIVATION_ALPHA: Mapping[str, float] = {"elu": 1.0, "leaky_relu": 0.2}


class _Builder:
    """Accumulates tensors and nodes while walking a Keras graph."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.graph = ir.GraphBuilder()
        self.tensors = self.graph.tensors
        self.nodes = self.graph.nodes
        self.current = ""  # node name of the layer being converted (nested: "outer/inner")
        # tensor -> Keras layer it carries the output of ("outer/inner" when nested;
        # "<layer>:pre_activation" for the tensor before a layer's `activation`)
        self.origins: dict[str, str] = {}

    # -- naming and emission

    def unique(self, base: str) -> str:
        return self.graph.unique(base)

    def const(self, name: str, value: np.ndarray) -> str:
        return self.graph.const(name, value)

    def emit(self, op: AnyOp, node_name: str, inputs: Sequence[str | None], out_base: str,
             attrs: Mapping[str, tuple] | None = None,
             declared: tuple[int, ...] | None = None) -> str:
        try:
            return self.graph.emit(op, node_name, inputs, out_base, attrs=attrs,
                                   declared=declared)
        except ir.ShapeError as e:
            raise ConversionError(f"layer '{node_name}' ({op.name}): {e}") from None

    def activation(self, fn: Any, x: str, layer: Any, name: str, out_base: str) -> str:
        act = _activation_name(fn)
        if act not in _ACTIVATION_OPS:
            raise ConversionError(
                f"layer '{layer.name}' ({type(layer).__name__}): activation '{act}' is not "
                f"supported; supported activations: {sorted(_ACTIVATION_OPS)}"
            )
        op = _ACTIVATION_OPS[act]
        if op is None:
            return x
        if act in ("silu", "swish"):
            s = self.emit(OpType.LOGISTIC, name, [x], f"{out_base}/sigmoid")
            return self.emit(OpType.MUL, name, [x, s], out_base)
        if op == OpType.SOFTMAX:
            return self.emit(op, name, [x], out_base, {"beta": (1.0,)})
        if op == OpType.GELU:
            return self.emit(op, name, [x], out_base,
                             {"approximate": (_gelu_approximate(fn) or 0,)})
        if act in _ACTIVATION_ALPHA:
            return self.emit(op, name, [x], out_base, {"alpha": (_ACTIVATION_ALPHA[act],)})
        return self.emit(op, name, [x], out_base)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.tensors[name].shape


def _fail(layer: Any, msg: str) -> ConversionError:
    return ConversionError(f"layer '{layer.name}' ({type(layer).__name__}): {msg}")


def _channels_last(layer: Any) -> None:
    fmt = getattr(layer, "data_format", "channels_last")
    if fmt != "channels_last":
        raise _fail(layer, f"data_format='{fmt}' is not supported; tether runs NHWC "
                           "(rebuild the model with data_format='channels_last')")


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = tuple(v)
    return int(a), int(b)


def _window_pads(layer: Any, x_shape: tuple[int, ...], kernel: tuple[int, int],
                 strides: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    padding = str(layer.padding).lower()
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        pt, pb = same_padding(x_shape[1], kernel[0], strides[0], dilation[0])
        pl, pr = same_padding(x_shape[2], kernel[1], strides[1], dilation[1])
        return (pt, pl, pb, pr)
    raise _fail(layer, f"padding='{layer.padding}' is not supported (use 'valid' or 'same')")


# ------------------------------------------------------------------------ layer converters
# Each takes (builder, layer, input names, output base name, declared output shape) and
# returns the name of the layer's output tensor.

Converter = Callable[[_Builder, Any, list[str], str, tuple[int, ...]], str]


def _pre(layer: Any, out: str) -> str:
    """Name of a layer's tensor before its `activation` (the layer's name when linear)."""
    return out if _activation_name(layer.activation) == "linear" else pre_activation_tensor(out)


def _one_input(layer: Any, xs: list[str]) -> str:
    if len(xs) != 1:
        raise _fail(layer, f"expected one input, got {len(xs)}")
    return xs[0]


def _conv2d(b: _Builder, layer: Any, xs: list[str], out: str, _d: tuple[int, ...]) -> str:
    x = _one_input(layer, xs)
    _channels_last(layer)
    kernel = _np(layer.kernel)  # [KH, KW, IC/G, OC]
    k = (kernel.shape[0], kernel.shape[1])
    strides, dil = _pair(layer.strides), _pair(layer.dilation_rate)
    pads = _window_pads(layer, b.shape(x), k, strides, dil)
    w = b.const(f"{out}/kernel", np.transpose(kernel, (3, 0, 1, 2)))
    oc = kernel.shape[3]
    bias = b.const(f"{out}/bias", _np(layer.bias) if layer.use_bias else np.zeros(oc, np.float32))
    y = b.emit(OpType.CONV_2D, b.current, [x, w, bias], _pre(layer, out),
               {"strides": strides, "dilations": dil, "pads": pads,
                "groups": (int(getattr(layer, "groups", 1)),)})
    return b.activation(layer.activation, y, layer, b.current, out)


def _conv1d(b: _Builder, layer: Any, xs: list[str], out: str, _d: tuple[int, ...]) -> str:
    """Conv1D: CONV_2D on an [N, 1, W, C] view of x, RESHAPEs around it ('causal' pads
    (k - 1) * d cells on the left); the activation runs on the 4-D result, so it fuses."""
    x = _one_input(layer, xs)
    _channels_last(layer)
    shape = b.shape(x)
    if len(shape) != 3:
        raise _fail(layer, f"expected a 3-D [N, steps, C] input, got {list(shape)}")
    n, w_in, c = shape
    kernel = _np(layer.kernel)  # [K, IC/G, OC]
    k, _, oc = kernel.shape
    (s,), (d,) = tuple(layer.strides), tuple(layer.dilation_rate)
    padding = str(layer.padding).lower()
    if padding == "valid":
        pl, pr = 0, 0
    elif padding == "same":
        pl, pr = same_padding(w_in, k, s, d)
    elif padding == "causal":
        pl, pr = (k - 1) * d, 0
    else:
        raise _fail(layer, f"padding='{layer.padding}' is not supported (use 'valid', 'same' "
                           "or 'causal')")
    ow = (w_in + pl + pr - d * (k - 1) - 1) // s + 1
    x4 = b.emit(OpType.RESHAPE, b.current, [x], f"{out}/nhwc", declared=(n, 1, w_in, c))
    w = b.const(f"{out}/kernel", np.transpose(kernel, (2, 0, 1))[:, None])  # [OC, 1, K, IC/G]
    bias = b.const(f"{out}/bias", _np(layer.bias) if layer.use_bias else np.zeros(oc, np.float32))
    linear = _activation_name(layer.activation) == "linear"
    y = b.emit(OpType.CONV_2D, b.current, [x4, w, bias],
               f"{out}/conv" if linear else pre_activation_tensor(out),
               {"strides": (1, s), "dilations": (1, d), "pads": (0, pl, 0, pr),
                "groups": (int(getattr(layer, "groups", 1)),)})
    y = b.activation(layer.activation, y, layer, b.current, f"{out}/act")
    return b.emit(OpType.RESHAPE, b.current, [y], out, declared=(n, ow, oc))


def _depthwise(b: _Builder, layer: Any, xs: list[str], out: str, _d: tuple[int, ...]) -> str:
    x = _one_input(layer, xs)
    _channels_last(layer)
    kernel = _np(layer.kernel)  # [KH, KW, C, M]
    kh, kw, c, m = kernel.shape
    strides, dil = _pair(layer.strides), _pair(layer.dilation_rate)
    pads = _window_pads(layer, b.shape(x), (kh, kw), strides, dil)
    w = b.const(f"{out}/kernel", kernel.reshape(1, kh, kw, c * m))
    bias = b.const(f"{out}/bias",
                   _np(layer.bias) if layer.use_bias else np.zeros(c * m, np.float32))
    y = b.emit(OpType.DEPTHWISE_CONV_2D, b.current, [x, w, bias], _pre(layer, out),
               {"strides": strides, "dilations": dil, "pads": pads, "depth_multiplier": (m,)})
    return b.activation(layer.activation, y, layer, b.current, out)


def _dense(b: _Builder, layer: Any, xs: list[str], out: str, _d: tuple[int, ...]) -> str:
    x = _one_input(layer, xs)
    if getattr(layer, "quantization_mode", None):
        raise _fail(layer, f"quantized Dense ({layer.quantization_mode}) is not supported")
    kernel = _np(layer.kernel)  # [K, O]
    w = b.const(f"{out}/kernel", kernel.T)
    bias = b.const(f"{out}/bias", _np(layer.bias) if layer.use_bias
                   else np.zeros(kernel.shape[1], np.float32))
    y = b.emit(OpType.FULLY_CONNECTED, b.current, [x, w, bias], _pre(layer, out))
    return b.activation(layer.activation, y, layer, b.current, out)


def _batch_norm(b: _Builder, layer: Any, xs: list[str], out: str, _d: tuple[int, ...]) -> str:
    x = _one_input(layer, xs)
    rank = len(b.shape(x))
    axis = layer.axis
    axes = [axis] if isinstance(axis, int) else list(axis)
    if len(axes) != 1 or axes[0] % rank != rank - 1:
        raise _fail(layer, f"axis={axis} is not supported; only the last (channel) axis")
    c = b.shape(x)[-1]
    gamma = _np(layer.gamma) if layer.scale else np.ones(c, np.float32)
    beta = _np(layer.beta) if layer.center else np.zeros(c, np.float32)
    params = [b.const(f"{out}/{k}", v) for k, v in (
        ("gamma", gamma), ("beta", beta), ("moving_mean", _np(layer.moving_mean)),
        ("moving_variance", _np(layer.moving_variance)))]
    return b.emit(InternalOp.BATCH_NORM, b.current, [x, *params], out,
                  {"epsilon": (float(layer.epsilon),)})


def _layer_norm(b: _Builder, layer: Any, xs: list[str], out: str, _d: tuple[int, ...]) -> str:
    x = _one_input(layer, xs)
    shape = b.shape(x)
    rank = len(shape)
    axis = layer.axis
    axes = sorted({int(a) % rank for a in ([axis] if isinstance(axis, int) else axis)})
    if getattr(layer, "rms_scaling", False):
        raise _fail(layer, "rms_scaling=True is not supported")
    if not axes or axes[0] == 0 or axes != list(range(axes[0], rank)):
        raise _fail(layer, f"axis={axis} is not supported; only trailing axes (e.g. -1 or "
                    "(-2, -1)), not the batch axis")
    tail = tuple(shape[axes[0]:])
    inputs: list[str | None] = [x, None, None]
    if layer.scale:
        inputs[1] = b.const(f"{out}/gamma", _np(layer.gamma).reshape(tail))
    if layer.center:
        inputs[2] = b.const(f"{out}/beta", _np(layer.beta).reshape(tail))
    while inputs[-1] is None:
        inputs.pop()
    return b.emit(OpType.LAYER_NORM, b.current, inputs, out,
                  {"axis": (axes[0],), "epsilon": (float(layer.epsilon),)})


def _group_norm(b: _Builder, layer: Any, xs: list[str], out: str, _d: tuple[int, ...]) -> str:
    x = _one_input(layer, xs)
    shape = b.shape(x)
    c = shape[-1]
    if int(layer.axis) % len(shape) != len(shape) - 1 or len(shape) < 3:
        raise _fail(layer, f"axis={layer.axis} on input shape {list(shape)} is not supported; "
                    "only the last (channel) axis of an input [N, spatial..., C]")
    if int(layer.groups) not in (c, -1):
        raise _fail(layer, f"groups={layer.groups} is not supported; only one channel per "
                    f"group (groups={c} or -1: instance normalization)")
    inputs: list[str | None] = [x, None, None]
    if layer.scale:
        inputs[1] = b.const(f"{out}/gamma", _np(layer.gamma).reshape(c))
    if layer.center:
        inputs[2] = b.const(f"{out}/beta", _np(layer.beta).reshape(c))
    while inputs[-1] is None:
        inputs.pop()
    return b.emit(OpType.INSTANCE_NORM, b.current, inputs, out,
                  {"epsilon": (float(layer.epsilon),)})


def _relu(b: _Builder, layer: Any, xs: list[str], out: str, _d: tuple[int, ...]) -> str:
    """ReLU(max_value, negative_slope): RELU, RELU6 or CLAMP(0, max) without a slope;
    LEAKY_RELU with one, then CLAMP(-max_float32, max) under a max_value."""
    x = _one_input(layer, xs)
    max_value = None if layer.max_value is None else float(layer.max_value)
    slope, threshold = float(layer.negative_slope), float(layer.threshold)
    if threshold != 0.0 or (max_value is not None and not max_value > 0.0) or \
            not math.isfinite(slope):
        raise _fail(layer, f"max_value={layer.max_value}, negative_slope={layer.negative_slope}, "
                           f"threshold={layer.threshold} unsupported; tether supports ReLU with "
                           "threshold 0, any finite negative_slope and max_value None or > 0")
    if slope == 0.0:
        if max_value in (None, 6.0):
            return b.emit(OpType.RELU if max_value is None else OpType.RELU6, b.current, [x],
                          out)
        return b.emit(OpType.CLAMP, b.current, [x], out, {"min": (0.0,), "max": (max_value,)})
    if max_value is None:
        return b.emit(OpType.LEAKY_RELU, b.current, [x], out, {"alpha": (slope,)})
    leaky = b.emit(OpType.LEAKY_RELU, b.current, [x], f"{out}/leaky", {"alpha": (slope,)})
    fmax = float(np.finfo(np.float32).max)
    return b.emit(OpType.CLAMP, b.current, [leaky], out, {"min": (-fmax,), "max": (max_value,)})


def _elu(b: _Builder, layer: Any, xs: list[str], out: str, _d: tuple[int, ...]) -> str:
    x = _one_input(layer, xs)
    return b.emit(OpType.ELU, b.current, [x], out, {"alpha": (float(layer.alpha),)})


def _leaky_relu(b: _Builder, layer: Any, xs: list[str], out: str, _d: tuple[int, ...]) -> str:
    x = _one_input(layer, xs)
    return b.emit(OpType.LEAKY_RELU, b.current, [x], out,
                  {"alpha": (float(layer.negative_slope),)})


def _prelu(b: _Builder, layer: Any, xs: list[str], out: str, _d: tuple[int, ...]) -> str:
    """PReLU: PRELU with the slope [1, *alpha.shape]; Keras keeps shared axes as 1s in alpha,
    so every shared_axes (none: per element; the spatial axes: per channel) broadcasts."""
    x = _one_input(layer, xs)
    shape = b.shape(x)
    alpha = _np(layer.alpha).astype(np.float32)
    if alpha.ndim != len(shape) - 1 or any(a not in (1, s) for a, s in zip(alpha.shape,
                                                                            shape[1:])):
        raise _fail(layer, f"alpha of shape {list(alpha.shape)} does not broadcast against "
                    f"the input {list(shape)} (shared_axes={layer.shared_axes}); give PReLU "
                    "shared_axes=None or the spatial axes")
    slope = b.const(f"{out}/alpha", alpha[None])
    return b.emit(OpType.PRELU, b.current, [x, slope], out)

def _activation_layer(b: _Builder, layer: Any, xs: list[str], out: str,
                      _d: tuple[int, ...]) -> str:
    x = _one_input(layer, xs)
    y = b.activation(layer.activation, x, layer, b.current, out)
    if y == x:  # linear
        return b.emit(InternalOp.IDENTITY, b.current, [x], out)
    return y


def _softmax(b: _Builder, layer: Any, xs: list[str], out: str, _d: tuple[int, ...]) -> str:
    x = _one_input(layer, xs)
    rank = len(b.shape(x))
    axis = layer.axis
    axes = [axis] if isinstance(axis, int) else list(axis)
    if len(axes) != 1 or axes[0] % rank != rank - 1:
        raise _fail(layer, f"axis={axis} is not supported; only the last axis")
    return b.emit(OpType.SOFTMAX, b.current, [x], out, {"beta": (1.0,)})


def _binary(op: OpType) -> Converter:
    def convert(b: _Builder, layer: Any, xs: list[str], out: str, _d: tuple[int, ...]) -> str:
        if len(xs) < 2:
            raise _fail(layer, f"expected at least two inputs, got {len(xs)}")
        y = xs[0]
        for k, x in enumerate(xs[1:], start=1):
            y = b.emit(op, b.current, [y, x], out if k == len(xs) - 1 else f"{out}/partial")
        return y

    return convert


def _pool(op: OpType) -> Converter:
    def convert(b: _Builder, layer: Any, xs: list[str], out: str, _d: tuple[int, ...]) -> str:
        x = _one_input(layer, xs)
        _channels_last(layer)
        k = _pair(layer.pool_size)
        strides = _pair(layer.strides if layer.strides is not None else layer.pool_size)
        pads = _window_pads(layer, b.shape(x), k, strides, (1, 1))
        attrs: dict[str, tuple] = {"kernel": k, "strides": strides, "pads": pads}
        if op == OpType.AVERAGE_POOL_2D:
            attrs["count_include_pad"] = (0,)  # Keras 'same' averages over real cells only
        return b.emit(op, b.current, [x], out, attrs)

    return convert


def _global_avg(b: _Builder, layer: Any, xs: list[str], out: str, _d: tuple[int, ...]) -> str:
    x = _one_input(layer, xs)
    _channels_last(layer)
    if len(b.shape(x)) != 4:
        raise _fail(layer, f"expected a 4-D NHWC input, got {list(b.shape(x))}")
    return b.emit(OpType.MEAN, b.current, [x], out,
                  {"axes": (1, 2), "keepdims": (int(bool(layer.keepdims)),)})


def _global_avg_1d(b: _Builder, layer: Any, xs: list[str], out: str,
                   _d: tuple[int, ...]) -> str:
    x = _one_input(layer, xs)
    _channels_last(layer)
    if len(b.shape(x)) != 3:
        raise _fail(layer, f"expected a 3-D [N, steps, C] input, got {list(b.shape(x))}")
    return b.emit(OpType.MEAN, b.current, [x], out,
                  {"axes": (1,), "keepdims": (int(bool(layer.keepdims)),)})


def _global_max_1d(b: _Builder, layer: Any, xs: list[str], out: str,
                   _d: tuple[int, ...]) -> str:
    x = _one_input(layer, xs)
    _channels_last(layer)
    if len(b.shape(x)) != 3:
        raise _fail(layer, f"expected a 3-D [N, steps, C] input, got {list(b.shape(x))}")
    return b.emit(OpType.REDUCE_MAX, b.current, [x], out,
                  {"axes": (1,), "keepdims": (int(bool(layer.keepdims)),)})


def _embedding(b: _Builder, layer: Any, xs: list[str], out: str, _d: tuple[int, ...]) -> str:
    """Embedding: y[..., :] = table[ids[...], :], a GATHER along the table's rows."""
    ids = _one_input(layer, xs)
    if getattr(layer, "mask_zero", False):
        raise _fail(layer, "mask_zero=True is not supported (the mask would change the layers "
                    "after it); use mask_zero=False")
    if b.tensors[ids].dtype != DType.INT32:
        raise _fail(layer, f"ids '{ids}' are {b.tensors[ids].dtype.name.lower()}; give "
                    "keras.Input dtype='int32' (or 'int64')")
    table = b.const(f"{layer.name}/embeddings", _np(layer.embeddings))
    return b.emit(OpType.GATHER, b.current, [table, ids], out, {"axis": (0,)})


def _global_max(b: _Builder, layer: Any, xs: list[str], out: str, _d: tuple[int, ...]) -> str:
    x = _one_input(layer, xs)
    _channels_last(layer)
    shape = b.shape(x)
    if len(shape) != 4:
        raise _fail(layer, f"expected a 4-D NHWC input, got {list(shape)}")
    k = (shape[1], shape[2])
    base = out if layer.keepdims else f"{out}/pooled"
    y = b.emit(OpType.MAX_POOL_2D, b.current, [x], base,
               {"kernel": k, "strides": (1, 1), "pads": (0, 0, 0, 0)})
    if layer.keepdims:
        return y
    return b.emit(OpType.RESHAPE, b.current, [y], out, declared=(shape[0], shape[3]))


def _reshape(b: _Builder, layer: Any, xs: list[str], out: str, declared: tuple[int, ...]) -> str:
    x = _one_input(layer, xs)
    if type(layer).__name__ == "Flatten":
        _channels_last(layer)
    return b.emit(OpType.RESHAPE, b.current, [x], out, declared=declared)


def _concat(b: _Builder, layer: Any, xs: list[str], out: str, _d: tuple[int, ...]) -> str:
    rank = len(b.shape(xs[0]))
    axis = int(layer.axis)
    if not -rank <= axis < rank:
        raise _fail(layer, f"axis={axis} out of range for rank {rank}")
    return b.emit(OpType.CONCATENATION, b.current, xs, out, {"axis": (axis % rank,)})


def _zero_pad(b: _Builder, layer: Any, xs: list[str], out: str, _d: tuple[int, ...]) -> str:
    x = _one_input(layer, xs)
    _channels_last(layer)
    (t, bo), (l, r) = (tuple(int(v) for v in p) for p in layer.padding)
    return b.emit(OpType.PAD, b.current, [x], out,
                  {"paddings": (0, 0, t, bo, l, r, 0, 0), "value": (0.0,)})


def _cropping(b: _Builder, layer: Any, xs: list[str], out: str, _d: tuple[int, ...]) -> str:
    """Cropping1D/2D/3D: a SLICE of the spatial axes (channels last)."""
    x = _one_input(layer, xs)
    _channels_last(layer)
    crop = layer.cropping
    pairs = [crop] if isinstance(crop[0], int) else list(crop)  # Cropping1D: one (a, b)
    shape = b.shape(x)
    begin, counts = [0] * len(shape), list(shape)
    for k, (lo, hi) in enumerate(pairs, start=1):
        begin[k], counts[k] = int(lo), shape[k] - int(lo) - int(hi)
    if min(counts) < 1:
        raise _fail(layer, f"cropping {crop} leaves nothing of {list(shape)}")
    return b.emit(OpType.SLICE, b.current, [x], out,
                  {"begin": tuple(begin), "steps": (1,) * len(shape)}, declared=tuple(counts))


def _upsampling(b: _Builder, layer: Any, xs: list[str], out: str, _d: tuple[int, ...]) -> str:
    """UpSampling2D: nearest repeats each cell size times (asymmetric, floor); bilinear is
    tf.image.resize's (half_pixel)."""
    x = _one_input(layer, xs)
    _channels_last(layer)
    n, hh, ww, c = _nhwc(layer, b.shape(x))
    fh, fw = _pair(layer.size)
    interp = str(layer.interpolation)
    if interp not in ("nearest", "bilinear"):
        raise _fail(layer, f"interpolation={interp!r} is not supported; supported: 'nearest', "
                    "'bilinear'")
    attrs = ({"interpolation": (0,), "coordinate_mode": (3,), "nearest_mode": (2,)}
             if interp == "nearest" else {"interpolation": (1,), "coordinate_mode": (0,)})
    return b.emit(OpType.RESIZE, b.current, [x], out, attrs, declared=(n, hh * fh, ww * fw, c))


def _resizing(b: _Builder, layer: Any, xs: list[str], out: str, _d: tuple[int, ...]) -> str:
    """Resizing: tf.image.resize to (height, width), half-pixel centers (nearest: TF's floor of
    (i + 0.5) * in / out)."""
    x = _one_input(layer, xs)
    _channels_last(layer)
    n, _, _, c = _nhwc(layer, b.shape(x))
    interp = str(layer.interpolation)
    for flag in ("crop_to_aspect_ratio", "pad_to_aspect_ratio", "antialias"):
        if getattr(layer, flag, False):
            raise _fail(layer, f"{flag}=True is not supported; only False")
    if interp not in ("nearest", "bilinear"):
        raise _fail(layer, f"interpolation={interp!r} is not supported; supported: 'nearest', "
                    "'bilinear'")
    attrs = ({"interpolation": (0,), "coordinate_mode": (4,), "nearest_mode": (2,)}
             if interp == "nearest" else {"interpolation": (1,), "coordinate_mode": (0,)})
    return b.emit(OpType.RESIZE, b.current, [x], out, attrs,
                  declared=(n, int(layer.height), int(layer.width), c))


def _nhwc(layer: Any, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    if len(shape) != 4:
        raise _fail(layer, f"expected a 4-D NHWC input, got {list(shape)}")
    n, hh, ww, c = (int(d) for d in shape)
    return n, hh, ww, c


def _rescaling(b: _Builder, layer: Any, xs: list[str], out: str, _d: tuple[int, ...]) -> str:
    x = _one_input(layer, xs)
    scale = np.asarray(layer.scale, np.float32)  # a number or a per-channel list
    offset = np.asarray(layer.offset, np.float32)
    y = b.emit(OpType.MUL, b.current, [x, b.const(f"{out}/scale", scale)], f"{out}/scaled")
    return b.emit(OpType.ADD, b.current, [y, b.const(f"{out}/offset", offset)], out)


def _normalization(b: _Builder, layer: Any, xs: list[str], out: str,
                   _d: tuple[int, ...]) -> str:
    x = _one_input(layer, xs)
    if getattr(layer, "invert", False):
        raise _fail(layer, "invert=True is not supported")
    rank = len(b.shape(x))
    axes = [a % rank for a in (layer._keep_axis if hasattr(layer, "_keep_axis") else [-1])]
    if axes not in ([rank - 1], []):
        raise _fail(layer, f"axis={layer.axis} is not supported; only the last axis")
    mean = np.asarray(_np(layer.mean), np.float64).reshape(-1)
    var = np.asarray(_np(layer.variance), np.float64).reshape(-1)
    # keras: (x - mean) / max(sqrt(variance), epsilon)
    std = np.maximum(np.sqrt(var), 1e-7)  # keras.backend.epsilon()
    y = b.emit(OpType.MUL, b.current, [x, b.const(f"{out}/scale", 1.0 / std)], f"{out}/scaled")
    return b.emit(OpType.ADD, b.current, [y, b.const(f"{out}/offset", -mean / std)], out)


_SYMBOLIC_OPS: Mapping[str, OpType] = {
    "Add": OpType.ADD, "Subtract": OpType.SUB, "Multiply": OpType.MUL,
    "Divide": OpType.DIV, "TrueDivide": OpType.DIV,
}


def _symbolic(b: _Builder, op: Any, args: Sequence[Any], names: dict[int, str],
              out: str) -> str:
    """keras.ops arithmetic on symbolic tensors (`x + 3.0`, `x * (1 / 6)`, ...)."""
    cls = type(op).__name__
    kind = _SYMBOLIC_OPS.get(cls)
    if kind is None:
        raise ConversionError(f"operation '{op.name}' (keras.ops {cls}) is not supported; "
                              f"supported keras.ops: {', '.join(sorted(_SYMBOLIC_OPS))}")
    if len(args) != 2:
        raise ConversionError(f"operation '{op.name}' (keras.ops {cls}): expected two "
                              f"arguments, got {len(args)}")
    ins = []
    for k, a in enumerate(args):
        if id(a) in names:
            ins.append(names[id(a)])
        elif isinstance(a, (int, float, np.ndarray, np.number)):
            ins.append(b.const(f"{out}/const{k}", np.asarray(a, np.float32)))
        else:
            raise ConversionError(f"operation '{op.name}' (keras.ops {cls}): argument {k} "
                                  f"of type {type(a).__name__} is not supported")
    return b.emit(kind, b.current, ins, out)


def _no_op(b: _Builder, layer: Any, xs: list[str], out: str, _d: tuple[int, ...]) -> str:
    return b.emit(InternalOp.IDENTITY, b.current, [_one_input(layer, xs)], out)


_CONVERTERS: dict[str, Converter] = {
    "Conv1D": _conv1d,
    "Conv2D": _conv2d,
    "DepthwiseConv2D": _depthwise,
    "Dense": _dense,
    "BatchNormalization": _batch_norm,
    "LayerNormalization": _layer_norm,
    "GroupNormalization": _group_norm,
    "ReLU": _relu,
    "ELU": _elu,
    "LeakyReLU": _leaky_relu,
    "PReLU": _prelu,
    "Activation": _activation_layer,
    "Softmax": _softmax,
    "Add": _binary(OpType.ADD),
    "Multiply": _binary(OpType.MUL),
    "MaxPooling2D": _pool(OpType.MAX_POOL_2D),
    "AveragePooling2D": _pool(OpType.AVERAGE_POOL_2D),
    "GlobalAveragePooling2D": _global_avg,
    "GlobalMaxPooling2D": _global_max,
    "GlobalAveragePooling1D": _global_avg_1d,
    "GlobalMaxPooling1D": _global_max_1d,
    "Embedding": _embedding,
    "Flatten": _reshape,
    "Reshape": _reshape,
    "Concatenate": _concat,
    "ZeroPadding2D": _zero_pad,
    "UpSampling2D": _upsampling,
    "Resizing": _resizing,
    "Cropping1D": _cropping,
    "Cropping2D": _cropping,
    "Cropping3D": _cropping,
    "Rescaling": _rescaling,
    "Normalization": _normalization,
    **{name: _no_op for name in _NO_OPS},
}

SUPPORTED_LAYERS: tuple[str, ...] = tuple(sorted(
    list(_CONVERTERS) + ["InputLayer", "Functional", "Sequential"]))


# ------------------------------------------------------------------------------ graph walk


def _model_io(model: Any) -> tuple[list[Any], list[Any]]:
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError) as e:
        raise ConversionError(
            f"model '{model.name}' ({type(model).__name__}) has no symbolic graph ({e}); "
            "build it with keras.Input(...) first, or convert a Functional/Sequential model "
            "instead of a subclassed keras.Model"
        ) from None
    if not inputs or not outputs:
        raise ConversionError(f"model '{model.name}' has no inputs or outputs; build it with "
                              "keras.Input(...) first")
    return inputs, outputs


def _keras_shape(kt: Any, batch_size: int) -> tuple[int | None, ...]:
    shape = tuple(kt.shape)
    return (batch_size,) + shape[1:] if shape else shape


class _Walker:
    def __init__(self, builder: _Builder) -> None:
        self.b = builder

    def model(self, model: Any, input_names: list[str], prefix: str) -> list[str]:
        inputs, outputs = _model_io(model)
        if len(inputs) != len(input_names):
            raise ConversionError(f"nested model '{model.name}' takes {len(inputs)} inputs but "
                                  f"is called with {len(input_names)}")
        env: dict[int, str] = {id(kt): n for kt, n in zip(inputs, input_names)}
        for kt in outputs:
            self._resolve(kt, env, prefix, model)
        return [env[id(kt)] for kt in outputs]

    def _resolve(self, target: Any, env: dict[int, str], prefix: str, model: Any) -> None:
        stack: list[tuple[Any, bool]] = [(target, False)]
        while stack:
            kt, expanded = stack.pop()
            if id(kt) in env:
                continue
            hist = kt._keras_history
            layer = hist.operation
            node = layer._inbound_nodes[hist.node_index]
            if node.is_input or type(layer).__name__ == "InputLayer":
                raise ConversionError(f"model '{model.name}': input '{layer.name}' is used "
                                      "but is not one of the model's inputs")
            if not expanded:
                stack.append((kt, True))
                stack.extend((t, False) for t in node.input_tensors if id(t) not in env)
                continue
            ins = [env[id(t)] for t in node.input_tensors]
            outs = self._layer(layer, node, ins, prefix)
            for t, name in zip(node.output_tensors, outs):
                env[id(t)] = name

    def _layer(self, layer: Any, node: Any, ins: list[str], prefix: str) -> list[str]:
        import keras

        cls = type(layer).__name__
        name = prefix + layer.name
        if type(layer).__module__.startswith("keras.src.ops"):
            args = list(node.arguments.args)
            if node.arguments.kwargs:
                raise ConversionError(f"operation '{layer.name}' (keras.ops {cls}): keyword "
                                      f"arguments {sorted(node.arguments.kwargs)} are not "
                                      "supported")
            by_id = {id(t): n for t, n in zip(node.input_tensors, ins)}
            self.b.current = name
            outs = [_symbolic(self.b, layer, args, by_id, self.b.unique(name))]
        elif isinstance(layer, keras.Model):
            if cls not in ("Functional", "Sequential"):
                raise ConversionError(
                    f"layer '{layer.name}' ({cls}): subclassed models cannot be converted; "
                    "use a Functional or Sequential model")
            outs = self.model(layer, ins, name + "/")
        else:
            conv = _CONVERTERS.get(cls)
            if conv is None or not type(layer).__module__.startswith("keras"):
                raise ConversionError(
                    f"layer '{layer.name}' ({cls}) is not supported; supported layer classes: "
                    f"{', '.join(SUPPORTED_LAYERS)}")
            (kt,) = node.output_tensors if len(node.output_tensors) == 1 else (None,)
            if kt is None:
                raise _fail(layer, f"{len(node.output_tensors)} outputs; expected one")
            declared = _keras_shape(kt, self.b.batch_size)
            if any(d is None for d in declared):
                raise _fail(layer, f"output shape {list(kt.shape)} is not static")
            self.b.current = name
            outs = [conv(self.b, layer, ins, self.b.unique(name), declared)]  # type: ignore[arg-type]
        for out in outs:
            self.b.origins.setdefault(out, name)
            if pre_activation_tensor(out) in self.b.tensors:
                self.b.origins.setdefault(pre_activation_tensor(out), pre_activation_key(name))
        for kt, out in zip(node.output_tensors, outs):
            want = _keras_shape(kt, self.b.batch_size)
            got = self.b.shape(out)
            if tuple(want) != got:
                raise _fail(layer, f"converted output shape {list(got)} != Keras output shape "
                                   f"{list(want)}; this is a converter bug, please report it")
        return outs


# Keras input dtypes -> the IR dtype the input is recorded as
_INPUT_DTYPES = {"float32": DType.FLOAT32, "int32": DType.INT32, "int64": DType.INT32}


def from_keras(model: Any, *, batch_size: int = 1,
               origins: dict[str, str] | None = None) -> ir.Graph:
    """Converts a Keras 3 Functional or Sequential model to an IR graph.

    Args:
        model: a built `keras.Model` (Functional or Sequential; nested models allowed).
        batch_size: the fixed batch dimension of every input; 1 by default.
        origins: if given, filled with IR tensor name -> the Keras layer whose output it
            is (inputs: their InputLayer name; "<layer>:pre_activation" for the tensor
            before a layer's activation); tensors a layer makes internally are absent.

    Returns:
        The graph, with BatchNormalization as internal BATCH_NORM nodes and inference
        no-ops (Dropout, ...) as IDENTITY nodes, before any pass.

    Raises:
        ConversionError: a layer, activation, attribute or shape is not supported; the
            message names the layer and its class.
    """
    import keras

    if batch_size < 1:
        raise ConversionError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
    if not isinstance(model, keras.Model):
        raise ConversionError(f"expected a keras.Model, got {type(model).__name__}")
    b = _Builder(batch_size)
    inputs, _ = _model_io(model)
    input_names = []
    for kt in inputs:
        layer = kt._keras_history.operation
        shape = _keras_shape(kt, batch_size)
        if any(d is None for d in shape):
            raise ConversionError(
                f"input '{layer.name}' has shape {list(kt.shape)} with an unknown dimension "
                "besides the batch; give keras.Input a fixed shape")
        if str(kt.dtype) not in _INPUT_DTYPES:
            raise ConversionError(f"input '{layer.name}' has dtype {kt.dtype}; only float32, "
                                  "int32 and int64 inputs are supported")
        name = b.unique(layer.name)
        # int64 ids are recorded as int32, the engine's integer dtype (FORMAT.md)
        b.tensors[name] = ir.Tensor(name, shape,  # type: ignore[arg-type]
                                    _INPUT_DTYPES[str(kt.dtype)])
        b.origins[name] = layer.name
        input_names.append(name)
    outputs = _Walker(b).model(model, input_names, "")
    final: list[str] = []
    for out in outputs:
        if out in input_names or out in final:  # an output must be computed, and only once
            out = b.emit(InternalOp.IDENTITY, out, [out], f"{out}/copy")
        final.append(out)
    graph = ir.Graph(b.tensors, tuple(b.nodes), tuple(input_names), tuple(final), model.name)
    graph = graph.rebuilt(graph.nodes)  # drop weights of layers that were not reached
    logger.debug("keras model '%s': %d nodes", model.name, len(graph.nodes))
    if origins is not None:
        origins.update(b.origins)
    return graph
