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
from typing import Any, NamedTuple

from common import states
from common.api import control_pb2, types_pb2
from common.timeutil import timestamp_seconds
from manager.store import Cache, Event, Kind

EVENT_HISTORY = 10_000
_WATCHER_QUEUE = 10_000
_TYPES = {Kind.SERVICE: "service", Kind.TASK: "task", Kind.NODE: "node"}


class Seen(NamedTuple):
    """An event as it is kept: when it happened and what its message will say, taken
    from the change at once. Keeping the cache's Event instead would keep two decoded
    objects alive per event (at 10,000 events of tasks, about 30 MB). It is turned into
    a message only when a client asks: most of the stream is status writes nobody
    reads."""

    when: float
    kind: Kind
    action: str
    id: str
    name: str
    # Task: (state, desired state, node id, error); node: (state, availability).
    detail: tuple[Any, ...]


def _seen(ev: Event) -> Seen:
    obj = ev.obj
    action = "create" if ev.old is None else "remove" if ev.new is None else "update"
    detail: tuple[Any, ...] = ()
    if ev.kind is Kind.SERVICE:
        name = obj.spec.annotations.name
    elif ev.kind is Kind.TASK:
        name = obj.annotations.name
        detail = (obj.status.state, obj.desired_state, obj.node_id, obj.status.err)
    else:
        name = obj.description.hostname
        detail = (obj.status.state, obj.spec.availability)
    return Seen(time.time(), ev.kind, action, obj.id, name, detail)


def _describe(seen: Seen) -> control_pb2.EventMessage:
    msg = control_pb2.EventMessage(
        type=_TYPES[seen.kind], action=seen.action, id=seen.id, name=seen.name
    )
    msg.time.FromNanoseconds(round(seen.when * 1e9))
    if seen.kind is Kind.TASK:
        state, desired, node_id, err = seen.detail
        msg.detail = (
            f"state={states.state_name(state)} "
            f"desired={states.state_name(desired)}"
            + (f" node={node_id}" if node_id else "")
            + (f" err={err}" if err else "")
        )
    elif seen.kind is Kind.NODE:
        node_state, availability = seen.detail
        status = types_pb2.NodeState.Name(node_state).removeprefix("NODE_STATE_")
        avail = types_pb2.NodeAvailability.Name(availability)
        msg.detail = (
            f"status={status.lower()} "
            f"availability={avail.removeprefix('NODE_AVAILABILITY_').lower()}"
        )
    return msg


class EventLog:
    """Recent events, and the queues of the clients watching them."""

    def __init__(self, cache: Cache) -> None:
        self.history: collections.deque[Seen] = collections.deque(maxlen=EVENT_HISTORY)
        self._watchers: set[asyncio.Queue[Seen]] = set()
        cache.add_listener(self._on_event)

    def _on_event(self, ev: Event) -> None:
        if ev.kind not in _TYPES:
            return
        seen = _seen(ev)
        self.history.append(seen)
        for queue in self._watchers:
            if queue.full():
                queue.get_nowait()  # too slow: lose the oldest
            queue.put_nowait(seen)

    async def watch(
        self, request: control_pb2.WatchEventsRequest
    ) -> AsyncIterator[control_pb2.EventMessage]:
        wanted = {kind for kind, name in _TYPES.items() if name in request.types}
        queue: asyncio.Queue[Seen] = asyncio.Queue(_WATCHER_QUEUE)
        self._watchers.add(queue)
        try:
            if request.HasField("since"):
                since = timestamp_seconds(request.since)
                for seen in list(self.history):
                    if seen.when >= since and (not request.types or seen.kind in wanted):
                        yield _describe(seen)
            while True:
                seen = await queue.get()
                if not request.types or seen.kind in wanted:
                    yield _describe(seen)
        finally:
            self._watchers.discard(queue)
