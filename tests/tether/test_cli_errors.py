"""Bad command-line input: each case exits non-zero before any work with one line that names
the flag and what it allows, prints no traceback and leaves no file behind."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from tether.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from tether.converter import convert
    from tether.models import demo_cnn

    d = tmp_path_factory.mktemp("cli")
    model = demo_cnn()
    model.save(d / "cnn.keras")
    convert(model).save(d / "cnn.tmodel")
    shape = (1, *model.input_shape[1:])
    np.save(d / "complex.npy", np.zeros(shape, np.complex64))
    np.save(d / "f64.npy", np.zeros(shape, np.float64))
    np.save(d / "u8.npy", np.zeros(shape, np.uint8))
    np.save(d / "empty.npy", np.zeros((0, *shape[1:]), np.float32))
    np.save(d / "ok.npy", np.zeros(shape, np.float32))
    (d / "text.npy").write_text("not an array\n")
    (d / "folder").mkdir()
    return d


CASES = [
    # (argv with {d} for the folder, the flag the message names, what it says)
    (["run", "{d}/cnn.tmodel", "--input", "{d}/complex.npy"], "--input", "dtype complex64"),
    (["run", "{d}/cnn.tmodel", "--input", "{d}/f64.npy"], "--input", "dtype float64"),
    (["run", "{d}/cnn.tmodel", "--input", "{d}/u8.npy"], "--input", "dtype uint8"),
    (["run", "{d}/cnn.tmodel", "--input", "{d}/empty.npy"], "--input", "empty batch"),
    (["run", "{d}/cnn.tmodel", "--input", "{d}/text.npy"], "--input", "not a .npy array file"),
    (["run", "{d}/cnn.tmodel", "--input", "{d}/nothing.npy"], "--input", "no such file"),
    (["run", "{d}/cnn.tmodel", "--output", "{d}/folder"], "--output", "is a folder"),
    (["run", "{d}/cnn.tmodel", "--output", "{d}/no/where.npy"], "--output", "does not exist"),
    (["run", "{d}/cnn.tmodel", "--threads", "100"], "--threads", "1 to 64 threads"),
    (["convert", "{d}/cnn.keras", "-o", "{d}/folder"], "--output", "is a folder"),
    (["convert", "{d}/cnn.keras", "-o", "{d}/m.tmodel", "--quantize", "int8",
      "--calibration", "{d}/text.npy"], "--calibration", "not a .npy array file"),
    (["convert", "{d}/cnn.keras", "-o", "{d}/m.tmodel", "--samples", "{d}/ok.npy"],
     "--samples", "add --report"),
    (["compress", "prune-channels", "{d}/cnn.keras", "-o", "{d}/small.keras", "--epochs", "1"],
     "--epochs", "give --data"),
    (["compress", "distill", "{d}/cnn.keras", "{d}/cnn.keras", "-o", "{d}/s.keras", "--data",
      "digits", "--lr", "-1"], "--lr", "must be > 0"),
    (["compress", "qat", "{d}/cnn.keras", "--data", "digits", "--tmodel", "{d}/q.tmodel",
      "--lr", "0"], "--lr", "must be > 0"),
    (["compress", "quantize", "{d}/cnn.keras", "--mode", "ptq", "--data", "digits", "--plan",
      "{d}/folder"], "--plan", "is a folder"),
    (["compress", "prune", "{d}/cnn.keras", "-o", "{d}/folder", "--data", "digits"],
     "--output", "end in .keras"),
    (["demo", "--out", "{d}/ok.npy"], "--out", "is a file"),
    (["federated", "simulate", "--local", "--codec", "qsgd:0"], "--codec", "bits must be in"),
    (["federated", "simulate", "--local", "--codec", "foo"], "--codec", "unknown codec spec"),
    (["federated", "simulate", "--local", "--codec", "topk:2"], "--codec", "fraction must be"),
    (["federated", "simulate", "--local", "--downlink", "foo"], "--downlink", "unknown codec"),
    # click's own usage errors, one line too
    (["federated", "simulate", "--rounds", "x"], "--rounds", "not a valid integer"),
    (["run", "{d}/cnn.tmodel", "--threads", "2.5"], "--threads", "not a valid integer"),
    (["compress", "prune-channels", "{d}/cnn.keras", "-o", "{d}/s.keras", "--importance",
      "foo"], "--importance", "is not one of 'l1', 'bn'"),
    (["convert"], "SRC", "Missing argument"),
    (["nosuch"], "--help", "No such command"),
]


@pytest.mark.parametrize("argv, flag, says", CASES, ids=lambda v: v if isinstance(v, str) else None)
def test_bad_input_is_one_line_naming_the_flag(files, argv, flag, says):
    before = sorted(p.name for p in files.rglob("*"))
    result = runner.invoke(app, [a.format(d=files) for a in argv], terminal_width=400)
    assert result.exit_code in (1, 2), result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and flag in lines[0] and says in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert sorted(p.name for p in files.rglob("*")) == before  # nothing written


def test_an_onnx_opset_convert_cannot_read_is_refused(files, tmp_path):
    result = runner.invoke(app, ["export", str(files / "cnn.keras"), "--to", "onnx", "-o",
                                 str(tmp_path / "m.onnx"), "--opset", "5"])
    assert result.exit_code == 2 and "--opset" in result.output
    assert not (tmp_path / "m.onnx").exists()


def test_error_text_is_printed_as_given(capsys):
    # A message is text, not rich markup: a layer called "[bold]" or a shape stays visible.
    import typer

    from tether.cli._common import fail

    with pytest.raises(typer.Exit):
        fail("layer '[bold]' has shape [0, 8, 8, 1]")
    assert capsys.readouterr().err.strip() == "error: layer '[bold]' has shape [0, 8, 8, 1]"
