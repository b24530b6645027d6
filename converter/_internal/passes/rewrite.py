"""The rewrite machinery every pass is made of: patterns, matches, rewrites, passes.

A pass is a named list of rules. A rule pairs a `Pat` (what the subgraph ending at a node
looks like) with a function that returns a `Rewrite`, or None when the rule does not apply
after all. Patterns name ops, fused activations, use counts and constants (any constant, or a
scalar of a given value), capture the nodes and tensors they meet, refer back to a captured
tensor (`same`), and match a commutative op's two inputs in either order. Passes are pure:
they build new graphs and never change the one they are given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from tether.converter._internal import ir
from tether.converter._internal.ops import Activation, AnyOp, DType

from tether.errors import ConversionError

__all__ = [
    "Match",
    "Pat",
    "Rewrite",
    "RewritePass",
    "Rule",
    "const",
    "op",
    "same",
    "scalar",
    "tensor",
]


@dataclass(frozen=True)
class Pat:
    """A pattern over the subgraph that ends at a node.

    Attributes:
        ops: node ops that match; empty = any op. Ignored when `const` is set.
        inputs: sub-patterns for the first input slots (None = anything there).
        capture: key under which the matched node (or constant tensor) is captured.
        const: match a constant tensor instead of a node.
        single_use: the node's outputs are read exactly once and are not graph outputs.
        plain: the node has no fused activation.
        activation: the node's fused activation must be this one (None = any).
        commutative: a two-input node may match its sub-patterns in either input order
            (ADD, MUL), captures of the order that failed are discarded.
        scalar: match a float32 constant of one element within `tolerance` of this value.
        tolerance: absolute tolerance of `scalar`.
        tensor: match any tensor (a node output, a graph input or a constant) and capture
            its name under `capture` in `Match.names`.
        same: match the tensor captured earlier (in pattern order) under this key.
    """

    ops: tuple[AnyOp, ...] = ()
    inputs: tuple[Pat | None, ...] = ()
    capture: str | None = None
    const: bool = False
    single_use: bool = False
    plain: bool = False
    activation: Activation | None = None
    commutative: bool = False
    scalar: float | None = None
    tolerance: float = 0.0
    tensor: bool = False
    same: str | None = None


def op(*ops: AnyOp, capture: str | None = None, inputs: Sequence[Pat | None] = (),
       single_use: bool = False, plain: bool = False, activation: Activation | None = None,
       commutative: bool = False) -> Pat:
    """Pattern for a node with one of `ops` (any op when none given)."""
    return Pat(tuple(ops), tuple(inputs), capture, False, single_use, plain, activation,
               commutative)


def const(capture: str | None = None) -> Pat:
    """Pattern for a constant tensor."""
    return Pat(capture=capture, const=True)


def scalar(value: float, tolerance: float = 0.0, capture: str | None = None) -> Pat:
    """Pattern for a one-element float32 constant equal to `value` (within `tolerance`)."""
    return Pat(capture=capture, const=True, scalar=value, tolerance=tolerance)


def tensor(capture: str) -> Pat:
    """Pattern for any tensor, its name captured (`Match.names[capture]`)."""
    return Pat(capture=capture, tensor=True)


def same(key: str) -> Pat:
    """Pattern for the tensor captured earlier as `key` (e.g. the x of x * relu6(x + 3))."""
    return Pat(same=key)


@dataclass
class Match:
    """What a pattern matched: captured nodes (with their indices), constant tensors and
    tensor names."""

    graph: ir.Graph
    root: int
    nodes: dict[str, tuple[int, ir.Node]] = field(default_factory=dict)
    tensors: dict[str, ir.Tensor] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)

    def node(self, key: str) -> ir.Node:
        """Returns the node captured as `key`."""
        return self.nodes[key][1]

    def indices(self, *keys: str) -> tuple[int, ...]:
        """The node indices captured under `keys`."""
        return tuple(self.nodes[k][0] for k in keys)


@dataclass(frozen=True)
class Rewrite:
    """A local graph edit.

    Attributes:
        kind: short rewrite kind for the report (e.g. "fold_batch_norm").
        note: one line for the report, e.g. "folded bn1 into conv1".
        remove: indices of the nodes to drop.
        add: nodes to insert where the matched root node was.
        tensors: new or replaced tensors.
        substitute: old tensor name -> new name, applied to every remaining node input.
    """

    kind: str
    note: str
    remove: tuple[int, ...] = ()
    add: tuple[ir.Node, ...] = ()
    tensors: tuple[ir.Tensor, ...] = ()
    substitute: Mapping[str, str] = field(default_factory=dict)


RuleFn = Callable[[Match], Rewrite | None]
Rule = tuple[Pat, RuleFn]


def _single_use(graph: ir.Graph, node: ir.Node, uses: Mapping[str, int]) -> bool:
    return all(uses.get(o, 0) == 1 and o not in graph.outputs for o in node.outputs)


def _scalar_value(t: ir.Tensor) -> float | None:
    """The value of a one-element float32 constant, else None."""
    if not t.is_constant or t.dtype != DType.FLOAT32 or t.size != 1:
        return None
    return float(np.asarray(t.data).reshape(()))


def _match_input(sub: Pat, name: str | None, graph: ir.Graph, m: Match,
                 producers: Mapping[str, int], uses: Mapping[str, int]) -> bool:
    if name is None:
        return False
    if sub.same is not None:
        return m.names.get(sub.same) == name
    if sub.tensor:
        if sub.capture:
            m.names[sub.capture] = name
        return True
    if sub.const:
        t = graph.tensors[name]
        if not t.is_constant:
            return False
        if sub.scalar is not None:
            v = _scalar_value(t)
            if v is None or abs(v - sub.scalar) > sub.tolerance:
                return False
        if sub.capture:
            m.tensors[sub.capture] = t
        return True
    if name not in producers:
        return False
    return _match(sub, graph, producers[name], m, producers, uses)


def _match_inputs(subs: Sequence[Pat | None], names: Sequence[str | None], graph: ir.Graph,
                  m: Match, producers: Mapping[str, int], uses: Mapping[str, int]) -> bool:
    return all(sub is None or _match_input(sub, name, graph, m, producers, uses)
               for sub, name in zip(subs, names))


def _match(pat: Pat, graph: ir.Graph, index: int, m: Match, producers: Mapping[str, int],
           uses: Mapping[str, int]) -> bool:
    node = graph.nodes[index]
    if pat.ops and node.op not in pat.ops:
        return False
    if pat.plain and node.activation != Activation.NONE:
        return False
    if pat.activation is not None and node.activation != pat.activation:
        return False
    if pat.single_use and not _single_use(graph, node, uses):
        return False
    if len(pat.inputs) > len(node.inputs):
        return False
    orders: list[Sequence[str | None]] = [node.inputs]
    if pat.commutative and len(node.inputs) == 2:
        orders.append((node.inputs[1], node.inputs[0]))
    for names in orders:
        saved = (dict(m.nodes), dict(m.tensors), dict(m.names))
        if _match_inputs(pat.inputs, names, graph, m, producers, uses):
            if pat.capture:
                m.nodes[pat.capture] = (index, node)
            return True
        m.nodes, m.tensors, m.names = saved
    return False


def _apply(graph: ir.Graph, root: int, rw: Rewrite) -> ir.Graph:
    subst = dict(rw.substitute)

    def sub(name: str | None) -> str | None:
        while name is not None and name in subst:
            name = subst[name]
        return name

    removed = set(rw.remove)
    nodes: list[ir.Node] = []
    for i, n in enumerate(graph.nodes):
        if i == root:
            nodes.extend(rw.add)
        if i in removed:
            continue
        if subst and any(x in subst for x in n.inputs if x is not None):
            n = replace(n, inputs=tuple(sub(x) for x in n.inputs))
        nodes.append(n)
    return graph.rebuilt(nodes, rw.tensors)


@dataclass(frozen=True)
class RewritePass:
    """A named list of rules, applied until none matches.

    Calling the pass is the pure `Graph -> Graph` function; `apply` also returns the
    rewrites it made.
    """

    name: str
    rules: tuple[Rule, ...]
    max_rewrites: int = 100_000

    def __call__(self, graph: ir.Graph) -> ir.Graph:
        return self.apply(graph)[0]

    def apply(self, graph: ir.Graph) -> tuple[ir.Graph, list[Rewrite]]:
        """Returns the rewritten graph and the rewrites, in order."""
        done: list[Rewrite] = []
        while len(done) < self.max_rewrites:
            producers = graph.producers()
            uses: dict[str, int] = {}
            for n in graph.nodes:
                for x in n.inputs:
                    if x is not None:
                        uses[x] = uses.get(x, 0) + 1
            hit = None
            for index in range(len(graph.nodes)):
                for pat, fn in self.rules:
                    m = Match(graph, index)
                    if _match(pat, graph, index, m, producers, uses):
                        rw = fn(m)
                        if rw is not None:
                            hit = (index, rw)
                            break
                if hit:
                    break
            if hit is None:
                return graph, done
            index, rw = hit
            graph = _apply(graph, index, rw)
            done.append(rw)
        raise ConversionError(f"pass {self.name}: more than {self.max_rewrites} rewrites; "
                              "the rules do not converge")


def _const_name(graph: ir.Graph, base: str, taken: list[str]) -> str:
    """A name free in `graph` and among `taken` (the rewrite's other new tensors)."""
    name = ir.unique_name(base, graph.tensors, taken)
    taken.append(name)
    return name


def _f64(t: ir.Tensor | None) -> np.ndarray | None:
    return None if t is None else np.asarray(t.data, dtype=np.float64)
