"""`tether compress ...`: pruning, distillation and quantization from the command line.

Only typer and the standard library are imported at module level, so `--help` is fast.
Each command prints one JSON object (the report) on stdout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import typer

from tether.cli._common import check_output, fail, quiet_tensorflow

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Compress a Keras model: prune, distil, quantize.")

MODEL_HELP = "Keras model file (.keras/.h5) or built-in model name (demo_cnn, ...)"
DATA_HELP = "Dataset: built-in name (digits, mnist5k), .npz file or image folder"
# The values of the fixed-choice options, as the library spells them (a test keeps them equal;
# importing the library here would load Keras for --help).
TARGETS = ("channels", "macs")
IMPORTANCES = ("l1", "bn")
QUANTIZE_MODES = ("ptq", "int8-weights", "int4-weights")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy", "mse")


def _load(model: str, data: str | None) -> tuple[Any, Any]:
    quiet_tensorflow()
    from tether.data import load
    from tether.models import load_model

    m = load_model(model)
    ds = load(data) if data else None
    if ds is not None and tuple(m.inputs[0].shape[1:]) != ds.input_shape:
        fail(f"model input {tuple(m.inputs[0].shape[1:])} does not match dataset "
              f"'{ds.name}' images {ds.input_shape}; pick a matching model or dataset")
    return m, ds


def _check_lr(learning_rate: float) -> None:
    if not learning_rate > 0:
        fail(f"--lr {learning_rate}: the learning rate must be > 0")


def _check_model_path(path: Path | None, flag: str = "--output") -> None:
    """Fails before any work when the output could not be saved as a Keras model."""
    if path is not None and path.suffix not in (".keras", ".h5"):
        fail(f"{flag} {path}: a Keras model file must end in .keras or .h5")
    check_output(path, flag)


def _save_model(model: Any, path: Path) -> None:
    """Writes a Keras model so that `path` is whole or untouched."""
    from tether._internal.files import atomic_save_keras

    _check_model_path(path)
    atomic_save_keras(model, path)


def _write_text(path: Path, text: str) -> None:
    from tether._internal.files import atomic_write_text

    atomic_write_text(path, text)


def _emit(record: dict[str, Any]) -> None:
    typer.echo(json.dumps(record, default=float))


def _run(fn: Any) -> None:
    from tether.errors import TetherError

    try:
        fn()
    except (TetherError, FileNotFoundError) as e:
        fail(str(e))


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
        target: str = typer.Option("channels", "--target", click_type=click.Choice(TARGETS),
                                   help="What --fraction removes: channels or MACs"),
        importance: str = typer.Option("l1", "--importance",
                                       click_type=click.Choice(IMPORTANCES),
                                       help="Channel importance: L1 norm or BN scale"),
        data: str | None = typer.Option(None, "--data", help=DATA_HELP + " (fine-tune)"),
        epochs: int = typer.Option(0, "--epochs", min=0, help="Fine-tune epochs (needs --data)"),
) -> None:
    """Structured pruning: remove whole channels, write a smaller Keras model."""
    def go() -> None:
        _check_model_path(output)
        if epochs and data is None:
            fail(f"--epochs {epochs} fine-tunes on --data; give --data or drop --epochs")
        m, ds = _load(model, data)
        from tether.compression import ChannelPruningConfig, fine_tune
        from tether.compression import prune_channels as prune

        small, rep = prune(m, ChannelPruningConfig(fraction, target, importance))
        rec: dict[str, Any] = {"macs_before": rep.macs_before, "macs_after": rep.macs_after,
                               "params_before": rep.params_before,
                               "params_after": rep.params_after, "ratio": rep.ratio}
        if ds is not None and epochs:
            with _FitProgress("fine-tuning", epochs, len(ds.x_train), 64) as bar:
                fine_tune(small, ds.x_train, ds.y_train, epochs=epochs, callbacks=[bar])
            from tether.compression._common import accuracy

            rec["accuracy"] = accuracy(small, ds.x_test, ds.y_test)
        _save_model(small, output)
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
    """Unstructured magnitude pruning during fine-tuning (polynomial decay, prune_weights)."""
    def go() -> None:
        _check_model_path(output)
        m, ds = _load(model, data)
        from tether.compression import prune_weights, sparsity_report

        with _FitProgress("pruning", epochs, len(ds.x_train), batch_size) as bar:
            plain = prune_weights(m, ds.x_train, ds.y_train, sparsity=sparsity, epochs=epochs,
                                  batch_size=batch_size, callbacks=[bar])
        rep = sparsity_report(plain)
        from tether.compression._common import accuracy

        _save_model(plain, output)
        _emit({"sparsity": rep.sparsity, "dense_bytes": rep.dense_bytes,
               "sparse_bytes": rep.sparse_bytes, "compression": rep.compression,
               "accuracy": accuracy(plain, ds.x_test, ds.y_test), "output": str(output)})
    _run(go)


@app.command()
def quantize(model: str = typer.Argument(..., help=MODEL_HELP),
             mode: str = typer.Option("ptq", "--mode", click_type=click.Choice(QUANTIZE_MODES),
                                      help="Post-training int8 (ptq) or weight-only"),
             data: str | None = typer.Option(None, "--data", help=DATA_HELP +
                                                " (calibration for ptq)"),
             calibration: str = typer.Option("minmax", "--calibration",
                                              click_type=click.Choice(CALIBRATION_METHODS),
                                              help="How ptq picks each activation range"),
             bias_correction: bool = typer.Option(
                 False, "--bias-correction", help="ptq: correct each layer's expected int8 "
                 "output error in its bias (Nagel et al. 2019)"),
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
        _check_model_path(output)
        check_output(plan_out, "--plan")
        check_output(tmodel_out, "--tmodel")
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
                _save_model(qm, output)
            _emit(rec)
        elif mode == "ptq":
            if ds is None:
                fail("--mode ptq needs --data for calibration samples")
            plan = calibrate(m, ds.x_train[:samples],
                             CalibrationConfig(calibration, bias_correction=bias_correction))
            if plan_out:
                _write_text(plan_out, plan.to_json())
            rec = {"tensors": len(plan.activation_ranges), "method": calibration,
                   "emulated_int8_accuracy": accuracy(simulate_int8(m, plan), ds.x_test,
                                                      ds.y_test),
                   "float_accuracy": accuracy(m, ds.x_test, ds.y_test),
                   "plan": str(plan_out) if plan_out else None}
            if tmodel_out:
                rec.update(_write_int8_tmodel(m, plan, ds, tmodel_out))
            _emit(rec)
        else:
            fail(f"--mode must be ptq, int8-weights or int4-weights. Received: {mode!r}")
    _run(go)


def _write_int8_tmodel(model: Any, plan: Any, ds: Any, path: Path) -> dict[str, Any]:
    """Lowers (model, plan) to an int8 .tmodel at `path`; its engine accuracy on ds's test split."""
    import numpy as np
    from tether.converter import convert
    from tether.device import Engine

    tm = convert(model, quantize="int8", plan=plan)
    tm.save(path)
    eng = Engine(tm.to_bytes(), threads=1)
    x = ds.x_test.astype(np.float32)
    pred = [int(np.argmax(eng.run(x[i:i + 1]))) for i in range(len(x))]
    return {"engine_int8_accuracy": float(np.mean(np.array(pred) == ds.y_test)),
            "tmodel": str(path), "tmodel_bytes": len(tm.to_bytes())}


