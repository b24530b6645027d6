"""Graph passes: local `(pattern, fn)` rewrite rules and a pass manager.

A pass is a named list of rules. A rule pairs a `Pat` (what the subgraph ending at a node
looks like) with a function that returns a `Rewrite`, or None when the rule does not apply
after all. Passes are pure: they build new graphs and never change the one they are given.
`run_passes` runs a pipeline to a fixed point, validating the graph after every pass and
recording every rewrite for the conversion report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from tether.converter._internal import ir
from tether.converter._internal.opdefs import OPDEFS, apply_activation
from tether.converter._internal.ops import (
    ACTIVATION_OF_OP,
    Activation,
    AnyOp,
    DType,
    InternalOp,
    OpType,
)

from tether.errors import ConversionError

__all__ = [
    "LOWER_PIPELINE",
    "OPTIMIZE_PIPELINE",
    "Match",
    "PassLog",
    "Pat",
    "Rewrite",
    "RewritePass",
    "Rule",
    "const",
    "eliminate_dead_nodes",
    "fold_affine",
    "fold_batch_norm",
    "fold_constants",
    "fold_dequantize_constants",
    "fold_pad",
    "fuse_activations",
    "fuse_qdq",
    "lower_batch_norm",
    "lower_internal_ops",
    "op",
    "recognize_hard_sigmoid",
    "recognize_hard_swish",
    "remove_identities",
    "run_passes",
    "simplify_arithmetic",
    "simplify_transposes",
]

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- patterns


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
    """

    ops: tuple[AnyOp, ...] = ()
    inputs: tuple[Pat | None, ...] = ()
    capture: str | None = None
    const: bool = False
    single_use: bool = False
    plain: bool = False


def op(*ops: AnyOp, capture: str | None = None, inputs: Sequence[Pat | None] = (),
       single_use: bool = False, plain: bool = False) -> Pat:
    """Pattern for a node with one of `ops` (any op when none given)."""
    return Pat(tuple(ops), tuple(inputs), capture, False, single_use, plain)


def const(capture: str | None = None) -> Pat:
    """Pattern for a constant tensor."""
    return Pat(capture=capture, const=True)


@dataclass
class Match:
    """What a pattern matched: captured nodes (with their indices) and constant tensors."""

    graph: ir.Graph
    root: int
    nodes: dict[str, tuple[int, ir.Node]] = field(default_factory=dict)
    tensors: dict[str, ir.Tensor] = field(default_factory=dict)

    def node(self, key: str) -> ir.Node:
        """Returns the node captured as `key`."""
        return self.nodes[key][1]


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


def _match(pat: Pat, graph: ir.Graph, index: int, m: Match, producers: Mapping[str, int],
           uses: Mapping[str, int]) -> bool:
    node = graph.nodes[index]
    if pat.ops and node.op not in pat.ops:
        return False
    if pat.plain and node.activation != Activation.NONE:
        return False
    if pat.single_use and not _single_use(graph, node, uses):
        return False
    if len(pat.inputs) > len(node.inputs):
        return False
    for sub, name in zip(pat.inputs, node.inputs):
        if sub is None:
            continue
        if name is None:
            return False
        if sub.const:
            t = graph.tensors[name]
            if not t.is_constant:
                return False
            if sub.capture:
                m.tensors[sub.capture] = t
            continue
        if name not in producers:
            return False
        if not _match(sub, graph, producers[name], m, producers, uses):
            return False
    if pat.capture:
        m.nodes[pat.capture] = (index, node)
    return True


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


# ------------------------------------------------------------------------------ helpers


def _const_name(graph: ir.Graph, base: str, taken: list[str]) -> str:
    """A name free in `graph` and among `taken` (the rewrite's other new tensors)."""
    name = ir.unique_name(base, graph.tensors, taken)
    taken.append(name)
    return name


def _f64(t: ir.Tensor | None) -> np.ndarray | None:
    return None if t is None else np.asarray(t.data, dtype=np.float64)


# ----------------------------------------------------------------------- fold_batch_norm

_FOLD_TARGETS = (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D, OpType.FULLY_CONNECTED)


def _bn_scale_shift(m: Match) -> tuple[np.ndarray, np.ndarray]:
    bn = m.node("bn")
    (eps,) = bn.attrs.get("epsilon", (1e-3,))
    gamma, beta, mean, var = (_f64(m.tensors[k]) for k in ("gamma", "beta", "mean", "var"))
    assert gamma is not None and beta is not None and mean is not None and var is not None
    scale = gamma / np.sqrt(var + float(eps))
    return scale, beta - mean * scale


