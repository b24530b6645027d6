"""Progressive shrinking: train a supernet so that every subnet of its space works.

Phases, in order (Once-for-All): `full` trains the largest network (at random resolutions);
then `kernel`, `depth` and `expand` open one elastic dimension after another, each step
sampling `subnets_per_step` subnets from the dimensions opened so far (or, with `sandwich`,
the largest, the smallest and random ones) and summing their gradients. From `kernel` on, a
frozen copy of the network trained in `full` is the teacher: each subnet learns from the labels
and from the teacher's logits (`tether.compression.distillation_loss`). Before `expand`, every
block's hidden channels are sorted by importance (`Supernet.sort_channels`), so narrower
widths keep the most important prefix.

Every finished phase is checkpointed in `checkpoint_dir` (weights and a progress record,
each written whole); `train_supernet` called again with the same directory resumes after the
last finished phase. The finished supernet is written by the caller (`Supernet.save`).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tether.cloud.space import Arch, SearchSpace
from tether.errors import TetherError

__all__ = ["PHASES", "EpochLog", "PhaseLog", "TrainConfig", "evaluate", "step_archs",
           "train_supernet"]

PHASES = ("full", "kernel", "depth", "expand")
_OPEN = {"full": (), "kernel": ("kernel",), "depth": ("kernel", "depth"),
         "expand": ("kernel", "depth", "expand")}


class TrainError(TetherError, ValueError):
    """A training setting that cannot work, or a checkpoint that does not fit."""


@dataclass(frozen=True)
class TrainConfig:
    """Progressive-shrinking settings.

    The defaults are the schedule whose extracted subnets meet their from-scratch twins on
    mnist5k over three seeds (`BENCHMARKS.md`, "Supernet E"): the sandwich rule with four
    subnets per step at one resolution per step, epochs 8 / 4 / 8 / 24.

    Attributes:
        epochs: epochs per phase, in PHASES order.
        batch_size: images per step.
        lr: peak learning rate of each phase (Adam), cosine-decayed over the phase; phases
            after `full` start at `lr * shrink_lr_scale`.
        shrink_lr_scale: see `lr` (OFA fine-tunes the elastic phases at a lower rate).
        subnets_per_step: subnets whose gradients are summed per step in elastic phases.
        sandwich: each step trains the largest and the smallest subnet of the whole space and
            `subnets_per_step - 2` random ones of the opened dimensions (on by default: on
            mnist5k it lifts the smallest subnet from 0.88 to 0.97, `BENCHMARKS.md`); off,
            all `subnets_per_step` are random.
        step_resolution: every subnet of an elastic-phase step runs at one resolution drawn
            for the step (OFA's random input size per batch), the largest and smallest of the
            sandwich included (on by default); off, each subnet keeps its own (the largest at the largest
            resolution, the smallest at the smallest, random ones drawn each).
        temperature, alpha: distillation from the `full` network (alpha=0: labels only).
        seed: seeds weights, sampling and shuffling.
        augment_shift: random translation in pixels (0 = none).
        monitor_images: training images the per-epoch accuracies recalibrate batch norm on.
    """

    epochs: tuple[int, int, int, int] = (8, 4, 8, 24)
    batch_size: int = 64
    lr: float = 3e-3
    shrink_lr_scale: float = 0.5
    subnets_per_step: int = 4
    sandwich: bool = True
    step_resolution: bool = True
    temperature: float = 1.0
    alpha: float = 0.5
    seed: int = 0
    augment_shift: int = 0
    monitor_images: int = 500

    def __post_init__(self) -> None:
        object.__setattr__(self, "epochs", tuple(int(e) for e in self.epochs))
        if len(self.epochs) != len(PHASES) or min(self.epochs) < 0:
            raise TrainError(f"TrainConfig.epochs needs {len(PHASES)} counts >= 0 "
                             f"({', '.join(PHASES)}). Received: {self.epochs}")
        if self.epochs[0] < 1:
            raise TrainError("TrainConfig.epochs: the full phase needs at least 1 epoch (the "
                             "teacher of the others)")
        if self.batch_size < 2:
            raise TrainError(f"TrainConfig.batch_size must be >= 2. Received: {self.batch_size}")
        if not self.lr > 0 or not self.shrink_lr_scale > 0:
            raise TrainError(f"TrainConfig.lr and shrink_lr_scale must be > 0. Received: "
                             f"lr={self.lr}, shrink_lr_scale={self.shrink_lr_scale}")
        if self.subnets_per_step < 1:
            raise TrainError(f"TrainConfig.subnets_per_step must be >= 1. Received: "
                             f"{self.subnets_per_step}")
        if not 0.0 <= self.alpha <= 1.0 or not self.temperature > 0:
            raise TrainError(f"TrainConfig.alpha must be in [0, 1] and temperature > 0. "
                             f"Received: alpha={self.alpha}, temperature={self.temperature}")


@dataclass
class EpochLog:
    """One epoch: mean training loss, test accuracy of the largest and smallest subnet
    (extracted, batch norm recalibrated)."""

    phase: str
    epoch: int
    epochs: int
    loss: float
    largest_accuracy: float
    smallest_accuracy: float
    seconds: float


@dataclass
class PhaseLog:
    phase: str
    seconds: float
    epochs: list[EpochLog] = field(default_factory=list)


OnEpoch = Callable[[EpochLog], None]
OnStep = Callable[[str, int, int], None]


def _progress_path(d: Path) -> Path:
    return d / "progress.json"


def _weights_path(d: Path, phase: str) -> Path:
    return d / f"{phase}.weights.h5"


def _save_weights(model: Any, path: Path) -> None:
    tmp = path.with_name(path.name.replace(".weights.h5", ".partial.weights.h5"))
    model.save_weights(tmp)
    tmp.replace(path)


def _write_progress(d: Path, record: dict[str, Any]) -> None:
    from tether._internal.files import atomic_write_text

    atomic_write_text(_progress_path(d), json.dumps(record, indent=2))


def evaluate(net: Any, arch: Arch, x: np.ndarray, y: np.ndarray,
             calibration: np.ndarray | None = None, batch: int = 256) -> float:
    """Top-1 accuracy of subnet `arch` of `net` on images `x` (any size; resized).

    The supernet's batch-norm statistics mix every subnet trained; with `calibration`
    (training images) the subnet is extracted and its statistics recalibrated on them first,
    as it would be deployed (OFA's protocol). Without, the supernet's own statistics are used.
    """
    from tether.cloud.batchnorm import recalibrate_batchnorm
    from tether.cloud.supernet import extract, resize_images

    xr = resize_images(x, arch.resolution)
    if calibration is not None:
        model = extract(net, arch, softmax=False)
        recalibrate_batchnorm(model, resize_images(calibration, arch.resolution))
    else:
        net.set_arch(arch)
        model = net
    hits = 0
    for i in range(0, len(xr), batch):
        logits = np.asarray(model(xr[i:i + batch], training=False))
        hits += int((logits.argmax(1) == y[i:i + batch]).sum())
    return hits / max(len(y), 1)


def step_archs(space: SearchSpace, phase: str, config: TrainConfig,
               rng: random.Random) -> list[Arch]:
    """The subnets one step of `phase` trains (see `TrainConfig`)."""
    if phase == "full":
        return [space.sample(rng, kernel=False, depth=False, expand=False)]
    opened = {d: d in _OPEN[phase] for d in ("kernel", "depth", "expand")}
    if config.sandwich:
        archs = [space.largest(), space.smallest()] + [
            space.sample(rng, **opened) for _ in range(max(0, config.subnets_per_step - 2))]
    else:
        archs = [space.sample(rng, **opened) for _ in range(config.subnets_per_step)]
    if config.step_resolution:
        r = rng.choice(space.resolutions)
        archs = [Arch(r, a.stages) for a in archs]
    return archs


def _shift(x: np.ndarray, pixels: int, rng: np.random.Generator) -> np.ndarray:
    if pixels <= 0:
        return x
    out = np.empty_like(x)
    for i in range(len(x)):
        dy, dx = rng.integers(-pixels, pixels + 1, 2)
        out[i] = np.roll(x[i], (int(dy), int(dx)), axis=(0, 1))
    return out


def train_supernet(net: Any, x: np.ndarray, y: np.ndarray, x_test: np.ndarray,
                   y_test: np.ndarray, config: TrainConfig = TrainConfig(),
                   checkpoint_dir: str | Path | None = None, *,
                   on_epoch: OnEpoch | None = None,
                   on_step: OnStep | None = None, strategy: Any = None) -> list[PhaseLog]:
    """Trains `net` (a `Supernet`) by progressive shrinking on images `x` (N, H, W, C) in
    [0, 1] with int labels `y`; `x_test`/`y_test` measure the largest and smallest subnets
    after each epoch.

    Args:
        checkpoint_dir: where each finished phase is saved; a run given a directory that
            already holds finished phases continues after them (None: no checkpoints).
        on_epoch: called after every epoch with its `EpochLog`.
        on_step: called as (phase, step, steps of the phase) after every step.
        strategy: a `tf.distribute` strategy to split each batch over its replicas (build
            `net` under `strategy.scope()`); gradients are averaged across replicas.

    Returns:
        One `PhaseLog` per phase run now (resumed phases are not repeated).

    Raises:
        TrainError: the checkpoint was made for another space or config.
    """
    import keras
    import tensorflow as tf

    from tether.cloud.supernet import Supernet, resize_images
    from tether.compression import distillation_loss

    space: SearchSpace = net.space
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int64)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    record = {"space": space.to_dict(), "config": asdict(config), "finished": []}
    if ckpt is not None:
        ckpt.mkdir(parents=True, exist_ok=True)
        if _progress_path(ckpt).is_file():
            old = json.loads(_progress_path(ckpt).read_text())
            if old.get("space") != record["space"] or old.get("config") != json.loads(
                    json.dumps(record["config"])):
                raise TrainError(f"{ckpt}: the checkpoints there were made for another space "
                                 "or training config; give a new --checkpoints folder")
            record = old
    finished: list[str] = list(record["finished"])
    if finished:
        net.load_weights(_weights_path(ckpt, finished[-1]))  # type: ignore[arg-type]

    def scope() -> Any:
        return strategy.scope() if strategy is not None else contextlib.nullcontext()

    teacher: Any = None
    if finished:
        with scope():
            teacher = Supernet(space, net.kernel_transform)
        teacher.load_weights(_weights_path(ckpt, "full"))  # type: ignore[arg-type]
        teacher.set_arch(space.largest())

    rng = random.Random(config.seed)
    np_rng = np.random.default_rng(config.seed)
    logs: list[PhaseLog] = []
    steps = math.ceil(len(x) / config.batch_size)
    largest, smallest = space.largest(), space.smallest()

    def replica_grads(xb: Any, yb: Any, kd: bool) -> Any:
        with tf.GradientTape() as tape:
            logits = net(xb, training=True)
            if kd:
                loss = distillation_loss(yb, logits, teacher(xb, training=False),
                                         config.temperature, config.alpha)
            else:
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                    yb, logits, from_logits=True))
        return loss, tape.gradient(loss, net.trainable_variables)

    if strategy is None:
        grads_fn = tf.function(replica_grads, reduce_retracing=True)

        def grads_for(xb: np.ndarray, yb: np.ndarray, kd: bool) -> Any:
            return grads_fn(tf.constant(xb), tf.constant(yb), kd)
    else:
        mean = tf.distribute.ReduceOp.MEAN

        @tf.function(reduce_retracing=True)
        def distributed(xb: Any, yb: Any, kd: bool) -> Any:
            loss, grads = strategy.run(replica_grads, args=(xb, yb, kd))
            return (strategy.reduce(mean, loss, axis=None),
                    [None if g is None else strategy.reduce(mean, g, axis=None) for g in grads])

        def grads_for(xb: np.ndarray, yb: np.ndarray, kd: bool) -> Any:
            n = strategy.num_replicas_in_sync
            xs, ys = np.array_split(xb, n), np.array_split(yb, n)

            def shard(parts: list[np.ndarray]) -> Any:
                return strategy.experimental_distribute_values_from_function(
                    lambda ctx: tf.constant(parts[ctx.replica_id_in_sync_group]))
            return distributed(shard(xs), shard(ys), kd)

    def apply_grads(optimizer: Any, grads: list[Any], variables: list[Any]) -> None:
        if strategy is None:
            optimizer.apply(grads, variables)
            return
        # Keras applies in a replica context and sums the replicas' gradients: each replica
        # gets the already averaged gradients divided by the replica count.
        n = float(strategy.num_replicas_in_sync)
        scaled = [g / n for g in grads]
        with strategy.scope():
            strategy.run(lambda *g: optimizer.apply(list(g), variables), args=tuple(scaled))

    for p, phase in enumerate(PHASES):
        if phase in finished:
            continue
        epochs = config.epochs[p]
        t_phase = time.perf_counter()
        log = PhaseLog(phase, 0.0)
        if phase == "expand" and epochs:
            net.sort_channels()
        total = max(1, epochs * steps)
        lr = config.lr * (1.0 if phase == "full" else config.shrink_lr_scale)
        with scope():
            optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(lr, total))
        for epoch in range(epochs):
            t0 = time.perf_counter()
            order = np_rng.permutation(len(x))
            losses = []
            for s in range(steps):
                idx = order[s * config.batch_size:(s + 1) * config.batch_size]
                xb_full = _shift(x[idx], config.augment_shift, np_rng)
                yb = y[idx]
                archs = step_archs(space, phase, config, rng)
                summed: list[Any] | None = None
                step_loss = 0.0
                for arch in archs:
                    net.set_arch(arch)
                    loss, grads = grads_for(resize_images(xb_full, arch.resolution), yb,
                                            teacher is not None)
                    step_loss += float(loss)
                    summed = grads if summed is None else [
                        a if b is None else (b if a is None else a + b)
                        for a, b in zip(summed, grads)]
                assert summed is not None
                pairs = [(g, v) for g, v in zip(summed, net.trainable_variables)
                         if g is not None]
                apply_grads(optimizer, [g for g, _ in pairs], [v for _, v in pairs])
                losses.append(step_loss / len(archs))
                if on_step is not None:
                    on_step(phase, epoch * steps + s + 1, total)
            calibration = x[np_rng.choice(len(x), min(len(x), config.monitor_images),
                                          replace=False)]
            entry = EpochLog(phase, epoch + 1, epochs, float(np.mean(losses)),
                             evaluate(net, largest, x_test, y_test, calibration),
                             evaluate(net, smallest, x_test, y_test, calibration),
                             time.perf_counter() - t0)
            log.epochs.append(entry)
            if on_epoch is not None:
                on_epoch(entry)
        log.seconds = time.perf_counter() - t_phase
        logs.append(log)
        if phase == "full":
            with scope():
                teacher = Supernet(space, net.kernel_transform)
            teacher.set_weights(net.get_weights())
            teacher.set_arch(largest)
        finished.append(phase)
        if ckpt is not None:
            _save_weights(net, _weights_path(ckpt, phase))
            record["finished"] = finished
            record.setdefault("seconds", {})[phase] = log.seconds
            _write_progress(ckpt, record)
    net.set_arch(largest)
    return logs