class _FitProgress:
    """`with _FitProgress(label, epochs, samples, batch) as cb:` a rich bar on stderr that a
    Keras fit given `callbacks=[cb]` advances batch by batch."""

    def __init__(self, label: str, epochs: int, samples: int, batch_size: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.label, self.steps = label, max(1, -(-samples // batch_size))
        self.total = epochs * self.steps
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=Console(stderr=True), transient=True)

    def __enter__(self) -> Any:
        import keras

        self.bar.__enter__()
        task = self.bar.add_task(self.label, total=self.total)
        outer = self

        class Callback(keras.callbacks.Callback):  # type: ignore[misc]
            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                outer.bar.advance(task)

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                loss = (logs or {}).get("loss")
                text = f"{outer.label}: epoch {epoch + 1}" + (
                    f", loss {float(loss):.4f}" if loss is not None else "")
                outer.bar.update(task, description=text, completed=(epoch + 1) * outer.steps)

        return Callback()

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)


@app.command()
def distill(teacher: str = typer.Argument(..., help="Teacher: " + MODEL_HELP),
            student: str = typer.Argument(..., help="Student: " + MODEL_HELP +
                                          "; a built-in name starts untrained"),
            output: Path = typer.Option(..., "-o", "--output", help="The .keras student to write"),
            data: str = typer.Option(..., "--data", help=DATA_HELP),
            temperature: float = typer.Option(4.0, "--temperature", help="T > 0"),
            alpha: float = typer.Option(0.9, "--alpha", help="Weight in [0, 1] of the "
                                        "teacher's soft targets"),
            epochs: int = typer.Option(5, "--epochs", min=1),
            batch_size: int = typer.Option(64, "--batch-size", min=1),
            learning_rate: float = typer.Option(1e-3, "--lr")) -> None:
    """Knowledge distillation (Hinton's loss with the T^2 factor): train the student on the
    teacher's softened outputs and the labels."""
    def go() -> None:
        _check_model_path(output)
        _check_lr(learning_rate)
        from tether.compression import DistillationConfig
        from tether.compression import distill as run_distill

        config = DistillationConfig(temperature, alpha)  # bad T/alpha fail before any loading
        t, ds = _load(teacher, data)
        s, _ = _load(student, data)
        from tether.compression._common import accuracy

        with _FitProgress("distilling", epochs, len(ds.x_train), batch_size) as cb:
            run_distill(t, s, ds.x_train, ds.y_train, config=config, epochs=epochs,
                        batch_size=batch_size, learning_rate=learning_rate, callbacks=[cb])
        _save_model(s, output)
        _emit({"teacher_accuracy": accuracy(t, ds.x_test, ds.y_test),
               "student_accuracy": accuracy(s, ds.x_test, ds.y_test),
               "temperature": temperature, "alpha": alpha, "epochs": epochs,
               "output": str(output)})
    _run(go)


@app.command()
def qat(model: str = typer.Argument(..., help=MODEL_HELP),
        data: str = typer.Option(..., "--data", help=DATA_HELP),
        tmodel_out: Path = typer.Option(..., "--tmodel", help="The int8 .tmodel to write"),
        epochs: int = typer.Option(1, "--epochs", min=1),
        batch_size: int = typer.Option(64, "--batch-size", min=1),
        learning_rate: float = typer.Option(1e-4, "--lr"),
        samples: int = typer.Option(200, "--samples", min=1,
                                    help="Samples from the training split that initialise "
                                    "the ranges"),
        plan_out: Path | None = typer.Option(None, "--plan", help="Also write the "
                                             "QuantizationPlan JSON")) -> None:
    """Quantization-aware training: fake-quant fine-tuning with BN folded as the converter
    folds it, then the int8 .tmodel lowered from the learned ranges."""
    def go() -> None:
        _check_lr(learning_rate)
        check_output(tmodel_out, "--tmodel")
        check_output(plan_out, "--plan")
        m, ds = _load(model, data)
        from tether.compression import export_qat, fine_tune, prepare_qat
        from tether.compression._common import accuracy

        q = prepare_qat(m, ds.x_train[:samples])
        with _FitProgress("quantization-aware training", epochs, len(ds.x_train),
                          batch_size) as cb:
            fine_tune(q, ds.x_train, ds.y_train, epochs=epochs, batch_size=batch_size,
                      learning_rate=learning_rate, callbacks=[cb])
        plain, plan = export_qat(q)
        if plan_out:
            _write_text(plan_out, plan.to_json())
        rec: dict[str, Any] = {"float_accuracy": accuracy(m, ds.x_test, ds.y_test),
                               "qat_model_accuracy": accuracy(q, ds.x_test, ds.y_test),
                               "plan": str(plan_out) if plan_out else None}
        rec.update(_write_int8_tmodel(plain, plan, ds, tmodel_out))
        _emit(rec)
    _run(go)