def _fold_bn_into_producer(m: Match) -> Rewrite | None:
    """conv/depthwise/FC (plain, single use) -> BN  =>  conv' with scaled weights and bias."""
    g = m.graph
    pi, prod = m.nodes["prod"]
    bi, bn = m.nodes["bn"]
    w_t = g.tensors[prod.inputs[1]]  # type: ignore[index]
    if not w_t.is_constant or w_t.dtype != DType.FLOAT32:
        return None
    b_name = prod.inputs[2] if len(prod.inputs) > 2 else None
    b_t = g.tensors[b_name] if b_name is not None else None
    if b_t is not None and not b_t.is_constant:
        return None
    scale, shift = _bn_scale_shift(m)
    w = _f64(w_t)
    assert w is not None
    if prod.op == OpType.DEPTHWISE_CONV_2D:
        w = w * scale  # last axis is the output channel
    else:
        w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))  # first axis is the output channel
    b = _f64(b_t) if b_t is not None else np.zeros_like(scale)
    b = b * scale + shift
    taken: list[str] = []
    w_new = ir.Tensor(_const_name(g, f"{prod.name}/kernel_folded", taken), w_t.shape,
                      DType.FLOAT32, w.astype(np.float32))
    b_new = ir.Tensor(_const_name(g, f"{prod.name}/bias_folded", taken), (len(scale),),
                      DType.FLOAT32, b.astype(np.float32))
    new = replace(prod, inputs=(prod.inputs[0], w_new.name, b_new.name), outputs=bn.outputs)
    return Rewrite("fold_batch_norm", f"folded {bn.name} into {prod.name}", (pi, bi), (new,),
                   (w_new, b_new))


_BN_PARAMS = (const("gamma"), const("beta"), const("mean"), const("var"))

fold_batch_norm = RewritePass("fold_batch_norm", (
    # conv|depthwise|fc -> batch norm  =>  conv' (weights and bias rescaled in float64)
    (op(InternalOp.BATCH_NORM, capture="bn", inputs=(
        op(*_FOLD_TARGETS, capture="prod", single_use=True, plain=True), *_BN_PARAMS)),
     _fold_bn_into_producer),
))


def _channel_vector(c: ir.Tensor, channels: int, out_rank: int) -> np.ndarray | None:
    """The per-output-channel values of constant `c` if it broadcasts along the last axis
    only (shape [..1.., C] or [..1.., 1]) without raising the rank; else None."""
    if c.dtype != DType.FLOAT32 or len(c.shape) > out_rank:
        return None
    if any(d != 1 for d in c.shape[:-1]) or (c.shape and c.shape[-1] not in (1, channels)):
        return None
    return np.broadcast_to(np.asarray(c.data, np.float64).reshape(-1), (channels,))


def _fold_affine_into_producer(m: Match) -> Rewrite | None:
    """conv/depthwise/FC (plain, single use) -> MUL|ADD|SUB by a per-channel constant
    =>  conv with scaled weights or shifted bias (the exporter's unfolded batch norm)."""
    g = m.graph
    pi, prod = m.nodes["prod"]
    ai, aff = m.nodes["aff"]
    w_t = g.tensors[prod.inputs[1]]  # type: ignore[index]
    b_name = prod.inputs[2] if len(prod.inputs) > 2 else None
    b_t = g.tensors[b_name] if b_name is not None else None
    if not w_t.is_constant or w_t.dtype != DType.FLOAT32 or (
            b_t is not None and not b_t.is_constant):
        return None
    y = g.tensors[aff.outputs[0]]
    channels = g.tensors[prod.outputs[0]].shape[-1]
    if y.shape != g.tensors[prod.outputs[0]].shape:
        return None
    vec = _channel_vector(m.tensors["c"], channels, len(y.shape))
    if vec is None:
        return None
    w = _f64(w_t)
    assert w is not None
    b = _f64(b_t) if b_t is not None else np.zeros(channels)
    if aff.op == OpType.MUL:
        if prod.op == OpType.DEPTHWISE_CONV_2D:
            w = w * vec
        else:
            w = w * vec.reshape((-1,) + (1,) * (w.ndim - 1))
        b = b * vec
    else:
        b = b + (vec if aff.op == OpType.ADD else -vec)
    taken: list[str] = []
    w_new = ir.Tensor(_const_name(g, f"{prod.name}/kernel_folded", taken), w_t.shape,
                      DType.FLOAT32, w.astype(np.float32))
    b_new = ir.Tensor(_const_name(g, f"{prod.name}/bias_folded", taken), (channels,),
                      DType.FLOAT32, b.astype(np.float32))
    new = replace(prod, inputs=(prod.inputs[0], w_new.name, b_new.name), outputs=aff.outputs,
                  activation=aff.activation)
    return Rewrite("fold_affine", f"folded {aff.name} ({aff.op.name}) into {prod.name}",
                   (pi, ai), (new,), (w_new, b_new))


