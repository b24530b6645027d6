"""tether.compression: pruning, distillation and quantization for Keras 3 models.

Keras 3 in, Keras 3 out: every step returns an ordinary `keras.Model` (plus a report
dataclass, and for quantization a `QuantizationPlan` the converter lowers to int8).

Names are imported lazily (PEP 562), so `import tether.compression` (and the CLI's
`--help`) does not load Keras or TensorFlow.

- Structured pruning: `prune_channels`, `ChannelPruningConfig`, `count_macs`,
  `dependency_groups`, `fine_tune`.
- Distillation: `distill`, `Distiller`, `DistillationConfig`, `distillation_loss`.
- Unstructured pruning: `prune_weights` (the recipe), `MagnitudePruning`, `PolynomialDecay`,
  `strip_pruning`, `sparsity_report`.
- Quantization: `quantize_weights`, `calibrate`, `QuantizationPlan`, `fold_batchnorm`,
  `simulate_int8`, `prepare_qat`, `export_qat`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "tether.compression._errors": ("CompressionError",),
    "tether.compression.channel_pruning": (
        "ChannelPruningConfig", "ChannelPruningReport", "count_macs", "dependency_groups",
        "fine_tune", "prune_channels"),
    "tether.compression.distillation": (
        "DistillationConfig", "Distiller", "distill", "distillation_loss"),
    "tether.compression.weight_pruning": (
        "LayerSparsity", "MagnitudePruning", "PolynomialDecay", "SparsityReport",
        "prune_weights", "sparsity_report", "strip_pruning"),
    "tether.compression.quantize": (
        "CALIBRATION_METHODS", "CalibrationConfig", "QuantizationPlan", "WeightQuantConfig",
        "WeightQuantReport", "activation_qparams", "calibrate", "fold_batchnorm",
        "pack_int4", "quantize_weights", "simulate_int8", "unpack_int4"),
    "tether.compression.qat": ("QATConfig", "export_qat", "prepare_qat"),
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}

__all__ = [
    "CALIBRATION_METHODS",
    "CalibrationConfig",
    "ChannelPruningConfig",
    "ChannelPruningReport",
    "CompressionError",
    "DistillationConfig",
    "Distiller",
    "LayerSparsity",
    "MagnitudePruning",
    "PolynomialDecay",
    "QATConfig",
    "QuantizationPlan",
    "SparsityReport",
    "WeightQuantConfig",
    "WeightQuantReport",
    "activation_qparams",
    "calibrate",
    "count_macs",
    "dependency_groups",
    "distill",
    "distillation_loss",
    "export_qat",
    "fine_tune",
    "fold_batchnorm",
    "pack_int4",
    "prepare_qat",
    "prune_channels",
    "prune_weights",
    "quantize_weights",
    "simulate_int8",
    "sparsity_report",
    "strip_pruning",
    "unpack_int4",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'tether.compression' has no attribute '{name}'")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)


if TYPE_CHECKING:  # pragma: no cover
    from tether.compression._errors import CompressionError
    from tether.compression.distillation import (
        DistillationConfig,
        Distiller,
        distill,
        distillation_loss,
    )
    from tether.compression.qat import QATConfig, export_qat, prepare_qat
    from tether.compression.quantize import (
        CALIBRATION_METHODS,
        CalibrationConfig,
        QuantizationPlan,
        WeightQuantConfig,
        WeightQuantReport,
        activation_qparams,
        calibrate,
        fold_batchnorm,
        pack_int4,
        quantize_weights,
        simulate_int8,
        unpack_int4,
    )
    from tether.compression.weight_pruning import (
        LayerSparsity,
        MagnitudePruning,
        PolynomialDecay,
        SparsityReport,
        prune_weights,
        sparsity_report,
        strip_pruning,
    )
    from tether.compression.channel_pruning import (
        ChannelPruningConfig,
        ChannelPruningReport,
        count_macs,
        dependency_groups,
        fine_tune,
        prune_channels,
    )
