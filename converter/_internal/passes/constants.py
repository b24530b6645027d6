"""fold_constants: a node whose inputs are all float constants becomes a constant.

    Before: y = op(c1, c2, ...)   (every input a float32 constant, y not a graph output)
    After:  y = the constant op(c1, c2, ...), computed in float64 by the op's
            `OpDef.reference` (the definition calibration uses too) and its fused
            activation, stored as float32
    When:   the op's definition allows folding (not convolutions, pools, dense layers,
            softmax, QUANTIZE or DEQUANTIZE).
"""

from __future__ import annotations


import numpy as np
from tether.converter._internal import ir
from tether.converter._internal.ops import DType

from .rewrite import Match, Rewrite, RewritePass, op
from tether.converter._internal.opdefs import OPDEFS, apply_activation

__all__ = ["fold_constants"]


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
