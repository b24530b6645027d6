"""tether.device: the C engine (device/runtime) from Python.

>>> from tether.device import Engine          # doctest: +SKIP
>>> y = Engine("model.tmodel").run(x)         # doctest: +SKIP
"""

from tether.errors import EngineError
from tether.device._engine import Engine, TensorInfo

__all__ = ["Engine", "EngineError", "TensorInfo"]
