import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tether.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    from tether.models import demo_cnn

    p = tmp_path_factory.mktemp("m") / "cnn.keras"
    demo_cnn().save(p)
    return p


def test_convert_then_run(keras_file, tmp_path):
    out = tmp_path / "cnn.tmodel"
    r = runner.invoke(app, ["convert", str(keras_file), "-o", str(out), "--report"])
    assert r.exit_code == 0, r.output
    assert out.is_file() and out.read_bytes()[:4] == b"TMOD"
    x = np.random.default_rng(0).random((1, 8, 8, 1), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    r = runner.invoke(app, ["run", str(out), "--input", str(tmp_path / "x.npy"),
                            "--output", str(tmp_path / "y.npy")])
    assert r.exit_code == 0, r.output
    import keras

    expected = keras.models.load_model(keras_file)(x).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-5)


def test_convert_failure_writes_nothing(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((4, 3)), keras.layers.LSTM(2, name="lstm_layer")])
    src = tmp_path / "rnn.keras"
    model.save(src)
    out = tmp_path / "rnn.tmodel"
    r = runner.invoke(app, ["convert", str(src), "-o", str(out)])
    assert r.exit_code != 0
    assert "lstm_layer" in r.output and "LSTM" in r.output
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["rnn.keras"]


def test_run_missing_model_is_a_clear_error(tmp_path):
    r = runner.invoke(app, ["run", str(tmp_path / "absent.tmodel")])
    assert r.exit_code != 0 and "no such file" in r.output


def test_bench_prints_one_json_record_per_engine():
    r = runner.invoke(app, ["bench", "demo_cnn", "--engines", "tether,litert,onnxruntime",
                            "--threads", "1", "--runs", "3", "--warmup", "1", "--json"])
    assert r.exit_code == 0, r.output
    records = json.loads(r.stdout[r.stdout.index("["):])
    assert [rec["engine"] for rec in records] == ["tether", "litert", "onnxruntime"]
    for rec in records:
        assert rec["median_ms"] > 0 and rec["min_ms"] <= rec["median_ms"]
        assert rec["max_abs_diff_vs_keras"] < 1e-4
        assert rec["shape"] == [1, 8, 8, 1] and rec["threads"] == 1
    assert records[0]["arena_bytes"] > 0


def test_bench_rejects_unknown_engine():
    r = runner.invoke(app, ["bench", "demo_cnn", "--engines", "tether,tvm"])
    assert r.exit_code != 0 and "tvm" in r.output


def test_corrupt_keras_file_is_named(tmp_path):
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    r = runner.invoke(app, ["convert", str(bad), "-o", str(tmp_path / "o.tmodel")])
    assert r.exit_code != 0 and "broken.keras" in r.output
    assert "not a loadable Keras model file" in r.output
    assert not (tmp_path / "o.tmodel").exists()


def test_version_is_printed():
    from tether import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"tether {__version__}"


@pytest.mark.parametrize("argv, text", [
    (["convert", "--help"], "built-in model name"),
    (["run", "--help"], ".tmodel"),
    (["compress", "prune", "--help"], "demo_cnn"),
])
def test_help_shows_what_positional_arguments_take(argv, text):
    # typer 0.20 with click 8.5 dropped the help text of positional arguments (click is
    # pinned below 8.5 in pyproject.toml): the Arguments panel must carry it.
    result = runner.invoke(app, argv, terminal_width=200)
    assert result.exit_code == 0
    arguments = result.output.split("Arguments", 1)[1].split("Options", 1)[0]
    assert text in " ".join(arguments.split()), arguments


def test_fixed_choice_options_list_what_the_library_accepts():
    # The CLI spells the choices out (importing the library would load Keras for --help);
    # each must be what the library takes, and --help lists them.
    from tether.cli import compress as compress_cli
    from tether.cli import federated as federated_cli
    from tether.compression import CALIBRATION_METHODS, ChannelPruningConfig
    from tether.federated.apps import MODELS, FedConfig

    assert compress_cli.CALIBRATION_METHODS == tuple(CALIBRATION_METHODS)
    assert set(federated_cli.MODELS) == set(MODELS)
    for target in compress_cli.TARGETS:
        for importance in compress_cli.IMPORTANCES:
            ChannelPruningConfig(0.5, target, importance)
    for partition in federated_cli.PARTITIONS:
        FedConfig(partition=partition)
    help_text = runner.invoke(app, ["compress", "quantize", "--help"],
                              env={"COLUMNS": "200"}).output
    assert "minmax|percentile|entropy|mse" in help_text
    bad = runner.invoke(app, ["federated", "simulate", "--partition", "shards"])
    assert bad.exit_code == 2 and "'iid', 'noniid'" in bad.output
