"""The converter's graph IR: tensors, nodes and graphs, plus validation and shape inference.

Every object here is immutable: graph passes build new graphs and never change the one they
are given. Constant data is held as read-only numpy arrays.

Shape inference (`infer_output_shapes`) only looks at shapes and attributes; it never
computes values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from tether.converter._internal.ops import (
    ATTRS,
    DTYPE_NUMPY,
    Activation,
    AnyOp,
    DType,
    InternalOp,
    OpType,
)

from tether.errors import ConversionError

__all__ = [
    "MAX_DIMS",
    "AttrValue",
    "Graph",
    "Node",
    "Quantization",
    "Shape",
    "ShapeError",
    "Tensor",
    "attr",
    "conv_output_size",
    "infer_output_shapes",
    "validate",
]

MAX_DIMS = 6

Shape = tuple[int, ...]
AttrValue = tuple[int, ...] | tuple[float, ...]


class ShapeError(ValueError):
    """Shapes or attributes do not fit an op (callers wrap it in a tether error)."""


@dataclass(frozen=True)
class Quantization:
    """Affine quantization: real = scale * (q - zero_point).

    Attributes:
        scale: per-tensor (one value) or per-channel scales; each finite and > 0.
        zero_point: as many zero points as scales.
        axis: channel axis for per-channel quantization; None for per-tensor.
    """

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int | None = None

    def __post_init__(self) -> None:
        if len(self.scale) == 0 or len(self.scale) != len(self.zero_point):
            raise ValueError(
                "Quantization needs as many zero points as scales (at least one). "
                f"Received: scale={self.scale}, zero_point={self.zero_point}"
            )
        if self.axis is None and len(self.scale) != 1:
            raise ValueError(
                f"Per-tensor quantization has one scale. Received: scale={self.scale}"
            )
        for s in self.scale:
            if not (math.isfinite(s) and s > 0):
                raise ValueError(f"Quantization scales must be finite and > 0. Received: {s}")


def _freeze_array(data: np.ndarray, dtype: DType) -> np.ndarray:
    dt = DTYPE_NUMPY[dtype]
    if (isinstance(data, np.ndarray) and data.dtype == dt and data.flags.c_contiguous
            and not data.flags.writeable):
        return data  # already frozen: share it between graphs
    arr = np.array(data, dtype=dt, order="C")  # a private copy (keeps 0-d arrays 0-d)
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False)
class Tensor:
    """A named value of the graph.

    Attributes:
        name: unique within the graph.
        shape: dims, each >= 1; () is a scalar.
        dtype: element type; FLOAT32 by default.
        data: constant contents (read-only, C order, of `shape` and `dtype`), or None for a
            value computed at run time.
        quant: quantization parameters, or None for a float tensor.
    """

    name: str
    shape: Shape
    dtype: DType = DType.FLOAT32
    data: np.ndarray | None = None
    quant: Quantization | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "dtype", DType(self.dtype))
        if self.data is not None:
            arr = _freeze_array(self.data, self.dtype)
            if arr.shape != self.shape:
                raise ValueError(
                    f"Tensor '{self.name}': data shape {arr.shape} != shape {self.shape}"
                )
            object.__setattr__(self, "data", arr)

    @property
    def is_constant(self) -> bool:
        """True when the tensor holds constant data."""
        return self.data is not None

    @property
    def size(self) -> int:
        """Element count (1 for a scalar)."""
        return int(math.prod(self.shape))


@dataclass(frozen=True)
class Node:
    """One op application.

    Attributes:
        op: a file op (`OpType`) or an `InternalOp`.
        name: source node name (e.g. the Keras layer name); need not be unique.
        inputs: tensor names; None marks an absent optional input.
        outputs: tensor names this node defines.
        attrs: attribute name (see `ops.ATTRS`, plus internal ones such as "epsilon") ->
            tuple of ints or floats.
        activation: fused activation applied to every output.
    """

    op: AnyOp
    name: str
    inputs: tuple[str | None, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, AttrValue] = field(default_factory=dict)
    activation: Activation = Activation.NONE

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "attrs", dict(self.attrs))
        object.__setattr__(self, "activation", Activation(self.activation))

    __hash__ = None  # type: ignore[assignment]

    def describe(self) -> str:
        """Returns "'name' (OP)" for messages."""
        return f"'{self.name}' ({self.op.name})"


@dataclass(frozen=True)
class Graph:
    """A whole model: tensors by name, nodes in execution order, graph inputs and outputs.

    Attributes:
        tensors: name -> Tensor.
        nodes: in execution order.
        inputs: names of the graph inputs (non-constant tensors fed by the caller).
        outputs: names of the graph outputs.
        name: model name, for messages and metadata.
    """

    tensors: Mapping[str, Tensor]
    nodes: tuple[Node, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensors", dict(self.tensors))
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))

    __hash__ = None  # type: ignore[assignment]

    def tensor(self, name: str) -> Tensor:
        """Returns the tensor called `name` (ConversionError if there is none)."""
        try:
            return self.tensors[name]
        except KeyError:
            raise ConversionError(f"graph '{self.name}': no tensor named '{name}'") from None

    def producers(self) -> dict[str, int]:
        """Returns tensor name -> index of the node that outputs it."""
        return {out: i for i, n in enumerate(self.nodes) for out in n.outputs}

    def consumers(self) -> dict[str, list[int]]:
        """Returns tensor name -> indices of the nodes that read it (once per read)."""
        result: dict[str, list[int]] = {}
        for i, n in enumerate(self.nodes):
            for name in n.inputs:
                if name is not None:
                    result.setdefault(name, []).append(i)
        return result

    def use_count(self, name: str) -> int:
        """Returns how often `name` is read by nodes or listed as a graph output."""
        uses = sum(1 for n in self.nodes for i in n.inputs if i == name)
        return uses + sum(1 for o in self.outputs if o == name)

    def op_counts(self) -> dict[str, int]:
        """Returns op name -> number of nodes, sorted by name."""
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op.name] = counts.get(n.op.name, 0) + 1
        return dict(sorted(counts.items()))

    def rebuilt(
        self,
        nodes: Iterable[Node],
        new_tensors: Iterable[Tensor] = (),
        outputs: Sequence[str] | None = None,
    ) -> Graph:
        """Returns a new graph with `nodes`, existing tensors overridden by `new_tensors`,
        and only the tensors still referenced kept (in first-reference order).
        """
        pool = dict(self.tensors)
        for t in new_tensors:
            pool[t.name] = t
        nodes = tuple(nodes)
        outs = tuple(self.outputs if outputs is None else outputs)
        kept: dict[str, Tensor] = {}

        def keep(name: str | None) -> None:
            if name is not None and name not in kept and name in pool:
                kept[name] = pool[name]

        for name in self.inputs:
            keep(name)
        for n in nodes:
            for maybe in n.inputs:
                keep(maybe)
            for name in n.outputs:
                keep(name)
        for name in outs:
            keep(name)
        return Graph(kept, nodes, self.inputs, outs, self.name)

    def unique_name(self, base: str) -> str:
        """Returns `base`, or `base_1`, `base_2`, ... whichever is not a tensor name yet."""
        if base not in self.tensors:
            return base
        i = 1
        while f"{base}_{i}" in self.tensors:
            i += 1
        return f"{base}_{i}"


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


def conv_output_size(size: int, kernel: int, stride: int, dilation: int, pad_begin: int,
                     pad_end: int) -> int:
    """out = floor((in + pad_begin + pad_end - d*(k-1) - 1) / s) + 1 (FORMAT.md).

    >>> conv_output_size(7, 3, 2, 1, 0, 1)
    4
    """
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


def _broadcast(a: Shape, b: Shape) -> Shape:
    try:
        return tuple(int(d) for d in np.broadcast_shapes(a, b))
    except ValueError:
        raise ShapeError(f"shapes {list(a)} and {list(b)} do not broadcast") from None


def _ints(node: Node, name: str, count: int) -> tuple[int, ...]:
    value = tuple(int(v) for v in attr(node, name))
    if len(value) != count:
        raise ShapeError(f"attribute '{name}' needs {count} values, got {list(value)}")
    return value


def _window_shape(node: Node, x: Shape, kh: int, kw: int, channels: int) -> Shape:
    if len(x) != 4:
        raise ShapeError(f"input must be 4-D [N,H,W,C], got {list(x)}")
    sh, sw = _ints(node, "strides", 2)
    if node.op in (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D):
        dh, dw = _ints(node, "dilations", 2)
    else:
        dh = dw = 1
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


def infer_output_shapes(
    node: Node,
    input_shapes: Sequence[Shape | None],
    declared: Sequence[Shape] = (),
) -> list[Shape]:
    """Returns the output shapes of `node` from its input shapes and attributes.

    Args:
        node: the op and its attributes.
        input_shapes: one shape per input; None for an absent optional input.
        declared: the output shapes stored in the graph; used only by RESHAPE, whose output
            shape is not implied by its input (the element count is checked).

    Raises:
        ShapeError: the shapes or attributes do not fit the op.
    """
    op = node.op
    required = {
        OpType.CONV_2D: 2, OpType.DEPTHWISE_CONV_2D: 2, OpType.FULLY_CONNECTED: 2,
        OpType.ADD: 2, OpType.MUL: 2, OpType.SUB: 2, OpType.DIV: 2, InternalOp.BATCH_NORM: 5,
    }.get(op, 1)
    maximum = {
        OpType.CONV_2D: 3, OpType.DEPTHWISE_CONV_2D: 3, OpType.FULLY_CONNECTED: 3,
        OpType.ADD: 2, OpType.MUL: 2, OpType.SUB: 2, OpType.DIV: 2, InternalOp.BATCH_NORM: 5,
        OpType.CONCATENATION: 1 << 30,
    }.get(op, 1)
    if not required <= len(input_shapes) <= maximum:
        raise ShapeError(f"takes {required}..{min(maximum, 99)} inputs, got {len(input_shapes)}")
    for i, s in enumerate(input_shapes[:required]):
        if s is None:
            raise ShapeError(f"input {i} is required")
    shapes = list(input_shapes)
    x = shapes[0]
    assert x is not None
    if len(node.outputs) != 1:
        raise ShapeError(f"has one output, got {len(node.outputs)}")

    if op == OpType.CONV_2D:
        w = shapes[1]
        assert w is not None
        (groups,) = _ints(node, "groups", 1)
        if len(w) != 4 or len(x) != 4:
            raise ShapeError(f"needs x [N,H,W,C] and W [OC,KH,KW,C/G], got {list(x)}, {list(w)}")
        if groups < 1 or x[3] % groups or w[0] % groups or w[3] != x[3] // groups:
            raise ShapeError(
                f"W {list(w)} does not fit input channels {x[3]} with groups={groups}"
            )
        _check_bias(shapes, w[0])
        return [_window_shape(node, x, w[1], w[2], w[0])]
    if op == OpType.DEPTHWISE_CONV_2D:
        w = shapes[1]
        assert w is not None
        (m,) = _ints(node, "depth_multiplier", 1)
        if len(w) != 4 or len(x) != 4 or w[0] != 1 or m < 1 or w[3] != x[3] * m:
            raise ShapeError(
                f"needs W [1,KH,KW,C*M] with C={x[-1]}, M={m}, got W {list(w)}, x {list(x)}"
            )
        _check_bias(shapes, w[3])
        return [_window_shape(node, x, w[1], w[2], w[3])]
    if op == OpType.FULLY_CONNECTED:
        w = shapes[1]
        assert w is not None
        if len(x) < 1 or len(w) != 2 or w[1] != x[-1]:
            raise ShapeError(f"needs x [..., K] and W [O, K], got {list(x)}, {list(w)}")
        _check_bias(shapes, w[0])
        return [tuple(x[:-1]) + (w[0],)]
    if op in (OpType.ADD, OpType.MUL, OpType.SUB, OpType.DIV):
        b = shapes[1]
        assert b is not None
        return [_broadcast(x, b)]
    if op in (OpType.MAX_POOL_2D, OpType.AVERAGE_POOL_2D):
        kh, kw = _ints(node, "kernel", 2)
        if len(x) != 4:
            raise ShapeError(f"input must be 4-D [N,H,W,C], got {list(x)}")
        return [_window_shape(node, x, kh, kw, x[3])]
    if op == OpType.MEAN:
        axes = tuple(int(a) for a in attr(node, "axes"))
        (keepdims,) = _ints(node, "keepdims", 1)
        if not axes or len(set(axes)) != len(axes) or any(a < 0 or a >= len(x) for a in axes):
            raise ShapeError(f"axes {list(axes)} must be distinct and in [0, {len(x)})")
        if keepdims:
            return [tuple(1 if i in axes else d for i, d in enumerate(x))]
        return [tuple(d for i, d in enumerate(x) if i not in axes)]
    if op == OpType.RESHAPE:
        if len(declared) != 1:
            raise ShapeError("the output shape must be declared")
        if math.prod(declared[0]) != math.prod(x):
            raise ShapeError(f"cannot reshape {list(x)} to {list(declared[0])}")
        return [tuple(declared[0])]
    if op == OpType.CONCATENATION:
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
        return [tuple(total if i == axis else d for i, d in enumerate(x))]
    if op == OpType.PAD:
        pads = tuple(int(p) for p in attr(node, "paddings"))
        if len(pads) != 2 * len(x) or min(pads, default=0) < 0:
            raise ShapeError(f"paddings {list(pads)} must be 2*rank={2 * len(x)} values >= 0")
        return [tuple(d + pads[2 * i] + pads[2 * i + 1] for i, d in enumerate(x))]
    if op in (
        OpType.SOFTMAX, OpType.RELU, OpType.RELU6, OpType.LOGISTIC, OpType.TANH,
        OpType.HARD_SWISH, InternalOp.IDENTITY, OpType.CLAMP, OpType.HARD_SIGMOID,
        OpType.QUANTIZE, OpType.DEQUANTIZE,
    ):
        if op == OpType.CLAMP:
            lo, hi = float(attr(node, "min")[0]), float(attr(node, "max")[0])
            if not lo <= hi:
                raise ShapeError(f"min {lo} > max {hi}")
        if op == OpType.HARD_SIGMOID:
            attr(node, "alpha"), attr(node, "offset")
        if op == OpType.SOFTMAX and len(x) < 1:
            raise ShapeError("input must have at least one axis")
        return [tuple(x)]
    if op == OpType.TRANSPOSE:
        perm = tuple(int(v) for v in attr(node, "perm"))
        if sorted(perm) != list(range(len(x))):
            raise ShapeError(f"perm {list(perm)} is not a permutation of rank {len(x)}")
        return [tuple(x[p] for p in perm)]
    if op == InternalOp.BATCH_NORM:
        c = x[-1] if x else 0
        for i, s in enumerate(shapes[1:], start=1):
            if s != (c,):
                raise ShapeError(f"parameter {i} must be [{c}], got {list(s or ())}")
        return [tuple(x)]
    raise ShapeError(f"unknown op {op!r}")


def _shape_ok(shape: Shape) -> bool:
    return len(shape) <= MAX_DIMS and all(isinstance(d, int) and d >= 1 for d in shape)


def validate(graph: Graph, *, context: str = "") -> None:
    """Checks that `graph` is well formed.

    Every name referenced exists; every tensor has a valid shape (rank <= 6, dims >= 1);
    every node input is a constant, a graph input or an output of an earlier node; every
    tensor is defined once; every tensor in the table is referenced; output shapes agree
    with shape inference; graph inputs are not constants.

    Args:
        graph: the graph to check.
        context: prefix for messages (e.g. "after pass fuse_activations").

    Raises:
        ConversionError: naming the node and tensor at fault.
    """
    where = f"{context}: " if context else ""
    where += f"graph '{graph.name}'"

    def fail(msg: str) -> None:
        raise ConversionError(f"{where}: {msg}")

    for key, t in graph.tensors.items():
        if key != t.name:
            fail(f"tensor table key '{key}' holds tensor '{t.name}'")
        if not _shape_ok(t.shape):
            fail(f"tensor '{t.name}' has invalid shape {list(t.shape)} (rank <= 6, dims >= 1)")
    defined: set[str] = set()
    referenced: set[str] = set()
    for name in graph.inputs:
        t_in = graph.tensors.get(name)
        if t_in is None:
            fail(f"graph input '{name}' is not a tensor")
        elif t_in.is_constant:
            fail(f"graph input '{name}' is a constant")
        if name in defined:
            fail(f"graph input '{name}' listed twice")
        defined.add(name)
        referenced.add(name)
    for idx, node in enumerate(graph.nodes):
        label = f"node {idx} {node.describe()}"
        if not node.outputs:
            fail(f"{label} has no outputs")
        in_shapes: list[Shape | None] = []
        for slot, maybe in enumerate(node.inputs):
            if maybe is None:
                in_shapes.append(None)
                continue
            referenced.add(maybe)
            t_x = graph.tensors.get(maybe)
            if t_x is None:
                fail(f"{label}: input {slot} '{maybe}' is not a tensor")
            assert t_x is not None
            if not t_x.is_constant and maybe not in defined:
                fail(f"{label}: input {slot} '{maybe}' is used before it is defined")
            in_shapes.append(t_x.shape)
        for slot, name in enumerate(node.outputs):
            referenced.add(name)
            t_y = graph.tensors.get(name)
            if t_y is None:
                fail(f"{label}: output {slot} '{name}' is not a tensor")
            assert t_y is not None
            if t_y.is_constant or name in defined:
                fail(f"{label}: output {slot} '{name}' is defined twice")
            defined.add(name)
        declared = [graph.tensors[o].shape for o in node.outputs]
        try:
            inferred = infer_output_shapes(node, in_shapes, declared)
        except ShapeError as e:
            fail(f"{label}: {e}")
        if [tuple(s) for s in inferred] != declared:
            fail(f"{label}: output shapes {declared} != inferred {inferred}")
    for name in graph.outputs:
        referenced.add(name)
        t_out = graph.tensors.get(name)
        if t_out is None:
            fail(f"graph output '{name}' is not a tensor")
        assert t_out is not None
        if not t_out.is_constant and name not in defined:
            fail(f"graph output '{name}' is never computed")
    unused = [n for n in graph.tensors if n not in referenced]
    if unused:
        fail(f"tensors {unused[:5]} are never referenced")
