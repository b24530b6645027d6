"""recognize_layer_norm: the decomposed layer norm older exporters emit (ONNX opset < 17,
PyTorch, tf2onnx), as patterns; and a layer norm's trailing constant scale and shift.

    Before: d = x - MEAN(x, axes);  v = MEAN(d * d, axes)      (Pow(d, 2) imports as d * d)
            y = d / SQRT(v + eps)                                  |  y = d * (1 / SQRT(v + eps))
    After:  y = LAYER_NORM(x) with axis = axes[0], epsilon = eps
    When:   both MEANs keep dims and reduce the same trailing axes (axes[0] .. rank - 1), eps
            is a positive scalar constant, y has x's shape. Only the root is replaced; the
            chain's other nodes die (eliminate_dead_nodes) unless something else reads them.

    Before: r = 1 / SQRT(MEAN((x - MEAN(x))^2) + eps);  s = r  |  s = r * gamma
            y = x * s + (MEAN(x) * -1) * s  |  y = x * s + ((MEAN(x) * -1) * s + beta)
            (TensorFlow's form of Keras's LayerNormalization: NEG, SQUARED_DIFFERENCE, RSQRT)
    After:  y = LAYER_NORM(x, gamma, beta) with axis and epsilon as above
    When:   as above, and gamma, beta constants that broadcast over the normalized axes only.

    Before: y = LAYER_NORM(x, g, b) * c   |   y = LAYER_NORM(x, g, b) + c
    After:  y = LAYER_NORM(x, g * c, b * c)   |   y = LAYER_NORM(x, g, b + c)
    When:   the layer norm is read once, has no fused activation, and the constant c
            broadcasts over the normalized axes only (its other dims are 1); absent g, b count
            as 1, 0. The root's fused activation moves to the new node.
    Formula: (x - mean) / sqrt(var + eps) * g * c + b * c, in float64, stored float32.

A SQRT left outside these patterns is refused by lower_internal_ops.
"""

from __future__ import annotations

import numpy as np
from tether.converter._internal import ir
from tether.converter._internal.ops import DType, InternalOp, OpType

from .rewrite import Match, Pat, Rewrite, RewritePass, _const_name, const, op, same, scalar, tensor

__all__ = ["recognize_layer_norm"]


def _inv_std() -> Pat:
    """SQRT(MEAN(d * d) + eps), d captured before."""
    var = op(OpType.MEAN, capture="var", plain=True,
             inputs=(op(OpType.MUL, capture="sq", plain=True, inputs=(same("d"), same("d"))),))
    return op(InternalOp.SQRT, capture="sqrt", plain=True, inputs=(
        op(OpType.ADD, capture="add_eps", plain=True, commutative=True,
           inputs=(var, const("eps"))),))


# d / sqrt(var + eps)
_DIV_FORM = op(OpType.DIV, capture="root", inputs=(tensor("d"), _inv_std()))
# d * (1 / sqrt(var + eps))   (Reciprocal imports as DIV(1, .))
_RECIPROCAL_FORM = op(OpType.MUL, capture="root", commutative=True, inputs=(
    tensor("d"), op(OpType.DIV, capture="recip", plain=True,
                    inputs=(scalar(1.0), _inv_std()))))


def _trailing_axes(node: ir.Node, rank: int) -> int | None:
    """The first axis when `node` (a MEAN keeping dims) reduces axes k .. rank - 1, else None."""
    axes = sorted(int(a) for a in ir.attr(node, "axes"))
    if not int(ir.attr(node, "keepdims")[0]) or not axes or axes != list(range(axes[0], rank)):
        return None
    return axes[0]


def _layer_norm_chain(m: Match) -> Rewrite | None:
    g = m.graph
    producers = g.producers()
    d = m.names["d"]
    if d not in producers:
        return None
    sub = g.nodes[producers[d]]
    if sub.op != OpType.SUB or sub.activation or sub.inputs[1] not in producers:
        return None
    x = sub.inputs[0]
    mean = g.nodes[producers[sub.inputs[1]]]  # type: ignore[index]
    if mean.op != OpType.MEAN or mean.activation or mean.inputs[0] != x or x is None:
        return None
    rank = len(g.tensors[x].shape)
    axis = _trailing_axes(mean, rank)
    if axis is None or _trailing_axes(m.node("var"), rank) != axis:
        return None
    eps_t = m.tensors["eps"]
    root = m.node("root")
    if eps_t.size != 1 or eps_t.dtype != DType.FLOAT32 \
            or g.tensors[root.outputs[0]].shape != g.tensors[x].shape:
        return None
    eps = float(np.asarray(eps_t.data).reshape(()))
    if not (np.isfinite(eps) and eps > 0):
        return None
    new = ir.Node(OpType.LAYER_NORM, root.name, (x,), root.outputs,
                  {"axis": (axis,), "epsilon": (eps,)}, root.activation)
    return Rewrite("recognize_layer_norm", f"replaced {root.name} and its mean/variance chain "
                   f"from {mean.name} by LAYER_NORM (axis {axis}, epsilon {eps:g})",
                   m.indices("root"), (new,))