fold_affine = RewritePass("fold_affine", (
    # conv|dw|fc -> mul|add|sub by a per-channel constant  =>  conv with new weights/bias
    (op(OpType.MUL, OpType.ADD, OpType.SUB, capture="aff", inputs=(
        op(*_FOLD_TARGETS, capture="prod", single_use=True, plain=True), const("c"))),
     _fold_affine_into_producer),
))


def _lower_bn(m: Match) -> Rewrite | None:
    """batch norm (not foldable) => MUL by a per-channel scale, then ADD a per-channel shift."""
    g = m.graph
    bi, bn = m.nodes["bn"]
    scale, shift = _bn_scale_shift(m)
    taken: list[str] = []
    s_t = ir.Tensor(_const_name(g, f"{bn.name}/scale", taken), scale.shape, DType.FLOAT32,
                    scale.astype(np.float32))
    h_t = ir.Tensor(_const_name(g, f"{bn.name}/shift", taken), shift.shape, DType.FLOAT32,
                    shift.astype(np.float32))
    mid = ir.Tensor(_const_name(g, f"{bn.name}/scaled", taken), g.tensors[bn.outputs[0]].shape)
    mul = ir.Node(OpType.MUL, bn.name, (bn.inputs[0], s_t.name), (mid.name,))
    add = ir.Node(OpType.ADD, bn.name, (mid.name, h_t.name), bn.outputs, {}, bn.activation)
    return Rewrite("lower_batch_norm", f"lowered {bn.name} to MUL+ADD", (bi,), (mul, add),
                   (s_t, h_t, mid))


lower_batch_norm = RewritePass("lower_batch_norm", (
    # batch norm => x * scale + shift (per channel constants)
    (op(InternalOp.BATCH_NORM, capture="bn", inputs=(None, *_BN_PARAMS)), _lower_bn),
))

# ---------------------------------------------------------------------- fuse_activations

_FUSE_TARGETS = (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D, OpType.FULLY_CONNECTED, OpType.ADD,
                 OpType.MUL, OpType.MAX_POOL_2D, OpType.AVERAGE_POOL_2D)


# int8 ops clamp these in the quantized domain; the others stay separate int8 ops
_INT8_FUSABLE = (OpType.RELU, OpType.RELU6)


def _fuse_activation(m: Match) -> Rewrite | None:
    """producer (plain, single use) -> activation op  =>  producer with fused activation."""
    pi, prod = m.nodes["prod"]
    ai, act = m.nodes["act"]
    mid, out = m.graph.tensors[prod.outputs[0]], m.graph.tensors[act.outputs[0]]
    if mid.dtype != DType.FLOAT32 and (mid.quant != out.quant or act.op not in _INT8_FUSABLE):
        return None  # int8: the activation op requantizes q_mid -> q_out (FORMAT.md); keep it
    new = replace(prod, outputs=act.outputs, activation=ACTIVATION_OF_OP[act.op])  # type: ignore[index]
    return Rewrite("fuse_activation", f"fused {act.name} ({act.op.name}) into {prod.name}",
                   (pi, ai), (new,))


fuse_activations = RewritePass("fuse_activations", (
    # conv|dw|fc|add|mul|pool -> relu|relu6|logistic|tanh|hard_swish  =>  fused activation
    (op(*ACTIVATION_OF_OP, capture="act", plain=True,
        inputs=(op(*_FUSE_TARGETS, capture="prod", single_use=True, plain=True),)),
     _fuse_activation),
))

# ------------------------------------------------------------------------------ fold_pad


def _fold_pad(m: Match) -> Rewrite | None:
    """PAD (zeros, H/W only, single use) -> conv|depthwise  =>  conv with larger pads."""
    g = m.graph
    pi, pad = m.nodes["pad"]
    ci, conv = m.nodes["conv"]
    (value,) = ir.attr(pad, "value")
    p = tuple(int(v) for v in ir.attr(pad, "paddings"))
    x = g.tensors[pad.inputs[0]]  # type: ignore[index]
    if value != 0.0 or len(x.shape) != 4 or p[0] or p[1] or p[6] or p[7]:
        return None
    pt, pb, pl, pr = p[2], p[3], p[4], p[5]
    old = tuple(int(v) for v in ir.attr(conv, "pads"))
    attrs = dict(conv.attrs)
    attrs["pads"] = (old[0] + pt, old[1] + pl, old[2] + pb, old[3] + pr)
    new = replace(conv, inputs=(pad.inputs[0],) + conv.inputs[1:], attrs=attrs)
    return Rewrite("fold_pad", f"folded {pad.name} into {conv.name}", (pi, ci), (new,))


fold_pad = RewritePass("fold_pad", (
    # zero PAD of H and W -> conv|depthwise  =>  conv with pads (not max pool: it ignores pads)
    (op(OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D, capture="conv",
        inputs=(op(OpType.PAD, capture="pad", single_use=True, plain=True),)), _fold_pad),
))

