"""The model library: ready-to-use subnets in SQLite, one index table per (task, dataset).

Each entry of an index table records the architecture, input shape, accuracy (measured after
batch-norm recalibration), parameters, MACs, file size and output format of the stored model
file, and two latency columns per profiled device, `lat_<device>_measured` and
`lat_<device>_predicted` (milliseconds). Profiling a new device (`add_device`) adds its columns
and fills the predicted latency of every entry from its latency table; measured latencies come
from running the entries on that device (`set_measured`).

`query` filters by the constraints in SQL and ranks what is left under the search policy; a
latency limit is checked against the measured latency where there is one, else against the
prediction raised by the device's guard band (`LatencyModel.bound`).
Besides the index tables the file holds `indexes` (space, supernet, model folder),
`devices` (profile, latency table, correction) and `accuracy_samples` (the measured subnets
an accuracy predictor is refitted on).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tether.cloud.latency import LatencyModel
from tether.cloud.policy import Constraints, Policy, rank
from tether.cloud.space import Arch, SearchSpace
from tether.errors import TetherError

__all__ = ["Entry", "LibraryError", "ModelLibrary", "build_entries"]


class LibraryError(TetherError, ValueError):
    """A library file, index or device that does not exist or does not fit."""


_NAME = re.compile(r"[^A-Za-z0-9]+")


def _ident(text: str) -> str:
    return _NAME.sub("_", text).strip("_").lower() or "x"


def index_table(task: str, dataset: str) -> str:
    """The SQL table of (task, dataset)."""
    return f"index_{_ident(task)}_{_ident(dataset)}"


def _lat_column(device: str, kind: str) -> str:
    return f"lat_{_ident(device)}_{kind}"


@dataclass
class Entry:
    """One library entry (a row of an index table)."""

    id: int
    key: str
    arch: Arch
    input_shape: tuple[int, ...]
    accuracy: float
    params: int
    macs: int
    size: int
    output_format: str
    path: str
    latency_measured: dict[str, float] = field(default_factory=dict)
    latency_predicted: dict[str, float] = field(default_factory=dict)
    latency_margin: dict[str, float] = field(default_factory=dict)

    def latency(self, device: str) -> float | None:
        """Measured latency on `device` when there is one, else predicted (ms)."""
        if device in self.latency_measured:
            return self.latency_measured[device]
        return self.latency_predicted.get(device)

    def latency_bound(self, device: str) -> float | None:
        """Measured latency on `device` when there is one, else the prediction raised by the
        device's guard band (ms): what a latency limit is checked against."""
        if device in self.latency_measured:
            return self.latency_measured[device]
        lat = self.latency_predicted.get(device)
        return None if lat is None else lat * (1.0 + self.latency_margin.get(device, 0.0))

    def value(self, objective: str, device: str | None) -> float:
        if objective == "latency":
            lat = self.latency_bound(device) if device else None
            return float("inf") if lat is None else lat
        return float({"size": self.size, "params": self.params, "macs": self.macs,
                      "accuracy": self.accuracy}[objective])

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "key": self.key, "arch": self.arch.to_dict(),
                "input_shape": list(self.input_shape), "accuracy": self.accuracy,
                "params": self.params, "macs": self.macs, "size_bytes": self.size,
                "output_format": self.output_format, "path": self.path,
                "latency_measured_ms": self.latency_measured,
                "latency_predicted_ms": self.latency_predicted,
                "latency_margin": self.latency_margin}


