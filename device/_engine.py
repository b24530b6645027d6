"""`Engine`: run a `.tmodel` in the C engine from Python."""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Self, Sequence, Union

import numpy as np

from tether.device import _binding as B
from tether.errors import EngineError

try:  # the one-step C call of run() (device/_run.c); without it run() goes through ctypes
    from tether.device import _run as _fast  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - a build without the extension
    _fast = None

__all__ = ["Engine", "ModelMemory", "TensorInfo", "model_memory"]

_DTYPES: dict[int, np.dtype] = {0: np.dtype(np.float32), 1: np.dtype(np.int8), 2: np.dtype(np.uint8),
           3: np.dtype(np.int32)}


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output as the engine sees it."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float = 0.0
    zero_point: int = 0

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def _aligned_copy(data: bytes) -> tuple[np.ndarray, int]:
    """A 64-byte-aligned copy of `data` (the engine uses weights in place)."""
    raw = np.empty(len(data) + B.ARENA_ALIGNMENT, dtype=np.uint8)
    offset = (-raw.ctypes.data) % B.ARENA_ALIGNMENT
    view = raw[offset:offset + len(data)]
    view[:] = np.frombuffer(data, dtype=np.uint8)
    return raw, raw.ctypes.data + offset


@dataclass(frozen=True)
class ModelMemory:
    """What loading a model asks of the engine's allocator (`tether_model_memory`).

    Every figure is in bytes and counts the requests of `tether_model_load` with the kernels
    of `isa`: the model struct, the decoded sparse constants, the packed weights and the
    load's temporaries. Each request is a multiple of 64 bytes at most 64-aligned, so a
    never-freeing pool of `total_bytes` (64-aligned) is enough. Sessions (the arena, unless
    the caller passes one) come on top.
    """

    total_bytes: int
    """Sum of every request: what a bump allocator needs."""
    peak_bytes: int
    """Most bytes held at once during the load (an allocator that reuses freed blocks)."""
    resident_bytes: int
    """Bytes the loaded model holds until it is destroyed."""
    largest_block_bytes: int
    """Largest single request."""
    isa: str
    """The instruction set whose kernels (and packed layout) the figures are for."""


def model_memory(model: Union[str, os.PathLike, bytes, bytearray, memoryview]) -> ModelMemory:
    """Bytes `Engine(model)` will ask the engine's allocator for, without loading the model.

    The file is validated exactly as loading validates it, so a damaged file raises the
    same `EngineError` (status and message) that `Engine(model)` would.

    >>> model_memory("model.tmodel").total_bytes  # doctest: +SKIP
    5184

    Args:
        model: Path to a `.tmodel` file (read into memory, not kept), or its bytes.

    Returns:
        The figures for the current ISA (`TETHER_ISA`, else the best the CPU has).

    Raises:
        EngineError: the engine rejects the file (message names the field at fault), or
            the path cannot be read (status "io_error").
    """
    if isinstance(model, (bytes, bytearray, memoryview)):
        source, data = "<bytes>", bytes(model)
    else:
        source = str(model)
        try:
            data = Path(model).read_bytes()
        except OSError as exc:
            raise EngineError(f"{model}: cannot read ({exc.strerror or exc})", "io_error") from exc
    lib = B.lib()
    raw, address = _aligned_copy(data)
    total, peak, resident, largest = (ctypes.c_size_t() for _ in range(4))
    status = lib.tether_model_memory(address, len(data), None, ctypes.byref(total),
                                     ctypes.byref(peak), ctypes.byref(resident),
                                     ctypes.byref(largest))
    del raw
    B.check(status, source)
    return ModelMemory(int(total.value), int(peak.value), int(resident.value),
                       int(largest.value), B.isa())


