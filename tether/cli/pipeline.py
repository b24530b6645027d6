"""`tether pipeline run|check|config` and `tether demo`: the whole road from one config.

Only typer and the standard library are imported at module level, so `--help` is fast.
Progress goes to stderr (a rich bar per stage); the closing table to stdout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from tether.cli._common import fail, quiet_tensorflow

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="The whole road from one TOML config: search, compress, convert, learn.")

SET_HELP = ("Override one key, e.g. --set search.max_latency_ms=0.03 (TOML value; repeat for "
            "more)")


def _overrides(items: Optional[list[str]]) -> dict[str, dict[str, Any]]:
    """`section.key=value` pairs as nested sections (values read as TOML)."""
    import tomllib

    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        section, dot, key = name.strip().partition(".")
        if not sep or not dot or not section or not key:
            fail(f"--set {item}: give section.key=value, e.g. search.max_latency_ms=0.03")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()  # a bare word is a string
        out.setdefault(section, {})[key] = value
    return out


def _config(path: Path, sets: Optional[list[str]], out: Optional[Path] = None) -> Any:
    from tether.errors import TetherError
    from tether.pipeline.config import load_config

    more = _overrides(sets)
    if out is not None:
        more.setdefault("run", {})["out_dir"] = str(out)
    try:
        return load_config(path, more)
    except TetherError as exc:
        fail(str(exc))


class _Bars:
    """The run's `Progress`: one rich bar per stage, a line per finished stage."""

    def __init__(self, console: Any, bar: Any) -> None:
        self.console, self.bar = console, bar
        self.tasks: dict[str, Any] = {}

    def start(self, stage: str, cached: bool) -> None:
        if not cached:
            self.tasks[stage] = self.bar.add_task(stage, total=None)

    def update(self, stage: str, completed: float, total: Optional[float], text: str) -> None:
        if stage in self.tasks:
            self.bar.update(self.tasks[stage], completed=completed, total=total,
                            description=f"{stage}: {text}" if text else stage)

    def done(self, record: Any) -> None:
        if record.name in self.tasks:
            self.bar.remove_task(self.tasks.pop(record.name))
        how = "cached" if record.cached else f"{record.seconds:.1f} s"
        self.console.print(f"[green]✓[/] {record.name} ({how})", highlight=False)


def _run(config: Any, as_json: bool) -> None:
    import warnings

    quiet_tensorflow(litert=True)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from tether._internal.quiet import native_stderr_quiet, quiet_loggers
    from tether.errors import TetherError
    from tether.pipeline import run

    if "federated" in config.learn.patterns:  # Flower's loggers, set up when it loads
        with native_stderr_quiet():
            import flwr.simulation  # noqa: F401
    quiet_loggers()
    err = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # Keras' numpy 2 notes
                result = run(config, _Bars(err, bar))
        except TetherError as exc:
            fail(str(exc))
    if as_json:
        typer.echo(json.dumps(result.summary, default=str))
        return
    from rich.table import Table

    table = Table("what", "chosen", "why", title=config.run.title, show_lines=True)
    for row in result.summary["summary"]:
        table.add_row(row["what"], row["value"], row["why"])
    inf = result.summary.get("inference")
    out = Console()
    out.print(table)
    if inf:
        t = Table("engine", "precision", "test accuracy", "median ms", "p90 ms", "model bytes",
                  title=f"the deployed model, {inf['threads']} thread(s)")
        for e in inf["engines"]:
            t.add_row(e["engine"], e["precision"], f"{e['accuracy']:.4f}",
                      f"{e['median_ms']:.4f}", f"{e['p90_ms']:.4f}", f"{e['model_bytes']:,}")
        out.print(t)
    ran = [r.name for r in result.stages if not r.cached]
    out.print(f"{len(ran)} stage(s) ran, {len(result.stages) - len(ran)} from cache; "
              f"{result.seconds:.0f} s. Report: {result.report}", highlight=False)


@app.command("run")
def run_cmd(config: Path = typer.Argument(..., help="The pipeline config (.toml)"),
            sets: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
            out: Optional[Path] = typer.Option(None, "--out", help="Output folder (replaces "
                                               "[run] out_dir)"),
            as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON "
                                         "instead of tables")) -> None:
    """Run every stage CONFIG asks for; stages whose inputs and settings did not change come
    from the cache, and an interrupted run resumes."""
    _run(_config(config, sets, out), as_json)


@app.command()
def check(config: Path = typer.Argument(..., help="The pipeline config (.toml)"),
          sets: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP)) -> None:
    """Validate CONFIG without running anything; print it with every default filled in."""
    typer.echo(_config(config, sets).to_toml())


@app.command("config")
def show_config(demo: bool = typer.Option(False, "--demo", help="The demo's config instead "
                                          "of the defaults"),
                quick: bool = typer.Option(False, "--quick", help="With --demo: the quick "
                                           "demo's")) -> None:
    """Print a complete config (every key, with its default) to start from."""
    from tether.pipeline.config import PipelineConfig
    from tether.pipeline.demo import demo_config

    typer.echo((demo_config(quick) if demo else PipelineConfig()).to_toml())


def demo(quick: bool = typer.Option(False, "--quick", help="The shortest training (within 3 "
                                    "minutes on 2 cores; the full demo within 15)"),
         out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default "
                                            "out/demo, or out/demo-quick)"),
         sets: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
         as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON")
         ) -> None:
    """The whole road on mnist5k: supernet, library, this machine's latency model, search,
    compression, conversion, then inference, transfer to digits 8 and 9 (held back from the
    cloud) and a federated run, with an HTML report."""
    from tether.errors import TetherError
    from tether.pipeline.demo import demo_config

    if out is not None and out.exists() and not out.is_dir():
        fail(f"--out {out}: is a file; give the folder to write the demo's outputs in")
    try:
        config = demo_config(quick, str(out) if out is not None else None, _overrides(sets))
    except TetherError as exc:
        fail(str(exc))
    _run(config, as_json)
