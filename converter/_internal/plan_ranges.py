"""A compression `QuantizationPlan` (ranges by Keras layer name, `tether._internal.int8`)
mapped onto the IR tensors of the converted Keras model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from tether._internal.int8 import QuantizationPlanSpec
from tether.converter._internal import ir
from tether.converter._internal.calibrate import (
    PRE_ACTIVATION_SUFFIX,
    pre_activation_key,
    pre_activation_tensor,
)

from tether.errors import ConversionError

__all__ = ["plan_ranges"]


class _PlanRanges(Mapping[str, tuple[float, float]]):
    """IR tensor name -> (min, max) read from a plan keyed by Keras layer name.

    Lookups resolve lazily so that only the tensors the int8 lowering asks for must have a
    range; a tensor it asks for and the plan lacks raises a ConversionError naming the
    tensor, the node that makes it and the Keras layer (so `in` is True for every tensor).
    "<tensor>:pre_activation" (the value before a fused activation the lowering splits off)
    is the range of the Keras layer whose output fed that activation; `in` is False when
    the plan has none, and the lowering then keeps the op float.
    """

    def __init__(self, graph: ir.Graph, keys: Mapping[str, str],
                 ranges: Mapping[str, tuple[float, float]], model_name: str,
                 pre_fusion: Mapping[str, str]) -> None:
        self._graph, self._keys, self._ranges, self._model = graph, keys, ranges, model_name
        self._makers = {o: n for n in graph.nodes for o in n.outputs}
        self._pre = pre_fusion

    def _pre_key(self, name: str) -> str | None:
        """Plan key of "<tensor>:pre_activation", or None."""
        out = name.removesuffix(PRE_ACTIVATION_SUFFIX)
        if out in self._pre:
            return self._keys.get(self._pre[out])
        return self._keys.get(pre_activation_tensor(out))

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str) and name.endswith(PRE_ACTIVATION_SUFFIX):
            return self._pre_key(name) in self._ranges
        return name in self._graph.tensors

    def __getitem__(self, name: str) -> tuple[float, float]:
        if name.endswith(PRE_ACTIVATION_SUFFIX) and name in self:
            return self._checked(self._pre_key(name))  # type: ignore[arg-type]
        key = self._keys.get(name)
        made = self._makers.get(name)
        where = (f"tensor '{name}' (output of node {made.describe()})" if made is not None
                 else f"input tensor '{name}'")
        if key is None:
            raise ConversionError(
                f"int8 with plan: {where} of model '{self._model}' carries no Keras layer's "
                "output (it is made inside a layer or by a rewrite), so the plan cannot give "
                "its range; convert with calibration= instead")
        if key not in self._ranges:
            raise ConversionError(
                f"int8 with plan: no range for Keras layer '{key}' ({where}) of model "
                f"'{self._model}'; calibrate this model with tether.compression.calibrate, or "
                f"add activation_ranges['{key}']")
        return self._checked(key)

    def _checked(self, key: str) -> tuple[float, float]:
        lo, hi = self._ranges[key]
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi:
            raise ConversionError(f"int8 with plan: range of Keras layer '{key}' is "
                                  f"({lo}, {hi}); need finite min <= max")
        return float(lo), float(hi)

    def __iter__(self) -> Any:
        return (n for n, k in self._keys.items() if k in self._ranges
                and n in self._graph.tensors)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def plan_ranges(graph: ir.Graph, origins: Mapping[str, str], plan: Any,
                 model: Any, pre_fusion: Mapping[str, str]) -> _PlanRanges:
    """Checks `plan` against the Keras `model` and maps its ranges onto IR tensors."""
    ranges = getattr(plan, "activation_ranges", None)
    if not isinstance(plan, QuantizationPlanSpec) or not isinstance(ranges, Mapping):
        raise ConversionError(f"plan must be a tether.compression.QuantizationPlan (with "
                              f"activation_ranges). Received: {type(plan).__name__}")
    import keras

    known: set[str] = set()

    def walk(m: Any, prefix: str) -> None:
        for layer in m.layers:
            known.update({prefix + layer.name, pre_activation_key(prefix + layer.name)})
            if isinstance(layer, keras.Model):
                walk(layer, prefix + layer.name + "/")

    walk(model, "")
    inputs = [kt._keras_history.operation.name for kt in model.inputs]
    known.update(inputs)
    keys = dict(origins)
    if isinstance(model, keras.Sequential):  # tether.compression names it "<model>_input"
        known.add(f"{model.name}_input")
        for t in graph.inputs:
            if keys.get(t) not in ranges and f"{model.name}_input" in ranges:
                keys[t] = f"{model.name}_input"
    unknown = sorted(k for k in ranges if k not in known)
    if unknown:
        raise ConversionError(
            f"plan names {len(unknown)} layer(s) model '{model.name}' does not have: "
            f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''}; the plan was made for "
            "another model (calibrate this one, or convert the model export_qat returned)")
    return _PlanRanges(graph, keys, ranges, model.name, pre_fusion)
