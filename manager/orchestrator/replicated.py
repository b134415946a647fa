"""The replicated orchestrator: keeps slots 1..N of each replicated service filled.

For every dirty service it plans, from the cache alone:
- a task that ended by itself is shut down and, if its restart policy says so, replaced
  in the same slot (after the restart delay: the replacement is created READY, so it is
  scheduled and prepared at once, and `restart.RestartDelays` starts it when due);
- a task on a node that is down, drained or gone is shut down and replaced at once (the
  task did not fail, so no delay and no restart attempt is counted);
- an empty slot in 1..N gets a new task; slots above N (scale down) are removed,
  highest first by construction;
- tasks made from an older spec are replaced, `update.parallelism` slots at a time;
- the tasks of a deleted service are all removed.
`plan_service` is a pure function so the rules can be tested without etcd or Docker.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from common import states
from common.api import objects_pb2, types_pb2
from common.timeutil import timestamp_seconds
from manager.orchestrator.tasks import (
    new_task,
    restart_delay,
    restart_verdict,
    runs_current_spec,
)
from manager.reconciler import Reconciler
from manager.store import Cache, Create, Event, Kind, Store, Update


@dataclass
class ShutdownTask:
    """Raise a task's desired state to `desired` (SHUTDOWN or REMOVE)."""

    task_id: str
    desired: int
    restart_declined: bool = False


@dataclass
class Plan:
    creates: list[objects_pb2.Task] = field(default_factory=list)
    shutdowns: list[ShutdownTask] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.creates or self.shutdowns)


def node_usable(node: objects_pb2.Node | None) -> bool:
    """Tasks may stay on this node: it exists, is not down and is not drained."""
    return (
        node is not None
        and node.status.state != types_pb2.NODE_STATE_DOWN
        and node.spec.availability != types_pb2.NODE_AVAILABILITY_DRAIN
    )


def _created(task: objects_pb2.Task) -> float:
    return timestamp_seconds(task.meta.created_at)


def plan_removal(tasks: Iterable[objects_pb2.Task]) -> Plan:
    """Every task of a deleted service goes."""
    plan = Plan()
    for t in tasks:
        if t.desired_state < states.REMOVE:
            plan.shutdowns.append(ShutdownTask(t.id, states.REMOVE))
    return plan


def plan_service(
    service: objects_pb2.Service,
    tasks: Sequence[objects_pb2.Task],
    node_ok: Callable[[str], bool],
    now: float,
) -> Plan:
    """What to change so that `service`'s slots converge to its spec."""
    plan = Plan()
    replicas = service.spec.replicated.replicas
    by_slot: dict[int, list[objects_pb2.Task]] = defaultdict(list)
    for t in tasks:
        by_slot[t.slot].append(t)

    empty_slots: list[tuple[int, int, int]] = []  # (slot, desired, restart attempt)
    outdated: list[objects_pb2.Task] = []
    updating = 0
    for slot in sorted(set(by_slot) | set(range(1, replicas + 1))):
        history = sorted(by_slot.get(slot, []), key=_created)
        alive: list[objects_pb2.Task] = []
        replacement: tuple[int, int] | None = None
        declined = False
        for t in history:
            if t.desired_state > states.RUNNING:
                continue
            if states.is_terminal(t.status.state):
                verdict = restart_verdict(t, history, now)
                plan.shutdowns.append(ShutdownTask(t.id, states.SHUTDOWN, not verdict.restart))
                if verdict.restart:
                    delayed = restart_delay(t.spec) > 0
                    replacement = (
                        states.READY if delayed else states.RUNNING,
                        t.restart_attempt + 1,
                    )
                else:
                    declined = True
            elif t.node_id and not node_ok(t.node_id):
                plan.shutdowns.append(ShutdownTask(t.id, states.SHUTDOWN))
                replacement = (states.RUNNING, t.restart_attempt)
            else:
                alive.append(t)
        if slot > replicas:
            plan.shutdowns.extend(ShutdownTask(t.id, states.REMOVE) for t in alive)
            continue
        if len(alive) > 1:
            # Keep the most advanced task; the others are surplus (e.g. after a failover).
            alive.sort(key=lambda t: (t.status.state, _created(t)))
            plan.shutdowns.extend(ShutdownTask(t.id, states.REMOVE) for t in alive[:-1])
            alive = alive[-1:]
        if alive:
            current = alive[0]
            if not runs_current_spec(current, service):
                outdated.append(current)
            elif (
                current.status.state < states.RUNNING
                and current.spec_version == service.spec_version
                and any(not runs_current_spec(t, service) for t in history if t is not current)
            ):
                updating += 1
            continue
        if replacement is not None:
            empty_slots.append((slot, *replacement))
        elif declined or _declined_for_current_spec(history, service):
            continue
        else:
            empty_slots.append((slot, states.RUNNING, 0))

    for slot, desired, attempt in empty_slots:
        plan.creates.append(new_task(service, slot, desired=desired, restart_attempt=attempt))

    # Rolling replacement of tasks made from an older spec, `parallelism` slots at a time.
    parallelism = service.spec.update.parallelism
    budget = len(outdated) if parallelism == 0 else max(0, parallelism - updating)
    for t in sorted(outdated, key=lambda t: t.slot)[:budget]:
        plan.shutdowns.append(ShutdownTask(t.id, states.SHUTDOWN))
        plan.creates.append(new_task(service, t.slot))
    return plan


