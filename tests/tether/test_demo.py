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
