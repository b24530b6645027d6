"""Engine latency: tether beside LiteRT and ONNX Runtime, one process, one JSON object per line.

    .venv/bin/python bench/engine.py [--models demo_cnn,mobilenet_v2_0.35_96] [--threads 1,2]
                                     [--precisions fp32,int8] [--agreement-inputs 200]

Each engine converts the same Keras model with its own converter (tether.converter,
TensorFlow's TFLite converter, tf2onnx) and runs one seeded image after a warm-up; records
carry median/p90/min ms, model and arena bytes, the max abs difference from Keras, the
machine and the git sha. Nothing here asserts on time.

With --memory (default on), each (model, engine, threads) is also run once in a fresh child
process that imports only that engine's runtime and reads the model file (converted here
first): `rss_delta_bytes` = RSS after creating the engine from the bytes and running it 3
times minus RSS just before (weights copies, packed weights, arenas, runtime), and
`peak_rss_bytes` = the child's peak RSS. LiteRT does not expose its arena size, so
its arena_bytes stays null and the RSS delta is the comparable figure. tether's arena_bytes
is its planned activation arena; its packed weights are reported as packed_bytes.

int8 rows (--precisions int8): the model quantized by TensorFlow's full-integer post-training
quantizer (representative data: 32 tether.data digits for the demo CNN, 32 uniform [-1, 1)
images for MobileNetV2), the same .tflite run in LiteRT and converted by tether's TFLite
frontend; tether and LiteRT are timed round-robin (one tether run, one LiteRT run, ...; with
more than one thread, blocks of 10 runs after a 50 ms pause, since an engine's pool workers
spin after a call and would take a core from the other engine's) so machine load hits both
alike, and the LiteRT row carries tether_over_peer (wall-clock
medians) and tether_over_peer_calling_thread_cpu (CPU-time medians of the calling thread:
the whole work with 1 thread, robust to time slicing on a loaded machine). With
--agreement-inputs N, MobileNetV2 1.0 224 with logits outputs (classifier_activation=None)
is quantized the same way and tether, LiteRT's reference kernels (BUILTIN_REF: TFLite's
integers) and LiteRT's default path (XNNPACK, which requantizes in float and so differs from
TFLite's integers by a step here and there) run N seeded uniform [-1, 1) inputs: one JSON line
gives tether's top-1 agreement and max abs difference of the dequantized logits against each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

BLOCK = 10      # int8 rows with more than one thread: calls per engine per turn
PAUSE_S = 0.05  # and the pause before each turn (the other engine's spinning workers park)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _model_bytes(model, engine: str) -> bytes:  # type: ignore[no-untyped-def]
    """The model in `engine`'s format, converted by its own converter."""
    from tether.peers import keras_to_onnx, keras_to_tflite

    if engine == "tether":
        from tether.converter import convert
        return convert(model).to_bytes()
    return keras_to_tflite(model) if engine == "litert" else keras_to_onnx(model)


def _memory_probe(path: str, engine: str, threads: int) -> None:
    """Child process with only `engine`'s runtime imported (no Keras, no TensorFlow, whose
    freed heap would hide new allocations): reads the model file, then prints
    {"rss_delta_bytes", "peak_rss_bytes"}."""
    import gc

    import numpy as np

    with open(path, "rb") as f:
        content = f.read()
    if engine == "tether":
        from tether.device import Engine
    elif engine == "litert":
        from ai_edge_litert.interpreter import Interpreter
    else:
        import onnxruntime as ort
    gc.collect()
    before = _rss_bytes()
    if engine == "tether":
        eng = Engine(content, threads=threads)
        x = np.zeros(eng.inputs[0].shape, np.float32)
        run = eng.run
    elif engine == "litert":
        interp = Interpreter(model_content=content, num_threads=threads)
        interp.allocate_tensors()
        d = interp.get_input_details()[0]
        x = np.zeros(d["shape"], d["dtype"])

        def run(v):  # type: ignore[no-untyped-def]
            interp.set_tensor(d["index"], v)
            interp.invoke()
    else:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(content, opts, providers=["CPUExecutionProvider"])
        i = sess.get_inputs()[0]
        x = np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)

        def run(v):  # type: ignore[no-untyped-def]
            sess.run(None, {i.name: v})
    for _ in range(3):
        run(x)
    after = _rss_bytes()
    with open("/proc/self/status") as status:  # VmHWM: this process image's peak
        # (ru_maxrss keeps the parent's across exec)
        peak = next(int(v.split()[1]) * 1024 for v in status if v.startswith("VmHWM:"))
    print(json.dumps({"rss_delta_bytes": after - before, "peak_rss_bytes": peak}))