# --------------------------------------------------------------------- remove_identities


def _is_identity(g: ir.Graph, n: ir.Node) -> bool:
    if n.activation != Activation.NONE or len(n.outputs) != 1:
        return False
    x = g.tensors[n.inputs[0]] if n.inputs and n.inputs[0] is not None else None
    y = g.tensors[n.outputs[0]]
    if x is None or x.shape != y.shape or x.dtype != y.dtype or x.quant != y.quant:
        return False
    if n.op in (InternalOp.IDENTITY, OpType.RESHAPE):
        return True
    if n.op == OpType.PAD:
        return not any(ir.attr(n, "paddings"))
    if n.op == OpType.TRANSPOSE:
        return tuple(ir.attr(n, "perm")) == tuple(range(len(x.shape)))
    if (n.op in (OpType.ADD, OpType.MUL, OpType.SUB, OpType.DIV) and len(n.inputs) == 2
            and n.inputs[1] is not None):
        c = g.tensors[n.inputs[1]]
        if c.dtype != DType.FLOAT32 or x.dtype != DType.FLOAT32:
            return False  # an int8 constant's integers are not its real values
        neutral = 0.0 if n.op in (OpType.ADD, OpType.SUB) else 1.0
        return c.is_constant and bool(np.all(c.data == neutral))
    return False


def _drop_identity(m: Match) -> Rewrite | None:
    """y = identity(x)  =>  readers of y read x (or x's producer writes y directly)."""
    g = m.graph
    i, n = m.nodes["n"]
    if not _is_identity(g, n):
        return None
    x, y = n.inputs[0], n.outputs[0]
    assert x is not None
    note = f"removed {n.name} ({n.op.name}, identity)"
    if y not in g.outputs:
        return Rewrite("remove_identity", note, (i,), (), (), {y: x})
    producers = g.producers()
    if x in producers and x not in g.outputs and g.use_count(x) == 1:
        pi = producers[x]
        prod = g.nodes[pi]
        new = replace(prod, outputs=tuple(y if o == x else o for o in prod.outputs))
        return Rewrite("remove_identity", note, (pi, i), (new,))
    return None


def _merge_reshapes(m: Match) -> Rewrite | None:
    """reshape(reshape(x)) with the inner one single use  =>  reshape(x)."""
    oi, outer = m.nodes["outer"]
    ii, inner = m.nodes["inner"]
    new = replace(outer, inputs=inner.inputs)
    return Rewrite("merge_reshapes", f"merged {inner.name} into {outer.name}", (ii, oi), (new,))


remove_identities = RewritePass("remove_identities", (
    # identity | same-shape reshape | zero pad | x+0 | x*1  =>  removed
    (op(capture="n"), _drop_identity),
    # reshape -> reshape  =>  one reshape
    (op(OpType.RESHAPE, capture="outer", plain=True,
        inputs=(op(OpType.RESHAPE, InternalOp.IDENTITY, capture="inner", single_use=True,
                   plain=True),)), _merge_reshapes),
))

# ------------------------------------------------------------------ transposes_to_reshapes


def _transpose_to_reshape(m: Match) -> Rewrite | None:
    """TRANSPOSE that moves only size-1 dims (the data order is unchanged)  =>  RESHAPE."""
    g = m.graph
    i, n = m.nodes["n"]
    x = g.tensors[n.inputs[0]]  # type: ignore[index]
    perm = [int(v) for v in ir.attr(n, "perm")]
    moved = [p for p in perm if x.shape[p] != 1]
    if moved != sorted(moved):
        return None
    new = ir.Node(OpType.RESHAPE, n.name, n.inputs[:1], n.outputs, {}, n.activation)
    return Rewrite("transpose_to_reshape",
                   f"replaced {n.name} (TRANSPOSE {perm} of {list(x.shape)}) by RESHAPE",
                   (i,), (new,))


def _merge_transposes(m: Match) -> Rewrite | None:
    """transpose(transpose(x)) with the inner one single use  =>  one transpose."""
    oi, outer = m.nodes["outer"]
    ii, inner = m.nodes["inner"]
    p = [int(v) for v in ir.attr(inner, "perm")]
    q = [int(v) for v in ir.attr(outer, "perm")]
    new = replace(outer, inputs=inner.inputs, attrs={"perm": tuple(p[k] for k in q)})
    return Rewrite("merge_transposes", f"merged {inner.name} into {outer.name}", (ii, oi),
                   (new,))


simplify_transposes = RewritePass("simplify_transposes", (
    # transpose moving only size-1 dims  =>  reshape
    (op(OpType.TRANSPOSE, capture="n", plain=True), _transpose_to_reshape),
    # transpose -> transpose  =>  one transpose
    (op(OpType.TRANSPOSE, capture="outer", plain=True,
        inputs=(op(OpType.TRANSPOSE, capture="inner", single_use=True, plain=True),)),
     _merge_transposes),
))

