"""The model for a device and limits: the best library entry under a policy, or a better
subnet found by constrained evolutionary search, extracted and filed in the library.

`find_model` is what `tether search` runs (the CLI only checks its flags and prints the
answer); pipelines call it directly. Keras is imported only when a subnet must be extracted
or timed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tether.cloud.library import ModelLibrary
from tether.cloud.policy import Constraints, Policy
from tether.cloud.space import Arch
from tether.errors import TetherError

__all__ = ["SearchError", "can_verify", "find_model"]

logger = logging.getLogger(__name__)


class SearchError(TetherError, ValueError):
    """No model can be found: no entry or subnet meets the constraints (the message names the
    constraint and the closest candidate), or the supernet to extract an answer from is
    missing or not a tether supernet."""


def can_verify(constraints: Constraints, budgets: Sequence[float] = (), *,
               device_id: str | None = None) -> bool:
    """Whether answers can be timed on the device itself: `constraints.device` is this
    machine and there is a latency limit to time them against.

    Args:
        constraints: the limits; `device` is the device the latency limit is for.
        budgets: latency limits (ms) of a ladder, as given to `find_model` (default: none,
            then only `constraints.max_latency_ms` counts).
        device_id: this machine's device id (default: None, asks
            `tether.device.profile.device_info()`, which runs the probe tool once).

    Returns:
        True when `find_model(..., verify=True)` can time its answers here; False when there
        is no device, no latency limit, or the device is another machine.
    """
    if constraints.device is None or (constraints.max_latency_ms is None and not budgets):
        return False
    if device_id is None:
        from tether.device.profile import device_info

        device_id = str(device_info()["device_id"])
    return constraints.device == device_id


def _load_supernet(path: Path, flag: str = "--supernet") -> Any:
    """The Supernet in `path`, or a SearchError naming `flag` and the file."""
    import keras

    from tether.cloud.supernet import Supernet

    if not path.is_file():
        raise SearchError(f"{flag} {path}: no such file")
    try:
        net = keras.models.load_model(path)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file
        raise SearchError(f"{flag} {path}: not a tether supernet file "
                          f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                          ) from exc
    if not isinstance(net, Supernet):
        raise SearchError(f"{flag} {path}: a Keras model, but not a tether supernet")
    return net


class _Found:
    """Extracts, measures and files the subnets a search returns (the supernet loaded once)."""

    def __init__(self, lib: ModelLibrary, task: str, data: str, device: str | None,
                 seed: int) -> None:
        self.lib, self.task, self.data, self.device, self.seed = lib, task, data, device, seed
        self.net: Any = None
        self.measured: dict[str, float] = {}

    def supernet(self, key: str) -> Any:
        if self.net is None:
            path = self.lib.supernet_path(self.task, self.data)
            if not path or not Path(path).is_file():
                raise SearchError(f"search found {key}, better than every entry, but the "
                                  f"index's supernet ({path}) is not there to extract it from")
            logger.info("loading the supernet %s", path)
            self.net = _load_supernet(Path(path))
        return self.net

    def measure(self, arch: Arch) -> float:
        """End-to-end latency of `arch` on this device, run as the device's table was."""
        import tempfile

        from tether.cloud.latency import measure_subnets

        assert self.device is not None  # find_model checks verify has a device
        table = self.lib.latency_model(self.task, self.data, self.device).table
        with tempfile.TemporaryDirectory() as tmp:
            ms = measure_subnets(self.supernet(arch.key()), [arch], tmp, threads=table.threads,
                                 warmup=max(table.warmup, 10), runs=max(table.runs, 50),
                                 min_time_ms=max(table.min_time_ms, 50), rounds=table.rounds)
        self.measured[arch.key()] = ms[arch.key()]
        logger.info("measured %s on %s: %.4g ms", arch.key(), self.device, ms[arch.key()])
        return ms[arch.key()]

    def entry(self, cand: Any, searched: int) -> dict[str, Any]:
        """The library entry of `cand` (extracted and added when it is new)."""
        from tether.cloud.library import build_entries
        from tether.data import load

        lib, key = self.lib, cand.arch.key()
        source = "library"
        if lib.entry(self.task, self.data, key) is None:
            net = self.supernet(key)
            ds = load(self.data)
            index = next(i for i in lib.indexes()
                         if i["task"] == self.task and i["dataset"] == self.data)
            folder = Path(index["folder"] or lib.path.with_name(lib.path.stem + ".models"))
            logger.info("extracting %s into %s", key, folder)
            rec = build_entries(net, [cand.arch], ds.x_train, ds.x_test, ds.y_test, folder,
                                seed=self.seed)[0]
            lib.add_entry(self.task, self.data, rec["arch"], accuracy=rec["accuracy"],
                          input_shape=rec["input_shape"], size=rec["size"], path=rec["path"])
            lib.add_accuracy_samples(self.task, self.data, [rec["arch"]], [rec["accuracy"]])
            source = "extracted"
        if key in self.measured and self.device is not None:
            lib.set_measured(self.task, self.data, self.device, {key: self.measured[key]})
        entry = lib.entry(self.task, self.data, key)
        assert entry is not None
        return {"source": source, **entry.to_dict(), "estimates": cand.values,
                "searched": searched}


