"""`tether transfer run` on digits: a head for digits 5-9 trained in the engine, the adapted
.tmodel written whole, part A's features kept in a cache folder and reused; bad input in one
line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tether.cli import app
from tether.device import Engine

runner = CliRunner()


def test_transfer_run_writes_the_adapted_model_and_reuses_the_cache(tmp_path) -> None:
    out = tmp_path / "adapted.tmodel"
    argv = ["transfer", "run", "demo_cnn", "--cut", "gap", "-o", str(out), "--data", "digits",
            "--classes", "5-9", "--per-class", "30", "--epochs", "30", "--cache",
            str(tmp_path / "cache")]
    first = runner.invoke(app, argv)
    assert first.exit_code == 0, first.output
    rep = json.loads(first.stdout.strip().splitlines()[-1])
    assert rep["classes"] == [5, 6, 7, 8, 9] and rep["device_images"] == 150
    assert rep["cache"]["hits"] == 0 and rep["loss_first_last"][1] < rep["loss_first_last"][0]
    with Engine(out) as engine:
        assert engine.outputs[0].shape == (1, 5)
        assert np.isclose(engine.run(np.zeros((1, 8, 8, 1), np.float32)).sum(), 1.0, atol=1e-5)
    again = runner.invoke(app, argv)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout.strip().splitlines()[-1])["cache"]["hits"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapted.tmodel", "cache"]


@pytest.mark.parametrize("argv, says", [
    (["--cut", "nope"], "no layer 'nope'"),
    (["--cut", "gap", "--classes", "5"], "at least two classes"),
    (["--cut", "gap", "--classes", "11-12"], "[11, 12] not in digits"),
])
def test_bad_input_is_one_line(tmp_path, argv, says) -> None:
    r = runner.invoke(app, ["transfer", "run", "demo_cnn", "-o", str(tmp_path / "a.tmodel"),
                            "--data", "digits", "--epochs", "1", *argv], terminal_width=400)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code != 0 and len(lines) == 1, r.output
    assert lines[0].startswith("error: ") and says in lines[0], lines[0]
    assert not list(tmp_path.iterdir())


def test_transfer_finetune_writes_both_models(tmp_path) -> None:
    import keras

    out, kout = tmp_path / "tuned.tmodel", tmp_path / "tuned.keras"
    r = runner.invoke(app, ["transfer", "finetune", "demo_cnn", "--cut", "gap", "-o", str(out),
                            "--keras-output", str(kout), "--data", "digits", "--classes", "5-9",
                            "--per-class", "20", "--head-epochs", "3", "--epochs", "2",
                            "--unfreeze", "1"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    assert [s["stage"] for s in rep["stages"]] == ["head", "staged"]
    assert len(rep["stages"][1]["trainable"]) == 2  # one layer before the cut, and the head
    x = np.random.default_rng(0).random((4, 8, 8, 1), np.float32)
    with Engine(out) as engine:
        np.testing.assert_allclose(engine.run(x), keras.models.load_model(kout).predict(
            x, verbose=0), atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tuned.keras", "tuned.tmodel"]


@pytest.mark.parametrize("argv, says", [
    (["--schedule", "all"], "--schedule all: one of head, staged, full"),
    (["--keras-output", "x.h5"], "a Keras model is a .keras file"),
    (["--cut", "nope"], "no layer 'nope'"),
])
def test_finetune_bad_input_is_one_line(tmp_path, argv, says) -> None:
    argv = [a if a != "x.h5" else str(tmp_path / a) for a in argv]
    cut = [] if "--cut" in argv else ["--cut", "gap"]
    r = runner.invoke(app, ["transfer", "finetune", "demo_cnn", "-o", str(tmp_path / "a.tmodel"),
                            "--data", "digits", "--epochs", "1", *cut, *argv],
                      terminal_width=400)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code != 0 and len(lines) == 1, r.output
    assert lines[0].startswith("error: ") and says in lines[0], lines[0]
    assert not list(tmp_path.iterdir())


def test_transfer_incremental_learns_task_after_task(tmp_path) -> None:
    out = tmp_path / "inc.tmodel"
    r = runner.invoke(app, ["transfer", "incremental", "demo_cnn", "--cut", "gap", "--tasks",
                            "0-1/2-3/4-5", "-o", str(out), "--data", "digits", "--per-class",
                            "30", "--epochs", "20", "--method", "replay"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    assert rep["tasks"] == [[0, 1], [2, 3], [4, 5]] and rep["classes"] == [0, 1, 2, 3, 4, 5]
    assert rep["device_images"] == 180
    steps = rep["after_each_task"]
    assert [len(s["per_task_accuracy"]) for s in steps] == [1, 2, 3]
    assert steps[0]["earlier_classes_accuracy"] is None
    assert all(s["earlier_classes_accuracy"] is not None for s in steps[1:])
    # replay keeps the first task: far above the chance of six classes at the end
    assert steps[-1]["per_task_accuracy"][0] > 0.5, steps
    with Engine(out) as engine:
        assert engine.outputs[0].shape == (1, 6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inc.tmodel"]


@pytest.mark.parametrize("argv, says", [
    (["--tasks", "0-1"], "two or more tasks"),
    (["--tasks", "0-1/1-2"], "a class is in two tasks"),
    (["--tasks", "0/x"], "--tasks 0/x: give class ids like"),
    (["--tasks", "0-1/2-3", "--method", "lwf"], "--method lwf: one of naive, ewc, replay"),
])
def test_incremental_bad_input_is_one_line(tmp_path, argv, says) -> None:
    r = runner.invoke(app, ["transfer", "incremental", "demo_cnn", "--cut", "gap", "-o",
                            str(tmp_path / "a.tmodel"), "--data", "digits", *argv],
                      terminal_width=400)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code != 0 and len(lines) == 1, r.output
    assert lines[0].startswith("error: ") and says in lines[0], lines[0]
    assert not list(tmp_path.iterdir())
