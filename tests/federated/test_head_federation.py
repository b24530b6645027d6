"""Federating a classification head: a feature-vector ``.npz`` as the dataset, the initial
global arrays from ``FedConfig.init``, the final ones written to ``FedConfig.final``, softmax
regression (``model="mlp", hidden=0``) trained by numpy or by the C engine's trainer; and the
``pyproject.toml`` that :func:`~tether.federated.deployment.deploy` submits."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

from tether.federated import engine, model
from tether.federated.apps import FedConfig, read_arrays, write_arrays

from tether.errors import DataError

D, C = 12, 4  # feature width, classes


def _features(folder: Path, noise: float = 1.0, **extra: np.ndarray) -> tuple[Path, dict[str, np.ndarray]]:
    """Four Gaussian clusters in R^12, features well outside [0, 1] (no scaling may touch them)."""
    rng = np.random.default_rng(0)
    means = rng.normal(0, 2.0, (C, D))

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, C, n)
        return (means[y] + rng.normal(0, noise, (n, D))).astype(np.float32), y

    (xtr, ytr), (xte, yte) = split(240), split(120)
    arrays = {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte, "means": means, **extra}
    path = folder / "features.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if k != "means"})
    return path, arrays


def _poor_init(folder: Path, means: np.ndarray) -> tuple[Path, list[np.ndarray]]:
    """A head pointing away from every class mean: test accuracy 0 before training."""
    init = [(-0.05 * means.T).astype(np.float32), np.zeros(C, np.float32)]
    path = folder / "init.npz"
    np.savez(path, *init)
    return path, init


def _cfg(**kw: object) -> FedConfig:
    base: dict[str, object] = {"clients": 4, "fraction": 1.0, "partition": "iid", "rounds": 2, "epochs": 1,
                               "batch_size": 10, "lr": 0.05, "model": "mlp", "hidden": 0}
    return FedConfig(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("trainer", ["numpy", "engine"])
def test_head_federation_starts_from_init_and_writes_final(tmp_path: Path, trainer: str) -> None:
    from tether.federated.local import run_local

    # Prepare
    data, arrays = _features(tmp_path)
    init_path, init = _poor_init(tmp_path, arrays["means"])
    final = tmp_path / "out" / "final.npz"
    cfg = _cfg(dataset=str(data), trainer=trainer, init=str(init_path), final=str(final))
    # Execute
    rep = run_local(cfg)
    # Assert: round 0 is the init arrays, evaluated on the features as they are
    loss0, acc0 = model.evaluate(init, arrays["x_test"], arrays["y_test"])
    assert rep.initial == {"accuracy": acc0, "test_loss": loss0}
    assert acc0 == 0.0 and loss0 > 2 * np.log(C)  # not init_model's zero head (loss log C)
    # the final arrays: softmax regression's shapes, the model the last round evaluated
    assert rep.final_arrays == str(final)
    got = read_arrays(final)
    assert [(a.shape, a.dtype) for a in got] == [((D, C), np.float32), ((C,), np.float32)]
    _, acc = model.evaluate(got, arrays["x_test"], arrays["y_test"])
    assert acc == rep.rounds[-1]["accuracy"]
    assert [r["round"] for r in rep.rounds] == [1, 2] and all(r["clients"] == 4 for r in rep.rounds)
    assert acc > 0.8, [r["accuracy"] for r in rep.rounds]  # from 0.0 at init
    assert sorted(os.listdir(final.parent)) == ["final.npz"]  # no temporary file left behind


def test_round_one_trains_from_the_init_arrays(tmp_path: Path) -> None:
    from tether.federated.local import run_local

    # Prepare: one client holding every training example
    data, arrays = _features(tmp_path)
    init_path, init = _poor_init(tmp_path, arrays["means"])
    cfg = _cfg(dataset=str(data), clients=1, rounds=1, epochs=2, init=str(init_path),
               final=str(tmp_path / "final.npz"))
    # Execute
    run_local(cfg)
    # Assert: the global model after round 1 is the client's SGD from the init arrays
    want, _ = model.train(init, arrays["x_train"], arrays["y_train"], 2, 10, 0.05,
                          seed=cfg.seed * 1000003 + 1 * 1009 + 0)
    for g, w in zip(read_arrays(tmp_path / "final.npz"), want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-6)


def test_init_that_does_not_fit_the_model_names_the_array(tmp_path: Path) -> None:
    from tether.federated.local import run_local

    data, _ = _features(tmp_path)
    bad = tmp_path / "bad.npz"
    np.savez(bad, np.zeros((D + 1, C), np.float32), np.zeros(C, np.float32))
    with pytest.raises(ValueError, match=r"bad\.npz: array 0 \(arr_0\) has shape \(13, 4\); expected \(12, 4\) "
                                         r"for model='mlp', hidden=0 on 12 input features and 4 classes"):
        run_local(_cfg(dataset=str(data), init=str(bad), rounds=1))
    np.savez(bad, np.zeros((D, C), np.float32), np.zeros(C + 1, np.float32))
    with pytest.raises(DataError, match=r"array 1 \(arr_1\) has shape \(5,\); expected \(4,\)"):
        run_local(_cfg(dataset=str(data), init=str(bad), rounds=1))
    np.savez(bad, np.zeros((D, 8), np.float32), np.zeros(8, np.float32), np.zeros((8, C), np.float32),
             np.zeros(C, np.float32))  # a hidden layer where the config has none
    with pytest.raises(DataError, match=r"holds 4 arrays; expected 2 with shapes \[\(12, 4\), \(4,\)\]"):
        run_local(_cfg(dataset=str(data), init=str(bad), rounds=1))
    np.savez(bad, w=np.zeros((D, C), np.float32), b=np.zeros(C, np.float32))
    with pytest.raises(DataError, match=r"expected arrays arr_0..arr_1 .*Found: \['b', 'w'\]"):
        run_local(_cfg(dataset=str(data), init=str(bad), rounds=1))
    np.savez(bad, np.full((D, C), np.nan, np.float32), np.zeros(C, np.float32))
    with pytest.raises(DataError, match=r"array 0 \(arr_0\) holds NaN"):
        run_local(_cfg(dataset=str(data), init=str(bad), rounds=1))


def test_init_and_final_are_validated_and_carried_by_the_run_config(tmp_path: Path) -> None:
    missing = tmp_path / "missing.npz"
    with pytest.raises(ValueError, match=r"FedConfig.init must be an existing .npz file .*Received: "
                                         rf"init='{missing}' \(no such file\)"):
        FedConfig(init=str(missing))
    with pytest.raises(ValueError, match=r"FedConfig.final must be a file path"):
        FedConfig(final=str(tmp_path))
    init = tmp_path / "init.npz"
    np.savez(init, np.zeros(3))
    cfg = FedConfig(init=str(init), final=str(tmp_path / "final.npz"), model="mlp", hidden=0)
    rc = cfg.to_run_config()
    assert rc["init"] == str(init) and rc["final"] == str(tmp_path / "final.npz")
    assert all(isinstance(v, (str, int, float, bool)) for v in rc.values())
    assert FedConfig.from_run_config(rc) == cfg


@pytest.mark.usefixtures("task_identity")  # see conftest.py
def test_a_client_ignores_the_servers_init_path(tmp_path: Path) -> None:
    """A SuperNode's machine has no ``init`` file; its ClientApp must not need one."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
    from tether.federated.apps import _train_handler

    data, _ = _features(tmp_path)
    init = tmp_path / "init.npz"
    np.savez(init, np.zeros((D, C), np.float32), np.zeros(C, np.float32))
    rc = _cfg(dataset=str(data), init=str(init)).to_run_config()
    init.unlink()  # only on the server's host
    with pytest.raises(ValueError, match="FedConfig.init"):
        FedConfig.from_run_config(rc)
    params = [np.zeros((D, C), np.float32), np.zeros(C, np.float32)]
    msg = Message(RecordDict({"arrays": ArrayRecord({str(i): Array(a) for i, a in enumerate(params)}),
                              "config": ConfigRecord({"server-round": 1})}), dst_node_id=1, message_type="train")
    ctx = Context(run_id=1, node_id=1, node_config={"partition-id": 0, "num-partitions": 4}, state=RecordDict(),
                  run_config=rc)
    reply = _train_handler(None)(msg, ctx)
    assert reply.content["arrays"]["0"].numpy().shape == (D, C)


