"""tether.pipeline: the whole road in one call (Fig. 12.6).

`run(load_config("road.toml"))` goes scenario → model library (supernet, or the user's
library, or the user's model) → device profile and latency model → search → compression →
conversion → the learning patterns (inference, transfer, federated), caching every stage
under a hash of its inputs and config, and ends with `report.html`.

Names are imported lazily, so `import tether.pipeline` does not load Keras.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "tether.pipeline.config": ("ConfigError", "PipelineConfig", "load_config",
                               "reference_markdown"),
    "tether.pipeline.runner": ("RunResult", "run"),
    "tether.pipeline.stages": ("PipelineError", "Progress"),
    "tether.pipeline.store": ("StageRecord", "Store"),
    "tether.pipeline.demo": ("demo_config",),
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)

if TYPE_CHECKING:
    from tether.pipeline.config import ConfigError, PipelineConfig, load_config, reference_markdown
    from tether.pipeline.demo import demo_config
    from tether.pipeline.runner import RunResult, run
    from tether.pipeline.stages import PipelineError, Progress
    from tether.pipeline.store import StageRecord, Store


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'tether.pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
