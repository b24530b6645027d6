"""`tether transfer run`: adapt a model to a device's own classes (split transfer learning,
`tether.transfer`): part A in the engine once per image, the head trained by the engine's
trainer on the cached features, one joined `.tmodel` out. `tether transfer finetune`: the same
adaptation in Keras for a device that runs it, by the head-only, staged or full schedule.
`tether transfer incremental`: classes learnt task after task in the engine (replay, EWC,
naive or joint, `tether.incremental`), with what each increment cost the earlier classes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from tether.cli._common import check_output, fail, quiet_tensorflow

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="On-device transfer learning: a frozen part A, a head trained in the "
                  "engine.")


def _class_ids(spec: str, flag: str, whole: Optional[str] = None) -> list[int]:
    """'5-9' or '0,2,4' (or both, '0,5-9') -> the class ids; errors quote `whole` (the
    option's value) when `spec` is a part of it."""
    try:
        out = []
        for part in spec.split(","):
            lo, _, hi = part.partition("-")
            out += list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        fail(f"{flag} {whole or spec}: give class ids like 5-9 or 0,2,4")
    return out


def _classes(spec: Optional[str]) -> Optional[list[int]]:
    if spec is None:
        return None
    out = _class_ids(spec, "--classes")
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


def _tasks(spec: str) -> list[list[int]]:
    """'0-1/2-3/...' -> [[0, 1], [2, 3], ...]: each task's class ids, no class in two tasks."""
    tasks = [sorted(set(_class_ids(part, "--tasks", spec))) for part in spec.split("/")]
    seen = [c for t in tasks for c in t]
    if len(tasks) < 2:
        fail(f"--tasks {spec}: give two or more tasks separated by '/', e.g. 0-1/2-3/4-5")
    if len(seen) != len(set(seen)):
        fail(f"--tasks {spec}: a class is in two tasks")
    return tasks


@app.command()
def incremental(model: str = typer.Argument(..., help="The cloud model: a .keras file or a "
                                            "built-in name (demo_cnn, ...)"),
                cut: str = typer.Option(..., "--cut", help="The layer part A ends at"),
                tasks: str = typer.Option(..., "--tasks", help="The classes of each task in "
                                          "learning order, e.g. 0-1/2-3/4-5/6-7/8-9"),
                output: Path = typer.Option(..., "-o", "--output",
                                            help="The model after the last task (.tmodel)"),
                method: str = typer.Option("replay", "--method",
                                           help="replay, ewc, naive or joint"),
                data: str = typer.Option("mnist5k", "--data", help="The device's images: a "
                                         "built-in dataset, an .npz file or an image folder"),
                per_class: int = typer.Option(100, "--per-class", min=1,
                                              help="Training images per class in its task"),
                epochs: int = typer.Option(20, "--epochs", min=1, help="Epochs per task"),
                lr: float = typer.Option(3e-3, "--lr", help="Adam's learning rate"),
                replay_per_class: int = typer.Option(100, "--replay-per-class", min=1,
                                                     help="Stored features per earlier class"),
                ewc_lambda: float = typer.Option(1000.0, "--ewc-lambda", min=0.0),
                cache: Optional[Path] = typer.Option(None, "--cache", help="Folder that keeps "
                                                     "part A's features across runs"),
                seed: int = typer.Option(0, "--seed")) -> None:
    """Cut MODEL at --cut and let a fresh head learn the --tasks' classes one task after the
    other in the engine; print each task's accuracies (the classes seen so far, the earlier
    ones, each task's own) and write part A + the head to --output."""
    from tether.incremental import METHODS

    _tmodel_output(output)
    if method not in METHODS:
        fail(f"--method {method}: one of {', '.join(METHODS)}")
    groups = _tasks(tasks)
    ids = [c for t in groups for c in t]
    quiet_tensorflow()
    import numpy as np
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from tether._internal.files import atomic_write_bytes
    from tether.converter import convert, join
    from tether.errors import TetherError
    from tether.incremental import learn_tasks, task_incremental_accuracy
    from tether.transfer import FeatureCache, split_keras

    cloud = _load_cloud(model)
    try:
        _, x, y, xt, yt = _device_data(data, ids, per_class, seed)  # labels: index in ids
        part_a, part_b = split_keras(cloud, cut, len(ids), seed=seed)
        features = FeatureCache(convert(part_a).to_bytes(), cache)
        fx, fxt = features.features(x), features.features(xt)
        bounds = np.cumsum([0] + [len(t) for t in groups])
        train, test = [], []
        for lo, hi in zip(bounds, bounds[1:]):
            keep, keep_t = (y >= lo) & (y < hi), (yt >= lo) & (yt < hi)
            train.append((fx[keep], y[keep].astype(np.int32)))
            test.append((fxt[keep_t], yt[keep_t].astype(np.int32)))
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      console=Console(stderr=True), transient=True) as bar:
            done = bar.add_task(f"learning {len(groups)} tasks in the engine ({method})",
                                total=len(groups))
            logs, trainer = learn_tasks(
                convert(part_b, sparse=None).to_bytes(), train, test, method, epochs=epochs,
                learning_rate=lr, ewc_lambda=ewc_lambda, replay_per_class=replay_per_class,
                seed=seed, on_task=lambda log: bar.update(
                    done, advance=1, description=f"task {log.task + 1}: classes seen "
                    f"{log.seen_accuracy:.3f}"))
        head = trainer.export()  # type: ignore[attr-defined]
        atomic_write_bytes(output, join(features.part_a, head).to_bytes())
    except TetherError as exc:
        fail(str(exc))
    typer.echo(json.dumps({
        "output": str(output), "method": method, "tasks": groups,
        "classes": ids,  # output unit i is class ids[i]
        "device_images": int(len(x)), "test_images": int(len(xt)),
        "after_each_task": [{"task": g.task, "classes_seen_accuracy": g.seen_accuracy,
                             "earlier_classes_accuracy": g.old_accuracy,
                             "per_task_accuracy": g.per_task} for g in logs],
        "task_incremental_accuracy": task_incremental_accuracy(trainer, test),
        "cache": None if cache is None else {"folder": str(cache), "hits": features.hits}}))
