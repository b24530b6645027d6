"""In-process federated runs: a Flower ``Grid`` that calls the ClientApp directly.

:class:`LocalGrid` implements Flower's ``Grid`` (the ServerApp's only view of the clients) by
running ``ClientApp(message, context)`` for each destination node in this process, one node
after the other, with a persistent ``Context`` per node (so ``context.state`` carries secure
aggregation keys and error-feedback residuals across messages exactly as a SuperNode does).
The strategy, the client mods, the message contents and the byte counts are therefore the
same code as under the Simulation Engine or a SuperLink; only the transport differs (no Ray,
no gRPC, no process per message), which makes long accuracy curves affordable on 2 cores.

An exception raised by the ClientApp becomes an error reply
(``ErrorCode.CLIENT_APP_RAISED_EXCEPTION``), as Flower's runtimes do.

>>> from flwr.app import Message, RecordDict, ConfigRecord
>>> from flwr.clientapp import ClientApp
>>> app = ClientApp()
>>> @app.query()
... def echo(msg, ctx):
...     return Message(RecordDict({"r": ConfigRecord({"pid": ctx.node_config["partition-id"]})}),
...                    reply_to=msg)
>>> grid = LocalGrid(app, 3)
>>> [r.content["r"]["pid"] for r in grid.send_and_receive(
...     [Message(RecordDict(), dst_node_id=n, message_type="query") for n in grid.get_node_ids()])]
[0, 1, 2]
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, cast
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

if TYPE_CHECKING:
    from tether.federated.apps import FedConfig, OnRound, RunReport

__all__ = ["LocalGrid", "run_local"]

logger = logging.getLogger(__name__)


def _over_the_wire(msg: Message, mid: str) -> Message:
    """The node's copy of ``msg``: every object deflated to bytes and inflated again, as
    Flower's transports do (so a mod mutating its message never touches the server's)."""
    objs = get_all_nested_objects(msg)
    contents = {oid: obj.deflate() for oid, obj in objs.items()}
    out = cast(Message, inflate_object_from_contents(msg.object_id, contents))
    out.metadata.__dict__["_message_id"] = mid
    return out


class LocalGrid(Grid):
    """A ``Grid`` over ``num_nodes`` in-process nodes running ``client_app``.

    Args:
        client_app: The ClientApp every node runs.
        num_nodes: N; node ids are 1..N and node ``i`` gets ``partition-id = i - 1``.
        run_config: The run config each node's Context carries (default empty).
    """

    def __init__(self, client_app: ClientApp, num_nodes: int,
                 run_config: dict[str, Any] | None = None) -> None:
        if num_nodes < 1:
            raise ValueError(f"LocalGrid.num_nodes must be >= 1. Received: num_nodes={num_nodes}")
        self.client_app = client_app
        self._run: Run | None = Run.create_empty(run_id=1)
        self._contexts = {
            n: Context(run_id=1, node_id=n,
                       node_config={"partition-id": n - 1, "num-partitions": num_nodes},
                       state=RecordDict(), run_config=dict(run_config or {}))
            for n in range(1, num_nodes + 1)
        }
        self._replies: dict[str, Message] = {}
        # Message() reads the sender's identity from this process-wide record, which Flower's
        # ServerApp runtime fills in; here this process is the ServerApp (the SuperLink's node)
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        if self._run is None:
            raise RuntimeError("LocalGrid.run: no run set; call set_run first")
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            if node not in self._contexts:
                raise ValueError(f"LocalGrid: message {msg.metadata.message_type!r} addressed to "
                                 f"unknown node {node}; nodes are 1..{len(self._contexts)}")
            mid = str(uuid4())
            msg.metadata.__dict__["_message_id"] = mid
            self._replies[mid] = self._deliver(_over_the_wire(msg, mid), self._contexts[node])
            ids.append(mid)
        return ids

    def _deliver(self, msg: Message, ctx: Context) -> Message:
        try:
            return self.client_app(msg, ctx)
        except Exception as exc:  # noqa: BLE001 - a raising ClientApp is an error reply in Flower too
            logger.debug("node %s raised on %s: %s", ctx.node_id, msg.metadata.message_type, exc)
            return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                 reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(m) for m in message_ids if m in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


def run_local(cfg: FedConfig, eval_every: int = 1, stop_at: float | None = None,
              on_round: OnRound | None = None) -> RunReport:
    """Run the FedConfig ``cfg`` with tether's ServerApp body and ClientApp on a
    :class:`LocalGrid` (same strategy and mods as :func:`~tether.federated.apps.simulate`).

    Client sampling uses Python's ``random`` (as Flower's ``sample_nodes`` does), seeded with
    ``cfg.seed`` here, so runs are reproducible. ``eval_every`` > 1 evaluates the global model
    only every that many rounds (and at the last one); other rounds report accuracy NaN.
    ``stop_at`` ends the run at the first round reaching that test accuracy (see
    :func:`~tether.federated.apps.run_server`); ``on_round(t, accuracy)`` hears of each round.
    Returns the :class:`~tether.federated.apps.RunReport`.
    """
    from tether.federated.apps import RunReport, make_client_app, run_server  # noqa: F811

    random.seed(cfg.seed)
    t0 = time.time()
    grid = LocalGrid(make_client_app(cfg), cfg.clients)
    rep = run_server(grid, cfg, RunReport(asdict(cfg)), eval_every=eval_every, stop_at=stop_at,
                     on_round=on_round)
    rep.wall_s = time.time() - t0
    return rep
