"""`tether convert` for ONNX/TFLite sources with --report, and `tether export`."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")

from onnx import helper as h
from onnx_testlib import engine_run, litert_run, model, ort_run, rand, rel_err
from typer.testing import CliRunner

from tether.cli import app

runner = CliRunner()


def _onnx_file(tmp_path):
    nodes = [h.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]),
             h.make_node("Conv", ["xt", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["c"], ["r"]),
             h.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 3, 1])]
    m = model(nodes, [1, 6, 6, 2], [1, 6, 6, 3],
              {"w": rand((3, 2, 3, 3), 1), "b": rand((3,), 2)})
    p = tmp_path / "m.onnx"
    p.write_bytes(m.SerializeToString())
    return m, p


def test_convert_onnx_with_report_shows_parity(tmp_path) -> None:
    m, src = _onnx_file(tmp_path)
    out = tmp_path / "m.tmodel"
    r = runner.invoke(app, ["convert", str(src), "-o", str(out), "--report"])
    assert r.exit_code == 0, r.output
    assert "fuse_activation 1" in r.output and "ops after (1): CONV_2D 1" in r.output
    assert "parity vs onnxruntime on 4 inputs" in r.output
    x = rand((1, 6, 6, 2), 5)
    assert rel_err(engine_run(out.read_bytes(), x), ort_run(m, x)) < 1e-4


def test_convert_unsupported_onnx_op_writes_nothing(tmp_path) -> None:
    m = model([h.make_node("Erf", ["x"], ["y"], name="erf1")], [1, 4], [1, 4])
    src = tmp_path / "bad.onnx"
    src.write_bytes(m.SerializeToString())
    out = tmp_path / "bad.tmodel"
    r = runner.invoke(app, ["convert", str(src), "-o", str(out)])
    assert r.exit_code != 0
    assert "erf1" in r.output and "Erf" in r.output and "onnx" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


@pytest.mark.slow
def test_export_tflite_and_onnx_then_convert_back(tmp_path) -> None:
    import keras

    from tether.models import demo_cnn

    src = tmp_path / "cnn.keras"
    km = demo_cnn()
    km.save(src)
    x = np.random.default_rng(0).random((1, 8, 8, 1), dtype=np.float32)
    ref = np.asarray(keras.models.load_model(src)(x))
    for to in ("tflite", "onnx"):
        out = tmp_path / f"cnn.{to}"
        r = runner.invoke(app, ["export", str(src), "--to", to, "-o", str(out)])
        assert r.exit_code == 0, r.output
        got = litert_run(out.read_bytes(), x) if to == "tflite" else ort_run(out.read_bytes(), x)
        assert rel_err(got, ref) < 1e-4
        tm_path = tmp_path / f"cnn_{to}.tmodel"
        r = runner.invoke(app, ["convert", str(out), "-o", str(tm_path)])
        assert r.exit_code == 0, r.output
        assert rel_err(engine_run(tm_path.read_bytes(), x), ref) < 1e-4


def test_export_rejects_unknown_target_and_writes_nothing(tmp_path) -> None:
    out = tmp_path / "m.xyz"
    r = runner.invoke(app, ["export", "demo_cnn", "--to", "coreml", "-o", str(out)])
    assert r.exit_code != 0 and "coreml" in r.output
    r = runner.invoke(app, ["export", str(tmp_path / "absent.keras"), "--to", "onnx",
                            "-o", str(out)])
    assert r.exit_code != 0 and "no such model file" in r.output
    assert not out.exists()


def test_convert_quantize_int8_with_calibration(tmp_path) -> None:
    _m, src = _onnx_file(tmp_path)
    cal = tmp_path / "cal.npy"
    np.save(cal, rand((8, 1, 6, 6, 2), 3))
    out = tmp_path / "q.tmodel"
    r = runner.invoke(app, ["convert", str(src), "-o", str(out), "--quantize", "int8",
                            "--calibration", str(cal), "--report"])
    assert r.exit_code == 0, r.output
    assert "QUANTIZE 1" in r.output and "DEQUANTIZE 1" in r.output
    from tether.converter import load

    tm = load(out)
    assert tm.report.ops_after == {"CONV_2D": 1, "DEQUANTIZE": 1, "QUANTIZE": 1}
    bad = tmp_path / "bad.tmodel"
    r = runner.invoke(app, ["convert", str(src), "-o", str(bad), "--quantize", "int8"])
    assert r.exit_code != 0 and "needs calibration" in r.output and not bad.exists()


@pytest.mark.parametrize("name, content", [
    ("broken.keras", b"PK\x03\x04 not really a zip archive"),
    ("broken.tflite", b"\x1c\x00\x00\x00TFL3" + bytes(40)),
    ("broken.onnx", b"\x08\x07\x12garbage"),
])
def test_convert_malformed_files_fail_cleanly_for_every_frontend(tmp_path, name, content) -> None:
    src = tmp_path / name
    src.write_bytes(content)
    out = tmp_path / "out.tmodel"
    r = runner.invoke(app, ["convert", str(src), "-o", str(out)])
    assert r.exit_code == 1, r.output
    assert "error:" in r.output and "Traceback" not in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
