"""Float reference evaluation of an IR graph, for int8 calibration only.

This is NOT an executor of `.tmodel` files (the C engine is): it exists so that post-training
quantization can record the range of every tensor on representative inputs. It evaluates the
float ops of FORMAT.md in float64 numpy, clearly and without speed tricks beyond im2col.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from tether.converter._internal import ir
from tether.converter._internal.ops import Activation, DType, OpType

from tether.errors import ConversionError

__all__ = ["PRE_ACTIVATION", "evaluate", "pre_activation_key", "tensor_ranges"]

# Fused activations int8 cannot apply as a clamp: the int8 lowering splits them off into an
# int8 activation op, whose input is quantized from the range recorded under
# pre_activation_key(output).
PRE_ACTIVATION = frozenset({Activation.TANH, Activation.SIGMOID, Activation.HARD_SWISH})


def pre_activation_key(name: str) -> str:
    """Range key of the value node `name` computes before its fused activation.

    >>> pre_activation_key("conv1")
    'conv1:pre_activation'
    """
    return f"{name}:pre_activation"


def _act(x: np.ndarray, a: Activation) -> np.ndarray:
    if a == Activation.NONE:
        return x
    if a == Activation.RELU:
        return np.maximum(x, 0.0)
    if a == Activation.RELU6:
        return np.clip(x, 0.0, 6.0)
    if a == Activation.RELU_N1_TO_1:
        return np.clip(x, -1.0, 1.0)
    if a == Activation.TANH:
        return np.tanh(x)
    if a == Activation.SIGMOID:
        return 1.0 / (1.0 + np.exp(-x))
    if a == Activation.HARD_SWISH:
        return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0
    raise ConversionError(f"calibration: unknown activation {a!r}")


def _windows(x: np.ndarray, kh: int, kw: int, strides: tuple[int, ...], dil: tuple[int, ...],
             pads: tuple[int, ...], fill: float) -> np.ndarray:
    """[N, OH, OW, KH, KW, C] windows of NHWC x (pads: top, left, bottom, right)."""
    pt, pl, pb, pr = pads
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=fill)
    sh, sw = strides
    dh, dw = dil
    n, h, w, c = xp.shape
    oh = (h - dh * (kh - 1) - 1) // sh + 1
    ow = (w - dw * (kw - 1) - 1) // sw + 1
    s = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, (n, oh, ow, kh, kw, c), (s[0], s[1] * sh, s[2] * sw, s[1] * dh, s[2] * dw, s[3]),
        writeable=False)


def _ints(node: ir.Node, name: str) -> tuple[int, ...]:
    return tuple(int(v) for v in ir.attr(node, name))


def _run(node: ir.Node, xs: list[np.ndarray | None]) -> np.ndarray:
    o = node.op
    x = xs[0]
    assert x is not None
    if o in (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D):
        w = xs[1]
        assert w is not None
        _, kh, kw, _ = w.shape
        win = _windows(x, kh, kw, _ints(node, "strides"), _ints(node, "dilations"),
                       _ints(node, "pads"), 0.0)
        if o == OpType.DEPTHWISE_CONV_2D:
            m = _ints(node, "depth_multiplier")[0]
            win = np.repeat(win, m, axis=-1)
            y = np.einsum("nhwijc,ijc->nhwc", win, w[0], optimize=True)
        else:
            g = _ints(node, "groups")[0]
            oc, icg = w.shape[0], w.shape[3]
            ys = [np.einsum("nhwijc,oijc->nhwo", win[..., k * icg:(k + 1) * icg],
                            w[k * (oc // g):(k + 1) * (oc // g)], optimize=True)
                  for k in range(g)]
            y = np.concatenate(ys, axis=-1)
        if len(xs) > 2 and xs[2] is not None:
            y = y + xs[2]
        return y
    if o == OpType.FULLY_CONNECTED:
        w = xs[1]
        assert w is not None
        y = x @ w.T
        return y + xs[2] if len(xs) > 2 and xs[2] is not None else y
    b = xs[1] if len(xs) > 1 else None
    if o == OpType.ADD:
        return x + b
    if o == OpType.SUB:
        return x - b
    if o == OpType.MUL:
        return x * b
    if o == OpType.DIV:
        return x / b
    if o in (OpType.MAX_POOL_2D, OpType.AVERAGE_POOL_2D):
        kh, kw = _ints(node, "kernel")
        args = (kh, kw, _ints(node, "strides"), (1, 1), _ints(node, "pads"))
        if o == OpType.MAX_POOL_2D:
            return _windows(x, *args, -np.inf).max(axis=(3, 4))
        total = _windows(x, *args, 0.0).sum(axis=(3, 4))
        if _ints(node, "count_include_pad")[0]:
            return total / (kh * kw)
        count = _windows(np.ones_like(x[..., :1]), *args, 0.0).sum(axis=(3, 4))
        return total / count
    if o == OpType.MEAN:
        return np.mean(x, axis=_ints(node, "axes"), keepdims=bool(_ints(node, "keepdims")[0]))
    if o == OpType.CONCATENATION:
        return np.concatenate(xs, axis=_ints(node, "axis")[0])  # type: ignore[arg-type]
    if o == OpType.PAD:
        p = _ints(node, "paddings")
        return np.pad(x, [(p[2 * i], p[2 * i + 1]) for i in range(x.ndim)],
                      constant_values=float(ir.attr(node, "value")[0]))
    if o == OpType.SOFTMAX:
        z = x * float(ir.attr(node, "beta")[0])
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    if o == OpType.TRANSPOSE:
        return np.transpose(x, _ints(node, "perm"))
    if o == OpType.CLAMP:
        return np.clip(x, float(ir.attr(node, "min")[0]), float(ir.attr(node, "max")[0]))
    if o == OpType.HARD_SIGMOID:
        return np.clip(float(ir.attr(node, "alpha")[0]) * x + float(ir.attr(node, "offset")[0]),
                       0.0, 1.0)
    unary = {OpType.RELU: Activation.RELU, OpType.RELU6: Activation.RELU6,
             OpType.LOGISTIC: Activation.SIGMOID, OpType.TANH: Activation.TANH,
             OpType.HARD_SWISH: Activation.HARD_SWISH}
    if o in unary:
        return _act(x, unary[o])  # type: ignore[index]
    raise ConversionError(f"calibration: node {node.describe()} cannot be evaluated")


def evaluate(graph: ir.Graph, feeds: dict[str, np.ndarray], *,
             pre_activations: bool = False) -> dict[str, np.ndarray]:
    """Returns every non-constant tensor of a float graph (float64) for one input set.

    RESHAPE reshapes to the declared output shape. With `pre_activations` (False by
    default), a node whose fused activation is in PRE_ACTIVATION also gives its value before
    the activation, under `pre_activation_key(output)`. Raises ConversionError on int8
    graphs or ops it does not know.
    """
    values: dict[str, np.ndarray] = {k: np.asarray(v, np.float64) for k, v in feeds.items()}

    def get(name: str | None) -> np.ndarray | None:
        if name is None:
            return None
        if name in values:
            return values[name]
        t = graph.tensors[name]
        if t.data is None or t.dtype != DType.FLOAT32:
            raise ConversionError(f"calibration: tensor '{name}' is not a float value")
        return np.asarray(t.data, np.float64)

    for node in graph.nodes:
        xs = [get(n) for n in node.inputs]
        out = graph.tensors[node.outputs[0]]
        if node.op == OpType.RESHAPE:
            y = xs[0].reshape(out.shape)  # type: ignore[union-attr]
        else:
            pre = _run(node, xs)
            if pre_activations and node.activation in PRE_ACTIVATION:
                values[pre_activation_key(node.outputs[0])] = pre
            y = _act(pre, node.activation)
        if y.shape != out.shape:
            raise ConversionError(f"calibration: node {node.describe()} gave shape "
                                  f"{list(y.shape)}, expected {list(out.shape)}")
        values[node.outputs[0]] = y
    return values


def tensor_ranges(graph: ir.Graph, samples: Iterable[np.ndarray]) -> dict[str, tuple[float,
                                                                                    float]]:
    """Min and max of every non-constant tensor over `samples` (each a full input of the
    graph's single input), and of the values before each TANH/SIGMOID/HARD_SWISH fused
    activation (keyed `pre_activation_key(output)`)."""
    if len(graph.inputs) != 1:
        raise ConversionError(f"calibration supports single-input graphs; this one has "
                              f"{len(graph.inputs)}")
    name = graph.inputs[0]
    shape = graph.tensors[name].shape
    ranges: dict[str, tuple[float, float]] = {}
    count = 0
    for x in samples:
        x = np.asarray(x, np.float64)
        if x.shape != shape:
            if x.shape == shape[1:] and shape[0] == 1:
                x = x[None]
            else:
                raise ConversionError(f"calibration sample of shape {list(x.shape)} does not "
                                      f"fit input '{name}' {list(shape)}")
        for k, v in evaluate(graph, {name: x}, pre_activations=True).items():
            lo, hi = float(v.min()), float(v.max())
            if k in ranges:
                lo, hi = min(lo, ranges[k][0]), max(hi, ranges[k][1])
            ranges[k] = (lo, hi)
        count += 1
    if not count:
        raise ConversionError("calibration needs at least one sample")
    return ranges
