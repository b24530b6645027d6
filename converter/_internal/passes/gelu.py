"""recognize_gelu: the exporters' spelled-out forms of GELU, as patterns.

    Before: y = (x * (erf(x / √2) + 1)) * 0.5     (PyTorch's and older exporters' Erf form;
            y = x * ((erf(x / √2) + 1) * 0.5)      x / √2 also as x * (1/√2))
            y = (x * 0.5) * (erf(x / √2) + 1)
            y = (x * (tanh(√(2/π) * (x + 0.044715 * x³)) + 1)) * 0.5   (tanh form, and the
            same three groupings; x³ as x * (x * x) in either order)
    After:  y = GELU(x) with approximate 0 (erf) or 1 (tanh)
    When:   every inner node is read once and has no fused activation, x has y's shape;
            MUL and ADD match their operands in either order, the constants as scalars
            (√2, 1/√2, √(2/π) and 0.044715 to 1e-5 relative, 0.5 and 1 to 1e-6). The
            root's fused activation stays on GELU.

An ERF (ONNX Erf) left outside these patterns is refused by lower_internal_ops.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from tether.converter._internal import ir
from tether.converter._internal.ops import InternalOp, OpType

from .rewrite import Match, Pat, Rewrite, RewritePass, op, same, scalar, tensor

__all__ = ["recognize_gelu"]

_ONE = scalar(1.0, tolerance=1e-6)
_HALF = scalar(0.5, tolerance=1e-6)


def _erf_gate(x: Pat) -> Pat:
    """erf(x / √2) + 1, x / √2 as DIV or MUL."""
    def erf_of(arg: Pat) -> Pat:
        return op(OpType.ADD, capture="add", plain=True, single_use=True, commutative=True,
                  inputs=(op(InternalOp.ERF, capture="f", plain=True, single_use=True,
                             inputs=(arg,)), _ONE))
    return erf_of(op(OpType.DIV, OpType.MUL, capture="s", plain=True, single_use=True,
                     inputs=(x, None)))


def _tanh_gate(x: Pat) -> Pat:
    """tanh(√(2/π) * (x + 0.044715 * x³)) + 1."""
    cube = op(OpType.MUL, capture="c3", plain=True, single_use=True, commutative=True,
              inputs=(same("x"), op(OpType.MUL, capture="c2", plain=True, single_use=True,
                                    inputs=(same("x"), same("x")))))
    inner = op(OpType.ADD, capture="inner", plain=True, single_use=True, commutative=True,
               inputs=(same("x"), op(OpType.MUL, capture="k3", plain=True, single_use=True,
                                     commutative=True,
                                     inputs=(cube, scalar(0.044715, tolerance=1e-6)))))
    scaled = op(OpType.MUL, capture="s", plain=True, single_use=True, commutative=True,
                inputs=(inner, scalar(math.sqrt(2 / math.pi), tolerance=1e-5)))
    return op(OpType.ADD, capture="add", plain=True, single_use=True, commutative=True,
              inputs=(op(OpType.TANH, capture="f", plain=True, single_use=True,
                         inputs=(scaled,)), _ONE))


def _groupings(gate: Callable[[Pat], Pat]) -> tuple[Pat, ...]:
    """(x * gate) * 0.5, x * (gate * 0.5), (x * 0.5) * gate; x is captured first."""
    return (
        op(OpType.MUL, capture="root", commutative=True, inputs=(
            op(OpType.MUL, capture="m", plain=True, single_use=True, commutative=True,
               inputs=(tensor("x"), gate(same("x")))), _HALF)),
        op(OpType.MUL, capture="root", commutative=True, inputs=(
            tensor("x"), op(OpType.MUL, capture="m", plain=True, single_use=True,
                            commutative=True, inputs=(gate(same("x")), _HALF)))),
        op(OpType.MUL, capture="root", commutative=True, inputs=(
            op(OpType.MUL, capture="m", plain=True, single_use=True, commutative=True,
               inputs=(tensor("x"), _HALF)), gate(same("x")))),
    )


def _erf_scale_ok(m: Match) -> bool:
    """The ERF's argument is x / √2 or x * (1/√2), the constant a one-element float."""
    s = m.node("s")
    if s.inputs[0] != m.names["x"] or s.inputs[1] is None:
        return False
    t = m.graph.tensors.get(s.inputs[1])
    if t is None or t.data is None or t.data.size != 1:
        return False
    v = float(t.data.reshape(-1)[0])
    want = math.sqrt(2.0) if s.op == OpType.DIV else 1 / math.sqrt(2.0)
    return abs(v - want) <= 1e-5 * want


def _gelu(approximate: int) -> Callable[[Match], Rewrite | None]:
    def rule(m: Match) -> Rewrite | None:
        g = m.graph
        root = m.node("root")
        if g.tensors[m.names["x"]].shape != g.tensors[root.outputs[0]].shape:
            return None
        if approximate == 0 and not _erf_scale_ok(m):
            return None
        keys = ("root", "m", "add", "f", "s") + (("inner", "k3", "c3", "c2") if approximate
                                                  else ())
        new = ir.Node(OpType.GELU, root.name, (m.names["x"],), root.outputs,
                      {"approximate": (approximate,)}, root.activation)
        form = "tanh" if approximate else "erf"
        return Rewrite("recognize_gelu", f"replaced {root.name} and its x*Φ(x) chain "
                       f"({form} form) by GELU", m.indices(*keys), (new,))
    return rule


recognize_gelu = RewritePass("recognize_gelu", (
    # x·½(1 + erf(x/√2)) in its three groupings -> GELU(approximate=0)
    *((p, _gelu(0)) for p in _groupings(_erf_gate)),
    # x·½(1 + tanh(√(2/π)(x + 0.044715x³))) in its three groupings -> GELU(approximate=1)
    *((p, _gelu(1)) for p in _groupings(_tanh_gate)),
))
