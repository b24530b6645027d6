"""Quantization: weight-only int8/int4, post-training static int8 calibration, and the
`QuantizationPlan` the converter lowers into an int8 `.tmodel`.

Integer conventions follow the converter's int8 spec (FORMAT.md, "Integer (int8)
execution", which is TFLite's): weights symmetric per output channel, zero point 0, q in
[-127, 127] (int4: [-7, 7]); activations asymmetric per tensor, real = s·(q − z), q in
[-128, 127], with the range widened to include 0 so that 0 is exact.

int4 packing (`pack_int4`): values in the kernel's C order (Keras layout, output channel
last), two per byte, the first value in the low nibble, each as 4-bit two's complement; an
odd count pads the last high nibble with 0.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tether._internal.int8 import PRE_ACTIVATION_SUFFIX, activation_qparams
from tether.compression._errors import CompressionError
from tether.compression._graph import Graph, Node, parse, rebuild

__all__ = [
    "CALIBRATION_METHODS",
    "PRE_ACTIVATION",
    "CalibrationConfig",
    "QuantizationPlan",
    "WeightQuantConfig",
    "WeightQuantReport",
    "activation_qparams",
    "calibrate",
    "fold_batchnorm",
    "pack_int4",
    "quantize_weights",
    "simulate_int8",
    "split_activation",
    "unpack_int4",
]

logger = logging.getLogger(__name__)

CALIBRATION_METHODS = ("minmax", "percentile", "entropy", "mse")
_WEIGHTED = ("Conv1D", "Conv2D", "Conv3D", "Dense", "DepthwiseConv2D")
_FUSABLE_ACT = ("ReLU",)
# layers whose int8 output keeps its input's scale and zero point (the converter lowers them
# to MAX_POOL_2D, RESHAPE, PAD or drops them), so no fake-quant follows them
_PASSTHROUGH = ("MaxPooling2D", "GlobalMaxPooling2D", "Flatten", "Reshape", "ZeroPadding2D",
                "Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise",
                "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity")


# ---------------------------------------------------------------------------- weights


def _channel_axis(cls: str, w: np.ndarray) -> int:
    return w.ndim - 1 if cls != "DepthwiseConv2D" else 2


def _per_channel_scale(w: np.ndarray, axis: int, qmax: int) -> np.ndarray:
    red = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w).max(axis=red) if red else np.abs(w)
    amax = np.where(amax > 0, amax, 1.0)
    return (amax / qmax).astype(np.float32)


def quantize_array(w: np.ndarray, bits: int, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric quantization: (q int8, scale) with q = clip(round(w / s), -qmax, qmax),
    qmax = 2^(bits-1) - 1, s = max|w| / qmax per channel along `axis` (None: per tensor).

    >>> q, s = quantize_array(np.array([[0.5, -1.0], [0.25, 0.5]]), 8, 1)
    >>> q.tolist(), [round(float(v), 6) for v in s]
    ([[127, -127], [64, 64]], [0.003937, 0.007874])
    """
    qmax = 2 ** (bits - 1) - 1
    if axis is None:
        amax = float(np.abs(w).max()) or 1.0
        scale = np.array(amax / qmax, dtype=np.float32)
        q = np.clip(np.round(w / scale), -qmax, qmax).astype(np.int8)
        return q, scale
    scale = _per_channel_scale(w, axis, qmax)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -qmax, qmax).astype(np.int8)
    return q, scale


def pack_int4(q: np.ndarray) -> bytes:
    """Packs int4 values (in [-8, 7]) two per byte, first value in the low nibble.

    >>> pack_int4(np.array([1, -1, 7], np.int8)).hex()
    'f107'
    """
    flat = q.astype(np.int8).reshape(-1)
    if flat.size and (flat.min() < -8 or flat.max() > 7):
        raise CompressionError(f"pack_int4: values must be in [-8, 7]. Received: "
                               f"min={flat.min()}, max={flat.max()}")
    nib = (flat.astype(np.int16) & 0xF).astype(np.uint8)
    if nib.size % 2:
        nib = np.append(nib, np.uint8(0))
    return (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8).tobytes()


def unpack_int4(data: bytes, count: int) -> np.ndarray:
    """Inverse of `pack_int4`: the first `count` int4 values as int8.

    >>> unpack_int4(bytes.fromhex('f107'), 3).tolist()
    [1, -1, 7]
    """
    b = np.frombuffer(data, dtype=np.uint8)
    nib = np.empty(b.size * 2, dtype=np.int16)
    nib[0::2], nib[1::2] = b & 0xF, b >> 4
    nib = np.where(nib > 7, nib - 16, nib)
    return nib[:count].astype(np.int8)


