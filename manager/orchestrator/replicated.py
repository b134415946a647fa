"""Replicated services: keep slots 1..N filled.

`plan_service` (pure, so the rules can be tested without etcd or Docker):
- the shared slot rules of `plan.settle_slot` (restarts, lost nodes);
- an empty slot in 1..N gets a new task; on scale-down the highest slots go, unless
  the service spreads over label groups, in which case the tasks removed are those that
  keep the groups balanced (swarmkit#2320) and the survivors are renumbered into 1..N;
- tasks made from an older spec are rolled forward by the updater (updater.py);
- a start-first replacement (`replaces`) runs beside the task it replaces, which is shut
  down once the replacement runs;
- rebalancing (requested, or automatic when a node joins): one task at a time moves to
  the least loaded eligible node, start-first, so the running count never drops
  (moby#24103, swarmkit#310).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence

from common import states
from common.api import objects_pb2
from manager.domain.constraints import spread_value
from manager.domain.tasks import TaskMaker, new_task
from manager.orchestrator.plan import (
    Plan,
    Renumber,
    ShutdownTask,
    SlotState,
    created_at,
    plan_removal,
    settle_pairs,
    settle_slot,
    unusable_reason,
)
from manager.orchestrator.updater import plan_rollout

__all__ = ["Plan", "ShutdownTask", "plan_removal", "plan_service"]


def plan_service(
    service: objects_pb2.Service,
    tasks: Sequence[objects_pb2.Task],
    node_ok: Callable[[str], bool],
    now: float,
    nodes: Mapping[str, objects_pb2.Node] | None = None,
    rebalance_target: Mapping[str, int] | None = None,
    max_creates: int | None = None,
) -> Plan:
    """What to change so that `service`'s slots converge to its spec.

    `rebalance_target` (tasks per node, as the scheduler would place them now) is given
    while a rebalance is requested. At most `max_creates` empty slots get a task; the
    plan says when some were left (`more`)."""
    plan = Plan()
    nodes = nodes or {}
    replicas = service.spec.replicated.replicas
    by_slot: dict[int, list[objects_pb2.Task]] = defaultdict(list)
    for t in tasks:
        by_slot[t.slot].append(t)
    slots: dict[int, SlotState] = {}
    known = nodes
    why_not = (lambda n: unusable_reason(known.get(n))) if known else None
    for slot in sorted(set(by_slot) | set(range(1, replicas + 1))):
        history = sorted(by_slot.get(slot, []), key=created_at)
        state = settle_slot(service, history, node_ok, now, plan, why_not=why_not)
        state.alive = settle_pairs(state.alive, plan)
        slots[slot] = state

    _scale_down(service, slots, replicas, nodes, plan)

    make: TaskMaker | None = None  # made when the first task is
    for slot in range(1, replicas + 1):
        state = slots[slot]
        if state.alive or state.refill is None:
            continue
        if state.refill.at > now:
            plan.wake(state.refill.at)
            continue
        if max_creates is not None and len(plan.creates) >= max_creates:
            plan.more = True
            break
        if make is None:
            make = TaskMaker(service)
        plan.creates.append(
            make(
                slot,
                restart_attempt=state.refill.attempt,
                recent_restarts=state.refill.recent_restarts,
            )
        )

    # Tasks made from an older spec are rolled forward (updater.py); a slot's number may
    # differ from its task's after a renumbering in this plan, so slots are passed.
    rolling = plan_rollout(
        service,
        {s: slots[s] for s in range(1, replicas + 1)},
        tasks,
        now,
        plan,
        lambda slot: new_task(service, slot),
    )

    if service.rebalance_requested > service.rebalance_done and not rolling:
        if rebalance_target is None:
            plan.rebalance_done = True  # nothing to compare with
        else:
            _rebalance(service, tasks, slots, replicas, rebalance_target, plan)
    return plan


def _scale_down(
    service: objects_pb2.Service,
    slots: dict[int, SlotState],
    replicas: int,
    nodes: Mapping[str, objects_pb2.Node],
    plan: Plan,
) -> None:
    occupied = sorted(s for s, st in slots.items() if st.alive)
    excess = len(occupied) - replicas
    if excess <= 0 and not any(s > replicas for s in occupied):
        return
    descriptors = [
        p.spread.spread_descriptor
        for p in service.spec.task.placement.preferences
        if p.spread.spread_descriptor
    ]
    if descriptors and excess > 0 and nodes:
        victims = _balanced_victims(occupied, slots, excess, nodes, descriptors)
    else:
        victims = [s for s in occupied if s > replicas]
    for slot in victims:
        plan.shutdowns.extend(ShutdownTask(t.id, states.REMOVE) for t in slots[slot].alive)
        slots[slot] = SlotState([])
    survivors = [s for s in occupied if s not in victims]
    high = [s for s in survivors if s > replicas]
    free = [s for s in range(1, replicas + 1) if not slots[s].alive]
    for old_slot, new_slot in zip(high, free, strict=False):
        for t in slots[old_slot].alive:
            plan.renumbers.append(
                Renumber(t.id, new_slot, f"{service.spec.annotations.name}.{new_slot}")
            )
        slots[new_slot] = SlotState(slots[old_slot].alive)
        slots[old_slot] = SlotState([])


def _balanced_victims(
    occupied: list[int],
    slots: dict[int, SlotState],
    count: int,
    nodes: Mapping[str, objects_pb2.Node],
    descriptors: list[str],
) -> list[int]:
    """The `count` slots whose removal keeps the spread groups most even."""

    def path(slot: int) -> tuple[str, ...]:
        node = nodes.get(slots[slot].alive[-1].node_id)
        if node is None:
            return ("",) * len(descriptors)
        return tuple(spread_value(node, d) for d in descriptors)

    paths = {s: path(s) for s in occupied}
    levels = range(len(descriptors))
    counts: list[Counter[tuple[str, ...]]] = [Counter() for _ in levels]
    per_node: Counter[str] = Counter()
    for s in occupied:
        per_node[slots[s].alive[-1].node_id] += 1
        for lv in levels:
            counts[lv][paths[s][: lv + 1]] += 1
    victims: list[int] = []
    remaining = list(occupied)
    for _ in range(count):
        victim = max(
            remaining,
            key=lambda s: (
                tuple(counts[lv][paths[s][: lv + 1]] for lv in levels),
                per_node[slots[s].alive[-1].node_id],
                s,
            ),
        )
        remaining.remove(victim)
        victims.append(victim)
        per_node[slots[victim].alive[-1].node_id] -= 1
        for lv in levels:
            counts[lv][paths[victim][: lv + 1]] -= 1
    return victims


def _rebalance(
    service: objects_pb2.Service,
    tasks: Sequence[objects_pb2.Task],
    slots: dict[int, SlotState],
    replicas: int,
    target: Mapping[str, int],
    plan: Plan,
) -> None:
    """One start-first move off a node holding more than its share, or done.

    `target` is where the scheduler would put the service's tasks now (its own filters,
    ranking and spread preferences), counted per node. A task moves from the node most
    over its share; the scheduler places the replacement, which lands where it is
    short. If the last move's replacement landed on a node already over its share (the
    filters allow nothing better), or a move failed, rebalancing stops.
    """
    if any(len(slots[s].alive) > 1 for s in range(1, replicas + 1)):
        return  # a move is in flight
    moves = [t for t in tasks if t.replaces and t.rebalance_round == service.rebalance_requested]
    if any(
        states.is_terminal(t.status.state)
        and t.status.state != states.COMPLETE
        and states.is_runnable(t.desired_state)
        for t in moves
    ):
        plan.rebalance_done = True  # a move failed
        return
    load: Counter[str] = Counter()
    on_node: dict[str, list[objects_pb2.Task]] = defaultdict(list)
    for s in range(1, replicas + 1):
        for t in slots[s].alive:
            if t.node_id:
                load[t.node_id] += 1
                on_node[t.node_id].append(t)
    over = {n: load[n] - target.get(n, 0) for n in load if load[n] > target.get(n, 0)}
    under = [n for n in target if load[n] < target[n]]
    latest = max(moves, key=lambda t: t.meta.created_at.ToNanoseconds(), default=None)
    if latest is not None and latest.node_id in over and latest.status.state >= states.RUNNING:
        # The last replacement went to a node over its share: nothing better is allowed.
        plan.rebalance_done = True
        return
    if not over or not under:
        plan.rebalance_done = True
        return
    busiest = max(over, key=lambda n: (over[n], n))
    mover = max(on_node[busiest], key=lambda t: t.slot)
    replacement = new_task(service, mover.slot)
    replacement.replaces = mover.id
    replacement.rebalance_round = service.rebalance_requested
    plan.creates.append(replacement)
