"""fold_pad: a zero PAD of the spatial axes into the convolution that reads it, and a crop
of its output back into its padding.

    Before: t = PAD(x, paddings=[0,0, pt,pb, pl,pr, 0,0], value=0); y = CONV_2D(t, W, b)
    After:  y = CONV_2D(x, W, b) with pads += [pt, pl, pb, pr]
    When:   the pad is constant (mode 0) with value 0 (a reflect, edge or symmetric PAD
            copies x's cells, which a convolution's zero padding cannot), only H and W are
            padded, and the PAD is read by this convolution (or depthwise convolution) only;
            never into a max pool, which ignores its padding rather than seeing zeros.

    Before: t = CONV_2D(x, W, b) (stride 1); y = SLICE(t) keeping rows ct .. H - cb - 1 and
            columns cl .. W - cr - 1
    After:  y = CONV_2D(x, W, b) with pads -= [ct, cl, cb, cr]
    When:   the slice has unit steps, crops only H and W, is the convolution's (or depthwise
            convolution's) only reader, and each crop is at most the padding on its side.
            (A stride-1 convolution's output row i reads input rows i - pt ...: dropping the
            first ct rows is padding ct fewer.) TensorFlow's dilated convolution leaves this
            crop behind (BATCH_TO_SPACE_ND's crops, tflite frontend).
"""

from __future__ import annotations

from dataclasses import replace

from tether.converter._internal import ir
from tether.converter._internal.ops import OpType

from .rewrite import Match, Rewrite, RewritePass, op

__all__ = ["fold_pad"]


def _fold_pad(m: Match) -> Rewrite | None:
    """PAD (constant zeros, H/W only, single use) -> conv|depthwise  =>  conv with larger pads."""
    g = m.graph
    pi, pad = m.nodes["pad"]
    ci, conv = m.nodes["conv"]
    (value,) = ir.attr(pad, "value")
    (mode,) = ir.attr(pad, "mode")
    p = tuple(int(v) for v in ir.attr(pad, "paddings"))
    x = g.tensors[pad.inputs[0]]  # type: ignore[index]
    if mode != 0 or value != 0.0 or len(x.shape) != 4 or p[0] or p[1] or p[6] or p[7]:
        return None
    pt, pb, pl, pr = p[2], p[3], p[4], p[5]
    old = tuple(int(v) for v in ir.attr(conv, "pads"))
    attrs = dict(conv.attrs)
    attrs["pads"] = (old[0] + pt, old[1] + pl, old[2] + pb, old[3] + pr)
    new = replace(conv, inputs=(pad.inputs[0],) + conv.inputs[1:], attrs=attrs)
    return Rewrite("fold_pad", f"folded {pad.name} into {conv.name}", (pi, ci), (new,))


def _fold_crop(m: Match) -> Rewrite | None:
    """conv|depthwise (stride 1, single use) -> SLICE of H, W within its pads  =>  conv with
    smaller pads writing the slice's output."""
    g = m.graph
    ci, conv = m.nodes["conv"]
    si, sl = m.nodes["slice"]
    t = g.tensors[conv.outputs[0]]
    y = g.tensors[sl.outputs[0]]
    begin = tuple(int(v) for v in ir.attr(sl, "begin"))
    steps = tuple(int(v) for v in sl.attrs.get("steps", (1,)))
    if len(t.shape) != 4 or set(steps) != {1} or tuple(int(v) for v in ir.attr(conv, "strides")) \
            != (1, 1) or begin[0] or begin[3] or y.shape[0] != t.shape[0] \
            or y.shape[3] != t.shape[3]:
        return None
    ct, cl = begin[1], begin[2]
    cb, cr = t.shape[1] - ct - y.shape[1], t.shape[2] - cl - y.shape[2]
    pt, pl, pb, pr = (int(v) for v in ir.attr(conv, "pads"))
    if ct > pt or cl > pl or cb > pb or cr > pr:
        return None
    attrs = dict(conv.attrs)
    attrs["pads"] = (pt - ct, pl - cl, pb - cb, pr - cr)
    new = replace(conv, outputs=sl.outputs, attrs=attrs)
    return Rewrite("fold_crop", f"folded {sl.name} into {conv.name}'s padding", (ci, si), (new,))


fold_pad = RewritePass("fold_pad", (
    # SLICE of H, W after a stride-1 conv|depthwise, within its pads  =>  conv with less padding
    (op(OpType.SLICE, capture="slice", inputs=(
        op(OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D, capture="conv", single_use=True),)),
     _fold_crop),
    # constant-zero PAD of H, W -> conv|depthwise  =>  conv with pads (not max pool: no zeros)
    (op(OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D, capture="conv",
        inputs=(op(OpType.PAD, capture="pad", single_use=True, plain=True),)), _fold_pad),
))
