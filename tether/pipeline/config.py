"""The pipeline's one config: every stage's settings, read from TOML and checked before any work.

The schema is the dataclasses below; each field's metadata carries its documentation, its
allowed values and its range, and the same metadata drives validation
(`PipelineConfig.from_dict`) and the generated reference (`reference_markdown`, the page
`tether/docs/config.md`).

>>> cfg = PipelineConfig.from_dict({"search": {"max_latency_ms": 0.05}})
>>> cfg.search.max_latency_ms, cfg.model.source
(0.05, 'supernet')
>>> PipelineConfig.from_dict({"serach": {}})
Traceback (most recent call last):
...
tether.pipeline.config.ConfigError: config: unknown section [serach] (did you mean [search]?); sections: run, scenario, model, supernet, library, device, search, compress, learn, inference, transfer, federated
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

from tether.errors import TetherError

__all__ = ["ConfigError", "PipelineConfig", "load_config", "reference_markdown", "SECTIONS"]


class ConfigError(TetherError, ValueError):
    """A pipeline config key that is unknown, of the wrong type or out of range."""


def _opt(default: Any, doc: str, *, choices: tuple[Any, ...] = (), lo: float | None = None,
         hi: float | None = None, item_choices: tuple[Any, ...] = (), length: int = 0,
         lo_open: bool = False) -> Any:
    """A config field: its default, documentation and the values it allows."""
    meta = {"doc": doc, "choices": choices, "lo": lo, "hi": hi, "item_choices": item_choices,
            "length": length, "lo_open": lo_open}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class RunSection:
    """Where the run's artifacts go and what seeds it."""

    out_dir: str = _opt("out/pipeline", "Folder of the stage caches, the final artifacts and "
                        "`report.html` (relative paths are relative to the working directory)")
    seed: int = _opt(0, "Seeds weights, sampling and data splits of every stage", lo=0)
    title: str = _opt("tether pipeline", "Title of the HTML report")


@dataclass(frozen=True)
class ScenarioSection:
    """The task and the data (Fig. 12.6, "set scenario")."""

    task: str = _opt("classification", "The task; image classification is the one today",
                     choices=("classification",))
    dataset: str = _opt("mnist5k", "Built-in dataset (`digits`, `mnist5k`), an `.npz` file "
                        "(x_train, y_train[, x_test, y_test]) or a folder of class "
                        "subfolders of images")
    holdout_classes: list[int] = _opt(
        [], "Classes the cloud never sees: supernet, library, search and compression train "
        "on the others, and the device's own data brings these to transfer and federated "
        "learning (e.g. `[8, 9]`)", lo=0)


@dataclass(frozen=True)
class ModelSection:
    """Where the model comes from: the seed's two cases."""

    source: str = _opt("supernet", "`supernet`: train a supernet and build the model library "
                       "from it; `library`: reuse the model library at `path`; `file`: "
                       "bring your own model at `path` (no search)",
                       choices=("supernet", "library", "file"))
    path: str = _opt("", "`library`: the `.sqlite` model library (its supernet file must still "
                     "be where the library says); `file`: a Keras (`.keras`, `.h5`), ONNX "
                     "(`.onnx`) or TFLite (`.tflite`) model")


@dataclass(frozen=True)
class SupernetSection:
    """Progressive shrinking (cloud, offline; `source = "supernet"`)."""

    space: str = _opt("default", "Search space: `default` (sized for mnist5k), `seed` (the "
                      "chapter's) or a `.toml`/`.json` space file")
    epochs: list[int] = _opt([8, 4, 8, 24], "Epochs of the phases full, kernel, depth, "
                             "expand (the full phase needs at least 1)", lo=0, length=4)
    batch_size: int = _opt(64, "Images per step", lo=2)
    lr: float = _opt(3e-3, "Peak learning rate (Adam, cosine-decayed per phase)", lo=0,
                     lo_open=True)
    subnets_per_step: int = _opt(4, "Subnets per step in the elastic phases (sandwich rule)",
                                 lo=1)