# --------------------------------------------------------------------- simplify_arithmetic


def _sub_div_by_constant(m: Match) -> Rewrite | None:
    """x - c  =>  x + (-c);  x / c  =>  x * (1/c)  (c a float constant without zeros), so
    they can fold into a producer and need no SUB/DIV kernel."""
    g = m.graph
    i, n = m.nodes["n"]
    c = m.tensors["c"]
    if c.dtype != DType.FLOAT32 or g.tensors[n.inputs[0]].dtype != DType.FLOAT32:  # type: ignore[index]
        return None
    v = np.asarray(c.data, np.float64)
    if n.op == OpType.DIV:
        if not np.all(np.isfinite(v)) or np.any(v == 0):
            return None
        v, new_op, kind = 1.0 / v, OpType.MUL, "div_to_mul"
    else:
        v, new_op, kind = -v, OpType.ADD, "sub_to_add"
    taken: list[str] = []
    t = ir.Tensor(_const_name(g, f"{c.name}/{'reciprocal' if new_op == OpType.MUL else 'neg'}",
                              taken), c.shape, DType.FLOAT32, v.astype(np.float32))
    new = replace(n, op=new_op, inputs=(n.inputs[0], t.name))
    return Rewrite(kind, f"rewrote {n.name} ({n.op.name} by a constant) as {new_op.name}",
                   (i,), (new,), (t,))


simplify_arithmetic = RewritePass("simplify_arithmetic", (
    # x - const => x + (-const); x / const => x * (1/const)
    (op(OpType.SUB, OpType.DIV, capture="n", inputs=(None, const("c"))), _sub_div_by_constant),
))

# --------------------------------------------------------------------- recognize_hard_swish


def _scalar(g: ir.Graph, name: str | None) -> float | None:
    t = g.tensors.get(name) if name is not None else None
    if t is None or not t.is_constant or t.dtype != DType.FLOAT32 or t.size != 1:
        return None
    return float(np.asarray(t.data).reshape(()))


def _relu6_x_plus_3(g: ir.Graph, producers: Mapping[str, int], name: str | None,
                    x: str | None) -> int | None:
    """Index of ADD(x, 3) with fused RELU6 (single use) producing `name`, x given or any."""
    if name is None or name not in producers or g.use_count(name) != 1:
        return None
    i = producers[name]
    n = g.nodes[i]
    if n.op != OpType.ADD or n.activation != Activation.RELU6:
        return None
    for a, b in ((0, 1), (1, 0)):
        if _scalar(g, n.inputs[b]) == 3.0 and (x is None or n.inputs[a] == x):
            return i
    return None


def _hard_swish(m: Match) -> Rewrite | None:
    """x * (relu6(x + 3) * (1/6))  or  (x * relu6(x + 3)) * (1/6)  or  x * relu6(x + 3) / 6
    =>  HARD_SWISH(x) (the form Keras' MobileNetV3 and its exports write)."""
    g = m.graph
    ri, root = m.nodes["root"]
    producers = g.producers()
    sixth = 1.0 / 6.0

    def inner_of(name: str | None, need_x: str | None) -> tuple[list[int], str] | None:
        # name = relu6(x + 3) * (1/6)   (MUL, single use)  -> ([mul, add], x)
        if name is None or name not in producers or g.use_count(name) != 1:
            return None
        k = producers[name]
        n = g.nodes[k]
        if n.op != OpType.MUL or n.activation != Activation.NONE:
            return None
        for a, b in ((0, 1), (1, 0)):
            c = _scalar(g, n.inputs[b])
            if c is not None and abs(c - sixth) < 1e-6:
                j = _relu6_x_plus_3(g, producers, n.inputs[a], need_x)
                if j is not None:
                    return [k, j], g.nodes[j].inputs[0] if _scalar(
                        g, g.nodes[j].inputs[1]) == 3.0 else g.nodes[j].inputs[1]  # type: ignore[return-value]
        return None

    if root.activation != Activation.NONE:
        return None
    removed: list[int] | None = None
    x: str | None = None
    for a, b in ((0, 1), (1, 0)):
        found = inner_of(root.inputs[b], root.inputs[a])
        if found is not None:
            removed, x = found[0], root.inputs[a]
            break
        # (x * relu6(x+3)) * 1/6
        c = _scalar(g, root.inputs[b])
        name = root.inputs[a]
        if c is not None and abs(c - sixth) < 1e-6 and name in producers and \
                g.use_count(name) == 1:  # type: ignore[arg-type]
            k = producers[name]  # type: ignore[index]
            n = g.nodes[k]
            if n.op == OpType.MUL and n.activation == Activation.NONE:
                for p, q in ((0, 1), (1, 0)):
                    j = _relu6_x_plus_3(g, producers, n.inputs[q], n.inputs[p])
                    if j is not None:
                        removed, x = [k, j], n.inputs[p]
                        break
            if removed:
                break
    if not removed or x is None:
        return None
    if g.tensors[x].shape != g.tensors[root.outputs[0]].shape:
        return None
    new = ir.Node(OpType.HARD_SWISH, root.name, (x,), root.outputs)
    return Rewrite("recognize_hard_swish", f"replaced {root.name} and its x*relu6(x+3)/6 "
                   "chain by HARD_SWISH", (ri, *removed), (new,))


