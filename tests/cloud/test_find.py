"""`find_model`, what `tether search` runs, called as a library function: a tiny library on
digits (an untrained supernet of the tiny space to extract from, a synthetic device)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tether.cloud.find import SearchError, can_verify, find_model
from tether.cloud.latency import LatencyModel, configurations
from tether.cloud.library import ModelLibrary, index_table
from tether.cloud.policy import Constraints, Policy
from tether.cloud.space import SearchSpace
from tether.cloud.supernet import Supernet
from tether.device.profile import LatencyTable
from tether.errors import TetherError

TINY = SearchSpace.load(Path(__file__).with_name("tiny_space.toml"))
TASK, DATA, DEVICE = "classification", "digits", "board-a"


def _table(space: SearchSpace, device: str, seed: int) -> LatencyTable:
    # A synthetic device: each piece costs its MAC-ish size times a device factor, plus noise
    rng = np.random.default_rng(seed)
    ms = {k: float(1e-3 * (1 + len(k)) * rng.uniform(0.5, 1.5)) for k in configurations(space)}
    return LatencyTable({"device_id": device}, 1, 1, 1, ms, ms, ms)


def _fake_accuracy(arch) -> float:
    return float(0.5 + 0.4 * np.log(arch.macs(TINY)) / np.log(TINY.largest().macs(TINY)))


@pytest.fixture(scope="module")
def supernet_file(tmp_path_factory) -> Path:
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("supernet") / "tiny.keras"
    Supernet(TINY).save(path)
    return path


@pytest.fixture()
def library(tmp_path, supernet_file):
    lib = ModelLibrary(tmp_path / "lib.sqlite")
    lib.create_index(TASK, DATA, TINY, str(supernet_file), str(tmp_path / "models"))
    lib.add_device(LatencyModel(TINY, _table(TINY, DEVICE, 0), margin=0.08))
    rng = random.Random(0)
    archs = list({a.key(): a for a in [TINY.sample(rng) for _ in range(12)]}.values())
    for a in archs:
        lib.add_entry(TASK, DATA, a, accuracy=_fake_accuracy(a),
                      input_shape=(a.resolution, a.resolution, 1), size=4 * a.params(TINY),
                      path=f"/models/{a.key()}.tmodel")
    lib.add_accuracy_samples(TASK, DATA, archs, [_fake_accuracy(a) for a in archs])
    yield lib
    lib.close()


def _latency_range(lib: ModelLibrary) -> tuple[float, float]:
    model = lib.latency_model(TASK, DATA, DEVICE)
    return model.bound(TINY.smallest()), model.bound(TINY.largest())


def test_the_answer_meets_the_constraints_and_carries_its_history(library) -> None:
    # Prepare: limits halfway through the space, so that some subnets fail each
    lo, hi = _latency_range(library)
    limit = float(lo + 0.5 * (hi - lo))
    max_params = (TINY.smallest().params(TINY) + TINY.largest().params(TINY)) // 2
    cons = Constraints(DEVICE, max_latency_ms=limit, max_params=max_params)
    seen: list[tuple[int, int]] = []
    # Execute
    got = find_model(library, TASK, DATA, cons, Policy.parse("accuracy > latency"),
                     generations=4, on_generation=lambda g, n: seen.append((g, n)))
    # Assert: the answer is in the library (searched or extracted) and meets every limit
    assert got["source"] in ("library", "extracted") and got["verified"] is False
    entry = library.entry(TASK, DATA, got["key"])
    assert entry is not None and entry.params == got["params"] <= max_params
    assert entry.latency_bound(DEVICE) <= limit * (1 + 1e-9)
    # the evolutionary search's trajectory: one row of best feasible values per generation
    assert got["samples"] == got["searched"] > 0
    assert [row["generation"] for row in got["history"]] == [1.0, 2.0, 3.0, 4.0]
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    for row in got["history"]:
        assert row["latency"] <= limit * (1 + 1e-9) and row["params"] <= max_params
    accs = [row["accuracy"] for row in got["history"]]
    assert accs == sorted(accs)  # the best under the policy never gets worse


def test_an_impossible_constraint_is_named(library) -> None:
    lo, _ = _latency_range(library)
    policy = Policy.parse("latency > size")
    with pytest.raises(SearchError, match=f"at most {lo / 2:g} ms latency on {DEVICE} cannot "
                       "be met .*closest: ") as info:
        find_model(library, TASK, DATA, Constraints(DEVICE, max_latency_ms=lo / 2), policy,
                   generations=2)
    assert isinstance(info.value, TetherError) and isinstance(info.value, ValueError)
    with pytest.raises(SearchError, match="at most 10 params cannot be met"):
        find_model(library, TASK, DATA, Constraints(DEVICE, max_params=10), policy,
                   generations=2)
    with pytest.raises(SearchError, match=f"no library entry of {TASK}/{DATA} meets the "
                       "constraints"):
        find_model(library, TASK, DATA, Constraints(DEVICE, max_params=10), policy,
                   extract_new=False)


def test_library_only_answers_without_a_search(library) -> None:
    cons = Constraints(DEVICE, max_params=10 ** 9)
    got = find_model(library, TASK, DATA, cons, Policy.parse("latency"), extract_new=False)
    best = library.query(TASK, DATA, cons, Policy.parse("latency"))[0]
    assert got == {"source": "library", **best.to_dict(), "history": [], "samples": 0}


def test_a_ladder_has_one_history_per_budget(library) -> None:
    lo, hi = _latency_range(library)
    budgets = [float(hi * 1.1), float(lo + 0.5 * (hi - lo)), float(lo / 2)]
    got = find_model(library, TASK, DATA, Constraints(DEVICE), Policy.parse("accuracy"),
                     generations=3, budgets=budgets)
    rows = got["ladder"]
    assert [r["max_latency_ms"] for r in rows] == budgets
    assert rows[0]["source"] in ("library", "extracted")
    assert rows[2]["source"] is None and "cannot be met" in rows[2]["error"]
    assert len(got["history"]) == 3 and all(len(h) == 3 for h in got["history"][:2])
    assert got["history"][2] == [] and got["samples"] > 0
    assert rows[1]["macs"] <= rows[0]["macs"]  # nested: the tighter budget's model is smaller


def test_a_missing_supernet_is_named(library, tmp_path) -> None:
    # no entries left: whatever the search answers must be extracted, from a supernet gone
    with library.db:
        library.db.execute(f'DELETE FROM "{index_table(TASK, DATA)}"')
        library.db.execute("UPDATE indexes SET supernet = ?", (str(tmp_path / "gone.keras"),))
    with pytest.raises(SearchError, match="is not there to extract it from"):
        find_model(library, TASK, DATA, Constraints(DEVICE), Policy.parse("latency > size"),
                   generations=2)


@pytest.mark.parametrize("kwargs, says", [
    ({"verify": True}, "verify=True times each answer against a latency limit"),
    ({"budgets": [1.0, 2.0], "extract_new": False}, "set extract_new=True"),
])
def test_bad_arguments_are_named(library, kwargs, says) -> None:
    with pytest.raises(SearchError, match=says):
        find_model(library, TASK, DATA, Constraints(DEVICE), Policy.parse("size"), **kwargs)


def test_can_verify_only_on_the_device_with_a_limit() -> None:
    assert can_verify(Constraints(DEVICE, max_latency_ms=1.0), device_id=DEVICE)
    assert can_verify(Constraints(DEVICE), [1.0, 2.0], device_id=DEVICE)
    assert not can_verify(Constraints(DEVICE), device_id=DEVICE)
    assert not can_verify(Constraints(DEVICE, max_latency_ms=1.0), device_id="board-b")
    assert not can_verify(Constraints(max_params=100), [1.0], device_id=DEVICE)
