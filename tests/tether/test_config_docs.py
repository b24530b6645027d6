"""The pipeline's config docs stay true: `tether/docs/config.md` is what the schema generates,
it names every key of every section, and the example configs the pattern pages show load."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from tether.pipeline.config import SECTIONS, load_config, reference_markdown

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "tether" / "docs"
REGENERATE = ".venv/bin/python -m tether.pipeline.config > tether/docs/config.md"
PATTERNS = ("inference", "transfer", "federated")


def _sections(page: str) -> dict[str, str]:
    """Each `## [section]` heading of the page mapped to the text below it."""
    parts = re.split(r"^## \[(\w+)\]$", page, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


def test_config_md_is_what_the_schema_generates() -> None:
    # Prepare
    page = (DOCS / "config.md").read_text(encoding="utf-8")

    # Execute
    expected = reference_markdown()

    # Assert
    assert page == expected, (
        "tether/docs/config.md differs from reference_markdown() in tether/pipeline/config.py; "
        f"regenerate it from the repository root with: {REGENERATE}")


def test_config_md_names_every_key_of_every_section() -> None:
    sections = _sections((DOCS / "config.md").read_text(encoding="utf-8"))

    missing = [f"[{name}] (no section)" for name in SECTIONS if name not in sections]
    missing += [f"{name}.{f.name}" for name, cls in SECTIONS.items() if name in sections
                for f in dataclasses.fields(cls) if f"| `{f.name}` |" not in sections[name]]

    assert not missing, (f"tether/docs/config.md lacks {', '.join(missing)}; regenerate it "
                         f"with: {REGENERATE}")


@pytest.mark.parametrize("pattern", PATTERNS)
def test_pattern_example_config_loads(pattern: str) -> None:
    cfg = load_config(DOCS / "examples" / f"{pattern}.toml")

    assert cfg.learn.patterns == [pattern]


def test_own_model_example_loads_with_a_model_file_present(tmp_path: Path) -> None:
    # Prepare: the example names my_model.keras, which the checker wants to exist.
    model = tmp_path / "my_model.keras"
    model.write_bytes(b"")

    # Execute
    cfg = load_config(DOCS / "examples" / "own-model.toml",
                      overrides={"model": {"path": str(model)}})

    # Assert
    assert cfg.model.source == "file" and cfg.model.path == str(model)
    assert cfg.scenario.dataset == "my_images/"


@pytest.mark.parametrize("pattern", PATTERNS)
def test_pattern_page_shows_its_example_config_in_full(pattern: str) -> None:
    page = (DOCS / f"{pattern}.md").read_text(encoding="utf-8")
    example = (DOCS / "examples" / f"{pattern}.toml").read_text(encoding="utf-8")

    blocks = re.findall(r"^```toml\n(.*?)^```$", page, flags=re.MULTILINE | re.DOTALL)

    assert example in blocks, (f"tether/docs/{pattern}.md must show "
                               f"tether/docs/examples/{pattern}.toml in full, in a ```toml block")
