"""Restart delays: a replacement task is created READY (scheduled and prepared at once)
and started, desired state RUNNING, when its restart delay has passed.

The due time is derived from what is stored (the task's creation time plus its spec's
restart delay), so a manager that restarts in the middle of a delay keeps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import Callable

from common import states
from common.api import objects_pb2
from common.log import get_logger
from common.timeutil import timestamp_seconds
from manager.orchestrator.tasks import restart_delay
from manager.store import Cache, Event, Kind, Store, StoreError, Update

_log = get_logger("orchestrator.restart")


class RestartDelays:
    """Promotes READY tasks to RUNNING when their restart delay is over."""

    def __init__(self, cache: Cache, store: Store, clock: Callable[[], float]) -> None:
        self.cache = cache
        self.store = store
        self.clock = clock
        self._heap: list[tuple[float, str]] = []
        self._wake = asyncio.Event()
        cache.add_listener(self._on_event)
        cache.add_resync_listener(self._rescan)

    def _due(self, task: objects_pb2.Task) -> float:
        return timestamp_seconds(task.meta.created_at) + restart_delay(task.spec)

    def _on_event(self, ev: Event) -> None:
        new, old = ev.new, ev.old
        if (
            ev.kind is Kind.TASK
            and new is not None
            and new.desired_state == states.READY
            and (old is None or old.desired_state != states.READY)
        ):
            heapq.heappush(self._heap, (self._due(new), new.id))
            self._wake.set()

    def _rescan(self) -> None:
        self._heap = [
            (self._due(t), t.id)
            for t in self.cache.tasks.values()
            if t.desired_state == states.READY
        ]
        heapq.heapify(self._heap)
        self._wake.set()

    async def run(self) -> None:
        self._rescan()
        while True:
            now = self.clock()
            due: list[str] = []
            while self._heap and self._heap[0][0] <= now:
                due.append(heapq.heappop(self._heap)[1])
            if due:
                await self._start(due)
                continue
            self._wake.clear()
            timeout = self._heap[0][0] - now if self._heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _start(self, task_ids: list[str]) -> None:
        def promote(task: objects_pb2.Task) -> objects_pb2.Task | None:
            if task.desired_state != states.READY:
                return None
            task.desired_state = states.RUNNING
            return task

        try:
            result = await self.store.commit([Update(Kind.TASK, i, promote) for i in task_ids])
        except StoreError as exc:
            _log.warning("could not start delayed tasks; retrying", error=str(exc))
            for i in task_ids:
                heapq.heappush(self._heap, (self.clock() + 1.0, i))
            return
        if result.written:
            _log.info("restart delay over; starting tasks", tasks=len(result.written))