def find_model(lib: ModelLibrary, task: str, data: str, constraints: Constraints,
               policy: Policy, *, extract_new: bool = True, generations: int = 30,
               seed: int = 0, budgets: Sequence[float] = (), verify: bool = False,
               on_generation: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """argmin under `policy` of {library entries} ∪ {subnets of the space} s.t. `constraints`.

    The best library entry under `policy` that meets `constraints` is the answer with
    `extract_new=False`. Otherwise the whole search space is searched (evolution warm-started
    with every entry; latency from the device's latency model, accuracy from a predictor
    fitted on the index's accuracy samples, file size from a fit on the entries' sizes); a
    subnet the policy ranks above the best entry is extracted from the index's supernet,
    converted and added to the library (its accuracy measured), else the entry is the answer.

    Args:
        lib: the model library (written to: new entries, accuracy samples, measurements).
        task, data: the index searched, e.g. "classification", "mnist5k".
        constraints: limits the answer must meet; a latency limit is checked against the
            latency model's guard band (or the measurement, with `verify`).
        policy: priority order, e.g. `Policy.parse("latency > size > accuracy")`.
        extract_new: search the space too (default: True); False answers from the library
            only (no supernet needed).
        generations: evolution generations (default: 30; 0 keeps the first population).
        seed: seed of the search and of batch-norm recalibration (default: 0).
        budgets: latency limits (ms) on `constraints.device` (default: none). Two or more
            search a ladder (nested answers: a tighter budget never gets a larger model) and
            `constraints.max_latency_ms` is ignored; one replaces
            `constraints.max_latency_ms`; none keeps it.
        verify: time each answer on this machine (the device) and search again when it
            misses the latency limit, limits checked on the point prediction (default:
            False). Needs `constraints.device` and a latency limit; `can_verify` says
            whether this machine is the device.
        on_generation: called with (generation, generations) after each generation of a
            single search (default: None; a ladder does not report progress).

    Returns:
        The JSON-ready answer. One search: the library entry's fields (`ModelLibrary.entry`'s
        `to_dict`) with "source" ("library" or "extracted"), "searched" and "verified" where
        a search ran, "estimates" for a searched subnet. A ladder: {"ladder": one row per
        budget, in the order given ("max_latency_ms" and the entry's fields, or "source":
        None and "error"), "verified"}. Always "history" (the search's best feasible values
        per generation; for a ladder, one such list per budget; [] when no search ran) and
        "samples" (candidates evaluated; a ladder's summed over its budgets; 0 when no
        search ran).

    Raises:
        SearchError: no entry (`extract_new=False`) or subnet meets the constraints (the
            message names the constraint and the closest subnet); the supernet to extract
            from is missing or not a tether supernet; a ladder with `extract_new=False`;
            `verify` without a device and latency limit; a latency policy without a device.
        TetherError: from the library (unknown index or device) or the policy (a budget
            that is not > 0, an objective that cannot be estimated).
    """
    from tether.cloud.accuracy import AccuracyPredictor
    from tether.cloud.policy import rank
    from tether.cloud.search import (SearchConfig, folded_params, make_estimator, search,
                                     search_ladder)

    budgets = [float(b) for b in budgets]
    cons = replace(constraints, max_latency_ms=budgets[0]) if len(budgets) == 1 else constraints
    ladder_cons = [replace(cons, max_latency_ms=b) for b in budgets]  # each budget checked
    if "latency" in {o.name for o in policy.objectives} and cons.device is None:
        raise SearchError(f"policy '{policy}' ranks by latency: give constraints.device (a "
                          "device id from `tether library list`)")
    if len(budgets) > 1 and not extract_new:
        raise SearchError(f"a ladder of {len(budgets)} latency budgets searches the space: "
                          "set extract_new=True")
    if verify and (cons.device is None or (cons.max_latency_ms is None and not budgets)):
        raise SearchError(f"verify=True times each answer against a latency limit on the "
                          f"device: give constraints.device and max_latency_ms or budgets "
                          f"(device={cons.device}, max_latency_ms={cons.max_latency_ms}, "
                          f"budgets={budgets})")

    entries = lib.query(task, data, cons, policy)
    best_entry = entries[0] if entries else None
    sp = lib.space(task, data)
    if not extract_new:
        if best_entry is None:
            raise SearchError(f"no library entry of {task}/{data} meets the constraints "
                              f"({len(lib.entries(task, data))} entries); try --extract")
        return {"source": "library", **best_entry.to_dict(), "history": [], "samples": 0}
    latency = lib.latency_model(task, data, cons.device) if cons.device else None
    samples = lib.accuracy_samples(task, data)
    accuracy = AccuracyPredictor.from_samples(sp, samples) if len(samples) >= 5 else None
    rows = lib.entries(task, data)
    size_fit = (4.0, 4096.0)  # bytes per folded weight, fixed bytes
    if len(rows) >= 2:
        x = np.array([[folded_params(e.arch, sp), 1.0] for e in rows])
        coef = np.linalg.lstsq(x, np.array([e.size for e in rows], float), rcond=None)[0]
        size_fit = (float(coef[0]), float(coef[1]))
    found = _Found(lib, task, data, cons.device, seed)
    if verify and latency is not None:  # the device times every answer: no guard band needed
        latency = replace(latency, margin=0.0)
    estimate = make_estimator(sp, latency, accuracy, size_fit)
    config = SearchConfig(generations=generations, seed=seed)
    measure = found.measure if verify else None
    if len(budgets) > 1:
        ladder = search_ladder(sp, cons, budgets, policy, estimate, config, measure=measure,
                               initial=[e.arch for e in rows])
        out = []
        for rung, res in zip(ladder_cons, ladder):
            out.append({"max_latency_ms": rung.max_latency_ms,
                        **(found.entry(res.best, res.samples) if res.best is not None else
                           {"source": None, "error": res.message(rung)})})
        return {"ladder": out, "verified": verify,
                "history": [res.history for res in ladder],
                "samples": sum(res.samples for res in ladder)}
    result = search(sp, cons, policy, estimate, config, measure=measure,
                    initial=[e.arch for e in rows], on_generation=on_generation)
    trace = {"history": result.history, "samples": result.samples}
    if result.best is None:
        if best_entry is not None and not verify:
            return {"source": "library", **best_entry.to_dict(), **trace}
        raise SearchError(result.message(cons))
    cand = result.best
    if best_entry is not None and cand.arch.key() != best_entry.key:
        pick = rank([best_entry, cand], policy,
                    lambda c, o: c.value(o, cons.device) if hasattr(c, "value") else c.values[o],
                    lambda c: "0" if hasattr(c, "value") else "1")[0]
        if pick is best_entry:
            if verify and cons.device not in best_entry.latency_measured:
                assert cons.device is not None
                found.measure(best_entry.arch)
                lib.set_measured(task, data, cons.device, found.measured)
            limit = cons.max_latency_ms
            if not verify or (limit is not None
                              and found.measured.get(best_entry.key, 0.0) <= limit):
                entry = lib.entry(task, data, best_entry.key)
                assert entry is not None
                return {"source": "library", **entry.to_dict(), "searched": result.samples,
                        "verified": verify, **trace}
    return {**found.entry(cand, result.samples), "verified": verify, **trace}
