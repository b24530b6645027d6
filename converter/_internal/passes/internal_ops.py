"""lower_internal_ops: the converter's own ops into file ops, before writing.

    Before: y = BATCH_NORM(x, ...)   |  y = IDENTITY(x)
    After:  y = ADD(MUL(x, s), h)    |  y = RESHAPE(x)  (a copy: x and y stay two tensors)
"""

from __future__ import annotations

from dataclasses import replace

from tether.converter._internal.ops import InternalOp, OpType

from .rewrite import Match, Rewrite, RewritePass, op
from .batch_norm import lower_batch_norm

__all__ = ["lower_internal_ops"]


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
