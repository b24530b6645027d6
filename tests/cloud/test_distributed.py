"""Supernet training under tf.distribute: `tether supernet train --strategy mirrored:2`, a
MirroredStrategy over two logical CPU devices (in a fresh process: logical devices must be set
before TensorFlow starts), through every phase of progressive shrinking."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_the_cli_trains_under_mirrored_strategy(tmp_path) -> None:
    space = Path(__file__).with_name("tiny_space.toml")
    out = tmp_path / "s.keras"
    run = subprocess.run([sys.executable, "-m", "tether.cli.main", "supernet", "train", "-o",
                          str(out), "--space", str(space), "--data", "digits", "--epochs",
                          "2,1,0,0", "--strategy", "mirrored:2"], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rep = json.loads(run.stdout.strip().splitlines()[-1])
    assert rep["replicas"] == 2 and out.is_file()
    assert [p["phase"] for p in rep["phases"]] == ["full", "kernel", "depth", "expand"]
    last = rep["phases"][1]["epochs"][-1]
    assert last["largest_accuracy"] > 0.5 and math.isfinite(last["loss"])  # learned, finite
