"""Side-by-side latency of tether and its peers, in one process.

Every engine runs the same Keras model (converted by its own converter) on the same seeded
input: warm-up runs first, then repeated timed runs; records give the median, p90 and min.
Nothing here asserts on time.
"""

from __future__ import annotations

import logging
import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from tether.peers import make_runner

__all__ = ["BenchRecord", "run_metadata", "time_fn", "bench_model", "machine", "git_sha"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchRecord:
    """One engine on one model; JSON-ready via `asdict`."""

    name: str
    engine: str
    shape: tuple[int, ...]
    threads: int
    median_ms: float
    p90_ms: float
    min_ms: float
    runs: int
    model_bytes: int
    arena_bytes: Optional[int]
    max_abs_diff_vs_keras: float
    cpu_isa: str
    device: str
    git_sha: str

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


def machine() -> str:
    """CPU model name and core count, e.g. 'AMD EPYC 9R14 (2 cores)'."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{name} ({os.cpu_count()} cores)"


def isa() -> str:
    """The widest SIMD ISA this CPU offers (what an engine could use, not what it does)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    for flag, name in (("avx512f", "avx512"), ("avx2", "avx2"), ("asimd", "neon"),
                       ("neon", "neon"), ("sse4_2", "sse4.2")):
        if f" {flag}" in flags:
            return name
    return platform.machine()


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=Path(__file__).resolve().parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_metadata(**extra: Any) -> dict[str, Any]:
    """What every benchmark JSON line carries: the revision, the machine and its widest ISA
    (`extra` adds or overrides fields, e.g. isa="numpy" for numpy-only work)."""
    return {"git_sha": git_sha(), "device": machine(), "isa": isa(), **extra}


def time_fn(fn: Callable[[], Any], warmup: int = 5, runs: int = 30,
            min_seconds: float = 0.0) -> np.ndarray:
    """Wall times in ms of `runs` calls (at least `min_seconds` in all) after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return np.asarray(times)


def bench_model(model: Any, name: str, engines: Sequence[str], threads: int = 1,
                warmup: int = 5, runs: int = 30, seed: int = 0,
                on_engine: Optional[Callable[[str], None]] = None) -> list[BenchRecord]:
    """Times each engine on `model` with one seeded input of the model's shape (batch 1).

    Args:
        model: A Keras model with one input.
        name: Label for the records.
        engines: Engine names (`tether`, `litert`, `onnxruntime`, `keras`).
        threads: Threads per engine (default 1).
        warmup, runs: Untimed and timed calls per engine (defaults 5 and 30).
        seed: Input seed (default 0).
        on_engine: Called with each engine's name before it is built (for progress bars).
    """
    shape = (1,) + tuple(int(d) for d in model.inputs[0].shape[1:])
    x = np.random.default_rng(seed).random(shape, dtype=np.float32)
    reference = np.asarray(model(x, training=False))
    records = []
    dev, arch, sha = machine(), isa(), git_sha()
    for engine in engines:
        if on_engine is not None:
            on_engine(engine)
        runner = make_runner(engine, model, threads)
        y = np.asarray(runner.run(x)).reshape(reference.shape)
        times = time_fn(lambda: runner.run(x), warmup=warmup, runs=runs)
        records.append(BenchRecord(
            name=name, engine=engine, shape=shape, threads=threads,
            median_ms=float(np.median(times)), p90_ms=float(np.percentile(times, 90)),
            min_ms=float(times.min()), runs=len(times), model_bytes=runner.model_bytes,
            arena_bytes=runner.arena_bytes,
            max_abs_diff_vs_keras=float(np.abs(y - reference).max()),
            cpu_isa=arch, device=dev, git_sha=sha))
        logger.info("%s %s: median %.3f ms", name, engine, records[-1].median_ms)
    return records