@dataclass(frozen=True)
class WeightQuantConfig:
    """Weight-only quantization.

    Attributes:
        bits: 8 or 4 (default 8).
        per_channel: Per-output-channel scales (default True); False: one per tensor.
        layers: Layer names to quantize (default: every Conv/Dense/Depthwise kernel).
    """

    bits: int = 8
    per_channel: bool = True
    layers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise CompressionError(f"WeightQuantConfig.bits must be 4 or 8. Received: bits={self.bits}")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))


@dataclass(frozen=True)
class WeightQuantReport:
    """Per layer: (float bytes, quantized bytes incl. float32 scales, max |error| relative
    to max |w|). Totals over the quantized kernels."""

    bits: int
    layers: dict[str, tuple[int, int, float]] = field(default_factory=dict)

    @property
    def float_bytes(self) -> int:
        return sum(v[0] for v in self.layers.values())

    @property
    def quantized_bytes(self) -> int:
        return sum(v[1] for v in self.layers.values())

    @property
    def max_rel_error(self) -> float:
        return max((v[2] for v in self.layers.values()), default=0.0)


def _select(model: Any, names: Sequence[str] | None) -> list[Any]:
    layers = [l for l in model.layers if type(l).__name__ in _WEIGHTED]
    if names is None:
        return layers
    known = {l.name: l for l in model.layers}
    for n in names:
        if n not in known:
            raise CompressionError(f"model '{model.name}' has no layer '{n}'; layers with "
                                   f"kernels: {[l.name for l in layers]}")
        if type(known[n]).__name__ not in _WEIGHTED:
            raise CompressionError(f"layer '{n}' ({type(known[n]).__name__}) has no kernel "
                                   "to quantize; name a Conv, Dense or DepthwiseConv2D layer")
    return [known[n] for n in names]


