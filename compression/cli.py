"""`tether compress ...`: pruning, distillation and quantization from the command line.

Only typer and the standard library are imported at module level, so `--help` is fast.
Each command prints one JSON object (the report) on stdout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Compress a Keras model: prune, distil, quantize.")

MODEL_HELP = "Keras model file (.keras/.h5) or built-in model name (demo_cnn, ...)"
DATA_HELP = "Dataset: built-in name (digits, mnist5k), .npz file or image folder"


def _setup() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _load(model: str, data: str | None) -> tuple[Any, Any]:
    _setup()
    from tether.data import load
    from tether.models import load_model

    m = load_model(model)
    ds = load(data) if data else None
    if ds is not None and tuple(m.inputs[0].shape[1:]) != ds.input_shape:
        _fail(f"model input {tuple(m.inputs[0].shape[1:])} does not match dataset "
              f"'{ds.name}' images {ds.input_shape}; pick a matching model or dataset")
    return m, ds


def _emit(record: dict[str, Any]) -> None:
    typer.echo(json.dumps(record, default=float))


def _run(fn: Any) -> None:
    from tether.errors import TetherError

    try:
        fn()
    except (TetherError, FileNotFoundError) as e:
        _fail(str(e))


@app.command()
def macs(model: str = typer.Argument(..., help=MODEL_HELP)) -> None:
    """Count the model's multiply-accumulates and parameters."""
    def go() -> None:
        m, _ = _load(model, None)
        from tether.compression import count_macs

        _emit({"model": m.name, "macs": count_macs(m), "params": int(m.count_params())})
    _run(go)


@app.command("prune-channels")
def prune_channels(
        model: str = typer.Argument(..., help=MODEL_HELP),
        output: Path = typer.Option(..., "-o", "--output", help="The .keras file to write"),
        fraction: float = typer.Option(0.5, "--fraction", help="Fraction in [0, 1) to remove"),
        target: str = typer.Option("channels", "--target", help="channels or macs"),
        importance: str = typer.Option("l1", "--importance", help="l1 or bn"),
        data: str | None = typer.Option(None, "--data", help=DATA_HELP + " (fine-tune)"),
        epochs: int = typer.Option(0, "--epochs", min=0, help="Fine-tune epochs (needs --data)"),
) -> None:
    """Structured pruning: remove whole channels, write a smaller Keras model."""
    def go() -> None:
        m, ds = _load(model, data)
        from tether.compression import ChannelPruningConfig, fine_tune
        from tether.compression import prune_channels as prune

        small, rep = prune(m, ChannelPruningConfig(fraction, target, importance))
        rec: dict[str, Any] = {"macs_before": rep.macs_before, "macs_after": rep.macs_after,
                               "params_before": rep.params_before,
                               "params_after": rep.params_after, "ratio": rep.ratio}
        if ds is not None and epochs:
            fine_tune(small, ds.x_train, ds.y_train, epochs=epochs)
            from tether.compression._common import accuracy

            rec["accuracy"] = accuracy(small, ds.x_test, ds.y_test)
        small.save(output)
        rec["output"] = str(output)
        _emit(rec)
    _run(go)