def _memory(model, engine: str, threads: int) -> dict:  # type: ignore[no-untyped-def]
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=f".{engine}") as f:
        f.write(_model_bytes(model, engine))
        f.flush()
        out = subprocess.run([sys.executable, __file__, "--memory-probe", f.name, engine,
                              str(threads)], capture_output=True, text=True, timeout=900)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"memory_error": (out.stderr or out.stdout)[-300:]}


def _representative(name: str, shape: tuple, rng):  # type: ignore[no-untyped-def]
    """32 calibration inputs: tether.data digits for 8x8x1 inputs, else uniform [-1, 1)."""
    import numpy as np
    if tuple(shape) == (8, 8, 1):
        from tether.data import digits
        x = digits().x_train[:32].astype(np.float32)
        return x.reshape((-1,) + tuple(shape))
    return rng.uniform(-1, 1, (32,) + tuple(shape)).astype(np.float32)


def _int8_engines(content: bytes, shape: tuple, threads: int):  # type: ignore[no-untyped-def]
    """(tether run, LiteRT run, tether model bytes) for one full-integer .tflite."""
    import numpy as np
    from tether.converter import convert
    from tether.device import Engine
    from tether.peers import litert_runner

    data = convert(content).to_bytes()
    eng = Engine(data, threads=threads)
    return (lambda x: np.asarray(eng.run(x))), litert_runner(content, shape, threads).run, len(data)


