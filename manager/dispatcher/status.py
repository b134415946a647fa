"""Task status reports from agents, written to etcd in batches.

Reports are written as soon as the previous write is done, keeping only the most
advanced state per task: a lone report goes out at once, and under load the reports
that arrive during one write go out together in the next (batched transactions). A
write never moves a task's observed state backwards. Reports that could not be written
(etcd unavailable) stay queued and are retried; the agent also re-sends every state
when it opens a new session, so nothing is lost if the manager dies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from common.api import objects_pb2
from common.log import get_logger
from manager.metrics import STATUS_REPORTS
from manager.store import Kind, Store, StoreError, Update

_log = get_logger("dispatcher.status")

# First wait before retrying a write that etcd refused (doubling up to 5 s).
FLUSH_INTERVAL = 0.1


def _same_except_time(a: objects_pb2.TaskStatus, b: objects_pb2.TaskStatus) -> bool:
    a2, b2 = objects_pb2.TaskStatus(), objects_pb2.TaskStatus()
    a2.CopyFrom(a)
    b2.CopyFrom(b)
    a2.ClearField("timestamp")
    b2.ClearField("timestamp")
    return a2 == b2


def forward_only(
    status: objects_pb2.TaskStatus,
) -> Callable[[objects_pb2.Task], objects_pb2.Task | None]:
    """A mutator that applies `status` unless it would move the task's state backwards."""

    def mutate(task: objects_pb2.Task) -> objects_pb2.Task | None:
        if status.state < task.status.state:
            return None
        if status.state == task.status.state and _same_except_time(status, task.status):
            return None
        task.status.CopyFrom(status)
        return task

    return mutate


class TaskStatusWriter:
    """Collects (task id, status) reports and writes them in batches."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: dict[str, objects_pb2.TaskStatus] = {}
        self._wake = asyncio.Event()
        self.written = 0

    def add(self, task_id: str, status: objects_pb2.TaskStatus) -> None:
        queued = self._pending.get(task_id)
        if queued is None or status.state >= queued.state:
            self._pending[task_id] = status
        self._wake.set()

    async def run(self) -> None:
        backoff = FLUSH_INTERVAL
        while True:
            # Write whatever is pending as soon as the previous write is done: a lone
            # report goes out at once, and under load the batches grow by themselves.
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, {}
            try:
                result = await self.store.commit(
                    [Update(Kind.TASK, tid, forward_only(st)) for tid, st in batch.items()]
                )
            except StoreError as exc:
                _log.warning(
                    "could not write task status; will retry", reports=len(batch), error=str(exc)
                )
                for tid, st in batch.items():
                    self.add(tid, st)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = FLUSH_INTERVAL
            self.written += len(result.written)
            STATUS_REPORTS.inc(len(result.written))
