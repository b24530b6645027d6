"""The cloud road from the command line on digits with the tiny space: supernet train, device
probe, library build and add-device, search under one budget and a ladder of budgets (timed on
this machine), the impossible one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether.cli import app

TINY = Path(__file__).with_name("tiny_space.toml")
runner = CliRunner()


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_probe_library_and_search(tmp_path) -> None:
    sn = tmp_path / "s.keras"
    _json(runner.invoke(app, ["supernet", "train", "-o", str(sn), "--space", str(TINY), "--data",
                              "digits", "--epochs", "2,1,1,1"]))
    table = tmp_path / "dev.json"
    probe = _json(runner.invoke(app, ["device", "probe", "--space", str(TINY), "-o", str(table),
                                      "--runs", "30", "--fit-subnets", "6"]))
    device = probe["device_id"]
    assert probe["correction"]["subnets"] == 6 and table.is_file()
    lib = tmp_path / "lib.sqlite"
    built = _json(runner.invoke(app, ["library", "build", str(lib), "--supernet", str(sn),
                                      "--data", "digits", "--models", "6",
                                      "--predictor-samples", "20"]))
    assert built["entries"] == 6 and built["accuracy_samples"] == 26
    added = _json(runner.invoke(app, ["library", "add-device", str(lib), "--table", str(table),
                                      "--measure", "--runs", "20"]))
    assert added == {"device_id": device, "indexes": 1, "measured": 6}
    shown = json.loads(runner.invoke(app, ["library", "show", str(lib), "--data", "digits",
                                           "--json"]).stdout)
    assert all(device in e["latency_measured_ms"] for e in shown)
    fastest = min(e["latency_measured_ms"][device] for e in shown)
    # budgets with room for a shared machine's timing noise (the fastest entry measured
    # again can be tens of percent slower than its first measurement)
    budgets = (10.0, fastest * 3.0, fastest * 2.0)
    # one budget: the answer is timed on this machine (the device) and meets it measured
    got = _json(runner.invoke(app, ["search", str(lib), "--data", "digits", "--device", device,
                                    "--max-latency", f"{budgets[1]}", "--policy",
                                    "accuracy > latency", "--generations", "5"]))
    assert got["verified"] and got["source"] in ("library", "extracted")
    assert got["latency_measured_ms"][device] <= budgets[1]
    # a ladder: every answer meets its budget measured, and tighter ones are no larger
    argv = ["search", str(lib), "--data", "digits", "--device", device, "--policy",
            "accuracy > latency", "--generations", "5"]
    for b in budgets:
        argv += ["--max-latency", f"{b}"]
    ladder = _json(runner.invoke(app, argv))["ladder"]
    assert [row["max_latency_ms"] for row in ladder] == pytest.approx(list(budgets))
    for row in ladder:
        assert row["source"] in ("library", "extracted"), row
        assert row["latency_measured_ms"][device] <= row["max_latency_ms"]
    for loose, tight in zip(ladder, ladder[1:]):
        assert tight["macs"] <= loose["macs"] and tight["params"] <= loose["params"]
    r = runner.invoke(app, ["search", str(lib), "--data", "digits", "--device", device,
                            "--max-latency", f"{fastest / 100}"], terminal_width=400)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 1 and len(lines) == 1, r.output
    assert "latency on" in lines[0] and "cannot be met" in lines[0] and "closest" in lines[0]


@pytest.mark.parametrize("argv, says", [
    (["search", "{d}/none.sqlite", "--device", "x"], "no such file"),
    (["search", "{d}/none.sqlite", "--max-latency", "1"], "needs the device"),
    (["search", "{d}/none.sqlite", "--policy", "speed"], "unknown objective 'speed'"),
    (["device", "probe", "-o", "{d}/t.txt"], "is a .json file"),
    (["library", "add-device", "{d}/none.sqlite", "--table", "{d}/none.json"], "--table"),
])
def test_bad_input_is_one_line(tmp_path, argv, says) -> None:
    r = runner.invoke(app, [a.format(d=tmp_path) for a in argv], terminal_width=400)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code != 0 and len(lines) == 1, r.output
    assert lines[0].startswith("error: ") and says in lines[0], lines[0]
