"""The converter's graph IR: tensors, nodes and graphs, plus validation and shape inference.

Every object here is immutable: graph passes build new graphs and never change the one they
are given. Constant data is held as read-only numpy arrays.

Shape inference (`infer_output_shapes`) only looks at shapes and attributes; it never
computes values. Each op's rule is its `opdefs.OpDef.shape`.
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from tether.converter._internal.opdefs import OPDEFS, ShapeError, attr, conv_output_size
from tether.converter._internal.ops import (
    DTYPE_NUMPY,
    Activation,
    AnyOp,
    DType,
)

from tether.errors import ConversionError

__all__ = [
    "MAX_DIMS",
    "AttrValue",
    "Graph",
    "GraphBuilder",
    "Node",
    "Quantization",
    "Shape",
    "ShapeError",
    "Tensor",
    "attr",
    "conv_output_size",
    "infer_output_shapes",
    "unique_name",
    "validate",
]

MAX_DIMS = 6

Shape = tuple[int, ...]
AttrValue = tuple[int, ...] | tuple[float, ...]


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
        return unique_name(base, self.tensors)


def unique_name(base: str, *taken: Container[str]) -> str:
    """`base` (or "t" for an empty one), else `base_1`, `base_2`, ...: the first name in none
    of `taken`. Every place that makes tensor names uses this.

    >>> unique_name("conv", {"conv", "conv_1"})
    'conv_2'
    """
    base = base or "t"
    name, i = base, 1
    while any(name in t for t in taken):
        name = f"{base}_{i}"
        i += 1
    return name


class GraphBuilder:
    """Tensors and nodes accumulated in execution order: what every frontend and lowering
    uses to make a graph. Output shapes come from shape inference as each node is emitted.

    Attributes:
        tensors: name -> Tensor (starts as a copy of `tensors`).
        nodes: the emitted nodes, in order.
    """

    def __init__(self, tensors: Mapping[str, Tensor] | None = None) -> None:
        self.tensors: dict[str, Tensor] = dict(tensors or {})
        self.nodes: list[Node] = []

    def unique(self, base: str) -> str:
        """A tensor name not taken yet (`unique_name`)."""
        return unique_name(base, self.tensors)

    def add(self, tensor: Tensor) -> str:
        """Adds (or replaces) `tensor`; returns its name."""
        self.tensors[tensor.name] = tensor
        return tensor.name

    def const(self, base: str, value: np.ndarray, dtype: DType = DType.FLOAT32,
              quant: Quantization | None = None) -> str:
        """A new constant of `value` (converted to `dtype`) under a unique name from `base`."""
        arr = np.ascontiguousarray(np.asarray(value, DTYPE_NUMPY[dtype]))
        return self.add(Tensor(self.unique(base), arr.shape, dtype, arr, quant))

    def emit(self, op: AnyOp, name: str, inputs: Sequence[str | None], out: str, *,
             attrs: Mapping[str, AttrValue] | None = None,
             activation: Activation = Activation.NONE,
             declared: Shape | None = None, dtype: DType = DType.FLOAT32,
             quant: Quantization | None = None, exact_name: bool = False) -> str:
        """Appends node `op` (source name `name`) over `inputs`; its output tensor is named
        from `out` (made unique unless `exact_name`) and shaped by `infer_output_shapes`
        (`declared`: RESHAPE's target). Returns the output's name.

        Raises:
            ShapeError: the inputs' shapes or the attributes do not fit the op.
        """
        out = out if exact_name else self.unique(out)
        node = Node(op, name, tuple(inputs), (out,), attrs or {}, activation)
        shapes = [None if x is None else self.tensors[x].shape for x in inputs]
        (shape,) = infer_output_shapes(node, shapes, [declared] if declared is not None else [])
        self.tensors[out] = Tensor(out, shape, dtype, None, quant)
        self.nodes.append(node)
        return out


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
    d = OPDEFS.get(node.op)
    if d is None:
        raise ShapeError(f"unknown op {node.op!r}")
    lo, hi = d.inputs
    if not lo <= len(input_shapes) <= hi:
        raise ShapeError(f"takes {lo}..{min(hi, 99)} inputs, got {len(input_shapes)}")
    for i, s in enumerate(input_shapes[:lo]):
        if s is None:
            raise ShapeError(f"input {i} is required")
    if len(node.outputs) != 1:
        raise ShapeError(f"has one output, got {len(node.outputs)}")
    for name in d.attrs:
        attr(node, name)  # a required attribute that is missing raises here
    return [d.shape(node, input_shapes, declared)]


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
