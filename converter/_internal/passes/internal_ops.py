"""lower_internal_ops: the converter's own ops into file ops, before writing.

    Before: y = BATCH_NORM(x, ...)   |  y = IDENTITY(x)
    After:  y = ADD(MUL(x, s), h)    |  y = RESHAPE(x)  (a copy: x and y stay two tensors)
"""

from __future__ import annotations

from dataclasses import replace

from tether.converter._internal.ops import InternalOp, OpType
from tether.errors import ConversionError

from .rewrite import Match, Rewrite, RewritePass, op
from .batch_norm import lower_batch_norm

__all__ = ["lower_internal_ops"]


def _identity_to_reshape(m: Match) -> Rewrite | None:
    """IDENTITY that could not be removed  =>  RESHAPE to the same shape (a copy)."""
    i, n = m.nodes["n"]
    new = replace(n, op=OpType.RESHAPE)
    return Rewrite("lower_identity", f"lowered {n.name} (IDENTITY) to RESHAPE", (i,), (new,))


def _refuse_erf(m: Match) -> Rewrite | None:
    """ERF outside a GELU chain: no file op computes it; refuse, naming the node."""
    n = m.node("n")
    raise ConversionError(f"node '{n.name}' (Erf): a standalone Erf is not supported; only "
                          "erf inside GELU's x*0.5*(1 + erf(x/sqrt(2))) is (folded to GELU)")


def _refuse_sqrt(m: Match) -> Rewrite | None:
    """SQRT outside a layer norm chain: no file op computes it; refuse, naming the node."""
    n = m.node("n")
    raise ConversionError(f"node '{n.name}' (Sqrt): a standalone Sqrt is not supported; only "
                          "sqrt inside a layer norm's (x - mean) / sqrt(var + eps) is (folded "
                          "to LAYER_NORM)")


lower_internal_ops = RewritePass("lower_internal_ops", (
    # batch norm => MUL + ADD
    *lower_batch_norm.rules,
    # identity => reshape (copy)
    (op(InternalOp.IDENTITY, capture="n"), _identity_to_reshape),
    # erf left outside a GELU => refused (ConversionError)
    (op(InternalOp.ERF, capture="n"), _refuse_erf),
    # sqrt left outside a layer norm => refused (ConversionError)
    (op(InternalOp.SQRT, capture="n"), _refuse_sqrt),
))
