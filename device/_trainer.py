"""`Trainer`: train a `.tmodel`'s dense head in the C engine (tether.h's tether_trainer_*).

The same code a phone runs: the forward pass on the engine's kernels, the backward pass,
L2, dropout, SGD-momentum or Adam as Keras 3 applies them, all in one arena the engine sized
before the first step. `export()` gives the whole model with the trained weights; a
session of it computes exactly what `predict` does.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from tether.device import _binding as B
from tether.device._engine import _aligned_copy, _Closeable
from tether.errors import EngineError

__all__ = ["Trainer"]

_OPTIMIZERS = {"sgd": 0, "adam": 1}
_SCHEDULES = {"constant": 0, "cosine": 1}


class Trainer(_Closeable):
    """The dense head of a model, trained on the device.

    The head is the chain of ops from `head_input` (a tensor name; None = the model's input)
    to the model's first output: dense layers (fused ReLU/ReLU6 allowed), ReLU, ReLU6,
    MEAN, RESHAPE and a final softmax. Inputs are the head input's values (features of a
    frozen part A); labels are class ids.

    Args:
        model: a `.tmodel` path or its bytes (float32 head, dense weights).
        head_input: where the head starts (a tensor name).
        batch_size: most rows per step.
        optimizer: "adam" or "sgd" (with `momentum`).
        learning_rate, momentum, beta_1, beta_2, epsilon: Keras's meanings and defaults.
        l2: adds l2 * sum(W^2) per trained kernel (Keras's L2 regularizer).
        dropout: inverted dropout rate on each trained layer's input while training.
        schedule: "constant" or "cosine" (Keras CosineDecay over `decay_steps`, ending at
            `final_lr_ratio` of the rate).
        train_layers: train only the last N dense layers (0 = all of the head).
        seed: dropout's random stream.
        ewc_lambda: elastic weight consolidation's strength (0 = off): adds
            (ewc_lambda / 2) * sum(F (w - w*)^2) with F and w* from `set_penalty`.

    Raises:
        EngineError: the engine refused the model or a setting (the message names the op,
            tensor or field).
    """

    def __init__(self, model: Union[str, os.PathLike, bytes, bytearray, memoryview], *,
                 head_input: Optional[str] = None, batch_size: int = 32,
                 optimizer: str = "adam", learning_rate: float = 1e-3, momentum: float = 0.0,
                 beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7,
                 l2: float = 0.0, dropout: float = 0.0, schedule: str = "constant",
                 decay_steps: int = 1, final_lr_ratio: float = 0.0, train_layers: int = 0,
                 seed: int = 0, ewc_lambda: float = 0.0) -> None:
        if optimizer not in _OPTIMIZERS:
            raise EngineError(f"Trainer optimizer must be one of {sorted(_OPTIMIZERS)}. "
                              f"Received: {optimizer!r}", "invalid_argument")
        if schedule not in _SCHEDULES:
            raise EngineError(f"Trainer schedule must be one of {sorted(_SCHEDULES)}. "
                              f"Received: {schedule!r}", "invalid_argument")
        self._lib = B.lib()
        if isinstance(model, (bytes, bytearray, memoryview)):
            self.source, data = "<bytes>", bytes(model)
        else:
            self.source = str(model)
            if not Path(model).is_file():
                raise EngineError(f"{model}: no such file", "io_error")
            data = Path(model).read_bytes()
        self._model = ctypes.c_void_p()
        self._trainer = ctypes.c_void_p()
        self._buffer, address = _aligned_copy(data)
        B.check(self._lib.tether_model_load(address, len(data), None,
                                            ctypes.byref(self._model)), self.source)
        cfg = B.TrainConfig()
        self._lib.tether_train_config_default(ctypes.byref(cfg))
        self._head = head_input.encode("utf-8") if head_input is not None else None
        cfg.head_input = self._head
        cfg.batch_size, cfg.optimizer = int(batch_size), _OPTIMIZERS[optimizer]
        cfg.learning_rate, cfg.momentum = float(learning_rate), float(momentum)
        cfg.beta_1, cfg.beta_2, cfg.epsilon = float(beta_1), float(beta_2), float(epsilon)
        cfg.l2, cfg.dropout, cfg.schedule = float(l2), float(dropout), _SCHEDULES[schedule]
        cfg.decay_steps, cfg.final_lr_ratio = int(decay_steps), float(final_lr_ratio)
        cfg.train_layers, cfg.seed = int(train_layers), int(seed) & (2 ** 64 - 1)
        cfg.ewc_lambda = float(ewc_lambda)
        self.batch_size = int(batch_size)
        try:
            size = ctypes.c_size_t()
            B.check(self._lib.tether_trainer_arena_size(self._model, ctypes.byref(cfg),
                                                        ctypes.byref(size)), self.source)
            self.arena_bytes = int(size.value)
            self._arena = np.empty(self.arena_bytes + B.ARENA_ALIGNMENT, np.uint8)
            base = self._arena.ctypes.data + (-self._arena.ctypes.data) % B.ARENA_ALIGNMENT
            B.check(self._lib.tether_trainer_create(self._model, ctypes.byref(cfg), base,
                                                    self.arena_bytes,
                                                    ctypes.byref(self._trainer)), self.source)
        except BaseException:
            self.close()
            raise
        self.input_elements = int(self._lib.tether_trainer_input_elements(self._trainer))
        self.classes = int(self._lib.tether_trainer_classes(self._trainer))

    # ----- lifecycle -----

    def close(self) -> None:
        """Ends the trainer and frees the model; calls afterwards raise EngineError."""
        if getattr(self, "_trainer", None) and self._trainer.value:
            self._lib.tether_trainer_destroy(self._trainer)
            self._trainer = ctypes.c_void_p()
        if getattr(self, "_model", None) and self._model.value:
            self._lib.tether_model_destroy(self._model)
            self._model = ctypes.c_void_p()

    def _live(self) -> None:
        if not (getattr(self, "_trainer", None) and self._trainer.value):
            raise EngineError(f"{self.source}: the trainer is closed", "invalid_argument")

    # ----- training -----

    def _rows(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        if x.ndim < 1 or x.size != len(x) * self.input_elements:
            raise EngineError(f"{self.source}: inputs of shape {x.shape}; each row must hold "
                              f"the head input's {self.input_elements} values",
                              "invalid_argument")
        return x.reshape(len(x), self.input_elements)

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One optimizer step on up to `batch_size` rows; returns the loss before it."""
        self._live()
        x = self._rows(x)
        labels = self._labels(x, y)
        loss = ctypes.c_float()
        B.check(self._lib.tether_trainer_step(self._trainer, x.ctypes.data, labels.ctypes.data,
                                              len(x), ctypes.byref(loss)), self.source)
        return float(loss.value)

    def _labels(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        labels = np.ascontiguousarray(y, np.int32).reshape(-1)
        if len(labels) != len(x):
            raise EngineError(f"{self.source}: {len(x)} inputs but {len(labels)} labels",
                              "invalid_argument")
        return labels

    def gradients(self, x: np.ndarray, y: np.ndarray) -> float:
        """Loss and gradients (in `params()`) of up to `batch_size` rows, dropout off, with no
        update."""
        self._live()
        x = self._rows(x)
        labels = self._labels(x, y)
        loss = ctypes.c_float()
        B.check(self._lib.tether_trainer_gradients(self._trainer, x.ctypes.data,
                                                   labels.ctypes.data, len(x),
                                                   ctypes.byref(loss)), self.source)
        return float(loss.value)

    def fisher_diagonal(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """The empirical Fisher diagonal of every trained tensor at the current weights: the
        mean over examples of each per-example gradient squared (EWC's F)."""
        x = self._rows(x)
        y = self._labels(x, y)
        views = self._views()
        total = {name: np.zeros(len(v), np.float64) for name, (v, _) in views.items()}
        for i in range(len(x)):
            self.gradients(x[i:i + 1], y[i:i + 1])
            for name, (_, grad) in views.items():
                total[name] += np.square(grad, dtype=np.float64)
        return {k: (v / max(len(x), 1)).astype(np.float32) for k, v in total.items()}

    def set_penalty(self, fisher: dict[str, np.ndarray],
                    anchor: Optional[dict[str, np.ndarray]] = None) -> None:
        """EWC: the Fisher diagonal and the anchor weights (default: the current ones) per
        trained tensor name (needs `ewc_lambda` > 0)."""
        sizes = {name: v.size for name, (v, _) in self._views().items()}
        names = list(sizes)
        unknown = sorted(set(fisher) - set(names))
        if unknown:
            raise EngineError(f"{self.source}: no trained tensor {unknown} (trained: {names})",
                              "invalid_argument")
        for i, name in enumerate(names):
            if name not in fisher:
                continue
            f = np.ascontiguousarray(fisher[name], np.float32).reshape(-1)
            a = (np.ascontiguousarray(anchor[name], np.float32).reshape(-1)
                 if anchor is not None and name in anchor else None)
            expected = sizes[name]
            if f.size != expected or (a is not None and a.size != expected):
                raise EngineError(f"{self.source}: '{name}' has {expected} values; got Fisher "
                                  f"{f.size}" + (f", anchor {a.size}" if a is not None else ""),
                                  "invalid_argument")
            B.check(self._lib.tether_trainer_set_penalty(
                self._trainer, i, f.ctypes.data, None if a is None else a.ctypes.data),
                f"{self.source}: {name}")

    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int = 1, *, shuffle: bool = True,
            seed: int = 0) -> list[float]:
        """`epochs` passes over (x, y) in batches of `batch_size` (reshuffled each epoch);
        returns each epoch's mean loss."""
        x = self._rows(x)
        y = np.asarray(y, np.int32).reshape(-1)
        rng = np.random.default_rng(seed)
        history = []
        for _ in range(int(epochs)):
            order = rng.permutation(len(x)) if shuffle else np.arange(len(x))
            losses, rows = 0.0, 0
            for i in range(0, len(x), self.batch_size):
                idx = order[i:i + self.batch_size]
                losses += self.step(x[idx], y[idx]) * len(idx)
                rows += len(idx)
            history.append(losses / max(rows, 1))
        return history

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The head's output (probabilities when it ends in softmax) for every row."""
        self._live()
        x = self._rows(x)
        out = np.empty((len(x), self.classes), np.float32)
        for i in range(0, len(x), self.batch_size):
            part = np.ascontiguousarray(x[i:i + self.batch_size])
            B.check(self._lib.tether_trainer_predict(self._trainer, part.ctypes.data, len(part),
                                                     out[i:].ctypes.data), self.source)
        return out

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> float:
        """Top-1 accuracy of the current weights."""
        return float(np.mean(self.predict(x).argmax(1) == np.asarray(y).reshape(-1)))

    def _views(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Model tensor name -> (values, gradient) as views into the trainer's arena, not
        copies: they change with every step and die with the trainer."""
        self._live()
        out = {}
        for i in range(int(self._lib.tether_trainer_param_count(self._trainer))):
            name, n = ctypes.c_char_p(), ctypes.c_size_t()
            value, grad = ctypes.c_void_p(), ctypes.c_void_p()
            B.check(self._lib.tether_trainer_param(self._trainer, i, ctypes.byref(name),
                                                   ctypes.byref(n), ctypes.byref(value),
                                                   ctypes.byref(grad)), self.source)
            count = int(n.value)
            as_array = lambda p: np.ctypeslib.as_array(  # noqa: E731
                ctypes.cast(p, ctypes.POINTER(ctypes.c_float)), (count,))
            out[(name.value or b"").decode("utf-8")] = (as_array(value), as_array(grad))
        return out

    def params(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Model tensor name -> (current values, gradient of the last step), copies."""
        return {k: (v.copy(), g.copy()) for k, (v, g) in self._views().items()}

    def export(self) -> bytes:
        """The whole `.tmodel` with the trained weights (checksum recomputed)."""
        self._live()
        size = int(self._lib.tether_trainer_export_size(self._trainer))
        buf = ctypes.create_string_buffer(size)
        B.check(self._lib.tether_trainer_export(self._trainer, buf, size), self.source)
        return buf.raw

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Writes `export()` to `path`, whole or not at all."""
        from tether._internal.files import atomic_write_bytes

        atomic_write_bytes(path, self.export())

    def __repr__(self) -> str:
        return (f"Trainer({self.source!r}, inputs={self.input_elements}, "
                f"classes={self.classes}, arena_bytes={self.arena_bytes})")
