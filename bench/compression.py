"""Compression benchmark: accuracy, size and engine latency of each compression of a model.

    .venv/bin/python bench/compression.py [--models cnn,mobilenet] [--epochs 6] [--runs 50]

Prints one JSON object per line (one per case), then a summary object. Cases: baseline,
50%/80% unstructured, 30%/50%-of-MACs structured, distilled student (3 seeds, with and
without the teacher), weight-only int8/int4, PTQ int8 (minmax/percentile/entropy/mse), QAT int8,
and TensorFlow's own full-integer post-training quantization run in LiteRT.

Accuracy of float rows is measured in Keras (the engine's float parity is tested by the
converter's suite). The int8 rows of tether (PTQ plans of each calibration method, QAT, the
converter's own calibration) are `convert(model, quantize="int8", plan=...)` run by the
engine on the whole test split, beside TensorFlow's full-integer PTQ (same calibration
inputs) in LiteRT; their latencies are timed round-robin in one process
(`--cases int8` runs only the baseline and these rows). `emulated_accuracy` is the Keras
emulation (`simulate_int8`) of the same plan. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
from tether.bench import run_metadata, time_fn


def _timeit(run: Callable[[np.ndarray], Any], x: np.ndarray, runs: int) -> dict[str, float]:
    ts = time_fn(lambda: run(x), warmup=5, runs=runs)
    return {"median_ms": float(np.median(ts)), "p90_ms": float(np.percentile(ts, 90))}


def _engine(model: Any, x1: np.ndarray, runs: int) -> dict[str, Any]:
    """Float .tmodel size and tether engine latency (batch 1, 1 thread)."""
    from tether.converter import convert
    from tether.device import Engine

    data = convert(model).to_bytes()
    eng = Engine(data, threads=1)
    out = {"tmodel_bytes": len(data), **{f"engine_{k}": v for k, v in
                                         _timeit(lambda a: eng.run(a), x1, runs).items()}}
    return out


def _bench_cnn(input_shape: tuple[int, int, int], classes: int, seed: int) -> Any:
    """demo_cnn's ops (conv+BN+ReLU, depthwise, residual add, pooling, softmax) at a width
    where the engine's time is in the kernels rather than per-op overhead."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    x_in = keras.Input(input_shape, name="image")
    x = layers.Conv2D(32, 3, padding="same", use_bias=False, name="stem_conv")(x_in)
    x = layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="block_dw")(x)
    y = layers.BatchNormalization(momentum=0.9, name="block_dw_bn")(y)
    y = layers.ReLU(max_value=6.0, name="block_dw_relu6")(y)
    y = layers.Conv2D(32, 1, use_bias=False, name="block_pw")(y)
    y = layers.BatchNormalization(momentum=0.9, name="block_pw_bn")(y)
    x = layers.Add(name="block_add")([x, y])
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Conv2D(64, 3, padding="same", use_bias=False, name="conv2")(x)
    x = layers.BatchNormalization(momentum=0.9, name="conv2_bn")(x)
    x = layers.ReLU(name="conv2_relu")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    out = layers.Dense(classes, activation="softmax", name="classifier")(x)
    return keras.Model(x_in, out, name="mnist_cnn")


def _timeit_interleaved(runners: dict[str, Callable[[np.ndarray], Any]], x: np.ndarray,
                        runs: int) -> dict[str, dict[str, float]]:
    """Median/p90 ms of each runner, timed round-robin (one call of each per round) so
    that load changes on a shared machine hit every runner alike."""
    for run in runners.values():
        for _ in range(5):
            run(x)
    ts: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(runs):
        for k, run in runners.items():
            t0 = time.perf_counter()
            run(x)
            ts[k].append((time.perf_counter() - t0) * 1e3)
    return {k: {"median_ms": float(np.median(v)), "p90_ms": float(np.percentile(v, 90))}
            for k, v in ts.items()}


def _engine_int8(model: Any, x: np.ndarray, y: np.ndarray, **convert_kw: Any
                 ) -> tuple[dict[str, Any], Callable[[np.ndarray], Any] | None,
                            np.ndarray | None]:
    """tether int8: `convert(model, quantize="int8", **convert_kw)` run by the engine on
    every test input (batch 1, 1 thread). Returns (fields, runner, outputs); a model the
    engine cannot load (an int8 kernel it lacks) gives engine_error and no runner."""
    from tether.converter import convert
    from tether.device import Engine

    try:
        data = convert(model, quantize="int8", **convert_kw).to_bytes()
        eng = Engine(data, threads=1)
    except Exception as e:  # noqa: BLE001 - reported in the row, not hidden
        return {"engine_error": f"{type(e).__name__}: {e}"[:300]}, None, None
    out = np.concatenate([np.asarray(eng.run(x[i:i + 1])) for i in range(len(x))])
    return ({"accuracy": float(np.mean(out.argmax(-1) == y)), "tmodel_bytes": len(data)},
            lambda a: eng.run(a), out)


