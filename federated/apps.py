"""tether's Flower apps: a ClientApp training the numpy MLP on one partition, and a ServerApp
running :class:`~tether.federated.strategy.TetherFedAvg` (or secure aggregation).

Everything an app needs comes from a :class:`FedConfig`; it travels as Flower's run config
(``flwr run ... --run-config``) or is baked into the apps by :func:`make_client_app` /
:func:`make_server_app` for the Simulation Engine. ``client_app`` / ``server_app`` at module
level read the run config, so ``tether.federated.apps:client_app`` works as a Flower app
reference for ``flower-supernode`` / ``flwr run``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from tether.federated import codecs, model
from tether.federated.dp import DPConfig
from tether.federated.partition import partition
from tether.federated.mods import CodecMod
from tether.federated.strategy import TetherFedAvg

__all__ = [
    "MODELS",
    "FedConfig",
    "RunReport",
    "client_app",
    "client_lr",
    "init_model",
    "load_partition",
    "make_client_app",
    "make_server_app",
    "read_arrays",
    "run_server",
    "server_app",
    "simulate",
    "write_arrays",
]

logger = logging.getLogger(__name__)


MODELS: dict[str, tuple[tuple[int, int], int] | None] = {
    "cnn": ((8, 16), 128),
    "cnn-mcmahan": ((32, 64), 512),
    "mlp": None,
}
"""FedConfig.model -> the CNN's ((c1, c2), dense hidden units), or None for the MLP."""


