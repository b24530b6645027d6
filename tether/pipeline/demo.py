"""The built-in configs `tether demo` runs (`configs/demo.toml`, `configs/demo-quick.toml`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from tether.pipeline.config import PipelineConfig, load_config

__all__ = ["demo_config", "CONFIGS"]

CONFIGS = Path(__file__).with_name("configs")


def demo_config(quick: bool = False, out_dir: Optional[str] = None,
                overrides: Optional[dict[str, Any]] = None) -> PipelineConfig:
    """The demo's config: the full road on mnist5k (within 15 minutes on 2 cores) or, with
    `quick`, the same road with the shortest training (within 3); `out_dir` and `overrides`
    (nested sections) replace what the file says."""
    more = {k: dict(v) for k, v in (overrides or {}).items()}
    if out_dir is not None:
        more.setdefault("run", {})["out_dir"] = out_dir
    return load_config(CONFIGS / ("demo-quick.toml" if quick else "demo.toml"), more)
