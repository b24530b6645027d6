"""On-device transfer learning benchmark (JSON lines): a cloud model trained on digits 0-4 of
mnist5k adapted to digits 5-9 from 50 images per class held by the device.

    .venv/bin/python bench/transfer.py [--cases transfer,finetune,incremental] [--epochs 60]
        [--cloud-epochs 8] [--repeats 20] [--incremental-cloud-epochs 20]

For each part A (the demo CNN trained on 0-4, cut at its global pooling; MobileNetV2 0.35 96,
built-in weights, on the images resized to 96x96x3, for speed only): accuracy of the joined
model on the test images of 5-9 (demo CNN), seconds per epoch of head training on the feature
cache and with part A recomputed every epoch (the ratio is what the cache buys), the engine
trainer's step time beside Keras's `train_on_batch` for the same head, the trainer's arena
bytes, and the text bytes the trainer adds to the aarch64 library (when a `test-arm` build is
there). The finetune case: the demo CNN adapted in Keras instead (`fine_tune`: head only,
staged with the last two layers before the cut unfrozen, full), the .tmodel's accuracy and the
seconds each takes. The incremental case: class-incremental split-MNIST (5 tasks of 2 digits) on cached
features, naive fine-tuning, EWC, replay (100 stored features per class; class-balanced, and
the plain mix beside it) and joint training, scored class-incrementally and task-incrementally;
EWC and replay again with the same head trained in Keras.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np

from tether.bench import run_metadata

ROOT = Path(__file__).resolve().parents[1]


def _emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, default=float), flush=True)


def _device_split(data: Any, per_class: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.permutation(np.flatnonzero(data.y_train == c))[:per_class]
                          for c in range(5, 10)])
    test = data.y_test >= 5
    return (data.x_train[idx], data.y_train[idx] - 5, data.x_test[test],
            data.y_test[test] - 5)


def _median_seconds(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _keras_step(head: Any, feats: np.ndarray, y: np.ndarray, batch: int, repeats: int) -> float:
    import keras

    model = keras.models.clone_model(head)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    xb, yb = feats[:batch], y[:batch]
    model.train_on_batch(xb, yb)  # build and trace
    return _median_seconds(lambda: model.train_on_batch(xb, yb), repeats)


def finetune(cloud: Any, x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray,
             head_epochs: int, epochs: int) -> dict[str, Any]:
    """The same adaptation in Keras (`fine_tune`) by each schedule: accuracy of the .tmodel
    on the test images of 5-9 and seconds of fine-tuning."""
    from tether.transfer import fine_tune

    out: dict[str, Any] = {"case": "finetune", "device_images": len(x),
                           "head_epochs": head_epochs, "epochs": epochs, "unfreeze": 2,
                           "learning_rate": 1e-2}
    for schedule in ("head", "staged", "full"):
        t0 = time.perf_counter()
        res = fine_tune(cloud, "gap", x, y, schedule=schedule, head_epochs=head_epochs,
                        epochs=epochs, unfreeze=2, learning_rate=1e-2, x_test=xt, y_test=yt)
        out[schedule] = {"accuracy_new_classes": res.accuracy,
                         "seconds": time.perf_counter() - t0,
                         "trainable_before_cut": [t for _, _, t in res.stages][-1][:-1]}
    return out


def case(name: str, cloud: Any, cut: str, x: np.ndarray, y: np.ndarray, xt: np.ndarray,
         yt: np.ndarray, epochs: int, repeats: int, accuracy: bool) -> dict[str, Any]:
    from tether.device import Engine, Trainer
    from tether.transfer import split_keras, transfer

    res = transfer(cloud, cut, x, y, epochs=epochs, learning_rate=1e-2, train_layers=0,
                   x_test=xt if accuracy else None, y_test=yt if accuracy else None, seed=0)
    with Engine(res.part_a) as a:
        part_a_epoch = _median_seconds(lambda: a.run(x), max(3, repeats // 4))
        feats = np.asarray(a.run(x), np.float32)
    trainer = Trainer(res.part_b, batch_size=32, learning_rate=1e-3)
    cached_epoch = _median_seconds(lambda: trainer.fit(feats, y, 1), repeats)
    step = _median_seconds(lambda: trainer.step(feats[:32], y[:32]), repeats * 10)
    _, head = split_keras(cloud, cut, 5)
    return {"case": "transfer", "part_a": name, "device_images": len(x), "epochs": epochs,
            "accuracy_new_classes": res.accuracy, "loss_first_last": [res.history[0],
                                                                       res.history[-1]],
            "feature_seconds_once": res.feature_seconds,
            "epoch_seconds_cached": cached_epoch,
            "epoch_seconds_recomputing_part_a": part_a_epoch + cached_epoch,
            "cache_speedup": (part_a_epoch + cached_epoch) / cached_epoch,
            "engine_step_ms": 1e3 * step,
            "keras_train_on_batch_ms": 1e3 * _keras_step(head, feats, y, 32, repeats * 5),
            "arena_bytes": res.arena_bytes, "feature_shape": list(feats.shape[1:])}


def incremental(data: Any, cloud_epochs: int, epochs: int) -> dict[str, Any]:
    """Class-incremental split-MNIST (5 tasks of 2 digits) on features cached from a demo CNN
    trained on all of mnist5k's training images (the cloud's data): a fresh 10-way head
    learns the tasks in order in the engine by each method."""
    from tether.converter import convert
    from tether.incremental import learn_tasks, task_incremental_accuracy
    from tether.models import demo_cnn
    from tether.transfer import FeatureCache, split_keras

    cloud = demo_cnn(data.x_train.shape[1:], 10, seed=0)
    cloud.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    cloud.fit(data.x_train, data.y_train, epochs=cloud_epochs, batch_size=64, verbose=0)
    cloud_acc = float(cloud.evaluate(data.x_test, data.y_test, verbose=0)[1])
    part_a, part_b = split_keras(cloud, "gap", 10)
    cache = FeatureCache(convert(part_a).to_bytes())
    ftr, fte = cache.features(data.x_train), cache.features(data.x_test)
    head = convert(part_b, sparse=None).to_bytes()
    pairs = [(2 * t, 2 * t + 1) for t in range(5)]
    ytr, yte = data.y_train.astype(np.int32), data.y_test.astype(np.int32)
    train = [(ftr[np.isin(ytr, p)], ytr[np.isin(ytr, p)]) for p in pairs]
    test = [(fte[np.isin(yte, p)], yte[np.isin(yte, p)]) for p in pairs]
    out: dict[str, Any] = {"case": "incremental", "cloud_accuracy": cloud_acc,
                           "tasks": [list(p) for p in pairs], "epochs_per_task": epochs,
                           "replay_per_class": 100, "ewc_lambda": 1000.0}
    arms = {"joint": (head, "joint", True), "naive": (head, "naive", True),
            "ewc": (head, "ewc", True), "replay_plain": (head, "replay", False),
            "replay": (head, "replay", True),
            # the same head in Keras (`KerasLearner`): what a device that runs Keras gets
            "keras_ewc": (part_b, "ewc", True), "keras_replay": (part_b, "replay", True)}
    for name, (learner, method, balance) in arms.items():
        logs, trainer = learn_tasks(learner, train, test, method, epochs=epochs,
                                    learning_rate=3e-3, ewc_lambda=1000.0,
                                    replay_per_class=100, replay_balance=balance)
        last = logs[-1]
        # each old task's accuracy at the end against right after it was learnt
        drops = [100 * (logs[t].per_task[t] - last.per_task[t]) for t in range(len(logs) - 1)]
        # what each increment cost the classes learnt before it
        increments = [100 * (logs[t - 1].seen_accuracy - logs[t].old_accuracy)
                      for t in range(1, len(logs)) if logs[t].old_accuracy is not None]
        out[name] = {"seen_accuracy_after_each_task": [g.seen_accuracy for g in logs],
                     "final_per_task": last.per_task,
                     "old_task_drop_points": drops,
                     "old_classes_drop_per_increment_points": increments,
                     "task_incremental_accuracy": task_incremental_accuracy(trainer, test)}
    return out


def code_size() -> dict[str, Any] | None:
    """Text bytes of the trainer's objects in the aarch64 build (device/runtime/build-arm*)."""
    for build in sorted((ROOT / "device" / "runtime").glob("build-*aarch64*")):
        objs = [p for p in (build / "CMakeFiles" / "tether.dir" / "src").rglob("*.o")]
        train = [p for p in objs if "/train/" in str(p) or p.name == "trainer.c.o"]
        if not train:
            continue

        def text(paths: list[Path]) -> int:
            out = subprocess.run(["aarch64-linux-gnu-size", "-t", *map(str, paths)],
                                 capture_output=True, text=True, check=True).stdout
            return int(out.strip().splitlines()[-1].split()[0])
        return {"build": build.name, "trainer_text_bytes": text(train),
                "core_text_bytes": text(objs)}
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--cloud-epochs", type=int, default=8)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--incremental-cloud-epochs", type=int, default=20)
    p.add_argument("--incremental-epochs", type=int, default=10)
    p.add_argument("--cases", default="transfer,finetune,incremental",
                   help="finetune runs with transfer (the same cloud model)")
    a = p.parse_args()
    cases = set(a.cases.split(","))
    import keras

    from tether.data import mnist5k
    from tether.models import BUILTIN_MODELS, demo_cnn

    data = mnist5k()
    x, y, xt, yt = _device_split(data, a.per_class)
    summary: dict[str, Any] = {"case": "summary", **run_metadata()}
    if "incremental" in cases:
        rec = incremental(data, a.incremental_cloud_epochs, a.incremental_epochs)
        _emit(rec)
        summary["replay_final_seen_accuracy"] = rec["replay"]["seen_accuracy_after_each_task"][-1]
    if "transfer" not in cases:
        _emit(summary)
        return
    cloud = demo_cnn(data.x_train.shape[1:], 5, seed=0)
    cloud.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    old = data.y_train < 5
    cloud.fit(data.x_train[old], data.y_train[old], epochs=a.cloud_epochs, batch_size=64,
              verbose=0)
    old_acc = float(cloud.evaluate(data.x_test[data.y_test < 5], data.y_test[data.y_test < 5],
                                   verbose=0)[1])
    summary["cloud_accuracy_old_classes"] = old_acc
    rec = case("demo_cnn", cloud, "gap", x, y, xt, yt, a.epochs, a.repeats, True)
    _emit(rec)
    summary["demo_cnn_cache_speedup"] = rec["cache_speedup"]
    if "finetune" in cases:
        ft = finetune(cloud, x, y, xt, yt, a.epochs, a.epochs // 2)
        _emit(ft)
        summary["finetune_accuracy"] = {k: ft[k]["accuracy_new_classes"]
                                        for k in ("head", "staged", "full")}
    mnv2 = BUILTIN_MODELS["mobilenet_v2_0.35_96"]()

    def rgb96(images: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        return np.asarray(tf.image.resize(np.repeat(images, 3, axis=-1), (96, 96)),
                          np.float32)
    keras.utils.set_random_seed(0)
    rec = case("mobilenet_v2_0.35_96", mnv2, mnv2.layers[-2].name, rgb96(x), y, rgb96(xt[:50]),
               yt[:50], max(5, a.epochs // 6), a.repeats, False)
    _emit(rec)
    summary["mobilenet_cache_speedup"] = rec["cache_speedup"]
    summary["code_size"] = code_size()
    _emit(summary)


if __name__ == "__main__":
    main()