@dataclass(frozen=True)
class FedConfig:
    """One federated run.

    Args:
        dataset: Built-in dataset name, an image dataset ``tether.data.load`` reads (an image
            folder or an ``.npz`` of images), or an ``.npz`` of feature vectors: ``x_train``
            and ``x_test`` (n, d) float, ``y_train`` and ``y_test`` (n,) int labels, and
            optionally ``num_classes`` (a 0-d int, >= the largest label + 1; default the
            largest label + 1); features are used as they are (no scaling) and need
            ``model="mlp"`` (default "mnist5k").
        clients: Number of clients / partitions N (default 100).
        partition: "iid" or "noniid" (2 label-sorted shards per client) (default "noniid").
        fraction: C, the share of clients sampled per round (default 0.1).
        rounds: R (default 10).
        epochs: E local epochs (default 5).
        batch_size: B; 0 means full batch (FedSGD) (default 10).
        lr: Client learning rate eta_0 (default 0.1).
        lr_decay: gamma of the per-round schedule eta_t = eta_0 * gamma^(t-1), t the server
            round the TRAIN message carries; the same for FedAvg and FedSGD (default 1.0 =
            constant; must be in (0, 1]).
        model: "cnn" (conv5x5(8)-pool-conv5x5(16)-pool-dense(128)-dense, 105,194 parameters on
            mnist5k), "cnn-mcmahan" (McMahan et al.'s conv5x5(32)-pool-conv5x5(64)-pool-
            dense(512)-dense, 1,663,370 parameters; about 5x the time per round) or "mlp"
            (784-hidden-10) (default "cnn").
        hidden: MLP hidden units; 0 = softmax regression (default 200; ignored by the CNN).
        codec: Uplink codec spec (default "none").
        downlink: Downlink codec spec or "" (default "").
        secagg: Secure aggregation (default False).
        secagg_threshold: t as a fraction of the sampled clients (default 0.5).
        secagg_levels: Levels L of the shared stochastic-quantization grid (default 7 = 4 bits).
        secagg_clip: Grid range [-c, c] per coordinate of an update (default 0.05).
        secagg_weighted: FedAvg's n_k/n weights under secure aggregation: each client masks
            n_k * q_k and n_k, the server divides the two secure sums (default True; False =
            survivors weighted equally).
        secagg_max_weight: Largest n_k a client may send; sets the modulus (default 0 = the
            largest partition of this config).
        dropout: Probability that a sampled client drops after sharing keys (secagg) or
            before replying (default 0).
        dp_clip: Client-level DP clip C; 0 disables DP (default 0). Without secure aggregation
            the server clips and adds the noise (central DP); with it each client clips its
            update and adds its share of the noise (distributed DP, see ``strategy.SecAggFedAvg``).
        dp_noise: DP noise multiplier z (default 1.0).
        trainer: where clients train: "numpy" (this package's numpy model) or "engine" (the
            C engine's trainer, the code a phone runs; the MLP only) (default "numpy").
        seed: Seed of partitions, init and sampling-side randomness (default 0).
        out: JSON file the ServerApp writes its report to ("" = none).
        drop: Comma-separated partition ids whose training always fails (with secure
            aggregation: a drop after key sharing); for deployment tests ("" = none).
        init: ``.npz`` of the initial global arrays, ``arr_0``..``arr_{k-1}`` in the model's
            parameter order as ``numpy.savez(path, *arrays)`` writes them; their number and
            shapes must be those :func:`init_model` makes for this config ("" = start from
            :func:`init_model`). Read by the ServerApp only; must exist when the config is made.
        final: ``.npz`` the ServerApp writes the final global arrays to, atomically, at the end
            of the run (same layout as ``init``; "" = none).
    """

    dataset: str = "mnist5k"
    clients: int = 100
    partition: str = "noniid"
    fraction: float = 0.1
    rounds: int = 10
    epochs: int = 5
    batch_size: int = 10
    lr: float = 0.1
    lr_decay: float = 1.0
    model: str = "cnn"
    hidden: int = 200
    codec: str = "none"
    downlink: str = ""
    secagg: bool = False
    secagg_threshold: float = 0.5
    secagg_levels: int = 7
    secagg_clip: float = 0.05
    secagg_weighted: bool = True
    secagg_max_weight: int = 0
    dropout: float = 0.0
    dp_clip: float = 0.0
    dp_noise: float = 1.0
    trainer: str = "numpy"
    seed: int = 0
    out: str = ""
    drop: str = ""
    init: str = ""
    final: str = ""

    def __post_init__(self) -> None:
        if self.clients < 1:
            raise ValueError(f"FedConfig.clients must be >= 1. Received: clients={self.clients}")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"FedConfig.fraction must be in (0, 1]. Received: fraction={self.fraction}")
        if self.partition not in ("iid", "noniid"):
            raise ValueError(f"FedConfig.partition must be 'iid' or 'noniid'. Received: {self.partition!r}")
        if self.model not in MODELS:
            raise ValueError(f"FedConfig.model must be one of {sorted(MODELS)}. Received: {self.model!r}")
        if self.trainer not in ("numpy", "engine"):
            raise ValueError(f"FedConfig.trainer must be 'numpy' or 'engine'. Received: "
                             f"{self.trainer!r}")
        if self.trainer == "engine" and self.model != "mlp":
            raise ValueError(f"FedConfig.trainer 'engine' trains dense models: use model='mlp' "
                             f"(received model={self.model!r})")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"FedConfig.lr_decay must be in (0, 1]. Received: lr_decay={self.lr_decay}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"FedConfig.dropout must be in [0, 1). Received: dropout={self.dropout}")
        if self.init and not Path(self.init).is_file():
            raise ValueError(f"FedConfig.init must be an existing .npz file of initial arrays. "
                             f"Received: init={self.init!r} (no such file)")
        if self.final and Path(self.final).is_dir():
            raise ValueError(f"FedConfig.final must be a file path for the final arrays, not a "
                             f"folder. Received: final={self.final!r}")
        for name, check in (("codec", codecs.uplink_spec), ("downlink", codecs.make)):
            spec = getattr(self, name)
            if spec or name == "codec":
                try:
                    check(spec)
                except codecs.CodecError as exc:
                    raise ValueError(f"FedConfig.{name}: {exc}") from None

    def to_run_config(self) -> dict[str, Any]:
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_run_config(cls, rc: Any) -> FedConfig:
        kw: dict[str, Any] = {}
        for f in fields(cls):
            key = f.name.replace("_", "-")
            if key in rc:
                default: Any = f.default
                kw[f.name] = type(default)(rc[key]) if not isinstance(default, bool) else \
                    str(rc[key]).lower() in ("1", "true", "yes")
        return cls(**kw)