def _hard_swish_of_hard_sigmoid(m: Match) -> Rewrite | None:
    """x * hard_sigmoid(x) with alpha 1/6, offset 1/2 (single use)  =>  HARD_SWISH(x)."""
    g = m.graph
    ri, root = m.nodes["root"]
    producers = g.producers()
    if root.activation != Activation.NONE:
        return None
    for a, b in ((0, 1), (1, 0)):
        name = root.inputs[b]
        if name is None or name not in producers or g.use_count(name) != 1:
            continue
        k = producers[name]
        n = g.nodes[k]
        if (n.op == OpType.HARD_SIGMOID and n.activation == Activation.NONE
                and n.inputs[0] == root.inputs[a]
                and abs(float(ir.attr(n, "alpha")[0]) - 1 / 6) < 1e-6
                and abs(float(ir.attr(n, "offset")[0]) - 0.5) < 1e-6
                and g.tensors[n.inputs[0]].shape == g.tensors[root.outputs[0]].shape):  # type: ignore[index]
            new = ir.Node(OpType.HARD_SWISH, root.name, (n.inputs[0],), root.outputs)
            return Rewrite("recognize_hard_swish", f"replaced {root.name} (x * HARD_SIGMOID(x))"
                           " by HARD_SWISH", (ri, k), (new,))
    return None


recognize_hard_swish = RewritePass("recognize_hard_swish", (
    # x * relu6(x + 3) * (1/6), in the orders exporters write  =>  HARD_SWISH(x)
    (op(OpType.MUL, capture="root"), _hard_swish),
    # x * hard_sigmoid(x) (alpha 1/6, offset 1/2)  =>  HARD_SWISH(x)
    (op(OpType.MUL, capture="root"), _hard_swish_of_hard_sigmoid),
))


def _hard_sigmoid(m: Match) -> Rewrite | None:
    """relu6(x + 3) * (1/6)  (ADD with fused RELU6, single use)  =>  HARD_SIGMOID(x) with
    alpha 1/6, offset 1/2 (MobileNetV3's squeeze-and-excite gate)."""
    g = m.graph
    ri, root = m.nodes["root"]
    if root.activation != Activation.NONE:
        return None
    producers = g.producers()
    for a, b in ((0, 1), (1, 0)):
        c = _scalar(g, root.inputs[b])
        if c is None or abs(c - 1 / 6) >= 1e-6:
            continue
        j = _relu6_x_plus_3(g, producers, root.inputs[a], None)
        if j is None:
            continue
        add = g.nodes[j]
        x = add.inputs[0] if _scalar(g, add.inputs[1]) == 3.0 else add.inputs[1]
        if x is None or g.tensors[x].shape != g.tensors[root.outputs[0]].shape:
            continue
        new = ir.Node(OpType.HARD_SIGMOID, root.name, (x,), root.outputs,
                      {"alpha": (1 / 6,), "offset": (0.5,)})
        return Rewrite("recognize_hard_sigmoid", f"replaced {add.name} and {root.name} "
                       "(relu6(x+3)/6) by HARD_SIGMOID", (ri, j), (new,))
    return None


recognize_hard_sigmoid = RewritePass("recognize_hard_sigmoid", (
    # relu6(x + 3) * (1/6)  =>  HARD_SIGMOID(x)
    (op(OpType.MUL, capture="root"), _hard_sigmoid),
))

# ----------------------------------------------------------------------------- fuse_qdq

_QDQ_OPS = (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D, OpType.FULLY_CONNECTED, OpType.ADD,
            OpType.SUB, OpType.MUL, OpType.MAX_POOL_2D, OpType.AVERAGE_POOL_2D, OpType.MEAN,
            OpType.RESHAPE, OpType.CONCATENATION, OpType.PAD, OpType.TRANSPOSE, OpType.SOFTMAX,
            OpType.LOGISTIC, OpType.TANH)
_QDQ_SAME = (OpType.MAX_POOL_2D, OpType.RESHAPE, OpType.PAD, OpType.TRANSPOSE)
_QDQ_ACTS = (Activation.NONE, Activation.RELU, Activation.RELU6, Activation.RELU_N1_TO_1)