def _int8_rows(name: str, model, threads_list: list, runs: int) -> None:  # type: ignore[no-untyped-def]
    """Prints one JSON line per engine and thread count for the int8 model."""
    import time

    import numpy as np
    from tether.bench import git_sha, isa, machine
    from tether.peers import keras_to_tflite

    shape = (1,) + tuple(int(d) for d in model.inputs[0].shape[1:])
    rng = np.random.default_rng(0)
    content = keras_to_tflite(model, _representative(name, shape[1:], rng))
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    from tether.device._binding import isa as engine_isa

    common = {"name": name, "precision": "int8", "shape": list(shape), "cpu_isa": isa(),
              "tether_isa": engine_isa(),
              "device": machine(), "git_sha": git_sha(),
              "quantizer": "tensorflow full-integer PTQ"}
    for threads in threads_list:
        tether_run, litert_run, tether_bytes = _int8_engines(content, shape, threads)
        diff = float(np.abs(tether_run(x).ravel() - litert_run(x).ravel()).max())
        for _ in range(5):
            tether_run(x)
            litert_run(x)
        times: dict = {"tether": [], "litert": []}
        cpu: dict = {"tether": [], "litert": []}
        # Round-robin, so that load on the machine hits both engines alike: one call each in
        # turn with one thread; with more, blocks of BLOCK calls after a pause, because each
        # engine's idle pool workers spin for a while after a call and, on a machine with as
        # many cores as threads, would take a core from the other engine's workers.
        block = 1 if threads == 1 else BLOCK
        for _ in range((runs + block - 1) // block):
            for engine, fn in (("tether", tether_run), ("litert", litert_run)):
                if block > 1:
                    time.sleep(PAUSE_S)
                    fn(x)  # the pool awake again, untimed
                for _ in range(block):
                    c0, t0 = time.thread_time(), time.perf_counter()
                    fn(x)
                    times[engine].append((time.perf_counter() - t0) * 1e3)
                    cpu[engine].append((time.thread_time() - c0) * 1e3)
        med = {e: float(np.median(t)) for e, t in times.items()}
        for engine, t in times.items():
            row = dict(common, engine=engine, threads=threads, median_ms=med[engine],
                       p90_ms=float(np.percentile(t, 90)), min_ms=float(np.min(t)),
                       runs=len(t), model_bytes=tether_bytes if engine == "tether"
                       else len(content), max_abs_diff_vs_litert=diff,
                       # CPU time of the calling thread (all of the work with 1 thread):
                       # what a loaded machine's time slicing does not inflate
                       median_calling_thread_cpu_ms=float(np.median(cpu[engine])))
            if engine == "litert":
                row["tether_over_peer"] = med["tether"] / med["litert"]
                row["tether_over_peer_calling_thread_cpu"] = (
                    float(np.median(cpu["tether"])) / float(np.median(cpu["litert"])))
            print(json.dumps(row), flush=True)


def _int8_agreement(inputs: int) -> None:
    """Top-1 agreement and max abs diff of dequantized logits, int8 MobileNetV2 1.0 224."""
    import keras
    import numpy as np
    from tether.bench import git_sha, machine
    from tether.peers import keras_to_tflite

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(alpha=1.0, input_shape=(224, 224, 3), weights=None,
                                           classifier_activation=None)
    rng = np.random.default_rng(1)
    # Batch-norm statistics from data, so the untrained network's logits vary with the input
    from tether.cloud.batchnorm import recalibrate_batchnorm

    recalibrate_batchnorm(model, rng.uniform(-1, 1, (16, 224, 224, 3)).astype(np.float32))
    content = keras_to_tflite(model, rng.uniform(-1, 1, (32, 224, 224, 3)).astype(np.float32))
    tether_run, litert_run, _ = _int8_engines(content, (1, 224, 224, 3), 1)
    from tether.peers import litert_runner

    reference_run = litert_runner(content, (1, 224, 224, 3), reference=True).run
    agree = {"reference": 0, "litert": 0}
    diff = {"reference": 0.0, "litert": 0.0}
    for _ in range(inputs):
        x = rng.uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
        yt = tether_run(x).ravel()
        for peer, run in (("reference", reference_run), ("litert", litert_run)):
            yp = run(x).ravel()
            agree[peer] += int(np.argmax(yt) == np.argmax(yp))
            diff[peer] = max(diff[peer], float(np.abs(yt - yp).max()))
    print(json.dumps({"name": "mobilenet_v2_1.0_224", "precision": "int8",
                      "check": "tether vs LiteRT on the same full-integer .tflite: its "
                               "reference kernels (TFLite's integers) and its default "
                               "path (XNNPACK, which requantizes in float)",
                      "inputs": inputs, "top1_agree_reference": agree["reference"],
                      "max_abs_diff_dequantized_logits_reference": diff["reference"],
                      "top1_agree": agree["litert"],
                      "max_abs_diff_dequantized_logits": diff["litert"], "device": machine(),
                      "git_sha": git_sha()}), flush=True)


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
    parser.add_argument("--precisions", default="fp32,int8",
                        help="fp32 (every --engines) and/or int8 (tether vs LiteRT)")
    parser.add_argument("--agreement-inputs", type=int, default=200,
                        help="int8 MobileNetV2 1.0 224 top-1 check vs LiteRT (0 = skip)")
    args = parser.parse_args()
    precisions = args.precisions.split(",")
    for p in precisions:
        if p not in ("fp32", "int8"):
            parser.error(f"--precisions: unknown '{p}'; choose from fp32, int8")
    for name in args.models.split(","):
        if name not in BUILTIN_MODELS:
            parser.error(f"--models: unknown '{name}'; choose from {sorted(BUILTIN_MODELS)}")
        model = load_model(name)
        if "int8" in precisions:
            _int8_rows(name, model, [int(t) for t in args.threads.split(",")], args.runs)
        if "fp32" not in precisions:
            continue
        for threads in (int(t) for t in args.threads.split(",")):
            records = bench_model(model, name, args.engines.split(","), threads=threads,
                                  runs=args.runs)
            by_engine = {r.engine: r for r in records}
            memory = {} if args.no_memory else {
                r.engine: _memory(model, r.engine, threads) for r in records
                if r.engine in ("tether", "litert", "onnxruntime")}
            from tether.device._binding import isa as engine_isa

            for r in records:
                row = r.to_json()
                row["precision"] = "fp32"
                row["tether_isa"] = engine_isa()  # TETHER_ISA, else the best the CPU has
                row.update(memory.get(r.engine, {}))
                if "tether" in by_engine and r.engine != "tether":
                    row["tether_over_peer"] = by_engine["tether"].median_ms / r.median_ms
                    t_mem = memory.get("tether", {}).get("rss_delta_bytes")
                    p_mem = memory.get(r.engine, {}).get("rss_delta_bytes")
                    if t_mem and p_mem:
                        row["tether_rss_delta_over_peer"] = t_mem / p_mem
                print(json.dumps(row), flush=True)
    if "int8" in precisions and args.agreement_inputs > 0:
        _int8_agreement(args.agreement_inputs)


if __name__ == "__main__":
    main()
