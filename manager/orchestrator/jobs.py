"""Replicated jobs: run a task to completion in each of `total_completions` slots, at most
`max_concurrent` at a time. A task that exits 0 is done (COMPLETE, never restarted); one
that fails is restarted per the restart policy. Every spec change starts a new run of
the job (`job_status.job_iteration`), whose tasks replace the previous run's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

from common import states
from common.api import objects_pb2
from manager.domain.tasks import new_task
from manager.orchestrator.plan import Plan, ShutdownTask, SlotState, created_at, settle_slot


def plan_replicated_job(
    service: objects_pb2.Service,
    tasks: Sequence[objects_pb2.Task],
    node_ok: Callable[[str], bool],
    now: float,
) -> Plan:
    plan = Plan()
    job = service.spec.replicated_job
    total = job.total_completions
    concurrency = job.max_concurrent or total
    iteration = service.job_status.job_iteration
    by_slot: dict[int, list[objects_pb2.Task]] = defaultdict(list)
    for t in tasks:
        by_slot[t.slot].append(t)
    slots: dict[int, SlotState] = {}
    for slot in sorted(set(by_slot) | set(range(1, total + 1))):
        history = sorted(by_slot.get(slot, []), key=created_at)
        state = settle_slot(service, history, node_ok, now, plan, job_iteration=iteration)
        if slot > total:
            plan.shutdowns.extend(ShutdownTask(t.id, states.REMOVE) for t in state.alive)
            continue
        if len(state.alive) > 1:
            state.alive.sort(key=lambda t: (t.status.state, created_at(t)))
            plan.shutdowns.extend(ShutdownTask(t.id, states.REMOVE) for t in state.alive[:-1])
            state.alive = state.alive[-1:]
        slots[slot] = state
    running = sum(1 for s in slots.values() if s.alive)
    for slot in range(1, total + 1):
        state = slots[slot]
        if state.alive or state.completed or state.refill is None:
            continue
        if running >= concurrency:
            break
        if state.refill.at > now:
            plan.wake(state.refill.at)
            continue
        task = new_task(
            service,
            slot,
            desired=states.COMPLETE,
            restart_attempt=state.refill.attempt,
            recent_restarts=state.refill.recent_restarts,
        )
        task.job_iteration = iteration
        plan.creates.append(task)
        running += 1
    return plan