def _litert_int8(model: Any, calib: np.ndarray, x: np.ndarray
                 ) -> tuple[np.ndarray, int, Callable[[np.ndarray], np.ndarray]]:
    """TensorFlow's full-integer PTQ of `model` (calibrated on `calib`) run in LiteRT, batch 1,
    1 thread: (float outputs on every input of `x`, .tflite bytes, the runner for timing)."""
    from ai_edge_litert.interpreter import Interpreter

    from tether.peers import keras_to_tflite

    content = keras_to_tflite(model, representative=calib)
    interp = Interpreter(model_content=content, num_threads=1)
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], [1, *x.shape[1:]], strict=False)
    interp.allocate_tensors()
    out = interp.get_output_details()[0]["index"]

    def run(a: np.ndarray) -> np.ndarray:
        interp.set_tensor(inp["index"], a)
        interp.invoke()
        return np.array(interp.get_tensor(out), np.float32)

    return np.concatenate([run(x[i:i + 1]) for i in range(len(x))]), len(content), run


def bench_int8(name: str, base: Any, ds: Any, args: argparse.Namespace,
               emit: Callable[[dict[str, Any]], None], row: Callable[..., dict[str, Any]]
               ) -> dict[str, Any]:
    """The int8 rows: TensorFlow's full-integer PTQ in LiteRT, the converter's own
    calibration, tether PTQ plans (each calibration method) and QAT, each tether row
    converted with `convert(..., quantize="int8", plan=...)` and run in the engine
    (accuracy on the whole test split); latencies timed round-robin in one process."""
    from tether.compression import (
        CALIBRATION_METHODS,
        CalibrationConfig,
        calibrate,
        export_qat,
        fine_tune,
        prepare_qat,
        simulate_int8,
    )
    from tether.compression._common import accuracy
    from tether.converter import convert
    from tether.device import Engine

    xt, yt, xv, yv = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    xv = xv.astype(np.float32)
    calib = xt[:200].astype(np.float32)
    summary: dict[str, Any] = {}
    cases: list[tuple[str, dict[str, Any]]] = []
    runners: dict[str, Callable[[np.ndarray], Any]] = {}
    float_eng = Engine(convert(base).to_bytes(), threads=1)
    runners["float_engine"] = lambda a: float_eng.run(a)

    tf_out, tf_bytes, runners["tf_full_integer_ptq_litert"] = _litert_int8(base, calib, xv)
    tf_fields = {"accuracy": float(np.mean(tf_out.argmax(-1) == yv)), "size_bytes": tf_bytes}
    cases.append(("tf_full_integer_ptq_litert", tf_fields))
    fields, run, _ = _engine_int8(base, xv, yv, calibration=calib)
    fields["note"] = "the converter's own min-max calibration on the IR graph"
    cases.append(("tether_converter_int8_engine", fields))
    if run is not None:
        runners["tether_converter_int8_engine"] = run
    for method in CALIBRATION_METHODS:
        t0 = time.perf_counter()
        plan = calibrate(base, calib, CalibrationConfig(method))
        cal_s = time.perf_counter() - t0
        fields, run, _ = _engine_int8(base, xv, yv, plan=plan)
        fields.update(calibration_s=cal_s,
                      emulated_accuracy=accuracy(simulate_int8(base, plan), xv, yv))
        cases.append((f"ptq_int8_{method}", fields))
        if run is not None:
            runners[f"ptq_int8_{method}"] = run

    qat = prepare_qat(base, calib)
    fine_tune(qat, xt, yt, epochs=args.qat_epochs, batch_size=64, learning_rate=1e-4)
    plain, plan = export_qat(qat)
    fields, run, out = _engine_int8(plain, xv, yv, plan=plan)
    ref = qat.predict(xv, batch_size=256, verbose=0)
    fields.update(qat_model_accuracy=float(np.mean(ref.argmax(-1) == yv)),
                  emulated_accuracy=accuracy(simulate_int8(plain, plan), xv, yv),
                  epochs=args.qat_epochs)
    if out is not None:  # how closely the engine's int8 follows QAT's fake-quant forward
        fields.update(engine_vs_qat_top1_agreement=float(np.mean(out.argmax(-1) ==
                                                                 ref.argmax(-1))),
                      engine_vs_qat_max_abs_diff=float(np.abs(out - ref).max()))
        runners["qat_int8"] = run
    cases.append(("qat_int8", fields))

    lat = _timeit_interleaved(runners, xv[:1], args.runs)
    load = os.getloadavg()
    for case, fields in cases:
        timing = lat.get(case, {})
        key = "litert" if case.startswith("tf_") else "engine"
        extra = {f"{key}_{k}": v for k, v in timing.items()}
        if case in lat:
            extra["float_engine_median_ms"] = lat["float_engine"]["median_ms"]
        row(case, None, fields.get("accuracy", float("nan")), **fields, **extra,
            loadavg_1m=load[0])
        summary[f"{case}_accuracy"] = fields.get("accuracy")
    return summary


