"""One Engine shared by several Python threads: runs are serialized (every output right),
close() waits for the run in flight and later calls raise, and `threads` is validated."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from tether.device import Engine

from tether.errors import EngineError


def _inputs(engine: Engine, n: int) -> np.ndarray:
    shape = engine.inputs[0].shape[1:]
    return np.random.default_rng(0).uniform(0, 1, (n, *shape)).astype(np.float32)


@pytest.mark.parametrize("pool_threads", [1, 2])
def test_threads_sharing_an_engine_all_get_their_own_outputs(demo_tmodel_bytes,
                                                             pool_threads) -> None:
    engine = Engine(demo_tmodel_bytes, threads=pool_threads)
    xs = _inputs(engine, 16)
    want = [engine.run(x) for x in xs]
    wrong: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        order = np.random.default_rng(seed).integers(0, len(xs), 300)
        try:
            for k in order:
                if not np.array_equal(engine.run(xs[k]), want[k]):
                    wrong.append((seed, int(k)))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.close()
    assert not errors and not wrong, (errors[:1], len(wrong))


def test_close_waits_for_runs_in_flight_then_runs_raise(demo_tmodel_bytes) -> None:
    engine = Engine(demo_tmodel_bytes, threads=2)
    xs = _inputs(engine, 64)  # a stack: one run() call holds the engine for 64 invokes
    outcomes: list[str] = []

    def worker() -> None:
        for _ in range(20):
            try:
                engine.run(xs)
                outcomes.append("ran")
            except EngineError as e:
                assert "closed" in str(e)
                outcomes.append("closed")

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    engine.close()
    for t in threads:
        t.join()
    assert len(outcomes) == 60 and "closed" in outcomes
    with pytest.raises(EngineError, match="closed"):
        engine.run(xs[0])
    engine.close()  # twice is fine


@pytest.mark.parametrize("bad", [0, -1, Engine.MAX_THREADS + 1, 2**33, 2.5, True, "2", None])
def test_threads_must_be_an_int_in_range(demo_tmodel_bytes, bad) -> None:
    with pytest.raises(EngineError, match=rf"threads must be an int in \[1, {Engine.MAX_THREADS}\]"):
        Engine(demo_tmodel_bytes, threads=bad)


def test_the_thread_count_used_is_the_one_reported(demo_tmodel_bytes) -> None:
    engine = Engine(demo_tmodel_bytes, threads=np.int64(3))
    assert engine.threads == 3 and isinstance(engine.threads, int)
    assert "threads=3" in repr(engine)
    engine.close()


def test_the_binding_knows_the_engines_maximum() -> None:
    from pathlib import Path

    header = Path(__file__).resolve().parents[2] / "device/runtime/include/tether/tether.h"
    assert f"#define TETHER_MAX_THREADS {Engine.MAX_THREADS}\n" in header.read_text()
