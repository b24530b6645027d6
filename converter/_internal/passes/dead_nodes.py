"""eliminate_dead_nodes: nodes whose outputs nobody reads.

    Before: t = op(x) where t is read by no node and is no graph output
    After:  the node is gone (and, through later rounds, the chain that only fed it)
"""

from __future__ import annotations



from .rewrite import Match, Rewrite, RewritePass, op

__all__ = ["eliminate_dead_nodes"]


def _drop_dead(m: Match) -> Rewrite | None:
    """node none of whose outputs is read or a graph output  =>  removed."""
    g = m.graph
    i, n = m.nodes["n"]
    if any(g.use_count(o) for o in n.outputs):
        return None
    return Rewrite("eliminate_dead_node", f"removed dead node {n.name} ({n.op.name})", (i,))


eliminate_dead_nodes = RewritePass("eliminate_dead_nodes", (
    # node with unused outputs  =>  removed
    (op(capture="n"), _drop_dead),
))
