"""`tether compress` sub-app (tether/cli/compress.py) through typer's runner."""

import json
import subprocess
import sys

from tether.cli.compress import app
from typer.testing import CliRunner

runner = CliRunner()


def test_help_imports_no_tensorflow():
    code = ("import sys; import tether.cli.compress; "
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


def test_distill_writes_student_and_reports(tmp_path):
    out = tmp_path / "student.keras"
    res = runner.invoke(app, ["distill", "demo_cnn", "demo_cnn", "-o", str(out), "--data",
                              "digits", "--epochs", "1", "--temperature", "2", "--alpha", "0.5"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout.strip().splitlines()[-1])
    assert out.is_file() and rec["output"] == str(out)
    assert 0.0 <= rec["student_accuracy"] <= 1.0 and rec["temperature"] == 2.0


def test_distill_bad_alpha_fails_before_training(tmp_path):
    res = runner.invoke(app, ["distill", "demo_cnn", "demo_cnn", "-o", str(tmp_path / "s.keras"),
                              "--data", "digits", "--alpha", "1.5"])
    assert res.exit_code == 1
    assert "alpha must be in [0, 1]" in res.output and not (tmp_path / "s.keras").exists()


def test_output_that_is_not_a_keras_file_fails_first(tmp_path):
    res = runner.invoke(app, ["prune", "demo_cnn", "-o", str(tmp_path / "x.tmodel"), "--data",
                              "digits"])
    assert res.exit_code == 1
    assert "x.tmodel: a Keras model file must end in .keras or .h5" in res.output


def test_qat_writes_int8_tmodel_run_by_the_engine(tmp_path):
    tm, plan = tmp_path / "q.tmodel", tmp_path / "plan.json"
    res = runner.invoke(app, ["qat", "demo_cnn", "--data", "digits", "--tmodel", str(tm),
                              "--plan", str(plan), "--samples", "32"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout.strip().splitlines()[-1])
    assert tm.is_file() and rec["tmodel_bytes"] == tm.stat().st_size
    assert "activation_ranges" in json.loads(plan.read_text())
    # an untrained demo CNN after one QAT epoch: the engine's int8 follows the QAT model
    assert abs(rec["engine_int8_accuracy"] - rec["qat_model_accuracy"]) < 0.05
