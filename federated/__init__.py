"""tether.federated: FedAvg on Flower's Message API, update codecs, secure aggregation, DP.

Pure numpy / cryptography parts import eagerly; the Flower-based parts (strategies, mods,
apps, simulation) load on first access so ``import tether.federated`` stays light.

>>> from tether.federated import codecs
>>> codecs.make("qsgd:4").spec
'qsgd:4'
"""

from __future__ import annotations

from typing import Any

from tether.federated import codecs, dp, partition, secagg
from tether.federated.codecs import CodecError, make
from tether.federated.dp import DPConfig, RdpAccountant
from tether.federated.secagg import (
    SecAggAbort,
    SecAggConfig,
    SecAggError,
    SecAggTamper,
    aggregate_in_process,
)

__all__ = [
    "CodecError",
    "CodecMod",
    "DPConfig",
    "FedConfig",
    "LocalGrid",
    "RdpAccountant",
    "SecAggAbort",
    "SecAggConfig",
    "SecAggError",
    "SecAggFedAvg",
    "SecAggMod",
    "SecAggTamper",
    "TetherFedAvg",
    "aggregate_in_process",
    "codecs",
    "deploy",
    "dp",
    "make",
    "make_client_app",
    "make_server_app",
    "partition",
    "register_secagg",
    "run_local",
    "secagg",
    "simulate",
]

_LAZY = {
    "TetherFedAvg": "tether.federated.strategy", "CodecMod": "tether.federated.mods",
    "SecAggFedAvg": "tether.federated.strategy", "SecAggMod": "tether.federated.mods",
    "register_secagg": "tether.federated.mods", "FedConfig": "tether.federated.apps",
    "simulate": "tether.federated.apps", "make_client_app": "tether.federated.apps",
    "make_server_app": "tether.federated.apps", "LocalGrid": "tether.federated.local",
    "run_local": "tether.federated.local", "deploy": "tether.federated.deployment",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tether.federated' has no attribute {name!r}")
