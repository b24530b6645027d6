"""Stage outputs cached under a hash of everything they depend on.

A stage's key hashes its name, its code version, its config and the keys of the stages it
reads (and, for user files, their contents), so changing one option re-runs exactly the
stages downstream of it. A stage writes into `stages/.<name>-<key>.partial/`, which is renamed
to `stages/<name>-<key>/` only after its `stage.json` record is written: a folder without the
dot is always whole. An interrupted stage leaves only the `.partial` folder (removed when the
stage runs again) and, for stages that checkpoint (supernet training), a
`<name>-<key>.resume/` folder the next run continues from.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["StageRecord", "Store", "file_digest"]

RECORD = "stage.json"


@dataclass(frozen=True)
class StageRecord:
    """One stage of one run: where its outputs are and what it measured.

    Attributes:
        name: the stage.
        key: hash of its code version, config and inputs (16 hex digits).
        cached: True when this run reused the outputs of an earlier one.
        seconds: time the stage took when it ran (the earlier run's, when cached).
        folder: the stage's output folder.
        report: what the stage measured (JSON values; file names relative to `folder`).
    """

    name: str
    key: str
    cached: bool
    seconds: float
    folder: Path
    report: dict[str, Any] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        """A file the stage wrote."""
        return self.folder / name


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, or of a folder's file names, sizes and bytes (a dataset of
    images), so a changed input changes every key that depends on it."""
    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    for f in files:
        h.update(str(f.relative_to(p) if f != p else f.name).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


class Store:
    """The stage cache under `root/stages/` and the run log `root/runs.jsonl`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.stages = self.root / "stages"
        self.stages.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(name: str, version: int, parts: dict[str, Any]) -> str:
        """The 16-hex-digit key of stage `name` with `parts` (JSON values) as its inputs."""
        text = json.dumps({"stage": name, "version": version, **parts}, sort_keys=True,
                          default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def folder(self, name: str, key: str) -> Path:
        return self.stages / f"{name}-{key}"

    def lookup(self, name: str, key: str) -> StageRecord | None:
        """The finished stage `name`/`key`, or None."""
        folder = self.folder(name, key)
        try:
            rec = json.loads((folder / RECORD).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return StageRecord(name, key, True, float(rec["seconds"]), folder, rec["report"])

    def run(self, name: str, key: str,
            fn: Callable[[Path, Path, Path], dict[str, Any]]) -> StageRecord:
        """The stage's record: reused when a finished run of the same key exists, else made
        by `fn(work, final, resume)`: it writes its files into `work` (renamed to `final`
        when it returns; paths recorded inside files must use `final`), may keep checkpoints
        in `resume` (kept across interruptions, removed after success), and returns its
        report."""
        done = self.lookup(name, key)
        if done is not None:
            return done
        final = self.folder(name, key)
        work = self.stages / f".{name}-{key}.partial"
        resume = self.stages / f"{name}-{key}.resume"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        t0 = time.perf_counter()
        report = fn(work, final, resume)
        seconds = time.perf_counter() - t0
        text = json.dumps({"stage": name, "key": key, "seconds": seconds,
                           "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "report": report},
                          indent=1, default=_plain)
        (work / RECORD).write_text(text)
        shutil.rmtree(final, ignore_errors=True)  # a folder without its record is not whole
        os.replace(work, final)
        shutil.rmtree(resume, ignore_errors=True)
        return StageRecord(name, key, False, seconds, final, json.loads(text)["report"])

    def log_run(self, records: list[StageRecord], **extra: Any) -> None:
        """Appends one line to `runs.jsonl`: which stages ran and which came from cache."""
        line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra,
                           "stages": [{"name": r.name, "key": r.key, "cached": r.cached,
                                       "seconds": round(r.seconds, 3)} for r in records]})
        with open(self.root / "runs.jsonl", "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def runs(self) -> list[dict[str, Any]]:
        """Every run logged so far, oldest first."""
        path = self.root / "runs.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and paths in reports."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)