def _declined_for_current_spec(
    history: Sequence[objects_pb2.Task], service: objects_pb2.Service
) -> bool:
    """The slot's last task ended and was not restarted, and the spec has not changed since."""
    if not history:
        return False
    last = history[-1]
    return last.restart_declined and runs_current_spec(last, service)


class ReplicatedOrchestrator(Reconciler):
    """Runs `plan_service` for every dirty replicated service and commits the plans."""

    name = "orchestrator.replicated"
    debounce = 0.02
    max_delay = 0.5

    def __init__(self, cache: Cache, store: Store, clock: Callable[[], float]) -> None:
        super().__init__()
        self.cache = cache
        self.store = store
        self.clock = clock
        cache.add_listener(self._on_event)
        cache.add_resync_listener(self.mark_everything)

    def _on_event(self, ev: Event) -> None:
        if ev.kind is Kind.SERVICE:
            self.mark(ev.obj.id)
        elif ev.kind is Kind.TASK:
            old, new = ev.old, ev.new
            if (
                old is None
                or new is None
                or old.desired_state != new.desired_state
                or (
                    old.status.state != new.status.state
                    and (states.is_terminal(new.status.state) or new.status.state == states.RUNNING)
                )
            ):
                self.mark(ev.obj.service_id)
        elif ev.kind is Kind.NODE:
            old, new = ev.old, ev.new
            if node_usable(old) and not node_usable(new):
                node_id = ev.obj.id
                self.mark_many(
                    {t.service_id for t in self.cache.tasks_by_node.get(node_id, {}).values()}
                )

    def all_keys(self) -> Iterable[str]:
        return set(self.cache.services) | set(self.cache.tasks_by_service)

    async def reconcile(self, keys: set[str]) -> None:
        now = self.clock()
        nodes = self.cache.nodes
        creates: list[objects_pb2.Task] = []
        shutdowns: list[ShutdownTask] = []
        for service_id in keys:
            tasks = list(self.cache.tasks_by_service.get(service_id, {}).values())
            service = self.cache.services.get(service_id)
            if service is None:
                plan = plan_removal(tasks)
            elif service.spec.WhichOneof("mode") != "replicated":
                continue
            else:
                plan = plan_service(service, tasks, lambda n: node_usable(nodes.get(n)), now)
            creates.extend(plan.creates)
            shutdowns.extend(plan.shutdowns)
        if not creates and not shutdowns:
            return
        # Shutdowns first: a replacement never runs beside the task it replaces for long.
        ops: list[Create | Update] = [
            Update(Kind.TASK, s.task_id, _raise_desired(s.desired, s.restart_declined))
            for s in shutdowns
        ]
        ops.extend(Create(t) for t in creates)
        result = await self.store.commit(ops)
        await self.cache.wait_for(result.revision)
        self.log.info(
            "reconciled",
            services=len(keys),
            created=len(creates),
            shut_down=len(shutdowns),
            failed=len(result.failed),
        )
        for op, err in result.failed:
            self.log.warning("write failed", error=str(err), op=type(op).__name__)


def _raise_desired(
    desired: int, declined: bool
) -> Callable[[objects_pb2.Task], objects_pb2.Task | None]:
    def mutate(task: objects_pb2.Task) -> objects_pb2.Task | None:
        if task.desired_state >= desired:
            return None
        task.desired_state = desired  # type: ignore[assignment]
        if declined:
            task.restart_declined = True
        return task

    return mutate