def _fidelity(p: np.ndarray, ref: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy of int8 outputs `p` and their fidelity to the float model's `ref` (both
    softmax probabilities): top-1 agreement, mean L1 distance of the probability vectors,
    and mean KL(ref || p) with both floored at 1/512 (half the int8 softmax step, below
    which int8 gives 0) and renormalized, so the float model scores 0."""
    q = np.maximum(p, 1 / 512)
    q = q / q.sum(-1, keepdims=True)
    r = np.maximum(ref, 1 / 512)
    r = r / r.sum(-1, keepdims=True)
    return {"accuracy": float(np.mean(p.argmax(-1) == y)),
            "top1_agreement": float(np.mean(p.argmax(-1) == ref.argmax(-1))),
            "mean_l1": float(np.abs(p - ref).sum(-1).mean()),
            "mean_kl": float((r * np.log(r / q)).sum(-1).mean())}


def bench_ptq_seeds(name: str, model_fn: Callable[[int], Any], ds: Any,
                    args: argparse.Namespace, emit: Callable[[dict[str, Any]], None]
                    ) -> dict[str, Any]:
    """PTQ int8, tether vs TensorFlow, over several trained models (`--seeds`).

    The training split is cut once (seed 0) into 80% train and 20% validation. Per seed: a
    model trained on the 80%; the same `--calib-samples` images of it calibrate TensorFlow's
    full-integer PTQ (run in LiteRT) and every tether plan (each calibration method, with
    and without bias correction; `convert(..., plan=...)` run in the engine). Each int8
    model is scored on validation and test: accuracy, and fidelity to the float model
    (top-1 agreement, mean L1 of the probabilities, KL). tether's recommended plan is the
    one of least mean validation L1 over seeds, fixed before any test number is read; the
    criterion compares its mean test accuracy loss (float - int8) with TensorFlow's.
    """
    from tether.compression import (
        CALIBRATION_METHODS,
        CalibrationConfig,
        calibrate,
        fine_tune,
    )
    from tether.converter import convert
    from tether.device import Engine

    perm = np.random.default_rng(0).permutation(len(ds.x_train))
    n_val = len(perm) // 5
    xtr, ytr = ds.x_train[perm[n_val:]], ds.y_train[perm[n_val:]]
    xva, yva = ds.x_train[perm[:n_val]].astype(np.float32), ds.y_train[perm[:n_val]]
    xte, yte = ds.x_test.astype(np.float32), ds.y_test
    calib = xtr[:args.calib_samples].astype(np.float32)
    xall = np.concatenate([xva, xte])
    results: dict[str, list[dict[str, Any]]] = {}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        t0 = time.perf_counter()
        model = model_fn(seed)
        fine_tune(model, xtr, ytr, epochs=args.epochs, batch_size=64, learning_rate=2e-3)
        if args.baseline_finish_epochs:
            fine_tune(model, xtr, ytr, epochs=args.baseline_finish_epochs, batch_size=64,
                      learning_rate=5e-4)
        train_s = time.perf_counter() - t0
        ref = model.predict(xall, batch_size=256, verbose=0)
        outs: dict[str, np.ndarray] = {"float": ref}
        outs["tf_full_integer_ptq"], _, _ = _litert_int8(model, calib, xall)
        for method in CALIBRATION_METHODS:
            # one calibration per method: bias correction leaves the ranges as they are
            with_bc = calibrate(model, calib, CalibrationConfig(method, bias_correction=True))
            for bc in (False, True):
                plan = with_bc if bc else dataclasses.replace(with_bc, bias_corrections={})
                eng = Engine(convert(model, quantize="int8", plan=plan).to_bytes(), threads=1)
                outs[f"tether_{method}{'_bc' if bc else ''}"] = np.concatenate(
                    [np.asarray(eng.run(xall[i:i + 1])) for i in range(len(xall))])
        load = os.getloadavg()[0]
        for case, p in outs.items():
            r = {"seed": seed, "case": case,
                 "val": _fidelity(p[:n_val], ref[:n_val], yva),
                 "test": _fidelity(p[n_val:], ref[n_val:], yte)}
            results.setdefault(case, []).append(r)
            emit({"name": f"{name}/ptq_seed{seed}/{case}", **r, "train_s": train_s,
                  "loadavg_1m": load})

    def mean(case: str, split: str, key: str) -> float:
        return float(np.mean([r[split][key] for r in results[case]]))

    tether_cases = [c for c in results if c.startswith("tether_")]
    chosen = min(tether_cases, key=lambda c: (mean(c, "val", "mean_l1"),
                                              -mean(c, "val", "accuracy")))
    table = {c: {f"{split}_{k}": mean(c, split, k) for split in ("val", "test")
                 for k in ("accuracy", "top1_agreement", "mean_l1", "mean_kl")}
             for c in results}
    loss = {c: table["float"]["test_accuracy"] - table[c]["test_accuracy"] for c in results}
    per_seed_loss = {c: [results["float"][i]["test"]["accuracy"] - r["test"]["accuracy"]
                         for i, r in enumerate(results[c])] for c in results}
    out = {"seeds": list(range(args.first_seed, args.first_seed + args.seeds)),
           "calib_samples": len(calib), "val": n_val, "test": len(yte),
           "train": len(ytr), "means": table, "test_accuracy_loss_mean": loss,
           "test_accuracy_loss_per_seed": per_seed_loss, "chosen_by_val_l1": chosen,
           "criterion_met": loss[chosen] <= loss["tf_full_integer_ptq"],
           "default_minmax_criterion_met": loss["tether_minmax"] <= loss["tf_full_integer_ptq"]}
    emit({"name": f"{name}/ptq_seeds", "case": "ptq_seeds", **out})
    return out


def _cnn_student(input_shape: tuple[int, int, int], classes: int, seed: int,
                 width: int = 1) -> Any:
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    x_in = keras.Input(input_shape)
    x = layers.Conv2D(8 * width, 3, strides=2, padding="same", activation="relu")(x_in)
    x = layers.Conv2D(16 * width, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x) if x.shape[1] > 8 else x
    x = layers.Flatten()(x)
    return keras.Model(x_in, layers.Dense(classes)(x), name="student")


def _tether_run_latency(models: dict[str, bytes], repeat: int, rounds: int = 3
                        ) -> dict[str, float]:
    """Median ms of `tether-run MODEL --repeat N` (the C engine alone, no Python binding),
    models taken round-robin for `rounds` rounds; the median of the rounds' medians."""
    import re
    import tempfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "device" / "runtime"
    tool = next((p for p in (root / "build-py" / "tether-run", root / "build" / "tether-run")
                 if p.is_file()), None)
    if tool is None:
        return {}
    out: dict[str, list[float]] = {k: [] for k in models}
    with tempfile.TemporaryDirectory() as d:
        paths = {}
        for k, data in models.items():
            paths[k] = Path(d) / f"{k}.tmodel"
            paths[k].write_bytes(data)
        for _ in range(rounds):
            for k, path in paths.items():
                text = subprocess.run([str(tool), str(path), "--repeat", str(repeat)],
                                      capture_output=True, text=True, check=True).stdout
                m = re.search(r"latency: median ([0-9.]+) ms", text)
                if m:
                    out[k].append(float(m.group(1)))
    return {k: float(np.median(v)) for k, v in out.items() if v}


