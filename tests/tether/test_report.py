"""The pipeline's HTML report: a self-contained page whose numbers are the summary's, and a
headless-Chromium check that its images decode and it raises no console error."""

from __future__ import annotations

import copy
import math
import re

import pytest

from tether.errors import TetherError
from tether.pipeline import report
from tether.pipeline.report import (
    BrowserCheck,
    BrowserError,
    ReportError,
    check_in_browser,
    find_chromium,
    read_summary,
    write_report,
)

needs_chromium = pytest.mark.skipif(
    find_chromium() is None,
    reason="no chromium, chromium-browser or google-chrome on PATH (`make sysdeps` installs "
           "Debian's chromium)")

PLOTTED = ["library", "search", "compression", "inference", "transfer", "federated"]


def full_summary() -> dict:
    entries = [{"key": f"w{w}-d{d}", "accuracy": 0.80 + 0.02 * w + 0.01 * d,
                "latency_ms": 0.4 * w * d + 0.1, "size": 20_000 * w * d,
                "params": 5_000 * w * d, "macs": 300_000 * w * d, "measured": (w + d) % 2 == 0}
               for w in (1, 2, 3, 4) for d in (1, 2, 3)]
    return {
        "title": "tether road <demo> & report",
        "generated": "2025-01-02T03:04:05+00:00",
        "config": {"scenario": {"task": "digits"}, "search": {"policy": "evolution",
                                                              "max_latency_ms": 2.5},
                   "note": "</script><script>alert(1)</script>"},
        "scenario": {"task": "image classification", "dataset": "digits", "classes": 10,
                     "holdout_classes": [8, 9], "train_images": 1437, "test_images": 360},
        "stages": [{"name": "scenario", "cached": True, "seconds": 0.01, "key": "a1b2c3"},
                   {"name": "library", "cached": False, "seconds": 12.5, "key": "d4e5f6"},
                   {"name": "search", "cached": False, "seconds": 3.25, "key": "0a1b2c"}],
        "library": {"device": "x86_64 AVX2", "entries": entries, "chosen": "w3-d2"},
        "search": {"policy": "evolution", "constraints": {"max_latency_ms": 2.5,
                                                          "max_size": 200_000, "note": None},
                   "history": [{"generation": g, "accuracy": 0.85 + 0.01 * g,
                                "latency": 2.4 - 0.05 * g, "size": 150_000.0}
                               for g in range(8)],
                   "chosen": {"key": "w3-d2", "accuracy": 0.92, "latency_ms": 2.2,
                              "size": 120_000, "source": "search"},
                   "samples": 160},
        "compression": {"steps": [
            {"name": "float32", "accuracy": 0.92, "bytes": 480_000, "latency_ms": 2.2},
            {"name": "pruned 50%", "accuracy": 0.915, "bytes": 250_000, "latency_ms": 1.6},
            {"name": "int8", "accuracy": 0.91, "bytes": 70_000, "latency_ms": 0.9}]},
        "inference": {"threads": 1, "engines": [
            {"engine": "onnxruntime", "accuracy": 0.91, "median_ms": 1.1, "p90_ms": 1.3,
             "model_bytes": 480_000},
            {"engine": "tether", "accuracy": 0.91, "median_ms": 0.9, "p90_ms": 1.0,
             "model_bytes": 70_000},
            {"engine": "tflite", "accuracy": 0.91, "median_ms": 1.0, "p90_ms": 1.4,
             "model_bytes": 90_000}]},
        "transfer": {"old_classes": list(range(8)), "new_classes": [8, 9],
                     "epochs": [{"epoch": e, "loss": 1.0 / e, "old_accuracy": 0.9 - 0.01 * e,
                                 "new_accuracy": 0.5 + 0.08 * e} for e in range(1, 6)],
                     "before": {"old_accuracy": 0.91, "new_accuracy": 0.0},
                     "after": {"old_accuracy": 0.86, "new_accuracy": 0.9}},
        "federated": {"codec": "qsgd-16", "secagg": True, "dp_clip": 1.0, "clients": 8,
                      "rounds": [{"round": r, "accuracy": math.nan if r == 2 else 0.6 + 0.05 * r,
                                  "uplink_bytes": 40_000, "downlink_bytes": 160_000,
                                  "clients": 8} for r in range(1, 7)]},
        "summary": [{"what": "model", "value": "w3-d2", "why": "most accurate under 2.5 ms"},
                    {"what": "engine", "value": "tether", "why": "fastest median"}],
    }


