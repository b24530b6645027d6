"""What every tether command shares: the one-line error, the checks made before any work
(an output path that can be written, a readable .npy), and loading TensorFlow quietly."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import typer
import typer.core

__all__ = ["OneLineErrors", "check_output", "fail", "load_npy", "print_error",
           "quiet_tensorflow"]


def print_error(message: str) -> None:
    """Prints "error: <message>" on one line of stderr (the text as given, not rich markup)."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False,
                               soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Prints "error: <message>" on one line of stderr and exits with `code`."""
    print_error(message)
    raise typer.Exit(code)


class OneLineErrors(typer.core.TyperGroup):
    """The root command group: click's usage errors (a missing argument, a value that is not
    an int or not one of the choices) print as one "error:" line naming the flag and the
    command's --help, like every other tether error, instead of a usage block and a panel."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        import click

        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode,
                                windows_expand_args, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args,
                                **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            sys.exit(exc.exit_code)  # the help text is already printed
        except click.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            print_error(exc.format_message() + hint)
            sys.exit(exc.exit_code)
        except click.Abort:
            print_error("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def load_npy(path: Path, flag: str) -> Any:
    """The array in `path` (a .npy file), or a one-line error naming `flag`."""
    import numpy as np

    if not path.is_file():
        fail(f"{flag} {path}: no such file")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        fail(f"{flag} {path}: not a .npy array file ({first})")


def check_output(path: Path | None, flag: str) -> None:
    """Fails in one line, before any work, when `path` cannot become the output file."""
    if path is None:
        return
    if path.is_dir():
        fail(f"{flag} {path}: is a folder; give the path of the file to write")
    if not path.parent.is_dir():
        fail(f"{flag} {path}: folder {path.parent} does not exist")


def quiet_tensorflow(litert: bool = False) -> None:
    """Loads TensorFlow (and LiteRT) now, with their native start-up lines kept off the
    terminal (`tether._internal.quiet`; TETHER_VERBOSE=1 shows them)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from tether._internal.quiet import native_stderr_quiet, quiet_loggers

    with native_stderr_quiet():
        import tensorflow  # noqa: F401
        if litert:
            import ai_edge_litert.interpreter  # noqa: F401
    quiet_loggers()
