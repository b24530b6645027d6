"""Federated learning with local training in the C engine's trainer (`trainer="engine"`):
one client update against the numpy trainer's, and a short non-IID run over 100 clients whose
accuracy matches the numpy-trained federation's, composed with a codec."""

from __future__ import annotations

import numpy as np
import pytest

from tether.federated import engine, model
from tether.federated.apps import FedConfig


def test_one_client_update_matches_the_numpy_trainer() -> None:
    rng = np.random.default_rng(0)
    params = model.init_params(64, 10, hidden=32, seed=1)
    x = rng.uniform(0, 1, (50, 64)).astype(np.float32)
    y = rng.integers(0, 10, 50)
    want, want_loss = model.train(params, x, y, epochs=3, batch_size=10, lr=0.1, seed=5)
    got, loss = engine.train(params, x, y, epochs=3, batch_size=10, lr=0.1, seed=5)
    assert loss == pytest.approx(want_loss, rel=1e-4)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * float(np.abs(b).max()))
    full, _ = engine.train(params, x, y, epochs=1, batch_size=None, lr=0.1)  # FedSGD batch
    assert all(f.shape == p.shape for f, p in zip(full, params))


def test_the_engine_trainer_needs_the_mlp() -> None:
    with pytest.raises(ValueError, match="trainer 'engine' trains dense models"):
        FedConfig(trainer="engine", model="cnn")
    with pytest.raises(ValueError, match="trainer must be 'numpy' or 'engine'"):
        FedConfig(trainer="gpu")


@pytest.mark.slow
def test_a_federation_on_the_engine_matches_the_numpy_one() -> None:
    # each federation in its own process (`tether federated simulate --local`), as a user
    # runs it; Flower's in-process grid leaves no state behind in the test process
    import json
    import subprocess
    import sys

    def run(trainer: str) -> float:
        out = subprocess.run(
            [sys.executable, "-m", "tether.cli.main", "federated", "simulate", "--local",
             "--clients", "100", "--rounds", "8", "--epochs", "2", "--lr", "0.05", "--model",
             "mlp", "--hidden", "64", "--codec", "qsgd:8", "--trainer", trainer, "--json"],
            capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        report = json.loads(out.stdout.strip().splitlines()[-1])
        return [r["accuracy"] for r in report["rounds"] if r.get("accuracy") is not None][-1]

    a, b = run("numpy"), run("engine")
    assert b > 0.4 and abs(a - b) <= 0.01, (a, b)  # pathological non-IID, 8 rounds
