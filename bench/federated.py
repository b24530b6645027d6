"""Federated benchmarks; one JSON object per case on stdout.

Cases:
  codec   : a Flower simulation per codec (mnist5k, pathological non-IID, N clients, C, E, B):
            uplink/downlink bytes per round measured on the Flower messages, accuracy per round,
            first round reaching --target.
  secagg  : tether's secure aggregation (aggregate_in_process) wall time per round for
            10/50/100 clients on the same random vectors, 30% dropping after key sharing.

    .venv/bin/python bench/federated.py secagg --dim 100000
    .venv/bin/python bench/federated.py codec --codecs none,qsgd:4,terngrad --rounds 30
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

import numpy as np


def _sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=False).stdout.strip()
    except OSError:
        return ""


BASE = {"git_sha": _sha(), "device": platform.processor() or platform.machine(), "isa": "numpy"}


def emit(obj: dict) -> None:
    print(json.dumps({**BASE, **obj}), flush=True)


def bench_secagg(dim: int, sizes: list[int], repeats: int) -> None:
    from tether.federated.secagg import aggregate_in_process

    rng = np.random.default_rng(0)
    for n in sizes:
        xs = [rng.standard_normal(dim) for _ in range(n)]
        drop = set(range(0, n, 10)) | set(range(1, n, 10)) | set(range(2, n, 10))  # 30%
        times = []
        for _ in range(repeats + 1):  # first is warm-up
            t = time.perf_counter()
            got = aggregate_in_process(xs, threshold=n // 2 + 1, dropped=drop)
            times.append((time.perf_counter() - t) * 1e3)
        exact = bool(np.allclose(got, sum(x for i, x in enumerate(xs) if i not in drop), atol=n * 2**-24))
        times = times[1:]
        emit({"name": "secagg_round", "clients": n, "dropped": len(drop), "shape": [dim],
              "median_ms": statistics.median(times), "p90_ms": max(times), "gflops": None,
              "exact_fixed_point_sum": exact})


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case", choices=["secagg", "codec"])
    ap.add_argument("--dim", type=int, default=100_000)
    ap.add_argument("--sizes", default="10,50,100")
    ap.add_argument("--repeats", type=int, default=2)
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
        bench_secagg(args.dim, [int(s) for s in args.sizes.split(",")], args.repeats)
    else:
        bench_codec(args.codecs.split(","), args)


if __name__ == "__main__":
    sys.exit(main())
