"""Cloud benchmark: supernet training, subnets vs from scratch, latency and accuracy
predictors, and search under a ladder of latency budgets (default space, mnist5k).

    .venv/bin/python bench/cloud.py [--cases latency,train,accuracy,predictor,search]
        [--seeds 1] [--first-seed 0] [--epochs 8,4,8,24] [--random-only]
        [--subnets-per-step 4] [--[no-]step-resolution] [--subnets 200] [--out /tmp/tether-cloud]

Training settings default to `TrainConfig()`'s (what `tether supernet train` uses).

Prints one JSON object per line (one per case and seed), then a summary object.

- latency: every piece of the space probed by tether-probe (and every single op, for the
  naive per-op sum), 200 random subnets measured end to end in the engine the same way; the
  correction is fitted on 20 other subnets. Relative errors of the predictor, of the raw
  fused sum and of the naive per-op sum, for 1 and 2 threads.
- train: `train_supernet` per seed; seconds per phase; largest/smallest accuracy per epoch.
- accuracy: for the largest, the smallest and three random subnets (the same five for every
  seed, so the summary can average each over the seeds) of each trained supernet: test accuracy extracted with batch norm recalibrated on 2,000 training images, without
  recalibration, and the same architecture trained from scratch (fresh weights, Adam, cosine,
  as many epochs as the supernet's four phases together).
- crop: the train and accuracy cases again for the first seed with `kernel_transform=False`
  (smaller kernels are plain centre crops of the largest), without the from-scratch column.
- predictor: accuracy of `--predictor-subnets` subnets measured (recalibrated); the predictor
  trained on 2/3 and scored (RMSE, Kendall tau) on the rest.
- search: 20 latency budgets from the smallest to the largest subnet's predicted latency,
  policy accuracy > latency, three ways: `point` (each budget alone against the point
  prediction), `guarded` (`search_ladder` against the latency model's guard band) and
  `verified` (the ladder on the point prediction with every answer timed in the engine and
  searched again when it misses); each way's answers measured end to end afterwards (a fresh
  run). The predictor's measured subnets are kept in the output folder and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
from tether.bench import run_metadata


def _emit(record: dict[str, Any]) -> None:
    print(json.dumps(record, default=float), flush=True)


def _errors(pred: np.ndarray, meas: np.ndarray) -> dict[str, float]:
    rel = pred / meas - 1.0
    return {"within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
            "median_abs_pct": float(np.median(np.abs(rel)) * 100),
            "p95_abs_pct": float(np.percentile(np.abs(rel), 95) * 100),
            "mean_pct": float(np.mean(rel) * 100)}


def case_latency(space: Any, n: int, out: Path) -> dict[str, Any]:
    import keras

    from tether.cloud.latency import LatencyModel, probe_space
    from tether.cloud.supernet import Supernet

    keras.utils.set_random_seed(0)
    net = Supernet(space)
    rng = random.Random(1)
    fit_archs = [space.sample(rng) for _ in range(20)]
    test_archs = [space.sample(rng) for _ in range(n)]
    result: dict[str, Any] = {"case": "latency", "subnets": n, "fit_subnets": len(fit_archs),
                              "probe": {"warmup": 20, "runs": 200, "min_time_ms": 50}}
    for threads in (1, 2):
        t0 = time.perf_counter()
        # every piece, op and subnet in one run (`probe_space`; its rounds for the threads)
        table, measured = probe_space(space, out / f"bundle-{threads}", net,
                                      fit_archs + test_archs, threads=threads, warmup=20,
                                      runs=200, min_time_ms=50)
        probe_s = time.perf_counter() - t0
        model = LatencyModel(space, table)
        raw = np.array([model.pieces_sum(a) for a in test_archs])
        naive = np.array([model.naive(a) for a in test_archs])
        model.fit(fit_archs, [measured[a.key()] for a in fit_archs])
        pred = np.array([model.predict(a) for a in test_archs])
        meas = np.array([measured[a.key()] for a in test_archs])
        result[f"threads_{threads}"] = {
            "probe_models": len(table.median_ms), "probe_seconds": probe_s,
            "rounds": table.rounds,
            "measured_ms": {"min": float(meas.min()), "median": float(np.median(meas)),
                            "max": float(meas.max())},
            "predicted": _errors(pred, meas), "fused_sum_uncorrected": _errors(raw, meas),
            "naive_per_op_sum": _errors(naive, meas),
            "correction": {"scale": model.scale, "offset_ms": model.offset}}
    return result


def case_train(space: Any, data: Any, epochs: tuple[int, ...], seed: int, out: Path,
               transform: bool, sandwich: bool, subnets_per_step: int,
               step_resolution: bool) -> Any:
    import keras

    from tether.cloud.supernet import Supernet
    from tether.cloud.train import TrainConfig, train_supernet

    keras.utils.set_random_seed(seed)
    net = Supernet(space, kernel_transform=transform)
    t0 = time.perf_counter()
    logs = train_supernet(net, data.x_train, data.y_train, data.x_test, data.y_test,
                          TrainConfig(epochs=epochs, seed=seed, sandwich=sandwich,  # type: ignore[arg-type]
                                      subnets_per_step=subnets_per_step,
                                      step_resolution=step_resolution),
                          out / f"ckpt-{seed}{'' if transform else '-crop'}")
    total = time.perf_counter() - t0
    net.save(out / f"supernet-{seed}{'' if transform else '-crop'}.keras")
    last = logs[-1].epochs[-1]
    _emit({"case": "train", "seed": seed, "kernel_transform": transform, "sandwich": sandwich,
           "subnets_per_step": subnets_per_step, "step_resolution": step_resolution,
           "epochs": list(epochs),
           "seconds": total,
           "phase_seconds": {p.phase: p.seconds for p in logs},
           "largest_accuracy": last.largest_accuracy, "smallest_accuracy": last.smallest_accuracy,
           "per_epoch": [vars(e) for p in logs for e in p.epochs]})
    return net, sum(epochs)


def _scratch(model: Any, data: Any, resolution: int, epochs: int, seed: int) -> float:
    import keras

    from tether.cloud.supernet import resize_images

    keras.utils.set_random_seed(seed)
    fresh = keras.models.clone_model(model)  # same architecture, new weights
    steps = int(np.ceil(len(data.x_train) / 64)) * epochs
    fresh.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(3e-3, steps)),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    fresh.fit(resize_images(data.x_train, resolution), data.y_train, batch_size=64,
              epochs=epochs, verbose=0, shuffle=True)
    pred = np.asarray(fresh.predict(resize_images(data.x_test, resolution), verbose=0))
    return float(np.mean(pred.argmax(1) == data.y_test))


def case_accuracy(net: Any, data: Any, total_epochs: int, seed: int,
                  scratch: bool = True) -> dict[str, Any]:
    from tether.cloud.supernet import extract
    from tether.cloud.train import evaluate

    space = net.space
    rng = random.Random(100)
    archs = {"largest": space.largest(), "smallest": space.smallest()}
    for i in range(3):
        archs[f"random{i}"] = space.sample(rng)
    calib = data.x_train[np.random.default_rng(seed).choice(len(data.x_train),
                                                            min(2000, len(data.x_train)),
                                                            replace=False)]
    rows = {}
    for name, arch in archs.items():
        rows[name] = {
            "key": arch.key(), "macs": arch.macs(space), "params": arch.params(space),
            "recalibrated": evaluate(net, arch, data.x_test, data.y_test, calib),
            "not_recalibrated": evaluate(net, arch, data.x_test, data.y_test, None),
            "from_scratch": _scratch(extract(net, arch), data, arch.resolution, total_epochs,
                                     seed) if scratch else None}
    return {"case": "accuracy", "seed": seed, "kernel_transform": net.kernel_transform,
            "scratch_epochs": total_epochs, "subnets": rows}


def _mean_over_seeds(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per subnet: recalibrated and from-scratch accuracy averaged over the seeds, the gap
    (subnet minus scratch, in points) and the spread of the recalibrated accuracy."""
    out: dict[str, Any] = {}
    for name in records[0]["subnets"]:
        rows = [r["subnets"][name] for r in records]
        recal = [row["recalibrated"] for row in rows]
        scratch = [row["from_scratch"] for row in rows if row["from_scratch"] is not None]
        out[name] = {"key": rows[0]["key"], "seeds": len(rows),
                     "recalibrated": float(np.mean(recal)),
                     "not_recalibrated": float(np.mean([row["not_recalibrated"] for row in rows])),
                     "from_scratch": float(np.mean(scratch)) if scratch else None,
                     "gap_points": (100 * float(np.mean(recal) - np.mean(scratch))
                                    if scratch else None),
                     "recalibrated_spread_points": 100 * float(max(recal) - min(recal))}
    return out


