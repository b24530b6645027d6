"""The pipeline end to end on a tiny road over `digits`: stages, cache, resume, report.

One module-scoped run builds the cache (a one-epoch supernet, four library entries, a
short device profile); the tests then change one option, interrupt a run, and compare the
report with what the stages recorded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tether.pipeline import ConfigError, PipelineConfig, load_config, run
from tether.pipeline.report import read_summary

TINY = """
[run]
out_dir = "{out}"
[scenario]
dataset = "digits"
holdout_classes = [8, 9]
[supernet]
epochs = [1, 0, 0, 0]
[library]
models = 4
predictor_samples = 2
calibration_images = 200
[device]
probe_ms = 2
fit_subnets = 2
[search]
max_latency_ms = 0.05
generations = 2
verify = "no"
[compress]
quantize = "int8"
calibration_images = 50
[learn]
patterns = ["inference", "transfer", "federated"]
[inference]
runs = 5
engines = ["tether", "litert"]
[transfer]
images_per_class = 20
epochs = 3
[federated]
clients = 4
rounds = 2
"""


def _config(tmp: Path, out: Path, **sets: dict) -> PipelineConfig:
    path = tmp / f"road-{len(list(tmp.glob('road-*.toml')))}.toml"
    path.write_text(TINY.format(out=out))
    return load_config(path, sets)


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("pipeline")
    out = tmp / "out"
    return tmp, out, run(_config(tmp, out))


# ----- config ------------------------------------------------------------------------------

def test_config_errors_name_every_key_value_and_allowed(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[serach]\n[search]\nmax_latncy_ms = 1\ngenerations = -1\n'
                    '[compress]\nquantize = "int4"\n[supernet]\nepochs = "8"\n'
                    f'[run]\nout_dir = "{tmp_path / "never"}"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert text.startswith(str(path))
    for part in ("unknown section [serach] (did you mean 'search'?)",
                 "search.max_latncy_ms: unknown key (did you mean 'max_latency_ms'?)",
                 "search.generations: must be >= 0. Received: -1",
                 "compress.quantize: must be one of 'int8', 'qat', 'none'",
                 "Received: 'int4'", "supernet.epochs: expected list of int. Received: '8'"):
        assert part in text
    assert not (tmp_path / "never").exists()  # nothing ran


def test_config_cross_checks_and_toml_round_trip(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.path: model.source = 'file' needs a path"):
        PipelineConfig.from_dict({"model": {"source": "file"}})
    with pytest.raises(ConfigError, match="federated.codec: .*qsgd:x"):
        PipelineConfig.from_dict({"federated": {"codec": "qsgd:x"}})
    with pytest.raises(ConfigError, match="search.policy"):
        PipelineConfig.from_dict({"search": {"policy": "speed > size"}})
    cfg = PipelineConfig.from_dict({"search": {"max_latency_ms": 0.03},
                                    "learn": {"patterns": ["transfer"]}})
    path = tmp_path / "back.toml"
    path.write_text(cfg.to_toml())
    assert load_config(path) == cfg


def test_cli_check_fails_before_any_work(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'[run]\nout_dir = "{tmp_path / "never"}"\n[device]\nthreds = 2\n')
    res = subprocess.run([sys.executable, "-m", "tether.cli.main", "pipeline", "run",
                          str(path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert "device.threds: unknown key (did you mean 'threads'?)" in res.stderr
    assert not (tmp_path / "never").exists()


# ----- one run -----------------------------------------------------------------------------

@pytest.mark.slow
def test_run_writes_every_artifact_and_the_report_shows_what_stages_measured(first) -> None:
    _, out, res = first
    names = [r.name for r in res.stages]
    assert names == ["data", "supernet", "library", "device", "search", "compress", "convert",
                     "inference", "transfer", "federated"]
    assert not any(r.cached for r in res.stages)
    for name in ("model.tmodel", "transfer.tmodel", "federated.tmodel", "summary.json",
                 "report.html"):
        assert (out / name).stat().st_size > 0
    assert not list((out / "stages").glob(".*partial"))
    # the page's numbers are the stages' own
    page = read_summary(res.report)
    assert page == json.loads((out / "summary.json").read_text())
    rec = {r.name: r.report for r in res.stages}
    assert page["compression"]["steps"] == rec["compress"]["steps"]
    assert page["inference"]["engines"] == rec["inference"]["engines"]
    assert [e["engine"] for e in page["inference"]["engines"]] == ["tether", "litert"]
    assert page["transfer"]["epochs"] == rec["transfer"]["epochs"]
    assert page["federated"]["rounds"] == rec["federated"]["rounds"]
    assert page["search"]["chosen"] == rec["search"]["chosen"]
    assert page["library"]["entries"] == rec["search"]["entries"]
    assert [s["key"] for s in page["stages"]] == [r.key for r in res.stages]
    # the deployed model is the int8 one the search chose, within the latency limit
    chosen = rec["search"]["chosen"]
    assert chosen["latency_ms"] <= 0.05
    assert rec["convert"]["precision"] == "int8"
    assert (out / "model.tmodel").read_bytes() == (
        res.stage("convert").path("model.tmodel").read_bytes())
    # the engine's accuracy on the cloud's test images matches the last compression step
    tether_row = rec["inference"]["engines"][0]
    assert tether_row["accuracy"] == pytest.approx(rec["compress"]["steps"][-1]["accuracy"])
    # transfer: the old classes' accuracy starts where the deployed model was
    tr = rec["transfer"]
    assert tr["new_classes"] == [8, 9] and tr["classes"] == 10
    assert tr["before"]["new_accuracy"] == 0.0
    assert len(tr["epochs"]) == 3
    assert rec["federated"]["uplink_bytes"] > 0 and len(rec["federated"]["rounds"]) == 2


@pytest.mark.slow
def test_changing_the_constraint_reruns_search_and_after_only(first) -> None:
    tmp, out, _ = first
    res = run(_config(tmp, out, search={"max_latency_ms": 0.04}))
    cached = {r.name: r.cached for r in res.stages}
    assert cached == {"data": True, "supernet": True, "library": True, "device": True,
                      "search": False, "compress": False, "convert": False,
                      "inference": False, "transfer": False, "federated": False}
    log = [{s["name"]: s["cached"] for s in line["stages"]}
           for line in map(json.loads, (out / "runs.jsonl").read_text().splitlines())]
    assert log[-1] == cached and not any(log[0].values())
    assert res.summary["search"]["constraints"]["max_latency_ms"] == 0.04
    # the same config again: everything from cache
    again = run(_config(tmp, out, search={"max_latency_ms": 0.04}))
    assert all(r.cached for r in again.stages)


@pytest.mark.slow
def test_a_run_killed_mid_stage_resumes_and_ends_as_an_uninterrupted_one(first) -> None:
    tmp, _, ref = first
    out2 = tmp / "killed"
    (out2 / "stages").mkdir(parents=True)
    # the slow cloud part and the device's timings (measurements differ run to run) come
    # from the first run; the library stage in between is killed and run again
    for name in ("data", "supernet", "device"):
        rec = ref.stage(name)
        shutil.copytree(rec.folder, out2 / "stages" / rec.folder.name)
    path = tmp / "killed.toml"
    path.write_text(TINY.format(out=out2))
    log = tmp / "killed.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "tether.cli.main", "pipeline", "run",
                                 str(path)], stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
    deadline = time.time() + 300
    partial = out2 / "stages" / f".library-{ref.stage('library').key}.partial"
    while not (partial / "models").is_dir():  # inside the stage
        assert proc.poll() is None, log.read_text()
        assert time.time() < deadline, log.read_text()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert partial.is_dir() and not (out2 / "stages" / partial.name[1:-8]).exists()
    assert not (out2 / "model.tmodel").exists()
    res = run(load_config(path))
    assert [r.cached for r in res.stages][:4] == [True, True, False, True]
    assert not partial.exists()
    assert [r.key for r in res.stages] == [r.key for r in ref.stages]
    mine, theirs = res.summary, ref.summary
    assert mine["library"]["entries"][0]["accuracy"] == theirs["library"]["entries"][0]["accuracy"]
    assert mine["search"]["chosen"]["key"] == theirs["search"]["chosen"]["key"]
    for stage, name in (("convert", "model.tmodel"), ("transfer", "transfer.tmodel"),
                        ("federated", "federated.tmodel")):
        assert (out2 / name).read_bytes() == ref.stage(stage).path(name).read_bytes(), name


@pytest.fixture(scope="module")
def own_model():
    """The user's own model: the demo CNN trained briefly on digits, and the dataset."""
    from tether.data import load
    from tether.models import demo_cnn

    ds = load("digits")
    model = demo_cnn(ds.input_shape, ds.num_classes, seed=0)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(ds.x_train, ds.y_train, epochs=3, verbose=0)
    return model, ds


