"""tether.device: the C engine (device/runtime) from Python.

>>> from tether.device import Engine          # doctest: +SKIP
>>> y = Engine("model.tmodel").run(x)         # doctest: +SKIP
>>> model_memory("model.tmodel").total_bytes  # doctest: +SKIP
>>> Trainer("model.tmodel", head_input="features").fit(f, y, epochs=5)  # doctest: +SKIP
"""

from tether.errors import EngineError
from tether.device._engine import Engine, ModelMemory, TensorInfo, model_memory
from tether.device._trainer import Trainer

__all__ = ["Engine", "EngineError", "ModelMemory", "TensorInfo", "Trainer", "model_memory"]
