"""remove_identities: nodes that return their input, and chains of reshapes.

    Before: y = IDENTITY(x) | RESHAPE(x) to x's shape | PAD(x) by zeros | TRANSPOSE(x) by
            the identity permutation | ADD(x, 0) | SUB(x, 0) | MUL(x, 1) | DIV(x, 1) (float constants)
    After:  readers of y read x (or, when y is a graph output, x's producer writes y)
    Before: z = RESHAPE(RESHAPE(x)) with the inner reshape read once
    After:  z = RESHAPE(x)
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from tether.converter._internal import ir
from tether.converter._internal.ops import Activation, DType, InternalOp, OpType

from .rewrite import Match, Rewrite, RewritePass, op

__all__ = ["remove_identities"]


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
