"""`join`: two `.tmodel` files run one after the other, as one file.

Part A's first output feeds part B's first input (same shape and dtype); B's tensors are
renamed where A already uses the name. The result runs A's ops, then B's, and computes what
running A and then B does, bit for bit (the same ops with the same kernels). Used by on-device
transfer learning: a frozen part A (float32 or int8) and a head B trained in the engine.
"""

from __future__ import annotations

import os

from tether.converter._internal import ir, tmodel
from tether.converter._internal.model import TModel, load
from tether.errors import ConversionError

Source = str | os.PathLike[str] | bytes | bytearray | memoryview


def join(part_a: Source, part_b: Source, *, name: str = "") -> TModel:
    """One model computing `part_b(part_a(x))`: A's inputs, B's outputs.

    Raises:
        ConversionError: A's first output and B's first input differ in shape or dtype, or B
            has more than one input.
        ModelFormatError: either file is not a valid `.tmodel`.
    """
    a, b = load(part_a).graph, load(part_b).graph
    if len(b.inputs) != 1:
        raise ConversionError(f"join: part B has {len(b.inputs)} inputs {list(b.inputs)}; it "
                              "must take exactly part A's output")
    cut = a.tensors[a.outputs[0]]
    entry = b.tensors[b.inputs[0]]
    if cut.shape != entry.shape or cut.dtype != entry.dtype or cut.quant != entry.quant:
        raise ConversionError(
            f"join: part A's output '{cut.name}' is {cut.dtype.name} {list(cut.shape)}, part "
            f"B's input '{entry.name}' is {entry.dtype.name} {list(entry.shape)}; they must match")
    renamed = {entry.name: cut.name}
    tensors = dict(a.tensors)
    for t in b.tensors.values():
        if t.name == entry.name:
            continue
        new = ir.unique_name(t.name, tensors) if t.name in tensors else t.name
        renamed[t.name] = new
        tensors[new] = ir.Tensor(new, t.shape, t.dtype, t.data, t.quant)
    nodes = list(a.nodes)
    for n in b.nodes:
        nodes.append(ir.Node(n.op, n.name,
                             tuple(None if i is None else renamed[i] for i in n.inputs),
                             tuple(renamed[o] for o in n.outputs), n.attrs, n.activation))
    outputs = tuple(renamed[o] for o in b.outputs)
    graph = ir.Graph(tensors, tuple(nodes), a.inputs, outputs, name or a.name)
    graph = graph.rebuilt(graph.nodes)  # keeps only what is still read (A's cut output is not
    ir.validate(graph, context="join")  # a graph output any more)
    meta = (("producer", "tether.converter.join"), ("source", "join"))
    return load(tmodel.encode(tmodel.graph_to_file(graph, meta), sparse=None))
