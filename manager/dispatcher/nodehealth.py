"""Node health (leader only): declares down the nodes no manager holds a session for.

A node's agent heartbeats to the manager it is connected to, which declares the node
down itself when the heartbeats stop. What no single manager can see is a node that
has no session anywhere: its manager died (its session keys vanish with its lease) and
the node did not reconnect elsewhere, or it never came back after a failover. The
leader reads every manager's session keys from the cache; a node without one for three
heartbeat periods is declared down. For the first six periods after this manager
becomes the leader nobody is declared down, so a failover (agents moving to another
manager) never reschedules healthy nodes' tasks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from common.api import objects_pb2, types_pb2
from common.defaults import MISSED_HEARTBEATS
from common.log import get_logger
from common.nodes import runs_tasks
from common.timeutil import stamp_now, timestamp_seconds
from manager.dispatcher.dispatcher import effective_period
from manager.metrics import NODES_DOWN
from manager.store import Kind, StoreError, Update
from manager.store.views import CacheView, Committer

_log = get_logger("nodehealth")
GRACE_FACTOR = 2


class SessionWatch:
    """Which nodes have been without a session for long enough, on a clock of the
    caller's (`now`, monotonic; `wall`, the time of day for status timestamps).

    `started` is when this manager became the leader: within `failover_grace` (six
    periods) of it nobody is declared down; after it, a node is once it has been
    without a session for `timeout` (three periods).
    """

    def __init__(self, heartbeat_period: float, started: float) -> None:
        self.period = heartbeat_period
        self.started = started
        self.missing_since: dict[str, float] = {}
        # Wall-clock time each was first seen without a session, to compare with the
        # status timestamp a manager writes when it registers the node.
        self.missing_wall: dict[str, float] = {}

    def stale(
        self,
        nodes: Iterable[objects_pb2.Node],
        has_session: Callable[[str], bool],
        now: float,
        wall: float,
        period: float | None = None,
    ) -> list[str]:
        """The nodes to declare down now (call it every half period or so); `period`
        is the heartbeat period now, if it changed since the watch began."""
        if period is not None:
            self.period = period
        timeout = MISSED_HEARTBEATS * self.period
        failover_grace = GRACE_FACTOR * timeout
        stale = []
        for node in nodes:
            if (
                not runs_tasks(node)
                or node.status.state == types_pb2.NODE_STATE_DOWN
                or has_session(node.id)
            ):
                self.missing_since.pop(node.id, None)
                self.missing_wall.pop(node.id, None)
                continue
            self.missing_wall.setdefault(node.id, wall)
            since = self.missing_since.setdefault(node.id, now)
            if now - since > timeout and now - self.started > failover_grace:
                stale.append(node.id)
        return stale


class NodeHealth:
    """Marks DOWN the nodes that have had no session for long enough."""

    def __init__(
        self,
        cache: CacheView,
        store: Committer,
        heartbeat_period: float,
        clock: Callable[[], float],
    ) -> None:
        self.cache = cache
        self.store = store
        self.period = heartbeat_period
        self.clock = clock

    def has_session(self, node_id: str) -> bool:
        return self.cache.get(Kind.SESSION, node_id) is not None

    def effective_period(self) -> float:
        """The period agents are told: longer than configured in a large cluster."""
        return effective_period(self.period, len(self.cache.nodes))

    async def run(self) -> None:
        """Run for as long as this manager leads (cancelled when it stops leading)."""
        watch = SessionWatch(self.effective_period(), started=self.clock())
        while True:
            await asyncio.sleep(self.effective_period() / 2)
            stale = watch.stale(
                self.cache.nodes.values(),
                self.has_session,
                self.clock(),
                time.time(),
                self.effective_period(),
            )
            if stale:
                await self._mark_down({n: watch.missing_wall[n] for n in stale})

    async def _mark_down(self, missing_wall: dict[str, float]) -> None:
        def down(node: objects_pb2.Node) -> objects_pb2.Node | None:
            if self.has_session(node.id) or node.status.state == types_pb2.NODE_STATE_DOWN:
                return None
            if (
                node.status.state == types_pb2.NODE_STATE_READY
                and timestamp_seconds(node.status.timestamp) > missing_wall[node.id]
            ):
                return None  # a manager registered it since: its session key is on the way
            node.status.state = types_pb2.NODE_STATE_DOWN
            node.status.message = "no session with any manager"
            stamp_now(node.status.timestamp)
            return node

        try:
            result = await self.store.commit([Update(Kind.NODE, n, down) for n in missing_wall])
        except StoreError as exc:
            _log.warning("could not mark nodes down", error=str(exc))
            return
        for node in result.written:
            NODES_DOWN.inc()
            _log.warning("node down", node_id=node.id, reason=node.status.message)
