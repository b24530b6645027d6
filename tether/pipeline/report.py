"""The pipeline's closing report: one self-contained HTML page, and a headless-browser check.

`write_report(summary, path)` turns the pipeline's summary dict into a single HTML file: inline
CSS, every plot a matplotlib PNG embedded as a base64 ``data:`` URI, no external URL of any
kind, and the summary itself embedded as JSON (``<script type="application/json"
id="tether-summary">``) so a test can compare the page with the stage outputs
(`read_summary`). Every number on the page is a value of the summary; plots only re-express
them (a Pareto front picked out of the library, bytes in KiB, uplink bytes summed over rounds).

`check_in_browser(path)` opens a page in headless Chromium and reports how many ``<img>``
elements decoded and which console errors the page raised (`BrowserCheck`), and can write a
full-page screenshot.

Example::

    path = write_report(summary, "out/report.html")
    check = check_in_browser(path, "out/report.png")
    assert check.ok, check
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import numbers
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Union, cast

from tether._internal.files import atomic_write_bytes, atomic_write_text
from tether.errors import TetherError

__all__ = [
    "ReportError",
    "BrowserError",
    "BrowserCheck",
    "write_report",
    "read_summary",
    "check_in_browser",
    "find_chromium",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]


class ReportError(TetherError, ValueError):
    """The summary cannot be turned into a report (a missing or malformed key or section)."""


class BrowserError(TetherError):
    """No Chromium was found, or it failed, timed out or never reported on the page."""


# ----- colours: one meaning each, on every plot -------------------------------------------

_TETHER = "#0d9488"  # tether / the chosen model (teal)
_OTHER = "#94a3b8"  # everything it is compared with (slate)
_ACCURACY = "#2563eb"  # accuracy (blue)
_LATENCY = "#d97706"  # latency (amber)
_SIZE = "#7c3aed"  # size in bytes (violet)
_LOSS = "#6b7280"  # training loss (grey)
_NEW = "#db2777"  # new classes in transfer learning (pink); old classes use _ACCURACY
_LIMIT = "#dc2626"  # a constraint (red, dashed)

_DPI = 120
_FIG_WIDTH_IN = 9.0

_RC: dict[str, Any] = {
    "font.size": 9.5,
    "axes.titlesize": 10.5,
    "axes.labelsize": 9.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.35,
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "legend.fontsize": 8.5,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "text.parse_math": False,  # model keys and engine names are text, "$" included
}


# ----- write_report --------------------------------------------------------------------------


def write_report(summary: Mapping[str, Any], path: PathLike) -> Path:
    """Writes the pipeline summary as one self-contained HTML page, atomically.

    The page has a header (``title``, ``generated``), a table of contents and one section per
    summary key present, in this order: ``scenario`` (table), ``stages`` (table), ``library``
    (accuracy-latency scatter with the Pareto front and the chosen model), ``search``
    (best accuracy and latency per generation, the latency limit), ``compression``
    (accuracy, size and latency over the steps), ``inference`` (median and p90 latency per
    engine, tether first), ``transfer`` (old- and new-class accuracy and loss per epoch),
    ``federated`` (accuracy against cumulative uplink bytes), ``summary`` (what was chosen and
    why) and ``config`` (a collapsed JSON block). A key that is missing or ``None`` leaves its
    section out, and an empty list of entries gives a sentence instead of an empty plot. NaN
    or ``None`` values are shown as "n/a" and left out of plots. The summary itself is
    embedded as JSON with NaN and infinities written as ``null`` (see `read_summary`).

    Matplotlib is imported here (Agg canvas, no pyplot, so the host's backend is untouched),
    and the file is only written once every section has rendered: on any error the file at
    ``path`` is left as it was.

    Args:
        summary: The pipeline summary. ``title`` (str) and ``stages`` (list of
            ``{"name", "cached", "seconds", "key"}``) are required; every other key is
            optional (see the pipeline's documentation for their shapes).
        path: Where to write the page; parent folders are created.

    Returns:
        The path written, as a `Path`.

    Raises:
        ReportError: ``title`` or ``stages`` is missing or malformed, or a section lacks a
            key it needs or cannot be drawn; the message names the section and the cause.
    """
    target = Path(path)
    if not isinstance(summary, Mapping):
        raise ReportError(f"{target}: the summary must be a dict. "
                          f"Received: {type(summary).__name__}")
    title = summary.get("title")
    if not isinstance(title, str):
        raise ReportError(f"{target}: summary['title'] must be a str. Received: {title!r}")
    stages = summary.get("stages")
    if not isinstance(stages, (list, tuple)):
        raise ReportError(f"{target}: summary['stages'] must be a list of stage records. "
                          f"Received: {type(stages).__name__}")

    import matplotlib

    with matplotlib.rc_context(cast(Any, _RC)):  # stubs want Literal keys
        plots = _Plots()
        sections: list[tuple[str, str, str]] = []  # (anchor, heading, body)
        for key, heading, render in _SECTIONS:
            value = summary.get(key)
            if value is None:
                continue
            try:
                body = render(value, plots)
            except ReportError:
                raise
            except Exception as exc:
                raise ReportError(
                    f"{target}: section {key!r} cannot be rendered "
                    f"({type(exc).__name__}: {exc}); check summary[{key!r}] against the "
                    f"shape write_report documents") from exc
            sections.append((key, heading, body))

    page = _page(title, summary.get("generated"), sections, _summary_json(summary))
    atomic_write_text(target, page)
    logger.info("wrote report %s (%d sections, %d plots, %d bytes)", target, len(sections),
                plots.count, len(page))
    return target


def read_summary(path: PathLike) -> dict[str, Any]:
    """Reads back the summary embedded in a page written by `write_report`.

    Args:
        path: The HTML page.

    Returns:
        The summary as JSON gives it back: tuples are lists, NaN and infinities are ``None``.

    Raises:
        ReportError: The page has no ``<script id="tether-summary">`` block or it is not JSON.
    """
    text = Path(path).read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="tether-summary">(.*?)</script>',
                  text, re.DOTALL)
    if m is None:
        raise ReportError(f"{path}: no <script id=\"tether-summary\"> block; "
                          "was the page written by tether.pipeline.report.write_report?")
    try:
        data = json.loads(m.group(1))
    except ValueError as exc:
        raise ReportError(f"{path}: the tether-summary block is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ReportError(f"{path}: the tether-summary block is not a JSON object")
    return data


# ----- formatting ----------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool) or type(v).__name__ == "bool_"


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not _is_bool(v)


def _fmt(v: Any) -> str:
    """A value as the page shows it (not escaped): ints in full, floats to 4 significant
    digits, NaN/None as "n/a", booleans as yes/no, lists comma-separated."""
    if v is None:
        return "n/a"
    if _is_bool(v):
        return "yes" if v else "no"
    if isinstance(v, numbers.Integral):
        return f"{int(v):,}"
    if isinstance(v, numbers.Real):
        f = float(v)
        if math.isnan(f):
            return "n/a"
        if math.isinf(f):
            return "∞" if f > 0 else "−∞"
        if f != 0 and (abs(f) >= 1e7 or abs(f) < 1e-3):
            return f"{f:.3e}"
        if abs(f) >= 1000:
            return f"{f:,.1f}"
        return f"{f:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def _finite(v: Any) -> float | None:
    """`v` as a float when it is a finite number, else None (for plotting)."""
    if not _is_number(v):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _nan(v: Any) -> float:
    f = _finite(v)
    return math.nan if f is None else f


def _cell(v: Any, tag: str = "td") -> str:
    cls = ' class="num"' if _is_number(v) else ""
    return f"<{tag}{cls}>{_esc(_fmt(v))}</{tag}>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
           highlight: Sequence[bool] = (), code_cols: Sequence[int] = ()) -> str:
    """An HTML table; `highlight[i]` marks row i (tether / the chosen one)."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = ' class="hl"' if i < len(highlight) and highlight[i] else ""
        cells = "".join(f"<td><code>{_esc(_fmt(v))}</code></td>" if j in code_cols
                        else _cell(v) for j, v in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return (f'<table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>')


def _kv(pairs: Sequence[tuple[str, Any]]) -> str:
    """A two-column table of name/value pairs."""
    rows = "".join(f"<tr><th>{_esc(k)}</th>{_cell(v)}</tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def _p(text: str) -> str:
    return f"<p>{_esc(text)}</p>"


def _records(value: Any, what: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{what} must be a list of records, not {type(value).__name__}")
    for i, r in enumerate(value):
        if not isinstance(r, Mapping):
            raise TypeError(f"{what}[{i}] must be a dict, not {type(r).__name__}")
    return list(value)


# ----- plots ---------------------------------------------------------------------------------


class _Plots:
    """Makes matplotlib figures on an Agg canvas (no pyplot) and turns them into <figure>s."""

    def __init__(self) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        self._figure = Figure
        self._canvas = FigureCanvasAgg
        self._locator = MaxNLocator
        self.count = 0

    def integer_x(self, ax: Any) -> None:
        """Integer ticks only on the x axis (epochs, generations, rounds)."""
        ax.xaxis.set_major_locator(self._locator(integer=True))

    def new(self, height_in: float, ncols: int = 1, nrows: int = 1,
            sharex: bool = False) -> tuple[Any, list[Any]]:
        fig = self._figure(figsize=(_FIG_WIDTH_IN, height_in), dpi=_DPI, layout="constrained")
        self._canvas(fig)
        axes = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex)
        return fig, [ax for row in axes for ax in row]

    def embed(self, fig: Any, alt: str, caption: str) -> str:
        """The figure as a <figure> with a base64 PNG; the figure is cleared afterwards."""
        try:
            buf = io.BytesIO()
            # No "Software" tEXt chunk: it would carry matplotlib's URL into the page.
            fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
            w_in, h_in = fig.get_size_inches()
        finally:
            fig.clear()  # no pyplot registry to close from; drop the artists now
        self.count += 1
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        width, height = round(w_in * 96), round(h_in * 96)  # CSS px; the PNG is 1.25x that
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(alt)}" '
                f'width="{width}" height="{height}"><figcaption>{_esc(caption)}</figcaption>'
                "</figure>")


def _label(ax: Any, x: float, y: float, text: str, color: str) -> None:
    ax.annotate(text, (x, y), xytext=(6, 6), textcoords="offset points", fontsize=8.5,
                color=color, fontweight="bold")


# ----- sections ------------------------------------------------------------------------------


def _section_scenario(d: Any, plots: _Plots) -> str:
    if not isinstance(d, Mapping):
        raise TypeError(f"scenario must be a dict, not {type(d).__name__}")
    names = {"task": "task", "dataset": "dataset", "classes": "classes",
             "holdout_classes": "held-out classes (for transfer)",
             "train_images": "training images", "test_images": "test images"}
    pairs = [(names[k], d[k]) for k in names if k in d]
    pairs += [(str(k), v) for k, v in d.items() if k not in names]
    return _kv(pairs)


def _section_stages(stages: Any, plots: _Plots) -> str:
    rows = _records(stages, "stages")
    if not rows:
        return _p("No stage ran.")
    table = _table(["stage", "cached", "seconds", "cache key"],
                   [[r["name"], bool(r.get("cached", False)), r.get("seconds"), r.get("key")]
                    for r in rows], code_cols=[3])
    return (_p("Each stage of the pipeline, in the order it ran; a cached stage was read back "
               "from its cache key instead of being recomputed.") + table)


def _pareto(points: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """The (latency, accuracy, index) points no other point beats on both: max accuracy,
    min latency; ordered by latency."""
    front: list[tuple[float, float, int]] = []
    for lat, acc, i in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((lat, acc, i))
    return front


def _section_library(d: Any, plots: _Plots) -> str:
    entries = _records(d.get("entries", []), "library.entries")
    device, chosen = d.get("device"), d.get("chosen")
    intro = (f"{len(entries)} candidate models profiled on {_fmt(device)}"
             + (f"; chosen: {chosen}." if chosen is not None else "; none chosen."))
    if not entries:
        return _p(intro + " The library is empty.")
    keys = [str(e["key"]) for e in entries]
    points = []
    for i, e in enumerate(entries):
        lat, acc = _finite(e["latency_ms"]), _finite(e["accuracy"])
        if lat is not None and acc is not None:
            points.append((lat, acc, i))
    front = _pareto(points)
    on_front = {i for _, _, i in front}
    chosen_i = keys.index(str(chosen)) if chosen is not None and str(chosen) in keys else None
    parts = [_p(intro)]
    if chosen is not None and chosen_i is None:
        parts.append(_p(f"The chosen model {chosen} is not among the library's entries."))
    if points:
        fig, (ax,) = plots.new(4.2)
        measured = [p for p in points if entries[p[2]].get("measured", True)]
        estimated = [p for p in points if not entries[p[2]].get("measured", True)]
        if measured:
            ax.scatter([p[0] for p in measured], [p[1] for p in measured], s=22, color=_OTHER,
                       alpha=0.8, label="measured on device", zorder=2)
        if estimated:
            ax.scatter([p[0] for p in estimated], [p[1] for p in estimated], s=22,
                       facecolors="none", edgecolors=_OTHER, label="estimated", zorder=2)
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color=_ACCURACY,
                linewidth=1.6, label="Pareto front", zorder=3)
        ax.scatter([p[0] for p in front], [p[1] for p in front], s=26, color=_ACCURACY,
                   zorder=4)
        if chosen_i is not None and chosen_i in {p[2] for p in points}:
            e = entries[chosen_i]
            x, y = float(e["latency_ms"]), float(e["accuracy"])
            ax.scatter([x], [y], s=130, marker="*", color=_TETHER, edgecolors="black",
                       linewidths=0.6, label="chosen", zorder=5)
            _label(ax, x, y, keys[chosen_i], _TETHER)
        lats = [p[0] for p in points]
        if min(lats) > 0 and max(lats) / min(lats) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(f"latency on {_fmt(device)} (ms)")
        ax.set_ylabel("accuracy")
        ax.set_title("Model library: accuracy against latency")
        ax.legend(loc="lower right")
        parts.append(plots.embed(
            fig, "accuracy against latency of every library entry",
            "Every library entry (filled: latency measured on the device; hollow: estimated). "
            "The blue staircase is the Pareto front: no other entry is both more accurate and "
            "faster. The star is the chosen model."))
    front_rows = [entries[i] for _, _, i in front]
    if chosen_i is not None and chosen_i not in on_front:
        front_rows.append(entries[chosen_i])
    if front_rows:
        parts.append(_p("Entries on the Pareto front" +
                        (" and the chosen one:" if chosen_i is not None
                         and chosen_i not in on_front else ":")))
        parts.append(_table(
            ["key", "accuracy", "latency (ms)", "size (bytes)", "params", "MACs", "measured"],
            [[e["key"], e.get("accuracy"), e.get("latency_ms"), e.get("size"), e.get("params"),
              e.get("macs"), e.get("measured")] for e in front_rows],
            highlight=[chosen is not None and str(e["key"]) == str(chosen) for e in front_rows],
            code_cols=[0]))
    return "".join(parts)


def _section_search(d: Any, plots: _Plots) -> str:
    history = _records(d.get("history", []), "search.history")
    constraints = d.get("constraints") or {}
    if not isinstance(constraints, Mapping):
        raise TypeError(f"search.constraints must be a dict, not {type(constraints).__name__}")
    chosen = d.get("chosen")
    parts = [_p(f"Policy {_fmt(d.get('policy'))}, {_fmt(d.get('samples'))} sampled "
                f"architectures over {len({h['generation'] for h in history})} generations.")]
    if history:
        best: dict[Any, Mapping[str, Any]] = {}
        for h in history:  # several records per generation: keep the most accurate
            g, cur = h["generation"], best.get(h["generation"])
            if cur is None or _nan(h["accuracy"]) > _nan(cur["accuracy"]):
                best[g] = h
        gens = sorted(best)
        several = len(best) < len(history)
        fig, (ax_acc, ax_lat) = plots.new(4.6, nrows=2, sharex=True)
        if several:
            ax_acc.scatter([h["generation"] for h in history],
                           [_nan(h["accuracy"]) for h in history], s=8, color=_OTHER,
                           alpha=0.5, label="all samples")
            ax_lat.scatter([h["generation"] for h in history],
                           [_nan(h["latency"]) for h in history], s=8, color=_OTHER,
                           alpha=0.5)
        ax_acc.plot(gens, [_nan(best[g]["accuracy"]) for g in gens], marker="o", markersize=3,
                    color=_ACCURACY, label="best feasible accuracy")
        ax_lat.plot(gens, [_nan(best[g]["latency"]) for g in gens], marker="o", markersize=3,
                    color=_LATENCY, label="its latency")
        limit = _finite(constraints.get("max_latency_ms"))
        if limit is not None:
            ax_lat.axhline(limit, color=_LIMIT, linestyle="--", linewidth=1.2,
                           label=f"limit {_fmt(constraints.get('max_latency_ms'))} ms")
        floor = _finite(constraints.get("min_accuracy"))
        if floor is not None:
            ax_acc.axhline(floor, color=_LIMIT, linestyle="--", linewidth=1.2,
                           label=f"minimum {_fmt(constraints.get('min_accuracy'))}")
        ax_acc.set_ylabel("accuracy")
        ax_lat.set_ylabel("latency (ms)")
        ax_lat.set_xlabel("generation")
        plots.integer_x(ax_lat)
        ax_acc.set_title("Architecture search: best feasible candidate per generation")
        ax_acc.legend(loc="lower right")
        ax_lat.legend(loc="upper right")
        parts.append(plots.embed(
            fig, "best feasible accuracy and latency per search generation",
            "Top: accuracy of the best candidate that met the constraints, per generation"
            + (" (grey dots: every sample)" if several else "") + ". Bottom: that "
            "candidate's latency" + ("; the dashed red line is the latency limit."
                                     if limit is not None else ".")
            + " Both are the search's estimates (the accuracy predictor, the device's "
            "latency model); the chosen architecture's figures below are measured."))
    if constraints:
        parts.append("<h3>Constraints</h3>" + _kv([(str(k), v) for k, v in constraints.items()]))
    if isinstance(chosen, Mapping):
        parts.append("<h3>Chosen architecture</h3>" + _kv(
            [("key", chosen.get("key")), ("accuracy", chosen.get("accuracy")),
             ("latency (ms)", chosen.get("latency_ms")), ("size (bytes)", chosen.get("size")),
             ("found by", chosen.get("source"))]))
    if history:
        parts.append("<details><summary>Search history "
                     f"({len(history)} records)</summary>" + _table(
                         ["generation", "accuracy", "latency (ms)", "size"],
                         [[h["generation"], h.get("accuracy"), h.get("latency"), h.get("size")]
                          for h in history]) + "</details>")
    return "".join(parts)


def _section_compression(d: Any, plots: _Plots) -> str:
    steps = _records(d.get("steps", []), "compression.steps")
    if not steps:
        return _p("No compression step ran.")
    names = [str(s["name"]) for s in steps]
    x = list(range(len(steps)))
    fig, axes = plots.new(3.0, ncols=3)
    series = [("accuracy", [_nan(s["accuracy"]) for s in steps], _ACCURACY),
              ("size (KiB)", [_nan(s["bytes"]) / 1024 for s in steps], _SIZE),
              ("latency (ms)", [_nan(s["latency_ms"]) for s in steps], _LATENCY)]
    for ax, (title, ys, color) in zip(axes, series):
        ax.plot(x, ys, marker="o", color=color, linewidth=1.6)
        ax.set_title(title)
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=30, ha="right")
        ax.margins(x=0.12)
    parts = [plots.embed(
        fig, "accuracy, size and latency after each compression step",
        "Accuracy, model size (KiB = 1024 bytes) and latency after each compression step, in "
        "the order they were applied; the last step is the model that ships."),
        _table(["step", "accuracy", "size (bytes)", "latency (ms)"],
               [[s["name"], s.get("accuracy"), s.get("bytes"), s.get("latency_ms")]
                for s in steps])]
    return "".join(parts)


def _is_tether(name: Any) -> bool:
    return str(name).lower().startswith("tether")


def _section_inference(d: Any, plots: _Plots) -> str:
    engines = _records(d.get("engines", []), "inference.engines")
    threads = d.get("threads")
    if not engines:
        return _p("No inference engine was benchmarked.")
    engines = sorted(engines, key=lambda e: not _is_tether(e["engine"]))  # stable: tether first
    n = len(engines)
    fig, (ax,) = plots.new(max(1.6, 0.5 * n + 1.0))
    ys = list(range(n))[::-1]  # first engine on top
    med = [_nan(e["median_ms"]) for e in engines]
    p90 = [_nan(e.get("p90_ms")) for e in engines]
    colors = [_TETHER if _is_tether(e["engine"]) else _OTHER for e in engines]
    ax.barh(ys, med, color=colors, height=0.6, zorder=2)
    upper = [max(p - m, 0.0) if math.isfinite(p) and math.isfinite(m) else 0.0
             for m, p in zip(med, p90)]
    ax.errorbar(med, ys, xerr=[[0.0] * n, upper], fmt="none", ecolor="#334155", capsize=3,
                linewidth=1, zorder=3)
    for y, e, m, u in zip(ys, engines, med, upper):
        if math.isfinite(m):
            ax.annotate(f"{_fmt(e['median_ms'])} ms (p90 {_fmt(e.get('p90_ms'))})",
                        (m + u, y), xytext=(5, 0), textcoords="offset points", va="center",
                        fontsize=8.5)
    ax.set_yticks(ys)
    ax.set_yticklabels([str(e["engine"]) for e in engines])
    ax.set_xlabel(f"latency per inference (ms), {_fmt(threads)} thread(s)")
    ax.set_title("Inference engines: median latency")
    ax.grid(axis="y", visible=False)
    ax.margins(x=0.25)
    return "".join([
        plots.embed(fig, "median inference latency per engine",
                    "Median latency of one inference per engine (bar) with the 90th percentile "
                    f"(whisker), {_fmt(threads)} thread(s); tether is in teal."),
        _table(["engine", "accuracy", "median (ms)", "p90 (ms)", "model (bytes)"],
               [[e["engine"], e.get("accuracy"), e.get("median_ms"), e.get("p90_ms"),
                 e.get("model_bytes")] for e in engines],
               highlight=[_is_tether(e["engine"]) for e in engines])])


def _section_transfer(d: Any, plots: _Plots) -> str:
    epochs = _records(d.get("epochs", []), "transfer.epochs")
    before, after = d.get("before") or {}, d.get("after") or {}
    parts = [_p(f"Classes {_fmt(d.get('old_classes'))} were learnt in the cloud; classes "
                f"{_fmt(d.get('new_classes'))} were added on the device.")]
    if epochs:
        ep = [e["epoch"] for e in epochs]
        fig, (ax_acc, ax_loss) = plots.new(3.3, ncols=2)
        ax_acc.plot(ep, [_nan(e["old_accuracy"]) for e in epochs], marker="o", markersize=3,
                    color=_ACCURACY, label="old classes")
        ax_acc.plot(ep, [_nan(e["new_accuracy"]) for e in epochs], marker="o", markersize=3,
                    color=_NEW, label="new classes")
        for key, color in (("old_accuracy", _ACCURACY), ("new_accuracy", _NEW)):
            v = _finite(before.get(key)) if isinstance(before, Mapping) else None
            if v is not None:
                ax_acc.axhline(v, color=color, linestyle=":", linewidth=1.2)
        ax_acc.set_xlabel("epoch")
        plots.integer_x(ax_acc)
        ax_acc.set_ylabel("accuracy")
        ax_acc.set_title("Accuracy per epoch")
        ax_acc.legend(loc="best")
        ax_loss.plot(ep, [_nan(e.get("loss")) for e in epochs], marker="o", markersize=3,
                     color=_LOSS)
        ax_loss.set_xlabel("epoch")
        plots.integer_x(ax_loss)
        ax_loss.set_ylabel("training loss")
        ax_loss.set_title("Loss per epoch")
        parts.append(plots.embed(
            fig, "old- and new-class accuracy and loss per transfer epoch",
            "Left: accuracy on the old classes (blue) and on the new classes (pink) after each "
            "on-device epoch; dotted lines are the accuracies before adaptation. "
            "Right: the training loss."))
    rows = []
    for name, rec in (("before", before), ("after", after)):
        if isinstance(rec, Mapping) and rec:
            rows.append([name, rec.get("old_accuracy"), rec.get("new_accuracy")])
    if rows:
        parts.append(_table(["", "old-class accuracy", "new-class accuracy"], rows))
    return "".join(parts)


def _section_federated(d: Any, plots: _Plots) -> str:
    rounds = _records(d.get("rounds", []), "federated.rounds")
    parts = [_kv([("uplink codec", d.get("codec")), ("secure aggregation", d.get("secagg")),
                  ("DP clipping norm", d.get("dp_clip")), ("clients", d.get("clients"))])]
    if not rounds:
        return "".join(parts) + _p("No federated round ran.")
    cum, total, pts = [], 0.0, []
    for r in rounds:
        total += _finite(r.get("uplink_bytes")) or 0.0
        cum.append(total)
    for r, c in zip(rounds, cum):
        acc = _finite(r.get("accuracy"))
        if acc is not None:
            pts.append((c, acc, r["round"]))
    if pts:
        mib = cum[-1] >= 1024 * 1024
        scale, unit = (1024.0 * 1024.0, "MiB") if mib else (1024.0, "KiB")
        fig, (ax,) = plots.new(3.6)
        xs = [p[0] / scale for p in pts]
        ax.plot(xs, [p[1] for p in pts], marker="o", color=_ACCURACY, linewidth=1.6)
        if len(pts) <= 30:
            for x, p in zip(xs, pts):
                ax.annotate(str(p[2]), (x, p[1]), xytext=(0, 6), textcoords="offset points",
                            ha="center", fontsize=7.5, color="#475569")
        ax.set_xlabel(f"cumulative uplink ({unit})")
        ax.set_ylabel("global accuracy")
        ax.set_title("Federated learning: accuracy against bytes sent by the clients")
        skipped = len(rounds) - len(pts)
        parts.append(plots.embed(
            fig, "federated accuracy against cumulative uplink bytes",
            f"Accuracy of the global model after each round (labelled with the round number) "
            f"against the total bytes the clients had sent so far ({unit} = "
            f"{'1024²' if mib else '1024'} bytes)"
            + (f"; {skipped} round(s) without an accuracy are left out." if skipped else ".")))
    parts.append(_table(["round", "clients", "accuracy", "uplink (bytes)", "downlink (bytes)"],
                        [[r["round"], r.get("clients"), r.get("accuracy"),
                          r.get("uplink_bytes"), r.get("downlink_bytes")] for r in rounds]))
    return "".join(parts)


def _section_summary(rows: Any, plots: _Plots) -> str:
    recs = _records(rows, "summary")
    if not recs:
        return _p("Nothing to summarise.")
    return _table(["what", "value", "why"],
                  [[r["what"], r.get("value"), r.get("why")] for r in recs])


def _section_config(cfg: Any, plots: _Plots) -> str:
    text = cfg if isinstance(cfg, str) else json.dumps(_jsonable(cfg), indent=2)
    return ("<details><summary>Show the resolved configuration</summary>"
            f"<pre>{_esc(text)}</pre></details>")


_Render = Callable[[Any, _Plots], str]

_SECTIONS: list[tuple[str, str, _Render]] = [
    ("scenario", "Scenario", _section_scenario),
    ("stages", "Stages", _section_stages),
    ("library", "Model library", _section_library),
    ("search", "Architecture search", _section_search),
    ("compression", "Compression", _section_compression),
    ("inference", "Inference engines", _section_inference),
    ("transfer", "Transfer learning on the device", _section_transfer),
    ("federated", "Federated learning", _section_federated),
    ("summary", "Summary: what was chosen and why", _section_summary),
    ("config", "Configuration", _section_config),
]


# ----- the page ------------------------------------------------------------------------------


def _jsonable(obj: Any) -> Any:
    """`obj` as plain JSON values: numpy scalars and arrays unwrapped, tuples as lists,
    NaN and infinities as None, other objects as str."""
    if obj is None or isinstance(obj, (str, bool)):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if _is_bool(obj):
        return bool(obj)
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        f = float(obj)
        return f if math.isfinite(f) else None
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    return str(obj)


def _summary_json(summary: Mapping[str, Any]) -> str:
    text = json.dumps(_jsonable(summary), ensure_ascii=False, allow_nan=False, indent=1)
    # '<' only occurs inside JSON strings, where \u003c means the same: no "</script>".
    return text.replace("<", "\\u003c")


# Counts the <img> elements that decoded and collects errors, for `check_in_browser`. It runs
# first in <head>; results go to <html data-tether-check="URI-encoded JSON"> after `load`.
_PROBE = """(function () {
  if (window.__tetherProbe) { return; }
  var errors = [], loaded = false, root = document.documentElement;
  window.__tetherProbe = errors;
  function str(v) {
    if (v instanceof Error) { return String(v); }
    if (typeof v === "string") { return v; }
    try { return JSON.stringify(v); } catch (e) { return String(v); }
  }
  function publish() {
    if (!loaded) { return; }
    var imgs = document.images, ok = 0;
    for (var i = 0; i < imgs.length; i++) {
      if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; }
    }
    root.setAttribute("data-tether-check", encodeURIComponent(JSON.stringify({
      images: imgs.length, loaded: ok, errors: errors,
      height: Math.max(root.scrollHeight, document.body ? document.body.scrollHeight : 0)})));
  }
  var consoleError = console.error;
  console.error = function () {
    var parts = [];
    for (var i = 0; i < arguments.length; i++) { parts.push(str(arguments[i])); }
    errors.push(parts.join(" "));
    publish();
    return consoleError.apply(console, arguments);
  };
  window.addEventListener("error", function (e) {
    if (e instanceof ErrorEvent) {
      errors.push(e.message + (e.filename ? " (" + e.filename + ":" + e.lineno + ")" : ""));
    } else if (e.target && e.target.tagName && e.target.tagName !== "IMG") {
      var src = String(e.target.src || e.target.href || "");
      errors.push("failed to load <" + e.target.tagName.toLowerCase() + "> "
                  + (src.length > 120 ? src.slice(0, 120) + "..." : src));
    } else { return; }
    publish();
  }, true);
  window.addEventListener("unhandledrejection", function (e) {
    errors.push("Uncaught (in promise) " + str(e.reason));
    publish();
  });
  window.addEventListener("load", function () {
    setTimeout(function () {
      var imgs = document.images;
      for (var i = 0; i < imgs.length; i++) {
        if (!(imgs[i].complete && imgs[i].naturalWidth > 0)) {
          var src = String(imgs[i].getAttribute("src") || "");
          console.error("image " + (i + 1) + " of " + imgs.length + " did not load: "
                        + (imgs[i].alt ? "'" + imgs[i].alt + "' " : "")
                        + (src.length > 120 ? src.slice(0, 120) + "..." : src));
        }
      }
      loaded = true;
      publish();
    }, 0);
  });
})();"""

_CSS = """
:root { --ink: #1e293b; --muted: #64748b; --line: #e2e8f0; --tether: %(tether)s;
        --band: #f1f5f9; --hl: #ccfbf1; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff; line-height: 1.5;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
             Arial, sans-serif; }
header { background: var(--ink); color: #fff; padding: 28px 0 22px;
         border-bottom: 4px solid var(--tether); }
header h1 { margin: 0 0 4px; font-size: 26px; font-weight: 650; }
header p { margin: 0; color: #cbd5e1; font-size: 14px; }
.wrap { max-width: 960px; margin: 0 auto; padding: 0 24px; }
nav { background: var(--band); border-bottom: 1px solid var(--line); padding: 10px 0;
      font-size: 14px; }
nav ol { margin: 0; padding: 0; list-style: none; display: flex; flex-wrap: wrap;
         gap: 4px 18px; counter-reset: toc; }
nav li { counter-increment: toc; }
nav li::before { content: counter(toc) ". "; color: var(--muted); }
nav a, nav a:visited { color: var(--ink); text-decoration: none; }
nav a:hover { color: var(--tether); text-decoration: underline; }
section { padding: 22px 0 10px; border-bottom: 1px solid var(--line); }
section:last-of-type { border-bottom: none; }
h2 { font-size: 20px; margin: 0 0 10px; font-weight: 650; }
h3 { font-size: 15px; margin: 16px 0 6px; }
p { margin: 6px 0 10px; }
figure { margin: 12px 0 16px; }
figure img { display: block; max-width: 100%%; height: auto; border: 1px solid var(--line);
             border-radius: 4px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 13.5px; min-width: 40%%; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left;
         vertical-align: top; }
thead th { background: var(--band); font-weight: 600; border-bottom: 2px solid #cbd5e1; }
tbody tr:nth-child(even) td { background: #f8fafc; }
table.kv { min-width: 0; }
table.kv th { background: none; font-weight: 500; color: var(--muted); white-space: nowrap;
              padding-right: 24px; }
table.kv td.num { text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.hl td, tbody tr.hl:nth-child(even) td { background: var(--hl); font-weight: 600; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace;
            font-size: 12.5px; }
td code { word-break: break-all; }
details { margin: 8px 0 14px; }
summary { cursor: pointer; color: var(--tether); font-weight: 600; }
pre { background: var(--band); border: 1px solid var(--line); border-radius: 4px;
      padding: 12px; overflow-x: auto; }
footer { color: var(--muted); font-size: 12.5px; padding: 18px 0 30px; }
""" % {"tether": _TETHER}


def _page(title: str, generated: Any, sections: list[tuple[str, str, str]],
          summary_json: str) -> str:
    sub = f"Generated {_esc(generated)}" if generated is not None else "tether pipeline report"
    toc = "".join(f'<li><a href="#{_esc(a)}">{_esc(h)}</a></li>' for a, h, _ in sections)
    body = "\n".join(f'<section id="{_esc(a)}"><h2>{_esc(h)}</h2>\n{b}\n</section>'
                     for a, h, b in sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<script id="tether-probe">{_PROBE}</script>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="tether.pipeline.report">
<title>{_esc(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<header><div class="wrap"><h1>{_esc(title)}</h1><p>{sub}</p></div></header>
<nav><div class="wrap"><ol>{toc}</ol></div></nav>
<main class="wrap">
{body}
</main>
<footer><div class="wrap">Every number on this page is a value of the pipeline summary,
which is embedded below as JSON (script id "tether-summary").</div></footer>
<script type="application/json" id="tether-summary">{summary_json}</script>
</body>
</html>
"""


# ----- check_in_browser ----------------------------------------------------------------------

_CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_VIRTUAL_TIME_MS = 5000  # virtual time the page gets to load and run its load handlers
_WIDTH = 1280
_MAX_HEIGHT = 16384  # larger screenshots fail in Chromium (texture size)


@dataclass(frozen=True)
class BrowserCheck:
    """What headless Chromium saw on a page.

    Attributes:
        images: Number of ``<img>`` elements on the page after the ``load`` event.
        images_loaded: How many of them decoded (``complete && naturalWidth > 0``).
        console_errors: Console errors in order: uncaught exceptions and unhandled
            rejections, ``console.error`` calls (including one per image that did not load),
            and scripts or stylesheets that failed to load.
        screenshot: The full-page PNG written, or None when none was asked for.
    """

    images: int
    images_loaded: int
    console_errors: list[str] = field(default_factory=list)
    screenshot: Path | None = None

    @property
    def ok(self) -> bool:
        """True when every image loaded and there was no console error."""
        return self.images == self.images_loaded and not self.console_errors


def find_chromium() -> str | None:
    """The first of chromium, chromium-browser, google-chrome, google-chrome-stable on PATH,
    or None."""
    for name in _CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def check_in_browser(html: PathLike, screenshot: PathLike | None = None, *,
                     chromium: str | None = None, timeout_s: float = 60) -> BrowserCheck:
    """Opens an HTML file in headless Chromium: counts images that loaded, collects errors.

    Pages written by `write_report` carry a small probe script; any other page is copied to a
    temporary file with the probe put first in its ``<head>`` (and a ``<base>`` pointing at
    the page's folder, so relative links still resolve). On the window ``load`` event the
    probe counts the ``<img>`` elements and those with ``complete && naturalWidth > 0``,
    calls ``console.error`` for each broken one, and writes the counts and every error seen
    (uncaught exceptions, unhandled rejections, ``console.error`` calls, scripts that failed
    to load) into an attribute of ``<html>``, which is read back from ``--dump-dom``.
    Chromium's own stderr log is read as well for "Uncaught" console lines the probe missed.
    Chromium runs with a throwaway profile and no network (every host name fails to
    resolve), so a page that needs the network shows broken images or errors. A second run
    with ``--screenshot`` writes a full-page PNG 1280 px wide (at most 16384 px tall).

    Args:
        html: Path of the HTML file to open.
        screenshot: Where to write the PNG (atomically, parent folders created); None
            (default) takes no screenshot.
        chromium: The browser executable, a path or a name on PATH; None (default) takes
            the first of chromium, chromium-browser, google-chrome, google-chrome-stable.
        timeout_s: Wall-clock limit for both runs together, in seconds (default 60).

    Returns:
        A `BrowserCheck`; `BrowserCheck.ok` says whether the page is clean.

    Raises:
        BrowserError: No browser was found, the file does not exist, Chromium failed or
            timed out, or the page never reached its ``load`` event.
    """
    page = Path(html)
    if not page.is_file():
        raise BrowserError(f"{page}: no such HTML file to open in the browser")
    exe = _resolve_chromium(chromium)
    deadline = time.monotonic() + timeout_s
    page = page.resolve()
    with tempfile.TemporaryDirectory(prefix="tether-chromium-") as tmp_s:
        tmp = Path(tmp_s)
        raw = page.read_bytes()
        if b'id="tether-probe"' in raw:
            url = page.as_uri()
        else:
            copy = tmp / "page.html"
            copy.write_bytes(_inject_probe(raw, page.parent.as_uri() + "/"))
            url = copy.as_uri()
        base = [exe, "--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking",
                "--disable-breakpad", "--hide-scrollbars", "--mute-audio",
                "--host-resolver-rules=MAP * ~NOTFOUND",
                f"--user-data-dir={tmp / 'profile'}",
                f"--virtual-time-budget={_VIRTUAL_TIME_MS}"]
        out, err = _run([*base, f"--window-size={_WIDTH},900", "--enable-logging=stderr",
                         "--v=0", "--dump-dom", url], deadline, page)
        result = _read_probe(out)
        if result is None:
            raise BrowserError(
                f"{page}: the page never reported back from its load event within "
                f"{_VIRTUAL_TIME_MS} ms of virtual time (is inline script blocked by a "
                f"Content-Security-Policy, or does loading hang?); Chromium said: "
                f"{_tail(err)}")
        errors = [str(e) for e in result.get("errors", [])]
        for msg in _uncaught_from_log(err):
            if not any(e.startswith(msg) for e in errors):
                errors.append(msg)
        if url != page.as_uri():
            errors = [e.replace(url, page.as_uri()) for e in errors]
        shot: Path | None = None
        if screenshot is not None:
            height = min(max(int(result.get("height") or 0), 600), _MAX_HEIGHT)
            png = tmp / "shot.png"
            _run([*base, f"--window-size={_WIDTH},{height}", f"--screenshot={png}", url],
                 deadline, page)
            if not png.is_file() or png.stat().st_size == 0:
                raise BrowserError(f"{page}: Chromium wrote no screenshot (asked for {png})")
            shot = Path(screenshot)
            atomic_write_bytes(shot, png.read_bytes())
    check = BrowserCheck(images=int(result.get("images", 0)),
                         images_loaded=int(result.get("loaded", 0)),
                         console_errors=errors, screenshot=shot)
    logger.info("%s in %s: %d/%d images loaded, %d console errors", page, exe,
                check.images_loaded, check.images, len(check.console_errors))
    return check


def _resolve_chromium(chromium: str | None) -> str:
    if chromium is not None:
        found = shutil.which(chromium)
        if found is None:
            raise BrowserError(f"chromium={chromium!r} is neither an executable file nor a "
                               "command on PATH; pass the path of a Chromium or Chrome binary")
        return found
    found = find_chromium()
    if found is None:
        raise BrowserError(
            "no Chromium found on PATH (looked for " + ", ".join(_CHROMIUM_NAMES) + "); "
            "install Debian's chromium package (`make sysdeps` does) or pass "
            "chromium='/path/to/chrome'")
    return found


def _inject_probe(raw: bytes, base_href: str) -> bytes:
    """`raw` with the probe script (and a <base> when the page has none) put first in <head>,
    after any <meta charset> so the encoding declaration stays within the first 1024 bytes."""
    tag = f'<script id="tether-probe">{_PROBE}</script>'
    if not re.search(rb"<base[\s>]", raw, re.IGNORECASE):
        tag = f'<base href="{html.escape(base_href, quote=True)}">' + tag
    data = tag.encode("ascii")
    for pattern in (rb"<meta[^>]*charset[^>]*>", rb"<head(\s[^>]*)?>", rb"<html(\s[^>]*)?>",
                    rb"<!doctype[^>]*>"):
        m = re.search(pattern, raw, re.IGNORECASE)
        if m is not None:
            return raw[:m.end()] + data + raw[m.end():]
    return data + raw


def _run(cmd: list[str], deadline: float, page: Path) -> tuple[str, str]:
    """Runs Chromium in its own process group; on timeout the whole group is killed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise BrowserError(f"{page}: no time left for Chromium (timeout_s too small)")
    logger.debug("running %s", cmd)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=left)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.communicate()
        raise BrowserError(f"{page}: Chromium did not finish in time (timeout_s exhausted); "
                           "raise timeout_s or check that the page does not hang") from None
    finally:
        if proc.poll() is None:
            _kill_group(proc)
            proc.wait()
    out_s, err_s = (out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
    if proc.returncode != 0:
        raise BrowserError(f"{page}: {cmd[0]} exited with status {proc.returncode}: "
                           f"{_tail(err_s)}")
    return out_s, err_s


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - not POSIX
            proc.kill()
    except ProcessLookupError:
        pass


def _tail(err: str, lines: int = 8) -> str:
    kept = [ln for ln in err.splitlines() if ln.strip() and "dbus" not in ln]
    return " | ".join(kept[-lines:]) or "(nothing on stderr)"


class _HtmlTag(HTMLParser):
    """Finds the attributes of the first <html> start tag, then stops."""

    class _Found(Exception):
        pass

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.attrs: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "html":
            self.attrs = dict(attrs)
            raise self._Found


def _read_probe(dom: str) -> dict[str, Any] | None:
    parser = _HtmlTag()
    try:
        parser.feed(dom[:200_000])  # the <html> tag comes first; skip the embedded images
    except _HtmlTag._Found:
        pass
    raw = parser.attrs.get("data-tether-check")
    if not raw:
        return None
    try:
        data = json.loads(urllib.parse.unquote(raw))
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# [pid:tid:time:INFO:CONSOLE:4] "Uncaught Error: boom", source: file:///x.html (4)
# (older Chromium: INFO:CONSOLE(4)]); the log line carries no level, so only "Uncaught".
_CONSOLE_LINE = re.compile(r':CONSOLE(?:\(\d+\)|:\d+)\]\s*"(?P<msg>.*)", source: '
                           r'(?P<src>.*?) \((?P<line>\d+)\)\s*$')


def _uncaught_from_log(err: str) -> list[str]:
    found = []
    for line in err.splitlines():
        m = _CONSOLE_LINE.search(line)
        if m and m.group("msg").startswith("Uncaught"):
            found.append(m.group("msg"))
    return found
