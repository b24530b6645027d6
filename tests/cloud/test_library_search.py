"""Model library (SQLite index tables, devices, queries) and the constrained search."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.cloud.accuracy import AccuracyPredictor, evaluate_predictor
from tether.cloud.latency import LatencyModel, configurations
from tether.cloud.library import LibraryError, ModelLibrary
from tether.cloud.policy import Constraints, Policy, PolicyError, rank
from tether.cloud.search import SearchConfig, evolve, make_estimator, search, search_ladder
from tether.cloud.space import SearchSpace
from tether.device.profile import LatencyTable

TINY = SearchSpace.load(Path(__file__).with_name("tiny_space.toml"))


def _table(space: SearchSpace, device: str, seed: int) -> LatencyTable:
    # A synthetic device: each piece costs its MAC-ish size times a device factor, plus noise
    rng = np.random.default_rng(seed)
    keys = configurations(space)
    ms = {k: float(1e-3 * (1 + len(k)) * rng.uniform(0.5, 1.5)) for k in keys}
    return LatencyTable({"device_id": device}, 1, 1, 1, ms, ms, ms)


def _fake_accuracy(arch, space) -> float:
    return 0.5 + 0.4 * np.log(arch.macs(space)) / np.log(space.largest().macs(space))


@pytest.fixture()
def library(tmp_path):
    lib = ModelLibrary(tmp_path / "lib.sqlite")
    lib.create_index("classification", "digits", TINY)
    lib.add_device(LatencyModel(TINY, _table(TINY, "board-a", 0), margin=0.08))
    rng = random.Random(0)
    archs = {a.key(): a for a in [TINY.sample(rng) for _ in range(40)]}
    for a in archs.values():
        lib.add_entry("classification", "digits", a, accuracy=float(_fake_accuracy(a, TINY)),
                      input_shape=(a.resolution, a.resolution, 1), size=4 * a.params(TINY),
                      path=f"/models/{a.key()}.tmodel")
    yield lib
    lib.close()


def test_profiling_a_new_device_fills_its_column(library) -> None:
    entries = library.entries("classification", "digits")
    assert all("board-a" in e.latency_predicted for e in entries)
    library.add_device(LatencyModel(TINY, _table(TINY, "board-b", 1), 1.1, 0.01))
    entries = library.entries("classification", "digits")
    model = library.latency_model("classification", "digits", "board-b")
    for e in entries:
        assert e.latency_predicted["board-b"] == pytest.approx(model.predict(e.arch))
    library.set_measured("classification", "digits", "board-b", {entries[0].key: 123.0})
    assert library.entry("classification", "digits", entries[0].key).latency("board-b") == 123.0
    assert entries[1].latency("board-b") == entries[1].latency_predicted["board-b"]


def test_unknown_index_or_device_is_named(library) -> None:
    with pytest.raises(LibraryError, match="no index for task 'detection'"):
        library.entries("detection", "coco")
    with pytest.raises(LibraryError, match="device 'nope' is not profiled"):
        library.query("classification", "digits", Constraints("nope", max_latency_ms=1.0),
                      Policy.parse("latency"))
    with pytest.raises(LibraryError, match="another search space"):
        library.create_index("classification", "digits", SearchSpace.default())


OBJ = ["latency", "size", "params", "macs", "accuracy"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(OBJ), n=st.integers(1, 5), lat=st.floats(0.005, 0.06),
       acc=st.floats(0.5, 0.95), params=st.integers(500, 6000))
def test_a_query_equals_a_brute_force_scan(library, order, n, lat, acc, params) -> None:
    policy = Policy.parse(" > ".join(order[:n]))
    cons = Constraints("board-a", max_latency_ms=lat, min_accuracy=acc, max_params=params)
    got = library.query("classification", "digits", cons, policy)
    rows = library.entries("classification", "digits")
    feasible = [e for e in rows if e.latency_bound("board-a") <= lat and e.accuracy >= acc
                and e.params <= params]
    assert sorted(e.key for e in got) == sorted(e.key for e in feasible)
    if feasible:
        sign = {o: (-1 if o == "accuracy" else 1) for o in OBJ}
        want = min(feasible, key=lambda e: (*[sign[o] * e.value(o, "board-a")
                                              for o in order[:n]], e.key))
        assert got[0].key == want.key


def test_policy_tolerance_prefers_the_next_objective() -> None:
    items = [("a", 1.00, 0.90), ("b", 1.04, 0.97), ("c", 1.20, 0.99)]
    value = lambda it, o: {"latency": it[1], "accuracy": it[2]}[o]  # noqa: E731
    strict = rank(items, Policy.parse("latency > accuracy"), value, lambda it: it[0])
    loose = rank(items, Policy.parse("latency:5% > accuracy"), value, lambda it: it[0])
    assert strict[0][0] == "a" and loose[0][0] == "b"
    with pytest.raises(PolicyError, match="unknown objective 'speed'"):
        Policy.parse("speed > size")


def test_accuracy_predictor_ranks_held_out_subnets() -> None:
    rng = random.Random(0)
    archs = list({a.key(): a for a in [TINY.sample(rng) for _ in range(160)]}.values())
    y = [float(_fake_accuracy(a, TINY)) for a in archs]
    pred = AccuracyPredictor(TINY).fit(archs[:100], y[:100])
    report = evaluate_predictor(pred, archs[100:], y[100:])
    assert report["rmse"] < 0.03 and report["kendall_tau"] > 0.7, report
    again = AccuracyPredictor.from_samples(TINY, pred.samples)
    np.testing.assert_allclose(again.predict(archs[100:]), pred.predict(archs[100:]))


def _estimator():
    rng = random.Random(1)
    archs = list({a.key(): a for a in [TINY.sample(rng) for _ in range(120)]}.values())
    acc = AccuracyPredictor(TINY, ensemble=2).fit(archs, [_fake_accuracy(a, TINY) for a in archs])
    lat = LatencyModel(TINY, _table(TINY, "board-a", 0))
    return make_estimator(TINY, lat, acc), lat


def test_the_guard_band_is_checked_against_limits(library) -> None:
    # board-a's predictions carry an 8% guard band: an unmeasured entry meets a limit only
    # when its raised prediction does; a measurement replaces both
    e = library.entries("classification", "digits")[0]
    point = e.latency_predicted["board-a"]
    assert e.latency_bound("board-a") == pytest.approx(point * 1.08)
    keys = lambda lim: {x.key for x in library.query(  # noqa: E731
        "classification", "digits", Constraints("board-a", max_latency_ms=lim),
        Policy.parse("latency"))}
    assert e.key not in keys(point * 1.05) and e.key in keys(point * 1.09)
    library.set_measured("classification", "digits", "board-a", {e.key: point * 1.5})
    assert e.key not in keys(point * 1.4) and e.key in keys(point * 1.5)


def _slow_device(lat: LatencyModel, factor: float, seed: int = 0):
    """A device that runs every subnet `factor` slower than the latency model says, with 2%
    noise: the predictions alone would miss budgets."""
    noise = np.random.default_rng(seed)
    calls = []

    def measure(arch) -> float:
        calls.append(arch.key())
        return lat.predict(arch) * factor * float(noise.uniform(0.98, 1.02))
    return measure, calls


def test_a_measured_miss_searches_again_under_a_tighter_limit() -> None:
    estimate, lat = _estimator()
    lo, hi = lat.predict(TINY.smallest()), lat.predict(TINY.largest())
    budget = float(lo + 0.5 * (hi - lo))
    cons = Constraints("board-a", max_latency_ms=budget)
    config = SearchConfig(population=40, generations=8, seed=0)
    blind = evolve(TINY, cons, Policy.parse("accuracy > latency"), estimate, config)
    measure, calls = _slow_device(lat, 1.15)
    assert measure(blind.best.arch) > budget  # the point prediction fills the budget: a miss
    calls.clear()
    res = search(TINY, cons, Policy.parse("accuracy > latency"), estimate, config,
                 measure=measure)
    assert res.best is not None and len(calls) >= 2
    assert res.best.values["latency"] == res.measured_ms[res.best.arch.key()] <= budget
    # a device far slower than its model: every round misses, and the answer says so
    res = search(TINY, Constraints("board-a", max_latency_ms=lo * 1.2),
                 Policy.parse("accuracy > latency"), estimate, config,
                 measure=_slow_device(lat, 3.0)[0], rounds=3)
    assert res.best is None and res.unmet == ["latency"] and res.closest is not None
    assert "cannot be met when measured" in res.message(
        Constraints("board-a", max_latency_ms=lo * 1.2))


def test_a_ladder_meets_every_budget_measured_with_nested_models() -> None:
    estimate, lat = _estimator()
    lo, hi = lat.predict(TINY.smallest()), lat.predict(TINY.largest())
    budgets = [float(b) for b in np.linspace(lo * 1.25, hi * 1.1, 8)]
    random.Random(0).shuffle(budgets)  # any order in, answers in the same order out
    slow, calls = _slow_device(lat, 1.1, seed=1)
    timed: dict[str, float] = {}

    def measure(arch) -> float:  # a shared machine: a second timing of a subnet is far slower
        ms = slow(arch) * (1.0 if arch.key() not in timed else 3.0)
        timed.setdefault(arch.key(), ms)
        return ms
    policy = Policy.parse("accuracy > latency")
    results = search_ladder(TINY, Constraints("board-a"), budgets, policy, estimate,
                            SearchConfig(population=40, generations=8, seed=0), measure=measure)
    rows = sorted(zip(budgets, [r.best for r in results]), key=lambda t: t[0])
    assert all(c is not None for _, c in rows)
    assert len(calls) == len(set(calls))  # each subnet timed once, whichever budget asked
    for r in results:  # every figure reported is the one the budget was checked against
        assert all(timed[k] == ms for k, ms in r.measured_ms.items())
    for budget, c in rows:
        assert c.values["latency"] <= budget  # measured
    for (_, tight), (_, loose) in zip(rows, rows[1:]):
        assert tight.values["macs"] <= loose.values["macs"]
        assert tight.values["params"] <= loose.values["params"]
        assert tight.values["accuracy"] <= loose.values["accuracy"] + 1e-12


def test_an_impossible_budget_names_the_constraint() -> None:
    estimate, lat = _estimator()
    floor = lat.predict(TINY.smallest())
    res = evolve(TINY, Constraints("board-a", max_latency_ms=floor / 2, max_params=10 ** 6),
                 Policy.parse("latency"), estimate, SearchConfig(max_samples=3000))
    assert res.best is None and res.unmet == ["latency"] and res.samples <= 3000
    msg = res.message(Constraints("board-a", max_latency_ms=floor / 2))
    assert "latency on board-a cannot be met" in msg and res.closest is not None
    assert res.best_seen["latency"] == pytest.approx(floor)
