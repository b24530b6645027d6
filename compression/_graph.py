"""A read-only view of a Keras 3 Functional model's layer graph, and a rebuild helper.

The view is taken from `model.get_config()` (the same graph Keras serialises), so it sees
exactly the layers and connections of this model even when layer objects are shared with
another model. Private to tether.compression.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tether.compression._errors import CompressionError

logger = logging.getLogger(__name__)

NESTED = ("Functional", "Sequential", "Model")


@dataclass
class Node:
    """One layer call: the layer, the layers feeding it (in argument order) and shapes."""

    name: str
    class_name: str
    layer: Any
    config: dict[str, Any]
    inputs: list[str]
    input_shapes: list[tuple[int | None, ...]]
    args: Any = None
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    """Nodes in topological order, the model's input and output layer names."""

    model: Any
    nodes: dict[str, Node]
    order: list[str]
    inputs: list[str]
    outputs: list[str]
    output_shapes: dict[str, tuple[int | None, ...]]
    config: dict[str, Any]

    def consumers(self, name: str) -> list[str]:
        return [n for n in self.order if name in self.nodes[n].inputs]


def as_functional(model: Any) -> Any:
    """A Functional model computing what `model` computes, sharing its layer objects."""
    import keras

    if isinstance(model, keras.Sequential):
        if not model.built or not model.inputs:
            raise CompressionError(
                f"model '{model.name}': Sequential model is not built; call it on an input "
                "or give it a keras.Input first")
        x_in = keras.Input(batch_shape=tuple(model.inputs[0].shape), name=f"{model.name}_input")
        x = x_in
        for layer in model.layers:
            x = layer(x)
        return keras.Model(x_in, x, name=model.name)
    if not isinstance(model, keras.Model) or not hasattr(model, "_operations"):
        raise CompressionError(
            f"{type(model).__name__}: expected a Keras Functional or Sequential model; "
            "subclassed models have no static graph (rebuild it with the Functional API)")
    return model


def _walk_refs(obj: Any, out: list[tuple[str, int, int, tuple]]) -> None:
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            cfg = obj["config"]
            name, node_index, tensor_index = cfg["keras_history"]
            out.append((name, node_index, tensor_index, tuple(cfg["shape"])))
            return
        for v in obj.values():
            _walk_refs(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _walk_refs(v, out)


def parse(model: Any) -> Graph:
    """The layer graph of a Functional (or Sequential) model.

    Raises:
        CompressionError: nested models, layers called more than once, or layers with
            several outputs; the message names the layer.
    """
    model = as_functional(model)
    config = model.get_config()
    nodes: dict[str, Node] = {}
    for entry in config["layers"]:
        name = entry["name"]
        cls = entry["class_name"]
        if cls in NESTED:
            raise CompressionError(
                f"model '{model.name}': layer '{name}' is a nested {cls}; flatten it into "
                "one Functional model before compressing")
        inbound = entry.get("inbound_nodes", [])
        if len(inbound) > 1:
            raise CompressionError(
                f"model '{model.name}': layer '{name}' ({cls}) is called {len(inbound)} "
                "times; shared layers cannot be compressed, give each call its own layer")
        refs: list[tuple[str, int, int, tuple]] = []
        args: Any = None
        kwargs: dict[str, Any] = {}
        if inbound:
            args = inbound[0].get("args", [])
            kwargs = inbound[0].get("kwargs", {})
            _walk_refs(args, refs)
            _walk_refs(kwargs, refs)
        for ref in refs:
            if ref[2] != 0:
                raise CompressionError(
                    f"model '{model.name}': layer '{name}' reads output {ref[2]} of "
                    f"'{ref[0]}'; layers with several outputs are not supported")
        nodes[name] = Node(name, cls, model.get_layer(name), entry["config"],
                           [r[0] for r in refs], [r[3] for r in refs], args, kwargs)
    order: list[str] = []
    seen: set[str] = set()
    pending = [entry["name"] for entry in config["layers"]]
    while pending:
        progressed = False
        rest = []
        for name in pending:
            if all(i in seen for i in nodes[name].inputs):
                order.append(name)
                seen.add(name)
                progressed = True
            else:
                rest.append(name)
        if not progressed:
            raise CompressionError(f"model '{model.name}': layer graph has a cycle at {rest}")
        pending = rest
    inputs = [r[0] for r in config["input_layers"]] if isinstance(config["input_layers"][0], list) \
        else [config["input_layers"][0]]
    outs_cfg = config["output_layers"]
    outputs = [r[0] for r in outs_cfg] if isinstance(outs_cfg[0], list) else [outs_cfg[0]]
    output_shapes = {name: tuple(t.shape) for name, t in zip(outputs, model.outputs)}
    return Graph(model, nodes, order, inputs, outputs, output_shapes, config)


def _substitute(obj: Any, tensors: dict[str, Any]) -> Any:
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            return tensors[obj["config"]["keras_history"][0]]
        return {k: _substitute(v, tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_substitute(v, tensors) for v in obj]
    return obj


LayerFn = Callable[[Node, list[Any], dict[str, Any]], Any]


def rebuild(graph: Graph, fn: LayerFn | None = None, name: str | None = None) -> Any:
    """A new Functional model: each node's output is `fn(node, args, kwargs)`.

    `fn` defaults to calling the node's own layer (so weights are shared with the source).
    """
    import keras

    tensors: dict[str, Any] = {}
    new_inputs = []
    for in_name in graph.inputs:
        node = graph.nodes[in_name]
        t = keras.Input(batch_shape=tuple(node.config["batch_shape"]),
                        dtype=node.config.get("dtype", "float32"), name=in_name)
        tensors[in_name] = t
        new_inputs.append(t)
    for n in graph.order:
        node = graph.nodes[n]
        if n in graph.inputs:
            continue
        args = _substitute(node.args, tensors)
        kwargs = _substitute(node.kwargs, tensors)
        if fn is None:
            tensors[n] = node.layer(*args, **kwargs)
        else:
            tensors[n] = fn(node, args, kwargs)
    outs = [tensors[o] for o in graph.outputs]
    return keras.Model(new_inputs if len(new_inputs) > 1 else new_inputs[0],
                       outs if len(outs) > 1 else outs[0], name=name or graph.model.name)
