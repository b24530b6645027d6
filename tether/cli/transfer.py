"""`tether transfer run`: adapt a model to a device's own classes (split transfer learning,
`tether.transfer`): part A in the engine once per image, the head trained by the engine's
trainer on the cached features, one joined `.tmodel` out. `tether transfer finetune`: the same
adaptation in Keras for a device that runs it, by the head-only, staged or full schedule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from tether.cli._common import check_output, fail, quiet_tensorflow

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="On-device transfer learning: a frozen part A, a head trained in the "
                  "engine.")


def _classes(spec: Optional[str]) -> Optional[list[int]]:
    if spec is None:
        return None
    try:
        out = []
        for part in spec.split(","):
            lo, _, hi = part.partition("-")
            out += list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        fail(f"--classes {spec}: give class ids like 5-9 or 0,2,4")
    if len(set(out)) < 2:
        fail(f"--classes {spec}: a head needs at least two classes")
    return sorted(set(out))


def _device_data(data: str, wanted: Optional[list[int]], per_class: int, seed: int
                 ) -> tuple[list[int], Any, Any, Any, Any]:
    """The device's class ids, `per_class` training images of each (labels 0..n-1 in the
    ids' order) and the test images of those classes."""
    import numpy as np

    from tether.data import load

    ds = load(data)
    ids = wanted if wanted is not None else sorted(set(int(v) for v in ds.y_train))
    missing = [c for c in ids if c not in set(int(v) for v in ds.y_train)]
    if missing:
        fail(f"--classes: {missing} not in {data}'s labels")
    rng = np.random.default_rng(seed)
    pick = np.concatenate([rng.permutation(np.flatnonzero(ds.y_train == c))[:per_class]
                           for c in ids])
    remap = {c: i for i, c in enumerate(ids)}
    x, y = ds.x_train[pick], np.array([remap[int(v)] for v in ds.y_train[pick]])
    test = np.isin(ds.y_test, ids)
    return ids, x, y, ds.x_test[test], np.array([remap[int(v)] for v in ds.y_test[test]])


def _tmodel_output(output: Path) -> None:
    check_output(output, "--output")
    if output.suffix != ".tmodel":
        fail(f"--output {output}: the adapted model is a .tmodel file")


def _load_cloud(model: str) -> Any:
    from tether.errors import TetherError
    from tether.models import load_model

    try:
        return load_model(model)
    except (FileNotFoundError, TetherError) as exc:
        fail(str(exc))


@app.command()
def run(model: str = typer.Argument(..., help="The cloud model: a .keras file or a built-in "
                                    "name (demo_cnn, ...)"),
        cut: str = typer.Option(..., "--cut", help="The layer part A ends at (its output is "
                                "the head's input)"),
        output: Path = typer.Option(..., "-o", "--output", help="The adapted .tmodel"),
        data: str = typer.Option("mnist5k", "--data", help="The device's images: a built-in "
                                 "dataset, an .npz file or an image folder"),
        classes: Optional[str] = typer.Option(None, "--classes", help="The device's class ids "
                                              "in DATA, e.g. 5-9 (default: all)"),
        per_class: int = typer.Option(50, "--per-class", min=1,
                                      help="Training images per class the device holds"),
        epochs: int = typer.Option(50, "--epochs", min=1),
        batch_size: int = typer.Option(32, "--batch-size", min=1),
        lr: float = typer.Option(1e-2, "--lr", help="Adam's learning rate"),
        train_layers: int = typer.Option(0, "--train-layers", min=0,
                                         help="Dense layers of the head that train, from the "
                                         "output (0 = all after the cut)"),
        int8: bool = typer.Option(False, "--int8", help="Part A in int8 (calibrated on the "
                                  "device's images)"),
        cache: Optional[Path] = typer.Option(None, "--cache", help="Folder that keeps part A's "
                                             "features across runs"),
        seed: int = typer.Option(0, "--seed")) -> None:
    """Cut MODEL at --cut, train a new head for the device's classes in the engine, write one
    .tmodel (part A + the trained head) to --output."""
    _tmodel_output(output)
    wanted = _classes(classes)
    quiet_tensorflow()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from tether._internal.files import atomic_write_bytes
    from tether.converter import convert
    from tether.errors import TetherError
    from tether.transfer import FeatureCache, split_keras, transfer

    cloud = _load_cloud(model)
    try:
        ids, x, y, xt, yt = _device_data(data, wanted, per_class, seed)
        feature_cache = None
        if cache is not None:
            part_a, _ = split_keras(cloud, cut, len(ids), seed=seed)
            feature_cache = FeatureCache(convert(part_a, quantize="int8" if int8 else None,
                                                 calibration=x if int8 else None).to_bytes(),
                                         cache)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("training the head in the engine", total=epochs)
            res = transfer(cloud, cut, x, y, classes=len(ids), epochs=epochs,
                           batch_size=batch_size, learning_rate=lr, train_layers=train_layers,
                           quantize_a="int8" if int8 else None, cache=feature_cache,
                           x_test=xt if len(xt) else None, y_test=yt if len(yt) else None,
                           seed=seed,
                           on_epoch=lambda e, loss: bar.update(
                               task, completed=e, description=f"epoch {e}: loss {loss:.4f}"))
        atomic_write_bytes(output, res.model)
    except TetherError as exc:
        fail(str(exc))
    typer.echo(json.dumps({
        "output": str(output), "classes": ids, "device_images": int(len(x)),
        "test_images": int(len(xt)), "accuracy": res.accuracy,
        "loss_first_last": [res.history[0], res.history[-1]],
        "feature_seconds": res.feature_seconds, "epoch_seconds": res.epoch_seconds,
        "arena_bytes": res.arena_bytes, "part_a": "int8" if int8 else "float32",
        "cache": None if feature_cache is None else {"folder": str(cache),
                                                     "hits": feature_cache.hits}}))


