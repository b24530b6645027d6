"""fuse_qdq and fold_dequantize_constants: ONNX's quantize-dequantize form into int8 ops.

fuse_qdq
    Before: DEQUANTIZE(x_q) -> op(..., DEQUANTIZE(W_q), DEQUANTIZE(b_q)) -> QUANTIZE -> y_q
    After:  y_q = op_int8(x_q, W_q, b_q) keeping the source's integers, scales and zero
            points (a float bias is quantized to int32 at s_x * s_w per channel)
    When:   the op has an int8 form and every operand carries the quantization its int8
            kernel needs.

fold_dequantize_constants
    Before: y = DEQUANTIZE(c_q) of a constant that no int8 op took
    After:  y = the float constant s * (c_q - z)
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from tether.converter._internal import ir
from tether.converter._internal.ops import Activation, DType, OpType

from .batch_norm import _FOLD_TARGETS
from .rewrite import Match, Rewrite, RewritePass, _const_name, const, op

__all__ = ["fold_dequantize_constants", "fuse_qdq"]


_QDQ_OPS = (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D, OpType.FULLY_CONNECTED, OpType.ADD,
            OpType.SUB, OpType.MUL, OpType.MAX_POOL_2D, OpType.AVERAGE_POOL_2D, OpType.MEAN,
            OpType.RESHAPE, OpType.CONCATENATION, OpType.PAD, OpType.TRANSPOSE, OpType.SOFTMAX,
            OpType.LOGISTIC, OpType.TANH)
_QDQ_SAME = (OpType.MAX_POOL_2D, OpType.RESHAPE, OpType.PAD, OpType.TRANSPOSE)
_QDQ_ACTS = (Activation.NONE, Activation.RELU, Activation.RELU6, Activation.RELU_N1_TO_1)


def _fuse_qdq(m: Match) -> Rewrite | None:
    """DEQUANTIZE(s) -> float op -> QUANTIZE  =>  the op on int8 tensors (the quantized
    model's own integers, scales and zero points; a float bias is quantized with
    s_x * s_w[c])."""
    g = m.graph
    qi, q = m.nodes["q"]
    oi, node = m.nodes["op"]
    producers = g.producers()
    y_q = g.tensors[q.outputs[0]]
    if node.activation not in _QDQ_ACTS:
        return None
    ins: list[str | None] = []
    extra: list[ir.Tensor] = []
    weighted = node.op in _FOLD_TARGETS
    for slot, name in enumerate(node.inputs):
        if name is None:
            ins.append(None)
            continue
        t = g.tensors[name]
        pi = producers.get(name)
        dq = g.nodes[pi] if pi is not None else None
        if dq is not None and dq.op == OpType.DEQUANTIZE:
            src = g.tensors[dq.inputs[0]]  # type: ignore[index]
            if weighted and slot == 2 and src.dtype != DType.INT32:
                return None
            ins.append(src.name)
            continue
        if weighted and slot == 2 and t.is_constant and t.dtype == DType.FLOAT32:
            x_t = g.tensors[ins[0]] if ins[0] else None
            w_t = g.tensors[ins[1]] if len(ins) > 1 and ins[1] else None
            if x_t is None or w_t is None or x_t.quant is None or w_t.quant is None:
                return None
            s_w = np.asarray(w_t.quant.scale, np.float64)
            s_w = np.broadcast_to(s_w, (t.shape[0],))
            scale = x_t.quant.scale[0] * s_w
            data = np.round(np.asarray(t.data, np.float64) / scale).astype(np.int32)
            b = ir.Tensor(_const_name(g, f"{name}/int32", []), t.shape, DType.INT32, data,
                          ir.Quantization(tuple(float(v) for v in scale), (0,) * len(scale), 0))
            extra.append(b)
            ins.append(b.name)
            continue
        return None  # a float operand that is not dequantized: leave the op in float
    x0 = g.tensors[ins[0]] if ins and ins[0] else None
    if x0 is None or x0.dtype != DType.INT8:
        return None
    if weighted and (len(ins) < 2 or g.tensors[ins[1]].dtype != DType.INT8):  # type: ignore[index]
        return None
    if node.op in _QDQ_SAME and x0.quant != y_q.quant:
        return None
    new = replace(node, inputs=tuple(ins), outputs=q.outputs)
    return Rewrite("fuse_qdq", f"fused {node.name} ({node.op.name}) with its DEQUANTIZE/"
                   "QUANTIZE into an int8 op", (oi, qi), (new,), tuple(extra))


fuse_qdq = RewritePass("fuse_qdq", (
    # dequantize -> op -> quantize  =>  int8 op
    (op(OpType.QUANTIZE, capture="q", inputs=(
        op(*_QDQ_OPS, capture="op", single_use=True),)), _fuse_qdq),
))


def _fold_dequantize_constant(m: Match) -> Rewrite | None:
    """DEQUANTIZE of an integer constant that no int8 op consumed  =>  float constant."""
    g = m.graph
    i, n = m.nodes["n"]
    c = m.tensors["c"]
    if n.outputs[0] in g.outputs or c.quant is None:
        return None
    q = c.quant
    s = np.asarray(q.scale, np.float64)
    z = np.asarray(q.zero_point, np.float64)
    if q.axis is not None:
        shape = [1] * len(c.shape)
        shape[q.axis] = -1
        s, z = s.reshape(shape), z.reshape(shape)
    else:
        s, z = s.reshape(()), z.reshape(())
    value = (np.asarray(c.data, np.float64) - z) * s
    out = g.tensors[n.outputs[0]]
    folded = ir.Tensor(out.name, out.shape, DType.FLOAT32, value.astype(np.float32))
    return Rewrite("fold_dequantize", f"folded {n.name} (DEQUANTIZE of a constant) into a "
                   "float constant", (i,), (), (folded,))


fold_dequantize_constants = RewritePass("fold_dequantize_constants", (
    # dequantize(const)  =>  const
    (op(OpType.DEQUANTIZE, capture="n", inputs=(const("c"),)), _fold_dequantize_constant),
))
