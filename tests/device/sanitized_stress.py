"""The Python binding's thread stress, run by `make test-py-sanitizers` against the ASan/UBSan
and TSan builds of the engine (TETHER_LIB, with the sanitizer runtime preloaded into Python).

    TETHER_LIB=device/runtime/build-asan/libtether.so LD_PRELOAD=$(gcc -print-file-name=libasan.so) \
        python tests/device/sanitized_stress.py

Needs only numpy and the engine (no TensorFlow): it runs the checked-in probe models. Many
threads share one Engine (1 and 2 pool threads) and must each get the single-threaded output
of their input; others close Engines while runs are in flight, and later runs must raise.
Exits non-zero on a wrong output or an unexpected error; the sanitizer aborts on a race or a
memory error.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np

from tether.device import Engine
from tether.errors import EngineError

MODELS = Path(__file__).resolve().parents[2] / "device" / "runtime" / "tests" / "probe"


def shared(path: Path, pool: int, workers: int = 4, runs: int = 200) -> int:
    engine = Engine(path, threads=pool)
    shape = engine.inputs[0].shape
    xs = np.random.default_rng(0).uniform(0, 1, (8, *shape)).astype(np.float32)
    want = [engine.run(x) for x in xs]
    wrong: list[int] = []
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            for k in np.random.default_rng(seed).integers(0, len(xs), runs):
                if not np.array_equal(engine.run(xs[k]), want[k]):
                    wrong.append(int(k))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.close()
    if errors or wrong:
        print(f"{path.name} pool={pool}: {len(wrong)} wrong outputs, errors {errors[:1]}")
        return 1
    return 0


def close_races(path: Path, rounds: int = 20) -> int:
    bad = 0
    for r in range(rounds):
        engine = Engine(path, threads=1 + r % 2)
        x = np.zeros((16, *engine.inputs[0].shape[1:]), np.float32)
        outcomes: list[str] = []

        def worker() -> None:
            for _ in range(10):
                try:
                    engine.run(x)
                    outcomes.append("ran")
                except EngineError as e:
                    outcomes.append("closed" if "closed" in str(e) else f"error {e}")

        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        engine.close()
        for t in threads:
            t.join()
        if len(outcomes) != 30 or any(o.startswith("error") for o in outcomes):
            print(f"close race {r}: {outcomes[:3]}")
            bad += 1
    return bad


def main() -> int:
    failures = 0
    for name in ("conv3x3.tmodel", "dense.tmodel"):
        for pool in (1, 2):
            failures += shared(MODELS / name, pool)
        failures += close_races(MODELS / name)
    print("sanitized stress:", "ok" if failures == 0 else f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
