"""Global services and global jobs: one task per eligible node.

A node is eligible when it is ready, active, and satisfies the service's constraints
and platforms. A new eligible node gets a task; a node that is drained, down, gone or no
longer matching loses its task; a paused node keeps what it has but gets nothing new.
For a global job each node's task runs to completion once per run of the job. A global
service whose task template changes rolls out node by node per its update config
(updater.py), like a replicated one; a start-first replacement runs beside the task it
replaces until it runs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from common import states
from common.api import objects_pb2, types_pb2
from common.modes import GLOBAL_JOB
from common.nodes import keeps_tasks, takes_new_tasks
from manager.domain.placement import matches_placement
from manager.domain.reasons import CONSTRAINT_NOT_MET
from manager.domain.tasks import new_task
from manager.orchestrator.plan import (
    Plan,
    SlotState,
    created_at,
    settle_pairs,
    settle_slot,
    unusable_reason,
)
from manager.orchestrator.updater import plan_rollout


def plan_global(
    service: objects_pb2.Service,
    tasks: Sequence[objects_pb2.Task],
    nodes: Mapping[str, objects_pb2.Node],
    now: float,
) -> Plan:
    plan = Plan()
    is_job = service.spec.WhichOneof("mode") == GLOBAL_JOB
    placement = service.spec.task.placement
    iteration = service.job_status.job_iteration if is_job else None
    by_node: dict[str, list[objects_pb2.Task]] = defaultdict(list)
    for t in tasks:
        by_node[t.node_id].append(t)

    def keeps(node_id: str) -> bool:
        node = nodes.get(node_id)
        return keeps_tasks(node) and node is not None and matches_placement(placement, node)

    def why_not(node_id: str) -> str:
        return unusable_reason(nodes.get(node_id)) or CONSTRAINT_NOT_MET

    def eligible(node: objects_pb2.Node | None) -> bool:
        return takes_new_tasks(node) and node is not None and matches_placement(placement, node)

    # The nodes a rollout replaces tasks on: active ones (a paused node keeps its task
    # as it is, as in SwarmKit) that keep a task or are to get one.
    rollout: dict[str, SlotState] = {}
    for node_id in sorted(set(by_node) | set(nodes)):
        node = nodes.get(node_id)
        history = sorted(by_node.get(node_id, []), key=created_at)
        state = settle_slot(
            service, history, keeps, now, plan, job_iteration=iteration, why_not=why_not
        )
        state.alive = settle_pairs(state.alive, plan)
        if (
            not is_job
            and node is not None
            and node.spec.availability == types_pb2.NODE_AVAILABILITY_ACTIVE
            and (state.alive or eligible(node))
        ):
            rollout[node_id] = state
        if state.alive or state.completed or state.refill is None:
            continue
        if not eligible(node):
            continue
        if state.refill.at > now:
            plan.wake(state.refill.at)
            continue
        task = new_task(
            service,
            0,
            node_id=node_id,
            desired=states.COMPLETE if is_job else states.RUNNING,
            restart_attempt=state.refill.attempt,
            recent_restarts=state.refill.recent_restarts,
        )
        if iteration is not None:
            task.job_iteration = iteration
        plan.creates.append(task)
    if not is_job:
        # Tasks made from an older spec are rolled forward node by node (updater.py).
        plan_rollout(service, rollout, tasks, now, plan, lambda n: new_task(service, 0, node_id=n))
    return plan
