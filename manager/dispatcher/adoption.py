"""Adoption: a node that comes back keeps the tasks it still runs, when it can.

A task whose node went down is shut down with `shutdown_reason` "node down" and
replaced at once (orchestrator/plan.py). If the node comes back (its agent opens a
session saying which tasks' containers still run: `SessionRequest.running_task_ids`)
before the replacement runs, killing the old container and waiting for the new one
would cost a running task for nothing. So, before the session's assignments are
sent, each such task lives again (desired state back to what it was, the reason
cleared) and the slot's replacements that do not run yet are retired (desired
REMOVE): the agent keeps its container, the replacement's node (if it was placed at
all) drops it.

The slot invariant, one running task per slot: a task is adopted only if no other
wanted task of its slot has reached RUNNING. Should a replacement reach RUNNING
between this decision and its retirement (the retirement then declines to write),
the slot briefly has two running tasks; the orchestrator keeps the most advanced,
newest one and removes the other (`plan.settle_pairs`), as it does for any surplus.
Adoption runs on whichever manager the agent reaches (not only the leader): its
writes compare versions like every other, and re-check what they decided on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from common import states
from common.api import objects_pb2
from manager.domain.reasons import NODE_DOWN
from manager.store import Kind, Update

# Why a replacement was retired (its shutdown_reason).
RETIRED = "replaced task's node came back"


@dataclass
class Adoption:
    """The tasks to bring back (id -> desired state) and the replacements to retire."""

    revive: dict[str, int] = field(default_factory=dict)
    retire: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.revive)


def adoptable(task: objects_pb2.Task, node_id: str) -> bool:
    """Shut down only because `node_id` went down, and its container may still run."""
    return (
        task.node_id == node_id
        and task.desired_state == states.SHUTDOWN
        and task.shutdown_reason == NODE_DOWN
        and not states.is_terminal(task.status.state)
    )


def _same_slot(a: objects_pb2.Task, b: objects_pb2.Task) -> bool:
    if a.slot:
        return b.slot == a.slot
    return not b.slot and b.node_id == a.node_id  # a global service's slot is its node


def _runs(task: objects_pb2.Task) -> bool:
    return task.status.state >= states.RUNNING and not states.is_terminal(task.status.state)


def plan_adoption(
    node_id: str,
    running_ids: Iterable[str],
    task: Callable[[str], objects_pb2.Task | None],
    service_tasks: Callable[[str], Iterable[objects_pb2.Task]],
    service: Callable[[str], objects_pb2.Service | None],
) -> Adoption:
    """What to change so that the node's running tasks in `running_ids` live again
    (pure: the callables read the cache)."""
    adoption = Adoption()
    for task_id in running_ids:
        old = task(task_id)
        if old is None or not adoptable(old, node_id):
            continue
        svc = service(old.service_id)
        if svc is None:
            continue
        mates = [
            t
            for t in service_tasks(old.service_id)
            if t.id != old.id and _same_slot(old, t) and states.is_runnable(t.desired_state)
        ]
        if any(_runs(t) for t in mates):
            continue  # the replacement runs: the old task stays shut down
        is_job = svc.spec.HasField("global_job") or svc.spec.HasField("replicated_job")
        adoption.revive[old.id] = states.COMPLETE if is_job else states.RUNNING
        adoption.retire.extend(t.id for t in mates)
    return adoption


def operations(adoption: Adoption, node_id: str) -> list[Update]:
    """The writes: each re-checks what the decision read, in case it changed since."""
    ops = [Update(Kind.TASK, tid, _revive(node_id, d)) for tid, d in adoption.revive.items()]
    ops.extend(Update(Kind.TASK, tid, _retire) for tid in adoption.retire)
    return ops


def _revive(node_id: str, desired: int) -> Callable[[objects_pb2.Task], objects_pb2.Task | None]:
    def mutate(task: objects_pb2.Task) -> objects_pb2.Task | None:
        if not adoptable(task, node_id):
            return None
        task.desired_state = desired  # type: ignore[assignment]
        task.shutdown_reason = ""
        return task

    return mutate


def _retire(task: objects_pb2.Task) -> objects_pb2.Task | None:
    if _runs(task) or not states.is_runnable(task.desired_state):
        return None
    task.desired_state = states.REMOVE
    task.shutdown_reason = RETIRED
    return task
