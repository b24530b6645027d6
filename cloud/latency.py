"""Per-device latency model of a search space, from kernel timings measured on the device.

Every subnet of a space is a chain of a few kinds of *pieces*, each the unit the converter
fuses into engine ops: the stem (3x3 conv + BN + ReLU6 -> one CONV_2D), an inverted-residual
block (expand CONV_2D+ReLU6, DEPTHWISE+ReLU6, project CONV_2D, ADD), the head (CONV_2D+ReLU6)
and the classifier (MEAN, FULLY_CONNECTED, SOFTMAX). A piece is fixed by its input size and
widths, kernel and stride, so a space has few distinct ones (`configurations`).

`write_probe_bundle` turns each into a tiny `.tmodel` (built with random weights: the engine's
speed does not depend on their values) and writes a manifest; `tether-probe` times them on the
device (`tether.device.profile.probe`) and gives a `LatencyTable`. `LatencyModel.predict`
sums a subnet's pieces from that table, with a linear correction (`fit`) learned from a few
subnets measured end to end (`probe_space` times those in the same run as the pieces, so a
machine's slow stretches cannot come between them); `naive` sums the single ops instead
(each conv, depthwise and add alone), the usual per-operator look-up table, reported beside
it.

A point prediction is exceeded by half the subnets it is right about, so a search that fills a
budget up to the prediction misses the budget half the time. `fit` also learns a guard band
from the same subnets (split-conformal: the leave-one-out relative errors' 95% quantile), and
`bound` is the prediction raised by it: the latency a subnet stays under in 95% of cases, which
is what constraints are checked against.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from tether.cloud.space import Arch, SearchSpace
from tether.errors import TetherError

__all__ = ["LatencyError", "LatencyModel", "configurations", "measure_subnets", "op_keys",
           "piece_keys", "probe_space", "write_probe_bundle"]


class LatencyError(TetherError, ValueError):
    """A latency table that lacks what a prediction needs (the message names the key)."""


Spec = tuple[Any, ...]


def _walk(arch: Arch, space: SearchSpace) -> list[Spec]:
    """The fused pieces of `arch`, in order, as specs."""
    out: list[Spec] = [("stem", arch.resolution, space.input_channels, space.stem_channels,
                        space.stem_stride)]
    out += [("block", b.size, b.cin, b.mid, b.cout, b.kernel, b.stride, b.residual)
            for b in arch.blocks(space)]
    size = arch.head_size(space)
    out.append(("head", size, space.stages[-1].channels, space.head_channels))
    out.append(("classifier", size, space.head_channels, space.num_classes))
    return out


def _ops(spec: Spec) -> list[Spec]:
    """The single engine ops of one piece (for the naive per-op sum)."""
    kind = spec[0]
    if kind == "stem":
        _, size, cin, cout, stride = spec
        return [("conv", size, cin, cout, 3, stride, True)]
    if kind == "block":
        _, size, cin, mid, cout, k, stride, residual = spec
        out_size = math.ceil(size / stride)
        ops: list[Spec] = [("conv", size, cin, mid, 1, 1, True), ("dw", size, mid, k, stride),
                           ("conv", out_size, mid, cout, 1, 1, False)]
        return ops + ([("add", out_size, cout)] if residual else [])
    if kind == "head":
        _, size, cin, cout = spec
        return [("conv", size, cin, cout, 1, 1, True)]
    return [spec]  # the classifier is pooling + dense + softmax, measured as one


def _key(spec: Spec) -> str:
    kind = spec[0]
    if kind == "stem":
        _, size, cin, cout, stride = spec
        return f"stem:{size}:{cin}>{cout}:s{stride}"
    if kind == "block":
        _, size, cin, mid, cout, k, stride, residual = spec
        return f"block:{size}:{cin}>{mid}>{cout}:k{k}:s{stride}{':res' if residual else ''}"
    if kind == "head":
        _, size, cin, cout = spec
        return f"head:{size}:{cin}>{cout}"
    if kind == "classifier":
        _, size, cin, cout = spec
        return f"classifier:{size}:{cin}>{cout}"
    if kind == "conv":
        _, size, cin, cout, k, stride, act = spec
        return f"conv:{size}:{cin}>{cout}:k{k}:s{stride}{':relu6' if act else ''}"
    if kind == "dw":
        _, size, c, k, stride = spec
        return f"dw:{size}:{c}:k{k}:s{stride}:relu6"
    _, size, c = spec
    return f"add:{size}:{c}"


def piece_keys(arch: Arch, space: SearchSpace) -> list[str]:
    """Latency-table keys of `arch`'s fused pieces, in order."""
    return [_key(s) for s in _walk(arch, space)]


