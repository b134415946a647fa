"""Node health: declares down the nodes that no manager holds a session for.

A node's agent heartbeats to the dispatcher, which declares the node down when the
heartbeats stop. What the dispatcher cannot see is a node that never came back at all
after this manager started (or took over): such a node stays as it was stored until
the grace period runs out (twice the usual heartbeat timeout, so that a manager restart
or failover never reschedules healthy nodes' tasks), then it is declared down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from common.api import objects_pb2, types_pb2
from common.log import get_logger
from common.timeutil import now_timestamp
from manager.dispatcher.dispatcher import MISSED_HEARTBEATS
from manager.store import Cache, Kind, Store, StoreError, Update

_log = get_logger("nodehealth")
GRACE_FACTOR = 2


class NodeHealth:
    """Marks DOWN the nodes without a session once the grace period has passed."""

    def __init__(
        self,
        cache: Cache,
        store: Store,
        has_session: Callable[[str], bool],
        heartbeat_period: float,
        clock: Callable[[], float],
    ) -> None:
        self.cache = cache
        self.store = store
        self.has_session = has_session
        self.period = heartbeat_period
        self.clock = clock
        self.grace = GRACE_FACTOR * MISSED_HEARTBEATS * heartbeat_period

    async def run(self) -> None:
        started = self.clock()
        while True:
            await asyncio.sleep(self.period)
            if self.clock() - started < self.grace:
                continue
            stale = [
                n.id
                for n in self.cache.nodes.values()
                if n.status.state != types_pb2.NODE_STATE_DOWN and not self.has_session(n.id)
            ]
            if stale:
                await self._mark_down(stale)

    async def _mark_down(self, node_ids: list[str]) -> None:
        def down(node: objects_pb2.Node) -> objects_pb2.Node | None:
            if self.has_session(node.id) or node.status.state == types_pb2.NODE_STATE_DOWN:
                return None
            node.status.state = types_pb2.NODE_STATE_DOWN
            node.status.message = "node did not reconnect to a manager"
            node.status.timestamp.CopyFrom(now_timestamp())
            return node

        try:
            result = await self.store.commit([Update(Kind.NODE, n, down) for n in node_ids])
        except StoreError as exc:
            _log.warning("could not mark nodes down", error=str(exc))
            return
        for node in result.written:
            _log.warning("node down", node_id=node.id, reason=node.status.message)
