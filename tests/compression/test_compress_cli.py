"""`tether compress` sub-app (compression/cli.py) through typer's runner."""

import json
import subprocess
import sys

from tether.compression.cli import app
from typer.testing import CliRunner

runner = CliRunner()


def test_help_imports_no_tensorflow():
    code = ("import sys; import tether.compression.cli; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False False"


def test_macs_and_prune_channels(tmp_path):
    res = runner.invoke(app, ["macs", "demo_cnn"])
    assert res.exit_code == 0, res.output
    macs = json.loads(res.output)["macs"]
    out = tmp_path / "small.keras"
    res = runner.invoke(app, ["prune-channels", "demo_cnn", "-o", str(out), "--fraction", "0.5",
                              "--target", "macs"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.output)
    assert rec["macs_before"] == macs and rec["macs_after"] <= macs / 2 and out.is_file()


def test_quantize_ptq_writes_plan(tmp_path):
    plan = tmp_path / "plan.json"
    res = runner.invoke(app, ["quantize", "demo_cnn", "--data", "digits", "--samples", "32",
                              "--calibration", "percentile", "--plan", str(plan)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["tensors"] > 5
    assert "image" in json.loads(plan.read_text())["activation_ranges"]


def test_bad_fraction_fails_with_message(tmp_path):
    res = runner.invoke(app, ["prune-channels", "demo_cnn", "-o", str(tmp_path / "x.keras"),
                              "--fraction", "1.5"])
    assert res.exit_code == 1
    assert "fraction must be in [0, 1)" in res.output