def op_keys(arch: Arch, space: SearchSpace) -> list[str]:
    """Latency-table keys of `arch`'s single ops, in order (the naive decomposition)."""
    return [_key(o) for s in _walk(arch, space) for o in _ops(s)]


def configurations(space: SearchSpace, *, naive: bool = True) -> dict[str, Spec]:
    """Every piece (and, with `naive`, every single op) any subnet of `space` can hold:
    key -> spec."""
    specs: dict[str, Spec] = {}

    def add(spec: Spec) -> None:
        specs.setdefault(_key(spec), spec)
        if naive:
            for op in _ops(spec):
                specs.setdefault(_key(op), op)

    for r in space.resolutions:
        size = math.ceil(r / space.stem_stride)
        add(("stem", r, space.input_channels, space.stem_channels, space.stem_stride))
        cin = space.stem_channels
        for stage in space.stages:
            for j in range(min(stage.blocks, 2)):  # blocks after the first share one shape
                stride = stage.stride if j == 0 else 1
                c_in = cin if j == 0 else stage.channels
                for e in space.expand_ratios:
                    for k in space.kernel_sizes:
                        add(("block", size if j == 0 else math.ceil(size / stage.stride), c_in,
                             space.hidden(c_in, e), stage.channels, k, stride,
                             stride == 1 and c_in == stage.channels))
            size = math.ceil(size / stage.stride)
            cin = stage.channels
        add(("head", size, cin, space.head_channels))
        add(("classifier", size, space.head_channels, space.num_classes))
    return specs


def _model(spec: Spec) -> Any:
    """A Keras model of one piece or op (random weights)."""
    import keras

    from tether.cloud.supernet import block_layers

    L = keras.layers
    kind = spec[0]
    if kind == "stem":
        _, size, cin, cout, stride = spec
        x = keras.Input((size, size, cin))
        conv = L.Conv2D(cout, 3, strides=stride, padding="same", use_bias=False)(x)
        return keras.Model(x, L.ReLU(6.0)(L.BatchNormalization()(conv)))
    if kind == "block":
        _, size, cin, mid, cout, k, stride, residual = spec
        x = keras.Input((size, size, cin))
        return keras.Model(x, block_layers(x, mid, cout, k, stride, residual, "b")[0])
    if kind in ("head", "conv"):
        if kind == "head":
            _, size, cin, cout = spec
            k, stride, act = 1, 1, True
        else:
            _, size, cin, cout, k, stride, act = spec
        x = keras.Input((size, size, cin))
        y = L.BatchNormalization()(L.Conv2D(cout, k, strides=stride, padding="same",
                                            use_bias=False)(x))
        return keras.Model(x, L.ReLU(6.0)(y) if act else y)
    if kind == "classifier":
        _, size, cin, cout = spec
        x = keras.Input((size, size, cin))
        return keras.Model(x, L.Dense(cout, activation="softmax")(
            L.GlobalAveragePooling2D()(x)))
    if kind == "dw":
        _, size, c, k, stride = spec
        x = keras.Input((size, size, c))
        y = L.DepthwiseConv2D(k, strides=stride, padding="same", use_bias=False)(x)
        return keras.Model(x, L.ReLU(6.0)(L.BatchNormalization()(y)))
    _, size, c = spec
    a, b = keras.Input((size, size, c)), keras.Input((size, size, c))
    return keras.Model([a, b], L.Add()([a, b]))


