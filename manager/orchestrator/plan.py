"""What every orchestrator plans with: the plan itself, and the rules for one slot.

A slot is where one task of a service lives over time: a number for replicated services
and jobs, a node for global ones. `settle_slot` applies the rules every mode shares to
the tasks a slot has had:
- a task that ended by itself is shut down and, if its restart policy says so, a
  replacement is due at `restart_at` (now plus the restart delay, stored on the ended
  task so a restarted manager keeps it); otherwise the slot stays empty until the spec
  changes (`restart_declined`);
- a job's task that completed is done and stays as it is;
- a task whose node is drained or gone is removed and replaced at once (the task did
  not fail, so no delay and no attempt counted); its container is removed when its
  node comes back;
- a task whose node is down is shut down (not removed) and replaced at once: it stays
  in the slot's history with its `shutdown_reason` ("node down"), and if its node
  comes back with it still running before the replacement runs, it lives again and
  the replacement is retired (`manager.dispatcher.adoption`);
- a global service's task whose node no longer meets the constraints is shut down
  the same way ("constraint no longer met").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from common import states
from common.api import objects_pb2, types_pb2
from common.timeutil import timestamp_seconds
from manager.domain.reasons import CONSTRAINT_NOT_MET, NODE_DOWN
from manager.domain.specs import restart_delay
from manager.domain.tasks import runs_current_spec
from manager.orchestrator.restart import restart_verdict, restart_window, restarts_within


@dataclass
class ShutdownTask:
    """Raise a task's desired state to `desired` (SHUTDOWN or REMOVE), noting what its
    restart policy decided: a replacement due at `restart_at`, or none (`declined`),
    and why the manager shut it down when it did not end by itself (`reason`)."""

    task_id: str
    desired: int
    restart_at: float | None = None
    declined: bool = False
    reason: str = ""


@dataclass
class Renumber:
    """Move a task to another slot (topology-aware scale-down keeps slots 1..N)."""

    task_id: str
    slot: int
    name: str


@dataclass
class Plan:
    creates: list[objects_pb2.Task] = field(default_factory=list)
    shutdowns: list[ShutdownTask] = field(default_factory=list)
    renumbers: list[Renumber] = field(default_factory=list)
    # When the plan must be made again (a restart delay ends).
    wake_at: float | None = None
    # Set when a requested rebalance is finished (or given up).
    rebalance_done: bool = False
    # A change of the service's update status (updater.UpdateDecision).
    service_update: Any = None
    # Empty slots were left without a task (the planner was told to make fewer).
    more: bool = False

    def __bool__(self) -> bool:
        return bool(
            self.creates
            or self.shutdowns
            or self.renumbers
            or self.rebalance_done
            or self.service_update
        )

    def wake(self, when: float) -> None:
        self.wake_at = when if self.wake_at is None else min(self.wake_at, when)


def unusable_reason(node: objects_pb2.Node | None) -> str:
    """Why tasks may not stay on this node ("" if they may): see `keeps_tasks`."""
    if node is None:
        return "node removed"
    if node.status.state == types_pb2.NODE_STATE_DOWN:
        return NODE_DOWN
    if node.spec.availability == types_pb2.NODE_AVAILABILITY_DRAIN:
        return "node drained"
    return ""


def created_at(task: objects_pb2.Task) -> float:
    return timestamp_seconds(task.meta.created_at)


def plan_removal(tasks: Iterable[objects_pb2.Task]) -> Plan:
    """Every task of a deleted service goes."""
    plan = Plan()
    for t in tasks:
        if t.desired_state < states.REMOVE:
            plan.shutdowns.append(ShutdownTask(t.id, states.REMOVE))
    return plan


def settle_pairs(alive: list[objects_pb2.Task], plan: Plan) -> list[objects_pb2.Task]:
    """At most one task per slot, but for a start-first replacement beside its old task."""
    if len(alive) <= 1:
        return alive
    by_id = {t.id: t for t in alive}
    for new in alive:
        old = by_id.get(new.replaces) if new.replaces else None
        if old is None:
            continue
        if new.status.state >= states.RUNNING:
            plan.shutdowns.append(ShutdownTask(old.id, states.SHUTDOWN))
            alive = [t for t in alive if t is not old]
        else:
            return [old, new]  # in flight: both stay until the new one runs
        break
    if len(alive) > 1:
        # Keep the most advanced task; the others are surplus (e.g. after a failover).
        alive.sort(key=lambda t: (t.status.state, created_at(t)))
        plan.shutdowns.extend(ShutdownTask(t.id, states.REMOVE) for t in alive[:-1])
        alive = alive[-1:]
    return alive


@dataclass
class Refill:
    """A new task is due in an empty slot at `at`, as restart number `attempt`, carrying
    the times of the slot's recent restarts."""

    at: float
    attempt: int
    recent_restarts: list[float] = field(default_factory=list)