class ModelLibrary:
    """A model library file (SQLite). Use as a context manager or call `close()`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db = sqlite3.connect(self.path)
        self.db.execute("PRAGMA foreign_keys = ON")
        with self.db:
            self.db.execute("CREATE TABLE IF NOT EXISTS indexes (name TEXT PRIMARY KEY, "
                            "task TEXT NOT NULL, dataset TEXT NOT NULL, space TEXT NOT NULL, "
                            "supernet TEXT, folder TEXT)")
            self.db.execute("CREATE TABLE IF NOT EXISTS devices (device_id TEXT PRIMARY KEY, "
                            "info TEXT NOT NULL, latency_table TEXT NOT NULL, "
                            "scale REAL NOT NULL, offset REAL NOT NULL)")
            self.db.execute("CREATE TABLE IF NOT EXISTS accuracy_samples (index_name TEXT "
                            "NOT NULL, arch TEXT NOT NULL, accuracy REAL NOT NULL)")

    def __enter__(self) -> ModelLibrary:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    # ----- indexes -----

    def create_index(self, task: str, dataset: str, space: SearchSpace,
                     supernet: str | None = None, folder: str | None = None) -> str:
        """Creates the index table of (task, dataset) (or checks an existing one has the same
        space); returns its name."""
        name = index_table(task, dataset)
        row = self.db.execute("SELECT space FROM indexes WHERE name = ?", (name,)).fetchone()
        if row is not None:
            if SearchSpace.from_dict(json.loads(row[0])) != space:
                raise LibraryError(f"{self.path}: index {task}/{dataset} exists with another "
                                   "search space")
            return name
        with self.db:
            self.db.execute("INSERT INTO indexes VALUES (?, ?, ?, ?, ?, ?)",
                            (name, task, dataset, json.dumps(space.to_dict()), supernet, folder))
            self.db.execute(f'CREATE TABLE "{name}" (id INTEGER PRIMARY KEY, key TEXT UNIQUE '
                            "NOT NULL, arch TEXT NOT NULL, resolution INTEGER NOT NULL, "
                            "input_shape TEXT NOT NULL, accuracy REAL NOT NULL, params INTEGER "
                            "NOT NULL, macs INTEGER NOT NULL, size INTEGER NOT NULL, "
                            "output_format TEXT NOT NULL, path TEXT NOT NULL)")
            for (device,) in self.db.execute("SELECT device_id FROM devices").fetchall():
                self._add_columns(name, device)
        return name

    def indexes(self) -> list[dict[str, Any]]:
        """Every index: name, task, dataset, entry count, space size, supernet."""
        out = []
        for name, task, dataset, space, supernet, folder in self.db.execute(
                "SELECT * FROM indexes ORDER BY name").fetchall():
            count = self.db.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0]
            out.append({"name": name, "task": task, "dataset": dataset, "entries": count,
                        "space_size": SearchSpace.from_dict(json.loads(space)).size(),
                        "supernet": supernet, "folder": folder})
        return out

    def _index(self, task: str, dataset: str) -> tuple[str, SearchSpace, str | None]:
        name = index_table(task, dataset)
        row = self.db.execute("SELECT space, supernet FROM indexes WHERE name = ?",
                              (name,)).fetchone()
        if row is None:
            have = ", ".join(f"{i['task']}/{i['dataset']}" for i in self.indexes()) or "none"
            raise LibraryError(f"{self.path}: no index for task '{task}' and dataset "
                               f"'{dataset}' (indexes: {have})")
        return name, SearchSpace.from_dict(json.loads(row[0])), row[1]

    def space(self, task: str, dataset: str) -> SearchSpace:
        return self._index(task, dataset)[1]

    def supernet_path(self, task: str, dataset: str) -> str | None:
        return self._index(task, dataset)[2]

    # ----- entries -----

    def add_entry(self, task: str, dataset: str, arch: Arch, *, accuracy: float,
                  input_shape: Sequence[int], size: int, path: str,
                  output_format: str = "tmodel-fp32") -> int:
        """Adds (or replaces) the entry of `arch`; fills its predicted latency on every
        profiled device. Returns its id."""
        name, space, _ = self._index(task, dataset)
        space.validate(arch)
        with self.db:
            self.db.execute(f'DELETE FROM "{name}" WHERE key = ?', (arch.key(),))
            cur = self.db.execute(
                f'INSERT INTO "{name}" (key, arch, resolution, input_shape, accuracy, params, '
                "macs, size, output_format, path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (arch.key(), json.dumps(arch.to_dict()), arch.resolution,
                 json.dumps(list(input_shape)), float(accuracy), arch.params(space),
                 arch.macs(space), int(size), output_format, path))
            entry_id = int(cur.lastrowid or 0)
            for device, model in self._latency_models(space).items():
                self.db.execute(f'UPDATE "{name}" SET "{_lat_column(device, "predicted")}" = ? '
                                "WHERE id = ?", (model.predict(arch), entry_id))
        return entry_id

    def entries(self, task: str, dataset: str) -> list[Entry]:
        """Every entry of the (task, dataset) index, by id."""
        name, _, _ = self._index(task, dataset)
        cur = self.db.execute(f'SELECT * FROM "{name}" ORDER BY id')
        margins = self.margins()
        return [self._entry(cur.description, row, margins) for row in cur.fetchall()]

    def entry(self, task: str, dataset: str, key: str) -> Entry | None:
        name, _, _ = self._index(task, dataset)
        cur = self.db.execute(f'SELECT * FROM "{name}" WHERE key = ?', (key,))
        row = cur.fetchone()
        return None if row is None else self._entry(cur.description, row, self.margins())

    def _entry(self, description: Any, row: Sequence[Any], margins: dict[str, float]) -> Entry:
        """One row as an Entry; `margins` (profiled device id -> guard band) names its
        latency columns."""
        d = {col[0]: v for col, v in zip(description, row)}
        measured: dict[str, float] = {}
        predicted: dict[str, float] = {}
        for device in margins:
            for kind, target in (("measured", measured), ("predicted", predicted)):
                v = d.get(_lat_column(device, kind))
                if v is not None:
                    target[device] = float(v)
        return Entry(int(d["id"]), d["key"], Arch.from_dict(json.loads(d["arch"])),
                     tuple(json.loads(d["input_shape"])), float(d["accuracy"]), int(d["params"]),
                     int(d["macs"]), int(d["size"]), d["output_format"], d["path"], measured,
                     predicted, {k: margins[k] for k in predicted})

    # ----- devices -----

    def devices(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT device_id FROM devices ORDER BY device_id")]

    def margins(self) -> dict[str, float]:
        """Profiled device id -> the guard band of its latency model."""
        return {device: float(json.loads(table).get("margin", 0.0)) for device, table in
                self.db.execute("SELECT device_id, latency_table FROM devices ORDER BY "
                                "device_id")}

    def _add_columns(self, name: str, device: str) -> None:
        have = {r[1] for r in self.db.execute(f'PRAGMA table_info("{name}")')}
        for kind in ("measured", "predicted"):
            col = _lat_column(device, kind)
            if col not in have:
                self.db.execute(f'ALTER TABLE "{name}" ADD COLUMN "{col}" REAL')

    def _latency_models(self, space: SearchSpace) -> dict[str, LatencyModel]:
        from tether.device.profile import LatencyTable

        out = {}
        for device, table, scale, offset in self.db.execute(
                "SELECT device_id, latency_table, scale, offset FROM devices"):
            out[device] = LatencyModel(space, LatencyTable(**json.loads(table)), scale, offset)
        return out

    def latency_model(self, task: str, dataset: str, device: str) -> LatencyModel:
        models = self._latency_models(self.space(task, dataset))
        if device not in models:
            raise LibraryError(f"{self.path}: device '{device}' is not profiled (devices: "
                               f"{', '.join(self.devices()) or 'none'}); run `tether device "
                               "probe` on it and add its table")
        return models[device]

    def add_device(self, model: LatencyModel) -> str:
        """Profiles a device into the library: stores its latency table and correction, adds
        its latency columns to every index and fills the predicted latency of every entry.
        Returns the device id."""
        device = model.table.device_id
        from dataclasses import asdict

        table = {**asdict(model.table), "margin": float(model.margin or 0.0)}
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO devices VALUES (?, ?, ?, ?, ?)",
                            (device, json.dumps(model.table.device),
                             json.dumps(table), float(model.scale or 1.0),
                             float(model.offset or 0.0)))
            for idx in self.indexes():
                self._add_columns(idx["name"], device)
                space = SearchSpace.from_dict(json.loads(self.db.execute(
                    "SELECT space FROM indexes WHERE name = ?", (idx["name"],)).fetchone()[0]))
                lm = LatencyModel(space, model.table, model.scale, model.offset, model.margin)
                col = _lat_column(device, "predicted")
                for entry_id, arch in self.db.execute(
                        f'SELECT id, arch FROM "{idx["name"]}"').fetchall():
                    self.db.execute(f'UPDATE "{idx["name"]}" SET "{col}" = ? WHERE id = ?',
                                    (lm.predict(Arch.from_dict(json.loads(arch))), entry_id))
        return device

    def set_measured(self, task: str, dataset: str, device: str,
                     latency_ms: dict[str, float]) -> None:
        """Stores measured latencies (entry key -> ms) of `device`."""
        name, _, _ = self._index(task, dataset)
        if device not in self.devices():
            raise LibraryError(f"{self.path}: device '{device}' is not profiled")
        col = _lat_column(device, "measured")
        with self.db:
            for key, ms in latency_ms.items():
                self.db.execute(f'UPDATE "{name}" SET "{col}" = ? WHERE key = ?', (ms, key))

    # ----- accuracy samples -----

    def add_accuracy_samples(self, task: str, dataset: str, archs: Sequence[Arch],
                             accuracies: Sequence[float]) -> None:
        name, _, _ = self._index(task, dataset)
        with self.db:
            self.db.executemany("INSERT INTO accuracy_samples VALUES (?, ?, ?)",
                                [(name, json.dumps(a.to_dict()), float(v))
                                 for a, v in zip(archs, accuracies)])

    def accuracy_samples(self, task: str, dataset: str) -> list[tuple[dict[str, Any], float]]:
        name, _, _ = self._index(task, dataset)
        return [(json.loads(a), float(v)) for a, v in self.db.execute(
            "SELECT arch, accuracy FROM accuracy_samples WHERE index_name = ?", (name,))]

    # ----- query -----

    def query(self, task: str, dataset: str, constraints: Constraints,
              policy: Policy) -> list[Entry]:
        """Entries that meet `constraints` (latency: measured where there is a measurement,
        else predicted), best first under `policy`."""
        name, _, _ = self._index(task, dataset)
        margins = self.margins()
        where, args = [], []
        for obj, side, limit in constraints.bounds():
            op = "<=" if side == "max" else ">="
            if obj == "latency":
                device = str(constraints.device)
                if device not in margins:
                    raise LibraryError(f"{self.path}: device '{device}' is not profiled "
                                       f"(devices: {', '.join(margins) or 'none'})")
                col = (f'COALESCE("{_lat_column(device, "measured")}", '
                       f'"{_lat_column(device, "predicted")}" * ?)')
                args.append(1.0 + margins[device])
            else:
                col = obj
            where.append(f"{col} {op} ?")
            args.append(limit)
        sql = f'SELECT * FROM "{name}"' + (" WHERE " + " AND ".join(where) if where else "")
        cur = self.db.execute(sql, args)
        rows = [self._entry(cur.description, row, margins) for row in cur.fetchall()]
        return rank(rows, policy, lambda e, o: e.value(o, constraints.device), lambda e: e.key)


def build_entries(net: Any, archs: Sequence[Arch], x_train: np.ndarray, x_test: np.ndarray,
                  y_test: np.ndarray, folder: str | Path, *, calibration_images: int = 2000,
                  seed: int = 0, on_arch: Callable[[int], None] | None = None
                  ) -> list[dict[str, Any]]:
    """Extracts each subnet, recalibrates its batch norm on training images, measures its
    test accuracy and writes its `.tmodel` (fp32) into `folder`. Returns one record per
    subnet (arch, accuracy, input_shape, size, path) for `ModelLibrary.add_entry`."""
    from tether.cloud.batchnorm import recalibrate_batchnorm
    from tether.cloud.supernet import extract, resize_images
    from tether.converter import convert

    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = min(calibration_images, len(x_train))
    calibration = x_train[rng.choice(len(x_train), n, replace=False)]
    out = []
    for i, arch in enumerate(archs):
        model = extract(net, arch)
        recalibrate_batchnorm(model, resize_images(calibration, arch.resolution))
        xr = resize_images(x_test, arch.resolution)
        acc = float(np.mean(np.asarray(model.predict(xr, verbose=0)).argmax(1) == y_test))
        path = folder / f"{arch.key()}.tmodel"
        tm = convert(model)
        tm.save(path)
        out.append({"arch": arch, "accuracy": acc, "input_shape": tuple(model.input_shape[1:]),
                    "size": path.stat().st_size, "path": str(path)})
        if on_arch is not None:
            on_arch(i + 1)
    return out