def _write_bundle(folder: Path, models: Iterable[tuple[str, Callable[[], Any]]],
                  on_model: Callable[[int], None] | None = None) -> Path:
    from tether._internal.files import atomic_write_text
    from tether.converter import convert

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    lines = ["# tether-probe manifest: KEY PATH (relative to this file)"]
    for i, (key, build) in enumerate(models):
        if any(c.isspace() for c in key):
            raise LatencyError(f"probe key {key!r} has a space")
        name = f"models/{i:05d}.tmodel"
        convert(build(), sparse=None).save(folder / name)
        lines.append(f"{key} {name}")
        if on_model is not None:
            on_model(i + 1)
    manifest = folder / "manifest.txt"
    atomic_write_text(manifest, "\n".join(lines) + "\n")
    return manifest


def _piece_models(space: SearchSpace, naive: bool) -> list[tuple[str, Callable[[], Any]]]:
    import keras

    keras.utils.set_random_seed(0)
    return [(k, partial(_model, s)) for k, s in configurations(space, naive=naive).items()]


def _subnet_models(net: Any, archs: Sequence[Arch], prefix: str = ""
                   ) -> list[tuple[str, Callable[[], Any]]]:
    from tether.cloud.supernet import extract

    unique = {a.key(): a for a in archs}
    return [(prefix + k, partial(extract, net, a)) for k, a in unique.items()]


def write_probe_bundle(space: SearchSpace, folder: str | Path, *, naive: bool = True,
                       on_model: Callable[[int], None] | None = None) -> Path:
    """Writes one `.tmodel` per configuration of `space` and `manifest.txt` into `folder`
    (copy it to a device and run `tether-probe folder/manifest.txt`). Returns the manifest."""
    return _write_bundle(Path(folder), _piece_models(space, naive), on_model)


def measure_subnets(net: Any, archs: Sequence[Arch], folder: str | Path, *, threads: int = 1,
                    warmup: int = 5, runs: int = 30, min_time_ms: int = 50, rounds: int = 1,
                    on_model: Callable[[int], None] | None = None) -> dict[str, float]:
    """End-to-end median latency (ms) of each subnet of supernet `net` on this device:
    extracted, converted and timed by tether-probe (`tether.device.profile.probe`'s
    `min_time_ms` and `rounds`). Returns arch.key() -> ms."""
    from tether.device.profile import probe

    manifest = _write_bundle(Path(folder), _subnet_models(net, archs), on_model)
    return probe(manifest, threads=threads, warmup=warmup, runs=runs, min_time_ms=min_time_ms,
                 rounds=rounds).median_ms


_SUBNET = "subnet="


def probe_space(space: SearchSpace, folder: str | Path, net: Any = None,
                archs: Sequence[Arch] = (), *, naive: bool = True, threads: int = 1,
                warmup: int = 5, runs: int = 30, min_time_ms: int = 50,
                rounds: int | None = None, on_model: Callable[[int], None] | None = None
                ) -> tuple[Any, dict[str, float]]:
    """Times every piece of `space` and, in the same interleaved run, subnets `archs` of
    supernet `net` end to end on this device (one bundle in `folder`): a machine that runs
    slow for a while then slows pieces and subnets alike, and the correction `fit` learns from
    the subnets stays true of the table. `rounds` defaults to 5 at one thread and 1 at more
    (there a 10 ms slice's median wanders with the pool's hand-offs: 3-68% of subnets within
    10% against 95-100% with one 50 ms run each, measured here). Returns the pieces'
    `LatencyTable` and arch.key() -> ms."""
    from tether.device.profile import probe

    if rounds is None:
        rounds = 5 if threads == 1 else 1
    models = _piece_models(space, naive)
    if archs:
        models += _subnet_models(net, archs, _SUBNET)
    table = probe(_write_bundle(Path(folder), models, on_model), threads=threads,
                  warmup=warmup, runs=runs, min_time_ms=min_time_ms, rounds=rounds)
    measured = {k[len(_SUBNET):]: ms for k, ms in table.median_ms.items()
                if k.startswith(_SUBNET)}
    for column in (table.median_ms, table.min_ms, table.p90_ms):  # the table: pieces only
        for key in [k for k in column if k.startswith(_SUBNET)]:
            del column[key]
    return table, measured