def client_lr(cfg: FedConfig, server_round: int) -> float:
    """eta_t = cfg.lr * cfg.lr_decay^(t-1) for server round t (t <= 1, e.g. a TRAIN message
    without "server-round", gets cfg.lr).

    >>> [client_lr(FedConfig(lr=0.2, lr_decay=0.5), t) for t in (0, 1, 2, 3)]
    [0.2, 0.2, 0.1, 0.05]
    """
    return cfg.lr * cfg.lr_decay ** max(server_round - 1, 0)


@dataclass
class RunReport:
    """What a ServerApp run produced.

    Attributes:
        config: The FedConfig as a dict.
        rounds: One row per round (the strategy's history plus ``accuracy`` and ``test_loss``
            of the global model on the test split, NaN when not evaluated).
        wall_s: Seconds the run took.
        initial: ``accuracy`` and ``test_loss`` of the initial global model (round 0: the
            ``init`` arrays when given).
        final_arrays: Path of the final global arrays once written (``FedConfig.final``);
            "" when none were written.
    """

    config: dict[str, Any]
    rounds: list[dict[str, float]] = field(default_factory=list)
    wall_s: float = 0.0
    initial: dict[str, float] = field(default_factory=dict)
    final_arrays: str = ""


_SERVER_ONLY = ("init", "final")
"""FedConfig fields only the ServerApp reads (paths on its host); a ClientApp ignores them."""


def _client_config(run_config: Any) -> FedConfig:
    """The FedConfig a ClientApp reads from Flower's run config, without the server's paths
    (a SuperNode's machine does not hold the ``init`` file)."""
    return FedConfig.from_run_config({k: v for k, v in dict(run_config).items()
                                      if k not in _SERVER_ONLY})


