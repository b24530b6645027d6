"""run_passes, the pass manager, and graph validation on small hand-built graphs."""

from __future__ import annotations

import numpy as np
import pytest
from converter_testlib import act_np, conv2d_np
from passes_testlib import add_batch_norm, bn_np, rand_array, snapshot
from tether.converter._internal import ir, passes
from tether.converter._internal.ops import Activation, InternalOp, OpType
from tether.errors import ConversionError


def test_pipeline_reaches_fixed_point_and_records(gb) -> None:
    x = gb.input("x", (1, 6, 6, 3))
    p = gb.node(OpType.PAD, [x], "pad", {"paddings": (0, 0, 1, 1, 1, 1, 0, 0)})
    c = gb.node(OpType.CONV_2D, [p, gb.const("w", rand_array(4, 3, 3, 3)), None], "conv")
    d = gb.node(InternalOp.IDENTITY, [c], "dropout")
    b = add_batch_norm(gb, d, 4)
    y = gb.node(OpType.RELU6, [b], "relu")
    g = gb.graph(y)
    before = snapshot(g)
    out, log = passes.run_passes(g, passes.OPTIMIZE_PIPELINE)
    assert snapshot(g) == before
    assert [(n.op, n.activation, n.attrs["pads"]) for n in out.nodes] == [
        (OpType.CONV_2D, Activation.RELU6, (1, 1, 1, 1))]
    assert out.outputs == ("relu",)
    assert log.counts == {"fold_batch_norm": 1, "fold_pad": 1, "fuse_activation": 1,
                          "remove_identity": 1}
    assert "folded bn into conv" in log.actions
    assert log.iterations >= 2
    xv = rand_array(1, 6, 6, 3)
    n = out.nodes[0]
    ref = np.clip(bn_np(g, conv2d_np(xv, g.tensors["w"].data, None, pads=(1, 1, 1, 1))), 0, 6)
    got = act_np(conv2d_np(xv, out.tensors[n.inputs[1]].data, out.tensors[n.inputs[2]].data,
                           pads=n.attrs["pads"]), n.activation)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_manager_validates_after_each_pass(gb) -> None:
    x = gb.input("x", (1, 4))
    g = gb.graph(gb.node(OpType.RELU, [x], "y"))

    def break_shape(m):
        i, n = m.nodes["n"]
        if m.graph.tensors["y"].shape != (1, 4):
            return None
        bad = ir.Tensor("y", (1, 5))
        return passes.Rewrite("break", "broke it", (i,), (n,), (bad,))

    broken = passes.RewritePass("breaker", ((passes.op(OpType.RELU, capture="n"), break_shape),))
    with pytest.raises(ConversionError, match="after pass breaker.*output shapes"):
        passes.run_passes(g, [broken])


def test_validate_rejects_use_before_definition(gb) -> None:
    x = gb.input("x", (1, 4))
    a = gb.node(OpType.RELU, [x], "a")
    b = gb.node(OpType.TANH, [a], "b")
    g = gb.graph(b)
    swapped = ir.Graph(g.tensors, tuple(reversed(g.nodes)), g.inputs, g.outputs, "g")
    with pytest.raises(ConversionError, match="'a' is used before it is defined"):
        ir.validate(swapped)
    with pytest.raises(ConversionError, match="not a tensor"):
        ir.validate(ir.Graph(g.tensors, g.nodes, g.inputs, ("nope",), "g"))
