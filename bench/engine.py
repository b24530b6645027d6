"""Engine latency: tether beside LiteRT and ONNX Runtime, one process, one JSON object per line.

    .venv/bin/python bench/engine.py [--models demo_cnn,mobilenet_v2_0.35_96] [--threads 1,2]

Each engine converts the same Keras model with its own converter (tether.converter,
TensorFlow's TFLite converter, tf2onnx) and runs one seeded image after a warm-up; records
carry median/p90/min ms, model and arena bytes, the max abs difference from Keras, the
machine and the git sha. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def main() -> None:
    from tether.bench import bench_model
    from tether.models import BUILTIN_MODELS, load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo_cnn,mobilenet_v2_0.35_96,mobilenet_v2_1.0_224")
    parser.add_argument("--engines", default="tether,litert,onnxruntime")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    for name in args.models.split(","):
        if name not in BUILTIN_MODELS:
            parser.error(f"--models: unknown '{name}'; choose from {sorted(BUILTIN_MODELS)}")
        model = load_model(name)
        for threads in (int(t) for t in args.threads.split(",")):
            records = bench_model(model, name, args.engines.split(","), threads=threads,
                                  runs=args.runs)
            by_engine = {r.engine: r for r in records}
            for r in records:
                row = r.to_json()
                if "tether" in by_engine and r.engine != "tether":
                    row["tether_over_peer"] = by_engine["tether"].median_ms / r.median_ms
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
