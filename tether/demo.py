"""The end-to-end pipeline on a built-in dataset.

Today's road: train the demo CNN on `digits` → convert to `.tmodel` → run the test split in
the C engine and in LiteRT → compare accuracy with Keras and time each engine. Later stages
(supernet search, compression, federated fine-tuning) join here as they land.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

__all__ = ["DemoConfig", "DemoResult", "EngineResult", "run_demo"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """What the demo does.

    Attributes:
        dataset: Built-in dataset name (default `digits`).
        epochs: Training epochs (default 30; `quick` uses 8).
        batch_size: Mini-batch size (default 32).
        out_dir: Where the `.tmodel` and `report.json` go (default `out/demo`).
        engines: Engines to compare with Keras (default tether, litert, onnxruntime).
        seed: Seed for weights and shuffling (default 0).
    """

    dataset: str = "digits"
    epochs: int = 30
    batch_size: int = 32
    out_dir: Path = Path("out/demo")
    engines: tuple[str, ...] = ("tether", "litert", "onnxruntime")
    seed: int = 0
    timing_runs: int = 50

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"DemoConfig.epochs must be >= 1. Received: epochs={self.epochs}")
        if self.batch_size < 1:
            raise ValueError(
                f"DemoConfig.batch_size must be >= 1. Received: batch_size={self.batch_size}")


@dataclass(frozen=True)
class EngineResult:
    """One engine's accuracy on the test split and its single-image latency."""

    engine: str
    accuracy: float
    median_ms: float
    min_ms: float
    model_bytes: int
    agrees_with_keras: float  # share of test images whose top-1 equals Keras' top-1
    max_abs_diff: float  # against Keras' probabilities


@dataclass(frozen=True)
class DemoResult:
    """What the demo measured."""

    dataset: str
    train_images: int
    test_images: int
    keras_accuracy: float
    engines: list[EngineResult] = field(default_factory=list)
    tmodel_path: Optional[Path] = None
    ops_before: dict[str, int] = field(default_factory=dict)
    ops_after: dict[str, int] = field(default_factory=dict)


def run_demo(config: DemoConfig = DemoConfig(),
             step: Optional[Callable[[str], None]] = None) -> DemoResult:
    """Runs the pipeline; `step(text)` is called as each stage starts (for a progress bar)."""
    import keras

    from tether import data
    from tether.bench import time_fn
    from tether.converter import convert
    from tether.models import demo_cnn
    from tether.peers import make_runner

    def say(text: str) -> None:
        logger.info(text)
        if step is not None:
            step(text)

    say(f"loading {config.dataset}")
    ds = data.load(config.dataset)
    say(f"training the demo CNN for {config.epochs} epochs")
    model = demo_cnn(ds.input_shape, ds.num_classes, seed=config.seed)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(ds.x_train, ds.y_train, epochs=config.epochs, batch_size=config.batch_size,
              verbose=0, shuffle=True)
    keras_probs = np.asarray(model.predict(ds.x_test, batch_size=256, verbose=0))
    keras_top1 = keras_probs.argmax(axis=1)
    keras_acc = float((keras_top1 == ds.y_test).mean())

    say("converting to .tmodel")
    tmodel = convert(model)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    path = config.out_dir / "demo_cnn.tmodel"
    tmodel.save(path)

    results = []
    for engine in config.engines:
        say(f"running the test split in {engine}")
        runner = make_runner(engine, model)
        probs = np.concatenate([np.asarray(runner.run(x[None])).reshape(1, -1)
                                for x in ds.x_test])
        top1 = probs.argmax(axis=1)
        times = time_fn(lambda: runner.run(ds.x_test[:1]), warmup=10,
                        runs=config.timing_runs)
        results.append(EngineResult(
            engine=engine, accuracy=float((top1 == ds.y_test).mean()),
            median_ms=float(np.median(times)), min_ms=float(times.min()),
            model_bytes=runner.model_bytes,
            agrees_with_keras=float((top1 == keras_top1).mean()),
            max_abs_diff=float(np.abs(probs - keras_probs).max())))
    report = tmodel.report
    return DemoResult(
        dataset=ds.name, train_images=len(ds.x_train), test_images=len(ds.x_test),
        keras_accuracy=keras_acc, engines=results, tmodel_path=path,
        ops_before=dict(getattr(report, "ops_before", {}) or {}),
        ops_after=dict(getattr(report, "ops_after", {}) or {}))
