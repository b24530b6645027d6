"""simplify_transposes: transposes that move no data, and pairs of transposes.

    Before: y = TRANSPOSE(x, perm) where perm moves only size-1 dims
    After:  y = RESHAPE(x)             (the element order in memory is unchanged)
    Before: z = TRANSPOSE(TRANSPOSE(x, p), q) with the inner one read once
    After:  z = TRANSPOSE(x, p∘q)      (z[i] = x[p[q[i]]]), dropped later if the identity
"""

from __future__ import annotations

from dataclasses import replace

from tether.converter._internal import ir
from tether.converter._internal.ops import OpType

from .rewrite import Match, Rewrite, RewritePass, op

__all__ = ["simplify_transposes"]


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