def _gemm_tile() -> int:
    """Output-channel tile (NR) of the engine's fp32 GEMM kernel on this CPU."""
    from tether.bench import isa

    return {"avx512": 32, "avx2": 16, "neon": 8}.get(isa(), 1)


def _shifted_copies(x: np.ndarray, k: int) -> np.ndarray:
    """x followed by its copies translated k pixels left, right, up and down (zero fill):
    the jitter Hinton et al. trained their MNIST teacher with."""
    out = [x]
    for axis, step in ((2, -k), (2, k), (1, -k), (1, k)):
        y = np.roll(x, step, axis=axis)
        idx = [slice(None)] * x.ndim
        idx[axis] = slice(0, step) if step > 0 else slice(step, None)
        y[tuple(idx)] = 0
        out.append(y)
    return np.concatenate(out)


def bench_distillation(name: str, teacher_fn: Callable[[int], Any], ds: Any,
                       args: argparse.Namespace, emit: Callable[[dict[str, Any]], None]
                       ) -> dict[str, Any]:
    """Distillation, honestly: T and alpha are chosen on a validation split carved from the
    training data (20%, seed 0), never on the test split; then 3 seeds x (distilled,
    plain) of the same small student, same epochs and learning rate, scored on the test
    split. The teacher is trained on the remaining 80% only."""
    from tether.compression import DistillationConfig, count_macs, distill, fine_tune
    from tether.compression._common import accuracy

    perm = np.random.default_rng(0).permutation(len(ds.x_train))
    n_val = len(perm) // 5
    xtr, ytr = ds.x_train[perm[n_val:]], ds.y_train[perm[n_val:]]
    xva, yva = ds.x_train[perm[:n_val]], ds.y_train[perm[:n_val]]
    teacher = teacher_fn(0)
    xte, yte = (_shifted_copies(xtr, args.teacher_shift), np.tile(ytr, 5)) \
        if args.teacher_shift else (xtr, ytr)
    fine_tune(teacher, xte, yte, epochs=args.epochs, batch_size=64, learning_rate=2e-3)
    if args.baseline_finish_epochs:
        fine_tune(teacher, xte, yte, epochs=args.baseline_finish_epochs, batch_size=64,
                  learning_rate=5e-4)
    t_val, t_test = accuracy(teacher, xva, yva), accuracy(teacher, ds.x_test, ds.y_test)
    epochs, lr = args.student_epochs, 3e-3
    if args.student_samples:  # few labels: both students see only these, the teacher all
        xtr, ytr = xtr[:args.student_samples], ytr[:args.student_samples]

    def student(seed: int, cfg: Any) -> Any:
        import keras

        st = _cnn_student(ds.input_shape, ds.num_classes, seed, args.student_width)
        rate: Any = lr
        if args.student_cosine:  # the same decay for both arms: final weights settle
            rate = keras.optimizers.schedules.CosineDecay(lr, epochs * -(-len(xtr) // 64))
        if cfg is None:
            fine_tune(st, xtr, ytr, epochs=epochs, batch_size=64, learning_rate=rate)
        else:
            distill(teacher, st, xtr, ytr, config=cfg, epochs=epochs, batch_size=64,
                    learning_rate=rate)
        return st

    selection = []
    for t, a in ((1.0, 0.5), (2.0, 0.5), (4.0, 0.5), (4.0, 0.9), (8.0, 0.9), (8.0, 0.5)):
        acc = accuracy(student(100, DistillationConfig(t, a)), xva, yva)
        selection.append({"temperature": t, "alpha": a, "val_accuracy": acc})
    plain_val = accuracy(student(100, None), xva, yva)
    best = max(selection, key=lambda r: r["val_accuracy"])
    cfg = DistillationConfig(best["temperature"], best["alpha"])
    emit({"name": f"{name}/distillation_selection", "case": "distillation_selection",
          "grid": selection, "plain_val_accuracy": plain_val, "chosen": best,
          "teacher_val_accuracy": t_val, "teacher_test_accuracy": t_test,
          "split": {"teacher_train": len(perm) - n_val, "student_train": len(xtr),
                    "val": n_val, "test": len(ds.x_test)},
          "note": "selection seed 100 on the validation split; test split unused"})
    runs = []
    for seed in range(3):
        for distilled in (True, False):
            acc = accuracy(student(seed, cfg if distilled else None), ds.x_test, ds.y_test)
            runs.append({"seed": seed, "distilled": distilled, "accuracy": acc})
            emit({"name": f"{name}/student_seed{seed}_{'distilled' if distilled else 'plain'}",
                  "case": "student", "seed": seed, "distilled": distilled, "accuracy": acc,
                  "epochs": epochs, "temperature": cfg.temperature, "alpha": cfg.alpha})
    d = [r["accuracy"] for r in runs if r["distilled"]]
    p = [r["accuracy"] for r in runs if not r["distilled"]]
    st = _cnn_student(ds.input_shape, ds.num_classes, 0, args.student_width)
    out = {"distilled_mean": float(np.mean(d)), "plain_mean": float(np.mean(p)),
           "distilled_wins": int(sum(a > b for a, b in zip(d, p))),
           "temperature": cfg.temperature, "alpha": cfg.alpha, "runs": runs,
           "teacher_test_accuracy": t_test, "student_macs": count_macs(st),
           "student_params": int(st.count_params()), "epochs": epochs,
           "learning_rate": lr, "cosine_decay": bool(args.student_cosine),
           "teacher_shift": args.teacher_shift}
    emit({"name": f"{name}/distillation", "case": "distillation", **out})
    return out


def bench_case(name: str, model_fn: Callable[[int], Any], ds: Any, args: argparse.Namespace,
               emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    import keras
    from tether.compression import (
        ChannelPruningConfig,
        WeightQuantConfig,
        count_macs,
        fine_tune,
        prune_channels,
        prune_weights,
        quantize_weights,
        sparsity_report,
    )
    from tether.compression._common import accuracy

    if args.cases == "distill":
        return {"model": name, "distillation": bench_distillation(name, model_fn, ds, args,
                                                                  emit)}
    if args.cases == "ptq":
        return {"model": name, "ptq": bench_ptq_seeds(name, model_fn, ds, args, emit)}
    xt, yt, xv, yv = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    x1 = xv[:1].astype(np.float32)
    base = model_fn(0)
    fine_tune(base, xt, yt, epochs=args.epochs, batch_size=64, learning_rate=2e-3)
    if args.baseline_finish_epochs:  # the low-rate phase fine-tuning uses: a converged base
        fine_tune(base, xt, yt, epochs=args.baseline_finish_epochs, batch_size=64,
                  learning_rate=5e-4)
    base_acc = accuracy(base, xv, yv)
    summary: dict[str, Any] = {"model": name}

    def row(case: str, model: Any | None, acc: float, **extra: Any) -> dict[str, Any]:
        r: dict[str, Any] = {"name": f"{name}/{case}", "case": case, "accuracy": acc,
                             "accuracy_drop_pts": 100 * (base_acc - acc)}
        if model is not None:
            r["macs"] = count_macs(model)
            r["params"] = int(model.count_params())
            r.update(_engine(model, x1, args.runs))
            if "baseline_engine_ms" in summary:
                r["engine_latency_reduction"] = 1 - r["engine_median_ms"] / summary[
                    "baseline_engine_ms"]
        r.update(extra)
        emit(r)
        return r

    b = row("baseline", base, base_acc)
    summary["baseline_accuracy"] = base_acc
    summary["baseline_engine_ms"] = b["engine_median_ms"]
    if args.cases == "int8":
        summary.update(bench_int8(name, base, ds, args, emit, row))
        return summary

    ft_epochs = args.finetune_epochs
    # control: the baseline given the same extra fine-tuning every compressed model gets
    ctrl = keras.models.clone_model(base)
    ctrl.set_weights(base.get_weights())
    fine_tune(ctrl, xt, yt, epochs=ft_epochs, batch_size=64, learning_rate=5e-4)
    ctrl_acc = accuracy(ctrl, xv, yv)
    emit({"name": f"{name}/baseline_plus_finetune", "case": "baseline_plus_finetune",
          "accuracy": ctrl_acc, "epochs": ft_epochs,
          "note": "control for the fine-tuned rows (same extra epochs, no compression)"})
    summary["baseline_plus_finetune_accuracy"] = ctrl_acc

    for sp in (0.5, 0.8):
        m = keras.models.clone_model(base)
        m.set_weights(base.get_weights())
        plain = prune_weights(m, xt, yt, sparsity=sp, epochs=ft_epochs, batch_size=64,
                              learning_rate=5e-4)
        rep = sparsity_report(plain)
        from tether.converter import convert

        dense_tm, sparse_tm = convert(plain, sparse=None), convert(plain)
        row(f"unstructured_{int(sp * 100)}", plain, accuracy(plain, xv, yv),
            sparsity=rep.sparsity, kernel_dense_bytes=rep.dense_bytes,
            kernel_sparse_bytes=rep.sparse_bytes, kernel_compression=rep.compression,
            tmodel_dense_bytes=len(dense_tm.to_bytes()),
            tmodel_sparse_bytes=len(sparse_tm.to_bytes()),
            tmodel_constant_bytes=sparse_tm.report.constant_bytes,
            tmodel_stored_constant_bytes=sparse_tm.report.stored_constant_bytes,
            note="tmodel_bytes is the default conversion (sparse constants bitmask-encoded, "
                 "FORMAT.md); the engine decodes them at load, latency as dense")

    from tether.converter import convert
    from tether.device import Engine

    tile = _gemm_tile()
    structured = (
        ("structured_30_macs", ChannelPruningConfig(0.3, target="macs")),
        ("structured_50_macs", ChannelPruningConfig(0.5, target="macs")),
        ("structured_50_macs_tuned", ChannelPruningConfig(
            0.5, target="macs", allocation=args.prune_allocation, tile=tile,
            round_to=args.prune_round_to, max_group_fraction=args.max_group_fraction,
            exclude=tuple(n for n in args.prune_exclude.split(",") if n))),
    )
    base_bytes = convert(base).to_bytes()
    base_eng = Engine(base_bytes, threads=1)
    runners: dict[str, Callable[[np.ndarray], Any]] = {"baseline": lambda a: base_eng.run(a)}
    files = {"baseline": base_bytes}
    pending = []
    for key, cfg in structured:
        small, rep = prune_channels(base, cfg)
        acc0 = accuracy(small, xv, yv)
        if key.endswith("_tuned") and args.prune_distill:
            # fine-tune by distilling from the unpruned model (T=2, alpha=0.5; not tuned)
            from tether.compression import DistillationConfig, distill

            distill(base, small, xt, yt, config=DistillationConfig(2.0, 0.5),
                    epochs=ft_epochs, batch_size=64, learning_rate=5e-4)
        else:
            fine_tune(small, xt, yt, epochs=ft_epochs, batch_size=64, learning_rate=5e-4)
        files[key] = convert(small).to_bytes()
        eng = Engine(files[key], threads=1)
        runners[key] = eng.run
        pending.append((key, cfg, small, rep, acc0))
    lat = _timeit_interleaved(runners, x1, args.runs)
    c_lat = _tether_run_latency(files, max(100, args.runs))
    load = os.getloadavg()
    for key, cfg, small, rep, acc0 in pending:
        acc = accuracy(small, xv, yv)
        reduction = 1 - lat[key]["median_ms"] / lat["baseline"]["median_ms"]
        row(key, None, acc, allocation=cfg.allocation, tile=cfg.tile, round_to=cfg.round_to,
            exclude=list(cfg.exclude),
            distilled_from_baseline=key.endswith("_tuned") and args.prune_distill,
            accuracy_before_finetune=acc0, mac_reduction=rep.mac_reduction,
            macs=rep.macs_after, params=rep.params_after,
            channels={k: v[1] for k, v in rep.channels.items()},
            **{f"engine_{k}": v for k, v in lat[key].items()},
            baseline_engine_median_ms_same_run=lat["baseline"]["median_ms"],
            engine_latency_reduction=reduction, finetune_epochs=ft_epochs,
            tether_run_median_ms=c_lat.get(key),
            tether_run_baseline_median_ms=c_lat.get("baseline"),
            tether_run_latency_reduction=(1 - c_lat[key] / c_lat["baseline"]
                                          if key in c_lat and "baseline" in c_lat else None),
            accuracy_drop_vs_control_pts=100 * (ctrl_acc - acc), loadavg_1m=load[0])
        summary[key] = {"mac_reduction": rep.mac_reduction,
                        "accuracy_drop_pts": 100 * (base_acc - acc),
                        "accuracy_drop_vs_control_pts": 100 * (ctrl_acc - acc),
                        "engine_latency_reduction": reduction,
                        "tether_run_latency_reduction": (
                            1 - c_lat[key] / c_lat["baseline"]
                            if key in c_lat and "baseline" in c_lat else None)}

    if args.cases == "prune":
        return summary
    summary["distillation"] = bench_distillation(name, model_fn, ds, args, emit)

    for bits in (8, 4):
        qm, rep = quantize_weights(base, WeightQuantConfig(bits=bits))
        row(f"weight_only_int{bits}", None, accuracy(qm, xv, yv),
            kernel_float_bytes=rep.float_bytes, kernel_quantized_bytes=rep.quantized_bytes,
            max_rel_error=rep.max_rel_error)

    summary.update(bench_int8(name, base, ds, args, emit, row))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn", help="cnn,mobilenet")
    parser.add_argument("--epochs", type=int, default=12, help="baseline training epochs")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--student-epochs", type=int, default=5)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--cases", default="all",
                        choices=("all", "int8", "distill", "prune", "ptq"),
                        help="int8: only the baseline and the int8 rows (PTQ, QAT, TensorFlow); "
                             "distill: only the distillation protocol; prune: baseline, "
                             "control, unstructured and structured rows; ptq: tether PTQ vs "
                             "TensorFlow's over --seeds trained models (bench_ptq_seeds)")
    parser.add_argument("--seeds", type=int, default=3, help="ptq: trained models (seeds)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="ptq: seeds run from this one (runs are deterministic, so two "
                             "invocations can split the seeds)")
    parser.add_argument("--calib-samples", type=int, default=200,
                        help="ptq: calibration images (the same for TensorFlow and tether)")
    parser.add_argument("--baseline-finish-epochs", type=int, default=0,
                        help="extra baseline epochs at the fine-tuning rate (5e-4), so the "
                             "baseline is converged before it is compared with fine-tuned "
                             "compressed models")
    parser.add_argument("--student-samples", type=int, default=0,
                        help="distillation: students (distilled and plain) train on only this "
                             "many labelled samples of the train split; 0 = all")
    parser.add_argument("--prune-allocation", default="uniform", choices=("uniform", "latency"),
                        help="structured_50_macs_tuned: ChannelPruningConfig.allocation "
                             "(latency: tile = this CPU's GEMM NR)")
    parser.add_argument("--prune-round-to", type=int, default=1,
                        help="structured_50_macs_tuned: ChannelPruningConfig.round_to")
    parser.add_argument("--prune-exclude", default="",
                        help="structured_50_macs_tuned: layers kept whole, comma-separated "
                             "(e.g. a stem conv that fits one GEMM tile already)")
    parser.add_argument("--prune-distill", action="store_true",
                        help="structured_50_macs_tuned: fine-tune by distilling from the "
                             "unpruned baseline (T=2, alpha=0.5) instead of labels alone")
    parser.add_argument("--teacher-shift", type=int, default=0,
                        help="distillation: train the teacher on the images plus copies shifted "
                        "this many pixels in 4 directions (students never see them)")
    parser.add_argument("--student-cosine", action="store_true",
                        help="distillation: cosine-decay the students' learning rate to 0 over "
                        "the run (both arms)")
    parser.add_argument("--student-width", type=int, default=1,
                        help="distillation: student channel multiplier (8w and 16w channels)")
    parser.add_argument("--max-group-fraction", type=float, default=0.6,
                        help="structured_50_macs_tuned with --prune-allocation latency: most "
                             "channels one group may lose")
    args = parser.parse_args()

    import keras

    from tether.data import Dataset, mnist5k

    meta = run_metadata(threads=1)

    def emit(r: dict[str, Any]) -> None:
        print(json.dumps({**r, **meta}, default=float), flush=True)

    ds = mnist5k()
    summaries = []
    for name in args.models.split(","):
        if name == "cnn":
            summaries.append(bench_case(
                "mnist5k_cnn", lambda s: _bench_cnn(ds.input_shape, ds.num_classes, s), ds,
                args, emit))
        elif name == "mobilenet":
            import tensorflow as tf

            def resize(x: np.ndarray) -> np.ndarray:
                out = [tf.image.resize(tf.image.grayscale_to_rgb(tf.constant(x[i:i + 256])),
                                       (96, 96)).numpy() for i in range(0, len(x), 256)]
                return np.concatenate(out).astype(np.float32)

            big = Dataset("mnist5k_96", resize(ds.x_train), ds.y_train, resize(ds.x_test),
                          ds.y_test, ds.class_names)

            def mnv2(seed: int) -> Any:
                keras.utils.set_random_seed(seed)
                m = keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3),
                                                   weights=None, classes=10,
                                                   classifier_activation="softmax")
                for layer in m.layers:  # 0.999 needs far more steps than a few epochs
                    if isinstance(layer, keras.layers.BatchNormalization):
                        layer.momentum = 0.9
                return m
            summaries.append(bench_case("mnist5k_mobilenet_v2_0.35_96", mnv2, big, args, emit))
        else:
            parser.error(f"--models: unknown '{name}'; choose from cnn, mobilenet")
    emit({"name": "summary", "summaries": summaries})


if __name__ == "__main__":
    main()
