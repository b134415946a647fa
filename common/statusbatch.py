"""Task status reports waiting to be sent or written, the most advanced one per task.

Both ends of a report use it: the agent's reporter, before an UpdateTaskStatus call,
and the manager's status writer, before an etcd transaction. A task that starts runs
through accepted, preparing, ready and starting in a fraction of a second; thousands
starting at once would cost a call and a write per step. Transitional states wait up
to `hold` seconds for a later state of their task to replace them: a task that runs
by then is sent once, running, while one that takes longer (a slow image pull) still
shows where it is within that time. Running and final states go at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from common import states
from common.api import objects_pb2


def transitional(state: int) -> bool:
    return states.ASSIGNED < state < states.RUNNING


class PendingStatuses:
    """Reports not yet sent; `due()` gives those to send now."""

    def __init__(self, hold: float) -> None:
        self.hold = hold
        self._pending: dict[str, objects_pb2.TaskStatus] = {}
        # Tasks whose pending report is transitional, with when it may wait until (in
        # insertion order, which is deadline order: the hold is the same for all).
        self._held: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, task_id: str, status: objects_pb2.TaskStatus) -> bool:
        """Queue `status` unless a more advanced one is queued; True if it should be
        sent now (not held), or if it is the first held one (a new deadline)."""
        queued = self._pending.get(task_id)
        if queued is not None and status.state < queued.state:
            return False
        self._pending[task_id] = status
        if transitional(status.state):
            if task_id in self._held:
                return False  # still held, under its first deadline
            self._held[task_id] = time.monotonic() + self.hold
            return len(self._held) == 1
        self._held.pop(task_id, None)
        return True

    def get(self, task_id: str) -> objects_pb2.TaskStatus | None:
        return self._pending.get(task_id)

    def discard(self, task_id: str) -> None:
        self._pending.pop(task_id, None)
        self._held.pop(task_id, None)

    def due(
        self, limit: int | None = None
    ) -> tuple[dict[str, objects_pb2.TaskStatus], float | None]:
        """The reports to send now (at most `limit`), and how long until the next held
        one is due (None when none is held)."""
        now = time.monotonic()
        held = self._held
        while held:
            task_id, deadline = next(iter(held.items()))
            if deadline > now:
                break
            del held[task_id]
        batch: dict[str, objects_pb2.TaskStatus] = {}
        if not held and (limit is None or len(self._pending) <= limit):
            batch, self._pending = self._pending, {}
        else:
            for task_id in list(self._pending):
                if task_id in held:
                    continue
                batch[task_id] = self._pending.pop(task_id)
                if limit is not None and len(batch) >= limit:
                    break
        wait = next(iter(held.values())) - now if held else None
        return batch, wait


async def wait_for_due(wake: asyncio.Event, wait: float | None) -> None:
    """Wait until `wake` is set or `wait` seconds have passed (no timeout if None);
    with no task created for it (a farm waits so in thousands of agents)."""
    wake.clear()
    if wait is None:
        await wake.wait()
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(wait, 0.0)):
            await wake.wait()
