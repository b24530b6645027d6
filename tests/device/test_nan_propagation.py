"""NaN and infinities through every float op of the engine, as the float reference (and
ONNX Runtime / LiteRT) computes them: NaN stays NaN through clamps, pools and softmax."""

from __future__ import annotations

import numpy as np
import pytest
from tether.converter._internal import calibrate, ir, tmodel
from tether.converter._internal.ops import Activation, DType, OpType
from tether.device import Engine
from tether.device import _binding as B

SHAPE = (1, 6, 6, 4)


def _x() -> np.ndarray:
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    flat = x.reshape(-1)
    flat[[3, 40, 77]] = np.nan
    flat[[10, 90]] = np.inf
    flat[[25, 130]] = -np.inf
    return x


def _const(g: ir.GraphBuilder, shape, seed: int = 1) -> str:
    return g.const("c", np.random.default_rng(seed).uniform(0.5, 1.5, shape))


def _graph(op: OpType, act: Activation = Activation.NONE) -> ir.Graph:
    g = ir.GraphBuilder()
    g.add(ir.Tensor("x", SHAPE))
    win = {"strides": (1, 1), "dilations": (1, 1), "pads": (1, 1, 1, 1)}
    if op == OpType.CONV_2D:  # 3x3: im2col + the GEMM micro-kernel (constant weights)
        y = g.emit(op, "n", ["x", _const(g, (5, 3, 3, 4)), g.const("b", np.zeros(5))], "y",
                   attrs=win, activation=act)
    elif op == OpType.DEPTHWISE_CONV_2D:
        y = g.emit(op, "n", ["x", _const(g, (1, 3, 3, 4)), None], "y", attrs=win,
                   activation=act)
    elif op == OpType.FULLY_CONNECTED:
        y = g.emit(op, "n", ["x", _const(g, (3, 4)), None], "y", activation=act)
    elif op in (OpType.ADD, OpType.MUL, OpType.SUB, OpType.DIV, OpType.PRELU, OpType.MAXIMUM,
                OpType.MINIMUM):
        y = g.emit(op, "n", ["x", _const(g, (4,))], "y", activation=act)
    elif op in (OpType.MAX_POOL_2D, OpType.AVERAGE_POOL_2D):
        y = g.emit(op, "n", ["x"], "y", attrs={"kernel": (2, 2), "strides": (2, 2)})
    elif op in (OpType.MEAN, OpType.REDUCE_MAX):
        y = g.emit(op, "n", ["x"], "y", attrs={"axes": (1, 2), "keepdims": (1,)})
    elif op == OpType.SOFTMAX:
        y = g.emit(op, "n", ["x"], "y", attrs={"beta": (1.0,)})
    elif op == OpType.CLAMP:
        y = g.emit(op, "n", ["x"], "y", attrs={"min": (-1.0,), "max": (2.0,)})
    elif op in (OpType.LEAKY_RELU, OpType.ELU):
        y = g.emit(op, "n", ["x"], "y", attrs={"alpha": (0.3,)})
    elif op == OpType.HARD_SIGMOID:
        y = g.emit(op, "n", ["x"], "y", attrs={"alpha": (0.2,), "offset": (0.5,)})
    elif op == OpType.PAD:
        y = g.emit(op, "n", ["x"], "y", attrs={"paddings": (0, 0, 1, 1, 1, 1, 0, 0)})
    elif op == OpType.TRANSPOSE:
        y = g.emit(op, "n", ["x"], "y", attrs={"perm": (0, 3, 1, 2)})
    elif op == OpType.CONCATENATION:
        y = g.emit(op, "n", ["x", "x"], "y", attrs={"axis": (3,)})
    elif op == OpType.LAYER_NORM:  # a NaN or inf in a row makes the whole row NaN
        y = g.emit(op, "n", ["x", _const(g, (4,)), g.const("b", np.ones(4))], "y",
                   attrs={"axis": (3,), "epsilon": (1e-5,)})
    elif op == OpType.BATCH_MATMUL:  # [1,6,6,4]·[6,4,3], B broadcast over the batch
        y = g.emit(op, "n", ["x", _const(g, (6, 4, 3))], "y")
    elif op == OpType.INSTANCE_NORM:
        y = g.emit(op, "n", ["x", _const(g, (4,)), g.const("b", np.ones(4))], "y",
                   attrs={"epsilon": (1e-5,)})
    else:
        y = g.emit(op, "n", ["x"], "y")
    return ir.Graph(g.tensors, tuple(g.nodes), ("x",), (y,), "nan").rebuilt(g.nodes)


UNARY = [OpType.RELU, OpType.RELU6, OpType.LOGISTIC, OpType.TANH, OpType.HARD_SWISH,
         OpType.CLAMP, OpType.HARD_SIGMOID, OpType.SOFTMAX, OpType.MAX_POOL_2D,
         OpType.AVERAGE_POOL_2D, OpType.MEAN, OpType.PAD, OpType.TRANSPOSE,
         OpType.CONCATENATION, OpType.ADD, OpType.MUL, OpType.SUB, OpType.DIV,
         OpType.LEAKY_RELU, OpType.ELU, OpType.PRELU, OpType.MAXIMUM, OpType.MINIMUM,
         OpType.GELU, OpType.REDUCE_MAX, OpType.LAYER_NORM, OpType.INSTANCE_NORM,
         OpType.BATCH_MATMUL]
FUSED = [(op, act) for op in (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D, OpType.FULLY_CONNECTED,
                              OpType.ADD)
         for act in (Activation.NONE, Activation.RELU, Activation.RELU6,
                     Activation.RELU_N1_TO_1, Activation.HARD_SWISH)]


@pytest.mark.parametrize("op, act", [(op, Activation.NONE) for op in UNARY] + FUSED,
                         ids=lambda v: v.name)
@pytest.mark.parametrize("isa", ["scalar", "auto"])
def test_nan_and_inf_propagate_like_the_reference(op, act, isa) -> None:
    graph = _graph(op, act)
    x = _x()
    want = calibrate.evaluate(graph, {"x": x})[graph.outputs[0]]
    B.set_isa(isa)  # the kernels a model gets are chosen when it loads
    try:
        with Engine(tmodel.encode(tmodel.graph_to_file(graph))) as engine:
            got = engine.run(x).astype(np.float64)
    finally:
        B.set_isa("auto")
    assert np.isnan(want).any()  # the case exercises NaN at the output
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg="NaN positions")
    finite = ~np.isnan(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=2e-5, atol=1e-5)
