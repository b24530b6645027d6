"""The road's stages (Fig. 12.6): each reads the records of the stages before it and its own
config section, writes its files into its folder and returns what it measured.

Every stage is `fn(road, inputs..., work, final, resume) -> report` run through
`Store.run`; `Road` holds the config, the cache and the progress reporter. Heavy imports
(Keras, TensorFlow, Flower) happen inside the stages.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

import numpy as np

from tether.errors import TetherError
from tether.pipeline.config import PipelineConfig
from tether.pipeline.store import StageRecord, Store, file_digest
from tether.transfer import engine_accuracy

__all__ = ["PipelineError", "Progress", "Road", "VERSIONS"]

logger = logging.getLogger(__name__)

# A stage's code version is part of its key: raising one re-runs that stage and what follows.
VERSIONS = {"data": 1, "supernet": 1, "library": 1, "device": 1, "search": 1, "compress": 1,
            "convert": 1, "inference": 1, "transfer": 1, "federated": 1}


class PipelineError(TetherError, ValueError):
    """A stage cannot run with this config and data (the message names the key or file)."""


class Progress(Protocol):
    """What a run tells its caller (the CLI draws rich bars from it)."""

    def start(self, stage: str, cached: bool) -> None: ...

    def update(self, stage: str, completed: float, total: Optional[float], text: str) -> None: ...

    def done(self, record: StageRecord) -> None: ...


class _Silent:
    def start(self, stage: str, cached: bool) -> None:
        pass

    def update(self, stage: str, completed: float, total: Optional[float], text: str) -> None:
        pass

    def done(self, record: StageRecord) -> None:
        pass


@dataclass
class _Data:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _npz(path: Path) -> _Data:
    with np.load(path) as z:
        return _Data(z["x_train"], z["y_train"], z["x_test"], z["y_test"])


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    from tether._internal.files import atomic_write

    with atomic_write(path) as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]


def _fit_input(x: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    """Images `x` (N, H, W, C) as a model with input `shape` (H', W', C) reads them."""
    from tether.cloud.supernet import resize_images

    if tuple(x.shape[1:]) == tuple(shape):
        return x
    if len(shape) != 3 or shape[-1] != x.shape[-1] or shape[0] != shape[1]:
        raise PipelineError(f"{what}: the model reads inputs {tuple(shape)}, the dataset has "
                            f"images {tuple(x.shape[1:])}; only square resizes are made")
    return resize_images(x, int(shape[0]))


def _keras_input_shape(model: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in model.inputs[0].shape[1:])


def _time_engine(tmodel: bytes, x1: np.ndarray, threads: int, runs: int) -> tuple[float, float]:
    """(median, p90) ms of one image in the engine."""
    from tether.bench import time_fn
    from tether.device import Engine

    with Engine(tmodel, threads=threads) as eng:
        t = time_fn(lambda: eng.run(x1), warmup=10, runs=runs)
    return float(np.median(t)), float(np.percentile(t, 90))


def _head_cut(model: Any) -> str:
    """The last layer before the dense head (`transfer.cut = "auto"`)."""
    import keras

    head = (keras.layers.Dense, keras.layers.Dropout, keras.layers.Activation,
            keras.layers.Softmax)
    layers = model.layers
    i = len(layers) - 1
    while i > 0 and isinstance(layers[i], head):
        i -= 1
    if i == len(layers) - 1 or i <= 0:
        raise PipelineError(f"transfer.cut = 'auto': model '{model.name}' does not end in "
                            "dense layers; name the layer part A ends at")
    return str(layers[i].name)


class Road:
    """One run of the pipeline: the config, the stage cache and the progress reporter."""

    def __init__(self, config: PipelineConfig, progress: Optional[Progress] = None) -> None:
        self.cfg = config
        self.store = Store(config.run.out_dir)
        self.progress: Progress = progress or _Silent()
        self.records: list[StageRecord] = []

    # ----- running one stage -----

    def stage(self, name: str, parts: dict[str, Any],
              fn: Callable[[Path, Path, Path], dict[str, Any]]) -> StageRecord:
        key = Store.key(name, VERSIONS[name], parts)
        cached = self.store.lookup(name, key) is not None
        self.progress.start(name, cached)
        rec = self.store.run(name, key, fn)
        self.records.append(rec)
        self.progress.done(rec)
        return rec

    def tick(self, stage: str, completed: float, total: Optional[float], text: str = "") -> None:
        self.progress.update(stage, completed, total, text)

    @property
    def seed(self) -> int:
        return self.cfg.run.seed

    # ----- data -----

    def data(self) -> StageRecord:
        """The scenario's dataset, split into the cloud's classes and the device's (all)."""
        sc = self.cfg.scenario
        p = Path(sc.dataset)
        source = file_digest(p) if p.exists() else sc.dataset
        return self.stage("data", {"scenario": self.cfg.section("scenario"), "source": source},
                          self._data)

    def _data(self, work: Path, final: Path, resume: Path) -> dict[str, Any]:
        from tether.data import load

        sc = self.cfg.scenario
        ds = load(sc.dataset)
        n = int(max(ds.y_train.max(), ds.y_test.max())) + 1
        wrong = [c for c in sc.holdout_classes if c >= n]
        if wrong:
            raise PipelineError(f"scenario.holdout_classes: {wrong} not among the {n} classes "
                                f"of '{ds.name}' (0..{n - 1})")
        kept = [c for c in range(n) if c not in sc.holdout_classes]
        if len(kept) < 2:
            raise PipelineError(f"scenario.holdout_classes: {sc.holdout_classes} leaves "
                                f"{len(kept)} class for the cloud; it needs 2 or more")
        order = kept + list(sc.holdout_classes)  # device labels: the cloud's first, new after
        remap = np.empty(n, np.int32)
        remap[order] = np.arange(n)
        y_tr, y_te = remap[ds.y_train], remap[ds.y_test]
        k = len(kept)
        x_tr, x_te = ds.x_train.astype(np.float32), ds.x_test.astype(np.float32)
        _save_npz(work / "device.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
        _save_npz(work / "cloud.npz", x_train=x_tr[y_tr < k], y_train=y_tr[y_tr < k],
                  x_test=x_te[y_te < k], y_test=y_te[y_te < k])
        return {"dataset": ds.name, "classes": n, "cloud_classes": kept,
                "holdout_classes": list(sc.holdout_classes), "labels": order,
                "input_shape": list(ds.input_shape), "train_images": len(x_tr),
                "test_images": len(x_te), "cloud_train_images": int((y_tr < k).sum()),
                "cloud_test_images": int((y_te < k).sum())}

    # ----- cloud: supernet, library -----

    def supernet(self, data: StageRecord) -> StageRecord:
        return self.stage("supernet", {"data": data.key, "seed": self.seed,
                                       "supernet": self.cfg.section("supernet")},
                          lambda w, f, r: self._supernet(data, w, r))

    def _space(self, data: StageRecord) -> Any:
        import dataclasses as dc

        from tether.cloud.space import SearchSpace

        spec = self.cfg.supernet.space
        channels, classes = data.report["input_shape"][-1], len(data.report["cloud_classes"])
        if spec == "default":
            return SearchSpace.default(input_channels=channels, num_classes=classes)
        if spec == "seed":
            return dc.replace(SearchSpace.seed(num_classes=classes), input_channels=channels)
        if not Path(spec).is_file():
            raise PipelineError(f"supernet.space: {spec!r} is not 'default', 'seed' or a file")
        sp = SearchSpace.load(spec)
        if sp.input_channels != channels or sp.num_classes != classes:
            raise PipelineError(f"supernet.space {spec}: {sp.input_channels} channels and "
                                f"{sp.num_classes} classes; the cloud's data has {channels} "
                                f"and {classes}")
        return sp

    def _supernet(self, data: StageRecord, work: Path, resume: Path) -> dict[str, Any]:
        import keras

        from tether._internal.files import atomic_save_keras
        from tether.cloud.supernet import Supernet
        from tether.cloud.train import TrainConfig, train_supernet

        c = self.cfg.supernet
        d = _npz(data.path("cloud.npz"))
        sp = self._space(data)
        config = TrainConfig(epochs=tuple(c.epochs), batch_size=c.batch_size, lr=c.lr,  # type: ignore[arg-type]
                             subnets_per_step=c.subnets_per_step, seed=self.seed)
        keras.utils.set_random_seed(self.seed)
        net = Supernet(sp)
        total = sum(c.epochs)
        epochs_done = [0]

        def on_epoch(e: Any) -> None:
            epochs_done[0] += 1
            self.tick("supernet", epochs_done[0], total,
                      f"{e.phase} {e.epoch}/{e.epochs}: largest {e.largest_accuracy:.3f}, "
                      f"smallest {e.smallest_accuracy:.3f}")

        def on_step(phase: str, step: int, steps: int) -> None:
            self.tick("supernet", epochs_done[0] + step / max(steps, 1), total, phase)

        logs = train_supernet(net, d.x_train, d.y_train, d.x_test, d.y_test, config,
                              resume / "checkpoints", on_epoch=on_epoch, on_step=on_step)
        atomic_save_keras(net, work / "supernet.keras")
        return {"space_size": sp.size(), "epochs": list(c.epochs),
                "phases": [{"phase": p.phase, "seconds": p.seconds,
                            "epochs": [vars(e) for e in p.epochs]} for p in logs]}

    def library(self, data: StageRecord, supernet: StageRecord) -> StageRecord:
        return self.stage("library", {"supernet": supernet.key, "seed": self.seed,
                                      "library": self.cfg.section("library")},
                          lambda w, f, r: self._library(data, supernet, w, f))

    def _library(self, data: StageRecord, supernet: StageRecord, work: Path,
                 final: Path) -> dict[str, Any]:
        import keras

        from tether.cloud.accuracy import measure_accuracy
        from tether.cloud.library import ModelLibrary, build_entries

        c = self.cfg.library
        d = _npz(data.path("cloud.npz"))
        net = _load_supernet(supernet.path("supernet.keras"))
        sp = net.space
        dataset = str(data.path("cloud.npz"))
        rng = random.Random(self.seed)
        archs = list({a.key(): a for a in [sp.largest(), sp.smallest()] + [
            sp.sample(rng) for _ in range(4 * c.models)]}.values())[:c.models]
        extra = [sp.sample(rng) for _ in range(c.predictor_samples)]
        total = len(archs) + len(extra)
        records = build_entries(net, archs, d.x_train, d.x_test, d.y_test, work / "models",
                                calibration_images=c.calibration_images, seed=self.seed,
                                on_arch=lambda i: self.tick("library", i, total, "entries"))
        accs = measure_accuracy(net, extra, d.x_train, d.x_test, d.y_test,
                                calibration_images=c.calibration_images, seed=self.seed,
                                on_arch=lambda i: self.tick("library", len(archs) + i, total,
                                                            "accuracy-predictor samples"))
        with ModelLibrary(work / "library.sqlite") as lib:
            lib.create_index(self.cfg.scenario.task, dataset, sp,
                             str(supernet.path("supernet.keras")), str(final / "models"))
            for r in records:
                path = final / "models" / Path(r["path"]).name
                lib.add_entry(self.cfg.scenario.task, dataset, r["arch"],
                              accuracy=r["accuracy"], input_shape=r["input_shape"],
                              size=r["size"], path=str(path))
            lib.add_accuracy_samples(self.cfg.scenario.task, dataset,
                                     [r["arch"] for r in records] + extra,
                                     [r["accuracy"] for r in records] + accs)
        return {"dataset": dataset, "entries": len(records), "accuracy_samples": total,
                "best_accuracy": max(r["accuracy"] for r in records)}

    def given_library(self) -> StageRecord:
        """`model.source = "library"`: the user's library, copied in (search adds to it)."""
        path = Path(self.cfg.model.path)

        def run(work: Path, final: Path, resume: Path) -> dict[str, Any]:
            from tether.cloud.library import ModelLibrary

            shutil.copy(path, work / "library.sqlite")
            with ModelLibrary(work / "library.sqlite") as lib:
                task = self.cfg.scenario.task
                idx = [i for i in lib.indexes() if i["task"] == task]
                want = [i for i in idx if i["dataset"] == self.cfg.scenario.dataset] or idx
                if not want:
                    raise PipelineError(f"model.path {path}: the library has no "
                                        f"'{task}' index ({lib.indexes()})")
                index = want[0]
                if not index["supernet"] or not Path(index["supernet"]).is_file():
                    raise PipelineError(f"model.path {path}: its supernet "
                                        f"({index['supernet']}) is not there; search "
                                        "extracts subnets from it")
            return {"dataset": index["dataset"], "entries": index.get("entries", 0),
                    "supernet": index["supernet"], "source": str(path.resolve())}

        return self.stage("library", {"given": file_digest(path)}, run)

    # ----- device -----

    def device(self, library: StageRecord) -> StageRecord:
        """The device's latency table: this machine profiled now, or a saved one."""
        dev = self.cfg.device
        if dev.profile == "this":
            from tether.device.profile import device_info

            ident = device_info()["device_id"]
        else:
            ident = file_digest(dev.profile)
        return self.stage("device", {"library": library.key, "device": asdict(dev),
                                     "id": ident, "seed": self.seed},
                          lambda w, f, r: self._device(library, w, r))

    def _supernet_of(self, library: StageRecord) -> Any:
        from tether.cloud.library import ModelLibrary

        with ModelLibrary(library.path("library.sqlite")) as lib:
            path = lib.supernet_path(self.cfg.scenario.task, library.report["dataset"])
        if not path or not Path(path).is_file():
            raise PipelineError(f"the library's supernet ({path}) is not there")
        return _load_supernet(path)

    def _device(self, library: StageRecord, work: Path, resume: Path) -> dict[str, Any]:
        from tether.cloud.latency import LatencyModel, configurations, probe_space
        from tether.device.profile import LatencyTable

        dev = self.cfg.device
        if dev.profile != "this":
            table = LatencyTable.load(dev.profile)
            table.save(work / "table.json")
            return {"device_id": table.device_id, "entries": len(table.median_ms),
                    "profiled": False, "threads": table.threads}
        net = self._supernet_of(library)
        sp = net.space
        rng = random.Random(self.seed)
        archs = []
        if dev.fit_subnets >= 2:
            archs = [sp.largest(), sp.smallest()] + [sp.sample(rng)
                                                    for _ in range(dev.fit_subnets - 2)]
        n = len(configurations(sp)) + len({a.key() for a in archs})
        table, measured = probe_space(
            sp, work / "bundle", net, archs, threads=dev.threads, min_time_ms=dev.probe_ms,
            on_model=lambda i: self.tick("device", i, n, "building probe models"
                                         if i < n else "timing on this device"))
        fit: dict[str, Any] = {}
        if archs:
            model = LatencyModel(sp, table).fit(archs, [measured[a.key()] for a in archs])
            fit = {"scale": model.scale, "offset": model.offset, "margin": model.margin,
                   "subnets": len(archs)}
        table.save(work / "table.json")
        shutil.rmtree(work / "bundle", ignore_errors=True)
        return {"device_id": table.device_id, "entries": len(table.median_ms),
                "profiled": True, "threads": dev.threads, "correction": fit}

    # ----- search -----

    def search(self, library: StageRecord, device: StageRecord) -> StageRecord:
        return self.stage("search", {"library": library.key, "device": device.key,
                                     "seed": self.seed, "search": self.cfg.section("search")},
                          lambda w, f, r: self._search(library, device, w, f))

    def _search(self, library: StageRecord, device: StageRecord, work: Path,
                final: Path) -> dict[str, Any]:
        import sqlite3

        from tether._internal.files import atomic_save_keras
        from tether.cloud.batchnorm import recalibrate_batchnorm
        from tether.cloud.find import find_model
        from tether.cloud.latency import LatencyModel
        from tether.cloud.library import ModelLibrary
        from tether.cloud.policy import Constraints, Policy
        from tether.cloud.space import as_arch
        from tether.cloud.supernet import extract, resize_images
        from tether.device.profile import LatencyTable, device_info

        s = self.cfg.search
        task, dataset = self.cfg.scenario.task, library.report["dataset"]
        shutil.copy(library.path("library.sqlite"), work / "library.sqlite")
        db = sqlite3.connect(work / "library.sqlite")  # subnets found now go into this folder
        with db:
            db.execute("UPDATE indexes SET folder = ?", (str(work / "models"),))
        db.close()
        with ModelLibrary(work / "library.sqlite") as lib:
            sp = lib.space(task, dataset)
            table = LatencyTable.load(device.path("table.json"))
            dev = lib.add_device(LatencyModel(sp, table))
            here = device_info()["device_id"] == dev
            verify = s.verify == "yes" or (s.verify == "auto" and here and
                                           s.max_latency_ms is not None)
            if verify and not here:
                raise PipelineError(f"search.verify = 'yes': this machine is not device {dev}")
            try:
                cons = Constraints(dev, s.max_latency_ms, s.max_size, s.max_params,
                                   s.max_macs, s.min_accuracy)
            except TetherError as exc:
                raise PipelineError(f"search: {exc}") from None
            gens = max(s.generations, 1)
            out = find_model(lib, task, dataset, cons, Policy.parse(s.policy),
                             extract_new=s.extract, generations=s.generations, seed=self.seed,
                             verify=verify,
                             on_generation=lambda g, n: self.tick("search", g, gens,
                                                                  f"{n:,} subnets sampled"))
            entries = [{"key": e.key, "accuracy": e.accuracy, "latency_ms": e.latency(dev),
                        "size": e.size, "params": e.params, "macs": e.macs,
                        "measured": dev in e.latency_measured}
                       for e in lib.entries(task, dataset)]
        db = sqlite3.connect(work / "library.sqlite")  # the files it names, where they will be
        with db:
            db.execute("UPDATE indexes SET folder = ?", (str(final / "models"),))
            for (name,) in db.execute("SELECT name FROM indexes").fetchall():
                db.execute(f'UPDATE "{name}" SET path = replace(path, ?, ?)',
                           (str(work), str(final)))
        db.close()
        arch = as_arch(json.dumps(out["arch"]))
        net = self._supernet_of(library)
        model = extract(net, arch)
        d = _npz(Path(dataset))
        pick = np.random.default_rng(self.seed).choice(
            len(d.x_train), min(self.cfg.library.calibration_images, len(d.x_train)),
            replace=False)
        recalibrate_batchnorm(model, resize_images(d.x_train[pick], arch.resolution))
        atomic_save_keras(model, work / "model.keras")
        chosen = {"key": out["key"], "accuracy": out["accuracy"],
                  "latency_ms": (out.get("latency_measured_ms", {}).get(dev)
                                 or out.get("latency_predicted_ms", {}).get(dev)),
                  "size": out["size_bytes"], "params": out["params"], "macs": out["macs"],
                  "source": out["source"], "resolution": arch.resolution,
                  "verified": bool(out.get("verified", False))}
        constraints = {"device": dev, "max_latency_ms": s.max_latency_ms,
                       "max_size": s.max_size, "max_params": s.max_params,
                       "max_macs": s.max_macs, "min_accuracy": s.min_accuracy}
        return {"device": dev, "policy": s.policy, "constraints": constraints,
                "chosen": chosen, "history": out.get("history", []),
                "samples": out.get("samples", 0), "entries": entries}

    # ----- compression and conversion -----

    def compress(self, data: StageRecord, source: StageRecord | None) -> StageRecord:
        parts: dict[str, Any] = {"data": data.key, "seed": self.seed,
                                 "compress": self.cfg.section("compress"),
                                 "threads": self.cfg.device.threads}
        if source is not None:
            parts["model"] = source.key
        else:
            parts["file"] = file_digest(self.cfg.model.path)
        return self.stage("compress", parts, lambda w, f, r: self._compress(data, source, w))

    def _source_model(self, source: StageRecord | None) -> Any:
        """The Keras model to compress, or the ONNX/TFLite path the user brought."""
        from tether.models import load_model

        if source is not None:
            return load_model(str(source.path("model.keras")))
        path = self.cfg.model.path
        if Path(path).suffix.lower() in (".onnx", ".tflite"):
            return path
        try:
            return load_model(path)
        except (FileNotFoundError, TetherError) as exc:
            raise PipelineError(f"model.path: {exc}") from None

    def _compress(self, data: StageRecord, source: StageRecord | None,
                  work: Path) -> dict[str, Any]:
        import keras

        from tether._internal.files import atomic_save_keras, atomic_write_text
        from tether.compression import (CalibrationConfig, ChannelPruningConfig,
                                        DistillationConfig, calibrate, distill, export_qat,
                                        fine_tune, prepare_qat, prune_channels, prune_weights)
        from tether.converter import convert

        c = self.cfg.compress
        d = _npz(data.path("cloud.npz"))
        model = self._source_model(source)
        foreign = isinstance(model, str)
        if foreign:
            shape = _foreign_input_shape(model)
        else:
            shape = _keras_input_shape(model)
        x_tr = _fit_input(d.x_train, shape, "compress")
        x_te = _fit_input(d.x_test, shape, "compress")
        threads, runs = self.cfg.device.threads, 50
        steps: list[dict[str, Any]] = []
        todo = 1 + (c.prune_channels > 0) + (c.sparsity > 0) + (c.quantize != "none")
        keras.utils.set_random_seed(self.seed)

        def measure(name: str, tm: bytes, extra: Optional[dict[str, Any]] = None) -> None:
            acc = engine_accuracy(tm, x_te, d.y_test, threads)
            med, p90 = _time_engine(tm, x_te[:1], threads, runs)
            steps.append({"name": name, "accuracy": acc, "bytes": len(tm), "latency_ms": med,
                          "p90_ms": p90, **(extra or {})})
            self.tick("compress", len(steps), todo, f"{name}: accuracy {acc:.3f}")

        measure("searched" if source is not None else "source", convert(model).to_bytes())
        plan = None
        if not foreign:
            if c.prune_channels > 0:
                teacher = model
                model, rep = prune_channels(model, ChannelPruningConfig(c.prune_channels))
                if c.fine_tune_epochs and c.distill:
                    distill(teacher, model, x_tr, d.y_train, config=DistillationConfig(),
                            epochs=c.fine_tune_epochs)
                elif c.fine_tune_epochs:
                    fine_tune(model, x_tr, d.y_train, epochs=c.fine_tune_epochs)
                measure("channels pruned", convert(model).to_bytes(),
                        {"macs_before": rep.macs_before, "macs_after": rep.macs_after})
            if c.sparsity > 0:
                model = prune_weights(model, x_tr, d.y_train, sparsity=c.sparsity,
                                      epochs=max(c.fine_tune_epochs, 1))
                measure("weights pruned", convert(model).to_bytes(), {"sparsity": c.sparsity})
            calib = x_tr[np.random.default_rng(self.seed).choice(
                len(x_tr), min(c.calibration_images, len(x_tr)), replace=False)]
            if c.quantize == "int8":
                plan = calibrate(model, calib, CalibrationConfig(c.calibration))
            elif c.quantize == "qat":
                q = prepare_qat(model, calib)
                fine_tune(q, x_tr, d.y_train, epochs=c.qat_epochs, learning_rate=1e-4)
                model, plan = export_qat(q)
            if plan is not None:
                measure(f"int8 ({c.quantize})",
                        convert(model, quantize="int8", plan=plan).to_bytes())
                atomic_write_text(work / "plan.json", plan.to_json())
            atomic_save_keras(model, work / "model.keras")
            np.save(work / "calibration.npy", calib)
        else:
            calib = x_tr[:c.calibration_images]
            np.save(work / "calibration.npy", calib)
            if c.quantize == "int8":
                measure("int8", convert(model, quantize="int8", calibration=calib).to_bytes())
            shutil.copy(model, work / ("model" + Path(model).suffix.lower()))
        return {"steps": steps, "quantize": c.quantize if (plan is not None or (
                    foreign and c.quantize == "int8")) else "none",
                "input_shape": list(shape), "model": "model.keras" if not foreign else
                "model" + Path(model).suffix.lower()}

    def convert(self, compress: StageRecord) -> StageRecord:
        return self.stage("convert", {"compress": compress.key},
                          lambda w, f, r: self._convert(compress, w))

    def _model_of(self, compress: StageRecord) -> Any:
        from tether.models import load_model

        name = compress.report["model"]
        if name.endswith(".keras"):
            return load_model(str(compress.path(name)))
        return str(compress.path(name))

    def _convert(self, compress: StageRecord, work: Path) -> dict[str, Any]:
        from tether.compression import QuantizationPlan
        from tether.converter import convert

        model = self._model_of(compress)
        calib = np.load(compress.path("calibration.npy"))
        kw: dict[str, Any] = {}
        if compress.report["quantize"] != "none":
            kw["quantize"] = "int8"
            if compress.path("plan.json").is_file():
                kw["plan"] = QuantizationPlan.from_json(compress.path("plan.json").read_text())
            else:
                kw["calibration"] = calib
        tm = convert(model, samples=calib[:8], **kw)
        tm.save(work / "model.tmodel")
        rep = tm.report
        parity = getattr(rep, "parity", None)
        return {"bytes": len(tm.to_bytes()), "precision": "int8" if kw else "fp32",
                "ops_before": dict(getattr(rep, "ops_before", {}) or {}),
                "ops_after": dict(getattr(rep, "ops_after", {}) or {}),
                "parity": _jsonable(parity)}

    # ----- learning patterns -----

    def inference(self, data: StageRecord, compress: StageRecord,
                  convert: StageRecord) -> StageRecord:
        return self.stage("inference", {"convert": convert.key,
                                        "inference": self.cfg.section("inference")},
                          lambda w, f, r: self._inference(data, compress, convert))

    def _inference(self, data: StageRecord, compress: StageRecord,
                   convert: StageRecord) -> dict[str, Any]:
        from tether.bench import time_fn

        c = self.cfg.inference
        d = _npz(data.path("cloud.npz"))
        shape = tuple(compress.report["input_shape"])
        x = _fit_input(d.x_test, shape, "inference").astype(np.float32)
        model = self._model_of(compress)
        int8 = convert.report["precision"] == "int8"
        calib = np.load(compress.path("calibration.npy"))
        rows: list[dict[str, Any]] = []
        for i, engine in enumerate(c.engines):
            self.tick("inference", i, len(c.engines), engine)
            run, size, note = self._runner(engine, model, convert, int8, calib, shape)
            if run is None:
                rows.append({"engine": engine, "skipped": note})
                continue
            pred = np.array([int(np.argmax(run(x[j:j + 1]))) for j in range(len(x))])
            t = time_fn(lambda: run(x[:1]), warmup=10, runs=c.runs)
            rows.append({"engine": engine, "accuracy": float(np.mean(pred == d.y_test)),
                         "median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)),
                         "model_bytes": size, "precision": note})
        self.tick("inference", len(c.engines), len(c.engines), "done")
        return {"threads": c.threads, "engines": [r for r in rows if "skipped" not in r],
                "skipped": [r for r in rows if "skipped" in r]}

    def _runner(self, engine: str, model: Any, convert: StageRecord, int8: bool,
                calib: np.ndarray, shape: tuple[int, ...]
                ) -> tuple[Optional[Callable[[np.ndarray], Any]], int, str]:
        """(run, model bytes, precision) of one engine on the deployed model; (None, 0, why)
        when that engine cannot take it."""
        from tether.peers import keras_to_onnx, keras_to_tflite, litert_runner, onnxruntime_runner

        threads = self.cfg.inference.threads
        foreign = isinstance(model, str)
        if engine == "tether":
            from tether.device import Engine

            data = convert.path("model.tmodel").read_bytes()
            return Engine(data, threads=threads).run, len(data), "int8" if int8 else "fp32"
        if engine == "litert":
            if foreign and not model.endswith(".tflite"):
                return None, 0, "LiteRT runs TFLite; the model is ONNX"
            content = (Path(model).read_bytes() if foreign else
                       keras_to_tflite(model, representative=calib[:100] if int8 else None))
            r = litert_runner(content, (1, *shape), threads)
            return r.run, len(content), ("as given" if foreign else
                                         "int8 (TensorFlow's converter)" if int8 else "fp32")
        if foreign and not model.endswith(".onnx"):
            return None, 0, "ONNX Runtime runs ONNX; the model is TFLite"
        content = Path(model).read_bytes() if foreign else keras_to_onnx(model)
        return onnxruntime_runner(content, threads).run, len(content), (
            "as given" if foreign else "fp32")

    def _old_new(self, data: StageRecord, shape: tuple[int, ...]) -> dict[str, Any]:
        """The device's data: a few training images per class, test images old and new apart."""
        d = _npz(data.path("device.npz"))
        k = len(data.report["cloud_classes"])
        rng = np.random.default_rng(self.seed)
        per = self.cfg.transfer.images_per_class
        pick = np.concatenate([rng.permutation(np.flatnonzero(d.y_train == c))[:per]
                               for c in range(int(d.y_train.max()) + 1)])
        x_te = _fit_input(d.x_test, shape, "transfer")
        old, new = d.y_test < k, d.y_test >= k
        return {"x": _fit_input(d.x_train[pick], shape, "transfer"), "y": d.y_train[pick],
                "x_test": x_te, "y_test": d.y_test, "old": (x_te[old], d.y_test[old]),
                "new": (x_te[new], d.y_test[new]), "classes": int(d.y_train.max()) + 1}

    def transfer(self, data: StageRecord, compress: StageRecord,
                 convert: StageRecord) -> StageRecord:
        return self.stage("transfer", {"convert": convert.key, "data": data.key,
                                       "seed": self.seed,
                                       "transfer": self.cfg.section("transfer")},
                          lambda w, f, r: self._transfer(data, compress, convert, w))

    def _transfer(self, data: StageRecord, compress: StageRecord, convert: StageRecord,
                  work: Path) -> dict[str, Any]:
        from tether._internal.files import atomic_write_bytes
        from tether.transfer import transfer

        c = self.cfg.transfer
        model = self._model_of(compress)
        cut = _head_cut(model) if c.cut == "auto" else c.cut
        dd = self._old_new(data, tuple(compress.report["input_shape"]))
        deployed = convert.path("model.tmodel").read_bytes()
        before = {"old_accuracy": engine_accuracy(deployed, *dd["old"]),
                  "new_accuracy": engine_accuracy(deployed, *dd["new"])
                  if len(dd["new"][1]) else None}
        sets = {"old": dd["old"]}
        if len(dd["new"][1]):
            sets["new"] = dd["new"]
        res = transfer(model, cut, dd["x"], dd["y"], classes=dd["classes"], epochs=c.epochs,
                       batch_size=c.batch_size, optimizer=c.optimizer,
                       learning_rate=c.learning_rate,
                       quantize_a="int8" if convert.report["precision"] == "int8" else None,
                       calibration=np.load(compress.path("calibration.npy")),
                       x_test=dd["x_test"], y_test=dd["y_test"], seed=self.seed,
                       on_epoch=lambda e, loss: self.tick("transfer", e, c.epochs,
                                                          f"loss {loss:.4f}"),
                       evaluate=sets, keep_head=True)
        atomic_write_bytes(work / "transfer.tmodel", res.model)
        epochs = [{"epoch": i + 1, "loss": res.history[i],
                   "old_accuracy": res.curves["old"][i],
                   "new_accuracy": res.curves["new"][i] if "new" in res.curves else None}
                  for i in range(len(res.history))]
        after = {"old_accuracy": epochs[-1]["old_accuracy"],
                 "new_accuracy": epochs[-1]["new_accuracy"]}
        return {"cut": cut, "device_images": len(dd["y"]), "classes": dd["classes"],
                "old_classes": data.report["cloud_classes"],
                "new_classes": data.report["holdout_classes"], "epochs": epochs,
                "before": before, "after": after, "accuracy": res.accuracy,
                "epoch_seconds": res.epoch_seconds, "feature_seconds": res.feature_seconds,
                "arena_bytes": res.arena_bytes, "bytes": len(res.model)}

    def federated(self, data: StageRecord, compress: StageRecord,
                  convert: StageRecord) -> StageRecord:
        return self.stage("federated", {"convert": convert.key, "data": data.key,
                                        "seed": self.seed,
                                        "federated": self.cfg.section("federated")},
                          lambda w, f, r: self._federated(data, compress, convert, w))

    def _federated(self, data: StageRecord, compress: StageRecord, convert: StageRecord,
                   work: Path) -> dict[str, Any]:
        import keras

        from tether._internal.files import atomic_write_bytes
        from tether.converter import convert as to_tmodel, join
        from tether.federated.apps import FedConfig
        from tether.transfer import FeatureCache

        c = self.cfg.federated
        model = self._model_of(compress)
        last = model.layers[-1]
        if not isinstance(last, keras.layers.Dense):
            raise PipelineError(f"federated: the model's last layer '{last.name}' is not a "
                                "dense layer; the head federated is the final dense layer")
        cut = model.layers[-2].name
        part_a = keras.Model(model.inputs, model.get_layer(cut).output)
        d = _npz(data.path("device.npz"))
        shape = tuple(compress.report["input_shape"])
        int8 = convert.report["precision"] == "int8"
        calib = np.load(compress.path("calibration.npy"))
        a_bytes = to_tmodel(part_a, quantize="int8" if int8 else None,
                            calibration=calib if int8 else None).to_bytes()
        cache = FeatureCache(a_bytes, threads=self.cfg.device.threads)
        self.tick("federated", 0, c.rounds, "part A on every device's images")
        f_tr = cache.features(_fit_input(d.x_train, shape, "federated")).reshape(len(d.x_train), -1)
        f_te = cache.features(_fit_input(d.x_test, shape, "federated")).reshape(len(d.x_test), -1)
        n = int(max(d.y_train.max(), d.y_test.max())) + 1
        w, b = (np.asarray(v, np.float32) for v in last.get_weights())
        w0 = np.zeros((w.shape[0], n), np.float32)
        b0 = np.zeros(n, np.float32)
        w0[:, :w.shape[1]], b0[:w.shape[1]] = w, b
        np.savez(work / "features.npz", x_train=f_tr, y_train=d.y_train, x_test=f_te,
                 y_test=d.y_test)
        np.savez(work / "init.npz", w0, b0)
        cfg = FedConfig(dataset=str(work / "features.npz"), clients=c.clients,
                        partition=c.partition, fraction=c.fraction, rounds=c.rounds,
                        epochs=c.local_epochs, batch_size=c.batch_size, lr=c.lr, model="mlp",
                        hidden=0, codec=c.codec, secagg=c.secagg, dropout=c.dropout,
                        dp_clip=c.dp_clip, dp_noise=c.dp_noise, trainer=c.trainer,
                        seed=self.seed, init=str(work / "init.npz"),
                        final=str(work / "final.npz"))

        def on_round(rnd: int, acc: Optional[float]) -> None:
            self.tick("federated", rnd, c.rounds,
                      f"round {rnd}" + (f": accuracy {acc:.3f}" if acc is not None else ""))

        if c.superlink:
            from tether.federated import deploy

            self.tick("federated", 0, c.rounds, f"running on the SuperLink at {c.superlink}")
            rep = deploy(cfg, c.superlink, c.superlink_certificates or None)
        elif c.backend == "simulation":
            from tether.federated.apps import simulate

            rep = simulate(cfg, on_round=on_round, worker_logs=False)
        else:
            from tether.federated.local import run_local

            rep = run_local(cfg, on_round=on_round)
        with np.load(work / "final.npz") as z:
            wf, bf = z["arr_0"], z["arr_1"]
        x_in = keras.Input((wf.shape[0],), name=cut)
        head = keras.Model(x_in, keras.layers.Dense(n, activation="softmax",
                                                    name="federated_head")(x_in))
        head.layers[-1].set_weights([wf, bf])
        joined = join(a_bytes, to_tmodel(head, sparse=None).to_bytes()).to_bytes()
        atomic_write_bytes(work / "federated.tmodel", joined)
        k = len(data.report["cloud_classes"])
        x_te = _fit_input(d.x_test, shape, "federated")
        old, new = d.y_test < k, d.y_test >= k
        rounds = [{"round": int(r["round"]), "accuracy": _nan_none(r.get("accuracy")),
                   "uplink_bytes": int(r.get("uplink_bytes", 0)),
                   "downlink_bytes": int(r.get("downlink_bytes", 0)),
                   "clients": int(r.get("clients", 0))} for r in rep.rounds]
        return {"codec": c.codec, "secagg": c.secagg, "dp_clip": c.dp_clip,
                "clients": c.clients, "backend": f"SuperLink {c.superlink}" if c.superlink
                else c.backend, "trainer": c.trainer,
                "rounds": rounds, "wall_s": rep.wall_s,
                "uplink_bytes": sum(r["uplink_bytes"] for r in rounds),
                "old_accuracy": engine_accuracy(joined, x_te[old], d.y_test[old]),
                "new_accuracy": engine_accuracy(joined, x_te[new], d.y_test[new])
                if new.any() else None,
                "accuracy": engine_accuracy(joined, x_te, d.y_test), "bytes": len(joined)}


def _load_supernet(path: str | Path) -> Any:
    import keras

    from tether.cloud.supernet import Supernet  # registers the class with Keras

    net = keras.models.load_model(path)
    if not isinstance(net, Supernet):
        raise PipelineError(f"{path}: a Keras model, but not a tether supernet")
    return net


def _nan_none(v: Any) -> Optional[float]:
    if v is None:
        return None
    v = float(v)
    return None if v != v else v


def _jsonable(value: Any) -> Any:
    if value is None:
        return None
    try:
        return json.loads(json.dumps(asdict(value) if hasattr(value, "__dataclass_fields__")
                                     else value, default=float))
    except (TypeError, ValueError):
        return str(value)


def _foreign_input_shape(path: str) -> tuple[int, ...]:
    """The (H, W, C) input of an ONNX or TFLite model file (batch dropped)."""
    from tether.converter import convert

    return tuple(int(v) for v in convert(path).inputs[0].shape[1:])
