"""The restart policy's verdict on a task that ended by itself: whether its slot gets a
replacement (condition, max attempts within the window)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from common import states
from common.api import objects_pb2, specs_pb2
from common.timeutil import duration_seconds, timestamp_seconds


@dataclass(frozen=True)
class RestartVerdict:
    """Whether the slot gets a replacement, and why not when it does not."""

    restart: bool
    reason: str


def restarts_within(task: objects_pb2.Task, now: float, window: float) -> list[float]:
    """The times of the restarts recorded on `task` that are inside the window."""
    return [t for t in (timestamp_seconds(ts) for ts in task.recent_restarts) if t >= now - window]


def restart_window(task: objects_pb2.Task) -> float:
    policy = task.spec.restart
    return duration_seconds(policy.window) if policy.HasField("window") else 0.0


def restart_verdict(
    task: objects_pb2.Task, slot_history: Sequence[objects_pb2.Task], now: float
) -> RestartVerdict:
    """Whether the restart policy replaces `task`, which ended by itself."""
    policy = task.spec.restart
    condition = (
        policy.condition if policy.HasField("condition") else specs_pb2.RESTART_CONDITION_ANY
    )
    if condition == specs_pb2.RESTART_CONDITION_NONE:
        return RestartVerdict(False, "restart condition is none")
    if condition == specs_pb2.RESTART_CONDITION_ON_FAILURE and task.status.state == states.COMPLETE:
        return RestartVerdict(False, "task completed and restart condition is on-failure")
    if policy.max_attempts:
        window = restart_window(task)
        # With a window: the restarts that led to this task and fall inside it (node
        # losses are not restarts and are not recorded).
        attempts = len(restarts_within(task, now, window)) if window > 0 else task.restart_attempt
        if attempts >= policy.max_attempts:
            return RestartVerdict(False, f"restart max attempts ({policy.max_attempts}) reached")
    return RestartVerdict(True, "")