def _fuse_qdq(m: Match) -> Rewrite | None:
    """DEQUANTIZE(s) -> float op -> QUANTIZE  =>  the op on int8 tensors (the quantized
    model's own integers, scales and zero points; a float bias is quantized with
    s_x * s_w[c])."""
    g = m.graph
    qi, q = m.nodes["q"]
    oi, node = m.nodes["op"]
    producers = g.producers()
    y_q = g.tensors[q.outputs[0]]
    if node.activation not in _QDQ_ACTS:
        return None
    ins: list[str | None] = []
    extra: list[ir.Tensor] = []
    weighted = node.op in _FOLD_TARGETS
    for slot, name in enumerate(node.inputs):
        if name is None:
            ins.append(None)
            continue
        t = g.tensors[name]
        pi = producers.get(name)
        dq = g.nodes[pi] if pi is not None else None
        if dq is not None and dq.op == OpType.DEQUANTIZE:
            src = g.tensors[dq.inputs[0]]  # type: ignore[index]
            if weighted and slot == 2 and src.dtype != DType.INT32:
                return None
            ins.append(src.name)
            continue
        if weighted and slot == 2 and t.is_constant and t.dtype == DType.FLOAT32:
            x_t = g.tensors[ins[0]] if ins[0] else None
            w_t = g.tensors[ins[1]] if len(ins) > 1 and ins[1] else None
            if x_t is None or w_t is None or x_t.quant is None or w_t.quant is None:
                return None
            s_w = np.asarray(w_t.quant.scale, np.float64)
            s_w = np.broadcast_to(s_w, (t.shape[0],))
            scale = x_t.quant.scale[0] * s_w
            data = np.round(np.asarray(t.data, np.float64) / scale).astype(np.int32)
            b = ir.Tensor(_const_name(g, f"{name}/int32", []), t.shape, DType.INT32, data,
                          ir.Quantization(tuple(float(v) for v in scale), (0,) * len(scale), 0))
            extra.append(b)
            ins.append(b.name)
            continue
        return None  # a float operand that is not dequantized: leave the op in float
    x0 = g.tensors[ins[0]] if ins and ins[0] else None
    if x0 is None or x0.dtype != DType.INT8:
        return None
    if weighted and (len(ins) < 2 or g.tensors[ins[1]].dtype != DType.INT8):  # type: ignore[index]
        return None
    if node.op in _QDQ_SAME and x0.quant != y_q.quant:
        return None
    new = replace(node, inputs=tuple(ins), outputs=q.outputs)
    return Rewrite("fuse_qdq", f"fused {node.name} ({node.op.name}) with its DEQUANTIZE/"
                   "QUANTIZE into an int8 op", (oi, qi), (new,), tuple(extra))


fuse_qdq = RewritePass("fuse_qdq", (
    # dequantize -> op -> quantize  =>  int8 op
    (op(OpType.QUANTIZE, capture="q", inputs=(
        op(*_QDQ_OPS, capture="op", single_use=True),)), _fuse_qdq),
))


def _fold_dequantize_constant(m: Match) -> Rewrite | None:
    """DEQUANTIZE of an integer constant that no int8 op consumed  =>  float constant."""
    g = m.graph
    i, n = m.nodes["n"]
    c = m.tensors["c"]
    if n.outputs[0] in g.outputs or c.quant is None:
        return None
    q = c.quant
    s = np.asarray(q.scale, np.float64)
    z = np.asarray(q.zero_point, np.float64)
    if q.axis is not None:
        shape = [1] * len(c.shape)
        shape[q.axis] = -1
        s, z = s.reshape(shape), z.reshape(shape)
    else:
        s, z = s.reshape(()), z.reshape(())
    value = (np.asarray(c.data, np.float64) - z) * s
    out = g.tensors[n.outputs[0]]
    folded = ir.Tensor(out.name, out.shape, DType.FLOAT32, value.astype(np.float32))
    return Rewrite("fold_dequantize", f"folded {n.name} (DEQUANTIZE of a constant) into a "
                   "float constant", (i,), (), (folded,))


fold_dequantize_constants = RewritePass("fold_dequantize_constants", (
    # dequantize(const)  =>  const
    (op(OpType.DEQUANTIZE, capture="n", inputs=(const("c"),)), _fold_dequantize_constant),
))

# ------------------------------------------------------------------------ fold_constants

def _fold_value(n: ir.Node, xs: list[np.ndarray], out_shape: ir.Shape) -> np.ndarray | None:
    """The node's float value from constant inputs (its `OpDef.reference`), or None for ops
    constant folding leaves alone (convolutions, pools, FC, softmax, QUANTIZE/DEQUANTIZE)."""
    d = OPDEFS.get(n.op)
    if d is None or not d.fold or d.reference is None:
        return None
    return d.reference(n, xs, out_shape)


