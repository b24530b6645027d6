"""`from_dense`: a `.tmodel` of a multilayer perceptron given as arrays, with no source
framework (federated clients and tests build engine-trainable heads from numpy weights).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tether.converter._internal import ir, tmodel
from tether.converter._internal.model import TModel, load
from tether.converter._internal.opcodes import OpType
from tether.converter._internal.ops import Activation
from tether.errors import ConversionError


def from_dense(params: Sequence[np.ndarray], *, softmax: bool = True,
               name: str = "dense") -> TModel:
    """[W1 (in, h1), b1, W2 (h1, h2), b2, ...] as FULLY_CONNECTED layers (ReLU between them,
    none after the last), then SOFTMAX when `softmax`; input `x` [1, in], weights stored dense
    (trainable by `tether.device.Trainer`; tensors `dense_<i>/kernel` hold W_i transposed, as
    the engine's [out, in])."""
    if len(params) < 2 or len(params) % 2:
        raise ConversionError(f"from_dense needs [W, b] pairs; got {len(params)} arrays")
    b = ir.GraphBuilder()
    width = int(np.asarray(params[0]).shape[0])
    x = b.add(ir.Tensor("x", (1, width)))
    h = x
    for i in range(0, len(params), 2):
        w, bias = np.asarray(params[i], np.float32), np.asarray(params[i + 1], np.float32)
        if w.ndim != 2 or w.shape[0] != width or bias.shape != (w.shape[1],):
            raise ConversionError(f"from_dense: layer {i // 2} has W {list(w.shape)} and b "
                                  f"{list(bias.shape)}; expected W [{width}, n] and b [n]")
        last = i + 2 == len(params)
        k = b.add(ir.Tensor(f"dense_{i // 2}/kernel", (w.shape[1], w.shape[0]),
                            data=np.ascontiguousarray(w.T)))
        c = b.add(ir.Tensor(f"dense_{i // 2}/bias", bias.shape, data=bias))
        h = b.emit(OpType.FULLY_CONNECTED, f"dense_{i // 2}", [h, k, c],
                   "logits" if last else f"dense_{i // 2}",
                   activation=Activation.NONE if last else Activation.RELU)
        width = w.shape[1]
    if softmax:
        h = b.emit(OpType.SOFTMAX, "softmax", [h], "probs", attrs={"beta": (1.0,)})
    graph = ir.Graph(b.tensors, tuple(b.nodes), (x,), (h,), name)
    ir.validate(graph, context="from_dense")
    meta = (("producer", "tether.converter.from_dense"), ("source", "dense"))
    return load(tmodel.encode(tmodel.graph_to_file(graph, meta), sparse=None))
