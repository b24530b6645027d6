"""recognize_hard_swish and recognize_hard_sigmoid: the exporters' spelled-out forms of
hard-swish and hard-sigmoid, as patterns.

recognize_hard_swish
    Before: y = x * (relu6(x + 3) * (1/6))     (Keras' MobileNetV3 and its exports)
            y = (x * relu6(x + 3)) * (1/6)
            y = x * HARD_SIGMOID(x)            with alpha 1/6 and offset 1/2
    After:  y = HARD_SWISH(x)
    When:   every inner node is read once, no node but ADD's RELU6 has a fused activation,
            and x has y's shape (no broadcasting); MUL and ADD match their operands in
            either order (commutative), the constants as scalars (3 exactly, 1/6 to 1e-6).

recognize_hard_sigmoid
    Before: y = relu6(x + 3) * (1/6)           (MobileNetV3's squeeze-and-excite gate)
    After:  y = HARD_SIGMOID(x) with alpha 1/6, offset 1/2
    When:   as above.
    Formula: hard_swish(x) = x * clip(x + 3, 0, 6) / 6; hard_sigmoid(x) = clip(alpha * x +
            offset, 0, 1), so relu6(x + 3) / 6 = hard_sigmoid(x) at alpha 1/6, offset 1/2.
"""

from __future__ import annotations

from tether.converter._internal import ir
from tether.converter._internal.ops import Activation, OpType

from .rewrite import Match, Pat, Rewrite, RewritePass, op, same, scalar, tensor

__all__ = ["recognize_hard_sigmoid", "recognize_hard_swish"]

_SIXTH = scalar(1 / 6, tolerance=1e-6)


def _relu6_x_plus_3(x: Pat) -> Pat:
    """relu6(x + 3): ADD with a fused RELU6, read once."""
    return op(OpType.ADD, capture="add", activation=Activation.RELU6, single_use=True,
              commutative=True, inputs=(x, scalar(3.0)))


# x * (relu6(x + 3) * (1/6))
_X_TIMES_GATE = op(OpType.MUL, capture="root", plain=True, commutative=True, inputs=(
    tensor("x"),
    op(OpType.MUL, capture="gate", plain=True, single_use=True, commutative=True,
       inputs=(_relu6_x_plus_3(same("x")), _SIXTH)),
))
# (x * relu6(x + 3)) * (1/6)
_PRODUCT_TIMES_SIXTH = op(OpType.MUL, capture="root", plain=True, commutative=True, inputs=(
    op(OpType.MUL, capture="gate", plain=True, single_use=True, commutative=True,
       inputs=(tensor("x"), _relu6_x_plus_3(same("x")))),
    _SIXTH,
))
# x * hard_sigmoid(x)
_X_TIMES_HARD_SIGMOID = op(OpType.MUL, capture="root", plain=True, commutative=True, inputs=(
    tensor("x"),
    op(OpType.HARD_SIGMOID, capture="hs", plain=True, single_use=True, inputs=(same("x"),)),
))
# relu6(x + 3) * (1/6)
_GATE = op(OpType.MUL, capture="root", plain=True, commutative=True,
           inputs=(_relu6_x_plus_3(tensor("x")), _SIXTH))


def _keeps_shape(m: Match) -> bool:
    g = m.graph
    return g.tensors[m.names["x"]].shape == g.tensors[m.node("root").outputs[0]].shape


def _hard_swish(m: Match) -> Rewrite | None:
    if not _keeps_shape(m):
        return None
    root = m.node("root")
    new = ir.Node(OpType.HARD_SWISH, root.name, (m.names["x"],), root.outputs)
    return Rewrite("recognize_hard_swish", f"replaced {root.name} and its x*relu6(x+3)/6 "
                   "chain by HARD_SWISH", m.indices("root", "gate", "add"), (new,))


def _hard_swish_of_hard_sigmoid(m: Match) -> Rewrite | None:
    hs = m.node("hs")
    if (not _keeps_shape(m) or abs(float(ir.attr(hs, "alpha")[0]) - 1 / 6) >= 1e-6
            or abs(float(ir.attr(hs, "offset")[0]) - 0.5) >= 1e-6):
        return None
    root = m.node("root")
    new = ir.Node(OpType.HARD_SWISH, root.name, (m.names["x"],), root.outputs)
    return Rewrite("recognize_hard_swish", f"replaced {root.name} (x * HARD_SIGMOID(x))"
                   " by HARD_SWISH", m.indices("root", "hs"), (new,))


def _hard_sigmoid(m: Match) -> Rewrite | None:
    if not _keeps_shape(m):
        return None
    root, add = m.node("root"), m.node("add")
    new = ir.Node(OpType.HARD_SIGMOID, root.name, (m.names["x"],), root.outputs,
                  {"alpha": (1 / 6,), "offset": (0.5,)})
    return Rewrite("recognize_hard_sigmoid", f"replaced {add.name} and {root.name} "
                   "(relu6(x+3)/6) by HARD_SIGMOID", m.indices("root", "add"), (new,))


recognize_hard_swish = RewritePass("recognize_hard_swish", (
    (_X_TIMES_GATE, _hard_swish),
    (_PRODUCT_TIMES_SIXTH, _hard_swish),
    (_X_TIMES_HARD_SIGMOID, _hard_swish_of_hard_sigmoid),
))

recognize_hard_sigmoid = RewritePass("recognize_hard_sigmoid", (
    (_GATE, _hard_sigmoid),
))