def _fold_constant_node(m: Match) -> Rewrite | None:
    """op whose inputs are all constants (and whose output is not a graph output)  =>  constant."""
    g = m.graph
    i, n = m.nodes["n"]
    if not n.inputs or len(n.outputs) != 1 or n.outputs[0] in g.outputs:
        return None
    ins = [g.tensors[x] for x in n.inputs if x is not None]
    if len(ins) != len(n.inputs) or not all(t.is_constant and t.dtype == DType.FLOAT32
                                           for t in ins):
        return None
    out = g.tensors[n.outputs[0]]
    value = _fold_value(n, [np.asarray(t.data, np.float64) for t in ins], out.shape)
    if value is None:
        return None
    value = apply_activation(value, n.activation)
    folded = ir.Tensor(out.name, out.shape, DType.FLOAT32,
                       np.asarray(value, np.float64).reshape(out.shape).astype(np.float32))
    return Rewrite("fold_constant", f"folded {n.name} ({n.op.name}) into a constant", (i,), (),
                   (folded,))


fold_constants = RewritePass("fold_constants", (
    # op(const, const, ...)  =>  const
    (op(capture="n"), _fold_constant_node),
))

# ------------------------------------------------------------------ eliminate_dead_nodes


def _drop_dead(m: Match) -> Rewrite | None:
    """node none of whose outputs is read or a graph output  =>  removed."""
    g = m.graph
    i, n = m.nodes["n"]
    if any(g.use_count(o) for o in n.outputs):
        return None
    return Rewrite("eliminate_dead_node", f"removed dead node {n.name} ({n.op.name})", (i,))


eliminate_dead_nodes = RewritePass("eliminate_dead_nodes", (
    # node with unused outputs  =>  removed
    (op(capture="n"), _drop_dead),
))

# -------------------------------------------------------------------- lower_internal_ops


def _identity_to_reshape(m: Match) -> Rewrite | None:
    """IDENTITY that could not be removed  =>  RESHAPE to the same shape (a copy)."""
    i, n = m.nodes["n"]
    new = replace(n, op=OpType.RESHAPE)
    return Rewrite("lower_identity", f"lowered {n.name} (IDENTITY) to RESHAPE", (i,), (new,))


lower_internal_ops = RewritePass("lower_internal_ops", (
    # batch norm => MUL + ADD
    *lower_batch_norm.rules,
    # identity => reshape (copy)
    (op(InternalOp.IDENTITY, capture="n"), _identity_to_reshape),
))

OPTIMIZE_PIPELINE: tuple[RewritePass, ...] = (
    eliminate_dead_nodes,
    simplify_transposes,
    remove_identities,
    fold_constants,
    simplify_arithmetic,
    fold_pad,
    fold_batch_norm,
    fold_affine,
    fuse_activations,
    recognize_hard_swish,
    recognize_hard_sigmoid,
    fuse_qdq,
    eliminate_dead_nodes,
    fold_dequantize_constants,
    lower_internal_ops,
)
LOWER_PIPELINE: tuple[RewritePass, ...] = (fold_dequantize_constants, lower_internal_ops)

# -------------------------------------------------------------------------- pass manager


@dataclass(frozen=True)
class PassLog:
    """What a pipeline did.

    Attributes:
        actions: one line per rewrite, in order ("folded bn1 into conv1").
        counts: rewrite kind -> number of rewrites, sorted by kind.
        iterations: rounds of the whole pipeline until nothing changed.
    """

    actions: tuple[str, ...]
    counts: Mapping[str, int]
    iterations: int


def run_passes(graph: ir.Graph, passes: Sequence[RewritePass], *,
               max_iterations: int = 20) -> tuple[ir.Graph, PassLog]:
    """Runs `passes` in order, again and again, until a round changes nothing.

    The graph is validated before the first pass and after every pass that changed it.

    Args:
        graph: the input graph (not modified).
        passes: the pipeline.
        max_iterations: rounds before giving up (ConversionError); 20 by default.

    Returns:
        The final graph and a `PassLog`.

    Raises:
        ConversionError: a pass produced an invalid graph, or no fixed point was reached.
    """
    ir.validate(graph, context="before passes")
    actions: list[str] = []
    counts: dict[str, int] = {}
    for iteration in range(1, max_iterations + 1):
        changed = False
        for p in passes:
            graph, rewrites = p.apply(graph)
            if not rewrites:
                continue
            changed = True
            ir.validate(graph, context=f"after pass {p.name}")
            for rw in rewrites:
                actions.append(rw.note)
                counts[rw.kind] = counts.get(rw.kind, 0) + 1
            logger.debug("pass %s: %d rewrites", p.name, len(rewrites))
        if not changed:
            return graph, PassLog(tuple(actions), dict(sorted(counts.items())), iteration)
    raise ConversionError(f"graph '{graph.name}': passes did not reach a fixed point in "
                          f"{max_iterations} rounds")