def case_predictor(net: Any, data: Any, n: int, out: Path) -> tuple[dict[str, Any], Any]:
    from tether.cloud.accuracy import AccuracyPredictor, evaluate_predictor, measure_accuracy

    from tether._internal.files import atomic_write_text
    from tether.cloud.space import Arch

    space = net.space
    rng = random.Random(7)
    archs = list({a.key(): a for a in [space.sample(rng) for _ in range(n)]}.values())
    t0 = time.perf_counter()
    saved = out / f"predictor-samples-{n}.json"  # measured once per supernet and output folder
    if saved.is_file():
        rows = json.loads(saved.read_text())
        archs, acc = [Arch.from_dict(r["arch"]) for r in rows], [r["accuracy"] for r in rows]
    else:
        acc = measure_accuracy(net, archs, data.x_train, data.x_test, data.y_test,
                               calibration_images=2000)
        atomic_write_text(saved, json.dumps([{"arch": a.to_dict(), "accuracy": float(v)}
                                             for a, v in zip(archs, acc)]))
    seconds = time.perf_counter() - t0
    k = 2 * len(archs) // 3
    pred = AccuracyPredictor(space).fit(archs[:k], acc[:k])
    return ({"case": "predictor", "subnets": len(archs), "train": k, "measure_seconds": seconds,
             "accuracy_range": [float(min(acc)), float(max(acc))],
             **evaluate_predictor(pred, archs[k:], acc[k:])},
            AccuracyPredictor(space).fit(archs, acc))


