"""`tether supernet train|extract` on digits with a tiny space; bad input in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether.cli import app

TINY = Path(__file__).with_name("tiny_space.toml")
runner = CliRunner()


@pytest.mark.slow
def test_train_then_extract_then_convert(tmp_path) -> None:
    out = tmp_path / "s.keras"
    r = runner.invoke(app, ["supernet", "train", "-o", str(out), "--space", str(TINY),
                            "--data", "digits", "--epochs", "2,0,0,1"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    assert [p["phase"] for p in rep["phases"]] == ["full", "kernel", "depth", "expand"]
    assert out.is_file() and (tmp_path / "s.checkpoints" / "progress.json").is_file()
    sub = tmp_path / "sub.keras"
    r = runner.invoke(app, ["supernet", "extract", str(out), "-o", str(sub), "--arch",
                            "smallest", "--data", "digits"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    from tether.cloud.space import SearchSpace

    space = SearchSpace.load(TINY)
    assert rep["params"] == space.smallest().params(space)
    assert rep["macs"] == space.smallest().macs(space)
    assert rep["accuracy"] > 0.1 and rep["calibration_images"] > 1000
    r = runner.invoke(app, ["convert", str(sub), "-o", str(tmp_path / "sub.tmodel"), "--report"])
    assert r.exit_code == 0 and "logits (pre-softmax)" in r.output, r.output


@pytest.mark.parametrize("argv, says", [
    (["train", "-o", "{d}/s.keras", "--epochs", "1,2"], "--epochs 1,2"),
    (["train", "-o", "{d}/s.keras", "--epochs", "0,1,1,1"], "full phase needs at least 1"),
    (["train", "-o", "{d}/s.h5"], "must end in .keras"),
    (["train", "-o", "{d}/s.keras", "--space", "{d}/none.toml"], "--space"),
    (["extract", "{d}/none.keras", "-o", "{d}/x.keras"], "no such file"),
    (["train", "-o", "{d}/s.keras", "--strategy", "tpu"], "--strategy tpu: choose"),
])
def test_bad_input_is_one_line(tmp_path, argv, says) -> None:
    r = runner.invoke(app, ["supernet", *[a.format(d=tmp_path) for a in argv]],
                      terminal_width=400)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code != 0 and len(lines) == 1, r.output
    assert lines[0].startswith("error: ") and says in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []
