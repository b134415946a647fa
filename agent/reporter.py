"""Task status reports on their way to the manager.

Runners add reports at any time; the session sends whatever is due in one
UpdateTaskStatus call, then the next batch, so reports coalesce naturally under load.
A transitional state (accepted .. starting) waits up to REPORT_HOLD for the state that
follows it, so a task that starts quickly costs one report, not five.
A call that times out is tried again (the session's heartbeats decide whether it
lives); reports that could not be sent stay pending for the next session.
"""

from __future__ import annotations

import asyncio
import random
import time

import grpc

from agent.metrics import REPORT_BATCHES, REPORT_SECONDS
from common.api import dispatcher_pb2, dispatcher_pb2_grpc, objects_pb2
from common.statusbatch import PendingStatuses, wait_for_due

MAX_BATCH = 5000
# How long a transitional state may wait for the state that follows it before it is
# sent (the manager holds them again before it writes them).
REPORT_HOLD = 0.5
# Failures that mean "too slow" rather than "no session": the batch is sent again.
_SLOW = {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
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
        self, stub: dispatcher_pb2_grpc.DispatcherAsyncStub, session_id: str, timeout: float
    ) -> None:
        """Send pending reports until a call fails (which ends the session)."""
        while True:
            batch, wait = self._pending.due(MAX_BATCH)
            if not batch:
                await wait_for_due(self._wake, wait)
                continue
            # Bounded in bytes too: gRPC refuses messages over 4 MiB.
            size = 0
            request = dispatcher_pb2.UpdateTaskStatusRequest(session_id=session_id)
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
                sent = time.monotonic()
                await stub.UpdateTaskStatus(request, timeout=timeout)
                REPORT_SECONDS.observe(time.monotonic() - sent)
            except grpc.aio.AioRpcError as exc:
                for tid, status in batch.items():
                    self.add(tid, status)
                if exc.code() not in _SLOW:
                    raise
                # The manager (or this node) is slow, not gone: the heartbeats say
                # whether the session lives. Ending it would cost a reconnection and
                # a re-send of everything, more load where there is too much.
                await asyncio.sleep(min(timeout, 1.0) * random.uniform(0.5, 1.5))
            except BaseException:
                for tid, status in batch.items():
                    self.add(tid, status)
                raise
