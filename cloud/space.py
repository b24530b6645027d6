"""The search space of an elastic supernet and the architectures (subnets) inside it.

A space is MobileNetV2-style: a stem convolution, stages of inverted-residual blocks, a 1x1
head convolution, global average pooling and a classifier. Four dimensions are elastic, as in
Once-for-All: the input resolution, the depth of each stage (its first `d` blocks run), and
per block the expand ratio (the hidden width is a prefix of the largest) and the depthwise
kernel size (smaller kernels are the centre of the largest).

`SearchSpace` is frozen and has a TOML/JSON form (`to_dict` / `from_dict`, `load` / `save`);
`Arch` is one point of it with a canonical encoding (`encode`), exact parameter and MAC
counts (`params`, `macs`, equal to what the extracted Keras model counts) and a stable key.

>>> space = SearchSpace.default()
>>> space.largest().depths, space.smallest().resolution
((3, 3, 3), 20)
>>> space.largest().params(space) > space.smallest().params(space)
True
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tether.errors import TetherError

__all__ = ["Arch", "Block", "SearchSpace", "SpaceError", "Stage", "as_arch", "make_divisible"]


class SpaceError(TetherError, ValueError):
    """A search space or architecture that is not well formed (the message names the field)."""


def make_divisible(value: float, divisor: int = 8) -> int:
    """`value` rounded to the nearest multiple of `divisor`, never below `divisor` nor below
    90% of `value` (MobileNet's channel rounding).

    >>> make_divisible(16 * 6), make_divisible(24 * 3), make_divisible(4.0)
    (96, 72, 8)
    """
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if out < 0.9 * value:
        out += divisor
    return out


@dataclass(frozen=True)
class Stage:
    """A run of inverted-residual blocks with one output width.

    Attributes:
        channels: output channels of every block of the stage.
        blocks: the most blocks the stage has (its largest depth).
        stride: stride of the stage's first block (1 or 2); the others have stride 1.
    """

    channels: int
    blocks: int
    stride: int = 1


@dataclass(frozen=True)
class Block:
    """One active block's choices: expand ratio and depthwise kernel size."""

    expand: float
    kernel: int


@dataclass(frozen=True)
class SearchSpace:
    """An elastic MobileNetV2-style space.

    Attributes:
        stages: the stages, in order.
        depths: blocks a stage may run (each <= the stage's `blocks`; a stage whose `blocks`
            is smaller than a choice runs at most `blocks`).
        expand_ratios: hidden-width multipliers of a block.
        kernel_sizes: depthwise kernel sizes (odd).
        resolutions: input sizes (square) the subnet may run at.
        input_channels: channels of the input image (1 for MNIST, 3 for RGB).
        num_classes: classifier width.
        stem_channels: output channels of the stem (3x3, stride `stem_stride`).
        stem_stride: stride of the stem (1 or 2).
        head_channels: output channels of the 1x1 head convolution.
        divisor: hidden widths are rounded to a multiple of this (`make_divisible`).
    """

    stages: tuple[Stage, ...]
    depths: tuple[int, ...]
    expand_ratios: tuple[float, ...]
    kernel_sizes: tuple[int, ...]
    resolutions: tuple[int, ...]
    input_channels: int = 3
    num_classes: int = 10
    stem_channels: int = 16
    stem_stride: int = 2
    head_channels: int = 64
    divisor: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(
            s if isinstance(s, Stage) else Stage(**s) for s in self.stages))
        for name in ("depths", "expand_ratios", "kernel_sizes", "resolutions"):
            values = tuple(sorted(set(getattr(self, name))))
            object.__setattr__(self, name, values)
            if not values:
                raise SpaceError(f"SearchSpace.{name} must not be empty")
        if not self.stages:
            raise SpaceError("SearchSpace.stages must hold at least one stage")
        for i, s in enumerate(self.stages):
            if s.channels < 1 or s.blocks < 1 or s.stride not in (1, 2):
                raise SpaceError(f"SearchSpace.stages[{i}]: channels and blocks must be >= 1 "
                                 f"and stride 1 or 2. Received: {s}")
        if min(self.depths) < 1:
            raise SpaceError(f"SearchSpace.depths must be >= 1. Received: {self.depths}")
        if min(self.expand_ratios) <= 0:
            raise SpaceError(f"SearchSpace.expand_ratios must be > 0. Received: "
                             f"{self.expand_ratios}")
        if any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            raise SpaceError(f"SearchSpace.kernel_sizes must be odd and >= 1. Received: "
                             f"{self.kernel_sizes}")
        if min(self.resolutions) < 4:
            raise SpaceError(f"SearchSpace.resolutions must be >= 4. Received: "
                             f"{self.resolutions}")
        for name in ("input_channels", "num_classes", "stem_channels", "head_channels",
                     "divisor"):
            if getattr(self, name) < 1:
                raise SpaceError(f"SearchSpace.{name} must be >= 1. Received: "
                                 f"{getattr(self, name)}")
        if self.stem_stride not in (1, 2):
            raise SpaceError(f"SearchSpace.stem_stride must be 1 or 2. Received: "
                             f"{self.stem_stride}")

    # ----- presets -----

    @classmethod
    def default(cls, input_channels: int = 1, num_classes: int = 10) -> SearchSpace:
        """The small space sized for `mnist5k` (28x28x1): 3 stages of up to 3 blocks, depth
        {1, 2, 3}, expand {2, 3, 4}, kernel {3, 5}, resolution {20, 24, 28}."""
        return cls(stages=(Stage(24, 3, 2), Stage(32, 3, 2), Stage(48, 3, 1)),
                   depths=(1, 2, 3), expand_ratios=(2, 3, 4), kernel_sizes=(3, 5),
                   resolutions=(20, 24, 28), input_channels=input_channels,
                   num_classes=num_classes, stem_channels=16, stem_stride=2, head_channels=64)

    @classmethod
    def seed(cls, num_classes: int = 1000) -> SearchSpace:
        """The chapter's space: 5 stages of up to 4 blocks, depth {2, 3, 4}, expand {3, 4, 6},
        kernel {3, 5, 7}, resolution 128-224 in steps of 4 (RGB; OFA's MobileNetV3 widths)."""
        return cls(stages=(Stage(24, 4, 2), Stage(40, 4, 2), Stage(80, 4, 2), Stage(112, 4, 1),
                           Stage(160, 4, 2)),
                   depths=(2, 3, 4), expand_ratios=(3, 4, 6), kernel_sizes=(3, 5, 7),
                   resolutions=tuple(range(128, 225, 4)), input_channels=3,
                   num_classes=num_classes, stem_channels=16, stem_stride=2, head_channels=1280)

    # ----- derived sizes -----

    def stage_depths(self, i: int) -> tuple[int, ...]:
        """The depths stage `i` may run (the space's choices, capped by its blocks)."""
        return tuple(sorted({min(d, self.stages[i].blocks) for d in self.depths}))

    def stage_inputs(self) -> list[int]:
        """Input channels of each stage's first block."""
        return [self.stem_channels] + [s.channels for s in self.stages[:-1]]

    def hidden(self, cin: int, expand: float) -> int:
        """Hidden width of a block with `cin` inputs at expand ratio `expand`."""
        return make_divisible(cin * expand, self.divisor)

    def max_hidden(self, cin: int) -> int:
        return self.hidden(cin, max(self.expand_ratios))

    # ----- architectures -----

    def largest(self) -> Arch:
        """Every dimension at its largest."""
        return self._uniform(max(self.resolutions), None, max(self.expand_ratios),
                             max(self.kernel_sizes))

    def smallest(self) -> Arch:
        """Every dimension at its smallest."""
        return self._uniform(min(self.resolutions), 0, min(self.expand_ratios),
                             min(self.kernel_sizes))

    def _uniform(self, resolution: int, depth_index: int | None, expand: float,
                 kernel: int) -> Arch:
        stages = []
        for i in range(len(self.stages)):
            choices = self.stage_depths(i)
            d = choices[-1] if depth_index is None else choices[depth_index]
            stages.append(tuple(Block(expand, kernel) for _ in range(d)))
        return Arch(resolution, tuple(stages))

    def sample(self, rng: random.Random, *, kernel: bool = True, depth: bool = True,
               expand: bool = True, resolution: bool = True) -> Arch:
        """A random architecture; a dimension switched off stays at its largest (how
        progressive shrinking opens one dimension after another)."""
        largest = self.largest()
        res = rng.choice(self.resolutions) if resolution else largest.resolution
        stages = []
        for i in range(len(self.stages)):
            d = rng.choice(self.stage_depths(i)) if depth else self.stage_depths(i)[-1]
            stages.append(tuple(
                Block(rng.choice(self.expand_ratios) if expand else max(self.expand_ratios),
                      rng.choice(self.kernel_sizes) if kernel else max(self.kernel_sizes))
                for _ in range(d)))
        return Arch(res, tuple(stages))

    def validate(self, arch: Arch) -> None:
        """Raises SpaceError naming the first choice of `arch` the space does not offer."""
        if arch.resolution not in self.resolutions:
            raise SpaceError(f"resolution {arch.resolution} is not one of {self.resolutions}")
        if len(arch.stages) != len(self.stages):
            raise SpaceError(f"the architecture has {len(arch.stages)} stages; the space has "
                             f"{len(self.stages)}")
        for i, blocks in enumerate(arch.stages):
            if len(blocks) not in self.stage_depths(i):
                raise SpaceError(f"stage {i}: depth {len(blocks)} is not one of "
                                 f"{self.stage_depths(i)}")
            for j, b in enumerate(blocks):
                if b.expand not in self.expand_ratios:
                    raise SpaceError(f"stage {i} block {j}: expand {b.expand} is not one of "
                                     f"{self.expand_ratios}")
                if b.kernel not in self.kernel_sizes:
                    raise SpaceError(f"stage {i} block {j}: kernel {b.kernel} is not one of "
                                     f"{self.kernel_sizes}")

    def size(self) -> int:
        """How many distinct architectures the space holds."""
        per_block = len(self.expand_ratios) * len(self.kernel_sizes)
        total = len(self.resolutions)
        for i in range(len(self.stages)):
            total *= sum(per_block ** d for d in self.stage_depths(i))
        return total

    # ----- TOML / JSON -----

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stages"] = [asdict(s) for s in self.stages]
        for name in ("depths", "expand_ratios", "kernel_sizes", "resolutions"):
            d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "search space") -> SearchSpace:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SpaceError(f"{where}: unknown field(s) {unknown}; the fields are "
                             f"{sorted(known)}")
        missing = [f for f in ("stages", "depths", "expand_ratios", "kernel_sizes",
                               "resolutions") if f not in d]
        if missing:
            raise SpaceError(f"{where}: missing field(s) {missing}")
        try:
            stages = tuple(Stage(**s) for s in d["stages"])
            rest: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                    for k, v in d.items() if k != "stages"}
            return cls(stages=stages, **rest)
        except TypeError as exc:
            raise SpaceError(f"{where}: {exc}") from None

    def save(self, path: str | Path) -> None:
        """Writes the space as TOML (`.toml`) or JSON (any other suffix), whole or not at all."""
        from tether._internal.files import atomic_write_text

        path = Path(path)
        if path.suffix == ".toml":
            import tomli_w

            atomic_write_text(path, tomli_w.dumps(self.to_dict()))
        else:
            atomic_write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> SearchSpace:
        """Reads a space from TOML (`.toml`) or JSON."""
        path = Path(path)
        text = path.read_text()
        try:
            if path.suffix == ".toml":
                import tomllib

                d = tomllib.loads(text)
            else:
                d = json.loads(text)
        except ValueError as exc:
            raise SpaceError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'}"
                             f" ({exc})") from None
        return cls.from_dict(d, str(path))


