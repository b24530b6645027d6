"""`tether supernet ...`: train an elastic supernet by progressive shrinking, extract subnets.

Only typer and the standard library are imported at module level, so `--help` is fast.
Progress goes to stderr (rich bars); each command's result is one JSON object on stdout.
"""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path
from typing import Any, Optional

import typer

from tether._internal.files import atomic_save_keras
from tether.cli._common import check_output, fail, quiet_tensorflow
from tether.cloud.train import TrainConfig

_TRAIN_DEFAULTS = TrainConfig()  # the CLI's defaults are the library's (numpy only: cheap)

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


def _strategy(spec: str) -> Any:
    """The tf.distribute strategy `--strategy` names (None for 'none'); logical CPU devices
    are configured here, before TensorFlow starts its runtime."""
    name, _, count = spec.strip().lower().partition(":")
    if name == "none" and not count:
        return None
    if name != "mirrored" or (count and not count.isdigit()) or (count and int(count) < 1):
        fail(f"--strategy {spec}: choose 'none', 'mirrored' or 'mirrored:N' (N logical CPU "
             "devices, N >= 1)")
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus and not count:
        return tf.distribute.MirroredStrategy()
    n = int(count or 2)
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError as exc:  # the runtime already started in this process
        fail(f"--strategy {spec}: logical CPU devices cannot be set now ({exc})")
    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n)])


