"""The pass manager: a pipeline of passes run to a fixed point, the graph validated after
every pass, every rewrite recorded for the conversion report."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tether.converter._internal import ir

from tether.errors import ConversionError

from .rewrite import RewritePass

__all__ = ["PassLog", "run_passes"]

logger = logging.getLogger("tether.converter._internal.passes")


@dataclass(frozen=True)
class PassLog:
    """What a pipeline did.

    Attributes:
        actions: one line per rewrite, in order ("folded bn1 into conv1").
        counts: rewrite kind -> number of rewrites, sorted by kind.
        iterations: rounds of the whole pipeline until nothing changed.
    """

    actions: tuple[str, ...]
    counts: Mapping[str, int]
    iterations: int


def run_passes(graph: ir.Graph, passes: Sequence[RewritePass], *,
               max_iterations: int = 20) -> tuple[ir.Graph, PassLog]:
    """Runs `passes` in order, again and again, until a round changes nothing.

    The graph is validated before the first pass and after every pass that changed it.

    Args:
        graph: the input graph (not modified).
        passes: the pipeline.
        max_iterations: rounds before giving up (ConversionError); 20 by default.

    Returns:
        The final graph and a `PassLog`.

    Raises:
        ConversionError: a pass produced an invalid graph, or no fixed point was reached.
    """
    ir.validate(graph, context="before passes")
    actions: list[str] = []
    counts: dict[str, int] = {}
    for iteration in range(1, max_iterations + 1):
        changed = False
        for p in passes:
            graph, rewrites = p.apply(graph)
            if not rewrites:
                continue
            changed = True
            ir.validate(graph, context=f"after pass {p.name}")
            for rw in rewrites:
                actions.append(rw.note)
                counts[rw.kind] = counts.get(rw.kind, 0) + 1
            logger.debug("pass %s: %d rewrites", p.name, len(rewrites))
        if not changed:
            return graph, PassLog(tuple(actions), dict(sorted(counts.items())), iteration)
    raise ConversionError(f"graph '{graph.name}': passes did not reach a fixed point in "
                          f"{max_iterations} rounds")
