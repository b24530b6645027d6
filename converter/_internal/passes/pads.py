"""fold_pad: a zero PAD of the spatial axes into the convolution that reads it.

    Before: t = PAD(x, paddings=[0,0, pt,pb, pl,pr, 0,0], value=0); y = CONV_2D(t, W, b)
    After:  y = CONV_2D(x, W, b) with pads += [pt, pl, pb, pr]
    When:   the pad is constant (mode 0) with value 0 (a reflect, edge or symmetric PAD
            copies x's cells, which a convolution's zero padding cannot), only H and W are
            padded, and the PAD is read by this convolution (or depthwise convolution) only;
            never into a max pool, which ignores its padding rather than seeing zeros.
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


fold_pad = RewritePass("fold_pad", (
    # constant-zero PAD of H, W -> conv|depthwise  =>  conv with pads (not max pool: no zeros)
    (op(OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D, capture="conv",
        inputs=(op(OpType.PAD, capture="pad", single_use=True, plain=True),)), _fold_pad),
))