@dataclass(frozen=True)
class _Features:
    """Feature vectors from an ``.npz`` (see ``FedConfig.dataset``): x (n, d) float32, y int64."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


def _features_npz(path: Path) -> _Features | None:
    """The feature file at ``path``, or None when it is not one (its ``x_train`` / ``x`` is
    not 2-D: images, left to ``tether.data.load``).

    Raises:
        DataError: a feature file with a missing array, a wrong shape or dtype, non-finite
            features or labels outside [0, num_classes); the message names the file and array.
    """
    from tether.data import read_npz
    from tether.errors import DataError

    arrays = read_npz(path)
    first = arrays.get("x_train", arrays.get("x"))
    if first is None or first.ndim != 2:
        return None
    need = ("x_train", "y_train", "x_test", "y_test")
    if not set(need) <= set(arrays):
        raise DataError(f"{path}: a feature file holds arrays {', '.join(need)} (x (n, d), "
                        f"y (n,)). Found: {sorted(arrays)}")
    xs: dict[str, np.ndarray] = {}
    for key in ("x_train", "x_test"):
        x = arrays[key]
        if x.ndim != 2 or not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise DataError(f"{path}: array '{key}' must be real feature vectors (n, d). "
                            f"Received: shape={x.shape}, dtype={x.dtype}")
        if len(x) == 0:
            raise DataError(f"{path}: array '{key}' is empty. Received: shape={x.shape}")
        if not np.all(np.isfinite(x)):
            raise DataError(f"{path}: array '{key}' holds NaN or infinite values")
        xs[key] = np.ascontiguousarray(x, np.float32)
    if xs["x_test"].shape[1] != xs["x_train"].shape[1]:
        raise DataError(f"{path}: array 'x_test' has {xs['x_test'].shape[1]} features per row "
                        f"but 'x_train' has {xs['x_train'].shape[1]}")
    ys: dict[str, np.ndarray] = {}
    for key, n in (("y_train", len(xs["x_train"])), ("y_test", len(xs["x_test"]))):
        y = arrays[key]
        if y.ndim != 1 or len(y) != n:
            raise DataError(f"{path}: array '{key}' must be labels of shape ({n},). "
                            f"Received: shape={y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{path}: array '{key}' must hold integer class ids. "
                            f"Received: dtype={y.dtype}")
        if y.min() < 0:
            raise DataError(f"{path}: array '{key}' has negative class ids (min {int(y.min())})")
        ys[key] = y.astype(np.int64)
    top = int(max(ys["y_train"].max(), ys["y_test"].max())) + 1
    classes = top
    if "num_classes" in arrays:
        nc = arrays["num_classes"]
        if nc.ndim != 0 or not np.issubdtype(nc.dtype, np.integer) or int(nc) < top:
            raise DataError(f"{path}: array 'num_classes' must be a 0-d int >= the largest "
                            f"label + 1 = {top}. Received: {nc.tolist()!r} (dtype={nc.dtype})")
        classes = int(nc)
    if classes < 2:
        raise DataError(f"{path}: num_classes={classes}; a classifier needs at least 2 "
                        f"(store 'num_classes' when the labels do not show them all)")
    return _Features(str(path), xs["x_train"], ys["y_train"], xs["x_test"], ys["y_test"], classes)


def _stamp(name: str) -> tuple[int, int]:
    """(mtime_ns, size) of the file ``name`` ((0, 0) for a built-in name): caches key on it,
    so a file rewritten between two runs in one process is read again."""
    try:
        st = Path(name).stat()
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _load_once(name: str, stamp: tuple[int, int]) -> Any:
    if name.lower().endswith(".npz") and Path(name).is_file():
        feats = _features_npz(Path(name))
        if feats is not None:
            return feats
    from tether.data import load

    return load(name)


def _load(name: str) -> Any:
    """The dataset ``name`` once per process and file version: a feature ``.npz`` (see
    ``FedConfig.dataset``) or ``tether.data.load(name)`` (mnist5k parses a CSV: seconds)."""
    return _load_once(name, _stamp(name))


_DATA: dict[tuple[str, tuple[int, int], str, int, int], tuple[Any, list[np.ndarray]]] = {}


def _parts(cfg: FedConfig) -> tuple[Any, list[np.ndarray]]:
    """(dataset, partition index lists) of ``cfg``; cached per process and file version."""
    key = (cfg.dataset, _stamp(cfg.dataset), cfg.partition, cfg.clients, cfg.seed)
    if key not in _DATA:
        ds = _load(cfg.dataset)
        _DATA[key] = (ds, partition(cfg.partition, ds.y_train, cfg.clients, cfg.seed))
    return _DATA[key]


def load_partition(cfg: FedConfig, pid: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of partition ``pid`` (x flattened to (n, features)); cached per process."""
    ds, parts = _parts(cfg)
    idx = parts[pid % cfg.clients]
    return ds.x_train[idx].reshape(len(idx), -1), ds.y_train[idx]


def _test_split(cfg: FedConfig) -> tuple[np.ndarray, np.ndarray]:
    ds = _load(cfg.dataset)
    return ds.x_test.reshape(len(ds.x_test), -1), ds.y_test


def _train_handler(cfg_fixed: FedConfig | None):
    def train(msg: Message, context: Context) -> Message:
        cfg = cfg_fixed or _client_config(context.run_config)
        pid = int(context.node_config.get("partition-id", 0))
        x, y = load_partition(cfg, pid)
        rec = next(iter(msg.content.array_records.values()))
        keys = list(rec)
        params = [rec[k].numpy() for k in keys]
        conf = msg.content.config_records.get("config", ConfigRecord())
        rnd_v = conf.get("server-round", 0)
        rnd = int(rnd_v) if isinstance(rnd_v, (int, float)) else 0
        if (cfg.dropout > 0 and not cfg.secagg
                and np.random.default_rng([cfg.seed, rnd, pid, 7]).random() < cfg.dropout):
            raise RuntimeError(f"simulated dropout of partition {pid} in round {rnd}")
        if str(pid) in cfg.drop.split(","):
            raise RuntimeError(f"partition {pid} is configured to drop (drop={cfg.drop!r})")
        bs = cfg.batch_size if cfg.batch_size > 0 else None
        lr = client_lr(cfg, rnd)
        local = model.train
        if cfg.trainer == "engine":
            from tether.federated import engine

            local = engine.train
        new, loss = local(params, x, y, cfg.epochs, bs, lr, seed=cfg.seed * 1000003 + rnd * 1009 + pid)
        content = RecordDict({
            "arrays": ArrayRecord({k: Array(v) for k, v in zip(keys, new)}),
            "metrics": MetricRecord({"num-examples": len(x), "train-loss": loss}),
        })
        return Message(content=content, reply_to=msg)

    return train


