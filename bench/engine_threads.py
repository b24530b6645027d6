"""One Engine shared by several Python threads: how many outputs come back right, and what the
sharing costs next to one thread alone. Prints one JSON line per configuration.

    .venv/bin/python bench/engine_threads.py [--callers 2] [--runs 20000] [--threads 1,2]

The model is a small Keras CNN (8x8x1 -> conv 3x3x8 -> GAP -> dense 10, random weights,
seed 0) so that the run is dominated by the binding, where the sharing happens. Nothing here
asserts; tests/device/test_engine_threads.py does.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
from tether.bench import run_metadata


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--callers", type=int, default=2, help="Python threads sharing the Engine")
    ap.add_argument("--runs", type=int, default=20000, help="runs per calling thread")
    ap.add_argument("--threads", default="1,2", help="Engine(threads=...) values, comma-separated")
    args = ap.parse_args()
    import keras
    from tether.converter import convert
    from tether.device import Engine

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    data = convert(model).to_bytes()
    xs = np.random.default_rng(0).uniform(0, 1, (64, 8, 8, 1)).astype(np.float32)
    for threads in (int(t) for t in args.threads.split(",")):
        engine = Engine(data, threads=threads)
        want = [engine.run(x) for x in xs]
        t0 = time.perf_counter()
        for k in np.random.default_rng(99).integers(0, len(xs), args.runs):
            engine.run(xs[k])
        alone_us = (time.perf_counter() - t0) / args.runs * 1e6
        wrong = [0] * args.callers

        def call(c: int) -> None:
            for k in np.random.default_rng(c).integers(0, len(xs), args.runs):
                if not np.array_equal(engine.run(xs[k]), want[k]):
                    wrong[c] += 1

        callers = [threading.Thread(target=call, args=(c,)) for c in range(args.callers)]
        t0 = time.perf_counter()
        for c in callers:
            c.start()
        for c in callers:
            c.join()
        shared_us = (time.perf_counter() - t0) / (args.runs * args.callers) * 1e6
        engine.close()
        total = args.runs * args.callers
        print(json.dumps({"name": "engine_shared_by_threads", "engine_threads": threads,
                          "callers": args.callers, "runs": total,
                          "correct": total - sum(wrong), "us_per_run_alone": round(alone_us, 1),
                          "us_per_run_shared": round(shared_us, 1), **run_metadata()}),
              flush=True)


if __name__ == "__main__":
    main()
