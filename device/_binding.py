"""ctypes binding over the public C header `device/runtime/include/tether/tether.h`.

This module only mirrors the header: the library is found, every function gets its
argument and result types, and a failed status becomes `EngineError` carrying the
engine's own message. One struct crosses the boundary, `tether_train_config`, mirrored
field by field in `TrainConfig` (its size is checked against the library's).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Optional

from tether.errors import EngineError

HERE = Path(__file__).resolve().parent

STATUS_NAMES = (
    "success",
    "invalid_argument",
    "format_error",
    "version_mismatch",
    "unsupported_op",
    "unsupported_hardware",
    "out_of_memory",
    "io_error",
)
IO_INPUT, IO_OUTPUT = 0, 1
MAX_DIMS = 6
MAX_THREADS = 64  # TETHER_MAX_THREADS in tether.h (a test keeps them equal)
ARENA_ALIGNMENT = 64


class TrainConfig(ctypes.Structure):
    """`tether_train_config` (tether.h), field by field."""

    _fields_ = [("head_input", ctypes.c_char_p), ("batch_size", ctypes.c_uint32),
                ("optimizer", ctypes.c_uint32), ("learning_rate", ctypes.c_float),
                ("momentum", ctypes.c_float), ("beta_1", ctypes.c_float),
                ("beta_2", ctypes.c_float), ("epsilon", ctypes.c_float),
                ("l2", ctypes.c_float), ("dropout", ctypes.c_float),
                ("schedule", ctypes.c_uint32), ("decay_steps", ctypes.c_uint32),
                ("final_lr_ratio", ctypes.c_float), ("train_layers", ctypes.c_uint32),
                ("seed", ctypes.c_uint64), ("ewc_lambda", ctypes.c_float)]


def _find_library() -> Path:
    env = os.environ.get("TETHER_LIB")
    if env:
        p = Path(env)
        if not p.is_file():
            raise EngineError(f"TETHER_LIB={env}: no such file")
        return p
    candidates = sorted(HERE.glob("_libtether*.so")) + sorted(HERE.glob("_libtether*.dylib"))
    candidates += [HERE / "runtime" / "build-py" / "libtether.so",
                   HERE / "runtime" / "build" / "libtether.so"]
    for c in candidates:
        if c.is_file():
            return c
    raise EngineError(
        f"the tether engine library was not found next to {HERE} (looked for _libtether*.so); "
        "build it with `pip install -e .` (or `make setup`), or set TETHER_LIB to libtether.so"
    )


_lib: Optional[ctypes.CDLL] = None


def lib() -> ctypes.CDLL:
    """The loaded engine library, with typed functions (loaded once)."""
    global _lib
    if _lib is not None:
        return _lib
    path = _find_library()
    try:
        so = ctypes.CDLL(str(path))
    except OSError as exc:
        raise EngineError(f"{path}: cannot load the engine library ({exc})") from exc
    c = ctypes
    vp, sz, u32, i32 = c.c_void_p, c.c_size_t, c.c_uint32, c.c_int32
    sigs = {
        "tether_status_string": (c.c_char_p, [c.c_int]),
        "tether_last_error": (c.c_char_p, []),
        "tether_isa": (c.c_char_p, []),
        "tether_set_isa": (c.c_int, [c.c_char_p]),
        "tether_model_load": (c.c_int, [vp, sz, vp, c.POINTER(vp)]),
        "tether_model_load_file": (c.c_int, [c.c_char_p, c.POINTER(vp)]),
        "tether_model_memory": (c.c_int, [vp, sz, vp, c.POINTER(sz), c.POINTER(sz),
                                          c.POINTER(sz), c.POINTER(sz)]),
        "tether_model_destroy": (None, [vp]),
        "tether_model_io_count": (sz, [vp, c.c_int]),
        "tether_model_io_name": (c.c_char_p, [vp, c.c_int, sz]),
        "tether_model_io_find": (c.c_int, [vp, c.c_int, c.c_char_p, c.POINTER(sz)]),
        "tether_model_io_shape": (c.c_int, [vp, c.c_int, sz, c.POINTER(sz), c.POINTER(i32),
                                            c.POINTER(c.c_int)]),
        "tether_model_io_quantization": (c.c_int, [vp, c.c_int, sz, c.POINTER(c.c_float),
                                                   c.POINTER(i32)]),
        "tether_model_op_count": (sz, [vp]),
        "tether_session_arena_size": (c.c_int, [vp, c.POINTER(sz)]),
        "tether_session_create": (c.c_int, [vp, vp, sz, u32, c.POINTER(vp)]),
        "tether_session_destroy": (None, [vp]),
        "tether_session_set_input": (c.c_int, [vp, sz, vp, sz]),
        "tether_session_get_output": (c.c_int, [vp, sz, vp, sz]),
        "tether_session_io_data": (c.c_int, [vp, c.c_int, sz, c.POINTER(vp)]),
        "tether_session_invoke": (c.c_int, [vp]),
        "tether_train_config_default": (None, [c.POINTER(TrainConfig)]),
        "tether_train_config_size": (sz, []),
        "tether_trainer_arena_size": (c.c_int, [vp, c.POINTER(TrainConfig), c.POINTER(sz)]),
        "tether_trainer_create": (c.c_int, [vp, c.POINTER(TrainConfig), vp, sz,
                                            c.POINTER(vp)]),
        "tether_trainer_step": (c.c_int, [vp, vp, vp, sz, c.POINTER(c.c_float)]),
        "tether_trainer_predict": (c.c_int, [vp, vp, sz, vp]),
        "tether_trainer_gradients": (c.c_int, [vp, vp, vp, sz, c.POINTER(c.c_float)]),
        "tether_trainer_set_penalty": (c.c_int, [vp, sz, vp, vp]),
        "tether_trainer_input_elements": (sz, [vp]),
        "tether_trainer_classes": (sz, [vp]),
        "tether_trainer_param_count": (sz, [vp]),
        "tether_trainer_param": (c.c_int, [vp, sz, c.POINTER(c.c_char_p), c.POINTER(sz),
                                           c.POINTER(vp), c.POINTER(vp)]),
        "tether_trainer_export_size": (sz, [vp]),
        "tether_trainer_export": (c.c_int, [vp, vp, sz]),
        "tether_trainer_destroy": (None, [vp]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(so, name)
        fn.restype = restype
        fn.argtypes = argtypes
    if so.tether_train_config_size() != ctypes.sizeof(TrainConfig):
        raise EngineError(f"{path}: tether_train_config is {so.tether_train_config_size()} "
                          f"bytes, the binding's {ctypes.sizeof(TrainConfig)}: the library and "
                          "tether.device are from different versions")
    _lib = so
    return so


def status_name(status: int) -> str:
    return STATUS_NAMES[status] if 0 <= status < len(STATUS_NAMES) else f"status {status}"


def isa() -> str:
    """Name of the instruction set whose kernels models loaded from now on use."""
    return (lib().tether_isa() or b"").decode("ascii", "replace")


def set_isa(name: str) -> None:
    """Kernel set for models loaded from now on ("auto", "scalar", "avx2", "avx512", "neon");
    raises EngineError when this CPU lacks it."""
    check(lib().tether_set_isa(name.encode("ascii")), f"isa {name!r}")


def check(status: int, context: str) -> None:
    """Raises EngineError with the engine's last error text unless status is success."""
    if status == 0:
        return
    detail = (lib().tether_last_error() or b"").decode("utf-8", "replace")
    name = status_name(status)
    raise EngineError(f"{context}: {name}: {detail}" if detail else f"{context}: {name}", name)
