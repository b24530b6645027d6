"""`tether supernet ...`: train an elastic supernet by progressive shrinking, extract subnets.

Only typer and the standard library are imported at module level, so `--help` is fast.
Progress goes to stderr (rich bars); each command's result is one JSON object on stdout.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Optional

import typer

from tether.cli._common import check_output, fail, quiet_tensorflow

supernet_app = typer.Typer(add_completion=False, no_args_is_help=True,
                           help="Elastic supernets (Once-for-All): train, extract subnets.")

SPACE_HELP = "Search space: 'default' (sized for mnist5k), 'seed' (the chapter's), or a .toml/.json file"
DATA_HELP = "Dataset: built-in name (digits, mnist5k), .npz file or image folder"


def _space(spec: str, channels: int, classes: int) -> Any:
    from tether.cloud.space import SearchSpace

    if spec == "default":
        return SearchSpace.default(input_channels=channels, num_classes=classes)
    if spec == "seed":
        import dataclasses

        return dataclasses.replace(SearchSpace.seed(num_classes=classes), input_channels=channels)
    path = Path(spec)
    if not path.is_file():
        fail(f"--space {spec}: no such file, and not 'default' or 'seed'")
    return SearchSpace.load(path)


def _epochs(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) < 0 or values[0] < 1:
        fail(f"--epochs {text}: give four epoch counts full,kernel,depth,expand (e.g. 8,4,4,4); "
             "the full phase needs at least 1")
    return values


def _keras_path(path: Path, flag: str) -> None:
    if path.suffix != ".keras":
        fail(f"{flag} {path}: the file must end in .keras")
    check_output(path, flag)


def _save(model: Any, path: Path) -> None:
    from tether._internal.files import atomic_path

    with atomic_path(path) as tmp:
        model.save(tmp)


@supernet_app.command()
def train(output: Path = typer.Option(..., "-o", "--output", help="The supernet file (.keras)"),
          space: str = typer.Option("default", "--space", help=SPACE_HELP),
          data: str = typer.Option("mnist5k", "--data", help=DATA_HELP),
          epochs: str = typer.Option("8,4,4,4", "--epochs",
                                     help="Epochs of the phases full,kernel,depth,expand"),
          batch_size: int = typer.Option(64, "--batch-size", min=2),
          lr: float = typer.Option(3e-3, "--lr", help="Peak learning rate (Adam, cosine)"),
          subnets: int = typer.Option(2, "--subnets-per-step", min=1,
                                      help="Subnets sampled per step in the elastic phases"),
          sandwich: bool = typer.Option(False, "--sandwich",
                                        help="Largest + smallest + random subnets per step"),
          kernel_transform: bool = typer.Option(True, "--kernel-transform/--centre-crop",
                                                help="Learned kernel transforms or plain crops"),
          alpha: float = typer.Option(0.5, "--kd-alpha", min=0.0, max=1.0,
                                      help="Weight of distillation from the full network"),
          shift: int = typer.Option(0, "--augment-shift", min=0,
                                    help="Random translation in pixels"),
          checkpoints: Optional[Path] = typer.Option(
              None, "--checkpoints", help="Folder of per-phase checkpoints (default: "
              "OUTPUT with .checkpoints); an interrupted run resumes from it"),
          seed: int = typer.Option(0, "--seed")) -> None:
    """Train a supernet of SPACE on DATA by progressive shrinking (full, kernel, depth, expand)."""
    _keras_path(output, "--output")
    counts = _epochs(epochs)
    if not lr > 0:
        fail(f"--lr {lr}: the learning rate must be > 0")
    quiet_tensorflow()
    import keras
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tether.cloud.supernet import Supernet
    from tether.cloud.train import PHASES, TrainConfig, train_supernet
    from tether.data import load
    from tether.errors import TetherError

    try:
        ds = load(data)
        sp = _space(space, ds.input_shape[-1], ds.num_classes)
        if sp.input_channels != ds.input_shape[-1] or sp.num_classes != ds.num_classes:
            fail(f"--space: {sp.input_channels} input channels and {sp.num_classes} classes, "
                 f"but '{ds.name}' has {ds.input_shape[-1]} and {ds.num_classes}")
        config = TrainConfig(epochs=counts, batch_size=batch_size, lr=lr,  # type: ignore[arg-type]
                             subnets_per_step=subnets, sandwich=sandwich, alpha=alpha,
                             seed=seed, augment_shift=shift)
        keras.utils.set_random_seed(seed)
        net = Supernet(sp, kernel_transform=kernel_transform)
        ckpt = checkpoints or output.with_name(output.stem + ".checkpoints")
        console = Console(stderr=True)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=True) as bar:
            tasks = {p: bar.add_task(f"{p}", total=None) for p in PHASES}

            def on_step(phase: str, step: int, steps: int) -> None:
                bar.update(tasks[phase], total=steps, completed=step)

            def on_epoch(e: Any) -> None:
                bar.update(tasks[e.phase], description=(
                    f"{e.phase} {e.epoch}/{e.epochs}: loss {e.loss:.3f}, largest "
                    f"{e.largest_accuracy:.3f}, smallest {e.smallest_accuracy:.3f}"))
                console.print(f"{e.phase} epoch {e.epoch}/{e.epochs}: loss {e.loss:.4f}, "
                              f"largest {e.largest_accuracy:.4f}, smallest "
                              f"{e.smallest_accuracy:.4f} ({e.seconds:.1f} s)", highlight=False)

            logs = train_supernet(net, ds.x_train, ds.y_train, ds.x_test, ds.y_test, config,
                                  ckpt, on_epoch=on_epoch, on_step=on_step)
        _save(net, output)
    except TetherError as exc:
        fail(str(exc))
    typer.echo(json.dumps({
        "output": str(output), "checkpoints": str(ckpt), "space_size": sp.size(),
        "phases": [{"phase": p.phase, "seconds": p.seconds,
                    "epochs": [vars(e) for e in p.epochs]} for p in logs]}))


def _arch(spec: str, sp: Any, seed: int) -> Any:
    from tether.cloud.space import as_arch

    if spec == "largest":
        return sp.largest()
    if spec == "smallest":
        return sp.smallest()
    if spec == "random":
        return sp.sample(random.Random(seed))
    path = Path(spec)
    text = path.read_text() if path.is_file() else spec
    try:
        arch = as_arch(text)
    except (ValueError, json.JSONDecodeError) as exc:
        fail(f"--arch {spec}: not largest, smallest, random, a JSON architecture or a file of "
             f"one ({str(exc).splitlines()[0]})")
    return arch


@supernet_app.command()
def extract(supernet: Path = typer.Argument(..., help="A supernet file from `tether supernet train`"),
            output: Path = typer.Option(..., "-o", "--output", help="The subnet file (.keras)"),
            arch: str = typer.Option("largest", "--arch",
                                     help="largest, smallest, random, or a JSON architecture "
                                     "(text or file)"),
            data: str = typer.Option("mnist5k", "--data",
                                     help=DATA_HELP + " (batch-norm recalibration, accuracy)"),
            images: int = typer.Option(2000, "--calibration-images", min=0,
                                       help="Training images batch norm is recalibrated on "
                                       "(0 = keep the supernet's statistics)"),
            seed: int = typer.Option(0, "--seed", help="Seed of --arch random")) -> None:
    """Extract one subnet of SUPERNET as a plain Keras model, batch norm recalibrated."""
    _keras_path(output, "--output")
    if not supernet.is_file():
        fail(f"SUPERNET {supernet}: no such file")
    quiet_tensorflow()
    import keras
    import numpy as np

    from tether.cloud.batchnorm import recalibrate_batchnorm
    from tether.cloud.supernet import Supernet, extract as do_extract, resize_images
    from tether.cloud.train import evaluate
    from tether.compression import count_macs
    from tether.data import load
    from tether.errors import TetherError

    try:
        net = keras.models.load_model(supernet)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file
        fail(f"SUPERNET {supernet}: not a tether supernet file ({str(exc).splitlines()[0]})")
    if not isinstance(net, Supernet):
        fail(f"SUPERNET {supernet}: a Keras model, but not a tether supernet")
    try:
        a = _arch(arch, net.space, seed)
        net.space.validate(a)
        ds = load(data)
        model = do_extract(net, a)
        n = min(images, len(ds.x_train))
        if n >= 2:
            pick = np.random.default_rng(seed).choice(len(ds.x_train), n, replace=False)
            recalibrate_batchnorm(model, resize_images(ds.x_train[pick], a.resolution))
        x = resize_images(ds.x_test, a.resolution)
        acc = float(np.mean(np.asarray(model.predict(x, verbose=0)).argmax(1) == ds.y_test))
        acc_supernet = evaluate(net, a, ds.x_test, ds.y_test)
        _save(model, output)
    except TetherError as exc:
        fail(str(exc))
    typer.echo(json.dumps({
        "output": str(output), "arch": a.to_dict(), "key": a.key(),
        "params": model.count_params(), "macs": count_macs(model),
        "accuracy": acc, "accuracy_without_recalibration": acc_supernet,
        "calibration_images": n if n >= 2 else 0}))
