"""One definition per op: its operands, attributes, output-shape rule and float reference.

Every op the IR knows (the file's `OpType`s and the converter's `InternalOp`s) has one
`OpDef` in `OPDEFS`. Shape inference (`ir.infer_output_shapes`), constant folding
(`passes.fold_constants`) and the calibration evaluator (`calibrate.evaluate`) all read it,
so an op's math is written once:

- `shape(node, input_shapes, declared)` returns the output shape from shapes and attributes
  alone (never values), raising `ShapeError` when they do not fit the op;
- `reference(node, inputs, out_shape)` computes the output in float64 numpy from float64
  inputs, before the node's fused activation (`apply_activation` applies that); None for
  ops that have no float value (QUANTIZE, DEQUANTIZE);
- `fold` says whether constant folding may evaluate the op (convolutions, pools, dense
  layers and softmax are left alone: constant inputs to them are rare and their folding
  would only hide a model's structure).

Adding an op: its `TETHER_OP_LIST` row (tether.h, which generates `OpType`), its FORMAT.md
row, an `OpDef` here, its lowering in the frontends that produce it (and `quantize.py` for
int8), and its C op file (`device/runtime/README.md`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .ops import ATTRS, ACTIVATION_OF_OP, PAD_MODES, Activation, AnyOp, InternalOp, OpType

if TYPE_CHECKING:
    from .ir import Node

__all__ = [
    "OPDEFS",
    "OP_ATTRS",
    "OpDef",
    "ShapeError",
    "apply_activation",
    "attr",
    "conv_output_size",
]

Shape = tuple[int, ...]
AttrValue = tuple[int, ...] | tuple[float, ...]
ShapeRule = Callable[["Node", Sequence["Shape | None"], Sequence[Shape]], Shape]
Reference = Callable[["Node", Sequence["np.ndarray | None"], Shape], np.ndarray]


class ShapeError(ValueError):
    """Shapes or attributes do not fit an op (callers wrap it in a tether error)."""


@dataclass(frozen=True)
class OpDef:
    """What the converter knows of one op.

    Attributes:
        op: the op id.
        inputs: the least and most inputs it takes (optional inputs past the least may be
            absent, None).
        attrs: the attributes it accepts (keys of `ops.ATTRS`); those without a default
            are required.
        shape: the output-shape rule.
        reference: the float64 numpy evaluation, or None.
        fold: whether constant folding evaluates it.
    """

    op: AnyOp
    inputs: tuple[int, int]
    attrs: tuple[str, ...]
    shape: ShapeRule
    reference: Reference | None
    fold: bool = True


# ---------------------------------------------------------------------- attribute access


def attr(node: Node, name: str) -> AttrValue:
    """Returns attribute `name` of `node`, or its FORMAT.md default.

    Raises:
        ShapeError: the attribute is required and missing.
    """
    if name in node.attrs:
        return node.attrs[name]
    spec = ATTRS.get(name)
    if spec is None or spec.default is None:
        raise ShapeError(f"required attribute '{name}' is missing")
    return spec.default


def _ints(node: Node, name: str, count: int | None = None) -> tuple[int, ...]:
    value = tuple(int(v) for v in attr(node, name))
    if count is not None and len(value) != count:
        raise ShapeError(f"attribute '{name}' needs {count} values, got {list(value)}")
    return value


def _float(node: Node, name: str) -> float:
    return float(attr(node, name)[0])


def conv_output_size(size: int, kernel: int, stride: int, dilation: int, pad_begin: int,
                     pad_end: int) -> int:
    """out = floor((in + pad_begin + pad_end - d*(k-1) - 1) / s) + 1 (FORMAT.md).

    >>> conv_output_size(7, 3, 2, 1, 1, 1)  # "same" padding at stride 2
    4
    """
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


# ---------------------------------------------------------------------- activations

_ACTIVATIONS: Mapping[Activation, Callable[[np.ndarray], np.ndarray]] = {
    Activation.NONE: lambda x: x,
    Activation.RELU: lambda x: np.maximum(x, 0.0),
    Activation.RELU6: lambda x: np.clip(x, 0.0, 6.0),
    Activation.RELU_N1_TO_1: lambda x: np.clip(x, -1.0, 1.0),
    Activation.TANH: np.tanh,
    Activation.SIGMOID: lambda x: 1.0 / (1.0 + np.exp(-x)),
    Activation.HARD_SWISH: lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
}


def apply_activation(x: np.ndarray, activation: Activation) -> np.ndarray:
    """`activation` (a fused activation id) applied to float values."""
    return _ACTIVATIONS[Activation(activation)](x)


# ---------------------------------------------------------------------- shape rules


def _x(shapes: Sequence[Shape | None], i: int = 0) -> Shape:
    s = shapes[i]
    assert s is not None  # required inputs were checked by infer_output_shapes
    return s


def _window_shape(node: Node, x: Shape, kh: int, kw: int, channels: int,
                  dilated: bool) -> Shape:
    if len(x) != 4:
        raise ShapeError(f"input must be 4-D [N,H,W,C], got {list(x)}")
    sh, sw = _ints(node, "strides", 2)
    dh, dw = _ints(node, "dilations", 2) if dilated else (1, 1)
    pt, pl, pb, pr = _ints(node, "pads", 4)
    if min(sh, sw, dh, dw, kh, kw) < 1 or min(pt, pl, pb, pr) < 0:
        raise ShapeError("strides, dilations and kernel must be >= 1 and pads >= 0")
    oh = conv_output_size(x[1], kh, sh, dh, pt, pb)
    ow = conv_output_size(x[2], kw, sw, dw, pl, pr)
    if oh < 1 or ow < 1:
        raise ShapeError(f"window larger than the padded input {list(x)}")
    return (x[0], oh, ow, channels)


def _check_bias(shapes: Sequence[Shape | None], channels: int) -> None:
    if len(shapes) > 2 and shapes[2] is not None and shapes[2] != (channels,):
        raise ShapeError(f"bias must be [{channels}], got {list(shapes[2])}")


def _conv2d_shape(node: Node, shapes: Sequence[Shape | None], declared: Sequence[Shape]) -> Shape:
    x, w = _x(shapes), _x(shapes, 1)
    (groups,) = _ints(node, "groups", 1)
    if len(w) != 4 or len(x) != 4:
        raise ShapeError(f"needs x [N,H,W,C] and W [OC,KH,KW,C/G], got {list(x)}, {list(w)}")
    if groups < 1 or x[3] % groups or w[0] % groups or w[3] != x[3] // groups:
        raise ShapeError(f"W {list(w)} does not fit input channels {x[3]} with groups={groups}")
    _check_bias(shapes, w[0])
    return _window_shape(node, x, w[1], w[2], w[0], dilated=True)


def _depthwise_shape(node: Node, shapes: Sequence[Shape | None],
                     declared: Sequence[Shape]) -> Shape:
    x, w = _x(shapes), _x(shapes, 1)
    (m,) = _ints(node, "depth_multiplier", 1)
    if len(w) != 4 or len(x) != 4 or w[0] != 1 or m < 1 or w[3] != x[3] * m:
        raise ShapeError(
            f"needs W [1,KH,KW,C*M] with C={x[-1]}, M={m}, got W {list(w)}, x {list(x)}"
        )
    _check_bias(shapes, w[3])
    return _window_shape(node, x, w[1], w[2], w[3], dilated=True)


def _dense_shape(node: Node, shapes: Sequence[Shape | None], declared: Sequence[Shape]) -> Shape:
    x, w = _x(shapes), _x(shapes, 1)
    if len(x) < 1 or len(w) != 2 or w[1] != x[-1]:
        raise ShapeError(f"needs x [..., K] and W [O, K], got {list(x)}, {list(w)}")
    _check_bias(shapes, w[0])
    return tuple(x[:-1]) + (w[0],)


def _broadcast_shape(node: Node, shapes: Sequence[Shape | None],
                     declared: Sequence[Shape]) -> Shape:
    a, b = _x(shapes), _x(shapes, 1)
    try:
        return tuple(int(d) for d in np.broadcast_shapes(a, b))
    except ValueError:
        raise ShapeError(f"shapes {list(a)} and {list(b)} do not broadcast") from None


def pool_window_holes(size: int, kernel: int, stride: int, dilation: int, pad_begin: int,
                      out: int) -> list[int]:
    """Outputs (along one axis) whose dilated window has no tap inside [0, size).

    >>> pool_window_holes(2, 2, 1, 3, 1, 1)  # taps -1 and 2 of 2 rows
    [0]
    """
    holes = []
    for o in range(out):
        origin = o * stride - pad_begin
        first = max(0, -(origin // dilation))  # the first tap at or after row 0
        if first >= kernel or origin + first * dilation >= size:
            holes.append(o)
    return holes


def _pool_shape(node: Node, shapes: Sequence[Shape | None], declared: Sequence[Shape]) -> Shape:
    x = _x(shapes)
    kh, kw = _ints(node, "kernel", 2)
    if len(x) != 4:
        raise ShapeError(f"input must be 4-D [N,H,W,C], got {list(x)}")
    y = _window_shape(node, x, kh, kw, x[3], dilated=True)
    (sh, sw), (dh, dw) = _ints(node, "strides", 2), _ints(node, "dilations", 2)
    pt, pl, pb, pr = _ints(node, "pads", 4)
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if max(pt, pb) >= span_h or max(pl, pr) >= span_w:
        raise ShapeError(f"pads {[pt, pl, pb, pr]} must be smaller than the window "
                         f"{[span_h, span_w]} (kernel {[kh, kw]}, dilations {[dh, dw]})")
    for axis, (size, k, s, d, p, o) in enumerate(((x[1], kh, sh, dh, pt, y[1]),
                                                  (x[2], kw, sw, dw, pl, y[2]))):
        # with pads < span, only an input narrower than the dilation fits between two taps
        if size < d and (holes := pool_window_holes(size, k, s, d, p, o)):
            raise ShapeError(f"the window of output {('row', 'column')[axis]} {holes[0]} "
                             f"(kernel {k}, dilation {d}) holds no input cell of the {size}")
    return y


def _mean_shape(node: Node, shapes: Sequence[Shape | None], declared: Sequence[Shape]) -> Shape:
    x = _x(shapes)
    axes = _ints(node, "axes")
    (keepdims,) = _ints(node, "keepdims", 1)
    if not axes or len(set(axes)) != len(axes) or any(a < 0 or a >= len(x) for a in axes):
        raise ShapeError(f"axes {list(axes)} must be distinct and in [0, {len(x)})")
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(x))
    return tuple(d for i, d in enumerate(x) if i not in axes)


def _reshape_shape(node: Node, shapes: Sequence[Shape | None],
                   declared: Sequence[Shape]) -> Shape:
    x = _x(shapes)
    if len(declared) != 1:
        raise ShapeError("the output shape must be declared")
    if math.prod(declared[0]) != math.prod(x):
        raise ShapeError(f"cannot reshape {list(x)} to {list(declared[0])}")
    return tuple(declared[0])


def _concat_shape(node: Node, shapes: Sequence[Shape | None], declared: Sequence[Shape]) -> Shape:
    x = _x(shapes)
    (axis,) = _ints(node, "axis", 1)
    if not 0 <= axis < len(x):
        raise ShapeError(f"axis {axis} out of range for rank {len(x)}")
    total = 0
    for s in shapes:
        if s is None or len(s) != len(x) or any(
            a != b for i, (a, b) in enumerate(zip(s, x)) if i != axis
        ):
            raise ShapeError(f"inputs {[list(s or ()) for s in shapes]} differ off axis {axis}")
        total += s[axis]
    return tuple(total if i == axis else d for i, d in enumerate(x))


def _pad_shape(node: Node, shapes: Sequence[Shape | None], declared: Sequence[Shape]) -> Shape:
    x = _x(shapes)
    pads = _ints(node, "paddings")
    if len(pads) != 2 * len(x) or min(pads, default=0) < 0:
        raise ShapeError(f"paddings {list(pads)} must be 2*rank={2 * len(x)} values >= 0")
    (mode,) = _ints(node, "mode", 1)
    if not 0 <= mode < len(PAD_MODES):
        raise ShapeError(f"mode={mode} is unknown (0 constant, 1 reflect, 2 edge, 3 symmetric)")
    for i, d in enumerate(x):
        before, after = pads[2 * i], pads[2 * i + 1]
        # reflect mirrors about the end cells, symmetric about the edges: one image at most
        most = d - 1 if mode == 1 else d if mode == 3 else None
        if most is not None and max(before, after) > most:
            raise ShapeError(f"{PAD_MODES[mode]} padding of axis {i} by ({before}, {after}) "
                             f"needs each pad {'<' if mode == 1 else '<='} the size {d}")
    return tuple(d + pads[2 * i] + pads[2 * i + 1] for i, d in enumerate(x))


def _same_shape(node: Node, shapes: Sequence[Shape | None], declared: Sequence[Shape]) -> Shape:
    return tuple(_x(shapes))


def _softmax_shape(node: Node, shapes: Sequence[Shape | None],
                   declared: Sequence[Shape]) -> Shape:
    x = _x(shapes)
    if len(x) < 1:
        raise ShapeError("input must have at least one axis")
    return tuple(x)


def _clamp_shape(node: Node, shapes: Sequence[Shape | None], declared: Sequence[Shape]) -> Shape:
    lo, hi = _float(node, "min"), _float(node, "max")
    if not lo <= hi:
        raise ShapeError(f"min {lo} > max {hi}")
    return tuple(_x(shapes))


def _transpose_shape(node: Node, shapes: Sequence[Shape | None],
                     declared: Sequence[Shape]) -> Shape:
    x = _x(shapes)
    perm = _ints(node, "perm")
    if sorted(perm) != list(range(len(x))):
        raise ShapeError(f"perm {list(perm)} is not a permutation of rank {len(x)}")
    return tuple(x[p] for p in perm)


def _slice_steps(node: Node, rank: int) -> tuple[int, ...]:
    steps = tuple(int(v) for v in node.attrs.get("steps", (1,)))
    if steps == (1,):  # the default: 1 on every axis
        return (1,) * rank
    return steps


def _slice_shape(node: Node, shapes: Sequence[Shape | None], declared: Sequence[Shape]) -> Shape:
    x = _x(shapes)
    if len(declared) != 1:
        raise ShapeError("the output shape must be declared")
    y = tuple(declared[0])
    begin = _ints(node, "begin")
    steps = _slice_steps(node, len(x))
    if len(y) != len(x) or len(begin) != len(x) or len(steps) != len(x):
        raise ShapeError(f"begin {list(begin)}, steps {list(steps)} and output {list(y)} "
                         f"need one value per axis of {list(x)}")
    for d, (b, s, n, size) in enumerate(zip(begin, steps, y, x)):
        if b < 0 or s == 0 or (n > 0 and (b >= size or not 0 <= b + (n - 1) * s < size)):
            raise ShapeError(f"axis {d}: begin {b}, step {s} and {n} outputs read outside "
                             f"{size}")
    return y


def _gather_shape(node: Node, shapes: Sequence[Shape | None],
                  declared: Sequence[Shape]) -> Shape:
    x, idx = _x(shapes), _x(shapes, 1)
    (axis,) = _ints(node, "axis", 1)
    if not 0 <= axis < len(x):
        raise ShapeError(f"axis {axis} out of range for the table's rank {len(x)}")
    y = tuple(x[:axis]) + tuple(idx) + tuple(x[axis + 1:])
    if len(y) > 6:
        raise ShapeError(f"output rank {len(y)} (table {list(x)}, indices {list(idx)}) exceeds 6")
    return y


# RESIZE's enumerations (FORMAT.md): interpolation, coordinate_mode, nearest_mode.
RESIZE_INTERPOLATIONS = ("nearest", "bilinear")
RESIZE_COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
                           "tf_half_pixel_for_nn")
RESIZE_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple")


def _resize_shape(node: Node, shapes: Sequence[Shape | None],
                  declared: Sequence[Shape]) -> Shape:
    x = _x(shapes)
    if len(declared) != 1:
        raise ShapeError("the output shape must be declared")
    y = tuple(declared[0])
    if len(x) != 4 or len(y) != 4 or y[0] != x[0] or y[3] != x[3]:
        raise ShapeError(f"needs input [N,H,W,C] and output [N,OH,OW,C], got {list(x)} -> "
                         f"{list(y)}")
    for name, names in (("interpolation", RESIZE_INTERPOLATIONS),
                        ("coordinate_mode", RESIZE_COORDINATE_MODES),
                        ("nearest_mode", RESIZE_NEAREST_MODES)):
        (v,) = _ints(node, name, 1)
        if not 0 <= v < len(names):
            raise ShapeError(f"attribute {name}={v}; allowed: 0..{len(names) - 1}")
    if "scales" in node.attrs:
        sc = tuple(float(v) for v in node.attrs["scales"])
        if len(sc) != 2 or not all(math.isfinite(v) and v > 0 for v in sc):
            raise ShapeError(f"attribute scales={list(sc)} needs 2 finite values > 0")
    return y


def _batch_norm_shape(node: Node, shapes: Sequence[Shape | None],
                      declared: Sequence[Shape]) -> Shape:
    x = _x(shapes)
    c = x[-1] if x else 0
    for i, s in enumerate(shapes[1:], start=1):
        if s != (c,):
            raise ShapeError(f"parameter {i} must be [{c}], got {list(s or ())}")
    return tuple(x)


# ---------------------------------------------------------------------- float references

Arrays = Sequence["np.ndarray | None"]


def _a(xs: Arrays, i: int = 0) -> np.ndarray:
    v = xs[i]
    assert v is not None
    return v


def _bias(y: np.ndarray, xs: Arrays) -> np.ndarray:
    return y + xs[2] if len(xs) > 2 and xs[2] is not None else y


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


def _conv_windows(node: Node, xs: Arrays) -> np.ndarray:
    _, kh, kw, _ = _a(xs, 1).shape
    return _windows(_a(xs), kh, kw, _ints(node, "strides"), _ints(node, "dilations"),
                    _ints(node, "pads"), 0.0)


def _conv2d(node: Node, xs: Arrays, out: Shape) -> np.ndarray:
    win, w = _conv_windows(node, xs), _a(xs, 1)
    g = _ints(node, "groups")[0]
    oc, icg = w.shape[0], w.shape[3]
    ys = [np.einsum("nhwijc,oijc->nhwo", win[..., k * icg:(k + 1) * icg],
                    w[k * (oc // g):(k + 1) * (oc // g)], optimize=True)
          for k in range(g)]
    return _bias(np.concatenate(ys, axis=-1), xs)


def _depthwise(node: Node, xs: Arrays, out: Shape) -> np.ndarray:
    win = np.repeat(_conv_windows(node, xs), _ints(node, "depth_multiplier")[0], axis=-1)
    return _bias(np.einsum("nhwijc,ijc->nhwc", win, _a(xs, 1)[0], optimize=True), xs)


def _dense(node: Node, xs: Arrays, out: Shape) -> np.ndarray:
    return _bias(_a(xs) @ _a(xs, 1).T, xs)


def _pool(node: Node, xs: Arrays, out: Shape) -> np.ndarray:
    x = _a(xs)
    kh, kw = _ints(node, "kernel")
    args = (kh, kw, _ints(node, "strides"), _ints(node, "dilations"), _ints(node, "pads"))
    if node.op == OpType.MAX_POOL_2D:
        return _windows(x, *args, -np.inf).max(axis=(3, 4))
    total = _windows(x, *args, 0.0).sum(axis=(3, 4))
    if _ints(node, "count_include_pad")[0]:
        return total / (kh * kw)
    count = _windows(np.ones_like(x[..., :1]), *args, 0.0).sum(axis=(3, 4))
    return total / count


def _mean(node: Node, xs: Arrays, out: Shape) -> np.ndarray:
    return np.mean(_a(xs), axis=_ints(node, "axes"), keepdims=bool(_ints(node, "keepdims")[0]))


def _reduce_max(node: Node, xs: Arrays, out: Shape) -> np.ndarray:
    return np.max(_a(xs), axis=_ints(node, "axes"), keepdims=bool(_ints(node, "keepdims")[0]))


_ERF = np.frompyfunc(math.erf, 1, 1)


def _erf(node: Node, xs: Arrays, out: Shape) -> np.ndarray:
    return np.asarray(_ERF(_a(xs)), np.float64)


def _gelu(node: Node, xs: Arrays, out: Shape) -> np.ndarray:
    x = _a(xs)
    if _ints(node, "approximate")[0]:
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)
        return 0.5 * x * (1.0 + np.tanh(inner))
    with np.errstate(invalid="ignore"):
        return 0.5 * x * (1.0 + np.asarray(_ERF(x / math.sqrt(2.0)), np.float64))


def _reshape(node: Node, xs: Arrays, out: Shape) -> np.ndarray:
    return _a(xs).reshape(out)


def _concat(node: Node, xs: Arrays, out: Shape) -> np.ndarray:
    return np.concatenate([_a(xs, i) for i in range(len(xs))], axis=_ints(node, "axis")[0])


def _pad(node: Node, xs: Arrays, out: Shape) -> np.ndarray:
    x, p = _a(xs), _ints(node, "paddings")
    widths = [(p[2 * i], p[2 * i + 1]) for i in range(x.ndim)]
    mode = PAD_MODES[_ints(node, "mode", 1)[0]]
    # numpy's reflect, edge and symmetric are FORMAT.md's (within one mirror image)
    if mode == "reflect":
        return np.pad(x, widths, mode="reflect")
    if mode == "edge":
        return np.pad(x, widths, mode="edge")
    if mode == "symmetric":
        return np.pad(x, widths, mode="symmetric")
    return np.pad(x, widths, constant_values=_float(node, "value"))


def _softmax(node: Node, xs: Arrays, out: Shape) -> np.ndarray:
    z = _a(xs) * _float(node, "beta")
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _activation_op(node: Node, xs: Arrays, out: Shape) -> np.ndarray:
    return apply_activation(_a(xs), ACTIVATION_OF_OP[node.op])  # type: ignore[index]


def _clamp(node: Node, xs: Arrays, out: Shape) -> np.ndarray:
    return np.clip(_a(xs), _float(node, "min"), _float(node, "max"))


def _hard_sigmoid(node: Node, xs: Arrays, out: Shape) -> np.ndarray:
    return np.clip(_float(node, "alpha") * _a(xs) + _float(node, "offset"), 0.0, 1.0)


def _leaky_relu(node: Node, xs: Arrays, out: Shape) -> np.ndarray:
    x = _a(xs)
    return np.where(x < 0, _float(node, "alpha") * x, x)


def _elu(node: Node, xs: Arrays, out: Shape) -> np.ndarray:
    x = _a(xs)
    return np.where(x < 0, _float(node, "alpha") * np.expm1(np.minimum(x, 0.0)), x)


def _lrn(node: Node, xs: Arrays, out: Shape) -> np.ndarray:
    x = _a(xs)
    (size,) = _ints(node, "size", 1)
    sq = np.pad(x * x, [(0, 0)] * (x.ndim - 1) + [((size - 1) // 2, size // 2)])
    n = x.shape[-1]
    total = sum(sq[..., i:i + n] for i in range(size))
    base = _float(node, "offset") + _float(node, "alpha") / size * total
    return x / base ** _float(node, "beta")


def _lrn_shape(node: Node, shapes: Sequence[Shape | None], declared: Sequence[Shape]) -> Shape:
    x = _x(shapes)
    (size,) = _ints(node, "size", 1)
    if len(x) < 1 or size < 1:
        raise ShapeError(f"needs an input with a channel (last) axis and size >= 1, got "
                         f"{list(x)}, size={size}")
    return tuple(x)


def _prelu(a: np.ndarray, slope: np.ndarray) -> np.ndarray:
    return np.where(a < 0, a * slope, a)


def _transpose(node: Node, xs: Arrays, out: Shape) -> np.ndarray:
    return np.transpose(_a(xs), _ints(node, "perm"))


def _slice(node: Node, xs: Arrays, out: Shape) -> np.ndarray:
    x = _a(xs)
    steps = _slice_steps(node, x.ndim)
    # explicit indices: a backward slice's stop (b + n * s) can be -1, which numpy reads as
    # "the last element"
    return x[np.ix_(*(b + s * np.arange(n) for b, n, s in zip(_ints(node, "begin"), out, steps)))]


def _gather(node: Node, xs: Arrays, out: Shape) -> np.ndarray:
    # np.take counts negative indices from the end and raises outside [-n, n), as the engine.
    return np.take(_a(xs), _a(xs, 1).astype(np.int64), axis=_ints(node, "axis")[0])


def resize_source_index(node: Node, axis: int, n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """RESIZE's map of one spatial axis (1 = H, 2 = W): nearest indices, or bilinear taps.

    Returns (i0, frac) for bilinear (blend x[i0] and x[min(i0 + 1, n - 1)] by frac) and
    (index, zeros) for nearest; coordinates in float32 as ONNX Runtime computes them.
    """
    f32 = np.float32
    given = node.attrs.get("scales")
    s = f32(given[axis - 1]) if given is not None else f32(n_out) / f32(n_in)
    mode = _ints(node, "coordinate_mode")[0]
    x = np.arange(n_out, dtype=f32)
    if s == f32(1):
        c = x
    elif mode == 1 and n_out == 1 or mode == 2 and n_out == 1:
        c = np.zeros(1, f32)
    elif mode in (0, 1):
        c = (x + f32(0.5)) / s - f32(0.5)
    elif mode == 2:
        c = x * f32(n_in - 1) / f32(n_out - 1)
    elif mode == 3:
        c = x / s
    else:
        c = (x + f32(0.5)) / s
    d = np.clip(c.astype(np.float64), -1.0, float(n_in))
    if _ints(node, "interpolation")[0] == 1:
        v = np.clip(c, f32(0), f32(n_in - 1))
        i0 = np.minimum(np.floor(v).astype(np.int64), n_in - 1)
        return i0, (v - i0.astype(f32)).astype(np.float64)
    k = np.floor(d)
    f = d - k
    nm = _ints(node, "nearest_mode")[0]
    if nm in (0, 1):
        tie = np.abs(f - 0.5) <= np.maximum(1.0, np.abs(d)) * 2.0**-20
        i = np.where(tie, k + (nm == 1), np.where(f < 0.5, k, k + 1))
    elif nm == 2:
        i = k
    elif nm == 3 or (nm == 4 and s < f32(1)):
        i = np.where(f > 0, k + 1, k)
    else:
        i = k
    return np.clip(i, 0, n_in - 1).astype(np.int64), np.zeros(n_out)


def _resize(node: Node, xs: Arrays, out: Shape) -> np.ndarray:
    x = _a(xs)
    (iy, fy), (ix, fx) = (resize_source_index(node, a, x.shape[a], out[a]) for a in (1, 2))
    if _ints(node, "interpolation")[0] == 0:
        return x[:, iy][:, :, ix]
    jy, jx = np.minimum(iy + 1, x.shape[1] - 1), np.minimum(ix + 1, x.shape[2] - 1)
    fy, fx = fy[None, :, None, None], fx[None, None, :, None]
    top = x[:, iy][:, :, ix] * (1 - fx) + x[:, iy][:, :, jx] * fx
    bottom = x[:, jy][:, :, ix] * (1 - fx) + x[:, jy][:, :, jx] * fx
    return top * (1 - fy) + bottom * fy


def _normalize(x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
    mean = x.mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) + eps)


def _scale_shift(y: np.ndarray, xs: Arrays) -> np.ndarray:
    gamma, beta = (xs[i] if len(xs) > i else None for i in (1, 2))
    return (y if gamma is None else y * gamma) + (0.0 if beta is None else beta)


def _layer_norm(node: Node, xs: Arrays, out: Shape) -> np.ndarray:
    x = _a(xs)
    (axis,) = _ints(node, "axis", 1)
    return _scale_shift(_normalize(x, tuple(range(axis, x.ndim)), _float(node, "epsilon")), xs)


def _instance_norm(node: Node, xs: Arrays, out: Shape) -> np.ndarray:
    x = _a(xs)
    return _scale_shift(_normalize(x, tuple(range(1, x.ndim - 1)), _float(node, "epsilon")), xs)


def _norm_operands(node: Node, shapes: Sequence[Shape | None], want: Shape) -> None:
    eps = _float(node, "epsilon")
    if not (math.isfinite(eps) and eps > 0):
        raise ShapeError(f"epsilon must be finite and > 0, got {eps}")
    for i, what in ((1, "gamma"), (2, "beta")):
        s = shapes[i] if len(shapes) > i else None
        if s is not None and tuple(s) != want:
            raise ShapeError(f"input {i} ({what}) has shape {list(s)}, expected {list(want)}")


def _layer_norm_shape(node: Node, shapes: Sequence[Shape | None],
                      declared: Sequence[Shape]) -> Shape:
    x = _x(shapes)
    (axis,) = _ints(node, "axis", 1)
    if not 0 <= axis < len(x):
        raise ShapeError(f"axis {axis} (the first normalized axis) is outside [0, {len(x)}) "
                         f"of input {list(x)}")
    _norm_operands(node, shapes, tuple(x[axis:]))
    return tuple(x)


def _instance_norm_shape(node: Node, shapes: Sequence[Shape | None],
                         declared: Sequence[Shape]) -> Shape:
    x = _x(shapes)
    if len(x) < 3:
        raise ShapeError(f"needs an input [N, spatial..., C] of rank >= 3, got {list(x)}")
    _norm_operands(node, shapes, (x[-1],))
    return tuple(x)


def _batch_norm(node: Node, xs: Arrays, out: Shape) -> np.ndarray:
    x, gamma, beta, mean, var = (_a(xs, i) for i in range(5))
    (eps,) = node.attrs.get("epsilon", (1e-3,))
    return (x - mean) / np.sqrt(var + float(eps)) * gamma + beta


def _adjoint(node: Node) -> tuple[int, int]:
    adj_a, adj_b = _ints(node, "adjoint", 2)
    if adj_a not in (0, 1) or adj_b not in (0, 1):
        raise ShapeError(f"attribute adjoint={[adj_a, adj_b]} must hold two values 0 or 1")
    return adj_a, adj_b


def _batch_matmul_shape(node: Node, shapes: Sequence[Shape | None],
                        declared: Sequence[Shape]) -> Shape:
    a, b = _x(shapes), _x(shapes, 1)
    adj_a, adj_b = _adjoint(node)
    if not (2 <= len(a) <= 6 and 2 <= len(b) <= 6):
        raise ShapeError(f"needs inputs of rank 2..6, got A {list(a)} and B {list(b)}")
    m, k = (a[-1], a[-2]) if adj_a else (a[-2], a[-1])
    kb, n = (b[-1], b[-2]) if adj_b else (b[-2], b[-1])
    if k != kb:
        raise ShapeError(f"A {list(a)} (adjoint {adj_a}) has K={k} but B {list(b)} (adjoint "
                         f"{adj_b}) has K={kb}")
    try:
        batch = tuple(int(d) for d in np.broadcast_shapes(a[:-2], b[:-2]))
    except ValueError:
        raise ShapeError(f"batch dims {list(a[:-2])} of A {list(a)} and {list(b[:-2])} of B "
                         f"{list(b)} do not broadcast") from None
    return batch + (m, n)


def _batch_matmul(node: Node, xs: Arrays, out: Shape) -> np.ndarray:
    adj_a, adj_b = _adjoint(node)
    a, b = _a(xs), _a(xs, 1)
    return np.matmul(np.swapaxes(a, -1, -2) if adj_a else a,
                     np.swapaxes(b, -1, -2) if adj_b else b)


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Reference:
    return lambda node, xs, out: fn(_a(xs), _a(xs, 1))


# ---------------------------------------------------------------------- the table

_WINDOW = ("strides", "dilations", "pads")
_UNARY = (1, 1)

_DEFS = (
    OpDef(OpType.CONV_2D, (2, 3), _WINDOW + ("groups",), _conv2d_shape, _conv2d, fold=False),
    OpDef(OpType.DEPTHWISE_CONV_2D, (2, 3), _WINDOW + ("depth_multiplier",), _depthwise_shape,
          _depthwise, fold=False),
    OpDef(OpType.FULLY_CONNECTED, (2, 3), (), _dense_shape, _dense, fold=False),
    OpDef(OpType.ADD, (2, 2), (), _broadcast_shape, _binary(np.add)),
    OpDef(OpType.MUL, (2, 2), (), _broadcast_shape, _binary(np.multiply)),
    OpDef(OpType.SUB, (2, 2), (), _broadcast_shape, _binary(np.subtract)),
    OpDef(OpType.DIV, (2, 2), (), _broadcast_shape, _binary(np.divide)),
    OpDef(OpType.MAX_POOL_2D, _UNARY, _WINDOW + ("kernel",), _pool_shape, _pool, fold=False),
    OpDef(OpType.AVERAGE_POOL_2D, _UNARY, _WINDOW + ("kernel", "count_include_pad"),
          _pool_shape, _pool, fold=False),
    OpDef(OpType.MEAN, _UNARY, ("axes", "keepdims"), _mean_shape, _mean),
    OpDef(OpType.RESHAPE, _UNARY, (), _reshape_shape, _reshape),
    OpDef(OpType.CONCATENATION, (1, 1 << 30), ("axis",), _concat_shape, _concat),
    OpDef(OpType.PAD, _UNARY, ("paddings", "value", "mode"), _pad_shape, _pad),
    OpDef(OpType.SOFTMAX, _UNARY, ("beta",), _softmax_shape, _softmax, fold=False),
    OpDef(OpType.RELU, _UNARY, (), _same_shape, _activation_op),
    OpDef(OpType.RELU6, _UNARY, (), _same_shape, _activation_op),
    OpDef(OpType.LOGISTIC, _UNARY, (), _same_shape, _activation_op),
    OpDef(OpType.TANH, _UNARY, (), _same_shape, _activation_op),
    OpDef(OpType.HARD_SWISH, _UNARY, (), _same_shape, _activation_op),
    OpDef(OpType.QUANTIZE, _UNARY, (), _same_shape, None, fold=False),
    OpDef(OpType.DEQUANTIZE, _UNARY, (), _same_shape, None, fold=False),
    OpDef(OpType.TRANSPOSE, _UNARY, ("perm",), _transpose_shape, _transpose),
    OpDef(OpType.CLAMP, _UNARY, ("min", "max"), _clamp_shape, _clamp),
    OpDef(OpType.HARD_SIGMOID, _UNARY, ("alpha", "offset"), _same_shape, _hard_sigmoid),
    OpDef(OpType.LEAKY_RELU, _UNARY, ("alpha",), _same_shape, _leaky_relu),
    OpDef(OpType.ELU, _UNARY, ("alpha",), _same_shape, _elu),
    OpDef(OpType.PRELU, (2, 2), (), _broadcast_shape, _binary(_prelu)),
    OpDef(OpType.MAXIMUM, (2, 2), (), _broadcast_shape, _binary(np.maximum)),
    OpDef(OpType.MINIMUM, (2, 2), (), _broadcast_shape, _binary(np.minimum)),
    OpDef(OpType.LRN, _UNARY, ("size", "alpha", "beta", "offset"), _lrn_shape, _lrn),
    OpDef(OpType.SLICE, _UNARY, ("begin", "steps"), _slice_shape, _slice),
    OpDef(OpType.RESIZE, _UNARY, ("interpolation", "coordinate_mode", "nearest_mode", "scales"),
          _resize_shape, _resize, fold=False),
    OpDef(OpType.GATHER, (2, 2), ("axis",), _gather_shape, _gather),
    OpDef(OpType.LAYER_NORM, (1, 3), ("axis", "epsilon"), _layer_norm_shape, _layer_norm),
    OpDef(OpType.INSTANCE_NORM, (1, 3), ("epsilon",), _instance_norm_shape, _instance_norm),
    OpDef(OpType.GELU, _UNARY, ("approximate",), _same_shape, _gelu),
    OpDef(OpType.REDUCE_MAX, _UNARY, ("axes", "keepdims"), _mean_shape, _reduce_max),
    OpDef(OpType.BATCH_MATMUL, (2, 2), ("adjoint",), _batch_matmul_shape, _batch_matmul,
          fold=False),
    OpDef(InternalOp.BATCH_NORM, (5, 5), (), _batch_norm_shape, _batch_norm),
    OpDef(InternalOp.IDENTITY, _UNARY, (), _same_shape, _reshape),
    OpDef(InternalOp.SQRT, _UNARY, (), _same_shape, lambda node, xs, out: np.sqrt(_a(xs))),
    OpDef(InternalOp.ERF, _UNARY, (), _same_shape, _erf),
)

OPDEFS: Mapping[AnyOp, OpDef] = {d.op: d for d in _DEFS}

# The attributes each file op accepts (FORMAT.md op table); the writer and reader check them.
OP_ATTRS: Mapping[OpType, tuple[str, ...]] = {
    d.op: d.attrs for d in _DEFS if isinstance(d.op, OpType)
}
