"""`tether demo`: the built-in road through the CLI, its report opened in headless Chromium.

The demo's own configs are exercised with their training shortened (`--set`), so the test
stays within a minute; `make demo` runs the full one. The report and its screenshot stay in
`out/test-demo/` (the run's output folder, kept by CI as an artifact).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tether.pipeline import demo_config
from tether.pipeline.report import check_in_browser, find_chromium, read_summary

OUT = Path(__file__).resolve().parents[2] / "out" / "test-demo"
SHORT = ["supernet.epochs=[1, 0, 0, 0]", "library.models=3", "library.predictor_samples=2",
         "device.probe_ms=2", "device.fit_subnets=2", "search.generations=2",
         "transfer.epochs=2", "federated.rounds=1", "inference.runs=5"]


def test_demo_configs_are_the_documented_road() -> None:
    for quick in (False, True):
        cfg = demo_config(quick)
        assert cfg.scenario.dataset == "mnist5k" and cfg.scenario.holdout_classes == [8, 9]
        assert cfg.model.source == "supernet"
        assert cfg.learn.patterns == ["inference", "transfer", "federated"]
        assert cfg.inference.engines == ["tether", "litert", "onnxruntime"]
    assert demo_config(out_dir="x").run.out_dir == "x"


@pytest.mark.slow
def test_demo_runs_the_road_quietly_and_its_report_loads_in_a_browser() -> None:
    # TensorFlow, absl, LiteRT and Flower write as they load; the CLI keeps that off the
    # terminal (TETHER_VERBOSE=1 shows it), so stderr holds only the stages' own lines.
    shutil.rmtree(OUT, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k not in ("TETHER_VERBOSE",
                                                           "TF_CPP_MIN_LOG_LEVEL")}
    cmd = [sys.executable, "-c", "from tether.cli import main; main()", "demo", "--quick",
           "--out", str(OUT)]
    for s in SHORT:
        cmd += ["--set", s]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    chatter = [ln for ln in run.stderr.splitlines() if ln.strip() and not ln.startswith("✓")]
    assert chatter == [], chatter[:5]
    stages = [ln.split()[1] for ln in run.stderr.splitlines() if ln.startswith("✓")]
    assert stages == ["data", "supernet", "library", "device", "search", "compress", "convert",
                      "inference", "transfer", "federated"]
    assert "tether demo (quick)" in run.stdout and "report.html" in run.stdout
    summary = read_summary(OUT / "report.html")
    assert [e["engine"] for e in summary["inference"]["engines"]] == [
        "tether", "litert", "onnxruntime"]
    assert summary["transfer"]["new_classes"] == [8, 9]
    if find_chromium() is None:
        pytest.skip("no chromium on PATH (`make sysdeps` installs Debian's chromium)")
    seen = check_in_browser(OUT / "report.html", OUT / "report.png")
    assert seen.images == seen.images_loaded == 6, seen
    assert seen.console_errors == []
    assert (OUT / "report.png").stat().st_size > 10_000