def quantize_weights(model: Any, config: WeightQuantConfig = WeightQuantConfig()
                     ) -> tuple[Any, WeightQuantReport]:
    """Weight-only quantization: a copy of `model` whose kernels are quantize-dequantized
    (the float model computes what the int8/int4 weights compute), and a size/error report.

    Biases and other weights stay float32 (their bytes are not counted in the report).
    """
    import keras
    from tether.compression._graph import as_functional

    fm = as_functional(model)
    clone = keras.models.clone_model(fm)
    clone.set_weights(fm.get_weights())
    rows = {}
    for layer in _select(clone, config.layers):
        var = layer.kernel
        w = np.asarray(var)
        cls = type(layer).__name__
        axis = _channel_axis(cls, w) if config.per_channel else None
        q, scale = quantize_array(w, config.bits, axis)
        shape = [1] * w.ndim
        if axis is not None:
            shape[axis] = -1
        deq = (q.astype(np.float32) * scale.reshape(shape)).astype(np.float32)
        var.assign(deq)
        qbytes = (w.size if config.bits == 8 else (w.size + 1) // 2) + 4 * scale.size
        err = float(np.abs(deq - w).max() / max(float(np.abs(w).max()), 1e-12))
        rows[layer.name] = (4 * int(w.size), int(qbytes), err)
    return clone, WeightQuantReport(config.bits, rows)


# ---------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class CalibrationConfig:
    """Post-training static calibration.

    Attributes:
        method: "minmax" (default), "percentile", "entropy" (KL divergence over a
            histogram of |x|, TensorRT's search over thresholds from 128 bins up; exact
            zeros are left out of the histogram since int8 represents 0 exactly, and other
            spikes are flattened (`_flatten_spikes`): either drives KL to clip the tail) or
            "mse" (the clipping threshold t whose range (max(min, -t), min(max, t)) gives
            the least int8 quantization MSE over a histogram of x, from 128 bins up;
            `_mse_range`).
        percentile: For "percentile": keep this percentage of values, in (50, 100]
            (default 99.99); the lower bound uses 100 - percentile.
        num_bins: Histogram bins for percentile/entropy/mse (default 2048, >= 256).
        batch_size: Calibration batch size (default 32).
        bias_correction: Empirical bias correction (Nagel et al. 2019, "Data-Free
            Quantization", sec. 4.2): for every Conv/Dense/Depthwise layer, the expected
            output error of its int8 weights, E[W_q x] - E[W x] per output channel over the
            calibration samples (x: the float model's input to that layer, BN folded as the
            converter folds it), is stored in the plan (`bias_corrections`) and subtracted
            from the layer's bias before the converter quantizes it to int32. Default False.
    """

    method: str = "minmax"
    percentile: float = 99.99
    num_bins: int = 2048
    batch_size: int = 32
    bias_correction: bool = False

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise CompressionError(
                f"CalibrationConfig.method must be one of {CALIBRATION_METHODS}. "
                f"Received: method={self.method!r}")
        if not 50.0 < self.percentile <= 100.0:
            raise CompressionError(
                "CalibrationConfig.percentile must be in (50, 100]. "
                f"Received: percentile={self.percentile}")
        if self.num_bins < 256:
            raise CompressionError(
                f"CalibrationConfig.num_bins must be >= 256. Received: num_bins={self.num_bins}")
        if self.batch_size < 1:
            raise CompressionError(
                f"CalibrationConfig.batch_size must be >= 1. Received: batch_size={self.batch_size}")
        if not isinstance(self.bias_correction, bool):
            raise CompressionError(
                "CalibrationConfig.bias_correction must be True or False. Received: "
                f"bias_correction={self.bias_correction!r}")


@dataclass(frozen=True)
class QuantizationPlan:
    """What the converter needs to lower a float Keras model to int8.

    Attributes:
        activation_ranges: Keras layer name -> (min, max) of that layer's output (model
            inputs by their InputLayer name; `<layer>:pre_activation` for the tensor
            before a Conv/Dense layer's softmax/sigmoid/tanh; softmax and sigmoid outputs
            are fixed to (0, 1) and tanh to (-1, 1) as the int8 spec fixes them). After BN folding and activation fusion the
            converter takes the range of the *last* Keras layer of each fused chain.
        weight_scales: Layer name -> per-output-channel symmetric int8 scales of the
            kernel *after* folding a following BatchNormalization (as `fold_batchnorm`
            computes); informative, the converter may recompute them from the weights.
        method: How the ranges were obtained ("minmax", "percentile", "entropy", "mse",
            "qat").
        bias_corrections: Conv/Dense/Depthwise layer name -> the expected output error of
            its int8 weights per output channel, E[W_q x] - E[W x] (BN folded; see
            `CalibrationConfig.bias_correction`). The converter subtracts it from the
            layer's float bias before quantizing the bias to int32, and `simulate_int8`
            does the same. Empty (default): no correction.
    """

    activation_ranges: dict[str, tuple[float, float]]
    weight_scales: dict[str, np.ndarray] = field(default_factory=dict)
    method: str = "minmax"
    bias_corrections: dict[str, np.ndarray] = field(default_factory=dict)

    def qparams(self, name: str) -> tuple[float, int]:
        """(scale, zero_point) of layer `name`'s output, int8 asymmetric."""
        if name not in self.activation_ranges:
            raise CompressionError(f"QuantizationPlan has no range for layer '{name}'")
        lo, hi = self.activation_ranges[name]
        return activation_qparams(lo, hi)

    def to_json(self) -> str:
        return json.dumps({
            "method": self.method,
            "activation_ranges": {k: [float(a), float(b)] for k, (a, b) in
                                  self.activation_ranges.items()},
            "weight_scales": {k: np.asarray(v).astype(float).tolist()
                              for k, v in self.weight_scales.items()},
            "bias_corrections": {k: np.asarray(v).astype(float).tolist()
                                 for k, v in self.bias_corrections.items()},
        })

    @classmethod
    def from_json(cls, text: str) -> QuantizationPlan:
        d = json.loads(text)
        return cls({k: (float(v[0]), float(v[1])) for k, v in d["activation_ranges"].items()},
                   {k: np.asarray(v, np.float32) for k, v in d["weight_scales"].items()},
                   d.get("method", "minmax"),
                   {k: np.asarray(v, np.float32)
                    for k, v in d.get("bias_corrections", {}).items()})


def _flatten_spikes(hist: np.ndarray, window: int = 33, factor: float = 2.0) -> np.ndarray:
    """Caps each bin at max(factor x the median, the mean) of the `window` bins around it.

    A spike (one bin far above its neighbours) is a value repeated exactly: a channel's
    constant response to a flat background, a clipped ReLU6 at 6. int8 keeps such a value
    to within half a step whatever the threshold, but KL reads the spike spread over its
    quantization bucket as information lost and so prefers thresholds that give it a bucket
    of its own, clipping the real tail (TensorRT's calibrator flattens the one spike it
    expects, bin 0, the same way). Smooth histograms pass unchanged.

    >>> _flatten_spikes(np.r_[np.full(20, 4), 100, np.full(20, 4)])[18:23].tolist()
    [4.0, 4.0, 8.0, 4.0, 4.0]
    """
    h = hist.astype(np.float64)
    pad = window // 2
    win = np.lib.stride_tricks.sliding_window_view(np.pad(h, pad, mode="edge"), window)
    cap = np.maximum(factor * np.median(win, axis=1), win.mean(axis=1))
    return np.minimum(h, cap)


def _entropy_threshold(hist: np.ndarray, bin_width: float, levels: int,
                       start: int = 128) -> float:
    """TensorRT's KL calibration over a histogram of |x| (of x when x >= 0): the threshold
    (i + 0.5)·bin_width whose clipped reference P (the first i bins, outliers folded into
    the last) is nearest in KL divergence to Q (the same bins merged into `levels` buckets,
    each bucket's count spread evenly over its non-empty bins), for i in [start, bins];
    ties go to the larger threshold. Spikes are flattened first (`_flatten_spikes`).

    >>> rng = np.random.default_rng(0)
    >>> h, _ = np.histogram(np.abs(rng.normal(size=100_000)), 2048, (0.0, 20.0))
    >>> 3.0 < _entropy_threshold(h, 20.0 / 2048, 128) < 6.0
    True
    """
    n = hist.size
    hist = _flatten_spikes(hist)
    best_i, best_kl = n, math.inf
    if hist.sum() == 0:
        return n * bin_width
    nonzero = hist > 0
    csum = np.concatenate([[0.0], np.cumsum(hist)])  # prefix sums serve every candidate
    cnz = np.concatenate([[0.0], np.cumsum(nonzero)])
    total = csum[-1]
    for i in range(min(max(start, levels // 2), n), n + 1):
        p = hist[:i].copy()
        p[-1] += total - csum[i]
        bounds = np.unique(np.linspace(0, i, min(levels, i) + 1).astype(int))
        sums, cnts = np.diff(csum[bounds]), np.diff(cnz[bounds])
        q = np.repeat(sums / np.maximum(cnts, 1), np.diff(bounds)) * nonzero[:i]
        nz = p > 0
        ps, qs = p / total, q / max(csum[i], 1e-30)
        valid = nz & (qs > 0)
        kl = float(np.sum(ps[valid] * np.log(ps[valid] / qs[valid])))
        kl += 1e3 * float(ps[nz & (qs == 0)].sum())  # mass Q cannot represent
        if kl <= best_kl + 1e-12:  # ties (to rounding) go to the larger threshold
            best_kl, best_i = min(kl, best_kl), i
    return (best_i + 0.5) * bin_width


def _mse_range(hist: np.ndarray, lo: float, hi: float, sums: np.ndarray | None = None,
               start: int = 128, chunk: int = 256) -> tuple[float, float]:
    """The int8 range of least quantization MSE for a histogram of x over [lo, hi]: each
    candidate t = i·max(|lo|, |hi|)/bins, i in [start, bins], gives the range
    (max(lo, -t), min(hi, t)); each bin's value (its mean, sums/hist, when `sums` of the
    values in each bin are given, else its centre) is quantize-dequantized on that range's
    asymmetric int8 grid (`activation_qparams`, so 0 stays exact), its squared error
    weighted by the bin's count (clipping error and rounding error both count); ties go to
    the larger t (NVIDIA pytorch-quantization's "mse" calibrator, on the asymmetric grid;
    bin means rather than centres keep repeated values, such as pixels k/16, exact).

    Unlike percentile and KL, MSE keeps a lone far outlier when clipping it costs more
    than the rounding error a wider step adds to every other value.

    >>> x = np.random.default_rng(0).laplace(size=100_000)  # b = 1, max |x| 11.9
    >>> h, _ = np.histogram(x, 2048, (x.min(), x.max()))
    >>> [round(v, 1) for v in _mse_range(h, float(x.min()), float(x.max()))]
    [-10.4, 10.4]

    (Banner et al.'s analytic MSE-optimal 8-bit clip of a Laplace(b) is 9.89·b.)
    """
    n = hist.size
    if hist.sum() == 0 or hi - lo < 1e-12:
        return lo, hi
    width = (hi - lo) / n
    centres = lo + (np.arange(n) + 0.5) * width
    keep = hist > 0
    c = hist[keep].astype(np.float64)
    v = centres[keep] if sums is None else np.asarray(sums, np.float64)[keep] / c
    absmax = max(abs(lo), abs(hi))
    ts = absmax * np.arange(min(start, n), n + 1) / n
    best_t, best_err = absmax, math.inf
    for j in range(0, len(ts), chunk):
        t = ts[j:j + chunk, None]
        a, b = np.maximum(lo, -t), np.minimum(hi, t)
        a, b = np.minimum(a, 0.0), np.maximum(b, 0.0)  # activation_qparams' widening
        scale = np.maximum(b - a, 1e-12) / 255.0
        zp = np.clip(np.round(-128 - a / scale), -128, 127)
        q = np.clip(np.round(v / scale) + zp, -128, 127)
        err = ((v - (q - zp) * scale) ** 2 * c).sum(axis=1)
        for tt, e in zip(t[:, 0], err):
            if e <= best_err * (1 + 1e-9):  # ties (to rounding) go to the larger t
                best_t, best_err = float(tt), min(float(e), best_err)
    return max(lo, -best_t), min(hi, best_t)


def _check_samples(model: Any, samples: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples)
    want = tuple(model.inputs[0].shape[1:])
    if samples.ndim != len(want) + 1 or any(w is not None and w != s for w, s in
                                            zip(want, samples.shape[1:])):
        raise CompressionError(
            f"calibration data of shape {samples.shape} does not fit model '{model.name}' "
            f"input '{model.inputs[0].name}' of shape {(None,) + want}; pass an array "
            f"(N,) + {want}")
    if len(samples) == 0:
        raise CompressionError("calibration data is empty; pass at least one sample "
                               "(about 100 is typical)")
    return samples.astype(np.float32)


PRE_ACTIVATION = PRE_ACTIVATION_SUFFIX  # the plan's key spelling (tether._internal.int8)
"""Suffix of the plan key holding a Conv/Dense layer's range before its softmax, sigmoid or
tanh activation (the int8 graph materialises that tensor; see `split_activation`)."""

_FIXED_RANGES = {"softmax": (0.0, 1.0), "sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}


def split_activation(node: Node) -> str | None:
    """The activation of a Conv/Dense layer that the int8 graph runs as its own op
    (softmax, sigmoid, tanh), else None (linear, or fused like relu/relu6)."""
    act = node.config.get("activation")
    if node.class_name in _WEIGHTED and act in _FIXED_RANGES:
        return str(act)
    return None


def _fixed_range(node: Node) -> tuple[float, float] | None:
    """The int8 spec's fixed output range of softmax/sigmoid/tanh outputs."""
    act = split_activation(node)
    if act is None and node.class_name == "Activation":
        act = node.config.get("activation")
    if act is None and node.class_name == "Softmax":
        act = "softmax"
    return _FIXED_RANGES.get(act) if act else None


def _linear_clone(node: Node, args: list[Any], kwargs: dict[str, Any],
                  weights: list[np.ndarray] | None = None) -> Any:
    cfg = {**node.layer.get_config(), "activation": "linear"}
    if weights is not None and node.class_name in _WEIGHTED:
        cfg["use_bias"] = len(weights) > 1  # a bias correction may add one
    layer = type(node.layer).from_config(cfg)
    out = layer(*args, **kwargs)
    layer.set_weights(node.layer.get_weights() if weights is None else weights)
    return out


def _probe(graph: Graph) -> tuple[Any, list[str]]:
    import keras

    tensors: dict[str, Any] = {}

    def record(node: Node, args: list[Any], kwargs: dict[str, Any]) -> Any:
        act = split_activation(node)
        if act is not None:
            pre = _linear_clone(node, args, kwargs)
            tensors[node.name + PRE_ACTIVATION] = pre
            out = keras.layers.Activation(act)(pre)
        else:
            out = node.layer(*args, **kwargs)
        tensors[node.name] = out
        return out

    m = rebuild(graph, record)
    names = list(graph.inputs) + list(tensors)
    outs = [m.inputs[graph.inputs.index(n)] if n in graph.inputs else tensors[n] for n in names]
    return keras.Model(m.inputs[0] if len(m.inputs) == 1 else m.inputs, outs), names


def calibrate(model: Any, samples: np.ndarray,
              config: CalibrationConfig = CalibrationConfig()) -> QuantizationPlan:
    """Runs `samples` through the model and records every layer output's int8 range.

    Args:
        model: A Keras Functional or Sequential model with one input.
        samples: Calibration inputs, (N,) + the model's input shape (about 100 typical).
        config: Calibration method and histogram settings.

    Returns:
        A `QuantizationPlan` with activation ranges for every layer (and the input) and
        per-channel weight scales of the BN-folded kernels.

    Raises:
        CompressionError: samples of the wrong shape, or empty.
    """
    graph = parse(model)
    samples = _check_samples(graph.model, samples)
    probe, names = _probe(graph)
    bs = config.batch_size
    batches = [samples[i:i + bs] for i in range(0, len(samples), bs)]
    lo = {n: math.inf for n in names}
    hi = {n: -math.inf for n in names}
    for b in batches:
        for n, o in zip(names, probe(b, training=False)):
            o = np.asarray(o)
            lo[n] = min(lo[n], float(o.min()))
            hi[n] = max(hi[n], float(o.max()))
    ranges: dict[str, tuple[float, float]] = {n: (lo[n], hi[n]) for n in names}
    if config.method != "minmax":
        nb = config.num_bins
        hists = {n: np.zeros(nb, np.int64) for n in names}
        sums = {n: np.zeros(nb, np.float64) for n in names}  # mse: each bin's mean value
        absmax = {n: max(abs(lo[n]), abs(hi[n]), 1e-12) for n in names}
        for b in batches:
            for n, o in zip(names, probe(b, training=False)):
                o = np.asarray(o).reshape(-1)
                if config.method in ("percentile", "mse"):
                    span = (lo[n], max(hi[n], lo[n] + 1e-12))
                    h, _ = np.histogram(o, bins=nb, range=span)
                    if config.method == "mse":
                        sums[n] += np.histogram(o, bins=nb, range=span,
                                                weights=o.astype(np.float64))[0]
                else:  # exact zeros (ReLU's spike) are exact in int8: keep them out of KL
                    h, _ = np.histogram(np.abs(o[o != 0]), bins=nb, range=(0.0, absmax[n]))
                hists[n] += h
        for n in names:
            h = hists[n]
            if config.method == "percentile":
                width = (max(hi[n], lo[n] + 1e-12) - lo[n]) / nb
                cdf = np.cumsum(h) / max(h.sum(), 1)
                p = config.percentile / 100.0
                lo_i = int(np.searchsorted(cdf, 1.0 - p, side="left"))
                hi_i = int(np.searchsorted(cdf, p, side="left"))
                ranges[n] = (lo[n] + lo_i * width, lo[n] + (hi_i + 1) * width)
            elif config.method == "mse":
                ranges[n] = _mse_range(h, lo[n], max(hi[n], lo[n] + 1e-12), sums[n])
            else:
                levels = 256 if lo[n] >= 0 else 128
                t = _entropy_threshold(h, absmax[n] / nb, min(levels, nb))
                ranges[n] = (max(lo[n], -t), min(hi[n], t))
    for node in graph.nodes.values():
        fixed = _fixed_range(node)
        if fixed is not None:
            ranges[node.name] = fixed
    folded = fold_batchnorm(graph.model)
    scales = {}
    for layer in folded.layers:
        if type(layer).__name__ in _WEIGHTED:
            w = np.asarray(layer.kernel)
            scales[layer.name] = _per_channel_scale(w, _channel_axis(type(layer).__name__, w), 127)
    corrections = _bias_corrections(folded, batches) if config.bias_correction else {}
    logger.info("calibrated %d tensors of %s with %s on %d samples (bias correction: %d "
                "layers)", len(ranges), graph.model.name, config.method, len(samples),
                len(corrections))
    return QuantizationPlan(ranges, scales, config.method, corrections)


def _weight_error(cls: str, w: np.ndarray) -> np.ndarray:
    """W_q - W of the int8 per-channel symmetric kernel (as the converter quantizes it)."""
    axis = _channel_axis(cls, w)
    q, s = quantize_array(w, 8, axis)
    shape = [1] * w.ndim
    shape[axis] = -1
    return (q.astype(np.float64) * s.reshape(shape) - w.astype(np.float64)).astype(np.float32)


def _bias_corrections(folded: Any, batches: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Layer name -> E[W_q x] - E[W x] per output channel over `batches`, for every
    Conv/Dense/Depthwise layer of the BN-folded model `folded`, x being the float input of
    that layer. The layer is linear in its kernel, so the error is the layer with kernel
    W_q - W (no bias, no activation) applied to x, averaged over samples and positions
    (padding included, as the int8 op sees it)."""
    import keras

    layers = [l for l in folded.layers if type(l).__name__ in _WEIGHTED]
    if not layers:
        return {}
    outs = []
    for layer in layers:
        cls = type(layer).__name__
        cfg = {**layer.get_config(), "activation": "linear", "use_bias": False,
               "name": f"{layer.name}_weight_error"}
        err_layer = type(layer).from_config(cfg)
        outs.append(err_layer(layer.input))
        err_layer.set_weights([_weight_error(cls, np.asarray(layer.kernel))])
    probe = keras.Model(folded.inputs, outs)
    sums = [np.zeros(l.compute_output_shape(l.input.shape)[-1], np.float64) for l in layers]
    counts = [0] * len(layers)
    for b in batches:
        got = probe(b, training=False)
        got = got if isinstance(got, (list, tuple)) else [got]
        for i, o in enumerate(got):
            o = np.asarray(o, np.float64)
            sums[i] += o.reshape(-1, o.shape[-1]).sum(axis=0)
            counts[i] += o.size // o.shape[-1]
    return {l.name: (s / max(c, 1)).astype(np.float32) for l, s, c in zip(layers, sums, counts)}


# ---------------------------------------------------------------------------- BN folding


def _bn_after(graph: Graph, name: str) -> Node | None:
    node = graph.nodes[name]
    if node.class_name not in ("Conv2D", "DepthwiseConv2D", "Dense", "Conv1D"):
        return None
    if node.config.get("activation", "linear") != "linear" or int(node.config.get("groups", 1)) != 1:
        return None
    cons = graph.consumers(name)
    if len(cons) != 1 or name in graph.outputs:
        return None
    bn = graph.nodes[cons[0]]
    if bn.class_name != "BatchNormalization":
        return None
    axis = bn.config.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    if axis not in (-1, len(bn.input_shapes[0]) - 1):
        return None
    return bn


def fold_factors(bn_layer: Any) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) with BN(x) = scale·x + shift, from moving statistics:
    scale = gamma / sqrt(var + eps), shift = beta − mean·scale."""
    w = {v.name: np.asarray(v, np.float64) for v in bn_layer.weights}
    n = w["moving_mean"].shape[0]
    gamma = w.get("gamma", np.ones(n))
    beta = w.get("beta", np.zeros(n))
    scale = gamma / np.sqrt(w["moving_variance"] + bn_layer.epsilon)
    return scale, beta - w["moving_mean"] * scale


def folded_weights(layer: Any, bn_layer: Any) -> tuple[np.ndarray, np.ndarray]:
    """(kernel, bias) of `layer` with the following `bn_layer` folded in."""
    scale, shift = fold_factors(bn_layer)
    k = np.asarray(layer.kernel, np.float64)
    b = np.asarray(layer.bias, np.float64) if getattr(layer, "use_bias", False) else 0.0
    if type(layer).__name__ == "DepthwiseConv2D":
        k = k * scale.reshape(k.shape[2], k.shape[3])
    else:
        k = k * scale
    return k.astype(np.float32), (b * scale + shift).astype(np.float32)


def fold_batchnorm(model: Any) -> Any:
    """A plain Keras model with each BatchNormalization that directly follows a linear
    Conv/Depthwise/Dense layer (its only consumer) folded into that layer's kernel and bias,
    as the converter folds it; the BN layer disappears. Inference outputs are unchanged
    (up to float rounding). The source model is not changed."""

    graph = parse(model)
    folded_into: dict[str, str] = {}
    for name in graph.order:
        bn = _bn_after(graph, name)
        if bn is not None:
            folded_into[bn.name] = name
    producers = {v: k for k, v in folded_into.items()}
    made: dict[str, Any] = {}

    def fn(node: Node, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if node.name in folded_into:
            return args[0]
        if node.name in producers:
            cfg = dict(node.layer.get_config())
            cfg["use_bias"] = True
            layer = type(node.layer).from_config(cfg)
            out = layer(*args, **kwargs)
            k, b = folded_weights(node.layer, graph.nodes[producers[node.name]].layer)
            layer.kernel.assign(k)
            layer.bias.assign(b)
            made[node.name] = layer
            return out
        cfg = node.layer.get_config()
        layer = type(node.layer).from_config(cfg)
        out = layer(*args, **kwargs)
        layer.set_weights(node.layer.get_weights())
        return out

    return rebuild(graph, fn)


# ---------------------------------------------------------------------------- simulation


def _fake_quant_layer() -> Any:
    import keras
    from keras import ops

    class FakeQuant(keras.layers.Layer):
        """Quantize-dequantize to int8 with a fixed range (straight-through gradient)."""

        def __init__(self, lo: float, hi: float, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.lo, self.hi = float(lo), float(hi)

        def call(self, x: Any) -> Any:
            scale, zp = activation_qparams(self.lo, self.hi)
            q = ops.clip(ops.round(x / scale) + zp, -128.0, 127.0)
            y = (q - zp) * scale
            return x + ops.stop_gradient(y - x)

        def compute_output_shape(self, input_shape: Any) -> Any:
            return input_shape

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "lo": self.lo, "hi": self.hi}

    return FakeQuant


def simulate_int8(model: Any, plan: QuantizationPlan) -> Any:
    """A float Keras model that mimics the int8 model the converter would build from
    `model` and `plan`: BN folded, kernels quantize-dequantized per channel (int8), and every
    tensor the int8 graph materialises (the input, and each layer output that is not folded
    into or fused with the next layer's ReLU) quantize-dequantized with the plan's range;
    max pooling, reshapes, padding and dropout keep their input's quantization.
    Used to measure a plan's accuracy before the engine can run int8; it is an emulation,
    not the engine.

    Raises:
        CompressionError: the plan lacks a range this model needs.
    """
    import keras

    FakeQuant = _fake_quant_layer()
    graph = parse(model)
    folded_into = {bn.name: n for n in graph.order if (bn := _bn_after(graph, n)) is not None}
    producers = {v: k for k, v in folded_into.items()}

    def rng(name: str) -> tuple[float, float]:
        if name not in plan.activation_ranges:
            raise CompressionError(
                f"QuantizationPlan has no range for layer '{name}' of model "
                f"'{graph.model.name}'; calibrate this model (not another) to get one")
        return plan.activation_ranges[name]

    def fused_with_next(name: str) -> bool:
        cons = graph.consumers(name)
        return (len(cons) == 1 and name not in graph.outputs
                and graph.nodes[cons[0]].class_name in _FUSABLE_ACT + ("Activation",)
                and graph.nodes[cons[0]].config.get("activation", "relu") in ("relu", "relu6")
                ) or (len(cons) == 1 and cons[0] in folded_into)

    def fn(node: Node, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if node.name in folded_into:
            return args[0]
        corr = plan.bias_corrections.get(node.name) if node.class_name in _WEIGHTED else None
        needs_bias = node.name in producers or corr is not None
        layer = type(node.layer).from_config(
            {**node.layer.get_config(), **({"use_bias": True} if needs_bias else {})})
        out = layer(*args, **kwargs)
        if node.name in producers:
            k, b = folded_weights(node.layer, graph.nodes[producers[node.name]].layer)
            ws = [k, b]
        else:
            ws = node.layer.get_weights()
        if node.class_name in _WEIGHTED:
            q, s = quantize_array(ws[0], 8, _channel_axis(node.class_name, ws[0]))
            shape = [1] * ws[0].ndim
            shape[_channel_axis(node.class_name, ws[0])] = -1
            ws = [q.astype(np.float32) * s.reshape(shape)] + list(ws[1:])
            if corr is not None:  # the converter subtracts it from the float bias
                n_out = ws[0].shape[-1] * (ws[0].shape[-2] if node.class_name ==
                                           "DepthwiseConv2D" else 1)
                bias = ws[1] if len(ws) > 1 else np.zeros(n_out, np.float32)
                ws = [ws[0], (bias - np.asarray(corr, np.float32)).astype(np.float32)]
        layer.set_weights(ws)
        act = split_activation(node)
        if act is not None:
            pre = _linear_clone(node, args, kwargs, ws)
            pre = FakeQuant(*rng(node.name + PRE_ACTIVATION), name=f"{node.name}_pre_fq")(pre)
            out = keras.layers.Activation(act)(pre)
        out_name = producers.get(node.name, node.name)
        if fused_with_next(out_name) or node.class_name in _PASSTHROUGH:
            return out
        return FakeQuant(*rng(out_name), name=f"{node.name}_fq")(out)


    inner = rebuild(graph, fn)
    x_in = keras.Input(batch_shape=tuple(inner.inputs[0].shape))
    x = FakeQuant(*rng(graph.inputs[0]), name="input_fq")(x_in)
    return keras.Model(x_in, inner(x), name=f"{graph.model.name}_int8sim")