def _tail_constant(c: ir.Tensor, shape: tuple[int, ...], axis: int) -> np.ndarray | None:
    """c (float32) as an array of shape[axis:] when it broadcasts over those axes only."""
    if not c.is_constant or c.dtype != DType.FLOAT32 or len(c.shape) > len(shape):
        return None
    full = (1,) * (len(shape) - len(c.shape)) + tuple(c.shape)
    if any(v != 1 for v in full[:axis]):
        return None
    try:
        return np.broadcast_to(np.asarray(c.data, np.float64).reshape(full[axis:]), shape[axis:])
    except ValueError:
        return None


def _absorb_affine(m: Match) -> Rewrite | None:
    g = m.graph
    root, ln = m.node("root"), m.node("ln")
    x = ln.inputs[0]
    assert x is not None
    shape = g.tensors[x].shape
    axis = int(ir.attr(ln, "axis")[0])
    c = _tail_constant(m.tensors["c"], shape, axis)
    if c is None or g.tensors[root.outputs[0]].shape != shape:
        return None
    params = [None if len(ln.inputs) <= i or ln.inputs[i] is None
              else g.tensors[ln.inputs[i]] for i in (1, 2)]  # type: ignore[index]
    if any(p is not None and not p.is_constant for p in params):
        return None
    gamma, beta = (None if p is None else np.asarray(p.data, np.float64) for p in params)
    if root.op == OpType.MUL:
        gamma = c if gamma is None else gamma * c
        beta = None if beta is None else beta * c
    else:
        beta = c if beta is None else beta + c
    taken: list[str] = []
    new_t: list[ir.Tensor] = []
    names: list[str | None] = [x]
    for what, v in (("gamma", gamma), ("beta", beta)):
        if v is None:
            names.append(None)
            continue
        t = ir.Tensor(_const_name(g, f"{ln.name}/{what}", taken), tuple(shape[axis:]),
                      DType.FLOAT32, np.ascontiguousarray(v, np.float32))
        new_t.append(t)
        names.append(t.name)
    while names[-1] is None:
        names.pop()
    new = ir.Node(OpType.LAYER_NORM, ln.name, tuple(names), root.outputs, ln.attrs,
                  root.activation)
    what = "scale" if root.op == OpType.MUL else "shift"
    return Rewrite("recognize_layer_norm", f"folded {root.name} (constant {what}) into "
                   f"{ln.name} (LAYER_NORM)", m.indices("root", "ln"), (new,), tuple(new_t))


# x * s + (-mean) * s [+ beta], s = r or r * gamma, r = 1 / sqrt(mean((x - mean)^2) + eps):
# the layer norm TensorFlow writes for Keras's LayerNormalization (NEG imports as * -1,
# SQUARED_DIFFERENCE as (a - b) * (a - b), RSQRT as 1 / SQRT)
_DISTRIBUTED_FORM = op(OpType.ADD, capture="root", commutative=True, inputs=(
    op(OpType.MUL, capture="xs", plain=True, commutative=True,
       inputs=(tensor("x"), tensor("s"))), tensor("t")))


class _Chain:
    """Reads a graph's plain producers by tensor name."""

    def __init__(self, g: ir.Graph) -> None:
        self.g = g
        self.producers = g.producers()

    def node(self, name: str | None, op_type: OpType | InternalOp) -> ir.Node | None:
        i = self.producers.get(name) if name is not None else None
        if i is None:
            return None
        n = self.g.nodes[i]
        return n if n.op == op_type and not n.activation else None

    def scalar(self, name: str | None) -> float | None:
        t = self.g.tensors.get(name) if name is not None else None
        if t is None or not t.is_constant or t.dtype != DType.FLOAT32 or t.size != 1:
            return None
        return float(np.asarray(t.data).reshape(()))

    def pairs(self, n: ir.Node) -> tuple[tuple[str | None, str | None], ...]:
        """A commutative node's two inputs in both orders."""
        return ((n.inputs[0], n.inputs[1]), (n.inputs[1], n.inputs[0]))


