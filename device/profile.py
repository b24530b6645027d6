"""What the device tells the cloud: its profile (`device_info`) and measured latencies
(`probe`, which runs the C tool `tether-probe` on a manifest of models).

The device id is derived from the fields that decide kernel speed (CPU architecture and model
name, core count, SIMD features, the engine's ISA and version), so one board model gets one
id whatever its hostname, and a new engine version gets a new latency table.

A `LatencyTable` is one probe run: key -> median milliseconds (with min and p90), the device
profile, the threads and repetitions used. It is JSON on disk and is all the cloud's latency
model reads from a device.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tether.errors import EngineError

__all__ = ["LatencyTable", "device_info", "probe", "probe_tool"]

_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
          "neon", "asimd", "asimddp", "asimdhp", "sve", "i8mm")


def probe_tool() -> Path:
    """The `tether-probe` executable installed beside the engine library (or TETHER_PROBE)."""
    env = os.environ.get("TETHER_PROBE")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for candidate in (here / "tether-probe", here / "runtime" / "build-py" / "tether-probe",
                      here / "runtime" / "build" / "tether-probe"):
        if candidate.is_file():
            return candidate
    found = shutil.which("tether-probe")
    if found:
        return Path(found)
    raise EngineError(f"tether-probe was not found next to {here}; build it with `pip install "
                      "-e .` (or `make setup`), or set TETHER_PROBE to its path")


def _cpu() -> tuple[str, list[str]]:
    name, flags = platform.processor() or "", set()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not name:
            name = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
        elif key == "cpu part" and not name:
            name = f"cpu part {value.strip()}"
    return name, sorted(f for f in flags if f in _FLAGS)


def _memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def device_info() -> dict[str, Any]:
    """This device's profile: architecture, CPU name, cores, SIMD features, memory, the
    engine's ISA and version, and `device_id` (a hash of the fields that decide speed)."""
    from tether.device._binding import isa

    cpu, flags = _cpu()
    version = "unknown"
    try:
        out = subprocess.run([str(probe_tool()), "--version"], capture_output=True, text=True,
                             timeout=30, check=True).stdout.split()
        version = out[1] if len(out) > 1 else version
    except (EngineError, OSError, subprocess.SubprocessError):
        pass
    info = {"arch": platform.machine(), "cpu": cpu, "cores": os.cpu_count() or 1,
            "simd": flags, "memory_bytes": _memory_bytes(), "isa": isa(),
            "engine_version": version, "system": platform.system()}
    stable = {k: info[k] for k in ("arch", "cpu", "cores", "simd", "isa", "engine_version")}
    digest = hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()
    info["device_id"] = f"{info['arch']}-{info['isa']}-{digest[:12]}"
    return info


@dataclass
class LatencyTable:
    """Median latency per key, measured on one device.

    Attributes:
        device: `device_info()` of the device measured.
        threads, warmup, runs, min_time_ms, rounds: how each model was run (at least
            `warmup` untimed and `runs` timed invokes, the timed ones lasting `min_time_ms` in
            all, in `rounds` interleaved slices).
        median_ms, min_ms, p90_ms: key -> milliseconds.
        scale, offset: the correction of summed pieces fitted on subnets measured end to end
            on this device (`tether.cloud.latency.LatencyModel.fit`); 1 and 0 when none was.
        margin: the relative guard band of that fit: a subnet's measured latency exceeds its
            prediction by more than this fraction in at most 5% of cases (0 when not fitted).
    """

    device: dict[str, Any]
    threads: int
    warmup: int
    runs: int
    median_ms: dict[str, float] = field(default_factory=dict)
    min_ms: dict[str, float] = field(default_factory=dict)
    p90_ms: dict[str, float] = field(default_factory=dict)
    scale: float = 1.0
    offset: float = 0.0
    margin: float = 0.0
    min_time_ms: int = 0
    rounds: int = 1

    @property
    def device_id(self) -> str:
        return str(self.device["device_id"])

    def save(self, path: str | Path) -> None:
        """Writes the table as JSON, whole or not at all."""
        from tether._internal.files import atomic_write_text

        atomic_write_text(Path(path), json.dumps(asdict(self), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        try:
            d = json.loads(Path(path).read_text())
            return cls(**d)
        except (ValueError, TypeError) as exc:
            raise EngineError(f"{path}: not a latency table ({exc})") from None

    def merge(self, other: LatencyTable) -> LatencyTable:
        """This table with `other`'s rows added (same device and settings)."""
        if (other.device_id, other.threads) != (self.device_id, self.threads):
            raise EngineError(f"latency tables of {self.device_id} ({self.threads} threads) and "
                              f"{other.device_id} ({other.threads} threads) do not merge")
        return LatencyTable(self.device, self.threads, self.warmup, self.runs,
                            {**self.median_ms, **other.median_ms},
                            {**self.min_ms, **other.min_ms}, {**self.p90_ms, **other.p90_ms},
                            self.scale, self.offset, self.margin, self.min_time_ms,
                            self.rounds)


def parse_table(text: str, device: dict[str, Any]) -> LatencyTable:
    """A `LatencyTable` from tether-probe's output."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("# tether-probe "):
        raise EngineError("tether-probe output has no header line")
    fields = dict(part.split("=", 1) for part in lines[0].split()[3:] if "=" in part)
    table = LatencyTable(device, int(fields.get("threads", 1)), int(fields.get("warmup", 0)),
                         int(fields.get("runs", 1)), min_time_ms=int(fields.get("min_ms", 0)),
                         rounds=int(fields.get("rounds", 1)))
    for line in lines[1:]:
        key, median, low, p90 = line.split("\t")
        table.median_ms[key] = float(median)
        table.min_ms[key] = float(low)
        table.p90_ms[key] = float(p90)
    return table


def probe(manifest: str | Path, *, threads: int = 1, warmup: int = 5, runs: int = 30,
          min_time_ms: int = 50, rounds: int = 1, timeout: float = 3600.0) -> LatencyTable:
    """Runs tether-probe on `manifest` (lines "KEY PATH") on this device: per model at least
    `warmup` untimed and `runs` timed invokes, and timed invokes until they last
    `min_time_ms` (microsecond models need thousands for a stable median). With `rounds` > 1
    all models are loaded at once and timed in that many interleaved slices, each keeping its
    fastest slice's median (a stretch of seconds when the machine runs slow then slows one
    slice of every model, not some models' whole measurement).

    Raises:
        EngineError: the tool is missing or failed (its message is kept).
    """
    cmd = [str(probe_tool()), str(manifest), "--threads", str(threads), "--warmup",
           str(warmup), "--runs", str(runs), "--min-ms", str(min_time_ms), "--rounds", str(rounds)]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        raise EngineError(f"tether-probe could not run: {exc}") from None
    if run.returncode != 0:
        lines = run.stderr.strip().splitlines() or ["(no message)"]
        raise EngineError("; ".join(lines[-2:]))
    return parse_table(run.stdout, device_info())
