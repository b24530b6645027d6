"""Graph passes: local `(pattern, rule)` rewrites (`rewrite.py`), one module per pass, each
opening with its Before / After, its conditions and its formula, and the pass manager
(`manager.py`) that runs a pipeline to a fixed point, validating the graph after every pass
and recording every rewrite for the conversion report.

OPTIMIZE_PIPELINE is what `convert` runs (optimize=True); LOWER_PIPELINE only the lowering the
file format needs (optimize=False).
"""

from __future__ import annotations

from .activations import fuse_activations
from .affine import fold_affine
from .arithmetic import simplify_arithmetic
from .batch_norm import fold_batch_norm, lower_batch_norm
from .constants import fold_constants
from .dead_nodes import eliminate_dead_nodes
from .gelu import recognize_gelu
from .hard_swish import recognize_hard_sigmoid, recognize_hard_swish
from .identities import remove_identities
from .internal_ops import lower_internal_ops
from .layer_norm import recognize_layer_norm
from .manager import PassLog, run_passes
from .pads import fold_pad
from .qdq import fold_dequantize_constants, fuse_qdq
from .rewrite import Match, Pat, Rewrite, RewritePass, Rule, const, op, same, scalar, tensor
from .transposes import simplify_transposes

__all__ = [
    "LOWER_PIPELINE",
    "OPTIMIZE_PIPELINE",
    "Match",
    "PassLog",
    "Pat",
    "Rewrite",
    "RewritePass",
    "Rule",
    "const",
    "eliminate_dead_nodes",
    "fold_affine",
    "fold_batch_norm",
    "fold_constants",
    "fold_dequantize_constants",
    "fold_pad",
    "fuse_activations",
    "fuse_qdq",
    "lower_batch_norm",
    "lower_internal_ops",
    "op",
    "recognize_gelu",
    "recognize_hard_sigmoid",
    "recognize_hard_swish",
    "recognize_layer_norm",
    "remove_identities",
    "run_passes",
    "same",
    "scalar",
    "simplify_arithmetic",
    "simplify_transposes",
    "tensor",
]

OPTIMIZE_PIPELINE: tuple[RewritePass, ...] = (
    eliminate_dead_nodes,
    simplify_transposes,
    remove_identities,
    fold_constants,
    recognize_layer_norm,  # before simplify_arithmetic and fold_affine change its MUL/ADD/DIV
    simplify_arithmetic,
    fold_pad,
    fold_batch_norm,
    fold_affine,
    recognize_gelu,  # before fuse_activations folds the tanh form's TANH into its MUL
    fuse_activations,
    recognize_hard_swish,
    recognize_hard_sigmoid,
    fuse_qdq,
    eliminate_dead_nodes,
    fold_dequantize_constants,
    lower_internal_ops,
)
LOWER_PIPELINE: tuple[RewritePass, ...] = (
    fold_dequantize_constants,
    recognize_layer_norm,  # a decomposed layer norm's SQRT has no file op
    eliminate_dead_nodes,
    lower_internal_ops,
)
