"""The `tether` command line. Heavy imports happen inside commands, so `--help` is fast."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import click
import typer

from tether.cli._common import OneLineErrors, check_output, fail, load_npy, quiet_tensorflow
from tether.errors import TetherError

FLOAT_PARITY_TOLERANCE = 1e-4  # --report's max rel error for a float32 model

app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True,
                  help="tether: train in the cloud, compress, convert, run on devices.")


def _version(value: bool) -> None:
    if value:
        from tether import __version__

        typer.echo(f"tether {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit")) -> None:
    """tether: train in the cloud, compress, convert, run on devices."""


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _load_source(src: str) -> Any:
    """An ONNX or TFLite path as is; otherwise a Keras model file or built-in model name."""
    if Path(src).suffix.lower() in (".onnx", ".tflite"):
        if not Path(src).is_file():
            raise FileNotFoundError(f"{src}: no such file")
        return src
    from tether.models import load_model

    return load_model(src)


@app.command()
def convert(src: str = typer.Argument(..., help="Model: .onnx, .tflite, Keras file "
                                               "(.keras/.h5) or built-in model name "
                                               "(demo_cnn, mobilenet_v2_0.35_96, ...)"),
            output: Path = typer.Option(..., "-o", "--output", help="The .tmodel to write"),
            report: bool = typer.Option(False, "--report", help="Print what the passes did, "
                                        "the size and the output parity"),
            batch_size: int = typer.Option(1, "--batch-size", min=1,
                                           help="Batch of inputs whose batch is not fixed"),
            optimize: bool = typer.Option(True, "--optimize/--no-optimize",
                                          help="Run the optimizing passes"),
            samples: Optional[Path] = typer.Option(
                None, "--samples", help=".npy of sample inputs for the parity check of "
                "--report (default: 4 random inputs)"),
            quantize: Optional[str] = typer.Option(
                None, "--quantize", click_type=click.Choice(("int8",)),
                help="int8: post-training quantization from --calibration ranges"),
            calibration: Optional[Path] = typer.Option(
                None, "--calibration", help=".npy of representative inputs for --quantize "
                "int8 (a stack of inputs of the model's input shape)"),
            ) -> None:
    """Convert a Keras, ONNX or TFLite model into a .tmodel file (BN folded, activations
    fused, NHWC); nothing is written on failure."""
    check_output(output, "--output")
    if samples is not None and not report:
        fail("--samples sets the inputs of --report's parity check; add --report")
    xs = load_npy(samples, "--samples") if samples is not None else None
    cal = load_npy(calibration, "--calibration") if calibration is not None else None
    if Path(src).suffix.lower() not in (".onnx", ".tflite"):
        quiet_tensorflow()
    from tether.converter import convert as do_convert

    try:
        model = _load_source(src)
        options = dict(batch_size=batch_size, optimize=optimize, quantize=quantize,
                       calibration=cal)
        parity_note = ""
        try:
            tmodel = do_convert(model, **options,
                                samples=(xs if xs is not None else 4) if report else None)
        except TetherError as exc:
            if not (report and str(exc).startswith("parity check:")):
                raise
            parity_note = f"parity not measured: {exc}"
            tmodel = do_convert(model, **options)
        tmodel.save(output)
    except (TetherError, FileNotFoundError, ValueError, OSError) as exc:
        fail(str(exc))
    console = _console()
    console.print(f"wrote {output} ({output.stat().st_size:,} bytes)")
    if report:
        console.print(str(tmodel.report), highlight=False, markup=False)
        if parity_note:
            console.print(parity_note, highlight=False, markup=False)
        p = tmodel.report.parity
        float_model = all(t.dtype.name != "INT8" for t in tmodel.graph.tensors.values())
        if p is not None and float_model and p.max_rel_error > FLOAT_PARITY_TOLERANCE:
            console.print(f"warning: max rel error {p.max_rel_error:.3g} is above "
                          f"{FLOAT_PARITY_TOLERANCE:g}, what a float32 conversion keeps to: "
                          "the .tmodel does not compute what the source does",
                          style="bold yellow", highlight=False, markup=False)


@app.command()
def export(src: str = typer.Argument(..., help="Keras model file (.keras/.h5) or built-in "
                                              "model name"),
           to: str = typer.Option(..., "--to", click_type=click.Choice(("tflite", "onnx"),
                                                                       case_sensitive=False),
                                  help="TFLite (TensorFlow's converter) or ONNX (tf2onnx)"),
           output: Path = typer.Option(..., "-o", "--output", help="The file to write"),
           int8_samples: Optional[Path] = typer.Option(
               None, "--int8-calibration", help=".npy of representative inputs [N, *input "
               "shape without the batch]: full-integer int8 TFLite (TensorFlow's quantizer)"),
           opset: int = typer.Option(17, "--opset", min=13,
                                     help="ONNX opset (13 or newer: what convert reads)"),
           ) -> None:
    """Export a Keras model to TFLite (TensorFlow's converter) or ONNX (tf2onnx); nothing is
    written on failure."""
    quiet_tensorflow()
    import numpy as np

    from tether._internal.files import atomic_write_bytes
    from tether.peers import keras_to_onnx, keras_to_tflite

    target = to.lower()
    if target not in ("tflite", "onnx"):
        fail(f"--to {to!r} is not supported; use tflite or onnx")
    if int8_samples is not None and target != "tflite":
        fail("--int8-calibration applies to --to tflite only")
    try:
        from tether.models import load_model

        model = load_model(src)
        if target == "tflite":
            rep = None
            if int8_samples is not None:
                if not int8_samples.is_file():
                    raise TetherError(f"{int8_samples}: no such file")
                rep = np.load(int8_samples, allow_pickle=False).astype(np.float32)
            data = keras_to_tflite(model, rep)
        else:
            data = keras_to_onnx(model, opset=opset)
        atomic_write_bytes(output, data)
    except (TetherError, FileNotFoundError, ValueError, OSError) as exc:
        fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - the exporters raise many types; report, exit 1
        fail(f"{target} export failed: {type(exc).__name__}: {exc}")
    _console().print(f"wrote {output} ({output.stat().st_size:,} bytes)")


@app.command()
def run(model: Path = typer.Argument(..., help="The .tmodel file"),
        input: Optional[Path] = typer.Option(None, "--input", help=".npy input (default: "
                                             "zeros of the model's input shape)"),
        output: Optional[Path] = typer.Option(None, "--output", help="Write the output .npy"),
        threads: int = typer.Option(1, "--threads", min=1, help="Engine threads (at most 64)"),
        ) -> None:
    """Run a .tmodel in the C engine on one .npy input."""
    import numpy as np

    from tether.device import Engine

    if threads > Engine.MAX_THREADS:
        fail(f"--threads {threads}: the engine runs on 1 to {Engine.MAX_THREADS} threads")
    if output is not None:
        check_output(output, "--output")
    x = load_npy(input, "--input") if input is not None else None
    try:
        engine = Engine(model, threads=threads)
        want = engine.inputs[0]
        if x is None:
            x = np.zeros(want.shape, want.dtype)
        elif x.dtype != want.dtype and not (want.dtype == np.int32 and x.dtype.kind in "iu"):
            # integer ids (int64 as numpy makes them) are narrowed by Engine.run, range-checked
            fail(f"--input {input}: dtype {x.dtype}; the model's input '{want.name}' takes "
                  f"{want.dtype} (convert the array with astype first)")
        elif x.ndim == len(want.shape) and x.shape[0] == 0:
            fail(f"--input {input}: an empty batch (shape {list(x.shape)})")
        y = engine.run(x)
    except (TetherError, ValueError) as exc:
        fail(str(exc))
    outputs = y if isinstance(y, list) else [y]
    if output is not None:
        from tether._internal.files import atomic_write

        with atomic_write(output) as f:
            np.save(f, outputs[0])
    console = _console()
    for info, arr in zip(engine.outputs, outputs):
        console.print(f"{info.name}: shape={list(arr.shape)} dtype={arr.dtype} "
                      f"argmax={int(np.argmax(arr))} max={float(np.max(arr)):.6g}")


@app.command()
def bench(src: str = typer.Argument(..., help="Keras model file or built-in model name"),
          engines: str = typer.Option("tether,litert,onnxruntime", "--engines"),
          threads: int = typer.Option(1, "--threads", min=1),
          runs: int = typer.Option(30, "--runs", min=1),
          warmup: int = typer.Option(5, "--warmup", min=0),
          as_json: bool = typer.Option(False, "--json", help="Print one JSON array of records"),
          ) -> None:
    """Time tether beside LiteRT and ONNX Runtime on the same model, in one process."""
    quiet_tensorflow(litert=True)
    from rich.progress import Progress

    from tether.bench import bench_model
    from tether.models import load_model
    from tether.peers import ENGINES

    names = [e.strip() for e in engines.split(",") if e.strip()]
    unknown = [e for e in names if e not in ENGINES]
    if unknown or not names:
        fail(f"--engines: unknown {unknown}; choose from {', '.join(ENGINES)}")
    try:
        model = load_model(src)
        with Progress(console=_console(), transient=True) as progress:
            task = progress.add_task("bench", total=len(names))

            def on_engine(engine: str) -> None:
                progress.update(task, description=f"{engine}", advance=0)

            records = bench_model(model, src, names, threads=threads, runs=runs,
                                  warmup=warmup, on_engine=on_engine)
            progress.update(task, completed=len(names))
    except (TetherError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps([r.to_json() for r in records], indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{src}, {threads} thread(s)")
    for col in ("engine", "median ms", "min ms", "p90 ms", "model bytes", "arena bytes",
                "max |Δ| vs Keras"):
        table.add_column(col, justify="right")
    for r in records:
        table.add_row(r.engine, f"{r.median_ms:.3f}", f"{r.min_ms:.3f}", f"{r.p90_ms:.3f}",
                      f"{r.model_bytes:,}", "" if r.arena_bytes is None else f"{r.arena_bytes:,}",
                      f"{r.max_abs_diff_vs_keras:.2e}")
    from rich.console import Console

    Console().print(table)


def _register_subcommands() -> None:
    """`tether federated ...`, `tether compress ...` and `tether supernet ...` live in their
    own modules."""
    from tether.cli.cloud import device_app, library_app, search, supernet_app
    from tether.cli.compress import app as compress_app
    from tether.cli.federated import app as federated_app
    from tether.cli.pipeline import app as pipeline_app, demo
    from tether.cli.transfer import app as transfer_app

    app.add_typer(federated_app, name="federated", help="Federated learning on Flower.")
    app.add_typer(compress_app, name="compress", help="Prune, distill and quantize models.")
    app.add_typer(supernet_app, name="supernet",
                  help="Train elastic supernets (Once-for-All) and extract subnets.")
    app.add_typer(device_app, name="device", help="This device's profile and latency table.")
    app.add_typer(library_app, name="library", help="The model library (SQLite index tables).")
    app.command(name="search")(search)
    app.add_typer(transfer_app, name="transfer",
                  help="On-device transfer learning (a head trained in the engine).")
    app.add_typer(pipeline_app, name="pipeline",
                  help="The whole road from one TOML config, with an HTML report.")
    app.command(name="demo")(demo)


_register_subcommands()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
