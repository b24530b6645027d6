"""Float reference evaluation of an IR graph, for int8 calibration only.

This is NOT an executor of `.tmodel` files (the C engine is): it exists so that post-training
quantization can record the range of every tensor on representative inputs. It evaluates the
float ops of FORMAT.md in float64 numpy with each op's `opdefs.OpDef.reference`, the same
definition constant folding uses.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from tether._internal.int8 import PRE_ACTIVATION_SUFFIX, pre_activation_key
from tether.converter._internal import ir
from tether.converter._internal.opdefs import OPDEFS, apply_activation
from tether.converter._internal.ops import Activation, DType

from tether.errors import ConversionError

__all__ = [
    "PRE_ACTIVATION",
    "PRE_ACTIVATION_SUFFIX",
    "evaluate",
    "pre_activation_key",
    "pre_activation_tensor",
    "tensor_ranges",
]

# Fused activations int8 cannot apply as a clamp: the int8 lowering splits them off into an
# int8 activation op, whose input is quantized from the range recorded under
# pre_activation_key(output).
PRE_ACTIVATION = frozenset({Activation.TANH, Activation.SIGMOID, Activation.HARD_SWISH})


# The two names of a value before its activation: the range key (calibration ranges and a
# compression plan's activation_ranges, "<tensor or Keras layer>:pre_activation", spelt once
# in tether._internal.int8) and the IR tensor a frontend makes for it when the activation
# stays a separate node ("<tensor>/pre_activation", spelt here only).


def pre_activation_tensor(name: str) -> str:
    """IR tensor name of the value before the activation of the tensor `name`.

    >>> pre_activation_tensor("conv1")
    'conv1/pre_activation'
    """
    return f"{name}/pre_activation"


def evaluate(graph: ir.Graph, feeds: dict[str, np.ndarray], *,
             pre_activations: bool = False) -> dict[str, np.ndarray]:
    """Returns every non-constant tensor of a float graph (float64) for one input set.

    RESHAPE reshapes to the declared output shape. With `pre_activations` (False by
    default), a node whose fused activation is in PRE_ACTIVATION also gives its value before
    the activation, under `pre_activation_key(output)`. Raises ConversionError on int8
    graphs or ops it does not know.
    """
    values: dict[str, np.ndarray] = {k: np.asarray(v, np.float64) for k, v in feeds.items()}

    def get(name: str | None) -> np.ndarray | None:
        if name is None:
            return None
        if name in values:
            return values[name]
        t = graph.tensors[name]
        if t.data is None or t.dtype != DType.FLOAT32:
            raise ConversionError(f"calibration: tensor '{name}' is not a float value")
        return np.asarray(t.data, np.float64)

    for node in graph.nodes:
        xs = [get(n) for n in node.inputs]
        out = graph.tensors[node.outputs[0]]
        d = OPDEFS.get(node.op)
        if d is None or d.reference is None:
            raise ConversionError(f"calibration: node {node.describe()} cannot be evaluated")
        pre = d.reference(node, xs, out.shape)
        if pre_activations and node.activation in PRE_ACTIVATION:
            values[pre_activation_key(node.outputs[0])] = pre
        y = apply_activation(pre, node.activation)
        if y.shape != out.shape:
            raise ConversionError(f"calibration: node {node.describe()} gave shape "
                                  f"{list(y.shape)}, expected {list(out.shape)}")
        values[node.outputs[0]] = y
    return values


def tensor_ranges(graph: ir.Graph, samples: Iterable[np.ndarray]) -> dict[str, tuple[float,
                                                                                    float]]:
    """Min and max of every non-constant tensor over `samples` (each a full input of the
    graph's single input), and of the values before each TANH/SIGMOID/HARD_SWISH fused
    activation (keyed `pre_activation_key(output)`)."""
    if len(graph.inputs) != 1:
        raise ConversionError(f"calibration supports single-input graphs; this one has "
                              f"{len(graph.inputs)}")
    name = graph.inputs[0]
    shape = graph.tensors[name].shape
    ranges: dict[str, tuple[float, float]] = {}
    count = 0
    for x in samples:
        x = np.asarray(x, np.float64)
        if x.shape != shape:
            if x.shape == shape[1:] and shape[0] == 1:
                x = x[None]
            else:
                raise ConversionError(f"calibration sample of shape {list(x.shape)} does not "
                                      f"fit input '{name}' {list(shape)}")
        for k, v in evaluate(graph, {name: x}, pre_activations=True).items():
            lo, hi = float(v.min()), float(v.max())
            if k in ranges:
                lo, hi = min(lo, ranges[k][0]), max(hi, ranges[k][1])
            ranges[k] = (lo, hi)
        count += 1
    if not count:
        raise ConversionError("calibration needs at least one sample")
    return ranges