@dataclass(frozen=True)
class LibrarySection:
    """The model library built from the supernet (cloud, offline)."""

    models: int = _opt(20, "Library entries: the largest, the smallest and random subnets, "
                       "each extracted, batch norm recalibrated, measured and converted", lo=2)
    predictor_samples: int = _opt(60, "Further random subnets measured for the accuracy "
                                  "predictor only", lo=0)
    calibration_images: int = _opt(2000, "Training images batch norm is recalibrated on",
                                   lo=2)


@dataclass(frozen=True)
class DeviceSection:
    """The target device and its latency model (Fig. 12.6, "device info")."""

    profile: str = _opt("this", "`this`: profile this machine now (kernel timings with "
                        "`tether-probe`); or a latency table `.json` from `tether device "
                        "probe` run on the device")
    threads: int = _opt(1, "Engine threads the device runs with", lo=1, hi=64)
    probe_ms: int = _opt(50, "Profiling this machine: timed invokes per probe model last this "
                         "long (ms)", lo=1)
    fit_subnets: int = _opt(12, "Profiling this machine: random subnets timed end to end to "
                            "fit the latency model's correction (0 = none)", lo=0)


@dataclass(frozen=True)
class SearchSection:
    """Constraints and policy (Fig. 12.6, "search policy"); unset limits are no limit."""

    max_latency_ms: Optional[float] = _opt(None, "Latency limit on the device (ms)", lo=0,
                                           lo_open=True)
    max_size: Optional[int] = _opt(None, "Limit on the `.tmodel` file (bytes)", lo=1)
    max_params: Optional[int] = _opt(None, "Limit on parameters", lo=1)
    max_macs: Optional[int] = _opt(None, "Limit on multiply-accumulates per image", lo=1)
    min_accuracy: Optional[float] = _opt(None, "Least test accuracy (fraction, e.g. 0.95)",
                                         lo=0, hi=1)
    policy: str = _opt("accuracy:0.5% > latency > size", "Priority order of the objectives "
                       "with optional tolerances (`accuracy`, `latency`, `size`, `params`, "
                       "`macs`)")
    generations: int = _opt(30, "Generations of the evolutionary search", lo=0)
    extract: bool = _opt(True, "Search the whole space (a subnet better than every library "
                         "entry is extracted and added); false: library entries only")
    verify: str = _opt("auto", "Time each answer in the engine and search again when it "
                       "misses the latency limit: `auto` (when the device is this machine), "
                       "`yes`, `no`", choices=("auto", "yes", "no"))


@dataclass(frozen=True)
class CompressSection:
    """The compression recipe, applied in this order: prune channels, prune weights,
    quantize (Fig. 12.6, "compress")."""

    prune_channels: float = _opt(0.0, "Fraction of channels structured pruning removes "
                                 "(0 = none)", lo=0, hi=0.9)
    fine_tune_epochs: int = _opt(2, "Epochs that fine-tune the model after each pruning step",
                                 lo=0)
    distill: bool = _opt(True, "Fine-tune after channel pruning by distillation from the "
                         "unpruned model (Hinton's loss) instead of labels alone")
    sparsity: float = _opt(0.0, "Unstructured magnitude-pruning sparsity during fine-tuning "
                           "(0 = none); the engine runs sparse weights", lo=0, hi=0.99)
    quantize: str = _opt("int8", "`int8`: post-training full-integer quantization, "
                         "calibrated; `qat`: quantization-aware training then int8; `none`: "
                         "float32", choices=("int8", "qat", "none"))
    calibration: str = _opt("minmax", "How int8 calibration picks each activation range",
                            choices=("minmax", "percentile", "entropy", "mse"))
    calibration_images: int = _opt(200, "Training images int8 calibration sees", lo=1)
    qat_epochs: int = _opt(1, "Quantization-aware training epochs (`quantize = \"qat\"`)",
                           lo=1)