class _Closeable:
    """What the engine's handle classes share: `with` and garbage collection call close()."""

    def close(self) -> None:
        raise NotImplementedError

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _as_input_dtype(source: str, info: TensorInfo, a: np.ndarray) -> np.ndarray:
    """`a` ready for input `info`: an int32 input (ids) takes integers only, and an int64 (or
    wider unsigned) array is narrowed to int32 after a range check that names the value."""
    if info.dtype != np.int32:
        return a
    if a.dtype.kind not in "iub":
        raise EngineError(f"{source}: input '{info.name}' is int32; received a {a.dtype} array "
                          "(pass integer ids, e.g. np.int32 or np.int64)", "invalid_argument")
    if a.dtype.kind != "b" and (a.dtype.itemsize > 4 or a.dtype == np.uint32) and a.size:
        lo, hi = np.iinfo(np.int32).min, np.iinfo(np.int32).max
        flat = a.reshape(-1)
        outside = np.flatnonzero((flat < lo) | (flat > hi))
        if outside.size:
            at = np.unravel_index(int(outside[0]), a.shape)
            raise EngineError(f"{source}: input '{info.name}' is int32; value "
                              f"{int(flat[outside[0]])} at index {tuple(int(i) for i in at)} "
                              f"is outside int32's range [{lo}, {hi}]", "invalid_argument")
    return a.astype(np.int32, copy=False)


