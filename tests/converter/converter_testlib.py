"""Helpers for the converter tests: a tiny graph builder and numpy reference convolutions.

The numpy code here is a test oracle for weight layouts only; the C engine is the executor.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tether.converter._internal import ir
from tether.converter._internal.ops import Activation, AnyOp, DType


class GraphBuilder:
    """Builds small IR graphs by hand; output shapes come from shape inference."""

    def __init__(self, name: str = "g") -> None:
        self.name = name
        self.builder = ir.GraphBuilder()  # the converter's own; names here are kept as given
        self.tensors: dict[str, ir.Tensor] = self.builder.tensors
        self.nodes: list[ir.Node] = self.builder.nodes
        self.inputs: list[str] = []

    def input(self, name: str, shape: Sequence[int]) -> str:
        self.tensors[name] = ir.Tensor(name, tuple(shape))
        self.inputs.append(name)
        return name

    def const(self, name: str, value, dtype: DType = DType.FLOAT32,
              quant: ir.Quantization | None = None) -> str:
        arr = np.asarray(value)
        self.tensors[name] = ir.Tensor(name, arr.shape, dtype, arr, quant)
        return name

    def node(self, op: AnyOp, inputs: Sequence[str | None], out: str,
             attrs: dict | None = None, act: Activation = Activation.NONE,
             name: str | None = None, shape: tuple[int, ...] | None = None) -> str:
        return self.builder.emit(op, name or out, inputs, out, attrs=attrs, activation=act,
                                 declared=shape, exact_name=True)

    def graph(self, *outputs: str) -> ir.Graph:
        g = ir.Graph(self.tensors, tuple(self.nodes), tuple(self.inputs), tuple(outputs),
                     self.name)
        return g.rebuilt(g.nodes)


def act_np(x: np.ndarray, act: int) -> np.ndarray:
    """Fused activation math of FORMAT.md."""
    a = Activation(act)
    if a == Activation.NONE:
        return x
    if a == Activation.RELU:
        return np.maximum(x, 0)
    if a == Activation.RELU6:
        return np.clip(x, 0, 6)
    if a == Activation.TANH:
        return np.tanh(x)
    if a == Activation.SIGMOID:
        return 1 / (1 + np.exp(-x))
    if a == Activation.HARD_SWISH:
        return x * np.clip(x + 3, 0, 6) / 6
    raise AssertionError(a)


def conv2d_np(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, strides=(1, 1),
              dilations=(1, 1), pads=(0, 0, 0, 0), groups: int = 1) -> np.ndarray:
    """FORMAT.md CONV_2D: x [N,H,W,C], w [OC,KH,KW,C/G], pads (top, left, bottom, right)."""
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    n, h, wd, _ = x.shape
    oc, kh, kw, icg = w.shape
    pt, pl, pb, pr = pads
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    sh, sw = strides
    dh, dw = dilations
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, oh, ow, oc))
    ocg = oc // groups
    for g in range(groups):
        xs = xp[..., g * icg:(g + 1) * icg]
        ws = w[g * ocg:(g + 1) * ocg]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                           j * dw:j * dw + sw * (ow - 1) + 1:sw, :]
                y[..., g * ocg:(g + 1) * ocg] += patch @ ws[:, i, j, :].T
    if b is not None:
        y += b
    return y


def depthwise_np(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, strides=(1, 1),
                 dilations=(1, 1), pads=(0, 0, 0, 0), depth_multiplier: int = 1) -> np.ndarray:
    """FORMAT.md DEPTHWISE_CONV_2D: w [1,KH,KW,C*M], out channel c*M+m reads input c."""
    c = x.shape[-1]
    xr = np.repeat(x, depth_multiplier, axis=-1)  # channel c*M+m = x[..., c]
    cm = w.shape[3]
    assert cm == c * depth_multiplier
    wg = np.transpose(w, (3, 1, 2, 0))  # [C*M, KH, KW, 1]
    return conv2d_np(xr, wg, b, strides, dilations, pads, groups=cm)