@dataclass
class SlotState:
    """What is left in a slot after the shared rules ran."""

    alive: list[objects_pb2.Task]
    # A job's task of the current run completed here.
    completed: bool = False
    # When the slot is empty: whether and when it gets a new task.
    refill: Refill | None = None


def _off_its_node(task: objects_pb2.Task, reason: str) -> ShutdownTask:
    """What becomes of a task whose node may not keep it, for `reason`."""
    if reason in (NODE_DOWN, CONSTRAINT_NOT_MET):
        # Shut down, and kept in the slot's history with the reason. A node that comes
        # back with the task still running before its replacement runs gets it back
        # (the dispatcher's adoption); otherwise its agent stops it and removes its
        # container.
        return ShutdownTask(task.id, states.SHUTDOWN, reason=reason)
    # Removed: its container is of no use, and a node that comes back must not keep it
    # (the reaper deletes the task, the agent then removes the container).
    return ShutdownTask(task.id, states.REMOVE, reason=reason)


def settle_slot(
    service: objects_pb2.Service,
    history: Sequence[objects_pb2.Task],
    node_ok: Callable[[str], bool],
    now: float,
    plan: Plan,
    *,
    job_iteration: int | None = None,
    why_not: Callable[[str], str] | None = None,
) -> SlotState:
    """Apply the shared rules to one slot's tasks (oldest first); record changes in `plan`.

    For jobs, `job_iteration` is the current run: tasks of earlier runs that still run
    are shut down and do not count. `why_not(node_id)` says why a node `node_ok` turns
    down may not keep its tasks (`unusable_reason`, CONSTRAINT_NOT_MET); without it
    such tasks are removed.
    """
    decided: dict[str, ShutdownTask] = {}
    alive: list[objects_pb2.Task] = []
    completed = False
    current_run = []
    for t in history:
        if job_iteration is not None and t.job_iteration != job_iteration:
            if states.is_runnable(t.desired_state) and not states.is_terminal(t.status.state):
                plan.shutdowns.append(ShutdownTask(t.id, states.SHUTDOWN))
            continue
        current_run.append(t)
        if not states.is_runnable(t.desired_state):
            continue
        if states.is_terminal(t.status.state):
            if job_iteration is not None and t.status.state == states.COMPLETE:
                completed = True
                continue
            # Ended by itself: the restart policy decides about a replacement.
            verdict = restart_verdict(t, history, now)
            if verdict.restart:
                shutdown = ShutdownTask(t.id, states.SHUTDOWN, now + restart_delay(t.spec))
            else:
                shutdown = ShutdownTask(t.id, states.SHUTDOWN, declined=True)
        elif t.node_id and not node_ok(t.node_id):
            shutdown = _off_its_node(t, why_not(t.node_id) if why_not is not None else "")
        else:
            alive.append(t)
            continue
        plan.shutdowns.append(shutdown)
        decided[t.id] = shutdown
    if alive or completed:
        return SlotState(alive, completed)
    if not current_run:
        return SlotState([], refill=Refill(now, 0))
    last = current_run[-1]
    now_decided = decided.get(last.id)
    if now_decided is not None:
        restart_at, declined = now_decided.restart_at, now_decided.declined
    else:
        restart_at = timestamp_seconds(last.restart_at) if last.HasField("restart_at") else None
        declined = last.restart_declined
    current_spec = runs_current_spec(last, service)
    if not current_spec:
        # A new spec starts the slot's restart count afresh.
        return SlotState([], refill=Refill(now, 0))
    if declined:
        return SlotState([])  # the restart policy said no, and the spec has not changed
    window = restart_window(last)
    recent = restarts_within(last, now, window) if window > 0 else []
    if restart_at is not None:
        return SlotState(
            [], refill=Refill(restart_at, last.restart_attempt + 1, [*recent, restart_at])
        )
    # The slot's task was lost with its node: not a restart, nothing counted.
    return SlotState([], refill=Refill(now, last.restart_attempt, recent))