def _without_nan(obj):
    """The summary as JSON gives it back: NaN becomes None."""
    if isinstance(obj, dict):
        return {k: _without_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_without_nan(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def _sections(page: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="([a-z]+)">(.*?)</section>', page, re.DOTALL))


@pytest.fixture(scope="module")
def full_page(tmp_path_factory):
    summary = full_summary()
    path = write_report(summary, tmp_path_factory.mktemp("report") / "sub" / "report.html")
    return summary, path


def test_full_summary_renders_self_contained(full_page) -> None:
    summary, path = full_page
    page = path.read_text(encoding="utf-8")

    assert not re.search(r"https?://", page, re.IGNORECASE)
    assert "<link" not in page and "@import" not in page
    sections = _sections(page)
    assert list(sections) == ["scenario", "stages", *PLOTTED, "summary", "config"]
    for key in PLOTTED:
        assert len(re.findall(r'<img src="data:image/png;base64,', sections[key])) == 1, key
    assert page.count("<img") == len(PLOTTED)
    for key in ("scenario", "stages", "summary", "config"):
        assert "<img" not in sections[key]
    # text is escaped, and the embedded JSON cannot close its <script> early
    assert "tether road &lt;demo&gt; &amp; report" in page
    assert "<script>alert(1)" not in page
    assert read_summary(path) == _without_nan(summary)
    # every section lists what it got from the summary
    assert "w3-d2" in sections["library"] and "160" in sections["search"]
    assert sections["inference"].index("tether") < sections["inference"].index("onnxruntime")


def test_required_keys_only_renders_without_plots(tmp_path) -> None:
    summary = {"title": "bare", "stages": [], "library": None}

    path = write_report(summary, tmp_path / "bare.html")

    page = path.read_text(encoding="utf-8")
    assert list(_sections(page)) == ["stages"]
    assert "<img" not in page and "No stage ran." in page
    assert read_summary(path) == {"title": "bare", "stages": [], "library": None}


def test_empty_sections_say_so_instead_of_empty_plots(tmp_path) -> None:
    summary = {"title": "t", "stages": [],
               "library": {"device": "cpu", "entries": [], "chosen": None},
               "compression": {"steps": []}, "federated": {"codec": "none", "rounds": []}}

    page = write_report(summary, tmp_path / "r.html").read_text(encoding="utf-8")

    assert "<img" not in page
    assert "The library is empty." in page and "No compression step ran." in page


@pytest.mark.parametrize("summary, match", [
    ({"stages": []}, r"summary\['title'\]"),
    ({"title": "t"}, r"summary\['stages'\]"),
    ({"title": "t", "stages": [], "compression": {"steps": [{"name": "int8"}]}},
     r"section 'compression'.*KeyError: 'accuracy'"),
])
def test_malformed_summary_names_the_key(tmp_path, summary, match) -> None:
    with pytest.raises(ReportError, match=match) as err:
        write_report(summary, tmp_path / "r.html")
    assert isinstance(err.value, TetherError)
    assert not (tmp_path / "r.html").exists()


def test_write_is_atomic_when_a_plot_fails(tmp_path, monkeypatch) -> None:
    path = tmp_path / "report.html"
    path.write_text("previous report")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full while drawing")

    monkeypatch.setattr(report._Plots, "embed", boom)
    with pytest.raises(ReportError, match=r"section 'library'.*disk full while drawing"):
        write_report(full_summary(), path)

    assert path.read_text() == "previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    path.unlink()
    with pytest.raises(ReportError):
        write_report(full_summary(), path)
    assert list(tmp_path.iterdir()) == []


@needs_chromium
def test_full_page_loads_cleanly_in_chromium(full_page, tmp_path) -> None:
    _, path = full_page

    check = check_in_browser(path, tmp_path / "shots" / "report.png")

    assert isinstance(check, BrowserCheck)
    assert (check.images, check.images_loaded) == (len(PLOTTED), len(PLOTTED))
    assert check.console_errors == []
    assert check.ok
    assert check.screenshot == tmp_path / "shots" / "report.png"
    png = check.screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9"
         "QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


@needs_chromium
def test_broken_image_and_script_error_are_detected(tmp_path) -> None:
    (tmp_path / "pages").mkdir()
    (tmp_path / "pixel.png").write_bytes(__import__("base64").b64decode(PIXEL.split(",")[1]))
    page = tmp_path / "pages" / "bad.html"
    page.write_text(f"""<!doctype html><html><head><meta charset="utf-8"><title>bad</title>
</head><body>
<img src="{PIXEL}" alt="good pixel">
<img src="../pixel.png" alt="relative pixel">
<img src="data:image/png;base64,AAAA" alt="broken data">
<img src="missing.png" alt="missing file">
<img src="https://example.com/logo.png" alt="external">
<script>throw new Error("deliberate boom");</script>
</body></html>""")

    check = check_in_browser(page, timeout_s=60)

    assert (check.images, check.images_loaded) == (5, 2)  # no network: external is broken
    assert not check.ok and check.screenshot is None
    errors = "\n".join(check.console_errors)
    assert "Uncaught Error: deliberate boom" in errors
    assert str(page.as_uri()) in errors  # the source is the page, not a temporary copy
    assert "'broken data'" in errors and "'missing file'" in errors and "'external'" in errors
    assert "'good pixel'" not in errors and "'relative pixel'" not in errors
    assert len(check.console_errors) == 4


@needs_chromium
def test_a_hanging_page_times_out(tmp_path) -> None:
    page = tmp_path / "hang.html"
    page.write_text("<html><body><script>while (true) {}</script></body></html>")

    with pytest.raises(BrowserError, match="did not finish in time"):
        check_in_browser(page, timeout_s=3)


def test_missing_browser_is_a_clear_error(tmp_path, monkeypatch) -> None:
    page = tmp_path / "p.html"
    page.write_text("<p>hi</p>")
    monkeypatch.setattr(report.shutil, "which", lambda name: None)

    with pytest.raises(BrowserError, match="no Chromium found on PATH.*chromium=") as err:
        check_in_browser(page)
    assert isinstance(err.value, TetherError)
    with pytest.raises(BrowserError, match="'no-such-browser'"):
        check_in_browser(page, chromium="no-such-browser")
    with pytest.raises(BrowserError, match="no such HTML file"):
        check_in_browser(tmp_path / "absent.html")


def test_summary_is_not_modified(tmp_path) -> None:
    summary = full_summary()
    before = copy.deepcopy(_without_nan(summary))
    write_report(summary, tmp_path / "r.html")
    assert _without_nan(summary) == before