def case_search(net: Any, predictor: Any, out: Path) -> dict[str, Any]:
    from tether.cloud.latency import LatencyModel, measure_subnets, probe_space
    from tether.cloud.policy import Constraints, Policy
    from tether.cloud.search import SearchConfig, evolve, make_estimator, search_ladder

    space = net.space
    rng = random.Random(3)
    fit = [space.sample(rng) for _ in range(20)]
    table, measured = probe_space(space, out / "bundle-search", net, fit, naive=False,
                                  warmup=20, runs=200, min_time_ms=50, rounds=5)
    latency = LatencyModel(space, table).fit(fit, [measured[a.key()] for a in fit])
    estimate = make_estimator(space, latency, predictor)
    lo, hi = latency.predict(space.smallest()), latency.predict(space.largest())
    budgets = [float(b) for b in np.linspace(lo * 1.02, hi, 20)]
    cons = Constraints(table.device_id)
    policy = Policy.parse("accuracy > latency")
    timed: list[str] = []

    def on_device(arch: Any) -> float:
        timed.append(arch.key())
        return measure_subnets(net, [arch], out / "verify", warmup=20, runs=200,
                               rounds=5)[arch.key()]

    result: dict[str, Any] = {"case": "search", "budgets": len(budgets),
                              "guard_band": latency.margin, "policy": str(policy)}
    point = make_estimator(space, LatencyModel(space, table, latency.scale, latency.offset,
                                               0.0), predictor)
    for mode in ("point", "guarded", "verified"):
        t0 = time.perf_counter()
        if mode == "point":  # the point prediction, each budget on its own (the old search)
            found = [evolve(space, Constraints(table.device_id, max_latency_ms=b), policy,
                            point, SearchConfig(seed=0)).best for b in budgets]
        else:  # verified: the device measures each answer, so the point prediction leads
            found = [r.best for r in search_ladder(
                space, cons, budgets, policy, estimate if mode == "guarded" else point,
                SearchConfig(seed=0), measure=on_device if mode == "verified" else None)]
        seconds = time.perf_counter() - t0
        archs = [c.arch for c in found if c is not None]
        real = measure_subnets(net, archs, out / f"found-{mode}", warmup=20, runs=200,
                               rounds=5)
        rows = []
        for b, c in zip(budgets, found):
            if c is None:
                rows.append({"budget_ms": b, "found": None})
                continue
            rows.append({"budget_ms": b, "key": c.arch.key(), "macs": c.values["macs"],
                         "params": c.values["params"],
                         "predicted_ms": c.values["latency_predicted"],
                         "measured_ms": real[c.arch.key()],
                         "predicted_accuracy": c.values["accuracy"]})
        ok = [r for r in rows if r.get("measured_ms") is not None]
        macs = [r["macs"] for r in ok]
        result[mode] = {
            "found": len(ok), "seconds": seconds,
            "meet_budget_measured": float(np.mean([r["measured_ms"] <= r["budget_ms"]
                                                   for r in ok])),
            "over_budget_pct": [round(100 * (r["measured_ms"] / r["budget_ms"] - 1), 2)
                                for r in ok if r["measured_ms"] > r["budget_ms"]],
            "macs_monotone": all(a <= b for a, b in zip(macs, macs[1:])), "rows": rows}
    result["verified"]["subnets_timed"] = len(timed)
    impossible = evolve(space, Constraints(table.device_id, max_latency_ms=lo / 2),
                        Policy.parse("latency"), estimate, SearchConfig(max_samples=5000))
    result["impossible"] = impossible.message(Constraints(table.device_id,
                                                          max_latency_ms=lo / 2))
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="latency,train,accuracy,predictor,search")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--first-seed", type=int, default=0)
    from tether.cloud.train import TrainConfig

    defaults = TrainConfig()
    p.add_argument("--epochs", default=",".join(map(str, defaults.epochs)))
    p.add_argument("--random-only", action="store_true",
                   help="two random subnets per step instead of the sandwich rule (largest + "
                   "smallest + one random)")
    p.add_argument("--subnets-per-step", type=int, default=None,
                   help=f"subnets trained per step in the elastic phases (default "
                   f"{defaults.subnets_per_step} with the sandwich rule, 2 with --random-only)")
    p.add_argument("--step-resolution", action=argparse.BooleanOptionalAction,
                   default=defaults.step_resolution,
                   help="one resolution per elastic-phase step for all its subnets (OFA)")
    p.add_argument("--subnets", type=int, default=200)
    p.add_argument("--predictor-subnets", type=int, default=150)
    p.add_argument("--out", default="/tmp/tether-cloud")
    p.add_argument("--supernet", default=None,
                   help="a trained supernet (.keras) for the accuracy, predictor and search "
                   "cases instead of training one")
    a = p.parse_args()
    cases = set(a.cases.split(","))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    from tether.cloud.space import SearchSpace
    from tether.data import mnist5k

    space = SearchSpace.default()
    per_step = a.subnets_per_step or (2 if a.random_only else defaults.subnets_per_step)
    summary: dict[str, Any] = {"case": "summary", **run_metadata(), "space_size": space.size()}
    if "latency" in cases:
        rec = case_latency(space, a.subnets, out)
        _emit(rec)
        summary["latency_within_10pct_1thread"] = rec["threads_1"]["predicted"]["within_10pct"]
    if cases & {"train", "accuracy", "crop", "predictor", "search"}:
        data = mnist5k()
        epochs = tuple(int(e) for e in a.epochs.split(","))
        nets = []
        seeds = list(range(a.first_seed, a.first_seed + a.seeds))
        if a.supernet:
            import keras

            import tether.cloud.supernet  # noqa: F401  (registers Supernet for loading)

            nets.append((keras.models.load_model(a.supernet), sum(epochs)))
            seeds = seeds[:1]
        else:
            for seed in seeds:
                nets.append(case_train(space, data, epochs, seed, out, transform=True,
                                       sandwich=not a.random_only, subnets_per_step=per_step,
                                       step_resolution=a.step_resolution))
        if "accuracy" in cases:
            records = []
            for seed, (net, total) in zip(seeds, nets):
                records.append(case_accuracy(net, data, total, seed))
                _emit(records[-1])
            summary["accuracy_mean_over_seeds"] = _mean_over_seeds(records)
        if "crop" in cases:  # the same training with plain centre crops for smaller kernels
            for seed in seeds[:1]:
                net, total = case_train(space, data, epochs, seed, out, transform=False,
                                        sandwich=not a.random_only, subnets_per_step=per_step,
                                        step_resolution=a.step_resolution)
                _emit(case_accuracy(net, data, total, seed, scratch=False))
        predictor = None
        if "predictor" in cases or "search" in cases:
            rec, predictor = case_predictor(nets[0][0], data, a.predictor_subnets, out)
            _emit(rec)
        if "search" in cases:
            rec = case_search(nets[0][0], predictor, out)
            _emit(rec)
            summary["search_meet_budget"] = {m: rec[m]["meet_budget_measured"]
                                             for m in ("point", "guarded", "verified")}
    _emit(summary)


if __name__ == "__main__":
    main()