@dataclass
class LatencyModel:
    """Predicted latency of a space's subnets on one device.

    Attributes:
        space: the search space.
        table: the device's `LatencyTable` (from a probe of `write_probe_bundle`'s models).
        scale, offset: the correction predict() applies to the sum of pieces (ms =
            scale * sum + offset); the table's own (fitted when it was probed) unless given.
        margin: the guard band bound() adds (a fraction of the prediction); the table's own
            unless given.
    """

    space: SearchSpace
    table: Any
    scale: float | None = None
    offset: float | None = None
    margin: float | None = None

    def __post_init__(self) -> None:
        if self.scale is None:
            self.scale = float(getattr(self.table, "scale", 1.0))
        if self.offset is None:
            self.offset = float(getattr(self.table, "offset", 0.0))
        if self.margin is None:
            self.margin = float(getattr(self.table, "margin", 0.0))

    def _sum(self, keys: list[str]) -> float:
        table = self.table.median_ms
        missing = [k for k in keys if k not in table]
        if missing:
            raise LatencyError(f"latency table of {self.table.device_id} has no entry "
                               f"'{missing[0]}' ({len(missing)} missing); probe this device "
                               "with this search space's bundle")
        return float(sum(table[k] for k in keys))

    def pieces_sum(self, arch: Arch) -> float:
        """Sum of the table's fused pieces of `arch` (ms), uncorrected."""
        return self._sum(piece_keys(arch, self.space))

    def predict(self, arch: Arch) -> float:
        """Predicted end-to-end latency of `arch` in ms."""
        return float(self.scale) * self.pieces_sum(arch) + float(self.offset)  # type: ignore[arg-type]

    def bound(self, arch: Arch) -> float:
        """The latency `arch` stays under in 95% of cases (ms): the prediction raised by the
        fitted guard band."""
        return self.predict(arch) * (1.0 + float(self.margin))  # type: ignore[arg-type]

    def naive(self, arch: Arch) -> float:
        """The per-op look-up sum for `arch` in ms (every op timed alone, no correction)."""
        return self._sum(op_keys(arch, self.space))

    def fit(self, archs: Sequence[Arch], measured_ms: Sequence[float], *,
            coverage: float = 0.95) -> LatencyModel:
        """Learns scale and offset by least squares on subnets measured end to end (at
        least two), in relative terms (each subnet's error as a fraction of its latency, the
        measure budgets are set in; so the largest subnet does not outweigh the rest), and
        the guard band `margin` (five or more subnets; else 0): the `coverage` quantile of the
        relative errors each subnet gets from a fit without it, taken split-conformally (the
        ceil((n + 1) * coverage)-th smallest of n, the largest when that is past n), so a new
        subnet exceeds `bound` with probability at most 1 - coverage when the device behaves
        as it did during the fit. Returns self."""
        if len(archs) < 2 or len(archs) != len(measured_ms):
            raise LatencyError("fit needs two or more subnets and one measurement each")
        sums = np.array([self.pieces_sum(a) for a in archs])
        y = np.asarray(measured_ms, float)
        if np.any(y <= 0):
            raise LatencyError("fit needs positive measured latencies")
        # Rows divided by the measured latency: ordinary least squares on (sum/y, 1/y) -> 1.
        design = np.stack([sums, np.ones_like(sums)], axis=1) / y[:, None]
        (scale, offset), *_ = np.linalg.lstsq(design, np.ones_like(y), rcond=None)
        self.scale, self.offset = float(scale), float(offset)
        self.margin = 0.0
        if len(y) >= 5:
            # Leave-one-out fits of a least-squares problem: t - e / (1 - h), here in units of
            # each subnet's own latency (t = 1).
            hat = np.einsum("ij,jk,ik->i", design, np.linalg.pinv(design.T @ design), design)
            resid = 1.0 - design @ np.array([scale, offset])
            loo = 1.0 - resid / np.maximum(1.0 - hat, 1e-9)
            rel = np.sort(1.0 / np.maximum(loo, 1e-12) - 1.0)
            k = min(len(rel), math.ceil((len(rel) + 1) * coverage))
            self.margin = max(0.0, float(rel[k - 1]))
        self.table.scale, self.table.offset = self.scale, self.offset
        self.table.margin = self.margin
        return self
