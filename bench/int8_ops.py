"""int8 op coverage: integer parity and latency beside LiteRT, PTQ agreement; JSON per line.

    .venv/bin/python bench/int8_ops.py [--runs 100] [--inputs 30] [--ptq-inputs 200]

Rows:
- "mnv3_small_96_int8": keras.applications.MobileNetV3Small (96x96, weights=None) quantized by
  TensorFlow's full-integer converter (int8 inputs/outputs, 16 uniform [-1, 1) calibration
  images); the same .tflite run by LiteRT and by tether (TFLite frontend -> engine). Counts
  of seeded int8 inputs whose outputs are bit-identical to LiteRT's reference kernels and to
  its default (XNNPACK) path, then median/p90 latency of 1 thread, the two engines timed
  round-robin in this process (machine load hits both alike).
- "ptq_mixed_block": tests/converter/test_int8.py's block (conv + hard-swish, depthwise,
  sigmoid SE, tanh branch, concat, zero padding, max/average pools, dense) quantized by
  tether's own calibration (32 uniform images) and, for comparison, by TensorFlow's
  converter run in LiteRT; top-1 agreement of each with the float Keras model.
Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from tether.bench import run_metadata  # noqa: E402


def _meta() -> dict:
    return run_metadata(load_avg_1m=os.getloadavg()[0])


def mnv3(runs: int, inputs: int) -> dict:
    import keras
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    from tether.converter import convert
    from tether.device import Engine

    sys.path.insert(0, os.path.join(ROOT, "tests", "converter"))
    from test_int8_ops import int8_tflite

    keras.utils.set_random_seed(0)
    m = keras.applications.MobileNetV3Small(input_shape=(96, 96, 3), weights=None,
                                            include_preprocessing=False,
                                            classifier_activation=None)
    rng = np.random.default_rng(0)
    # Batch-norm statistics from data, so the untrained network's outputs vary with the input
    from tether.cloud.batchnorm import recalibrate_batchnorm

    recalibrate_batchnorm(m, rng.uniform(-1, 1, (16, 96, 96, 3)).astype(np.float32))
    content = int8_tflite(m, rng.uniform(-1, 1, (16, 96, 96, 3)).astype(np.float32))
    engine = Engine(convert(content).to_bytes())
    interpreters = {}
    for kind, resolver in (("reference", OpResolverType.BUILTIN_REF),
                           ("default", OpResolverType.AUTO)):
        it = Interpreter(model_content=content, experimental_op_resolver_type=resolver,
                         num_threads=1)
        it.allocate_tensors()
        interpreters[kind] = it

    def lite(kind: str, x: np.ndarray) -> np.ndarray:
        it = interpreters[kind]
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        return it.get_tensor(it.get_output_details()[0]["index"])

    exact = {"reference": 0, "default": 0}
    for _ in range(inputs):
        x = rng.integers(-128, 128, (1, 96, 96, 3)).astype(np.int8)
        y = np.asarray(engine.run(x))
        for kind in exact:
            exact[kind] += int(np.array_equal(y, lite(kind, x)))
    x = rng.integers(-128, 128, (1, 96, 96, 3)).astype(np.int8)
    for _ in range(5):
        engine.run(x)
        lite("default", x)
    t_tether, t_lite = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        engine.run(x)
        t_tether.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        lite("default", x)
        t_lite.append((time.perf_counter() - t0) * 1e3)
    return {"name": "mnv3_small_96_int8", "shape": [1, 96, 96, 3], "threads": 1,
            "inputs": inputs, "bit_exact_vs_litert_reference": exact["reference"],
            "bit_exact_vs_litert_default": exact["default"],
            "tether_median_ms": float(np.median(t_tether)),
            "tether_p90_ms": float(np.percentile(t_tether, 90)),
            "litert_median_ms": float(np.median(t_lite)),
            "litert_p90_ms": float(np.percentile(t_lite, 90)),
            "tether_over_peer": float(np.median(t_tether) / np.median(t_lite))}


def ptq(inputs: int) -> dict:
    import numpy as np
    from tether.converter import convert
    from tether.device import Engine

    from tether.peers import keras_to_tflite

    sys.path.insert(0, os.path.join(ROOT, "tests", "converter"))
    from onnx_testlib import litert_run, rand
    from test_int8 import _mixed_block

    m = _mixed_block()
    cal = rand((32, 1, 12, 12, 3), 1)
    tm = convert(m, quantize="int8", calibration=cal)
    engine = Engine(tm.to_bytes())
    tflite = keras_to_tflite(m, cal[:, 0])
    agree_tether = agree_tf = 0
    for x in rand((inputs, 1, 12, 12, 3), 2):
        ref = int(np.argmax(np.asarray(m(x))))
        agree_tether += int(int(np.argmax(engine.run(x))) == ref)
        agree_tf += int(int(np.argmax(litert_run(tflite, x))) == ref)
    return {"name": "ptq_mixed_block", "shape": [1, 12, 12, 3], "inputs": inputs,
            "ops": dict(tm.report.ops_after), "tether_ptq_top1_agreement": agree_tether,
            "tensorflow_ptq_litert_top1_agreement": agree_tf}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--inputs", type=int, default=30)
    p.add_argument("--ptq-inputs", type=int, default=200)
    a = p.parse_args()
    for row in (mnv3(a.runs, a.inputs), ptq(a.ptq_inputs)):
        print(json.dumps({**row, **_meta()}), flush=True)


if __name__ == "__main__":
    main()