@pytest.mark.slow
def test_own_keras_model_skips_the_cloud(tmp_path: Path, own_model) -> None:
    model, ds = own_model
    model.save(tmp_path / "mine.keras")
    cfg = PipelineConfig.from_dict({
        "run": {"out_dir": str(tmp_path / "out")},
        "scenario": {"dataset": "digits"},
        "model": {"source": "file", "path": str(tmp_path / "mine.keras")},
        "compress": {"quantize": "none"},
        "inference": {"engines": ["tether"], "runs": 5}})
    res = run(cfg)
    assert [r.name for r in res.stages] == ["data", "compress", "convert", "inference"]
    acc = float(np.mean(np.argmax(model.predict(ds.x_test, verbose=0), 1) == ds.y_test))
    assert res.summary["inference"]["engines"][0]["accuracy"] == pytest.approx(acc, abs=0.01)
    assert "search" not in res.summary


@pytest.mark.slow
def test_own_onnx_model_int8_and_the_peers_that_can_run_it(tmp_path: Path, own_model) -> None:
    from tether.peers import keras_to_onnx

    model, _ = own_model
    (tmp_path / "mine.onnx").write_bytes(keras_to_onnx(model))
    with pytest.raises(ConfigError, match="learn.patterns: transfer and federated"):
        PipelineConfig.from_dict({"model": {"source": "file",
                                            "path": str(tmp_path / "mine.onnx")},
                                  "learn": {"patterns": ["transfer"]}})
    cfg = PipelineConfig.from_dict({
        "run": {"out_dir": str(tmp_path / "out")},
        "scenario": {"dataset": "digits"},
        "model": {"source": "file", "path": str(tmp_path / "mine.onnx")},
        "compress": {"quantize": "int8", "calibration_images": 100}})
    res = run(cfg)
    inf = res.stage("inference").report
    assert [e["engine"] for e in inf["engines"]] == ["tether", "onnxruntime"]
    assert inf["skipped"] == [{"engine": "litert",
                               "skipped": "LiteRT runs TFLite; the model is ONNX"}]
    tether_row, ort_row = inf["engines"]
    assert tether_row["precision"] == "int8" and ort_row["precision"] == "as given"
    assert abs(tether_row["accuracy"] - ort_row["accuracy"]) < 0.03  # int8 vs the float file
    assert [s["name"] for s in res.summary["compression"]["steps"]] == ["source", "int8"]
