"""fuse_activations: a standalone activation op into the op that makes its input.

    Before: t = CONV_2D(x, W, b); y = RELU6(t)
    After:  y = CONV_2D(x, W, b) with fused activation RELU6
    When:   the producer is a conv, depthwise, dense, ADD, MUL or pool node with no fused
            activation of its own, and the activation is t's only reader (t is no graph
            output); on int8 tensors only RELU and RELU6, and only when t is quantized like
            y (int8 kernels then apply them as a clamp in the quantized domain).
"""

from __future__ import annotations

from dataclasses import replace

from tether.converter._internal.ops import DType, OpType

from .rewrite import Match, Rewrite, RewritePass, op
from tether.converter._internal.ops import ACTIVATION_OF_OP

__all__ = ["fuse_activations"]


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