def make_client_app(cfg: FedConfig | None = None) -> ClientApp:
    """A ClientApp training the numpy MLP on its partition, with the codec mod (and the
    secure-aggregation mod when ``cfg.secagg``). ``cfg=None`` reads Flower's run config."""
    from tether.federated.mods import SecAggMod, register_secagg

    sa = SecAggMod()
    app = ClientApp(mods=[sa, CodecMod()])
    app.train()(_train_handler(cfg))
    register_secagg(app, sa)
    return app


OnRound = Callable[[int, Optional[float]], None]
"""``on_round(t, accuracy)``: called as round t (1..R) ends; accuracy None when not evaluated."""


def make_server_app(cfg: FedConfig | None = None, report: RunReport | None = None,
                    on_round: OnRound | None = None) -> ServerApp:
    """A ServerApp running FedAvg/FedSGD (or secure aggregation) for ``cfg.rounds`` rounds,
    evaluating the global model on the held-out test split after every round. The per-round
    figures go to ``report`` (if given) and to ``cfg.out`` as JSON (if set); ``on_round``
    hears of each round as it ends (progress bars)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        c = cfg or FedConfig.from_run_config(context.run_config)
        run_server(grid, c, report, on_round=on_round)

    return app


def init_model(c: FedConfig, x_test: np.ndarray, n_out: int) -> list[np.ndarray]:
    """Initial global parameters of ``c.model`` for inputs shaped like ``x_test[0]``."""
    arch = MODELS[c.model]
    if arch is not None:
        side = int(round(np.sqrt(x_test[0].size)))
        return model.init_cnn((side, side, x_test[0].size // (side * side)), n_out, channels=arch[0],
                              hidden=arch[1], seed=c.seed)
    return model.init_params(x_test.shape[1], n_out, c.hidden, seed=c.seed)


def read_arrays(path: str | os.PathLike[str]) -> list[np.ndarray]:
    """The arrays ``arr_0``..``arr_{k-1}`` of the ``.npz`` at ``path``, in index order (the
    layout ``numpy.savez(path, *arrays)`` and :func:`write_arrays` write).

    Raises:
        DataError: the file is missing or unreadable, or holds other names than ``arr_i``.
    """
    from tether.data import read_npz
    from tether.errors import DataError

    p = Path(path)
    arrays = read_npz(p)
    want = [f"arr_{i}" for i in range(len(arrays))]
    if sorted(arrays) != sorted(want):
        raise DataError(f"{p}: expected arrays arr_0..arr_{len(arrays) - 1} in parameter order "
                        f"(numpy.savez(path, *arrays)). Found: {sorted(arrays)}")
    return [arrays[k] for k in want]


def write_arrays(path: str | os.PathLike[str], arrays: list[np.ndarray]) -> None:
    """``numpy.savez(path, *arrays)`` atomically: ``path`` is either the old file or the whole
    new one, never half written (a temporary file beside it, renamed when complete)."""
    from tether._internal.files import atomic_write

    with atomic_write(path) as f:
        np.savez(f, *arrays)


def _initial_arrays(c: FedConfig, made: list[np.ndarray], n_in: int, n_out: int) -> list[np.ndarray]:
    """The arrays of ``c.init``, checked against ``made`` (what :func:`init_model` makes for
    ``c``) in number and shapes and cast to its dtypes.

    Raises:
        DataError (a ValueError): a count or shape mismatch, naming the array index, the shape
            received and the one expected; a non-numeric or non-finite array.
    """
    from tether.errors import DataError

    got = read_arrays(c.init)
    what = (f"model={c.model!r}" + (f", hidden={c.hidden}" if MODELS[c.model] is None else "")
            + f" on {n_in} input features and {n_out} classes")
    if len(got) != len(made):
        raise DataError(f"{c.init}: holds {len(got)} arrays; expected {len(made)} with shapes "
                        f"{[tuple(m.shape) for m in made]} for {what}")
    out = []
    for i, (g, m) in enumerate(zip(got, made)):
        if g.shape != m.shape:
            raise DataError(f"{c.init}: array {i} (arr_{i}) has shape {tuple(g.shape)}; expected "
                            f"{tuple(m.shape)} for {what}")
        if not np.issubdtype(g.dtype, np.number) or np.issubdtype(g.dtype, np.complexfloating):
            raise DataError(f"{c.init}: array {i} (arr_{i}) must be real numbers. "
                            f"Received: dtype={g.dtype}")
        if not np.all(np.isfinite(g)):
            raise DataError(f"{c.init}: array {i} (arr_{i}) holds NaN or infinite values")
        out.append(np.ascontiguousarray(g, m.dtype))
    return out


def _largest_partition(c: FedConfig) -> int:
    return max(len(p) for p in _parts(c)[1])


class _TargetReached(Exception):
    """Raised inside the server's evaluation to end a run once the target accuracy is met."""


