import json

import pytest
from typer.testing import CliRunner

from tether.cli import app


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path):
    r = CliRunner().invoke(app, ["demo", "--quick", "--out", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "report.json").read_text())
    engines = {e["engine"]: e for e in report["engines"]}
    assert set(engines) == {"tether", "litert", "onnxruntime"}
    assert report["keras_accuracy"] > 0.85
    # The engine computes what Keras computes: same top-1 on every test image.
    assert engines["tether"]["accuracy"] == report["keras_accuracy"]
    assert engines["tether"]["agrees_with_keras"] == 1.0
    assert engines["tether"]["max_abs_diff"] < 1e-4
    assert (tmp_path / "demo_cnn.tmodel").is_file()
    assert "BatchNormalization" not in json.dumps(report["ops_after"])


@pytest.mark.slow
def test_demo_prints_no_runtime_chatter(tmp_path):
    # TensorFlow, absl and LiteRT write from C++ to descriptor 2 as they load; the CLI keeps
    # that off the terminal (TETHER_VERBOSE=1 shows it), so stderr holds nothing but blanks.
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("TETHER_VERBOSE",
                                                           "TF_CPP_MIN_LOG_LEVEL")}
    run = subprocess.run([sys.executable, "-c", "from tether.cli import main; main()", "demo",
                          "--quick", "--out", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr
    chatter = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert chatter == [], chatter[:5]
    assert "tether demo" in run.stdout
