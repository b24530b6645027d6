"""Keeping the native runtimes' start-up chatter off the terminal.

TensorFlow, absl and LiteRT print from C++ straight to file descriptor 2 when they load
(oneDNN notices, "All log messages before absl::InitializeLog()", CUDA probes), whatever
Python's logging says; tf2onnx and Flower log through Python. `native_stderr_quiet()` runs a
block with descriptor 2 pointed at a temporary file and shows what was caught only if the
block raises; `quiet_loggers()` sets those Python loggers to ERROR. `TETHER_VERBOSE=1` turns
both off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

__all__ = ["native_stderr_quiet", "quiet_loggers", "verbose"]

_LOGGERS = ("tensorflow", "absl", "tf2onnx", "flwr", "h5py")


def verbose() -> bool:
    """Whether the user asked to see the runtimes' own output (TETHER_VERBOSE=1)."""
    return os.environ.get("TETHER_VERBOSE", "") not in ("", "0")


def quiet_loggers() -> None:
    """Python loggers of TensorFlow, absl, tf2onnx and Flower to ERROR (unless verbose)."""
    if verbose():
        return
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def native_stderr_quiet() -> Iterator[None]:
    """Descriptor 2 goes to a temporary file for the block (unless verbose); what it caught is
    written to the real stderr if the block raises, so no error is lost."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            os.write(2, sink.read())
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