def test_feature_file_errors_name_the_file_and_the_array(tmp_path: Path) -> None:
    from tether.federated.local import run_local

    _, arrays = _features(tmp_path)
    good = {k: v for k, v in arrays.items() if k != "means"}
    cases = [
        ({"x_test": good["x_test"][:, :-1]}, r"array 'x_test' has 11 features per row but 'x_train' has 12"),
        ({"y_train": good["y_train"].astype(np.float32)}, r"array 'y_train' must hold integer class ids"),
        ({"y_test": good["y_test"][:-1]}, r"array 'y_test' must be labels of shape \(120,\)"),
        ({"x_train": np.where(np.arange(D) == 3, np.nan, good["x_train"]).astype(np.float32)},
         r"array 'x_train' holds NaN or infinite values"),
        ({"num_classes": np.array(3)}, r"array 'num_classes' must be a 0-d int >= the largest label \+ 1 = 4"),
    ]
    for i, (change, message) in enumerate(cases):
        path = tmp_path / f"bad{i}.npz"
        np.savez(path, **{**good, **change})
        with pytest.raises(DataError, match=rf"{path}: {message}"):
            run_local(_cfg(dataset=str(path), rounds=1))
    path = tmp_path / "no_test.npz"
    np.savez(path, x_train=good["x_train"], y_train=good["y_train"])
    with pytest.raises(DataError, match=r"no_test.npz: a feature file holds arrays x_train, y_train, x_test, y_test"):
        run_local(_cfg(dataset=str(path), rounds=1))
    path = tmp_path / "features.npz"
    with pytest.raises(ValueError, match=r"features.npz: holds feature vectors \(n, 12\).*use FedConfig.model='mlp'"):
        run_local(FedConfig(dataset=str(path), clients=4, rounds=1, model="cnn"))