@dataclass(frozen=True)
class BlockShape:
    """One active block of an architecture: where it is and its shapes."""

    stage: int
    index: int
    size: int  # input height = width
    cin: int
    mid: int
    cout: int
    kernel: int
    stride: int

    @property
    def out_size(self) -> int:
        return _strided(self.size, self.stride)

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.cin == self.cout


@dataclass(frozen=True)
class Arch:
    """One subnet: its resolution and, per stage, the choices of its active blocks.

    Attributes:
        resolution: input size (square).
        stages: per stage, one `Block` per active block (the stage's depth is its length).
    """

    resolution: int
    stages: tuple[tuple[Block, ...], ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(
            tuple(b if isinstance(b, Block) else Block(**b) for b in blocks)
            for blocks in self.stages))

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.stages)

    def key(self) -> str:
        """A short stable text form: `r28-d3.3.3-e444.444.444-k555.555.555`."""
        def fmt(v: float) -> str:
            return str(int(v)) if float(v).is_integer() else str(v)
        return (f"r{self.resolution}-d{'.'.join(map(str, self.depths))}"
                f"-e{'.'.join(''.join(fmt(b.expand) for b in s) for s in self.stages)}"
                f"-k{'.'.join(''.join(str(b.kernel) for b in s) for s in self.stages)}")

    def to_dict(self) -> dict[str, Any]:
        return {"resolution": self.resolution,
                "stages": [[{"expand": b.expand, "kernel": b.kernel} for b in s]
                           for s in self.stages]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Arch:
        try:
            return cls(int(d["resolution"]), tuple(
                tuple(Block(float(b["expand"]), int(b["kernel"])) for b in s)
                for s in d["stages"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise SpaceError(f"architecture: malformed ({exc!r}); expected "
                             "{'resolution': int, 'stages': [[{'expand', 'kernel'}, ...]]}"
                             ) from None

    def encode(self, space: SearchSpace) -> list[float]:
        """A fixed-length vector for predictors: resolution one-hot, then per block slot of
        the largest network (inactive slots all zero) expand one-hot and kernel one-hot, then
        per stage depth one-hot."""
        vec = [float(self.resolution == r) for r in space.resolutions]
        for i, stage in enumerate(space.stages):
            blocks = self.stages[i]
            for j in range(stage.blocks):
                if j < len(blocks):
                    vec += [float(blocks[j].expand == e) for e in space.expand_ratios]
                    vec += [float(blocks[j].kernel == k) for k in space.kernel_sizes]
                else:
                    vec += [0.0] * (len(space.expand_ratios) + len(space.kernel_sizes))
            vec += [float(len(blocks) == d) for d in space.stage_depths(i)]
        return vec

    # ----- exact counts of the extracted model -----

    def blocks(self, space: SearchSpace) -> list[BlockShape]:
        """Every active block with its shapes, in order."""
        out = []
        size = _strided(self.resolution, space.stem_stride)
        cin = space.stem_channels
        for i, blocks in enumerate(self.stages):
            stage = space.stages[i]
            for j, b in enumerate(blocks):
                stride = stage.stride if j == 0 else 1
                out.append(BlockShape(i, j, size, cin, space.hidden(cin, b.expand),
                                      stage.channels, b.kernel, stride))
                size = _strided(size, stride)
                cin = stage.channels
        return out

    def head_size(self, space: SearchSpace) -> int:
        """Spatial size at the head (after the stem and every stage's stride)."""
        size = _strided(self.resolution, space.stem_stride)
        for stage in space.stages:
            size = _strided(size, stage.stride)
        return size

    def layers(self, space: SearchSpace) -> list[tuple[str, int, int, int, int, int]]:
        """(kind, kernel, cin, cout, stride, input size) of every convolution and the dense
        layer, in order; kind is "conv", "dw" or "dense"."""
        out = [("conv", 3, space.input_channels, space.stem_channels, space.stem_stride,
                self.resolution)]
        for b in self.blocks(space):
            out += [("conv", 1, b.cin, b.mid, 1, b.size), ("dw", b.kernel, b.mid, b.mid, b.stride,
                                                         b.size),
                    ("conv", 1, b.mid, b.cout, 1, b.out_size)]
        cin = space.stages[-1].channels
        out.append(("conv", 1, cin, space.head_channels, 1, self.head_size(space)))
        out.append(("dense", 1, space.head_channels, space.num_classes, 1, 1))
        return out

    def params(self, space: SearchSpace) -> int:
        """Parameters of the extracted model, as Keras counts them (batch-norm moving
        statistics included): convolutions without bias, each followed by a batch norm of
        4 x channels; the dense layer with its bias."""
        total = 0
        for kind, k, cin, cout, _, _ in self.layers(space):
            if kind == "dense":
                total += cin * cout + cout
            elif kind == "dw":
                total += k * k * cin + 4 * cin
            else:
                total += k * k * cin * cout + 4 * cout
        return total

    def macs(self, space: SearchSpace) -> int:
        """Multiply-accumulates of one image through the convolutions and the dense layer."""
        total = 0
        for kind, k, cin, cout, stride, size in self.layers(space):
            out = _strided(size, stride)
            if kind == "dense":
                total += cin * cout
            elif kind == "dw":
                total += out * out * k * k * cin
            else:
                total += out * out * k * k * cin * cout
        return total


def _strided(size: int, stride: int) -> int:
    return math.ceil(size / stride)


def arch_from_json(text: str) -> Arch:
    """An `Arch` from its JSON form (`json.dumps(arch.to_dict())`)."""
    return Arch.from_dict(json.loads(text))


def as_arch(value: Arch | Mapping[str, Any] | str) -> Arch:
    """An `Arch` from an Arch, its dict or its JSON text."""
    if isinstance(value, Arch):
        return value
    if isinstance(value, str):
        return arch_from_json(value)
    return Arch.from_dict(value)

