"""fold_affine: a per-channel MUL / ADD / SUB by a constant into the layer before it (an
exporter's unfolded batch norm).

    Before: y = MUL(conv(x, W, b), c)     or ADD / SUB(conv(x, W, b), c)
    After:  y = conv(x, W * c, b * c)     or conv(x, W, b ± c)
    When:   the producer is a conv, depthwise or dense layer with constant weights, no
            fused activation and this one reader; c broadcasts along the output channels
            only (a scalar or a [C] vector, possibly with leading 1s); spatial constants are
            left alone.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from tether.converter._internal import ir
from tether.converter._internal.ops import DType, OpType

from .rewrite import Match, Rewrite, RewritePass, _const_name, _f64, const, op
from .batch_norm import _FOLD_TARGETS

__all__ = ["fold_affine"]


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