@supernet_app.command()
def train(output: Path = typer.Option(..., "-o", "--output", help="The supernet file (.keras)"),
          space: str = typer.Option("default", "--space", help=SPACE_HELP),
          data: str = typer.Option("mnist5k", "--data", help=DATA_HELP),
          epochs: str = typer.Option(",".join(map(str, _TRAIN_DEFAULTS.epochs)),
                                     "--epochs",
                                     help="Epochs of the phases full,kernel,depth,expand"),
          batch_size: int = typer.Option(64, "--batch-size", min=2),
          lr: float = typer.Option(3e-3, "--lr", help="Peak learning rate (Adam, cosine)"),
          subnets: int = typer.Option(_TRAIN_DEFAULTS.subnets_per_step,
                                      "--subnets-per-step", min=1,
                                      help="Subnets per step in the elastic phases"),
          sandwich: bool = typer.Option(True, "--sandwich/--random-only",
                                        help="Largest + smallest + random subnets per step, "
                                        "or random subnets only"),
          step_resolution: bool = typer.Option(_TRAIN_DEFAULTS.step_resolution,
                                               "--step-resolution/--subnet-resolution",
                                               help="One resolution per elastic-phase step for "
                                               "all its subnets (OFA's random input size), or "
                                               "each subnet its own"),
          kernel_transform: bool = typer.Option(True, "--kernel-transform/--centre-crop",
                                                help="Learned kernel transforms or plain crops"),
          alpha: float = typer.Option(0.5, "--kd-alpha", min=0.0, max=1.0,
                                      help="Weight of distillation from the full network"),
          shift: int = typer.Option(0, "--augment-shift", min=0,
                                    help="Random translation in pixels"),
          checkpoints: Optional[Path] = typer.Option(
              None, "--checkpoints", help="Folder of per-phase checkpoints (default: "
              "OUTPUT with .checkpoints); an interrupted run resumes from it"),
          strategy: str = typer.Option(
              "none", "--strategy", help="tf.distribute: 'none', or 'mirrored' (every GPU; "
              "without GPUs, 'mirrored:N' splits each batch over N logical CPU devices)"),
          seed: int = typer.Option(0, "--seed")) -> None:
    """Train a supernet of SPACE on DATA by progressive shrinking (full, kernel, depth, expand)."""
    _keras_path(output, "--output")
    counts = _epochs(epochs)
    dist = _strategy(strategy)
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
                             subnets_per_step=subnets, sandwich=sandwich,
                             step_resolution=step_resolution, alpha=alpha,
                             seed=seed, augment_shift=shift)
        keras.utils.set_random_seed(seed)
        with dist.scope() if dist is not None else contextlib.nullcontext():
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
                                  ckpt, on_epoch=on_epoch, on_step=on_step, strategy=dist)
        atomic_save_keras(net, output)
    except TetherError as exc:
        fail(str(exc))
    typer.echo(json.dumps({
        "output": str(output), "checkpoints": str(ckpt), "space_size": sp.size(),
        "replicas": dist.num_replicas_in_sync if dist is not None else 1,
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
    import numpy as np

    from tether.cloud.batchnorm import recalibrate_batchnorm
    from tether.cloud.supernet import extract as do_extract, resize_images
    from tether.cloud.train import evaluate
    from tether.compression import count_macs
    from tether.data import load
    from tether.errors import TetherError

    net = _load_supernet(supernet, "SUPERNET")
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
        atomic_save_keras(model, output)
    except TetherError as exc:
        fail(str(exc))
    typer.echo(json.dumps({
        "output": str(output), "arch": a.to_dict(), "key": a.key(),
        "params": model.count_params(), "macs": count_macs(model),
        "accuracy": acc, "accuracy_without_recalibration": acc_supernet,
        "calibration_images": n if n >= 2 else 0}))


# ----- tether device info|probe -------------------------------------------------------------

device_app = typer.Typer(add_completion=False, no_args_is_help=True,
                         help="What this device tells the cloud: its profile and latencies.")


@device_app.command()
def info() -> None:
    """Print this device's profile as JSON (architecture, cores, SIMD, memory, engine, id)."""
    from tether.device.profile import device_info

    typer.echo(json.dumps(device_info(), indent=2))


def _space_arg(spec: str) -> Any:
    from tether.cloud.space import SearchSpace

    if spec in ("default", "seed"):
        return SearchSpace.default() if spec == "default" else SearchSpace.seed()
    path = Path(spec)
    if not path.is_file():
        fail(f"--space {spec}: no such file, and not 'default' or 'seed'")
    return SearchSpace.load(path)


@device_app.command()
def probe(output: Path = typer.Option(..., "-o", "--output", help="The latency table (.json)"),
          space: str = typer.Option("default", "--space", help=SPACE_HELP),
          threads: int = typer.Option(1, "--threads", min=1, max=64),
          warmup: int = typer.Option(10, "--warmup", min=0),
          runs: int = typer.Option(100, "--runs", min=1),
          min_ms: int = typer.Option(
              50, "--min-ms", min=0, max=600000, help="Timed invokes per model go on until "
              "they last this long (ms); warm-up lasts a fifth of it"),
          rounds: Optional[int] = typer.Option(
              None, "--rounds", min=1, max=1000, help="Interleaved timing slices per model (all "
              "loaded at once), each model keeping its fastest: robust to a machine that runs "
              "slow for seconds at a time (default: 5 at one thread; 1 at more, where a short "
              "slice's median wanders with the pool's hand-offs)"),
          fit_subnets: int = typer.Option(
              12, "--fit-subnets", min=0, help="Random subnets measured end to end to fit the "
              "correction of the summed pieces (0 = none)"),
          bundle: Optional[Path] = typer.Option(
              None, "--bundle", help="Keep the probe models and manifest in this folder (copy "
              "it to a board and run tether-probe there; the fit subnets are its "
              "'subnet=KEY' rows)"),
          seed: int = typer.Option(0, "--seed")) -> None:
    """Time every kernel configuration SPACE can produce, as the converter fuses it, on this
    device; write its latency table."""
    if output.suffix != ".json":
        fail(f"--output {output}: the latency table is a .json file")
    check_output(output, "--output")
    sp = _space_arg(space)
    quiet_tensorflow()
    import tempfile

    import keras
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tether.cloud.latency import LatencyModel, configurations, probe_space
    from tether.cloud.supernet import Supernet
    from tether.errors import TetherError

    try:
        with tempfile.TemporaryDirectory() as tmp, Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
            folder = bundle or Path(tmp) / "bundle"
            archs = []
            net = None
            if fit_subnets >= 2:
                keras.utils.set_random_seed(seed)
                net = Supernet(sp)
                rng = random.Random(seed)
                archs = [sp.largest(), sp.smallest()] + [sp.sample(rng)
                                                        for _ in range(fit_subnets - 2)]
            n = len(configurations(sp)) + len({a.key() for a in archs})
            task = bar.add_task(f"building {n} probe models (pieces, subnets)", total=n)

            def built(i: int) -> None:
                bar.update(task, completed=i)
                if i == n:
                    bar.update(task, description=f"timing {n} models on this device")

            table, measured = probe_space(sp, folder, net, archs, threads=threads,
                                          warmup=warmup, runs=runs, min_time_ms=min_ms,
                                          rounds=rounds, on_model=built)
            fit: dict[str, Any] = {}
            if archs:
                model = LatencyModel(sp, table).fit(archs, [measured[a.key()] for a in archs])
                fit = {"scale": model.scale, "offset": model.offset, "margin": model.margin,
                       "subnets": len(archs)}
            table.save(output)
    except TetherError as exc:
        fail(str(exc))
    typer.echo(json.dumps({"output": str(output), "device_id": table.device_id,
                           "entries": len(table.median_ms), "threads": threads,
                           "correction": fit or None}))


# ----- tether library build|add-device|list|show -------------------------------------------

library_app = typer.Typer(add_completion=False, no_args_is_help=True,
                          help="The model library: SQLite index tables per task and dataset.")


def _library(path: Path, must_exist: bool = True) -> Any:
    from tether.cloud.library import ModelLibrary

    if must_exist and not path.is_file():
        fail(f"LIBRARY {path}: no such file (create it with `tether library build`)")
    if not must_exist and not path.parent.is_dir():
        fail(f"LIBRARY {path}: folder {path.parent} does not exist")
    return ModelLibrary(path)


def _load_supernet(path: Path, flag: str = "--supernet") -> Any:
    """The Supernet in `path`, or a one-line error naming `flag`."""
    import keras

    from tether.cloud.supernet import Supernet

    if not path.is_file():
        fail(f"{flag} {path}: no such file")
    try:
        net = keras.models.load_model(path)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file
        fail(f"{flag} {path}: not a tether supernet file ({str(exc).splitlines()[0]})")
    if not isinstance(net, Supernet):
        fail(f"{flag} {path}: a Keras model, but not a tether supernet")
    return net


@library_app.command()
def build(library: Path = typer.Argument(..., help="The library file (.sqlite), created or extended"),
          supernet: Path = typer.Option(..., "--supernet", help="From `tether supernet train`"),
          task: str = typer.Option("classification", "--task"),
          data: str = typer.Option("mnist5k", "--data", help=DATA_HELP),
          models: int = typer.Option(20, "--models", min=2,
                                     help="Entries: the largest, the smallest and random subnets"),
          predictor_samples: int = typer.Option(
              60, "--predictor-samples", min=0,
              help="Further random subnets measured for the accuracy predictor only"),
          images: int = typer.Option(2000, "--calibration-images", min=2),
          folder: Optional[Path] = typer.Option(None, "--folder",
                                                help="Where the .tmodel files go (default: "
                                                "LIBRARY's name + .models)"),
          seed: int = typer.Option(0, "--seed")) -> None:
    """Fill the (TASK, DATA) index of LIBRARY with subnets of SUPERNET: extracted, batch norm
    recalibrated, accuracy measured, converted to .tmodel."""
    lib = _library(library, must_exist=False)
    quiet_tensorflow()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tether.cloud.accuracy import measure_accuracy
    from tether.cloud.library import build_entries
    from tether.data import load
    from tether.errors import TetherError

    net = _load_supernet(supernet)
    sp = net.space
    out = folder or library.with_name(library.stem + ".models")
    try:
        ds = load(data)
        lib.create_index(task, data, sp, str(supernet.resolve()), str(out.resolve()))
        rng = random.Random(seed)
        archs = list({a.key(): a for a in [sp.largest(), sp.smallest()] + [
            sp.sample(rng) for _ in range(4 * models)]}.values())[:models]
        extra = [sp.sample(rng) for _ in range(predictor_samples)]
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
            t1 = bar.add_task("library entries", total=len(archs))
            records = build_entries(net, archs, ds.x_train, ds.x_test, ds.y_test, out,
                                    calibration_images=images, seed=seed,
                                    on_arch=lambda i: bar.update(t1, completed=i))
            t2 = bar.add_task("accuracy-predictor samples", total=len(extra))
            accs = measure_accuracy(net, extra, ds.x_train, ds.x_test, ds.y_test,
                                    calibration_images=images, seed=seed,
                                    on_arch=lambda i: bar.update(t2, completed=i))
        for r in records:
            lib.add_entry(task, data, r["arch"], accuracy=r["accuracy"],
                          input_shape=r["input_shape"], size=r["size"], path=r["path"])
        lib.add_accuracy_samples(task, data, [r["arch"] for r in records] + extra,
                                 [r["accuracy"] for r in records] + accs)
        summary = [i for i in lib.indexes() if i["task"] == task and i["dataset"] == data][0]
    except TetherError as exc:
        fail(str(exc))
    finally:
        lib.close()
    typer.echo(json.dumps({"library": str(library), **summary,
                           "accuracy_samples": len(records) + len(extra)}))


@library_app.command("add-device")
def add_device(library: Path = typer.Argument(..., help="The library file"),
               table: Path = typer.Option(..., "--table", help="From `tether device probe`"),
               measure: bool = typer.Option(False, "--measure",
                                            help="Also time every entry on this device (it "
                                            "must be the device the table was probed on)"),
               runs: int = typer.Option(100, "--runs", min=1)) -> None:
    """Profile a device into LIBRARY: its latency column, predicted for every entry."""
    if not table.is_file():
        fail(f"--table {table}: no such file")
    lib = _library(library)
    from tether.cloud.latency import LatencyModel
    from tether.device.profile import LatencyTable, device_info, probe as run_probe
    from tether.errors import TetherError

    try:
        t = LatencyTable.load(table)
        idx = lib.indexes()
        if not idx:
            fail(f"LIBRARY {library}: no index yet; run `tether library build` first")
        device = lib.add_device(LatencyModel(lib.space(idx[0]["task"], idx[0]["dataset"]), t))
        measured = 0
        if measure:
            if device_info()["device_id"] != device:
                fail(f"--measure: this device is {device_info()['device_id']}, the table is "
                     f"of {device}; run add-device --measure on that device")
            import tempfile

            for i in idx:
                entries = lib.entries(i["task"], i["dataset"])
                with tempfile.TemporaryDirectory() as tmp:
                    manifest = Path(tmp) / "manifest.txt"
                    manifest.write_text("".join(f"{e.key} {e.path}\n" for e in entries))
                    got = run_probe(manifest, threads=t.threads, warmup=t.warmup, runs=runs,
                                    min_time_ms=t.min_time_ms, rounds=t.rounds)
                lib.set_measured(i["task"], i["dataset"], device, got.median_ms)
                measured += len(got.median_ms)
    except TetherError as exc:
        fail(str(exc))
    finally:
        lib.close()
    typer.echo(json.dumps({"device_id": device, "indexes": len(idx), "measured": measured}))


@library_app.command("list")
def list_indexes(library: Path = typer.Argument(..., help="The library file")) -> None:
    """Print the library's index tables and profiled devices as JSON."""
    lib = _library(library)
    try:
        typer.echo(json.dumps({"indexes": lib.indexes(), "devices": lib.devices()}, indent=2))
    finally:
        lib.close()


@library_app.command()
def show(library: Path = typer.Argument(..., help="The library file"),
         task: str = typer.Option("classification", "--task"),
         data: str = typer.Option("mnist5k", "--data"),
         as_json: bool = typer.Option(False, "--json", help="One JSON object instead of a table")
         ) -> None:
    """Show the entries of one index table."""
    from tether.errors import TetherError

    lib = _library(library)
    try:
        entries = lib.entries(task, data)
        devices = lib.devices()
    except TetherError as exc:
        fail(str(exc))
    finally:
        lib.close()
    if as_json:
        typer.echo(json.dumps([e.to_dict() for e in entries]))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table("id", "key", "accuracy", "params", "MACs", "bytes",
              *[f"{d} ms" for d in devices])
    for e in entries:
        lats = []
        for d in devices:
            v = e.latency(d)
            mark = "" if d in e.latency_measured else " (pred.)"
            lats.append("-" if v is None else f"{v:.4f}{mark}")
        t.add_row(str(e.id), e.key, f"{e.accuracy:.4f}", f"{e.params:,}", f"{e.macs:,}",
                  f"{e.size:,}", *lats)
    Console().print(t)


# ----- tether search ------------------------------------------------------------------------

def search(library: Path = typer.Argument(..., help="The library file"),
           task: str = typer.Option("classification", "--task"),
           data: str = typer.Option("mnist5k", "--data"),
           device: Optional[str] = typer.Option(None, "--device",
                                                help="Device id the latency limit is for"),
           max_latency: Optional[list[float]] = typer.Option(
               None, "--max-latency", help="ms; give it several times for a ladder of budgets "
               "(nested answers: a tighter budget never gets a larger model)"),
           max_size: Optional[int] = typer.Option(None, "--max-size", help="bytes of the .tmodel"),
           max_params: Optional[int] = typer.Option(None, "--max-params"),
           max_macs: Optional[int] = typer.Option(None, "--max-macs"),
           min_accuracy: Optional[float] = typer.Option(None, "--min-accuracy",
                                                        help="fraction, e.g. 0.95"),
           policy: str = typer.Option("latency > size > accuracy", "--policy",
                                      help="Priority order with optional tolerances, e.g. "
                                      "'accuracy:0.5% > latency'"),
           extract_new: bool = typer.Option(True, "--extract/--library-only",
                                            help="Search the whole space and extract a subnet "
                                            "better than every entry (added to the library)"),
           verify: Optional[bool] = typer.Option(
               None, "--verify/--no-verify", help="Time each answer in the engine and search "
               "again when it misses the latency limit, on the point prediction (default: "
               "when --device is this machine); without, limits are checked against the "
               "latency model's guard band"),
           generations: int = typer.Option(30, "--generations", min=0),
           seed: int = typer.Option(0, "--seed")) -> None:
    """Find the model for a device and limits: the best library entry under the policy, or a
    better subnet found by evolutionary search, extracted and added to the library."""
    from tether.cloud.policy import Constraints, Policy
    from tether.errors import TetherError

    budgets = list(max_latency or [])
    try:
        pol = Policy.parse(policy)
        cons = Constraints(device, budgets[0] if budgets else None, max_size, max_params,
                           max_macs, min_accuracy)
        for b in budgets[1:]:
            Constraints(device, b)
    except TetherError as exc:
        fail(str(exc).replace("max_latency_ms", "--max-latency").replace(
            "min_accuracy", "--min-accuracy"))
    if "latency" in {o.name for o in pol.objectives} and device is None:
        fail("--policy ranks by latency: give --device (a device id from `tether library list`)")
    if len(budgets) > 1 and not extract_new:
        fail("a ladder of --max-latency budgets searches the space: drop --library-only")
    lib = _library(library)
    try:
        if extract_new:  # the search may load, extract and time subnets
            quiet_tensorflow()
        from tether.cloud.find import can_verify, find_model

        if verify is None or verify:
            from tether.device.profile import device_info

            here = device_info()["device_id"]
            if verify and device != here:
                fail(f"--verify: this machine is {here}, not --device {device}; answers can be "
                     "timed only on the device itself")
            verify = can_verify(cons, budgets, device_id=here)
        out = find_model(lib, task, data, cons, pol, extract_new=extract_new,
                         generations=generations, seed=seed, budgets=budgets,
                         verify=bool(verify))
    except TetherError as exc:
        fail(str(exc))
    finally:
        lib.close()
    typer.echo(json.dumps(out))

