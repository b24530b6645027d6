"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Union


@contextlib.contextmanager
def atomic_path(path: Union[str, os.PathLike]) -> Iterator[Path]:
    """Yields a temporary file name beside `path` (same suffix, for writers that want a name,
    such as Keras' `model.save`) that replaces `path` only when the block ends without error.

    On any exception the temporary file is removed and `path` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}",
                               dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: Union[str, os.PathLike]) -> Iterator[IO[bytes]]:
    """Yields a binary file that replaces `path` only when the block ends without error.

    The data goes to a temporary file in the same folder (`atomic_path`), is flushed and
    fsynced, then renamed over `path`; on any exception the temporary file is removed and
    `path` is left as it was.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def atomic_write_bytes(path: Union[str, os.PathLike], data: bytes) -> None:
    """Writes `data` to `path` atomically (see `atomic_write`)."""
    with atomic_write(path) as f:
        f.write(data)


def atomic_write_text(path: Union[str, os.PathLike], text: str) -> None:
    """Writes UTF-8 `text` to `path` atomically (see `atomic_write`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_keras(model: Any, path: Union[str, os.PathLike]) -> None:
    """`model.save(path)` so that `path` is whole or untouched (temporary file, then rename)."""
    with atomic_path(path) as tmp:
        model.save(tmp)