def _reciprocal_std(c: _Chain, r: str | None) -> tuple[str, float, ir.Node, str] | None:
    """r = 1 / sqrt(MEAN(d * d) + eps), d = x - MEAN(x): (x, eps, the variance MEAN, the
    mean's tensor)."""
    div = c.node(r, OpType.DIV)
    if div is None or c.scalar(div.inputs[0]) != 1.0:
        return None
    sqrt = c.node(div.inputs[1], InternalOp.SQRT)
    add = c.node(sqrt.inputs[0] if sqrt else None, OpType.ADD)
    for v, e in c.pairs(add) if add is not None else ():
        eps, var = c.scalar(e), c.node(v, OpType.MEAN)
        sq = c.node(var.inputs[0] if var else None, OpType.MUL)
        if eps is None or var is None or sq is None or sq.inputs[0] != sq.inputs[1]:
            continue
        sub = c.node(sq.inputs[0], OpType.SUB)
        mean = c.node(sub.inputs[1] if sub else None, OpType.MEAN)
        if sub is None or mean is None or mean.inputs[0] != sub.inputs[0] \
                or sub.inputs[0] is None or sub.inputs[1] is None:
            continue
        return sub.inputs[0], eps, var, sub.inputs[1]
    return None


def _distributed_chain(m: Match) -> Rewrite | None:
    c = _Chain(m.graph)
    g, root = m.graph, m.node("root")
    for x, s in c.pairs(m.node("xs")):
        gamma: str | None = None
        found = _reciprocal_std(c, s)
        mul = c.node(s, OpType.MUL)
        for r, k in c.pairs(mul) if found is None and mul is not None else ():
            if k is not None and g.tensors[k].is_constant:
                found, gamma = _reciprocal_std(c, r), k
                if found is not None:
                    break
        if found is None or found[0] != x or x is None:
            continue
        _, eps, var, mean = found
        t, beta = m.names["t"], None  # (-mean) * s, or that + beta
        shift = c.node(t, OpType.ADD)
        for a, b in c.pairs(shift) if shift is not None else ():
            if b is not None and g.tensors[b].is_constant:
                t, beta = a, b  # type: ignore[assignment]
                break
        neg_s = c.node(t, OpType.MUL)
        if neg_s is None or not any(
                other == s and (neg := c.node(nm, OpType.MUL)) is not None
                and any(mn == mean and c.scalar(k) == -1.0 for mn, k in c.pairs(neg))
                for nm, other in c.pairs(neg_s)):
            continue
        shape = g.tensors[x].shape
        axis = _trailing_axes(c.g.nodes[c.producers[mean]], len(shape))
        if axis is None or _trailing_axes(var, len(shape)) != axis or not (
                np.isfinite(eps) and eps > 0) or g.tensors[root.outputs[0]].shape != shape:
            return None
        params: list[str | None] = [x]
        new_t: list[ir.Tensor] = []
        taken: list[str] = []
        for what, name in (("gamma", gamma), ("beta", beta)):
            v = None if name is None else _tail_constant(g.tensors[name], shape, axis)
            if name is not None and v is None:
                return None
            if v is not None:
                new_t.append(ir.Tensor(_const_name(g, f"{root.name}/{what}", taken),
                                       tuple(shape[axis:]), DType.FLOAT32,
                                       np.ascontiguousarray(v, np.float32)))
            params.append(new_t[-1].name if v is not None else None)
        while params[-1] is None:
            params.pop()
        new = ir.Node(OpType.LAYER_NORM, root.name, tuple(params), root.outputs,
                      {"axis": (axis,), "epsilon": (eps,)}, root.activation)
        return Rewrite("recognize_layer_norm", f"replaced {root.name} and its distributed "
                       f"mean/variance chain by LAYER_NORM (axis {axis}, epsilon {eps:g})",
                       m.indices("root"), (new,), tuple(new_t))
    return None


def _after_ln(op_type: OpType) -> Pat:
    return op(op_type, capture="root", commutative=True, inputs=(
        op(OpType.LAYER_NORM, capture="ln", single_use=True, plain=True), const("c")))


recognize_layer_norm = RewritePass("recognize_layer_norm", (
    # (x - mean) / sqrt(mean((x - mean)^2) + eps) => LAYER_NORM(x)
    (_DIV_FORM, _layer_norm_chain),
    # (x - mean) * (1 / sqrt(mean((x - mean)^2) + eps)) => LAYER_NORM(x)
    (_RECIPROCAL_FORM, _layer_norm_chain),
    # x * s + (-mean) * s [+ beta], s = r [* gamma] => LAYER_NORM(x, gamma, beta)
    (_DISTRIBUTED_FORM, _distributed_chain),
    # LAYER_NORM(x, g, b) * c => LAYER_NORM(x, g*c, b*c)
    (_after_ln(OpType.MUL), _absorb_affine),
    # LAYER_NORM(x, g, b) + c => LAYER_NORM(x, g, b+c)
    (_after_ln(OpType.ADD), _absorb_affine),
))