def test_num_classes_in_the_feature_file_sets_the_head_width(tmp_path: Path) -> None:
    """A deployed head may know classes no example shows: ``num_classes`` keeps its width."""
    from tether.federated.local import run_local

    path, _ = _features(tmp_path, num_classes=np.array(6))
    final = tmp_path / "final.npz"
    rep = run_local(_cfg(dataset=str(path), rounds=1, final=str(final)))
    assert [a.shape for a in read_arrays(final)] == [(D, 6), (6,)]
    assert rep.rounds[-1]["accuracy"] > 0.5


def test_softmax_regression_in_the_engine_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    params = [rng.normal(0, 0.1, (D, C)).astype(np.float32), np.zeros(C, np.float32)]
    x = rng.normal(0, 3, (50, D)).astype(np.float32)
    y = rng.integers(0, C, 50)
    want, want_loss = model.train(params, x, y, epochs=3, batch_size=10, lr=0.1, seed=5)
    got, loss = engine.train(params, x, y, epochs=3, batch_size=10, lr=0.1, seed=5)
    assert loss == pytest.approx(want_loss, rel=1e-5)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_write_arrays_never_leaves_half_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "final.npz"
    write_arrays(path, [np.ones(3, np.float32)])

    def broken_savez(f, *arrays):  # type: ignore[no-untyped-def]
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        write_arrays(path, [np.zeros(3, np.float32)])
    monkeypatch.undo()
    assert [a.tolist() for a in read_arrays(path)] == [[1.0, 1.0, 1.0]]
    assert os.listdir(tmp_path) == ["final.npz"]


def test_deploy_app_carries_every_field_of_the_config(tmp_path: Path) -> None:
    from tether.federated.deployment import app_pyproject

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    init = tmp_path / "init.npz"
    np.savez(init, np.zeros(3))
    cfg = FedConfig(dataset="digits", clients=3, fraction=1.0, lr=1e-3, codec="qsgd:4", secagg=True,
                    drop='2"', init=str(init), final=str(tmp_path / "final.npz"))
    doc = tomllib.loads(app_pyproject(cfg))
    assert doc["tool"]["flwr"]["app"]["components"] == {"serverapp": "tether.federated.apps:server_app",
                                                        "clientapp": "tether.federated.apps:client_app"}
    rc = doc["tool"]["flwr"]["app"]["config"]
    assert FedConfig.from_run_config(rc) == cfg
    assert asdict(FedConfig.from_run_config(rc)) == asdict(cfg)