def run_server(grid: Grid, c: FedConfig, report: RunReport | None = None,
               eval_every: int = 1, stop_at: float | None = None,
               on_round: OnRound | None = None) -> RunReport:
    """The ServerApp body: build the strategy, run it, collect per-round figures.

    The run starts from ``init_model(c, ...)``, or from the arrays of ``c.init`` (checked
    against it). The global model is evaluated on the test split before round 1 (the report's
    ``initial``), after every ``eval_every``-th round, after
    the last one, and after every round once the last accuracy measured is within 0.02 of
    ``stop_at`` (so the first round reaching it is found exactly unless accuracy jumps more
    than that between two evaluations); other rounds report accuracy NaN. ``stop_at`` (default
    None) ends the run after the first round whose accuracy is >= it. ``on_round(t, accuracy)``
    is called as each round t >= 1 ends. At the end, the last global arrays go to ``c.final``
    (atomically; also when ``stop_at`` ended the run) and the report to ``c.out``.

    Raises:
        DataError (a ValueError): ``c.init`` does not fit the model, or the dataset is unusable;
            ValueError: a feature dataset with a model other than the MLP.
    """
    from tether.federated.strategy import SecAggFedAvg

    t0 = time.time()
    rep = report if report is not None else RunReport(asdict(c))
    rep.config = asdict(c)
    ds = _load(c.dataset)
    xt, yt = _test_split(c)
    if isinstance(ds, _Features) and MODELS[c.model] is not None:
        raise ValueError(f"{c.dataset}: holds feature vectors (n, {xt.shape[1]}), which only the "
                         f"dense model trains; use FedConfig.model='mlp' (hidden=0 for a softmax "
                         f"head). Received: model={c.model!r}")
    n_out = int(ds.num_classes)
    init = init_model(c, xt, n_out)
    if c.init:
        init = _initial_arrays(c, init, xt.shape[1], n_out)
    keys = [str(i) for i in range(len(init))]
    sample = max(1, round(c.clients * c.fraction))
    kw: dict[str, Any] = {"fraction_train": c.fraction, "fraction_evaluate": 0.0,
                          "min_train_nodes": sample, "min_available_nodes": c.clients}
    dp = DPConfig(c.dp_clip, c.dp_noise) if c.dp_clip > 0 else None
    if c.secagg:
        strategy: TetherFedAvg = SecAggFedAvg(threshold=c.secagg_threshold, levels=c.secagg_levels,
                                              clip=c.secagg_clip, dropout=c.dropout, seed=c.seed,
                                              weighted=c.secagg_weighted, dp=dp,
                                              max_weight=c.secagg_max_weight or _largest_partition(c), **kw)
    else:
        strategy = TetherFedAvg(codec=c.codec, downlink=c.downlink or None, dp=dp, seed=c.seed, **kw)
    accs: dict[int, float] = {}
    losses: dict[int, float] = {}
    latest: list[ArrayRecord] = []  # the global arrays after the last round run

    def evaluate_fn(rnd: int, arrays: ArrayRecord) -> MetricRecord | None:
        latest[:] = [arrays]
        last = accs[max(accs)] if accs else 0.0
        close = stop_at is not None and last >= stop_at - 0.02
        if rnd % eval_every and rnd != c.rounds and not close:
            if on_round is not None and rnd > 0:
                on_round(rnd, None)
            return None
        loss, acc = model.evaluate([arrays[k].numpy() for k in keys], xt, yt)
        accs[rnd], losses[rnd] = acc, loss
        if on_round is not None and rnd > 0:
            on_round(rnd, acc)
        if stop_at is not None and rnd > 0 and acc >= stop_at:
            raise _TargetReached(rnd)
        return MetricRecord({"loss": loss, "accuracy": acc})

    try:
        strategy.start(grid=grid, initial_arrays=ArrayRecord({k: Array(v) for k, v in zip(keys, init)}),
                       num_rounds=c.rounds, timeout=600, evaluate_fn=evaluate_fn)
    except _TargetReached as hit:
        logger.info("target accuracy %s reached in round %s; run stopped", stop_at, hit.args[0])
    rows = []
    for row in strategy.history:
        r = dict(row)
        r["accuracy"] = accs.get(int(r["round"]), float("nan"))
        r["test_loss"] = losses.get(int(r["round"]), float("nan"))
        rows.append(r)
    rep.rounds = rows
    if 0 in accs:
        rep.initial = {"accuracy": accs[0], "test_loss": losses[0]}
    if c.final and latest:
        write_arrays(c.final, [latest[0][k].numpy() for k in keys])
        rep.final_arrays = c.final
    rep.wall_s = time.time() - t0
    if c.out:
        from tether._internal.files import atomic_write_text

        atomic_write_text(Path(c.out), json.dumps(asdict(rep)))
    return rep