@app.command()
def finetune(model: str = typer.Argument(..., help="The cloud model: a .keras file or a "
                                         "built-in name (demo_cnn, ...)"),
             cut: str = typer.Option(..., "--cut", help="The layer the new head starts after"),
             output: Path = typer.Option(..., "-o", "--output", help="The adapted .tmodel"),
             keras_output: Optional[Path] = typer.Option(
                 None, "--keras-output", help="Also the fine-tuned Keras model (.keras)"),
             schedule: str = typer.Option("staged", "--schedule", help="head (only the layers "
                                          "after the cut), staged (head, then the last "
                                          "--unfreeze layers too) or full (every layer)"),
             unfreeze: int = typer.Option(2, "--unfreeze", min=0, help="Weighted layers "
                                          "before the cut the staged schedule unfreezes"),
             data: str = typer.Option("mnist5k", "--data", help="The device's images: a "
                                      "built-in dataset, an .npz file or an image folder"),
             classes: Optional[str] = typer.Option(None, "--classes", help="The device's "
                                                   "class ids in DATA, e.g. 5-9"),
             per_class: int = typer.Option(50, "--per-class", min=1),
             head_epochs: int = typer.Option(10, "--head-epochs", min=0),
             epochs: int = typer.Option(10, "--epochs", min=0, help="Epochs of the staged "
                                        "or full stage"),
             batch_size: int = typer.Option(32, "--batch-size", min=1),
             lr: float = typer.Option(1e-3, "--lr", help="Adam's learning rate (the staged "
                                      "stage uses a tenth)"),
             seed: int = typer.Option(0, "--seed")) -> None:
    """Fine-tune MODEL in Keras for the device's classes (head first, then the last layers
    before --cut, by --schedule); write the .tmodel to --output."""
    from tether.transfer import SCHEDULES

    _tmodel_output(output)
    if keras_output is not None:
        check_output(keras_output, "--keras-output")
        if keras_output.suffix != ".keras":
            fail(f"--keras-output {keras_output}: a Keras model is a .keras file")
    if schedule not in SCHEDULES:
        fail(f"--schedule {schedule}: one of {', '.join(SCHEDULES)}")
    wanted = _classes(classes)
    quiet_tensorflow()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from tether._internal.files import atomic_write_bytes, atomic_save_keras
    from tether.errors import TetherError
    from tether.transfer import fine_tune

    cloud = _load_cloud(model)
    try:
        ids, x, y, xt, yt = _device_data(data, wanted, per_class, seed)
        total = {"head": head_epochs, "staged": head_epochs + epochs, "full": epochs}[schedule]
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(f"fine-tuning ({schedule})", total=total)
            done = [0]

            def on_epoch(stage: str, epoch: int, loss: float) -> None:
                done[0] += 1
                bar.update(task, completed=done[0],
                           description=f"{stage} epoch {epoch}: loss {loss:.4f}")

            res = fine_tune(cloud, cut, x, y, classes=len(ids), schedule=schedule,
                            head_epochs=head_epochs, epochs=epochs, unfreeze=unfreeze,
                            batch_size=batch_size, learning_rate=lr,
                            x_test=xt if len(xt) else None, y_test=yt if len(yt) else None,
                            seed=seed, on_epoch=on_epoch)
        atomic_write_bytes(output, res.model)
        if keras_output is not None:
            atomic_save_keras(res.keras_model, keras_output)
    except TetherError as exc:
        fail(str(exc))
    typer.echo(json.dumps({
        "output": str(output), "keras_output": None if keras_output is None else
        str(keras_output), "classes": ids, "schedule": schedule,
        "stages": [{"stage": n, "epochs": e, "trainable": t} for n, e, t in res.stages],
        "device_images": int(len(x)), "test_images": int(len(xt)), "accuracy": res.accuracy,
        "loss_first_last": [res.history[0], res.history[-1]] if res.history else None}))
