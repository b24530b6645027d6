"""batch norms: folded into the conv / depthwise / dense layer before them, else lowered.

fold_batch_norm
    Before: y = BATCH_NORM(conv(x, W, b), gamma, beta, mean, var)
    After:  y = conv(x, W', b')
    When:   the producer is CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED with constant
            weights, no fused activation, and its output is read by the batch norm only.
    Formula (float64): s = gamma / sqrt(var + eps); W' = W * s per output channel (the last
            axis of a depthwise kernel, the first of a conv or dense one); b' = (b - mean) *
            s + beta.

lower_batch_norm
    Before: y = BATCH_NORM(x, gamma, beta, mean, var)   (nothing to fold into)
    After:  y = ADD(MUL(x, s), h)
    Formula: s = gamma / sqrt(var + eps), h = beta - mean * s, both per channel [C].
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from tether.converter._internal import ir
from tether.converter._internal.ops import DType, InternalOp, OpType

from .rewrite import Match, Rewrite, RewritePass, _const_name, _f64, const, op

__all__ = ["fold_batch_norm", "lower_batch_norm"]


_FOLD_TARGETS = (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D, OpType.FULLY_CONNECTED)


def _bn_scale_shift(m: Match) -> tuple[np.ndarray, np.ndarray]:
    bn = m.node("bn")
    (eps,) = bn.attrs.get("epsilon", (1e-3,))
    gamma, beta, mean, var = (_f64(m.tensors[k]) for k in ("gamma", "beta", "mean", "var"))
    assert gamma is not None and beta is not None and mean is not None and var is not None
    scale = gamma / np.sqrt(var + float(eps))
    return scale, beta - mean * scale


def _fold_bn_into_producer(m: Match) -> Rewrite | None:
    """conv/depthwise/FC (plain, single use) -> BN  =>  conv' with scaled weights and bias."""
    g = m.graph
    pi, prod = m.nodes["prod"]
    bi, bn = m.nodes["bn"]
    w_t = g.tensors[prod.inputs[1]]  # type: ignore[index]
    if not w_t.is_constant or w_t.dtype != DType.FLOAT32:
        return None
    b_name = prod.inputs[2] if len(prod.inputs) > 2 else None
    b_t = g.tensors[b_name] if b_name is not None else None
    if b_t is not None and not b_t.is_constant:
        return None
    scale, shift = _bn_scale_shift(m)
    w = _f64(w_t)
    assert w is not None
    if prod.op == OpType.DEPTHWISE_CONV_2D:
        w = w * scale  # last axis is the output channel
    else:
        w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))  # first axis is the output channel
    b = _f64(b_t) if b_t is not None else np.zeros_like(scale)
    b = b * scale + shift
    taken: list[str] = []
    w_new = ir.Tensor(_const_name(g, f"{prod.name}/kernel_folded", taken), w_t.shape,
                      DType.FLOAT32, w.astype(np.float32))
    b_new = ir.Tensor(_const_name(g, f"{prod.name}/bias_folded", taken), (len(scale),),
                      DType.FLOAT32, b.astype(np.float32))
    new = replace(prod, inputs=(prod.inputs[0], w_new.name, b_new.name), outputs=bn.outputs)
    return Rewrite("fold_batch_norm", f"folded {bn.name} into {prod.name}", (pi, bi), (new,),
                   (w_new, b_new))


_BN_PARAMS = (const("gamma"), const("beta"), const("mean"), const("var"))

fold_batch_norm = RewritePass("fold_batch_norm", (
    # conv|depthwise|fc -> batch norm  =>  conv' (weights and bias rescaled in float64)
    (op(InternalOp.BATCH_NORM, capture="bn", inputs=(
        op(*_FOLD_TARGETS, capture="prod", single_use=True, plain=True), *_BN_PARAMS)),
     _fold_bn_into_producer),
))


def _lower_bn(m: Match) -> Rewrite | None:
    """batch norm (not foldable) => MUL by a per-channel scale, then ADD a per-channel shift."""
    g = m.graph
    bi, bn = m.nodes["bn"]
    scale, shift = _bn_scale_shift(m)
    taken: list[str] = []
    s_t = ir.Tensor(_const_name(g, f"{bn.name}/scale", taken), scale.shape, DType.FLOAT32,
                    scale.astype(np.float32))
    h_t = ir.Tensor(_const_name(g, f"{bn.name}/shift", taken), shift.shape, DType.FLOAT32,
                    shift.astype(np.float32))
    mid = ir.Tensor(_const_name(g, f"{bn.name}/scaled", taken), g.tensors[bn.outputs[0]].shape)
    mul = ir.Node(OpType.MUL, bn.name, (bn.inputs[0], s_t.name), (mid.name,))
    add = ir.Node(OpType.ADD, bn.name, (mid.name, h_t.name), bn.outputs, {}, bn.activation)
    return Rewrite("lower_batch_norm", f"lowered {bn.name} to MUL+ADD", (bi,), (mul, add),
                   (s_t, h_t, mid))


lower_batch_norm = RewritePass("lower_batch_norm", (
    # batch norm => x * scale + shift (per channel constants)
    (op(InternalOp.BATCH_NORM, capture="bn", inputs=(None, *_BN_PARAMS)), _lower_bn),
))