def _env() -> None:
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    # Ray's notice that it will stop overriding accelerator variables when num_gpus=0
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    # Ray actors inherit these: one BLAS thread each (the CNN's small matmuls slow down 2-4x
    # when every actor's BLAS spawns a thread per core)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def simulate(cfg: FedConfig, num_cpus: int | None = None,
             on_round: OnRound | None = None, worker_logs: bool = True) -> RunReport:
    """Run ``cfg`` on Flower's Simulation Engine (Ray backend), in this process.

    Ray actors get 1 CPU each (so ``num_cpus`` actors, default all cores) and one BLAS thread;
    so does this process while the simulation runs.
    The numpy models need no TensorFlow and the backend config asks for no TensorFlow actor
    setup, but Flower's ``flwr.simulation.ray_transport.utils`` still imports TensorFlow when
    it is installed (measured 4.2 s per process at low load), so each actor pays that once.
    The ServerApp runs in this process, so ``on_round`` (see :data:`OnRound`) is called here.
    ``worker_logs=False`` keeps the actors' stdout/stderr (their TensorFlow start-up lines) off
    this terminal; a client's exception still reaches Flower's log here.
    """
    _env()
    from flwr.simulation import run_simulation

    report = RunReport(asdict(cfg))
    ncpu = num_cpus or os.cpu_count() or 1
    backend = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": ncpu, "include_dashboard": False,
                      "log_to_driver": worker_logs},
        "actor": {"tensorflow": 0},
    }
    # This process's BLAS on one thread while the simulation runs: the ServerApp thread
    # evaluates (numpy matmuls) while ray.init forks its services, and OpenBLAS's fork handler
    # stops its worker threads under a running call, which then spins forever (seen: the
    # driver at 100% CPU in exec_blas, the actors idle).
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        run_simulation(server_app=make_server_app(cfg, report, on_round),
                       client_app=make_client_app(cfg), num_supernodes=cfg.clients,
                       backend_config=backend)  # type: ignore[arg-type]
    if not report.rounds:
        from tether.errors import TetherError

        raise TetherError(f"simulation of {cfg.clients} clients produced no rounds; see the Flower log")
    return report


client_app = make_client_app(None)
server_app = make_server_app(None)
