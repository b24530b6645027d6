"""In-process runs on LocalGrid: the Flower strategies and mods without Ray, fast enough for CI."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from tether.federated.dp import DPConfig  # noqa: E402
from tether.federated.local import LocalGrid  # noqa: E402
from tether.federated.mods import SecAggMod, register_secagg  # noqa: E402
from tether.federated.strategy import SecAggFedAvg  # noqa: E402


def _secagg_app(delta_of, weight_of, dropped: set[int]) -> ClientApp:
    mod = SecAggMod()
    app = ClientApp(mods=[mod])
    register_secagg(app, mod)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        if pid in dropped:
            raise RuntimeError(f"partition {pid} drops after key sharing")
        new = {k: np.asarray(a.numpy() + delta_of(pid, a.numpy().shape)) for k, a in msg.content["arrays"].items()}
        return Message(RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in new.items()}),
                                   "metrics": MetricRecord({"num-examples": weight_of(pid)})}), reply_to=msg)

    return app


def _run(strat: SecAggFedAvg, app: ClientApp, n: int, init: dict[str, np.ndarray], rounds: int):
    grid = LocalGrid(app, n)
    res = strat.start(grid=grid, initial_arrays=ArrayRecord({k: Array(v) for k, v in init.items()}),
                      num_rounds=rounds, timeout=60)
    return {k: a.numpy() for k, a in res.arrays.items()}


def test_weighted_secagg_exact_fedavg_mean_with_30_percent_dropping() -> None:
    """Survivors weighted by n_k: the result is sum n_k Delta_k / sum n_k exactly (grid values)."""
    n, levels, clip = 10, 10, 0.1
    step = clip / levels
    dropped = {0, 4, 7}  # 30% fail after sharing keys

    def delta(pid: int, shape: tuple[int, ...]) -> np.ndarray:
        return np.full(shape, ((pid % 5) - 2) * step)  # on the grid, inside [-clip, clip]

    def weight(pid: int) -> int:
        return 3 * pid + 1

    strat = SecAggFedAvg(threshold=0.5, levels=levels, clip=clip, max_weight=64, fraction_train=1.0,
                         fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)
    out = _run(strat, _secagg_app(delta, weight, dropped), n, {"w": np.zeros((3, 4)), "b": np.zeros(())}, 2)
    surv = [p for p in range(n) if p not in dropped]
    mean = sum(weight(p) * ((p % 5) - 2) * step for p in surv) / sum(weight(p) for p in surv)
    unweighted = sum(((p % 5) - 2) * step for p in surv) / len(surv)
    assert abs(mean - unweighted) > 1e-3  # the test tells the two weightings apart
    for a in out.values():
        assert np.allclose(a, 2 * mean, rtol=0, atol=1e-12), (a, 2 * mean)
    h = strat.history
    assert [r["dropped"] for r in h] == [3, 3] and [r["clients"] for r in h] == [7, 7]
    assert [r["weight_sum"] for r in h] == [sum(weight(p) for p in surv)] * 2
    assert all(r["modulus_bits"] == (2 * levels * n * 64 + 1).bit_length() + 1 for r in h)


def test_secagg_unweighted_option_is_plain_mean() -> None:
    n, levels, clip = 6, 4, 0.4
    step = clip / levels
    strat = SecAggFedAvg(threshold=0.5, levels=levels, clip=clip, weighted=False, fraction_train=1.0,
                         fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)
    app = _secagg_app(lambda p, s: np.full(s, (p - 2) * step), lambda p: 10 * p + 1, {5})
    out = _run(strat, app, n, {"w": np.zeros(5)}, 1)
    assert np.allclose(out["w"], np.mean([(p - 2) * step for p in range(5)]), rtol=0, atol=1e-12)


def test_secagg_rejects_weight_above_max() -> None:
    n = 4
    strat = SecAggFedAvg(threshold=0.5, levels=4, clip=0.4, max_weight=8, fraction_train=1.0,
                         fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)
    app = _secagg_app(lambda p, s: np.zeros(s), lambda p: 9 if p == 0 else 1, set())
    _run(strat, app, n, {"w": np.zeros(3)}, 1)
    assert strat.history[0]["clients"] == 3  # the over-weight client's reply is an error


def test_distributed_dp_over_secagg_noise_std_and_epsilon() -> None:
    """Zero updates: the aggregate is pure noise, std = z C sqrt(|U3| / t) / |U3| per coordinate."""
    n, z, c = 10, 1.0, 1.0
    dropped = {1, 2, 3}
    strat = SecAggFedAvg(threshold=0.5, levels=3000, clip=3.0, dp=DPConfig(clip=c, noise_multiplier=z),
                         fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)
    app = _secagg_app(lambda p, s: np.zeros(s), lambda p: 40, dropped)
    out = _run(strat, app, n, {"w": np.zeros(20000)}, 2)
    t, u3 = 5, 7
    per_round = z * c * np.sqrt(u3 / t) / u3
    got = float(np.std(out["w"]))
    want = per_round * np.sqrt(2)  # two rounds of independent noise
    assert abs(got - want) < 0.05 * want, (got, want)
    eps = [r["epsilon"] for r in strat.history]
    assert 0 < eps[0] < eps[1] < float("inf")
    assert all(r["noise_std_on_sum"] == pytest.approx(z * c * np.sqrt(u3 / t)) for r in strat.history)


def test_distributed_dp_clips_each_update() -> None:
    """z = 0: no noise, so the aggregate is the mean of updates clipped to L2 norm C."""
    n, c = 4, 0.5
    strat = SecAggFedAvg(threshold=0.5, levels=1000, clip=1.0, dp=DPConfig(clip=c, noise_multiplier=0.0),
                         fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)
    app = _secagg_app(lambda p, s: np.full(s, 0.5), lambda p: 1, set())  # ||Delta|| = 0.5*sqrt(16) = 2
    out = _run(strat, app, n, {"w": np.zeros(16)}, 1)
    assert np.allclose(out["w"], c / 4.0, atol=2e-3)  # clipped to 0.5 / 4 per coordinate
    assert strat.history[0]["epsilon"] == float("inf")


def test_fedavg_cnn_iid_short_run_learns() -> None:
    """Three FedAvg rounds of the CNN on sklearn digits (IID, 10 of 20 clients, E=5, B=10)
    pass 80% test accuracy (0.87 measured; 0.06 at init)."""
    from tether.federated.apps import FedConfig
    from tether.federated.local import run_local

    cfg = FedConfig(dataset="digits", clients=20, fraction=0.5, partition="iid", rounds=3, epochs=5,
                    batch_size=10, lr=0.1, seed=0)
    heard: list[tuple[int, float | None]] = []
    rep = run_local(cfg, on_round=lambda t, acc: heard.append((t, acc)))
    rounds = rep.rounds
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert all(r["clients"] == 10 for r in rounds)
    assert rounds[-1]["accuracy"] > 0.8, [r["accuracy"] for r in rounds]
    assert heard == [(r["round"], r["accuracy"]) for r in rounds]  # the CLI's progress bar


def test_local_grid_error_reply_and_unknown_node() -> None:
    app = ClientApp()

    @app.query()
    def boom(msg: Message, ctx: Context) -> Message:
        raise RuntimeError("client failure")

    grid = LocalGrid(app, 2)
    (reply,) = grid.send_and_receive([Message(RecordDict(), dst_node_id=1, message_type="query")])
    assert reply.has_error() and "client failure" in reply.error.reason
    with pytest.raises(ValueError, match="unknown node 9"):
        grid.push_messages([Message(RecordDict(), dst_node_id=9, message_type="query")])
