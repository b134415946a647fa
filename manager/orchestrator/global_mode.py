"""Global services and global jobs: one task per eligible node.

A node is eligible when it is ready, active, and satisfies the service's constraints
and platforms. A new eligible node gets a task; a node that is drained, down, gone or no
longer matching loses its task; a paused node keeps what it has but gets nothing new.
For a global job each node's task runs to completion once per run of the job.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from common import states
from common.api import objects_pb2, types_pb2
from manager.orchestrator.plan import Plan, ShutdownTask, created_at, node_usable, settle_slot
from manager.orchestrator.tasks import new_task
from manager.scheduler.constraints import normalise_arch, parse_all


def matches_placement(service: objects_pb2.Service, node: objects_pb2.Node) -> bool:
    """The node satisfies the service's constraints and platforms."""
    placement = service.spec.task.placement
    if not all(c.matches(node) for c in parse_all(list(placement.constraints))):
        return False
    if not placement.platforms:
        return True
    os_ = node.description.platform.os.lower()
    arch = normalise_arch(node.description.platform.architecture)
    return any(
        (not p.os or p.os.lower() == os_)
        and (not p.architecture or normalise_arch(p.architecture) == arch)
        for p in placement.platforms
    )


def plan_global(
    service: objects_pb2.Service,
    tasks: Sequence[objects_pb2.Task],
    nodes: Mapping[str, objects_pb2.Node],
    now: float,
) -> Plan:
    plan = Plan()
    is_job = service.spec.HasField("global_job")
    iteration = service.job_status.job_iteration if is_job else None
    by_node: dict[str, list[objects_pb2.Task]] = defaultdict(list)
    for t in tasks:
        by_node[t.node_id].append(t)

    def keeps(node_id: str) -> bool:
        node = nodes.get(node_id)
        return node_usable(node) and node is not None and matches_placement(service, node)

    for node_id in sorted(set(by_node) | set(nodes)):
        node = nodes.get(node_id)
        history = sorted(by_node.get(node_id, []), key=created_at)
        state = settle_slot(service, history, keeps, now, plan, job_iteration=iteration)
        if len(state.alive) > 1:
            state.alive.sort(key=lambda t: (t.status.state, created_at(t)))
            plan.shutdowns.extend(ShutdownTask(t.id, states.REMOVE) for t in state.alive[:-1])
        if state.alive or state.completed or state.refill is None:
            continue
        if (
            node is None
            or node.status.state != types_pb2.NODE_STATE_READY
            or node.spec.availability != types_pb2.NODE_AVAILABILITY_ACTIVE
            or not matches_placement(service, node)
        ):
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
    return plan
