"""Unstructured magnitude pruning with Zhu & Gupta's polynomial-decay sparsity schedule.

    s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_end - t_0))^power,   t_0 <= t <= t_end

`MagnitudePruning` is a Keras callback: every `frequency` steps inside the schedule it
recomputes each pruned kernel's mask (the smallest-magnitude weights up to s_t are zero),
and after *every* optimizer step it re-applies the current masks, so pruned weights stay
zero between updates. `strip_pruning` returns a plain copy of the model with the masks
applied; nothing of the callback remains in it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tether.compression._errors import CompressionError
from tether.compression._graph import as_functional

__all__ = [
    "LayerSparsity",
    "MagnitudePruning",
    "PolynomialDecay",
    "SparsityReport",
    "prunable_layers",
    "prune_weights",
    "sparsity_report",
    "strip_pruning",
]

logger = logging.getLogger(__name__)

_PRUNABLE = ("Conv1D", "Conv2D", "Conv3D", "Dense", "DepthwiseConv2D", "SeparableConv2D")


@dataclass(frozen=True)
class PolynomialDecay:
    """Sparsity schedule of Zhu & Gupta (2017).

    Attributes:
        final_sparsity: Target sparsity in [0, 1) (default 0.5).
        initial_sparsity: Sparsity at `begin_step`, in [0, final_sparsity] (default 0.0).
        begin_step: First step that prunes (default 0).
        end_step: Step at which `final_sparsity` is reached (default 1000, > begin_step).
        power: Decay exponent (default 3).
        frequency: Masks are recomputed every this many steps (default 100, >= 1).
    """

    final_sparsity: float = 0.5
    initial_sparsity: float = 0.0
    begin_step: int = 0
    end_step: int = 1000
    power: float = 3.0
    frequency: int = 100

    def __post_init__(self) -> None:
        for name in ("final_sparsity", "initial_sparsity"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0 or math.isnan(v):
                raise CompressionError(
                    f"PolynomialDecay.{name} must be in [0, 1). Received: {name}={v}")
        if self.initial_sparsity > self.final_sparsity:
            raise CompressionError(
                "PolynomialDecay.initial_sparsity must be <= final_sparsity. Received: "
                f"initial_sparsity={self.initial_sparsity}, final_sparsity={self.final_sparsity}")
        if self.begin_step < 0 or self.end_step <= self.begin_step:
            raise CompressionError(
                "PolynomialDecay needs 0 <= begin_step < end_step. Received: "
                f"begin_step={self.begin_step}, end_step={self.end_step}")
        if self.frequency < 1:
            raise CompressionError(
                f"PolynomialDecay.frequency must be >= 1. Received: frequency={self.frequency}")
        if not self.power > 0:
            raise CompressionError(f"PolynomialDecay.power must be > 0. Received: power={self.power}")

    def sparsity(self, step: int) -> float:
        """s_t at optimizer step `step` (clamped to the schedule's ends).

        >>> PolynomialDecay(0.8, 0.0, 0, 100, 3).sparsity(50)
        0.7
        """
        t = min(max(step, self.begin_step), self.end_step)
        frac = 1.0 - (t - self.begin_step) / (self.end_step - self.begin_step)
        return round(self.final_sparsity
                     + (self.initial_sparsity - self.final_sparsity) * frac ** self.power, 12)

    @classmethod
    def over_steps(cls, final_sparsity: float, steps: int, ramp: float = 0.7,
                   updates: int = 20) -> PolynomialDecay:
        """The fine-tuning recipe: from 0 to `final_sparsity` over the first `ramp` of `steps`
        optimizer steps, masks recomputed about `updates` times; the rest of the steps
        train the final mask.

        >>> PolynomialDecay.over_steps(0.5, 1000)
        PolynomialDecay(final_sparsity=0.5, initial_sparsity=0.0, begin_step=0, end_step=700, power=3.0, frequency=50)
        """
        return cls(final_sparsity, 0.0, 0, max(1, int(steps * ramp)),
                   frequency=max(1, steps // updates))

    def should_update(self, step: int) -> bool:
        """True at the steps where masks are recomputed."""
        if step < self.begin_step or step > self.end_step:
            return False
        return (step - self.begin_step) % self.frequency == 0 or step == self.end_step


def prunable_layers(model: Any, names: Sequence[str] | None = None) -> list[Any]:
    """The layers whose kernels are pruned: `names`, or every Conv/Dense/Depthwise layer.

    Raises:
        CompressionError: a name is not a layer of the model, or has no kernel.
    """
    if names is None:
        return [l for l in model.layers if type(l).__name__ in _PRUNABLE]
    known = {l.name: l for l in model.layers}
    out = []
    for n in names:
        if n not in known:
            raise CompressionError(
                f"model '{model.name}' has no layer '{n}' to prune; known layers with "
                f"kernels: {[l.name for l in model.layers if type(l).__name__ in _PRUNABLE]}")
        if type(known[n]).__name__ not in _PRUNABLE:
            raise CompressionError(
                f"layer '{n}' ({type(known[n]).__name__}) has no kernel to prune; name a "
                f"Conv, Dense or DepthwiseConv2D layer")
        out.append(known[n])
    return out


def _kernel(layer: Any) -> Any:
    for v in layer.weights:
        if v.name in ("kernel", "pointwise_kernel"):
            return v
    raise CompressionError(f"layer '{layer.name}' has no kernel")


def magnitude_mask(w: np.ndarray, sparsity: float) -> np.ndarray:
    """Mask zeroing the floor(sparsity·n) smallest |w| (ties broken by position).

    >>> magnitude_mask(np.array([0.1, -3.0, 0.2, 2.0]), 0.5).tolist()
    [0.0, 1.0, 0.0, 1.0]
    """
    flat = np.abs(w).reshape(-1)
    k = math.floor(sparsity * flat.size)
    mask = np.ones(flat.size, dtype=w.dtype)
    if k > 0:
        mask[np.argsort(flat, kind="stable")[:k]] = 0
    return mask.reshape(w.shape)


def _callback_base() -> Any:
    import keras

    return keras.callbacks.Callback


class MagnitudePruning(_callback_base()):  # type: ignore[misc]
    """Keras callback that prunes kernels by magnitude on a `PolynomialDecay` schedule.

    Args:
        schedule: The sparsity schedule (steps are optimizer steps across all epochs).
        layers: Names of the layers to prune (default: every Conv/Dense/Depthwise layer).
    """

    def __init__(self, schedule: PolynomialDecay, layers: Sequence[str] | None = None
                 ) -> None:
        super().__init__()
        self.schedule = schedule
        self.layer_names = None if layers is None else tuple(layers)
        self.masks: dict[str, np.ndarray] = {}
        self.step = 0

    def on_train_begin(self, logs: Any = None) -> None:
        self._layers = prunable_layers(self.model, self.layer_names)
        for layer in self._layers:
            if layer.name not in self.masks:
                self.masks[layer.name] = np.ones(tuple(_kernel(layer).shape), "float32")
        self._update(self.step)

    def _update(self, step: int) -> None:
        if self.schedule.should_update(step):
            s = self.schedule.sparsity(step)
            for layer in self._layers:
                self.masks[layer.name] = magnitude_mask(np.asarray(_kernel(layer)), s)
        for layer in self._layers:
            k = _kernel(layer)
            k.assign(np.asarray(k) * self.masks[layer.name])

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.step += 1
        self._update(self.step)


@dataclass(frozen=True)
class LayerSparsity:
    """One kernel: element count, zeros, and its dense and compressed sizes in bytes."""

    name: str
    size: int
    zeros: int
    dense_bytes: int
    sparse_bytes: int

    @property
    def sparsity(self) -> float:
        return self.zeros / max(self.size, 1)


@dataclass(frozen=True)
class SparsityReport:
    """Sparsity of every pruned kernel and the model's weight storage.

    Sizes are for float32 weights. `sparse_bytes` counts the bitmask encoding tether
    proposes for the `.tmodel` (one bit per element, then the nonzero values):
    ceil(n / 8) + 4·nnz; dense is 4·n.
    """

    layers: tuple[LayerSparsity, ...] = field(default_factory=tuple)

    @property
    def sparsity(self) -> float:
        return sum(l.zeros for l in self.layers) / max(sum(l.size for l in self.layers), 1)

    @property
    def dense_bytes(self) -> int:
        return sum(l.dense_bytes for l in self.layers)

    @property
    def sparse_bytes(self) -> int:
        return sum(l.sparse_bytes for l in self.layers)

    @property
    def compression(self) -> float:
        """dense_bytes / sparse_bytes over the pruned kernels."""
        return self.dense_bytes / max(self.sparse_bytes, 1)


def sparsity_report(model: Any, layers: Sequence[str] | None = None) -> SparsityReport:
    """Per-kernel sparsity and bitmask-compressed size of `layers` (default all prunable)."""
    out = []
    for layer in prunable_layers(model, layers):
        w = np.asarray(_kernel(layer))
        nnz = int(np.count_nonzero(w))
        out.append(LayerSparsity(layer.name, int(w.size), int(w.size - nnz), 4 * int(w.size),
                                 math.ceil(w.size / 8) + 4 * nnz))
    return SparsityReport(tuple(out))


def strip_pruning(model: Any, callback: MagnitudePruning | None = None) -> Any:
    """A plain copy of `model` (same architecture and weights) with the callback's final
    masks applied, so the zeros are exact; the source model is left as it is."""
    import keras

    fmodel = as_functional(model)
    clone = keras.models.clone_model(fmodel)
    clone.set_weights(fmodel.get_weights())
    if callback is not None:
        for name, mask in callback.masks.items():
            k = _kernel(clone.get_layer(name))
            k.assign(np.asarray(k) * mask)
    return clone


def prune_weights(model: Any, x: np.ndarray, y: np.ndarray, *, sparsity: float, epochs: int,
                  batch_size: int = 64, learning_rate: float = 1e-3,
                  callbacks: Sequence[Any] = ()) -> Any:
    """Unstructured magnitude pruning while fine-tuning, the whole recipe: the
    `PolynomialDecay.over_steps` schedule to `sparsity` over the run's steps, `fine_tune`
    with `MagnitudePruning` (plus `callbacks`, e.g. a progress bar), then `strip_pruning`.

    `model` is trained in place; returns the plain pruned copy, whose zeros are exact.
    """
    from tether.compression.channel_pruning import fine_tune

    if epochs < 1:
        raise CompressionError(f"prune_weights needs epochs >= 1. Received: epochs={epochs}")
    steps = epochs * math.ceil(len(x) / batch_size)
    pruning = MagnitudePruning(PolynomialDecay.over_steps(sparsity, steps))
    fine_tune(model, x, y, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
              callbacks=[pruning, *callbacks])
    return strip_pruning(model, pruning)