@dataclass(frozen=True)
class LearnSection:
    """The learning patterns run on the deployed model (Fig. 12.6, the online part's end)."""

    patterns: list[str] = _opt(["inference"], "Any of `inference` (accuracy and latency in "
                               "tether beside LiteRT and ONNX Runtime), `transfer` (a new "
                               "head trained in the engine on the device's own data), "
                               "`federated` (the head federated over many devices)",
                               item_choices=("inference", "transfer", "federated"))


@dataclass(frozen=True)
class InferenceSection:
    """On-device inference: the deployed model in tether and its peers."""

    engines: list[str] = _opt(["tether", "litert", "onnxruntime"], "Engines timed on the "
                              "same model (tether first); LiteRT runs TensorFlow's "
                              "full-integer model when the deployed one is int8",
                              item_choices=("tether", "litert", "onnxruntime"))
    threads: int = _opt(1, "Threads of every engine", lo=1, hi=64)
    runs: int = _opt(50, "Timed single-image calls per engine (after 10 warm-up calls)", lo=1)


@dataclass(frozen=True)
class TransferSection:
    """On-device transfer learning: part A frozen in the engine, the head trained by the
    engine's trainer on the device's images (new classes included)."""

    cut: str = _opt("auto", "Layer part A ends at: `auto` (the last layer before the dense "
                    "head) or a layer name")
    images_per_class: int = _opt(50, "The device's own training images per class", lo=1)
    epochs: int = _opt(20, "Epochs of head training", lo=1)
    learning_rate: float = _opt(1e-2, "Learning rate of the engine's trainer (the head "
                                "starts from the deployed one's weights, whose old classes "
                                "the new ones must catch up with)", lo=0, lo_open=True)
    optimizer: str = _opt("adam", "The engine trainer's optimizer", choices=("adam", "sgd"))
    batch_size: int = _opt(16, "Images per training step", lo=1)


@dataclass(frozen=True)
class FederatedSection:
    """Federated learning of the deployed model's head on Flower: every client runs part A
    on its own images and trains the head; updates travel through the codec."""

    clients: int = _opt(10, "Simulated devices (partitions of the training split)", lo=2)
    rounds: int = _opt(5, "Federated rounds", lo=1)
    fraction: float = _opt(0.5, "Share of clients sampled per round", lo=0, hi=1,
                           lo_open=True)
    local_epochs: int = _opt(1, "Local epochs per round", lo=1)
    batch_size: int = _opt(16, "Local batch size (0 = full batch)", lo=0)
    lr: float = _opt(0.05, "Client learning rate", lo=0, lo_open=True)
    partition: str = _opt("iid", "How the training split is dealt out", choices=("iid", "noniid"))
    codec: str = _opt("none", "Uplink codec: `none`, `qsgd:4`, `terngrad`, `signsgd`, "
                      "`topk:0.01`, `mask:0.1`, `lowrank:4` (append `+ef` for error feedback)")
    secagg: bool = _opt(False, "Secure aggregation (pairwise masks, dropout recovery)")
    dropout: float = _opt(0.0, "Probability a sampled client drops out", lo=0, hi=0.99)
    dp_clip: float = _opt(0.0, "Client-level differential privacy clip (0 = off)", lo=0)
    dp_noise: float = _opt(1.0, "DP noise multiplier", lo=0)
    trainer: str = _opt("engine", "Where clients train the head: `engine` (the C engine's "
                        "trainer, the code a phone runs) or `numpy`",
                        choices=("engine", "numpy"))
    backend: str = _opt("local", "`local`: clients in this process (Flower's message flow, no "
                        "Ray); `simulation`: Flower's Simulation Engine (Ray)",
                        choices=("local", "simulation"))
    superlink: str = _opt("", "`HOST:PORT` of a running SuperLink's Control API: the rounds run "
                          "on that real deployment instead (its SuperNodes, as many as "
                          "`clients`, train partition `partition-id` of this run's feature "
                          "file, at the same path on their machines; the SuperLink's host "
                          "must share this one's file system for the result to come back); "
                          "empty: `backend` decides")
    superlink_certificates: str = _opt("", "The CA certificate (PEM) the SuperLink's TLS "
                                       "certificate chains to; empty: no TLS (a SuperLink "
                                       "started with `--insecure`)")


