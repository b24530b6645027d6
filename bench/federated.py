"""Federated benchmarks; one JSON object per case on stdout.

Cases:
  codec   : a Flower simulation per codec (mnist5k, pathological non-IID, N clients, C, E, B):
            uplink/downlink bytes per round measured on the Flower messages, accuracy per round,
            first round reaching --target.
  secagg  : secure aggregation wall time per round for 10/50/100 clients on the same random
            vectors, 30% dropping after key sharing: tether's protocol in one process
            (aggregate_in_process), tether's SecAggFedAvg over Flower messages and Flower's own
            SecAgg+ (SecAggPlusWorkflow + secaggplus_mod), the last two on the same in-process
            LocalGrid and timed interleaved (all parties' work in one process, one core).
  curve   : accuracy per round of FedAvg (E, B) or FedSGD (E=1, full batch) for a grid of
            learning rates x per-round decays (x seeds) on the in-process LocalGrid (same
            strategy and ClientApp as the simulation, no Ray); rounds to 90-97% test accuracy.
            --stop ends a run at the first round reaching --target.

    .venv/bin/python bench/federated.py secagg --dim 100000 --repeats 1 --warmup 0
    .venv/bin/python bench/federated.py codec --codecs none,qsgd:4,terngrad --rounds 30
    .venv/bin/python bench/federated.py curve --algo fedavg --lrs 0.1,0.05 --rounds 50
    .venv/bin/python bench/federated.py curve --algo fedsgd --lrs 0.2,0.1,0.4 --rounds 150 --eval-every 2
    .venv/bin/python bench/federated.py curve --algo fedsgd --lrs 0.1,0.2 --lr-decays 1,0.99 \
        --rounds 150 --target 0.93 --stop --seeds 0,1 --model cnn-mcmahan
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
# one BLAS thread: the CNN's small matmuls run 2-4x slower with threads fighting on 2 cores
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from tether.bench import run_metadata


BASE = run_metadata(isa="numpy")


def emit(obj: dict) -> None:
    print(json.dumps({**BASE, **obj}), flush=True)


def _flower_secaggplus_round(xs: list[np.ndarray], drop: set[int], threshold: float):
    """One round of Flower's own SecAgg+ (legacy ``SecAggPlusWorkflow`` + ``secaggplus_mod``)
    on a LocalGrid: client u's NumPyClient returns xs[u] with weight 1 (partitions in ``drop``
    raise in fit, i.e. after key sharing). Returns (seconds of the SecAgg+ fit round, mean)."""
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import ServerConfig
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.strategy import FedAvg as LegacyFedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.app import Context, RecordDict
    from tether.federated.local import LocalGrid

    n = len(xs)

    class VecClient(NumPyClient):
        def __init__(self, pid: int) -> None:
            self.pid = pid

        def fit(self, parameters, config):  # type: ignore[no-untyped-def]
            if self.pid in drop:
                raise RuntimeError(f"partition {self.pid} drops after key sharing")
            return [xs[self.pid]], 1, {}

    def client_fn(context: Context):  # type: ignore[no-untyped-def]
        return VecClient(int(context.node_config["partition-id"])).to_client()

    app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
    strategy = LegacyFedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n,
                            min_available_clients=n, accept_failures=True,
                            initial_parameters=ndarrays_to_parameters([np.zeros_like(xs[0])]))
    grid = LocalGrid(app, n)
    ctx = LegacyContext(Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={}),
                        config=ServerConfig(num_rounds=1), strategy=strategy)
    sa = SecAggPlusWorkflow(num_shares=1.0, reconstruction_threshold=threshold, max_weight=1.0)
    took: list[float] = []

    def timed(g, c):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        sa(g, c)
        took.append(time.perf_counter() - t)

    DefaultWorkflow(fit_workflow=timed)(grid, ctx)
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
    import flwr.compat.common.recorddict_compat as compat

    params = compat.arrayrecord_to_parameters(ctx.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
    return took[0], parameters_to_ndarrays(params)[0]


def _tether_flower_round(xs: list[np.ndarray], drop: set[int], threshold: float,
                         levels: int, clip: float):
    """One round of tether's SecAggFedAvg + SecAggMod on a LocalGrid (client u's update is
    xs[u], weight 1). Returns (seconds of the round, mean of the survivors' updates)."""
    from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from tether.federated.local import LocalGrid
    from tether.federated.mods import SecAggMod, register_secagg
    from tether.federated.strategy import SecAggFedAvg

    n = len(xs)
    mod = SecAggMod()
    app = ClientApp(mods=[mod])
    register_secagg(app, mod)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        if pid in drop:
            raise RuntimeError(f"partition {pid} drops after key sharing")
        w = msg.content["arrays"]["x"].numpy()
        return Message(RecordDict({"arrays": ArrayRecord({"x": Array(w + xs[pid])}),
                                   "metrics": MetricRecord({"num-examples": 1})}), reply_to=msg)

    strat = SecAggFedAvg(threshold=threshold, levels=levels, clip=clip, max_weight=1,
                         fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)
    grid = LocalGrid(app, n)
    t = time.perf_counter()
    res = strat.start(grid=grid, initial_arrays=ArrayRecord({"x": Array(np.zeros_like(xs[0]))}),
                      num_rounds=1, timeout=3600)
    return time.perf_counter() - t, res.arrays["x"].numpy()


def bench_secagg(dim: int, sizes: list[int], repeats: int, peer: bool, warmup: int = 1) -> None:
    """Per client count: tether's protocol in one process (aggregate_in_process), tether's
    SecAggFedAvg over Flower messages and Flower's SecAgg+ workflow over the same LocalGrid,
    interleaved, on the same vectors, 30% of the clients dropping after key sharing."""
    import logging

    logging.getLogger("flwr").setLevel(logging.WARNING)
    from tether.federated.secagg import aggregate_in_process

    rng = np.random.default_rng(0)
    for n in sizes:
        xs = [np.clip(rng.standard_normal(dim), -4, 4) for _ in range(n)]
        drop = set(range(0, n, 10)) | set(range(1, n, 10)) | set(range(2, n, 10))  # 30%
        surv = [x for i, x in enumerate(xs) if i not in drop]
        want_sum, want_mean = np.sum(surv, axis=0), np.mean(surv, axis=0)
        t_in, t_msg, t_fl = [], [], []
        err_msg = err_fl = float("nan")
        exact = True
        for _ in range(repeats + warmup):  # the first ``warmup`` rounds of each are not timed
            t = time.perf_counter()
            got = aggregate_in_process(xs, threshold=n // 2 + 1, dropped=drop)
            t_in.append(time.perf_counter() - t)
            exact &= bool(np.allclose(got, want_sum, rtol=0, atol=n * 2.0**-25))
            if peer:
                dt, mean = _tether_flower_round(xs, drop, 0.5, 2**21, 4.0)
                t_msg.append(dt)
                err_msg = float(np.abs(mean - want_mean).max())
                dt, mean = _flower_secaggplus_round(xs, drop, 0.5)
                t_fl.append(dt)
                err_fl = float(np.abs(mean - want_mean).max())
        row = {"name": "secagg_round", "clients": n, "dropped": len(drop), "shape": [dim],
               "repeats": repeats, "load": os.getloadavg()[0],
               "median_ms": statistics.median(t_in[warmup:]) * 1e3, "p90_ms": max(t_in[warmup:]) * 1e3,
               "gflops": None, "exact_fixed_point_sum": exact}
        if peer:
            row.update({"tether_flower_messages_median_ms": statistics.median(t_msg[warmup:]) * 1e3,
                        "tether_flower_messages_max_abs_err": err_msg,
                        "flower_secaggplus_median_ms": statistics.median(t_fl[warmup:]) * 1e3,
                        "flower_secaggplus_max_abs_err": err_fl,
                        "note": "flower SecAgg+: num_shares=1.0 (complete graph), max_weight 1, reconstruction "
                                "threshold 0.5, clip 8, 2^22 quantization levels, 2^32 modulus; "
                                "tether over messages: complete graph, t=0.5, clip 4, 2^21 levels"})
        emit(row)


def bench_codec(codecs: list[str], args: argparse.Namespace) -> None:
    from tether.federated.apps import FedConfig, simulate

    for spec in codecs:
        cfg = FedConfig(clients=args.clients, rounds=args.rounds, codec=spec, partition=args.partition,
                        fraction=args.fraction, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        seed=args.seed)
        t = time.perf_counter()
        rep = simulate(cfg)
        wall = time.perf_counter() - t
        acc = [r["accuracy"] for r in rep.rounds]
        hit = next((int(r["round"]) for r in rep.rounds if r["accuracy"] >= args.target), None)
        emit({"name": "fed_codec", "codec": spec, "clients": args.clients, "fraction": args.fraction,
              "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
              "partition": args.partition, "rounds": args.rounds, "wall_s": wall,
              "uplink_bytes_per_round": statistics.median(r["uplink_bytes"] for r in rep.rounds),
              "downlink_bytes_per_round": statistics.median(r["downlink_bytes"] for r in rep.rounds),
              "accuracy": acc, "final_accuracy": acc[-1], "best_accuracy": max(acc),
              "target": args.target, "rounds_to_target": hit, "shape": None, "median_ms": None,
              "p90_ms": None, "gflops": None})


def _first_round(rounds: list[dict[str, float]], target: float) -> int | None:
    """The first round whose test accuracy is >= target (None: never)."""
    return next((int(r["round"]) for r in rounds if r["accuracy"] >= target), None)


def bench_curve(args: argparse.Namespace) -> None:
    """Accuracy per round of FedAvg or FedSGD on the in-process LocalGrid (the same Flower
    strategy and ClientApp as the simulation; no Ray), one JSON line per (seed, lr, decay)."""
    from tether.federated.apps import FedConfig
    from tether.federated.local import run_local

    fedsgd = args.algo == "fedsgd"
    seeds = [int(v) for v in args.seeds.split(",")] if args.seeds else [args.seed]
    grid = [(s, float(lr), float(d)) for s in seeds for lr in args.lrs.split(",")
            for d in args.lr_decays.split(",")]
    for seed, lr, decay in grid:
        cfg = FedConfig(clients=args.clients, rounds=args.rounds, codec=args.codecs.split(",")[0],
                        partition=args.partition, fraction=args.fraction, model=args.model,
                        epochs=1 if fedsgd else args.epochs, batch_size=0 if fedsgd else args.batch_size,
                        lr=lr, lr_decay=decay, seed=seed)
        load0 = os.getloadavg()[0]
        t = time.perf_counter()
        rep = run_local(cfg, eval_every=args.eval_every, stop_at=args.target if args.stop else None)
        wall = time.perf_counter() - t
        acc = [r["accuracy"] for r in rep.rounds]
        hit = _first_round(rep.rounds, args.target)
        measured = [a for a in acc if not np.isnan(a)]
        hits = {f"{t:.2f}": _first_round(rep.rounds, t)
                for t in (0.90, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97)}
        emit({"name": "fed_curve", "rounds_to": hits, "algo": args.algo, "model": args.model, "codec": cfg.codec,
              "clients": args.clients, "fraction": args.fraction, "epochs": cfg.epochs,
              "batch_size": cfg.batch_size or "full", "lr": lr, "lr_decay": decay, "partition": args.partition,
              "seed": seed, "rounds_run": len(acc), "max_rounds": args.rounds, "wall_s": wall,
              "load": [load0, os.getloadavg()[0]],
              "transport": "LocalGrid (in process)", "eval_every": args.eval_every,
              "uplink_bytes_per_round": statistics.median(r["uplink_bytes"] for r in rep.rounds),
              "accuracy": acc, "final_accuracy": measured[-1] if measured else None,
              "best_accuracy": max(measured) if measured else None, "target": args.target,
              "rounds_to_target": hit, "stopped_at_target": bool(args.stop and hit is not None),
              "shape": None, "median_ms": None, "p90_ms": None, "gflops": None})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case", choices=["secagg", "codec", "curve"])
    ap.add_argument("--algo", choices=["fedavg", "fedsgd"], default="fedavg")
    ap.add_argument("--lrs", default="0.05")
    ap.add_argument("--model", default="cnn", choices=["cnn", "cnn-mcmahan", "mlp"])
    ap.add_argument("--lr-decays", default="1.0",
                    help="curve: per-round decay factors gamma (eta_t = lr * gamma^(t-1)), a grid with --lrs")
    ap.add_argument("--seeds", default="", help="curve: comma-separated seeds (default: --seed)")
    ap.add_argument("--eval-every", type=int, default=1)
    ap.add_argument("--no-peer", action="store_true", help="secagg: skip the Flower-message runs")
    ap.add_argument("--stop", action="store_true", help="curve: stop at the first round >= --target")
    ap.add_argument("--dim", type=int, default=100_000)
    ap.add_argument("--sizes", default="10,50,100")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1, help="secagg: untimed rounds before the timed ones")
    ap.add_argument("--codecs", default="none,qsgd:4,terngrad")
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--partition", default="noniid")
    ap.add_argument("--target", type=float, default=0.85)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.case == "secagg":
        bench_secagg(args.dim, [int(s) for s in args.sizes.split(",")], args.repeats, not args.no_peer,
                     args.warmup)
    elif args.case == "curve":
        bench_curve(args)
    else:
        bench_codec(args.codecs.split(","), args)


if __name__ == "__main__":
    sys.exit(main())
