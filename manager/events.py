"""Events: changes to services, tasks and nodes as they happen, for `swarmctl events`.

Built from the cache's change stream, so every manager can serve them. The last
EVENT_HISTORY events are kept in memory for `--since`; a watcher that cannot keep up
loses its oldest pending events rather than slowing the manager down.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator

from common import states
from common.api import control_pb2, types_pb2
from common.timeutil import timestamp_seconds
from manager.store import Cache, Event, Kind

EVENT_HISTORY = 10_000
_WATCHER_QUEUE = 10_000
_TYPES = {Kind.SERVICE: "service", Kind.TASK: "task", Kind.NODE: "node"}


# An event as it is kept: when it happened, and the change. It is turned into a message
# only when a client asks for it: the cache's change stream carries every task status
# write, and most are never read.
Stamped = tuple[float, Event]


def _describe(when: float, ev: Event) -> control_pb2.EventMessage:
    kind = _TYPES[ev.kind]
    obj = ev.obj
    action = "create" if ev.old is None else "remove" if ev.new is None else "update"
    msg = control_pb2.EventMessage(type=kind, action=action, id=obj.id)
    msg.time.FromNanoseconds(round(when * 1e9))
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
        self.history: collections.deque[Stamped] = collections.deque(maxlen=EVENT_HISTORY)
        self._watchers: set[asyncio.Queue[Stamped]] = set()
        cache.add_listener(self._on_event)

    def _on_event(self, ev: Event) -> None:
        if ev.kind not in _TYPES:
            return
        stamped = (time.time(), ev)
        self.history.append(stamped)
        for queue in self._watchers:
            if queue.full():
                queue.get_nowait()  # too slow: lose the oldest
            queue.put_nowait(stamped)

    async def watch(
        self, request: control_pb2.WatchEventsRequest
    ) -> AsyncIterator[control_pb2.EventMessage]:
        wanted = {kind for kind, name in _TYPES.items() if name in request.types}
        queue: asyncio.Queue[Stamped] = asyncio.Queue(_WATCHER_QUEUE)
        self._watchers.add(queue)
        try:
            if request.HasField("since"):
                since = timestamp_seconds(request.since)
                for when, ev in list(self.history):
                    if when >= since and (not request.types or ev.kind in wanted):
                        yield _describe(when, ev)
            while True:
                when, ev = await queue.get()
                if not request.types or ev.kind in wanted:
                    yield _describe(when, ev)
        finally:
            self._watchers.discard(queue)
