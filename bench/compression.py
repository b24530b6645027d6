"""Compression benchmark: accuracy, size and engine latency of each compression of a model.

    .venv/bin/python bench/compression.py [--models cnn,mobilenet] [--epochs 6] [--runs 50]

Prints one JSON object per line (one per case), then a summary object. Cases: baseline,
50%/80% unstructured, 30%/50%-of-MACs structured, distilled student (3 seeds, with and
without the teacher), weight-only int8/int4, PTQ int8 (minmax/percentile/entropy), QAT int8,
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
import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np


def _git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except Exception:  # noqa: BLE001 - benchmark metadata only
        return "unknown"


def _timeit(run: Callable[[np.ndarray], Any], x: np.ndarray, runs: int) -> dict[str, float]:
    for _ in range(5):
        run(x)
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run(x)
        ts.append((time.perf_counter() - t0) * 1e3)
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


def _litert_int8_runner(model: Any, calib: np.ndarray, x: np.ndarray, y: np.ndarray
                        ) -> tuple[dict[str, Any], Callable[[np.ndarray], Any]]:
    """TensorFlow's full-integer PTQ (same calibration inputs) run in LiteRT, 1 thread."""
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
        return interp.get_tensor(out)

    pred = np.array([np.argmax(run(x[i:i + 1])) for i in range(len(x))])
    return {"accuracy": float(np.mean(pred == y)), "size_bytes": len(content)}, run


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

    tf_fields, runners["tf_full_integer_ptq_litert"] = _litert_int8_runner(base, calib, xv, yv)
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


def _cnn_student(input_shape: tuple[int, int, int], classes: int, seed: int) -> Any:
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    x_in = keras.Input(input_shape)
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x_in)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x) if x.shape[1] > 8 else x
    x = layers.Flatten()(x)
    return keras.Model(x_in, layers.Dense(classes)(x), name="student")


def bench_case(name: str, model_fn: Callable[[int], Any], ds: Any, args: argparse.Namespace,
               emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    import keras
    from tether.compression import (
        ChannelPruningConfig,
        DistillationConfig,
        MagnitudePruning,
        PolynomialDecay,
        WeightQuantConfig,
        count_macs,
        distill,
        fine_tune,
        prune_channels,
        quantize_weights,
        sparsity_report,
        strip_pruning,
    )
    from tether.compression._common import accuracy

    xt, yt, xv, yv = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    x1 = xv[:1].astype(np.float32)
    base = model_fn(0)
    fine_tune(base, xt, yt, epochs=args.epochs, batch_size=64, learning_rate=2e-3)
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
    steps = ft_epochs * math.ceil(len(xt) / 64)

    for sp in (0.5, 0.8):
        m = keras.models.clone_model(base)
        m.set_weights(base.get_weights())
        cb = MagnitudePruning(PolynomialDecay(sp, 0.0, 0, max(1, int(0.7 * steps)),
                                              frequency=max(1, steps // 20)))
        fine_tune(m, xt, yt, epochs=ft_epochs, batch_size=64, learning_rate=5e-4,
                  callbacks=[cb])
        plain = strip_pruning(m, cb)
        rep = sparsity_report(plain)
        row(f"unstructured_{int(sp * 100)}", plain, accuracy(plain, xv, yv),
            sparsity=rep.sparsity, kernel_dense_bytes=rep.dense_bytes,
            kernel_sparse_bytes=rep.sparse_bytes, kernel_compression=rep.compression,
            note="tmodel stores dense float weights until the converter has a sparse "
                 "encoding; kernel_sparse_bytes is the bitmask encoding's size")

    for frac, round_to in ((0.3, 1), (0.5, 1), (0.5, 8)):
        small, rep = prune_channels(base, ChannelPruningConfig(frac, target="macs",
                                                               round_to=round_to))
        acc0 = accuracy(small, xv, yv)
        fine_tune(small, xt, yt, epochs=ft_epochs, batch_size=64, learning_rate=5e-4)
        key = f"structured_{int(frac * 100)}" + (f"_round{round_to}" if round_to > 1 else "")
        r = row(f"{key}_macs", small, accuracy(small, xv, yv), round_to=round_to,
                accuracy_before_finetune=acc0, mac_reduction=rep.mac_reduction,
                channels=rep.channels)
        summary[key] = {"mac_reduction": rep.mac_reduction,
            "accuracy_drop_pts": r["accuracy_drop_pts"],
            "accuracy_drop_vs_control_pts": 100 * (ctrl_acc - r["accuracy"]),
            "engine_latency_reduction": r["engine_latency_reduction"]}

    runs = []
    for seed in range(3):
        for teacher in (True, False):
            st = _cnn_student(ds.input_shape, ds.num_classes, seed)
            if teacher:
                distill(ctrl, st, xt, yt, config=DistillationConfig(2.0, 0.5),
                        epochs=args.student_epochs, batch_size=64, learning_rate=3e-3)
            else:
                fine_tune(st, xt, yt, epochs=args.student_epochs, batch_size=64,
                          learning_rate=3e-3)
            acc = accuracy(st, xv, yv)
            runs.append({"seed": seed, "teacher": teacher, "accuracy": acc})
            emit({"name": f"{name}/student_seed{seed}_{'distilled' if teacher else 'plain'}",
                  "case": "student", "seed": seed, "distilled": teacher, "accuracy": acc})
    d = [r["accuracy"] for r in runs if r["teacher"]]
    p = [r["accuracy"] for r in runs if not r["teacher"]]
    st = _cnn_student(ds.input_shape, ds.num_classes, 0)
    row("distilled_student_mean", None, float(np.mean(d)),
        plain_student_mean=float(np.mean(p)), runs=runs, macs=count_macs(st),
        params=int(st.count_params()), **_engine(st, x1, args.runs))
    summary["distillation"] = {"distilled_mean": float(np.mean(d)),
                               "plain_mean": float(np.mean(p))}

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
    parser.add_argument("--cases", default="all", choices=("all", "int8"),
                        help="int8: only the baseline and the int8 rows (PTQ, QAT, TensorFlow)")
    args = parser.parse_args()

    import keras

    from tether.data import Dataset, mnist5k

    meta = {"git_sha": _git_sha(), "device": platform.processor() or platform.machine(),
            "isa": platform.machine(), "threads": 1}

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
