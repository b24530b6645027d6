"""Classic CNNs as the old ONNX exporters (Caffe2, PyTorch 0.4-1.0, the model zoo) wrote them,
at opsets 7, 8 and 9, and tf2onnx exports of Keras application families at opsets 9, 11, 13.

The hand-built networks are small but keep their families' structure: AlexNet (LRN, Dropout
with its unused mask, Gemm transB=1, Softmax with opset < 13 coercion), VGG (3x3 conv stacks),
GoogLeNet (inception modules, Concat, MaxPool k3 s2 with explicit end pads standing in for
ceil_mode, AveragePool k7), ResNet (Conv+BatchNormalization with `spatial`, identity and
projection shortcuts joined by Add / Sum), SqueezeNet (fire modules), ShuffleNet (grouped and
depthwise convs, Reshape-Transpose-Reshape channel shuffle) and a segmentation head (Upsample
with attribute or input scales, Clip and Pad in their attribute forms). Each opset comes in an
IR form of its era: opset 7 in IR 3 with initializers not listed as graph inputs, opset 8 in IR
3 with them listed, opset 9 in IR 4 with them listed (overridable defaults).

Each model is converted with no manual upgrade step, run in the engine and in onnxruntime (graph
optimizations disabled) on three seeded inputs; outputs agree within 1e-4 relative.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, numpy_helper
from onnx import helper as h
from onnx_testlib import engine_run, ort_run, rand, rel_err
from tether.converter import convert
from tether.errors import TetherError

TOL = 1e-4
SEEDS = (101, 102, 103)
# opset -> (IR version, initializers listed as graph inputs), as exporters of the time wrote
FORMS = {7: (3, False), 8: (3, True), 9: (4, True)}


class Net:
    """Nodes and seeded initializers of one old-exporter graph, NCHW throughout."""

    def __init__(self, opset: int, seed: int = 0) -> None:
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, np.ndarray] = {}
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def _name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def const(self, value: np.ndarray, prefix: str = "c") -> str:
        name = self._name(prefix)
        self.inits[name] = value
        return name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs) -> str:
        outs = [self._name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(h.make_node(op_type, inputs, outs, name=outs[0], **attrs))
        return outs[0]

    def conv(self, x: str, cin: int, cout: int, k: int, s: int = 1, p: int | None = None,
             group: int = 1, bias: bool = True) -> str:
        p = k // 2 if p is None else p
        bound = np.sqrt(6.0 / (cin // group * k * k))  # He-uniform: activations keep scale
        w = self.rng.uniform(-bound, bound, (cout, cin // group, k, k)).astype(np.float32)
        ins = [x, self.const(w, "w")]
        if bias:
            ins.append(self.const(self.rng.uniform(-0.1, 0.1, cout).astype(np.float32), "b"))
        return self.op("Conv", ins, kernel_shape=[k, k], strides=[s, s], pads=[p] * 4,
                       group=group)

    def relu(self, x: str) -> str:
        return self.op("Relu", [x])

    def bn(self, x: str, c: int, five_outputs: bool = False) -> str:
        """BatchNormalization, with opset 7/8's `spatial=1` and, if asked, the training-era
        five outputs of which only the first is used."""
        r = self.rng
        ins = [x] + [self.const(v.astype(np.float32), k) for k, v in (
            ("scale", r.uniform(0.5, 1.5, c)), ("shift", r.normal(0, 0.1, c)),
            ("mean", r.normal(0, 0.2, c)), ("var", r.uniform(0.5, 1.5, c)))]
        attrs = {"epsilon": 1e-5, **({"spatial": 1} if self.opset < 9 else {})}
        return self.op("BatchNormalization", ins, 5 if five_outputs else 1, **attrs)

    def lrn(self, x: str, bias: float = 1.0) -> str:
        return self.op("LRN", [x], size=5, alpha=1e-4, beta=0.75, bias=bias)

    def maxpool(self, x: str, k: int, s: int, pads: tuple[int, int, int, int] = (0, 0, 0, 0)
                ) -> str:
        return self.op("MaxPool", [x], kernel_shape=[k, k], strides=[s, s], pads=list(pads))

    def avgpool(self, x: str, k: int, s: int, p: int = 0) -> str:
        return self.op("AveragePool", [x], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)

    def dropout(self, x: str) -> str:
        # opset 7-9: `ratio`, outputs [y, mask] with the mask unused
        return self.op("Dropout", [x], 2, ratio=0.5)

    def gemm(self, x: str, fin: int, fout: int, gain: float = 1.0) -> str:
        bound = gain * np.sqrt(6.0 / fin)
        w = self.rng.uniform(-bound, bound, (fout, fin)).astype(np.float32)
        b = self.rng.uniform(-0.1, 0.1, fout).astype(np.float32)
        return self.op("Gemm", [x, self.const(w, "fc_w"), self.const(b, "fc_b")], alpha=1.0,
                       beta=1.0, transB=1)

    def reshape(self, x: str, shape: list[int]) -> str:
        return self.op("Reshape", [x, self.const(np.asarray(shape, np.int64), "shape")])

    def add(self, a: str, b: str) -> str:
        # opset 8+ exporters (Caffe2's Sum, PyTorch's add) wrote Sum; opset 7 Add
        return self.op("Add" if self.opset < 8 else "Sum", [a, b])

    def model(self, x_shape: tuple[int, ...], y: str) -> onnx.ModelProto:
        ir, listed = FORMS[self.opset]
        inputs = [h.make_tensor_value_info("data", TensorProto.FLOAT, list(x_shape))]
        if listed:
            inputs += [h.make_tensor_value_info(k, numpy_helper.from_array(v).data_type,
                                                list(v.shape)) for k, v in self.inits.items()]
        nodes = [onnx.NodeProto() for _ in self.nodes]
        for dst, src in zip(nodes, self.nodes):
            dst.CopyFrom(src)
            dst.output[:] = ["prob" if o == y else o for o in src.output]
            dst.input[:] = ["prob" if i == y else i for i in src.input]
        g = h.make_graph(nodes, "classic", inputs, [],
                         [numpy_helper.from_array(v, k) for k, v in self.inits.items()])
        m = h.make_model(g, opset_imports=[h.make_opsetid("", self.opset)],
                         producer_name="pytorch", producer_version="0.4")
        m.ir_version = ir
        # the output's shape from onnx's shape inference (run on an IR 4 copy, which accepts
        # initializers that are not graph inputs)
        probe = onnx.ModelProto()
        probe.CopyFrom(m)
        probe.ir_version = 4
        inferred = onnx.shape_inference.infer_shapes(probe)
        (vi,) = [v for v in inferred.graph.value_info if v.name == "prob"]
        m.graph.output.append(vi)
        return m


def alexnet(opset: int) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    n = Net(opset, 1)
    x = n.relu(n.conv("data", 3, 16, 7, s=2, p=2))      # 64 -> 31
    x = n.maxpool(n.lrn(x, bias=2.0), 3, 2)               # -> 15
    x = n.relu(n.conv(x, 16, 24, 5, p=2))
    x = n.maxpool(n.lrn(x, bias=1.0), 3, 2)               # -> 7
    x = n.relu(n.conv(x, 24, 32, 3))
    x = n.relu(n.conv(x, 32, 24, 3))
    x = n.maxpool(x, 3, 2)                                # -> 3
    x = n.reshape(x, [1, 24 * 3 * 3])                     # PyTorch's x.view(x.size(0), -1)
    x = n.dropout(n.relu(n.gemm(n.dropout(x), 24 * 9, 64)))
    x = n.relu(n.gemm(x, 64, 32))
    x = n.op("Softmax", [n.gemm(x, 32, 10, gain=4.0)], axis=1)
    return n.model((1, 3, 64, 64), x), (1, 3, 64, 64)


def vgg(opset: int) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    n = Net(opset, 2)
    x, c = "data", 3
    for width, reps in ((8, 2), (16, 2), (24, 3)):
        for _ in range(reps):
            x, c = n.relu(n.conv(x, c, width, 3, p=1)), width
        x = n.maxpool(x, 2, 2)                            # 32 -> 16 -> 8 -> 4
    x = n.op("Flatten", [x], axis=1)
    x = n.dropout(n.relu(n.gemm(x, 24 * 16, 48)))
    x = n.dropout(n.relu(n.gemm(x, 48, 48)))
    x = n.op("Softmax", [n.gemm(x, 48, 10, gain=4.0)], axis=1)
    return n.model((1, 3, 32, 32), x), (1, 3, 32, 32)


def _inception(n: Net, x: str, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int,
               cp: int) -> tuple[str, int]:
    b1 = n.relu(n.conv(x, cin, c1, 1))
    b3 = n.relu(n.conv(n.relu(n.conv(x, cin, c3r, 1)), c3r, c3, 3))
    b5 = n.relu(n.conv(n.relu(n.conv(x, cin, c5r, 1)), c5r, c5, 5))
    bp = n.relu(n.conv(n.maxpool(x, 3, 1, (1, 1, 1, 1)), cin, cp, 1))
    return n.op("Concat", [b1, b3, b5, bp], axis=1), c1 + c3 + c5 + cp


def googlenet(opset: int) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    n = Net(opset, 3)
    ceil = (0, 0, 1, 1)  # ceil_mode (opset 10+) as the old exporters wrote it: end pads
    x = n.relu(n.conv("data", 3, 16, 7, s=2, p=3))        # 64 -> 32
    x = n.lrn(n.maxpool(x, 3, 2, ceil))                   # -> 16
    x = n.relu(n.conv(n.relu(n.conv(x, 16, 16, 1)), 16, 24, 3))
    x = n.maxpool(n.lrn(x), 3, 2, ceil)                   # -> 8
    x, c = _inception(n, x, 24, 8, 8, 12, 4, 6, 6)
    x, c = _inception(n, x, c, 12, 8, 16, 4, 8, 8)
    x = n.avgpool(x, 7, 1)                                # 8 -> 2, "global-ish"
    x = n.dropout(n.op("Flatten", [x], axis=1))
    x = n.op("Softmax", [n.gemm(x, c * 4, 10, gain=4.0)], axis=1)
    return n.model((1, 3, 64, 64), x), (1, 3, 64, 64)


def resnet(opset: int) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    n = Net(opset, 4)
    five = False  # the five-output form means training: test_five_output_batch_norm_...

    def block(x: str, cin: int, cout: int, s: int) -> str:
        y = n.relu(n.bn(n.conv(x, cin, cout, 3, s=s, bias=False), cout, five))
        y = n.bn(n.conv(y, cout, cout, 3, bias=False), cout, five)
        short = x if s == 1 and cin == cout else n.bn(n.conv(x, cin, cout, 1, s=s, p=0,
                                                              bias=False), cout, five)
        return n.relu(n.add(y, short))

    x = n.relu(n.bn(n.conv("data", 3, 8, 3, bias=False), 8, five))
    x = block(block(x, 8, 8, 1), 8, 8, 1)                 # identity shortcuts
    x = block(x, 8, 16, 2)                                # 1x1 projection, 32 -> 16
    x = block(x, 16, 16, 1)
    x = n.op("Flatten", [n.op("GlobalAveragePool", [x])], axis=1)
    x = n.gemm(x, 16, 10)
    return n.model((1, 3, 32, 32), x), (1, 3, 32, 32)


def squeezenet(opset: int) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    n = Net(opset, 5)

    def fire(x: str, cin: int, sq: int, ex: int) -> tuple[str, int]:
        s = n.relu(n.conv(x, cin, sq, 1))
        e1 = n.relu(n.conv(s, sq, ex, 1))
        e3 = n.relu(n.conv(s, sq, ex, 3, p=1))
        return n.op("Concat", [e1, e3], axis=1), 2 * ex

    x = n.maxpool(n.relu(n.conv("data", 3, 16, 3, s=2, p=0)), 3, 2)  # 64 -> 31 -> 15
    x, c = fire(x, 16, 4, 8)
    x, c = fire(x, c, 4, 8)
    x = n.maxpool(x, 3, 2)                                # -> 7
    x, c = fire(x, c, 8, 16)
    x = n.relu(n.conv(n.dropout(x), c, 10, 1))  # class scores, sharpened for the Softmax
    x = n.op("Mul", [x, n.const(np.asarray(8.0, np.float32), "gain")])
    if opset == 8:  # the model zoo's fixed-size AveragePool instead of GlobalAveragePool
        x = n.avgpool(x, 7, 1)
    else:
        x = n.op("GlobalAveragePool", [x])
    if opset == 9:  # Caffe2's model-zoo form: Softmax on the [1, 10, 1, 1] scores, axis=1
        x = n.op("Softmax", [x], axis=1)  # coerced to [1, 10] before opset 13
    else:
        x = n.op("Softmax", [n.reshape(x, [1, 10])], axis=1)
    return n.model((1, 3, 64, 64), x), (1, 3, 64, 64)


def shufflenet(opset: int) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    n = Net(opset, 6)
    g = 2 if opset == 8 else 4

    def shuffle(x: str, c: int, hw: int) -> str:
        x = n.reshape(x, [1, g, c // g, hw, hw])
        x = n.op("Transpose", [x], perm=[0, 2, 1, 3, 4])
        return n.reshape(x, [1, c, hw, hw])

    def unit(x: str, cin: int, cout: int, s: int, hw: int) -> tuple[str, int]:
        mid = 8 * g // 2 if cout >= 16 else 4 * g // 2
        mid = max(mid - mid % g, g)
        branch = cout - cin if s == 2 else cout
        y = n.relu(n.bn(n.conv(x, cin, mid, 1, p=0, group=g, bias=False), mid))
        y = shuffle(y, mid, hw)
        y = n.bn(n.conv(y, mid, mid, 3, s=s, group=mid, bias=False), mid)  # depthwise
        y = n.bn(n.conv(y, mid, branch, 1, p=0, group=g, bias=False), branch)
        if s == 2:
            return n.relu(n.op("Concat", [n.avgpool(x, 3, 2, 1), y], axis=1)), cout
        return n.relu(n.add(x, y)), cout

    x = n.relu(n.conv("data", 3, 8, 3, s=2, p=1))         # 32 -> 16
    x, c = unit(x, 8, 24, 2, 16)                          # -> 8
    x, c = unit(x, c, 24, 1, 8)
    x, c = unit(x, c, 48, 2, 8)                           # -> 4
    x, c = unit(x, c, 48, 1, 4)
    x = n.op("Flatten", [n.op("GlobalAveragePool", [x])], axis=1)
    x = n.gemm(x, c, 10)
    return n.model((1, 3, 32, 32), x), (1, 3, 32, 32)


def segmentation_head(opset: int) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    n = Net(opset, 7)
    skip = n.relu(n.conv("data", 3, 8, 3))                # 32
    x = n.op("Clip", [n.conv(skip, 8, 16, 3, s=2)], min=0.0, max=6.0)   # ReLU6 -> 16
    x = n.op("Clip", [n.conv(x, 16, 16, 3)], min=-1.0, max=1.5)
    x = n.conv(x, 16, 8, 1, p=0)
    scales = [1.0, 1.0, 2.0, 2.0]
    if opset < 9:  # opset 7-8: scales attribute
        x = n.op("Upsample", [x], mode="nearest", scales=scales)
    else:  # opset 9: scales input
        x = n.op("Upsample", [x, n.const(np.asarray(scales, np.float32), "scales")],
                 mode="nearest")
    x = n.add(x, skip)
    # Pad in its opset 2 attribute form before an unpadded conv
    x = n.op("Pad", [x], mode="constant", pads=[0, 0, 1, 1, 0, 0, 1, 1], value=0.0)
    x = n.conv(x, 8, 4, 3, p=0)
    return n.model((1, 3, 32, 32), x), (1, 3, 32, 32)


FAMILIES: dict[str, Callable[[int], tuple[onnx.ModelProto, tuple[int, ...]]]] = {
    "alexnet": alexnet, "vgg": vgg, "googlenet": googlenet, "resnet": resnet,
    "squeezenet": squeezenet, "shufflenet": shufflenet, "segmentation": segmentation_head,
}


@pytest.mark.parametrize("opset", sorted(FORMS))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_classic_cnn_matches_onnxruntime(family, opset) -> None:
    m, x_shape = FAMILIES[family](opset)
    assert not any(n.op_type == "Dropout" and len(n.output) != 2 for n in m.graph.node)
    tm = convert(m)  # no manual upgrade step
    assert any(f"opset {opset} -> 13 upgraded" in c for c in tm.report.source_changes), \
        tm.report.source_changes
    assert "BATCH_NORM" not in tm.report.ops_after, tm.report.ops_after
    data = tm.to_bytes()
    for seed in SEEDS:
        x = rand(x_shape, seed, 0.0, 1.0)
        ref = ort_run(m, x)
        y = engine_run(data, x)
        assert y.shape == ref.shape and y.dtype == np.float32, (y.shape, y.dtype, ref.shape)
        err = rel_err(y, ref)
        assert err < TOL, (f"{family} opset {opset} seed {seed}: output '{m.graph.output[0].name}'"
                           f" max rel err {err:.3g}, max abs {np.abs(y - ref).max():.3g}")


def test_ir3_unlisted_initializers_are_read_as_inputs() -> None:
    m, _ = alexnet(7)
    assert m.ir_version == 3 and len(m.graph.input) == 1 and m.graph.initializer
    tm = convert(m)
    assert any("not listed as graph inputs" in c for c in tm.report.source_changes)
    assert [t.name for t in tm.report.inputs] == ["data"]


def test_ir4_listed_initializers_stay_constants() -> None:
    m, _ = resnet(9)
    assert m.ir_version == 4 and len(m.graph.input) == 1 + len(m.graph.initializer)
    tm = convert(m)
    assert [t.name for t in tm.report.inputs] == ["data"]


def test_cli_report_names_the_opset_upgrade(tmp_path) -> None:
    from typer.testing import CliRunner

    from tether.cli import app

    m, x_shape = squeezenet(7)
    src = tmp_path / "squeezenet_opset7.onnx"
    src.write_bytes(m.SerializeToString())
    out = tmp_path / "squeezenet.tmodel"
    r = CliRunner().invoke(app, ["convert", str(src), "-o", str(out), "--report"])
    assert r.exit_code == 0, r.output
    assert "onnx opset 7 -> 13 upgraded" in r.output, r.output
    x = rand(x_shape, 9, 0.0, 1.0)
    assert rel_err(engine_run(out.read_bytes(), x), ort_run(m, x)) < TOL


@pytest.mark.parametrize("opset", sorted(FORMS))
def test_five_output_batch_norm_is_refused_as_training_mode(opset) -> None:
    # opsets 7-13: five outputs mean training mode, where onnxruntime normalizes with the
    # batch's statistics (the spec's "Output case #1"); reading the running ones instead would
    # silently disagree (relative error ~0.7 here), so the node is refused by name
    n = Net(opset, 8)
    y = n.bn(n.conv("data", 3, 4, 3), 4, five_outputs=True)
    with pytest.raises(TetherError, match=r"BatchNormalization\): 5 outputs mean training"):
        convert(n.model((1, 3, 8, 8), y))


# ------------------------------------------------ tf2onnx exports of Keras application families

KERAS_FAMILIES = {
    "MobileNetV2": lambda A: A.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None,
                                           classifier_activation=None),
    "MobileNet": lambda A: A.MobileNet(input_shape=(96, 96, 3), alpha=0.25, weights=None,
                                       classifier_activation=None),
    "EfficientNetB0": lambda A: A.EfficientNetB0(input_shape=(96, 96, 3), weights=None,
                                                 classifier_activation=None),
}
RANGES = {"EfficientNetB0": (0.0, 255.0)}  # it rescales its input itself
TF2ONNX_OPSETS = (9, 11, 13)


@pytest.fixture(scope="module")
def keras_exports() -> dict[tuple[str, int], tuple[bytes, np.ndarray]]:
    """Each family's tf2onnx export at each opset (made once per module) and two inputs."""
    keras = pytest.importorskip("keras")
    pytest.importorskip("tf2onnx")
    from tether.cloud.batchnorm import recalibrate_batchnorm

    from tether.peers import keras_to_onnx

    out = {}
    for family, build in KERAS_FAMILIES.items():
        keras.utils.set_random_seed(0)
        model = build(keras.applications)
        # random BN scales and shifts, statistics from data: folding them is tested and the
        # logits depend on the input
        rng = np.random.default_rng(1)
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                c = layer.moving_mean.shape[0]
                layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype("float32"))
                layer.beta.assign(rng.normal(0, 0.1, c).astype("float32"))
        lo, hi = RANGES.get(family, (-1.0, 1.0))
        recalibrate_batchnorm(model, rng.uniform(lo, hi, (8, 96, 96, 3)).astype(np.float32))
        xs = np.random.default_rng(2).uniform(lo, hi, (2, 1, 96, 96, 3)).astype(np.float32)
        for opset in TF2ONNX_OPSETS:
            out[family, opset] = keras_to_onnx(model, opset=opset), xs
    return out


@pytest.mark.slow
@pytest.mark.parametrize("opset", TF2ONNX_OPSETS)
@pytest.mark.parametrize("family", sorted(KERAS_FAMILIES))
def test_tf2onnx_keras_family_matches_onnxruntime(keras_exports, family, opset) -> None:
    data, xs = keras_exports[family, opset]
    m = onnx.load_from_string(data)
    assert max(i.version for i in m.opset_import if i.domain in ("", "ai.onnx")) == opset
    tm = convert(data)
    assert (opset < 13) == any("upgraded" in c for c in tm.report.source_changes)
    assert "BATCH_NORM" not in tm.report.ops_after, tm.report.ops_after
    engine = tm.to_bytes()
    refs = [ort_run(data, x) for x in xs]
    assert rel_err(refs[0], refs[1]) > 1e-2  # the logits depend on the input
    for x, ref in zip(xs, refs):
        y = engine_run(engine, x)
        assert y.shape == ref.shape and y.dtype == np.float32, (y.shape, ref.shape)
        err = rel_err(y, ref)
        assert err < TOL, (f"{family} opset {opset}: max rel err {err:.3g}, "
                           f"max abs {np.abs(y - ref).max():.3g}")
