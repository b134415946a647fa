"""Making tasks from services: a task is a copy of the service's task template, ports
and labels with its own id, slot (or node, for a global service) and name
(`SERVICE.SLOT`, or `SERVICE.NODE`), PENDING until the scheduler assigns it.
"""

from __future__ import annotations

from collections.abc import Sequence

from common import states
from common.api import objects_pb2
from common.ids import new_id
from common.timeutil import stamp_now
from manager.domain.networks import needs_allocation


def new_task(
    service: objects_pb2.Service,
    slot: int,
    *,
    node_id: str = "",
    desired: int = states.RUNNING,
    restart_attempt: int = 0,
    recent_restarts: Sequence[float] = (),
) -> objects_pb2.Task:
    """A task for `slot` of `service` (or for `node_id` of a global service): PENDING, or
    NEW while it waits for its addresses (`networks.needs_allocation`)."""
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
        if needs_allocation(service.spec):
            template.status.state = states.NEW
            template.status.message = "waiting for addresses on its networks"
        else:
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
