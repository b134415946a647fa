"""Events: changes to services, tasks and nodes as they happen, for `swarmctl events`.

Built from the cache's change stream, so every manager can serve them. The last
EVENT_HISTORY events are kept in memory for `--since`; a watcher that cannot keep up
loses its oldest pending events rather than slowing the manager down.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator

from common import states
from common.api import control_pb2, types_pb2
from common.timeutil import now_timestamp, timestamp_seconds
from manager.store import Cache, Event, Kind

EVENT_HISTORY = 10_000
_WATCHER_QUEUE = 10_000
_TYPES = {Kind.SERVICE: "service", Kind.TASK: "task", Kind.NODE: "node"}


def _describe(ev: Event) -> control_pb2.EventMessage | None:
    kind = _TYPES.get(ev.kind)
    if kind is None:
        return None
    obj = ev.obj
    action = "create" if ev.old is None else "remove" if ev.new is None else "update"
    msg = control_pb2.EventMessage(type=kind, action=action, id=obj.id, time=now_timestamp())
    if ev.kind is Kind.SERVICE:
        msg.name = obj.spec.annotations.name
    elif ev.kind is Kind.TASK:
        msg.name = obj.annotations.name
        msg.detail = (
            f"state={states.state_name(obj.status.state)} "
            f"desired={states.state_name(obj.desired_state)}"
            + (f" node={obj.node_id}" if obj.node_id else "")
            + (f" err={obj.status.err}" if obj.status.err else "")
        )
    else:
        msg.name = obj.description.hostname
        status = types_pb2.NodeState.Name(obj.status.state).removeprefix("NODE_STATE_")
        availability = types_pb2.NodeAvailability.Name(obj.spec.availability)
        msg.detail = (
            f"status={status.lower()} "
            f"availability={availability.removeprefix('NODE_AVAILABILITY_').lower()}"
        )
    return msg


class EventLog:
    """Recent events, and the queues of the clients watching them."""

    def __init__(self, cache: Cache) -> None:
        self.history: collections.deque[control_pb2.EventMessage] = collections.deque(
            maxlen=EVENT_HISTORY
        )
        self._watchers: set[asyncio.Queue[control_pb2.EventMessage]] = set()
        cache.add_listener(self._on_event)

    def _on_event(self, ev: Event) -> None:
        msg = _describe(ev)
        if msg is None:
            return
        self.history.append(msg)
        for queue in self._watchers:
            if queue.full():
                queue.get_nowait()  # too slow: lose the oldest
            queue.put_nowait(msg)

    async def watch(
        self, request: control_pb2.WatchEventsRequest
    ) -> AsyncIterator[control_pb2.EventMessage]:
        wanted = set(request.types)
        queue: asyncio.Queue[control_pb2.EventMessage] = asyncio.Queue(_WATCHER_QUEUE)
        self._watchers.add(queue)
        try:
            if request.HasField("since"):
                since = timestamp_seconds(request.since)
                for msg in list(self.history):
                    if timestamp_seconds(msg.time) >= since and (not wanted or msg.type in wanted):
                        yield msg
            while True:
                msg = await queue.get()
                if not wanted or msg.type in wanted:
                    yield msg
        finally:
            self._watchers.discard(queue)
