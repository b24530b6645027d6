"""What the per-pass tests share: random arrays, a batch norm on a hand-built graph and its
numpy twin, op lists, and checks that a pass leaves its input alone or keeps the engine's
output."""

from __future__ import annotations

import numpy as np
from onnx_testlib import engine_run, rel_err
from tether.converter._internal import ir, tmodel
from tether.converter._internal.ops import InternalOp, OpType

RNG = np.random.default_rng(1)


def rand_array(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def add_batch_norm(gb, x, c, name="bn"):
    params = [gb.const(f"{name}/g", rand_array(c)), gb.const(f"{name}/b", rand_array(c)),
              gb.const(f"{name}/m", rand_array(c)),
              gb.const(f"{name}/v", RNG.uniform(0.5, 2.0, c).astype(np.float32))]
    return gb.node(InternalOp.BATCH_NORM, [x, *params], name, {"epsilon": (1e-3,)})


def bn_np(g, y, name="bn"):
    t = g.tensors
    gamma, beta, mean, var = (t[f"{name}/{k}"].data.astype(np.float64) for k in "gbmv")
    return (y - mean) / np.sqrt(var + 1e-3) * gamma + beta


def op_list(g: ir.Graph) -> list[OpType]:
    return [n.op for n in g.nodes]


def snapshot(g):
    return (tuple(g.nodes), dict(g.tensors), g.inputs, g.outputs)


def apply_unchanged(p, g):
    """Runs pass `p` on `g`, checking that `g` itself is left as it was."""
    before = snapshot(g)
    out, rewrites = p.apply(g)
    assert snapshot(g) == before  # never mutates its input
    return out, rewrites


def graph_bytes(g: ir.Graph) -> bytes:
    return tmodel.encode(tmodel.graph_to_file(g))


def assert_same_output(before: ir.Graph, after: ir.Graph, x: np.ndarray) -> None:
    assert rel_err(engine_run(graph_bytes(after), x), engine_run(graph_bytes(before), x)) < 1e-5
