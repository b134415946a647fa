"""Task status reports on their way to the manager.

Runners add reports at any time; the session sends whatever is pending in one
UpdateTaskStatus call, then the next batch, so reports coalesce naturally under load.
A call that times out is tried again (the session's heartbeats decide whether it
lives); reports that could not be sent stay pending for the next session.
"""

from __future__ import annotations

import asyncio
import random

import grpc

from agent.metrics import REPORT_BATCHES
from common.api import dispatcher_pb2, dispatcher_pb2_grpc, objects_pb2

MAX_BATCH = 5000
# Failures that mean "too slow" rather than "no session": the batch is sent again.
_SLOW = {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
MAX_BATCH_BYTES = 1024 * 1024


class StatusReporter:
    """Pending reports, the most advanced one per task."""

    def __init__(self) -> None:
        self._pending: dict[str, objects_pb2.TaskStatus] = {}
        self._wake = asyncio.Event()

    def add(self, task_id: str, status: objects_pb2.TaskStatus) -> None:
        queued = self._pending.get(task_id)
        if queued is None or status.state >= queued.state:
            self._pending[task_id] = status
        self._wake.set()

    def discard(self, task_id: str) -> None:
        self._pending.pop(task_id, None)

    async def send_forever(
        self, stub: dispatcher_pb2_grpc.DispatcherAsyncStub, session_id: str, timeout: float
    ) -> None:
        """Send pending reports until a call fails (which ends the session)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch: dict[str, objects_pb2.TaskStatus] = {}
                size = 0
                # Bounded in count and in bytes: gRPC refuses messages over 4 MiB.
                for tid in list(self._pending)[:MAX_BATCH]:
                    status = self._pending.pop(tid)
                    batch[tid] = status
                    size += status.ByteSize() + len(tid) + 8
                    if size > MAX_BATCH_BYTES:
                        break
                request = dispatcher_pb2.UpdateTaskStatusRequest(
                    session_id=session_id,
                    updates=[
                        dispatcher_pb2.TaskStatusUpdate(task_id=t, status=s)
                        for t, s in batch.items()
                    ],
                )
                try:
                    REPORT_BATCHES.inc()
                    await stub.UpdateTaskStatus(request, timeout=timeout)
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
