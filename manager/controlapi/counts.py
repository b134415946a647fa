"""Task counts per service for `service ls`, kept from the cache's change stream.

Counting a service's tasks on every `service ls` costs a pass over every task: at
150,000 tasks, a tenth of a second of the manager's event loop per call. The counts are
kept as tasks change instead, per service and per run of a job.
"""

from __future__ import annotations

from collections import Counter

from common import states
from common.api import objects_pb2
from manager.store import Event, Kind
from manager.store.views import CacheView

# What a task adds to its service's counts.
_RUNNING, _WANTED, _COMPLETED = 0, 1, 2


def _marks(task: objects_pb2.Task) -> tuple[bool, bool, bool]:
    wanted = states.is_runnable(task.desired_state) and not states.is_terminal(task.status.state)
    return (
        wanted and task.status.state == states.RUNNING,
        wanted,
        task.status.state == states.COMPLETE,
    )


class ServiceCounts:
    """Running, wanted (desired to run and not ended) and completed tasks per service,
    in all and per job run (`job_iteration`)."""

    def __init__(self, cache: CacheView) -> None:
        self._all: Counter[tuple[str, int]] = Counter()
        self._runs: Counter[tuple[str, int, int]] = Counter()
        cache.add_listener(self._on_event)
        cache.add_resync_listener(lambda: self._rebuild(cache))
        self._rebuild(cache)

    def _rebuild(self, cache: CacheView) -> None:
        self._all.clear()
        self._runs.clear()
        for task in cache.tasks.values():
            self._count(task, 1)

    def _count(self, task: objects_pb2.Task, sign: int) -> None:
        for what, on in enumerate(_marks(task)):
            if on:
                self._all[(task.service_id, what)] += sign
                self._runs[(task.service_id, task.job_iteration, what)] += sign

    def _on_event(self, ev: Event) -> None:
        if ev.kind is not Kind.TASK:
            return
        old, new = ev.old, ev.new
        if (
            old is not None
            and new is not None
            and _marks(old) == _marks(new)
            and old.service_id == new.service_id
            and old.job_iteration == new.job_iteration
        ):
            return  # most writes change nothing counted here
        if old is not None:
            self._count(old, -1)
        if new is not None:
            self._count(new, 1)

    def get(self, service_id: str, job_iteration: int | None = None) -> tuple[int, int, int]:
        """(running, wanted, completed) of the service, or of one run of a job."""
        if job_iteration is None:
            return (
                self._all[(service_id, _RUNNING)],
                self._all[(service_id, _WANTED)],
                self._all[(service_id, _COMPLETED)],
            )
        return (
            self._runs[(service_id, job_iteration, _RUNNING)],
            self._runs[(service_id, job_iteration, _WANTED)],
            self._runs[(service_id, job_iteration, _COMPLETED)],
        )
