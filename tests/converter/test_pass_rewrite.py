"""The pattern matcher under every pass: fused activations, commutative operands, scalar
constants and references back to a captured tensor."""

from __future__ import annotations

import numpy as np
from converter_testlib import GraphBuilder
from tether.converter._internal import passes
from tether.converter._internal.ops import Activation, OpType
from tether.converter._internal.passes import op, same, scalar, tensor


def _matches(pattern, graph):
    """(node index, captured node names, captured tensor names) for every match of `pattern`."""
    found = []

    def record(m):
        found.append((m.root, sorted(m.nodes), dict(m.names)))
        return None  # match only, rewrite nothing

    graph_out = passes.RewritePass("probe", ((pattern, record),))(graph)
    assert graph_out is graph
    return found


def _mul(lhs: str, rhs: str, act: Activation = Activation.NONE):
    gb = GraphBuilder()
    x = gb.input("x", (1, 4))
    consts = {"two": gb.const("two", np.float32(2.0)),
              "sixth": gb.const("sixth", np.float32(1 / 6)),
              "pair": gb.const("pair", np.full((1, 4), 2.0, np.float32))}
    names = {"x": x, **consts}
    gb.node(OpType.MUL, [names[lhs], names[rhs]], "y", act=act)
    return gb.graph("y")


def test_commutative_operands_match_in_either_order() -> None:
    by_two = op(OpType.MUL, capture="m", commutative=True, inputs=(tensor("x"), scalar(2.0)))
    for lhs, rhs in (("x", "two"), ("two", "x")):
        assert _matches(by_two, _mul(lhs, rhs)) == [(0, ["m"], {"x": "x"})]
    fixed = op(OpType.MUL, capture="m", inputs=(tensor("x"), scalar(2.0)))
    assert _matches(fixed, _mul("two", "x")) == []


def test_scalar_constants_match_by_value_within_tolerance() -> None:
    near = op(OpType.MUL, commutative=True, inputs=(tensor("x"), scalar(1 / 6, 1e-6)))
    assert len(_matches(near, _mul("x", "sixth"))) == 1
    assert _matches(op(OpType.MUL, commutative=True, inputs=(tensor("x"), scalar(0.17, 1e-6))),
                    _mul("x", "sixth")) == []
    # A [1, 4] constant is no scalar, whatever its values.
    assert _matches(op(OpType.MUL, commutative=True, inputs=(tensor("x"), scalar(2.0))),
                    _mul("x", "pair")) == []


def test_same_refers_back_and_failed_orders_leave_no_captures() -> None:
    square = op(OpType.MUL, capture="m", commutative=True, inputs=(tensor("x"), same("x")))
    assert _matches(square, _mul("x", "x")) == [(0, ["m"], {"x": "x"})]
    assert _matches(square, _mul("x", "two")) == []


def test_fused_activation_is_part_of_the_pattern() -> None:
    relu6 = op(OpType.MUL, activation=Activation.RELU6, commutative=True,
               inputs=(tensor("x"), scalar(2.0)))
    assert len(_matches(relu6, _mul("x", "two", Activation.RELU6))) == 1
    assert _matches(relu6, _mul("x", "two")) == []
    plain = op(OpType.MUL, plain=True, commutative=True, inputs=(tensor("x"), scalar(2.0)))
    assert _matches(plain, _mul("x", "two", Activation.RELU6)) == []
