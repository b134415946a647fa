"""Task status reports from agents, written to etcd in batches.

Reports are written as soon as the previous write is done, keeping only the most
advanced state per task: a lone report goes out at once, and under load the reports
that arrive during one write go out together in the next (batched transactions).
Transitional states (accepted, preparing, ready, starting) are held back for up to
TRANSITIONAL_HOLD (`common.statusbatch`): a task that runs within that time is written
once, running, instead of once per step, while one that takes longer (a slow image
pull) still shows where it is within that time. A write never moves a task's observed
state backwards. Reports that could not be written (etcd unavailable) stay queued and
are retried; the agent also re-sends every state when it opens a new session, so
nothing is lost if the manager dies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from common import states
from common.api import objects_pb2, types_pb2
from common.log import get_logger
from common.statusbatch import PendingStatuses, wait_for_due
from manager.metrics import STATUS_BACKLOG, STATUS_REPORTS
from manager.store import Kind, StoreError, Update
from manager.store.views import Committer

_log = get_logger("dispatcher.status")

# First wait before retrying a write that etcd refused (doubling up to 5 s).
FLUSH_INTERVAL = 0.1
# Reports written in one commit at most. A commit keeps every object it writes until
# its last transaction is answered (decoded, about 2 KB each), and under load the
# batches grow by themselves: tens of thousands at once when a large service starts.
# 2,048 is 16 transactions, half of what the store sends at once (MAX_IN_FLIGHT).
MAX_BATCH = 2048
# How long a transitional state may wait for a later state of its task to replace it.
TRANSITIONAL_HOLD = 1.0
# Longer messages from an agent are cut to this many characters before they are stored.
MAX_STATUS_TEXT = 4096
# What a protobuf Timestamp may hold: 0001-01-01 to 9999-12-31 (JSON refuses the rest).
_TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)
# What an agent may report: not the desired-only REMOVE, nor ORPHANED (manager-made).
_REPORTABLE = {s for s in types_pb2.TaskState.values() if s <= states.REJECTED}


def status_problem(status: objects_pb2.TaskStatus) -> str:
    """Why an agent's status report cannot be stored as it is ("" if it can)."""
    if status.state not in _REPORTABLE:
        known = status.state in types_pb2.TaskState.values()
        return (
            f"task state {states.state_name(status.state)} is not one an agent reports"
            if known
            else f"unknown task state {status.state}"
        )
    ts = status.timestamp
    low, high = _TIMESTAMP_SECONDS
    if not (low <= ts.seconds <= high and 0 <= ts.nanos <= 999_999_999):
        return f"invalid timestamp ({ts.seconds} s, {ts.nanos} ns)"
    for port in status.port_status.ports:
        if port.protocol not in types_pb2.PortProtocol.values():
            return f"unknown port protocol {port.protocol}"
        if port.publish_mode not in types_pb2.PublishMode.values():
            return f"unknown publish mode {port.publish_mode}"
    return ""


def trimmed(status: objects_pb2.TaskStatus) -> objects_pb2.TaskStatus:
    """`status` with its free text cut to MAX_STATUS_TEXT characters."""
    texts = (status.message, status.err, status.container_status.container_id)
    if all(len(t) <= MAX_STATUS_TEXT for t in texts):
        return status
    out = objects_pb2.TaskStatus()
    out.CopyFrom(status)
    out.message = _cut(out.message)
    out.err = _cut(out.err)
    out.container_status.container_id = _cut(out.container_status.container_id)
    return out


def _cut(text: str) -> str:
    return text if len(text) <= MAX_STATUS_TEXT else text[: MAX_STATUS_TEXT - 1] + "…"


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
        # Why the manager stopped the task (the constraint enforcer's reason) outlives
        # the agent's report that it stopped, which says only "shutdown".
        kept = task.status.err if not states.is_runnable(task.desired_state) else ""
        task.status.CopyFrom(status)
        if kept and not status.err:
            task.status.err = kept
        return task

    return mutate


class TaskStatusWriter:
    """Collects (task id, status) reports and writes them in batches."""

    def __init__(self, store: Committer) -> None:
        self.store = store
        self._pending = PendingStatuses(TRANSITIONAL_HOLD)
        self._wake = asyncio.Event()
        self.written = 0
        self._writing = 0  # reports in the commit under way
        # Read when metrics are scraped: nothing to keep up to date per report.
        STATUS_BACKLOG.set_function(self.backlog)

    def backlog(self) -> int:
        """Reports received and not yet written (queued, held or being written)."""
        return len(self._pending) + self._writing

    def add(self, task_id: str, status: objects_pb2.TaskStatus) -> None:
        if self._pending.add(task_id, status):
            self._wake.set()

    async def run(self) -> None:
        backoff = FLUSH_INTERVAL
        while True:
            # Write what is due (MAX_BATCH at most) as soon as the previous write is
            # done: a lone report goes out at once, and under load the batches grow by
            # themselves, up to the cap.
            batch, wait = self._pending.due(MAX_BATCH)
            if not batch:
                await wait_for_due(self._wake, wait)
                continue
            self._writing = len(batch)
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
            finally:
                self._writing = 0
            backoff = FLUSH_INTERVAL
            self.written += len(result.written)
            STATUS_REPORTS.inc(len(result.written))
