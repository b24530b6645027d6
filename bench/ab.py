"""Engine A/B: the C engine of two git revisions timed round-robin on the same .tmodel files.

    .venv/bin/python bench/ab.py --base REV [--head REV] --models a.tmodel,b.tmodel
                                 [--rounds 15] [--repeat 20] [--threads 1]

Each revision's `tether-run` is built (Release, CMake) from `git archive` of that revision
into a temporary folder (`--head` defaults to the working tree as it is). Then, for every
model, the two binaries alternate `--rounds` times (base, head, base, head, ...), each run
timing `--repeat` invokes after one warm-up and printing their median; machine load hits
both alike. One JSON object per model: the median over rounds of each side's medians,
`head_over_base`, the machine and both revisions. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_LATENCY = re.compile(r"latency: median ([0-9.]+) ms")


def _build(source: Path, build: Path) -> Path:
    subprocess.run(["cmake", "-S", str(source / "device/runtime"), "-B", str(build),
                    "-DCMAKE_BUILD_TYPE=Release"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j2", "--target", "tether-run"],
                   check=True, capture_output=True)
    return build / "tether-run"


def _tree(rev: str | None, into: Path) -> Path:
    """The source of `rev` (None: the working tree) as a folder."""
    if rev is None:
        return ROOT
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "device/runtime"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _median_ms(binary: Path, model: str, repeat: int, threads: int) -> float:
    out = subprocess.run([str(binary), model, "--repeat", str(repeat), "--threads", str(threads)],
                         check=True, capture_output=True, text=True).stdout
    match = _LATENCY.search(out)
    if match is None:
        raise RuntimeError(f"{binary} {model}: no latency line in its output:\n{out}")
    return float(match.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="git revision of the A side")
    parser.add_argument("--head", default=None, help="git revision of the B side "
                        "(default: the working tree)")
    parser.add_argument("--models", required=True, help="comma-separated .tmodel files")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    from tether.bench import git_sha, machine

    with tempfile.TemporaryDirectory(prefix="tether-ab-") as tmp:
        work = Path(tmp)
        binaries = {side: _build(_tree(rev, work / f"{side}-src"), work / f"{side}-build")
                    for side, rev in (("base", args.base), ("head", args.head))}
        for model in args.models.split(","):
            times: dict[str, list[float]] = {"base": [], "head": []}
            for _ in range(args.rounds):
                for side in ("base", "head"):
                    times[side].append(_median_ms(binaries[side], model, args.repeat,
                                                  args.threads))
            base, head = (statistics.median(times[s]) for s in ("base", "head"))
            print(json.dumps({"name": Path(model).name, "threads": args.threads,
                              "base": args.base, "head": args.head or f"{git_sha()}+tree",
                              "base_median_ms": round(base, 4), "head_median_ms": round(head, 4),
                              "head_over_base": round(head / base, 4), "rounds": args.rounds,
                              "repeat": args.repeat, "device": machine()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
