"""Making tasks from services, and the restart policy's verdict on a task that ended."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from common import states
from common.api import objects_pb2, specs_pb2
from common.ids import new_id
from common.timeutil import duration_seconds, stamp_now, timestamp_seconds

DEFAULT_RESTART_DELAY = 5.0


def new_task(
    service: objects_pb2.Service,
    slot: int,
    *,
    node_id: str = "",
    desired: int = states.RUNNING,
    restart_attempt: int = 0,
    recent_restarts: Sequence[float] = (),
) -> objects_pb2.Task:
    """A PENDING task for `slot` of `service` (or for `node_id` of a global service)."""
    return TaskMaker(service)(
        slot,
        node_id=node_id,
        desired=desired,
        restart_attempt=restart_attempt,
        recent_restarts=recent_restarts,
    )


class TaskMaker:
    """`new_task` for many tasks of one service: what they share (the service's ids,
    task template, ports, labels) is put together once, and each task is a copy of
    that with its own id, slot and name (half the cost of building each from the
    service, which counts when an orchestrator pass makes thousands)."""

    def __init__(self, service: objects_pb2.Service) -> None:
        self.name = service.spec.annotations.name
        template = objects_pb2.Task(
            service_id=service.id,
            service_name=self.name,
            spec_version=service.spec_version,
        )
        template.annotations.labels.update(service.spec.annotations.labels)
        template.spec.CopyFrom(service.spec.task)
        template.endpoint.CopyFrom(service.spec.endpoint)
        template.status.state = states.PENDING
        template.status.message = "pending task scheduling"
        self.template = template

    def __call__(
        self,
        slot: int,
        *,
        node_id: str = "",
        desired: int = states.RUNNING,
        restart_attempt: int = 0,
        recent_restarts: Sequence[float] = (),
    ) -> objects_pb2.Task:
        task = objects_pb2.Task()
        task.CopyFrom(self.template)
        task.id = new_id()
        task.slot = slot
        task.node_id = node_id
        task.desired_state = desired  # type: ignore[assignment]
        task.restart_attempt = restart_attempt
        task.annotations.name = f"{self.name}.{slot if slot else node_id}"
        stamp_now(task.status.timestamp)
        for when in recent_restarts:
            task.recent_restarts.add().FromNanoseconds(round(when * 1e9))
        return task


def runs_current_spec(task: objects_pb2.Task, service: objects_pb2.Service) -> bool:
    """The task was made from the service's current task template and ports."""
    if task.spec_version == service.spec_version:
        return True
    return task.spec == service.spec.task and task.endpoint == service.spec.endpoint


def restart_delay(spec: specs_pb2.TaskSpec) -> float:
    if spec.restart.HasField("delay"):
        return duration_seconds(spec.restart.delay)
    return DEFAULT_RESTART_DELAY


@dataclass(frozen=True)
class RestartVerdict:
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
        window = duration_seconds(policy.window) if policy.HasField("window") else 0.0
        # With a window: the restarts that led to this task and fall inside it (node
        # losses are not restarts and are not recorded).
        attempts = len(restarts_within(task, now, window)) if window > 0 else task.restart_attempt
        if attempts >= policy.max_attempts:
            return RestartVerdict(False, f"restart max attempts ({policy.max_attempts}) reached")
    return RestartVerdict(True, "")