@dataclass(frozen=True)
class PipelineConfig:
    """Every stage's settings."""

    run: RunSection = field(default_factory=RunSection)
    scenario: ScenarioSection = field(default_factory=ScenarioSection)
    model: ModelSection = field(default_factory=ModelSection)
    supernet: SupernetSection = field(default_factory=SupernetSection)
    library: LibrarySection = field(default_factory=LibrarySection)
    device: DeviceSection = field(default_factory=DeviceSection)
    search: SearchSection = field(default_factory=SearchSection)
    compress: CompressSection = field(default_factory=CompressSection)
    learn: LearnSection = field(default_factory=LearnSection)
    inference: InferenceSection = field(default_factory=InferenceSection)
    transfer: TransferSection = field(default_factory=TransferSection)
    federated: FederatedSection = field(default_factory=FederatedSection)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> PipelineConfig:
        """The config `data` (nested sections, as TOML reads) describes; every key is checked
        and every problem reported at once (ConfigError naming `source`, the key, the value
        received and what is allowed)."""
        problems: list[str] = []
        sections: dict[str, Any] = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a table of sections. Received: {data!r}")
        for name, value in data.items():
            if name not in SECTIONS:
                problems.append(f"unknown section [{name}]{_suggest(name, SECTIONS)}; "
                                f"sections: {', '.join(SECTIONS)}")
            elif not isinstance(value, dict):
                problems.append(f"[{name}] must be a table of keys. Received: {value!r}")
            else:
                sections[name] = _section(SECTIONS[name], name, value, problems)
        if not problems:
            cfg = cls(**sections)
            problems += cfg._cross_checks()
        if problems:
            raise ConfigError(f"{source}: " + "; ".join(problems))
        return cfg

    def _cross_checks(self) -> list[str]:
        out = []
        m = self.model
        if m.source in ("library", "file") and not m.path:
            out.append(f"model.path: model.source = {m.source!r} needs a path. Received: ''")
        if m.source == "file" and m.path and Path(m.path).suffix.lower() not in (
                ".keras", ".h5", ".onnx", ".tflite"):
            out.append(f"model.path: a model file ends in .keras, .h5, .onnx or .tflite. "
                       f"Received: {m.path!r}")
        if m.source == "library" and m.path and not m.path.endswith(".sqlite"):
            out.append(f"model.path: a model library ends in .sqlite. Received: {m.path!r}")
        if m.source != "supernet" and m.path and not Path(m.path).exists():
            out.append(f"model.path: no such file. Received: {m.path!r}")
        if self.supernet.epochs[0] < 1:
            out.append(f"supernet.epochs: the full phase needs at least 1 epoch. Received: "
                       f"{self.supernet.epochs}")
        foreign = m.source == "file" and Path(m.path).suffix.lower() in (".onnx", ".tflite")
        if foreign and (self.compress.prune_channels or self.compress.sparsity or
                        self.compress.quantize == "qat"):
            out.append("compress: pruning and quantization-aware training need a Keras "
                       f"model; model.path {m.path!r} is not one (int8 post-training "
                       "quantization and none still apply)")
        if foreign and set(self.learn.patterns) & {"transfer", "federated"}:
            out.append("learn.patterns: transfer and federated learning split a Keras model "
                       f"into part A and a head; model.path {m.path!r} is not one")
        if len(set(self.learn.patterns)) != len(self.learn.patterns):
            out.append(f"learn.patterns: each pattern once. Received: {self.learn.patterns}")
        if not self.learn.patterns:
            out.append("learn.patterns: at least one of inference, transfer, federated. "
                       "Received: []")
        if self.inference.engines and self.inference.engines[0] != "tether":
            out.append(f"inference.engines: tether first (the others are its peers). "
                       f"Received: {self.inference.engines}")
        dev = self.device.profile
        if dev != "this" and not (dev.endswith(".json") and Path(dev).is_file()):
            out.append(f"device.profile: 'this' or an existing latency table .json. "
                       f"Received: {dev!r}")
        if self.search.verify == "yes" and dev != "this":
            out.append("search.verify: 'yes' times answers on this machine, but device."
                       f"profile is {dev!r}; use 'auto' or 'no'")
        if len(set(self.scenario.holdout_classes)) != len(self.scenario.holdout_classes):
            out.append(f"scenario.holdout_classes: each class once. Received: "
                       f"{self.scenario.holdout_classes}")
        fl = self.federated
        if fl.superlink and (":" not in fl.superlink or
                             not fl.superlink.rpartition(":")[2].isdigit()):
            out.append(f"federated.superlink: HOST:PORT of the SuperLink's Control API. "
                       f"Received: {fl.superlink!r}")
        if fl.superlink_certificates and not Path(fl.superlink_certificates).is_file():
            out.append(f"federated.superlink_certificates: no such file. Received: "
                       f"{fl.superlink_certificates!r}")
        if self.federated.secagg and self.federated.codec != "none":
            out.append("federated.codec: secure aggregation quantizes updates on its own "
                       f"shared grid; use codec = 'none' with it. Received: "
                       f"{self.federated.codec!r}")
        try:
            from tether.cloud.policy import Policy

            ranks_accuracy = "accuracy" in {o.name for o in
                                            Policy.parse(self.search.policy).objectives}
        except TetherError as exc:
            out.append(f"search.policy: {exc}")
            ranks_accuracy = False
        lib = self.library
        if (m.source == "supernet" and (ranks_accuracy or self.search.min_accuracy is not None)
                and lib.models + lib.predictor_samples < 5):
            out.append("library: the accuracy predictor the search ranks by needs 5 or more "
                       f"measured subnets; models + predictor_samples = "
                       f"{lib.models + lib.predictor_samples}")
        if self.federated.codec != "none":
            try:
                from tether.federated.codecs import uplink_spec

                uplink_spec(self.federated.codec)
            except (TetherError, ValueError) as exc:
                out.append(f"federated.codec: {exc}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain sections of plain values (unset options left out, as TOML has no null)."""
        return {name: {k: v for k, v in dataclasses.asdict(getattr(self, name)).items()
                       if v is not None} for name in SECTIONS}

    def section(self, name: str) -> dict[str, Any]:
        """One section as a dict (for stage keys)."""
        return dataclasses.asdict(getattr(self, name))

    def to_toml(self) -> str:
        """The config as TOML text (every key, defaults included)."""
        lines = []
        for name, values in self.to_dict().items():
            lines.append(f"[{name}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
            lines.append("")
        return "\n".join(lines)


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(PipelineConfig)}  # type: ignore[misc]


def _suggest(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _kind(tp: Any) -> tuple[type, bool]:
    """(the base type, whether None is allowed) of a field's annotation."""
    if get_origin(tp) is Union:
        args = [a for a in get_args(tp) if a is not type(None)]
        return _kind(args[0])[0], True
    if get_origin(tp) is list:
        return list, False
    return tp, False


def _section(cls: type, name: str, values: dict[str, Any], problems: list[str]) -> Any:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            problems.append(f"{name}.{key}: unknown key{_suggest(key, fields)}; [{name}] has "
                            f"{', '.join(fields)}")
            continue
        err = _check(f"{name}.{key}", hints[key], fields[key].metadata, value)
        if err:
            problems.append(err)
        else:
            kwargs[key] = float(value) if hints[key] in (float, Optional[float]) else value
    return cls(**kwargs)


def _type_name(tp: Any) -> str:
    base, _ = _kind(tp)
    if base is list:
        return f"list of {get_args(tp)[0].__name__}"
    return {int: "integer", float: "number", str: "string", bool: "true/false"}[base]


def _check(key: str, tp: Any, meta: Any, value: Any) -> str:
    """'' when `value` fits field `key`, else the problem naming key, value and what is allowed."""
    base = _kind(tp)[0]
    want = _type_name(tp)
    bad = f"{key}: expected {want}"
    if base is list:
        if not isinstance(value, list):
            return f"{bad}. Received: {value!r}"
        item = get_args(tp)[0]
        items = [v for v in value if not _fits(item, v)]
        if items:
            return f"{bad}. Received: {value!r}"
        if meta["length"] and len(value) != meta["length"]:
            return f"{key}: expected {meta['length']} values. Received: {value!r}"
        if meta["item_choices"]:
            wrong = [v for v in value if v not in meta["item_choices"]]
            if wrong:
                return (f"{key}: {wrong[0]!r} is not one of "
                        f"{', '.join(map(repr, meta['item_choices']))}. Received: {value!r}")
        if meta["lo"] is not None and any(v < meta["lo"] for v in value):
            return f"{key}: every value must be >= {meta['lo']}. Received: {value!r}"
        return ""
    if not _fits(base, value):
        return f"{bad}. Received: {value!r}"
    if meta["choices"] and value not in meta["choices"]:
        return (f"{key}: must be one of {', '.join(map(repr, meta['choices']))}"
                f"{_suggest(str(value), meta['choices'])}. Received: {value!r}")
    lo, hi = meta["lo"], meta["hi"]
    if lo is not None and (value < lo or (meta["lo_open"] and value == lo)):
        return f"{key}: must be {'>' if meta['lo_open'] else '>='} {lo}. Received: {value!r}"
    if hi is not None and value > hi:
        return f"{key}: must be <= {hi}. Received: {value!r}"
    return ""


def _fits(tp: type, value: Any) -> bool:
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def load_config(path: str | Path, overrides: Optional[dict[str, Any]] = None) -> PipelineConfig:
    """Reads and checks the TOML config at `path`; `overrides` (nested sections) win."""
    import tomllib

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from None
    for name, values in (overrides or {}).items():
        data.setdefault(name, {}).update(values)
    return PipelineConfig.from_dict(data, source=str(p))


def reference_markdown() -> str:
    """The config reference page, generated from the schema (`tether/docs/config.md`)."""
    out = ["# Pipeline config reference", "",
           "Generated from `tether/pipeline/config.py` by "
           "`python -m tether.pipeline.config > tether/docs/config.md`; a test fails when "
           "the two drift. Every key is optional; an unknown key, a value of the wrong type "
           "or one out of range stops the run before any work, naming the key, the value "
           "received and what is allowed.", ""]
    for name, cls in SECTIONS.items():
        out += [f"## [{name}]", "", " ".join((cls.__doc__ or "").split()), "",
                "| key | type | default | allowed | what it does |", "|---|---|---|---|---|"]
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            m = f.metadata
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc,operator]
            allowed = []
            if m["choices"]:
                allowed.append(", ".join(f"`{_toml_value(c)}`" for c in m["choices"]))
            if m["item_choices"]:
                allowed.append("each of " + ", ".join(f"`{_toml_value(c)}`"
                                                      for c in m["item_choices"]))
            if m["lo"] is not None:
                allowed.append(f"{'>' if m['lo_open'] else '≥'} {m['lo']}")
            if m["hi"] is not None:
                allowed.append(f"≤ {m['hi']}")
            if m["length"]:
                allowed.append(f"{m['length']} values")
            shown = "unset" if default is None else f"`{_toml_value(default)}`"
            out.append(f"| `{f.name}` | {_type_name(hints[f.name])} | {shown} | "
                       f"{'; '.join(allowed) or 'any'} | {m['doc']} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(reference_markdown())
