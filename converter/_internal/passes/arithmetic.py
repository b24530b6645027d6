"""simplify_arithmetic: SUB and DIV by a constant as ADD and MUL.

    Before: y = SUB(x, c)      |  y = DIV(x, c)
    After:  y = ADD(x, -c)     |  y = MUL(x, 1 / c)
    When:   c is a float constant (every element nonzero for DIV), so that fold_affine and
            the hard-swish patterns see one form.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from tether.converter._internal import ir
from tether.converter._internal.ops import DType, OpType

from .rewrite import Match, Rewrite, RewritePass, _const_name, const, op

__all__ = ["simplify_arithmetic"]


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
