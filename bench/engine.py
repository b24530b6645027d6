"""Engine latency: tether beside LiteRT and ONNX Runtime, one process, one JSON object per line.

    .venv/bin/python bench/engine.py [--models demo_cnn,mobilenet_v2_0.35_96] [--threads 1,2]

Each engine converts the same Keras model with its own converter (tether.converter,
TensorFlow's TFLite converter, tf2onnx) and runs one seeded image after a warm-up; records
carry median/p90/min ms, model and arena bytes, the max abs difference from Keras, the
machine and the git sha. Nothing here asserts on time.

With --memory (default on), each (model, engine, threads) is also run once in a fresh child
process that converts the model to bytes first and then measures the resident memory the
engine itself adds: `rss_delta_bytes` = RSS after creating the engine from bytes and
running it 3 times minus RSS just before (weights copies, packed weights, arenas, runtime),
and `peak_rss_bytes` = the child's peak RSS (Keras and TensorFlow included, so only
comparable between engines of the same model). LiteRT does not expose its arena size, so
its arena_bytes stays null and the RSS delta is the comparable figure. tether's arena_bytes
is its planned activation arena; its packed weights are reported as packed_bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _memory_probe(name: str, engine: str, threads: int) -> None:
    """Child process: prints {"rss_delta_bytes", "peak_rss_bytes"[, "packed_bytes"]}."""
    import gc

    import numpy as np
    from tether.models import load_model
    from tether.peers import keras_to_onnx, keras_to_tflite

    model = load_model(name)
    shape = (1,) + tuple(int(d) for d in model.inputs[0].shape[1:])
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    if engine == "tether":
        from tether.converter import convert
        content = convert(model).to_bytes()
    elif engine == "litert":
        content = keras_to_tflite(model)
    else:
        content = keras_to_onnx(model)
    gc.collect()
    before = _rss_bytes()
    extra = {}
    if engine == "tether":
        from tether.device import Engine
        eng = Engine(content, threads=threads)
        run = eng.run
    elif engine == "litert":
        from ai_edge_litert.interpreter import Interpreter
        interp = Interpreter(model_content=content, num_threads=threads)
        inp = interp.get_input_details()[0]["index"]
        interp.resize_tensor_input(inp, list(shape), strict=False)
        interp.allocate_tensors()

        def run(v):  # type: ignore[no-untyped-def]
            interp.set_tensor(inp, v)
            interp.invoke()
    else:
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(content, opts, providers=["CPUExecutionProvider"])
        iname = sess.get_inputs()[0].name

        def run(v):  # type: ignore[no-untyped-def]
            sess.run(None, {iname: v})
    for _ in range(3):
        run(x)
    after = _rss_bytes()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"rss_delta_bytes": after - before, "peak_rss_bytes": peak, **extra}))


def _memory(name: str, engine: str, threads: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--memory-probe", name, engine, str(threads)],
                         capture_output=True, text=True, timeout=900)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"memory_error": (out.stderr or out.stdout)[-300:]}


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--memory-probe":
        _memory_probe(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    from tether.bench import bench_model
    from tether.models import BUILTIN_MODELS, load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo_cnn,mobilenet_v2_0.35_96,mobilenet_v2_1.0_224")
    parser.add_argument("--engines", default="tether,litert,onnxruntime")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the per-engine RSS probes (one child process each)")
    args = parser.parse_args()
    for name in args.models.split(","):
        if name not in BUILTIN_MODELS:
            parser.error(f"--models: unknown '{name}'; choose from {sorted(BUILTIN_MODELS)}")
        model = load_model(name)
        for threads in (int(t) for t in args.threads.split(",")):
            records = bench_model(model, name, args.engines.split(","), threads=threads,
                                  runs=args.runs)
            by_engine = {r.engine: r for r in records}
            memory = {} if args.no_memory else {
                r.engine: _memory(name, r.engine, threads) for r in records
                if r.engine in ("tether", "litert", "onnxruntime")}
            for r in records:
                row = r.to_json()
                row.update(memory.get(r.engine, {}))
                if "tether" in by_engine and r.engine != "tether":
                    row["tether_over_peer"] = by_engine["tether"].median_ms / r.median_ms
                    t_mem = memory.get("tether", {}).get("rss_delta_bytes")
                    p_mem = memory.get(r.engine, {}).get("rss_delta_bytes")
                    if t_mem and p_mem:
                        row["tether_rss_delta_over_peer"] = t_mem / p_mem
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
