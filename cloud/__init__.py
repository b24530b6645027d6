"""tether.cloud: the elastic supernet, its search space and progressive shrinking (README.md).

Keras and TensorFlow are imported by the submodules that need them, not here.
"""

from tether.cloud.space import Arch, Block, SearchSpace, SpaceError, Stage

__all__ = ["Arch", "Block", "SearchSpace", "SpaceError", "Stage"]
