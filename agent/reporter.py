"""Task status reports on their way to the manager.

Runners add reports at any time; the session sends whatever is due in one message on
its Heartbeats stream, then the next batch once that is written, so reports coalesce
naturally under load (and wait, through the stream's flow control, for a manager that
reads them slowly). A transitional state (accepted .. starting) waits up to
REPORT_HOLD for the state that follows it, so a task that starts quickly costs one
report, not five. Reports that could not be sent stay pending for the next session,
which also re-sends every task's state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from agent.metrics import REPORT_BATCHES
from common.api import dispatcher_pb2, objects_pb2
from common.statusbatch import PendingStatuses, wait_for_due

MAX_BATCH = 5000
# How long a transitional state may wait for the state that follows it before it is
# sent (the manager holds them again before it writes them).
REPORT_HOLD = 0.5
MAX_BATCH_BYTES = 1024 * 1024


class StatusReporter:
    """Pending reports, the most advanced one per task; transitional states wait up to
    REPORT_HOLD for the state that follows (`common.statusbatch`)."""

    def __init__(self, hold: float | None = None) -> None:
        self._pending = PendingStatuses(REPORT_HOLD if hold is None else hold)
        self._wake = asyncio.Event()

    def add(self, task_id: str, status: objects_pb2.TaskStatus) -> None:
        if self._pending.add(task_id, status):
            self._wake.set()

    def discard(self, task_id: str) -> None:
        self._pending.discard(task_id)

    async def send_forever(
        self,
        write: Callable[[dispatcher_pb2.HeartbeatRequest], Awaitable[None]],
        session_id: str,
    ) -> None:
        """Send pending reports with `write` (a message on the session's Heartbeats
        stream) until a write fails, which ends the session."""
        while True:
            batch, wait = self._pending.due(MAX_BATCH)
            if not batch:
                await wait_for_due(self._wake, wait)
                continue
            # Bounded in bytes too: gRPC refuses messages over 4 MiB.
            size = 0
            request = dispatcher_pb2.HeartbeatRequest(session_id=session_id)
            for n, (tid, status) in enumerate(batch.items()):
                size += status.ByteSize() + len(tid) + 8
                if size > MAX_BATCH_BYTES and n:
                    for rest, st in list(batch.items())[n:]:
                        self._pending.add(rest, st)
                        del batch[rest]
                    break
                request.updates.add(task_id=tid, status=status)
            try:
                REPORT_BATCHES.inc()
                await write(request)
            except BaseException:
                # Sent again in the next session (if this one took them, the manager
                # keeps the most advanced state: a report twice is harmless).
                for tid, status in batch.items():
                    self.add(tid, status)
                raise
