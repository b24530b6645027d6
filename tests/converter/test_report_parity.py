"""The conversion report: ops before/after, rewrites, size and parity per source runtime."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from onnx_testlib import rand
from tether.converter import convert

from tether.errors import ConversionError
from tether.peers import keras_to_onnx, keras_to_tflite

L = keras.layers


@pytest.fixture(scope="module")
def cnn() -> keras.Model:
    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 2))
    y = L.Conv2D(4, 3, padding="same", use_bias=False)(x)
    y = L.BatchNormalization()(y)
    y = L.ReLU()(y)
    y = L.GlobalAveragePooling2D()(y)
    return keras.Model(x, L.Dense(3)(y), name="cnn")


def test_parity_against_each_source_runtime(cnn) -> None:
    for src, runtime in ((cnn, "keras"), (keras_to_onnx(cnn), "onnxruntime"),
                         (keras_to_tflite(cnn), "litert")):
        tm = convert(src, samples=rand((3, 1, 8, 8, 2)))
        p = tm.report.parity
        assert p is not None and p.runtime == runtime and p.samples == 3
        assert p.max_rel_error < 1e-4 and p.top1_agreement == 1.0
        text = str(tm.report)
        assert f"parity vs {runtime} on 3 inputs" in text
        assert f"size: {len(tm.to_bytes()):,} bytes" in text
    assert convert(cnn).report.parity is None


def test_report_text_lists_ops_and_rewrites(cnn) -> None:
    tm = convert(cnn, samples=2)
    text = str(tm.report)
    assert "ops before (5): BATCH_NORM 1, CONV_2D 1, FULLY_CONNECTED 1, MEAN 1, RELU 1" in text
    assert "ops after (3): CONV_2D 1, FULLY_CONNECTED 1, MEAN 1" in text
    assert "fold_batch_norm 1" in text and "fuse_activation 1" in text
    assert tm.report.parity is not None and tm.report.parity.samples == 2


def test_parity_samples_must_fit_the_input(cnn) -> None:
    with pytest.raises(ConversionError, match="do not fit the input shape"):
        convert(cnn, samples=np.zeros((2, 5, 5)))


def _softmax_cnn(separate: bool) -> keras.Model:
    keras.utils.set_random_seed(1)
    x = keras.Input((8, 8, 2))
    y = L.Conv2D(4, 3, padding="same", activation="relu")(x)
    y = L.GlobalAveragePooling2D()(y)
    if separate:
        return keras.Model(x, L.Softmax()(L.Dense(3)(y)))
    return keras.Model(x, L.Dense(3, activation="softmax")(y))


@pytest.mark.parametrize("separate", [False, True], ids=["dense_softmax", "softmax_layer"])
def test_a_softmax_model_is_compared_on_its_logits(separate) -> None:
    m = _softmax_cnn(separate)
    for src in (m, keras_to_onnx(m), keras_to_tflite(m)):
        p = convert(src, samples=3).report.parity
        assert p is not None and p.compared == "logits", (src, p)
        assert p.max_rel_error < 1e-4 and "logits (pre-softmax)" in str(p)
    # an int8 model is compared on what it outputs
    q = convert(m, quantize="int8", calibration=rand((8, 1, 8, 8, 2)), samples=2)
    assert q.report.parity.compared == "outputs"


def _double_one_weight(monkeypatch) -> None:
    """Every conversion from here doubles the largest weight of the first convolution after
    the passes (a converter bug, as far as the source can tell)."""
    from tether.converter._internal import passes
    from tether.converter._internal.ir import Tensor
    from tether.converter._internal.ops import OpType

    real = passes.run_passes

    def buggy(graph, pipeline):
        graph, log = real(graph, pipeline)
        node = next(n for n in graph.nodes if n.op in (OpType.CONV_2D, OpType.DEPTHWISE_CONV_2D))
        w = graph.tensors[node.inputs[1]]
        data = np.array(w.data)
        data[np.unravel_index(np.argmax(np.abs(data)), data.shape)] *= 2.0
        return graph.rebuilt(graph.nodes, [Tensor(w.name, w.shape, w.dtype, data)]), log

    monkeypatch.setattr(passes, "run_passes", buggy)


def test_report_detects_a_perturbed_weight_in_the_headline_model(tmp_path, monkeypatch) -> None:
    # The README's model: untrained, yet its outputs depend on its input (batch-norm
    # statistics set from data), so --report's parity figures can fail.
    from typer.testing import CliRunner

    from tether.cli import app

    runner = CliRunner()
    argv = ["convert", "mobilenet_v2_0.35_96", "-o", str(tmp_path / "m.tmodel"), "--report"]
    good = runner.invoke(app, argv, terminal_width=400)
    assert good.exit_code == 0, good.output
    assert "logits (pre-softmax)" in good.output and "warning" not in good.output
    _double_one_weight(monkeypatch)
    bad = runner.invoke(app, argv, terminal_width=400)
    assert bad.exit_code == 0, bad.output
    assert "warning: max rel error" in bad.output, bad.output
