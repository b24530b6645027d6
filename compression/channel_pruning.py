"""Structured (channel) pruning: removes whole filters and rebuilds a smaller Keras model.

Channels are tracked through the graph as *channel spaces*: each Conv/Dense output opens a
space; BatchNormalization, activations, pooling, padding, dropout and DepthwiseConv2D
(depth multiplier 1) pass their input's space through; residual `Add` (and the other
element-wise merges) tie the spaces of their inputs into one *dependency group* that is
pruned as one; `Concatenate` on the channel axis lays spaces side by side, so each part is
pruned on its own and consumers are sliced at the right offsets; `Flatten` repeats a space
once per spatial position. Spaces that reach a model output, an unknown layer, or a layer
that mixes channels in a way we cannot slice (grouped convs, `Reshape`, softmax over
channels) are fixed.

A group's channel importance is the sum over its producers of the per-filter L1 norm, or of
|gamma| of the BatchNormalization right after a producer (`importance="bn"`), each
normalised by its mean so layers of different scale weigh the same. Every prunable group
loses the same fraction of its channels; with `target="macs"` that fraction is searched
(bisection) until the pruned model's MACs fall to `1 - fraction` of the original.

>>> import keras
>>> x = keras.Input((8, 8, 3)); y = keras.layers.Conv2D(8, 3, name="c1")(x)
>>> y = keras.layers.Conv2D(4, 1, name="c2")(y); m = keras.Model(x, y)
>>> small, report = prune_channels(m, ChannelPruningConfig(fraction=0.5))
>>> small.get_layer("c1").filters, report.macs_before, report.macs_after
(4, 8928, 4464)
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tether.compression._errors import CompressionError
from tether.compression._graph import Graph, Node, parse

__all__ = [
    "ChannelPruningConfig",
    "ChannelPruningReport",
    "count_macs",
    "dependency_groups",
    "fine_tune",
    "prune_channels",
]

logger = logging.getLogger(__name__)

_CONV = ("Conv1D", "Conv2D", "Conv3D")
_SEPARABLE = ("SeparableConv1D", "SeparableConv2D")
_DEPTHWISE = ("DepthwiseConv1D", "DepthwiseConv2D")
_PASS = {
    "ReLU", "LeakyReLU", "ELU", "PReLU_", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
    "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
    "AveragePooling3D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
    "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
    "UpSampling1D", "UpSampling2D", "UpSampling3D", "Identity",
}
_MERGE = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}
_CHANNEL_MIXING_ACTIVATIONS = {"softmax", "log_softmax"}


@dataclass(frozen=True)
class ChannelPruningConfig:
    """What to remove.

    Attributes:
        fraction: In [0, 1). With `target="channels"`, the fraction of channels removed from
            every prunable dependency group (rounded so at least `min_channels` remain);
            with `target="macs"`, the fraction of the model's MACs to remove. 0 keeps all.
        target: "channels" (default) or "macs".
        importance: "l1" (default; L1 norm of each filter) or "bn" (|gamma| of the
            BatchNormalization after a producer; producers without one fall back to L1).
        exclude: Names of layers whose output channels are kept (default none). Every name
            must be a layer of the model.
        min_channels: Fewest channels a group keeps (default 1, must be >= 1).
        round_to: Kept channel counts are rounded up to a multiple of this (default 1),
            e.g. 4 or 8 to suit SIMD widths; never above the original count. With
            `allocation="latency"` it is the step channels are removed in instead.
        allocation: "uniform" (default): every prunable group loses the same fraction.
            "latency" (needs `target="macs"`): groups lose `round_to` channels at a time,
            greedily, always where the least importance is lost per unit of *latency
            cost* saved, until the MAC target is met. The cost is MACs with every conv /
            dense output width padded up to a multiple of `tile`, which is how a GEMM
            micro-kernel with `tile` output channels per panel spends its time: cutting 64
            channels to 40 saves nothing in a 32-wide kernel, cutting to 32 halves it.
        tile: Output-channel tile (NR) of the target engine's GEMM kernel for the latency
            cost (default 1 = plain MACs): tether's fp32 kernels use 32 on AVX-512, 16 on
            AVX2 and 8 on NEON.
        max_group_fraction: With `allocation="latency"`, the most a single group may lose
            (default 0.75), so that no layer is pruned to a sliver.
    """

    fraction: float = 0.5
    target: str = "channels"
    importance: str = "l1"
    exclude: tuple[str, ...] = ()
    min_channels: int = 1
    round_to: int = 1
    allocation: str = "uniform"
    tile: int = 1
    max_group_fraction: float = 0.75

    def __post_init__(self) -> None:
        if not (0.0 <= self.fraction < 1.0) or math.isnan(self.fraction):
            raise CompressionError(
                "ChannelPruningConfig.fraction must be in [0, 1). "
                f"Received: fraction={self.fraction}")
        if self.target not in ("channels", "macs"):
            raise CompressionError(
                "ChannelPruningConfig.target must be 'channels' or 'macs'. "
                f"Received: target={self.target!r}")
        if self.importance not in ("l1", "bn"):
            raise CompressionError(
                "ChannelPruningConfig.importance must be 'l1' or 'bn'. "
                f"Received: importance={self.importance!r}")
        if self.min_channels < 1:
            raise CompressionError(
                "ChannelPruningConfig.min_channels must be >= 1. "
                f"Received: min_channels={self.min_channels}")
        if self.round_to < 1:
            raise CompressionError(
                f"ChannelPruningConfig.round_to must be >= 1. Received: round_to={self.round_to}")
        if self.allocation not in ("uniform", "latency"):
            raise CompressionError(
                "ChannelPruningConfig.allocation must be 'uniform' or 'latency'. "
                f"Received: allocation={self.allocation!r}")
        if self.allocation == "latency" and self.target != "macs":
            raise CompressionError(
                "ChannelPruningConfig.allocation='latency' needs target='macs'. "
                f"Received: target={self.target!r}")
        if self.tile < 1:
            raise CompressionError(
                f"ChannelPruningConfig.tile must be >= 1. Received: tile={self.tile}")
        if not 0.0 < self.max_group_fraction < 1.0:
            raise CompressionError(
                "ChannelPruningConfig.max_group_fraction must be in (0, 1). "
                f"Received: max_group_fraction={self.max_group_fraction}")
        object.__setattr__(self, "exclude", tuple(self.exclude))


@dataclass(frozen=True)
class ChannelPruningReport:
    """What `prune_channels` did.

    Attributes:
        macs_before, macs_after: Multiply-accumulates of one sample (conv, depthwise,
            separable and dense layers).
        params_before, params_after: Parameter counts.
        ratio: The per-group fraction of channels removed.
        channels: layer name -> (channels before, channels after) for every producer.
        groups: Each prunable dependency group as the producer layer names it ties.
        fixed: Producer layers whose channels were kept, each with the reason.
    """

    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    ratio: float
    channels: dict[str, tuple[int, int]] = field(default_factory=dict)
    groups: tuple[tuple[str, ...], ...] = ()
    fixed: dict[str, str] = field(default_factory=dict)

    @property
    def mac_reduction(self) -> float:
        """1 - macs_after / macs_before."""
        return 1.0 - self.macs_after / max(self.macs_before, 1)


# ---------------------------------------------------------------------------- analysis


@dataclass
class _Space:
    size: int
    producers: list[str] = field(default_factory=list)
    fixed: str = ""


@dataclass(frozen=True)
class _Layout:
    """Channel layout of a tensor's last axis: spaces side by side, repeated `repeat`
    times (after Flatten; position-major)."""

    segments: tuple[tuple[int, int], ...]
    repeat: int = 1

    @property
    def size(self) -> int:
        return sum(s for _, s in self.segments) * self.repeat


@dataclass
class _MacTerm:
    kind: str  # "conv" | "dense" | "depthwise" | "separable"
    coef: float
    coef2: float = 0.0
    dm: int = 1


class _Analysis:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.spaces: list[_Space] = []
        self.parent: list[int] = []
        self.layout: dict[str, _Layout] = {}
        self.in_layout: dict[str, _Layout] = {}
        self.own: dict[str, int] = {}
        self.macs: dict[str, _MacTerm] = {}
        self._run()

    # union-find over spaces
    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra

    def new_space(self, size: int, producer: str | None = None, fixed: str = "") -> int:
        self.spaces.append(_Space(size, [producer] if producer else [], fixed))
        self.parent.append(len(self.spaces) - 1)
        return len(self.spaces) - 1

    def fix(self, layout: _Layout, reason: str) -> None:
        for s, _ in layout.segments:
            if not self.spaces[s].fixed:
                self.spaces[s].fixed = reason

    def fixed_reason(self, s: int) -> str:
        root = self.find(s)
        for i in range(len(self.spaces)):
            if self.find(i) == root and self.spaces[i].fixed:
                return self.spaces[i].fixed
        return ""

    def _shape_of(self, name: str) -> tuple[int | None, ...]:
        g = self.graph
        if name in g.output_shapes:
            return g.output_shapes[name]
        for n in g.order:
            node = g.nodes[n]
            if name in node.inputs:
                return node.input_shapes[node.inputs.index(name)]
        raise CompressionError(f"layer '{name}': output shape unknown")

    def _fresh(self, name: str, reason: str) -> _Layout:
        shape = self._shape_of(name)
        size = int(shape[-1]) if shape and shape[-1] is not None else 1
        return _Layout(((self.new_space(size, None, reason), size),))

    def _run(self) -> None:
        g = self.graph
        for name in g.order:
            node = g.nodes[name]
            cls = node.class_name
            cfg = node.config
            if name in g.inputs:
                self.layout[name] = self._fresh(name, "model input")
                continue
            ins = [self.layout[i] for i in node.inputs]
            if cls not in _MERGE and cls != "Concatenate" and len(ins) != 1:
                for lay in ins:
                    self.fix(lay, f"input of multi-input layer '{name}' ({cls})")
                self.layout[name] = self._fresh(name, f"output of '{name}' ({cls})")
                continue
            lay = ins[0] if ins else _Layout(())
            self.in_layout[name] = lay
            channels_last = cfg.get("data_format", "channels_last") == "channels_last"
            if cls in _CONV + _SEPARABLE + ("Dense",):
                size = int(cfg["units"] if cls == "Dense" else cfg["filters"])
                groups = int(cfg.get("groups", 1))
                dm = int(cfg.get("depth_multiplier", 1))
                reason = ""
                if not channels_last:
                    reason = f"'{name}' is channels_first"
                elif groups != 1:
                    reason = f"'{name}' is a grouped conv (groups={groups})"
                elif cls in _SEPARABLE and dm != 1:
                    reason = f"'{name}' has depth_multiplier={dm}"
                elif lay.repeat != 1 and cls != "Dense":
                    reason = f"'{name}' reads a flattened tensor"
                if reason:
                    self.fix(lay, reason)
                self.own[name] = self.new_space(size, name)
                self.layout[name] = _Layout(((self.own[name], size),))
                self._mac_term(node)
            elif cls in _DEPTHWISE:
                dm = int(cfg.get("depth_multiplier", 1))
                if dm == 1 and channels_last and lay.repeat == 1:
                    self.layout[name] = lay
                else:
                    self.fix(lay, f"'{name}' has depth_multiplier={dm}")
                    self.layout[name] = self._fresh(name, f"output of '{name}' (depth_multiplier={dm})")
                self._mac_term(node)
            elif cls == "BatchNormalization":
                axis = cfg.get("axis", -1)
                axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
                rank = len(node.input_shapes[0])
                if axis in (-1, rank - 1) and lay.repeat == 1:
                    self.layout[name] = lay
                else:
                    self.fix(lay, f"'{name}' normalises axis {axis}")
                    self.layout[name] = self._fresh(name, f"output of '{name}'")
            elif cls in _PASS or (cls == "Activation" and cfg.get("activation")
                                  not in _CHANNEL_MIXING_ACTIVATIONS):
                if (cls.startswith(("Global", "Max", "Average", "Zero", "Crop", "UpS"))
                        and not channels_last):
                    self.fix(lay, f"'{name}' is channels_first")
                    self.layout[name] = self._fresh(name, f"output of '{name}'")
                else:
                    self.layout[name] = lay
            elif cls == "Rescaling" and np.ndim(cfg.get("scale", 1.0)) == 0 \
                    and np.ndim(cfg.get("offset", 0.0)) == 0:
                self.layout[name] = lay
            elif cls in _MERGE:
                first = ins[0]
                same = all(len(x.segments) == len(first.segments) and x.repeat == first.repeat
                           and all(a[1] == b[1] for a, b in zip(x.segments, first.segments))
                           for x in ins)
                if same:
                    for x in ins[1:]:
                        for (a, _), (b, _) in zip(first.segments, x.segments):
                            self.union(a, b)
                    self.layout[name] = first
                else:
                    for x in ins:
                        self.fix(x, f"'{name}' ({cls}) merges tensors of different layouts")
                    self.layout[name] = self._fresh(name, f"output of '{name}'")
            elif cls == "Concatenate":
                rank = len(node.input_shapes[0])
                axis = cfg.get("axis", -1)
                if axis in (-1, rank - 1) and all(x.repeat == 1 for x in ins):
                    self.layout[name] = _Layout(tuple(s for x in ins for s in x.segments))
                else:
                    for x in ins:
                        self.fix(x, f"'{name}' concatenates on axis {axis}")
                    self.layout[name] = self._fresh(name, f"output of '{name}'")
            elif cls == "Flatten" and lay.repeat == 1 and channels_last:
                shape = node.input_shapes[0]
                positions = int(np.prod([d for d in shape[1:-1]])) if len(shape) > 2 else 1
                self.layout[name] = _Layout(lay.segments, positions)
            else:
                self.fix(lay, f"'{name}' ({cls}) is not channel-aware")
                self.layout[name] = self._fresh(name, f"output of '{name}' ({cls})")
        for out in g.outputs:
            self.fix(self.layout[out], f"reaches model output '{out}'")

    def _mac_term(self, node: Node) -> None:
        cfg = node.config
        shape_out = self._shape_of(node.name)
        dims = list(shape_out[1:-1])
        if any(d is None for d in dims):
            raise CompressionError(
                f"layer '{node.name}': output shape {shape_out} has unknown spatial sizes; "
                "build the model with a fixed input size (e.g. keras.Input((96, 96, 3)))")
        spatial = float(np.prod([int(d) for d in dims if d is not None])) if dims else 1.0
        cls = node.class_name
        if cls == "Dense":
            self.macs[node.name] = _MacTerm("dense", spatial)
            return
        kernel = float(np.prod(cfg["kernel_size"]))
        if cls in _CONV:
            self.macs[node.name] = _MacTerm("conv", spatial * kernel / int(cfg.get("groups", 1)))
        elif cls in _DEPTHWISE:
            self.macs[node.name] = _MacTerm("depthwise", spatial * kernel,
                                            dm=int(cfg.get("depth_multiplier", 1)))
        else:
            self.macs[node.name] = _MacTerm("separable", spatial * kernel, spatial,
                                            dm=int(cfg.get("depth_multiplier", 1)))

    # channel counts under a keep map (root -> kept count)
    def width(self, layout: _Layout, keep: dict[int, int]) -> int:
        return sum(keep.get(self.find(s), n) for s, n in layout.segments) * layout.repeat

    def total_macs(self, keep: dict[int, int], tile: int = 1) -> int:
        """MACs under `keep`; with tile > 1 every conv/dense output width is padded up to
        a multiple of `tile` (the cost of a GEMM kernel with `tile`-wide panels)."""
        total = 0.0

        def out(name: str) -> int:
            w = self.width(self.layout[name], keep)
            return -(-w // tile) * tile

        for name, t in self.macs.items():
            c_in = self.width(self.in_layout[name], keep)
            if t.kind in ("conv", "dense"):
                total += t.coef * c_in * out(name)
            elif t.kind == "depthwise":
                total += t.coef * c_in * t.dm
            else:
                total += t.coef * c_in * t.dm + t.coef2 * c_in * t.dm * out(name)
        return round(total)

    def groups(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for s in range(len(self.spaces)):
            out.setdefault(self.find(s), []).append(s)
        return out


def _l1(layer: Any, cls: str) -> np.ndarray:
    weights = {v.name: np.asarray(v) for v in layer.weights}
    if cls in _SEPARABLE:
        w = weights["pointwise_kernel"]
    else:
        w = weights["kernel"]
    return np.abs(w).reshape(-1, w.shape[-1]).sum(axis=0)


def _importance(an: _Analysis, root: int, members: list[int], method: str) -> np.ndarray:
    g = an.graph
    size = an.spaces[root].size
    total = np.zeros(size, dtype=np.float64)
    for s in members:
        for prod in an.spaces[s].producers:
            node = g.nodes[prod]
            imp: np.ndarray | None = None
            if method == "bn":
                for c in g.consumers(prod):
                    cn = g.nodes[c]
                    if cn.class_name == "BatchNormalization" and cn.config.get("scale", True):
                        gamma = [v for v in cn.layer.weights if v.name == "gamma"]
                        if gamma:
                            imp = np.abs(np.asarray(gamma[0], dtype=np.float64))
                        break
            if imp is None:
                imp = _l1(node.layer, node.class_name).astype(np.float64)
            mean = float(imp.mean())
            total += imp / mean if mean > 0 else imp
    return total


def _keep_count(n: int, ratio: float, cfg: ChannelPruningConfig) -> int:
    k = max(cfg.min_channels, math.ceil(n * (1.0 - ratio) - 1e-9))
    k = int(math.ceil(k / cfg.round_to) * cfg.round_to)
    return min(n, k)


def _latency_allocation(an: _Analysis, prunable: dict[int, list[int]],
                        importance: dict[int, np.ndarray], cfg: ChannelPruningConfig,
                        macs0: int) -> dict[int, int]:
    """Greedy non-uniform keep counts: remove `round_to` channels (or down to the next
    whole tile) at a time from the group that loses the least (mean-normalised) importance
    per unit of tile-padded MACs saved, until MACs <= (1 - fraction) x macs0."""
    goal = (1.0 - cfg.fraction) * macs0
    step = cfg.round_to
    keep = {r: an.spaces[r].size for r in prunable}
    floor = {r: max(cfg.min_channels, math.ceil(n * (1.0 - cfg.max_group_fraction) - 1e-9))
             for r, n in keep.items()}
    ranked = {}
    for r in prunable:
        imp = importance[r]
        mean = float(imp.mean())
        ranked[r] = np.sort(imp / mean if mean > 0 else imp)  # ascending: cheapest first

    def cost(k: dict[int, int]) -> float:
        return an.total_macs(k, cfg.tile) + 1e-3 * an.total_macs(k)

    macs = an.total_macs(keep)
    current = cost(keep)
    while macs > goal:
        best: tuple[float, int, int, float] | None = None
        for r, k in keep.items():
            # one step down, or straight down to the next whole tile (a cut that pays
            # only once the width drops below a tile boundary)
            for k2 in {(k - 1) // step * step, (k - 1) // cfg.tile * cfg.tile}:
                if k2 < floor[r] or k2 < 1 or k2 % step:
                    continue
                saved = current - cost({**keep, r: k2})
                if saved <= 0:
                    continue
                n = an.spaces[r].size
                score = float(ranked[r][n - k:n - k2].sum()) / saved
                if best is None or score < best[0]:
                    best = (score, r, k2, saved)
        if best is None:
            raise CompressionError(
                f"ChannelPruningConfig.fraction={cfg.fraction} of MACs cannot be reached with "
                f"allocation='latency': every group is at its floor (max_group_fraction="
                f"{cfg.max_group_fraction}, min_channels={cfg.min_channels}); MACs "
                f"{macs} > goal {goal:.0f}; raise max_group_fraction or lower fraction")
        _, r, k2, saved = best
        keep[r] = k2
        current -= saved
        macs = an.total_macs(keep)
    return keep


def dependency_groups(model: Any) -> list[tuple[str, ...]]:
    """Producer layers whose output channels must be pruned together (residual adds
    and element-wise merges tie them), one tuple per group, fixed groups included."""
    an = _Analysis(parse(model))
    out = []
    for members in an.groups().values():
        names = tuple(p for s in members for p in an.spaces[s].producers)
        if names:
            out.append(names)
    return out


def count_macs(model: Any) -> int:
    """Multiply-accumulates of one sample through the model's Conv, DepthwiseConv,
    SeparableConv and Dense layers (BN, activations, pooling and adds not counted).

    >>> import keras
    >>> x = keras.Input((4, 4, 2)); m = keras.Model(x, keras.layers.Conv2D(3, 3)(x))
    >>> count_macs(m)  # 2x2 outputs * 3x3 kernel * 2 in * 3 out
    216
    """
    return _Analysis(parse(model)).total_macs({})


# ---------------------------------------------------------------------------- rebuild


def _in_index(an: _Analysis, layout: _Layout, kept: dict[int, np.ndarray]) -> np.ndarray:
    parts = []
    offset = 0
    for s, n in layout.segments:
        idx = kept.get(an.find(s))
        parts.append(offset + (np.arange(n) if idx is None else idx))
        offset += n
    one = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if layout.repeat == 1:
        return one
    return np.concatenate([p * offset + one for p in range(layout.repeat)])


def _slice_weights(an: _Analysis, node: Node, kept: dict[int, np.ndarray]) -> list[np.ndarray] | None:
    name, cls = node.name, node.class_name
    weights = [(v.name, np.asarray(v)) for v in node.layer.weights]
    if name not in an.in_layout:
        return None
    ii = _in_index(an, an.in_layout[name], kept)
    oi = kept.get(an.find(an.own[name])) if name in an.own else None
    out = []
    for wname, w in weights:
        if cls in _CONV + ("Dense",):
            if wname == "kernel":
                w = w[..., ii, :]
                w = w if oi is None else w[..., oi]
            elif wname == "bias" and oi is not None:
                w = w[oi]
        elif cls in _DEPTHWISE:
            dm = int(node.config.get("depth_multiplier", 1))
            if dm == 1:
                w = w[..., ii, :] if wname == "kernel" else w[ii]
        elif cls in _SEPARABLE:
            if wname == "depthwise_kernel":
                w = w[..., ii, :]
            elif wname == "pointwise_kernel":
                w = w[..., ii, :]
                w = w if oi is None else w[..., oi]
            elif wname == "bias" and oi is not None:
                w = w[oi]
        elif cls == "BatchNormalization":
            w = w[ii]
        out.append(w)
    return out


def _apply(an: _Analysis, keep: dict[int, int], importance: dict[int, np.ndarray]) -> Any:
    import keras

    g = an.graph
    kept: dict[int, np.ndarray] = {}
    for root, k in keep.items():
        if k < an.spaces[root].size:
            order = np.argsort(-importance[root], kind="stable")
            kept[root] = np.sort(order[:k])
    cfg = copy.deepcopy(g.config)
    for entry in cfg["layers"]:
        name = entry["name"]
        entry.pop("build_config", None)  # stale input shapes; layers rebuild from their inputs
        if name in an.own:
            kept_count = keep.get(an.find(an.own[name]))
            if kept_count is not None:
                key = "units" if entry["class_name"] == "Dense" else "filters"
                entry["config"][key] = int(kept_count)
    new = keras.Model.from_config(cfg)
    for name in g.order:
        node = g.nodes[name]
        if not node.layer.weights:
            continue
        sliced = _slice_weights(an, node, kept)
        if sliced is None:
            sliced = [np.asarray(v) for v in node.layer.weights]
        target = new.get_layer(name)
        for var, val in zip(target.weights, sliced):
            if tuple(var.shape) != tuple(val.shape):
                raise CompressionError(
                    f"layer '{name}' ({node.class_name}): weight '{var.name}' rebuilt with "
                    f"shape {tuple(var.shape)} but sliced to {val.shape}; this layer type is "
                    "not supported by structured pruning, add it to exclude")
            var.assign(val)
    return new


def prune_channels(model: Any, config: ChannelPruningConfig = ChannelPruningConfig()
                   ) -> tuple[Any, ChannelPruningReport]:
    """Removes the least important channels and returns a smaller Functional model.

    The source model is not changed. The result is an ordinary Keras model (layers have
    fewer filters/units, weights copied from the source) that needs fine-tuning to recover
    accuracy; see `fine_tune`.

    Args:
        model: A Keras 3 Functional or Sequential model, channels_last.
        config: What to remove (default: half the channels of every prunable group).

    Returns:
        (pruned model, report).

    Raises:
        CompressionError: an `exclude` name is not a layer of the model, the MAC target
            cannot be reached, or the model has nested/shared layers.
    """
    graph = parse(model)
    for name in config.exclude:
        if name not in graph.nodes:
            raise CompressionError(
                f"ChannelPruningConfig.exclude: model '{graph.model.name}' has no layer "
                f"'{name}'. Received: exclude={config.exclude}")
    an = _Analysis(graph)
    for name in config.exclude:
        if name in an.own:
            an.spaces[an.own[name]].fixed = "excluded"
        elif name in an.layout:
            an.fix(an.layout[name], "excluded")
    groups = an.groups()
    prunable: dict[int, list[int]] = {}
    fixed: dict[str, str] = {}
    for root, members in groups.items():
        producers = [p for s in members for p in an.spaces[s].producers]
        if not producers:
            continue
        reason = next((an.spaces[s].fixed for s in members if an.spaces[s].fixed), "")
        sizes = {an.spaces[s].size for s in members}
        if len(sizes) != 1:
            reason = reason or f"tied spaces of sizes {sorted(sizes)}"
        if reason:
            for p in producers:
                fixed[p] = reason
        else:
            prunable[root] = members
    importance = {r: _importance(an, r, m, config.importance) for r, m in prunable.items()}
    macs0 = an.total_macs({})

    def keep_for(ratio: float) -> dict[int, int]:
        return {r: _keep_count(an.spaces[r].size, ratio, config) for r in prunable}

    ratio = config.fraction
    if config.allocation == "latency" and config.fraction > 0:
        keep = _latency_allocation(an, prunable, importance, config, macs0)
        ratio = 1.0 - sum(keep.values()) / max(sum(an.spaces[r].size for r in prunable), 1)
    elif config.target == "macs" and config.fraction > 0:
        goal = (1.0 - config.fraction) * macs0
        floor = an.total_macs(keep_for(1.0 - 1e-9))
        if floor > goal:
            raise CompressionError(
                f"ChannelPruningConfig.fraction={config.fraction} of MACs cannot be reached: "
                f"pruning every prunable group to min_channels={config.min_channels} removes "
                f"{1 - floor / macs0:.3f} of MACs ({len(fixed)} producers are fixed); lower "
                "fraction or min_channels")
        lo, hi = 0.0, 1.0 - 1e-9
        for _ in range(50):
            mid = (lo + hi) / 2
            if an.total_macs(keep_for(mid)) <= goal:
                hi = mid
            else:
                lo = mid
        ratio = hi
    if not (config.allocation == "latency" and config.fraction > 0):
        keep = keep_for(ratio)
    pruned = _apply(an, keep, importance)
    channels = {}
    for name, s in an.own.items():
        root = an.find(s)
        channels[name] = (an.spaces[s].size, keep.get(root, an.spaces[s].size))
    report = ChannelPruningReport(
        macs_before=macs0, macs_after=count_macs(pruned),
        params_before=int(graph.model.count_params()), params_after=int(pruned.count_params()),
        ratio=float(ratio), channels=channels,
        groups=tuple(tuple(p for s in m for p in an.spaces[s].producers)
                     for m in prunable.values()),
        fixed=fixed)
    logger.info("pruned %s: MACs %d -> %d, params %d -> %d", graph.model.name,
                report.macs_before, report.macs_after, report.params_before,
                report.params_after)
    return pruned, report


def fine_tune(model: Any, x: np.ndarray, y: np.ndarray, *, epochs: int = 3,
              batch_size: int = 64, learning_rate: float | Any = 1e-3,
              callbacks: Sequence[Any] = (), validation_data: tuple | None = None,
              verbose: int = 0) -> Any:
    """Fine-tunes `model` in place with Adam on sparse categorical cross-entropy.

    The loss reads logits or probabilities according to the last layer's activation
    (softmax -> probabilities). Returns the Keras `History`.

    Raises:
        CompressionError: `epochs < 0`, `batch_size < 1` or `learning_rate <= 0`.
    """
    import keras

    if epochs < 0 or batch_size < 1 or (isinstance(learning_rate, (int, float))
                                        and not learning_rate > 0):
        raise CompressionError(
            "fine_tune: epochs must be >= 0, batch_size >= 1 and learning_rate > 0. "
            f"Received: epochs={epochs}, batch_size={batch_size}, learning_rate={learning_rate}")
    from tether.compression._common import outputs_probabilities

    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=not outputs_probabilities(model)),
                  metrics=["accuracy"])
    return model.fit(x, y, epochs=epochs, batch_size=batch_size, callbacks=list(callbacks),
                     validation_data=validation_data, verbose=verbose)