class Engine(_Closeable):
    """A loaded model and one session of the C engine.

    `Engine(path_or_bytes, threads=1).run(x)` converts `x` to the input dtype, runs the
    graph and returns the output array (a list when the model has several outputs). An int32
    input (ids) takes integer arrays only; int64 ones are narrowed with a range check, and an
    id outside a GATHER's table fails the run with the engine's error naming it.

    One `Engine` may be shared by several Python threads: runs are serialized on a lock
    (one session, one arena; a run holds the lock from the first input to the last output),
    and `close()` waits for the run in flight, after which every call raises EngineError.
    For runs in parallel, give each thread its own `Engine`.

    Args:
        model: Path to a `.tmodel` file, or its bytes (a `bytes` object is read in place and
            kept referenced; a bytearray or memoryview is copied, since it may change).
        threads: Worker threads per invoke, an int in [1, MAX_THREADS] (default 1).

    Raises:
        EngineError: the engine rejected the file (message names the field at fault), or
            `threads` is not an int in [1, MAX_THREADS].
    """

    MAX_THREADS = B.MAX_THREADS

    def __init__(self, model: Union[str, os.PathLike, bytes, bytearray, memoryview],
                 threads: int = 1) -> None:
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) \
                or not 1 <= int(threads) <= B.MAX_THREADS:
            raise EngineError(f"Engine threads must be an int in [1, {B.MAX_THREADS}]. "
                              f"Received: threads={threads!r}", "invalid_argument")
        threads = int(threads)
        self._lock = threading.Lock()
        self._lib = B.lib()
        self._model = ctypes.c_void_p()
        self._session = ctypes.c_void_p()
        self._buffer: object = None
        self.threads = threads
        if isinstance(model, (bytes, bytearray, memoryview)):
            self.source = "<bytes>"
            address = ctypes.cast(ctypes.c_char_p(model), ctypes.c_void_p).value or 0 \
                if isinstance(model, bytes) else 0
            if address and address % 16 == 0:
                # immutable bytes: the engine reads them in place (kept alive by the Engine);
                # its kernels use packed copies of the weights, so 16-byte alignment costs
                # nothing measurable (MobileNetV2, BENCHMARKS.md) and saves a copy of the file
                self._buffer = model
            else:
                self._buffer, address = _aligned_copy(bytes(model))
            status = self._lib.tether_model_load(address, len(model), None,
                                                 ctypes.byref(self._model))
        else:
            self.source = str(model)
            if not Path(model).is_file():
                raise EngineError(f"{model}: no such file", "io_error")
            status = self._lib.tether_model_load_file(os.fsencode(model),
                                                      ctypes.byref(self._model))
        B.check(status, self.source)
        try:
            size = ctypes.c_size_t()
            B.check(self._lib.tether_session_arena_size(self._model, ctypes.byref(size)),
                    self.source)
            self.arena_bytes = int(size.value)
            B.check(self._lib.tether_session_create(self._model, None, 0, threads,
                                                    ctypes.byref(self._session)), self.source)
            self.inputs = self._io(B.IO_INPUT)
            self.outputs = self._io(B.IO_OUTPUT)
        except BaseException:
            self.close()
            raise
        self._out_buffers = [np.empty(t.shape, t.dtype) for t in self.outputs]
        # one input and one output: run() copies a ready array into the input's arena
        # storage and the output out of its own (tether_session_io_data), one C call a run
        self._invoke = self._lib.tether_session_invoke
        self._direct = (self._io_view(B.IO_INPUT, self.inputs[0]),
                        self._io_view(B.IO_OUTPUT, self.outputs[0])) \
            if len(self.inputs) == 1 and len(self.outputs) == 1 else None
        # _run.run's addresses: tether_session_invoke and the two arena views
        self._fast_args = (ctypes.cast(self._invoke, ctypes.c_void_p).value,
                           self._direct[0].ctypes.data, self._direct[1].ctypes.data) \
            if self._direct is not None and _fast is not None else None

    def _io_view(self, kind: int, info: TensorInfo) -> np.ndarray:
        """A numpy view of the arena storage of input/output `info` (valid while the
        session lives: run() uses it under the lock, after checking the session is open)."""
        ptr = ctypes.c_void_p()
        B.check(self._lib.tether_session_io_data(self._session, kind, 0, ctypes.byref(ptr)),
                self.source)
        nbytes = int(np.prod(info.shape, dtype=np.int64)) * np.dtype(info.dtype).itemsize
        raw = (ctypes.c_ubyte * nbytes).from_address(int(ptr.value or 0))
        return np.frombuffer(memoryview(raw), dtype=info.dtype).reshape(info.shape)

    def _io(self, kind: int) -> list[TensorInfo]:
        infos = []
        for i in range(self._lib.tether_model_io_count(self._model, kind)):
            name = self._lib.tether_model_io_name(self._model, kind, i).decode("utf-8")
            ndim = ctypes.c_size_t()
            dims = (ctypes.c_int32 * B.MAX_DIMS)()
            dtype = ctypes.c_int()
            B.check(self._lib.tether_model_io_shape(self._model, kind, i, ctypes.byref(ndim),
                                                    dims, ctypes.byref(dtype)), self.source)
            scale, zp = ctypes.c_float(), ctypes.c_int32()
            B.check(self._lib.tether_model_io_quantization(self._model, kind, i,
                                                           ctypes.byref(scale),
                                                           ctypes.byref(zp)), self.source)
            infos.append(TensorInfo(name, tuple(int(d) for d in dims[:ndim.value]),
                                    _DTYPES[dtype.value], float(scale.value), int(zp.value)))
        return infos

    @property
    def op_count(self) -> int:
        return int(self._lib.tether_model_op_count(self._model))

    def close(self) -> None:
        """Frees the session and the model once the run in flight (if any) has finished;
        the engine cannot run afterwards (calls raise EngineError). Closing twice is fine."""
        lock = getattr(self, "_lock", None)
        if lock is None:  # __init__ failed before the lock existed
            return
        with lock:
            if getattr(self, "_session", None) and self._session.value:
                self._lib.tether_session_destroy(self._session)
                self._session = ctypes.c_void_p()
            if getattr(self, "_model", None) and self._model.value:
                self._lib.tether_model_destroy(self._model)
                self._model = ctypes.c_void_p()

    def _bind(self, x: Union[np.ndarray, Sequence[np.ndarray], Mapping[str, np.ndarray]]
              ) -> list[np.ndarray]:
        if isinstance(x, Mapping):
            names = [t.name for t in self.inputs]
            unknown = sorted(set(x) - set(names))
            missing = [n for n in names if n not in x]
            if unknown or missing:
                raise EngineError(f"{self.source}: inputs are {names}; "
                                  f"missing {missing}, unknown {unknown}", "invalid_argument")
            return [np.asarray(x[n]) for n in names]
        if isinstance(x, (list, tuple)):
            arrays = [np.asarray(a) for a in x]
        else:
            arrays = [np.asarray(x)]
        if len(arrays) != len(self.inputs):
            raise EngineError(f"{self.source}: the model has {len(self.inputs)} inputs "
                              f"{[t.name for t in self.inputs]}; received {len(arrays)} arrays",
                              "invalid_argument")
        return arrays

    def run(self, x: Union[np.ndarray, Sequence[np.ndarray], Mapping[str, np.ndarray]]
            ) -> Union[np.ndarray, list[np.ndarray]]:
        """Runs the model.

        Each input is either exactly the model's input shape, that shape without its batch
        dimension, or a stack of N such items when the model's batch is 1 (run one by one).

        Returns:
            The output array, or a list when the model has several outputs.
        """
        if self._direct is not None and type(x) is np.ndarray:
            y = self._run_direct(x)
            if y is not None:
                return y
        arrays = [_as_input_dtype(self.source, info, a) for info, a in zip(self.inputs,
                                                                           self._bind(x))]
        modes = set()
        batches = []
        for info, a in zip(self.inputs, arrays):
            if a.shape == info.shape:
                modes.add("exact")
                batches.append(a[None])
            elif a.shape == info.shape[1:]:
                modes.add("single")
                batches.append(a[None])
            elif info.shape and info.shape[0] == 1 and a.ndim == len(info.shape) \
                    and a.shape[1:] == info.shape[1:]:
                modes.add("stack")
                batches.append(a[:, None])
            else:
                raise EngineError(f"{self.source}: input '{info.name}' expects shape "
                                  f"{info.shape}; received {a.shape}", "invalid_argument")
        counts = [len(b) for b in batches]
        if len(set(counts)) != 1:
            raise EngineError(f"{self.source}: inputs disagree on the batch size: {counts}",
                              "invalid_argument")
        items = [[np.ascontiguousarray(b[k].reshape(info.shape), dtype=info.dtype)
                  for info, b in zip(self.inputs, batches)] for k in range(counts[0])]
        with self._lock:
            results = self._run_locked(items)
        return self._shape_outputs(results, modes)

    def _run_direct(self, x: np.ndarray) -> np.ndarray | None:
        """One input in the input's dtype and shape (or that shape without its batch): one
        copy into the arena, the invoke, one copy out (None: run() takes the general path).
        Kept lean: on a small model the Python around the invoke is a third of the call."""
        assert self._direct is not None
        x_view, y_view = self._direct
        if x.dtype != x_view.dtype:
            return None
        shape = x.shape
        if shape == x_view.shape:
            y_shape = None
        elif shape == x_view.shape[1:]:
            y_shape = y_view.shape[1:] if y_view.shape and y_view.shape[0] == 1 else y_view.shape
        else:
            return None
        with self._lock:
            session = self._session
            if not session.value:
                raise EngineError(f"{self.source}: the engine is closed", "invalid_argument")
            if self._fast_args is not None and x.flags.c_contiguous:
                # one C call: copy in, invoke (GIL released), copy out into y
                y = np.empty(y_view.shape, y_view.dtype)
                invoke, x_addr, y_addr = self._fast_args
                status = _fast.run(invoke, session.value, x_addr, x, y_addr, y)
            else:
                np.copyto(x_view, x if y_shape is None else x.reshape(x_view.shape))
                status = self._invoke(session)
                y = y_view.copy() if status == 0 else y_view
            if status:
                B.check(status, self.source)
        return y if y_shape is None else y.reshape(y_shape)

    def _run_locked(self, items: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
        """Sets, invokes and reads back each item; the caller holds the lock."""
        if not self._session.value:
            raise EngineError(f"{self.source}: the engine is closed", "invalid_argument")
        results: list[list[np.ndarray]] = [[] for _ in self.outputs]
        for item_inputs in items:
            for i, (info, item) in enumerate(zip(self.inputs, item_inputs)):
                B.check(self._lib.tether_session_set_input(self._session, i, item.ctypes.data,
                                                           item.nbytes),
                        f"{self.source}: input '{info.name}'")
            B.check(self._lib.tether_session_invoke(self._session), self.source)
            for j, buf in enumerate(self._out_buffers):
                B.check(self._lib.tether_session_get_output(self._session, j, buf.ctypes.data,
                                                            buf.nbytes), self.source)
                results[j].append(buf.copy())
        return results

    def _shape_outputs(self, results: list[list[np.ndarray]], modes: set[str]
                       ) -> Union[np.ndarray, list[np.ndarray]]:
        outs = []
        for info, r in zip(self.outputs, results):
            batched_out = bool(info.shape) and info.shape[0] == 1
            if modes == {"single"} and batched_out:
                outs.append(r[0].reshape(info.shape[1:]))
            elif "stack" in modes and batched_out:
                outs.append(np.concatenate(r, axis=0))
            elif "stack" in modes:
                outs.append(np.stack(r))
            else:
                outs.append(r[0])
        return outs[0] if len(outs) == 1 else outs

    def __repr__(self) -> str:
        ins = ", ".join(f"{t.name}{list(t.shape)}" for t in self.inputs)
        outs = ", ".join(f"{t.name}{list(t.shape)}" for t in self.outputs)
        return f"Engine({self.source!r}, inputs=[{ins}], outputs=[{outs}], threads={self.threads})"
