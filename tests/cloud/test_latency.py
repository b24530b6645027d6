"""Latency model: the probe bundle covers every piece a subnet can hold, tether-probe times
it, and the summed pieces predict subnets measured end to end."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.cloud.latency import (LatencyError, LatencyModel, configurations, op_keys,
                                  piece_keys, probe_space, write_probe_bundle)
from tether.cloud.space import SearchSpace
from tether.device.profile import LatencyTable, device_info, probe
from tether.errors import EngineError

TINY = SearchSpace.load(Path(__file__).with_name("tiny_space.toml"))


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), which=st.sampled_from(["default", "seed", "tiny"]))
def test_the_configurations_cover_every_subnet(seed, which) -> None:
    space = {"default": SearchSpace.default(), "seed": SearchSpace.seed(), "tiny": TINY}[which]
    keys = configurations(space)
    arch = space.sample(random.Random(seed))
    assert set(piece_keys(arch, space)) <= set(keys)
    assert set(op_keys(arch, space)) <= set(keys)
    assert len(piece_keys(arch, space)) == 3 + sum(arch.depths)


def test_device_info_is_stable() -> None:
    a, b = device_info(), device_info()
    assert a["device_id"] == b["device_id"] and a["cores"] >= 1
    assert a["isa"] in ("scalar", "avx2", "avx512", "neon") and a["engine_version"] != "unknown"
    assert set(a) >= {"arch", "cpu", "simd", "memory_bytes", "engine_version", "device_id"}


def test_probe_the_tiny_space_and_predict(tmp_path) -> None:
    manifest = write_probe_bundle(TINY, tmp_path / "bundle")
    table = probe(manifest, warmup=2, runs=5)
    assert set(table.median_ms) == set(configurations(TINY))
    assert all(v > 0 for v in table.median_ms.values())
    table.save(tmp_path / "table.json")
    back = LatencyTable.load(tmp_path / "table.json")
    assert back == table and back.device_id == device_info()["device_id"]
    model = LatencyModel(TINY, back)
    rng = random.Random(0)
    for arch in [TINY.largest(), TINY.smallest()] + [TINY.sample(rng) for _ in range(5)]:
        assert model.predict(arch) > 0 and model.naive(arch) > 0
    del back.median_ms[piece_keys(TINY.largest(), TINY)[1]]
    with pytest.raises(LatencyError, match="has no entry 'block:"):
        LatencyModel(TINY, back).predict(TINY.largest())


def test_probe_errors_name_the_line(tmp_path) -> None:
    (tmp_path / "m.txt").write_text("only-a-key\n")
    with pytest.raises(EngineError, match=r"m.txt:1: expected"):
        probe(tmp_path / "m.txt")
    other = LatencyTable({"device_id": "other"}, 1, 1, 1)
    with pytest.raises(EngineError, match="do not merge"):
        LatencyTable(device_info(), 1, 1, 1).merge(other)


def test_the_guard_band_covers_new_subnets(tmp_path) -> None:
    # A synthetic device: pieces cost what their keys say, subnets cost 1.3x their sum plus
    # 5 us, with 4% log-normal noise the table cannot know about
    space = SearchSpace.default()
    rng = np.random.default_rng(0)
    ms = {k: float(1e-3 * (1 + len(k)) * rng.uniform(0.5, 1.5)) for k in configurations(space)}
    table = LatencyTable({"device_id": "synthetic"}, 1, 1, 1, ms, ms, ms)
    model = LatencyModel(space, table)
    r = random.Random(0)
    archs = [space.sample(r) for _ in range(520)]
    truth = np.array([1.3 * model.pieces_sum(a) + 0.005 for a in archs])
    measured = truth * np.exp(rng.normal(0.0, 0.04, len(archs)))
    model.fit(archs[:20], measured[:20])
    assert model.scale == pytest.approx(1.3, rel=0.1) and 0.03 < model.margin < 0.2
    bound = np.array([model.bound(a) for a in archs[20:]])
    assert np.mean(measured[20:] <= bound) >= 0.9  # 95% nominal, from 20 subnets
    assert np.mean(measured[20:] <= [model.predict(a) for a in archs[20:]]) < 0.7
    table.save(tmp_path / "t.json")  # the band travels with the table
    assert LatencyModel(space, LatencyTable.load(tmp_path / "t.json")).margin == model.margin
    exact = LatencyModel(space, table).fit(archs[:20], truth[:20])
    assert exact.margin == pytest.approx(0.0, abs=1e-9)
    assert LatencyModel(space, table).fit(archs[:3], measured[:3]).margin == 0.0  # too few


@pytest.mark.slow
def test_summed_pieces_predict_measured_subnets(tmp_path) -> None:
    import keras

    from tether.cloud.supernet import Supernet

    space = SearchSpace.default()
    keras.utils.set_random_seed(0)
    net = Supernet(space)
    rng = random.Random(3)
    archs = [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(14)]
    # pieces and subnets in one run of ten interleaved slices each: a shared machine runs
    # whole seconds 1.7x slower now and then, and a model measured only then would be 70% off
    table, measured = probe_space(space, tmp_path / "bundle", net, archs, naive=False,
                                  warmup=10, runs=100, rounds=10)
    assert set(measured) == {a.key() for a in archs}
    assert not any(k.startswith("subnet") for k in table.median_ms)
    y = np.array([measured[a.key()] for a in archs])
    model = LatencyModel(space, table).fit(archs[::2], y[::2])
    held = np.array([model.predict(a) for a in archs[1::2]])
    err = np.abs(held / y[1::2] - 1)
    assert np.median(err) < 0.15, np.round(err, 3)
    # a larger subnet is predicted slower
    assert model.predict(space.largest()) > model.predict(space.smallest())
