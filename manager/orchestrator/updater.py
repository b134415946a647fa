"""Rolling updates of replicated and global services, as Swarm does them.

When a service's task template changes, its slots (the numbers 1..N of a replicated
service, the nodes of a global one) move to the new spec `parallelism` at a time (0: all
at once). A slot counts as in progress until its new task has been running for `delay`;
stop-first replaces a task after stopping the old one, start-first starts the new one
beside the old one, which stops once the new one runs (so the running count never
drops). Tasks of the new spec that fail while the update runs are failures; once they
exceed `max_failure_ratio` of the slots, `failure_action` decides: pause (the update
stops where it is until the next `service update`), continue, or rollback (the previous
spec is rolled out with the rollback settings). The update is complete when every slot
runs the new spec and each new task has run for `monitor`.

The state lives in the service's `update_status`, so a restarted manager carries on.
Everything here is pure: `plan_rollout` adds its decisions to the orchestrator's plan.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from common import states
from common.api import objects_pb2, specs_pb2
from common.rollout import PAUSED, ROLLING, US, rollout_config
from common.timeutil import duration_seconds, timestamp_seconds
from manager.domain.tasks import runs_current_spec
from manager.orchestrator.plan import Plan, ShutdownTask, SlotState

# A slot's key: its number (replicated) or its node's id (global).
Slot = TypeVar("Slot", bound=Hashable)


@dataclass
class UpdateDecision:
    """A change to the service's update status (or a rollback to start)."""

    state: int
    message: str
    rollback: bool = False


def _running_since(task: objects_pb2.Task) -> float | None:
    # The write that made the task RUNNING is its last one while it runs (manager clock).
    if task.status.state != states.RUNNING:
        return None
    return timestamp_seconds(task.meta.updated_at)


def plan_rollout(
    service: objects_pb2.Service,
    slots: Mapping[Slot, SlotState],
    tasks: Sequence[objects_pb2.Task],
    now: float,
    plan: Plan,
    replacement: Callable[[Slot], objects_pb2.Task],
) -> bool:
    """Roll the outdated slots forward; True while the rollout is not finished.

    `slots` are the slots the rollout covers, in the order they are replaced: numbers
    1..N of a replicated service, or the nodes of a global service that keep or get a
    task. `replacement` makes the new task of a slot."""
    status = service.update_status.state
    cfg = rollout_config(service)
    outdated: list[tuple[Slot, objects_pb2.Task]] = []
    in_progress = 0
    settling: list[objects_pb2.Task] = []  # new tasks still within `monitor`
    delay = duration_seconds(cfg.delay)
    monitor = duration_seconds(cfg.monitor)
    for slot, state in slots.items():
        alive = state.alive
        if not alive:
            if state.refill is not None:
                in_progress += 1  # being (re)placed: counts against the parallelism
            continue
        current = alive[-1]
        if not runs_current_spec(current, service):
            outdated.append((slot, current))
            continue
        since = _running_since(current)
        if len(alive) > 1 or since is None:
            in_progress += 1
        elif current.spec_version == service.spec_version and status in ROLLING:
            if now - since < delay:
                in_progress += 1
                plan.wake(since + delay)
            if now - since < monitor:
                settling.append(current)
                plan.wake(since + monitor)

    if status in PAUSED:
        return bool(outdated)

    # Failures of the new spec while the update runs.
    failed = [
        t
        for t in tasks
        if t.spec_version == service.spec_version
        and t.status.state in (states.FAILED, states.REJECTED)
    ]
    if status in ROLLING and failed and slots:
        ratio = len(failed) / len(slots)
        if ratio > cfg.max_failure_ratio:
            decision = _on_failure(service, cfg, failed[0])
            if decision is not None:
                plan.service_update = decision
                return True

    parallelism = cfg.parallelism
    budget = len(outdated) if parallelism == 0 else max(0, parallelism - in_progress)
    start_first = cfg.order == specs_pb2.UPDATE_ORDER_START_FIRST
    for slot, old in outdated[:budget]:
        task = replacement(slot)
        if start_first:
            task.replaces = old.id
        else:
            plan.shutdowns.append(ShutdownTask(old.id, states.SHUTDOWN))
        plan.creates.append(task)

    busy = bool(outdated) or in_progress > 0 or bool(settling)
    if status in ROLLING and not busy:
        done = (
            US.UPDATE_STATE_ROLLBACK_COMPLETED
            if status == US.UPDATE_STATE_ROLLBACK_STARTED
            else US.UPDATE_STATE_COMPLETED
        )
        message = (
            "rollback completed"
            if done == US.UPDATE_STATE_ROLLBACK_COMPLETED
            else ("update completed")
        )
        plan.service_update = UpdateDecision(done, message)
    return busy


def _on_failure(
    service: objects_pb2.Service, cfg: specs_pb2.UpdateConfig, task: objects_pb2.Task
) -> UpdateDecision | None:
    what = f"failure or early termination of task {task.id}"
    if service.update_status.state == US.UPDATE_STATE_ROLLBACK_STARTED:
        if cfg.failure_action == specs_pb2.UPDATE_FAILURE_ACTION_CONTINUE:
            return None
        return UpdateDecision(US.UPDATE_STATE_ROLLBACK_PAUSED, f"rollback paused due to {what}")
    if cfg.failure_action == specs_pb2.UPDATE_FAILURE_ACTION_CONTINUE:
        return None
    if cfg.failure_action == specs_pb2.UPDATE_FAILURE_ACTION_ROLLBACK and service.HasField(
        "previous_spec"
    ):
        return UpdateDecision(
            US.UPDATE_STATE_ROLLBACK_STARTED, f"update rolled back due to {what}", rollback=True
        )
    return UpdateDecision(US.UPDATE_STATE_PAUSED, f"update paused due to {what}")
