"""The int8 contract between `tether.compression` and `tether.converter`.

Compression calibrates (or trains with fake quantization) and hands the converter a
quantization plan; the converter lowers the float graph to int8 with it. Both sides must
compute the same grid from the same range, and agree on what the plan holds. This module is
that agreement, written once; `tests/test_int8_contract.py` checks both sides against it.

The plan (`QuantizationPlanSpec`, implemented by `tether.compression.QuantizationPlan`):

- `activation_ranges`: Mapping[str, (min, max)], finite, min <= max. Keys are Keras layer
  names (nested models as "outer/inner"), model inputs by their InputLayer name (a
  Sequential model's input as "<model>_input"), and `pre_activation_key(layer)` for the
  value before a Conv/Dense layer's sigmoid / tanh / softmax activation. The converter takes,
  for each int8 tensor, the range of the Keras layer whose output it carries (the last layer
  of a fused chain such as conv + BN + ReLU); a tensor it needs and the plan lacks is a
  ConversionError naming the tensor and the layer.
- `bias_corrections`: Mapping[str, array [C]] (may be empty): per output channel of a
  Conv/Dense/Depthwise layer, E[W_q x] - E[W x] with BN folded; the converter subtracts it
  from the folded float bias before quantizing the bias to int32.

The grid (`activation_qparams`): asymmetric int8, the range widened to include 0 so that 0 is
exact, scale = (max - min) / 255, zero point = round(-128 - min / scale) clamped to int8.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "PRE_ACTIVATION_SUFFIX",
    "QuantizationPlanSpec",
    "activation_qparams",
    "pre_activation_key",
]

# The range key of the value before an activation: "<tensor or Keras layer>:pre_activation".
PRE_ACTIVATION_SUFFIX = ":pre_activation"


def pre_activation_key(name: str) -> str:
    """Range key of the value `name` has before its activation.

    >>> pre_activation_key("conv1")
    'conv1:pre_activation'
    """
    return f"{name}{PRE_ACTIVATION_SUFFIX}"


def activation_qparams(lo: float, hi: float) -> tuple[float, int]:
    """(scale, zero point) of an int8 asymmetric range, widened to include 0.

    A range narrower than 1e-6 is widened to 1e-6: the scale (kept to 12 decimals, so both sides
    read the same value) then never rounds to 0 and stays well inside what the engine's
    requantization accepts.

    >>> activation_qparams(0.0, 2.55)
    (0.01, -128)
    >>> activation_qparams(-1.0, 1.0)[1]
    0
    """
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-6:
        hi = lo + 1e-6
    scale = (hi - lo) / 255.0
    zp = int(min(max(round(-128 - lo / scale), -128), 127))
    return round(scale, 12), zp


@runtime_checkable
class QuantizationPlanSpec(Protocol):
    """What `convert(..., quantize="int8", plan=...)` reads from a plan (module docstring)."""

    @property
    def activation_ranges(self) -> Mapping[str, tuple[float, float]]: ...

    @property
    def bias_corrections(self) -> Mapping[str, Any]: ...