@app.command()
def prune(model: str = typer.Argument(..., help=MODEL_HELP),
          output: Path = typer.Option(..., "-o", "--output", help="The .keras file to write"),
          data: str = typer.Option(..., "--data", help=DATA_HELP),
          sparsity: float = typer.Option(0.5, "--sparsity", help="Final sparsity in [0, 1)"),
          epochs: int = typer.Option(2, "--epochs", min=1),
          batch_size: int = typer.Option(64, "--batch-size", min=1)) -> None:
    """Unstructured magnitude pruning during fine-tuning (polynomial decay)."""
    def go() -> None:
        m, ds = _load(model, data)
        import math

        from tether.compression import (
            MagnitudePruning,
            PolynomialDecay,
            fine_tune,
            sparsity_report,
            strip_pruning,
        )

        steps = epochs * math.ceil(len(ds.x_train) / batch_size)
        cb = MagnitudePruning(PolynomialDecay(sparsity, 0.0, 0, max(1, int(steps * 0.7)),
                                              frequency=max(1, steps // 20)))
        fine_tune(m, ds.x_train, ds.y_train, epochs=epochs, batch_size=batch_size,
                  callbacks=[cb])
        plain = strip_pruning(m, cb)
        rep = sparsity_report(plain)
        from tether.compression._common import accuracy

        plain.save(output)
        _emit({"sparsity": rep.sparsity, "dense_bytes": rep.dense_bytes,
               "sparse_bytes": rep.sparse_bytes, "compression": rep.compression,
               "accuracy": accuracy(plain, ds.x_test, ds.y_test), "output": str(output)})
    _run(go)


@app.command()
def quantize(model: str = typer.Argument(..., help=MODEL_HELP),
             mode: str = typer.Option("ptq", "--mode", help="ptq, int8-weights or "
                                      "int4-weights"),
             data: str | None = typer.Option(None, "--data", help=DATA_HELP +
                                                " (calibration for ptq)"),
             calibration: str = typer.Option("minmax", "--calibration",
                                              help="minmax, percentile or entropy"),
             samples: int = typer.Option(200, "--samples", min=1,
                                         help="Calibration samples from the training split"),
             plan_out: Path | None = typer.Option(None, "--plan", help="Write the "
                                                     "QuantizationPlan JSON (ptq)"),
             output: Path | None = typer.Option(None, "-o", "--output",
                                                   help="Write the weight-quantized .keras"),
             tmodel_out: Path | None = typer.Option(
                 None, "--tmodel", help="ptq: write the int8 .tmodel the converter lowers "
                 "from the plan, and report its accuracy in the engine")
             ) -> None:
    """Weight-only int8/int4, or post-training int8 calibration (writes a plan and, with
    --tmodel, the int8 .tmodel run by the engine)."""
    def go() -> None:
        m, ds = _load(model, data)
        from tether.compression import (
            CalibrationConfig,
            WeightQuantConfig,
            calibrate,
            quantize_weights,
            simulate_int8,
        )
        from tether.compression._common import accuracy

        if mode in ("int8-weights", "int4-weights"):
            qm, rep = quantize_weights(m, WeightQuantConfig(bits=8 if mode[3] == "8" else 4))
            rec: dict[str, Any] = {"float_bytes": rep.float_bytes,
                                   "quantized_bytes": rep.quantized_bytes,
                                   "max_rel_error": rep.max_rel_error}
            if ds is not None:
                rec["accuracy"] = accuracy(qm, ds.x_test, ds.y_test)
            if output:
                qm.save(output)
            _emit(rec)
        elif mode == "ptq":
            if ds is None:
                _fail("--mode ptq needs --data for calibration samples")
            plan = calibrate(m, ds.x_train[:samples], CalibrationConfig(calibration))
            if plan_out:
                plan_out.write_text(plan.to_json())
            rec = {"tensors": len(plan.activation_ranges), "method": calibration,
                   "emulated_int8_accuracy": accuracy(simulate_int8(m, plan), ds.x_test,
                                                      ds.y_test),
                   "float_accuracy": accuracy(m, ds.x_test, ds.y_test),
                   "plan": str(plan_out) if plan_out else None}
            if tmodel_out:
                import numpy as np
                from tether.converter import convert
                from tether.device import Engine

                tm = convert(m, quantize="int8", plan=plan)
                tm.save(tmodel_out)
                eng = Engine(tm.to_bytes(), threads=1)
                x = ds.x_test.astype(np.float32)
                pred = [int(np.argmax(eng.run(x[i:i + 1]))) for i in range(len(x))]
                rec.update(engine_int8_accuracy=float(np.mean(np.array(pred) == ds.y_test)),
                           tmodel=str(tmodel_out), tmodel_bytes=len(tm.to_bytes()))
            _emit(rec)
        else:
            _fail(f"--mode must be ptq, int8-weights or int4-weights. Received: {mode!r}")
    _run(go)
