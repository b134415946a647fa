"""The replicated orchestrator: keeps slots 1..N of each replicated service filled.

For every dirty service it plans, from the cache alone:
- a task that ended by itself is shut down and, if its restart policy says so, replaced
  in the same slot once the restart delay has passed (the time is stored on the ended
  task as `restart_at`, so a restarted manager keeps it);
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
    """Raise a task's desired state to `desired` (SHUTDOWN or REMOVE), noting what its
    restart policy decided: a replacement due at `restart_at`, or none (`declined`)."""

    task_id: str
    desired: int
    restart_at: float | None = None
    declined: bool = False


@dataclass
class Plan:
    creates: list[objects_pb2.Task] = field(default_factory=list)
    shutdowns: list[ShutdownTask] = field(default_factory=list)
    # When the plan must be made again (a restart delay ends).
    wake_at: float | None = None

    def __bool__(self) -> bool:
        return bool(self.creates or self.shutdowns)

    def wake(self, when: float) -> None:
        self.wake_at = when if self.wake_at is None else min(self.wake_at, when)


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


@dataclass
class _SlotEnd:
    """How the newest task of an empty slot ended, as far as restarts are concerned."""

    restart_at: float | None
    declined: bool
    attempt: int
    current_spec: bool


def _slot_end(
    last: objects_pb2.Task, decided: dict[str, ShutdownTask], service: objects_pb2.Service
) -> _SlotEnd:
    now_decided = decided.get(last.id)
    if now_decided is not None:
        restart_at, declined = now_decided.restart_at, now_decided.declined
    else:
        restart_at = timestamp_seconds(last.restart_at) if last.HasField("restart_at") else None
        declined = last.restart_declined
    return _SlotEnd(restart_at, declined, last.restart_attempt, runs_current_spec(last, service))


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

    decided: dict[str, ShutdownTask] = {}
    outdated: list[objects_pb2.Task] = []
    updating = 0
    for slot in sorted(set(by_slot) | set(range(1, replicas + 1))):
        history = sorted(by_slot.get(slot, []), key=_created)
        alive: list[objects_pb2.Task] = []
        for t in history:
            if t.desired_state > states.RUNNING:
                continue
            if states.is_terminal(t.status.state):
                # Ended by itself: the restart policy decides about a replacement.
                verdict = restart_verdict(t, history, now)
                if verdict.restart:
                    shutdown = ShutdownTask(t.id, states.SHUTDOWN, now + restart_delay(t.spec))
                else:
                    shutdown = ShutdownTask(t.id, states.SHUTDOWN, declined=True)
            elif t.node_id and not node_ok(t.node_id):
                # Its node is down, drained or gone: not the task's fault, replace at once.
                shutdown = ShutdownTask(t.id, states.SHUTDOWN)
            else:
                alive.append(t)
                continue
            plan.shutdowns.append(shutdown)
            decided[t.id] = shutdown
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
            elif current.status.state < states.RUNNING and any(
                not runs_current_spec(t, service) for t in history if t is not current
            ):
                updating += 1  # a slot being updated has not reached running yet
            continue
        if not history:
            plan.creates.append(new_task(service, slot))
            continue
        end = _slot_end(history[-1], decided, service)
        if end.declined and end.current_spec:
            continue  # the restart policy said no, and the spec has not changed since
        if end.restart_at is not None and end.current_spec:
            if end.restart_at > now:
                plan.wake(end.restart_at)
                continue
            plan.creates.append(new_task(service, slot, restart_attempt=end.attempt + 1))
            continue
        plan.creates.append(new_task(service, slot, restart_attempt=end.attempt))

    # Rolling replacement of tasks made from an older spec, `parallelism` slots at a time.
    parallelism = service.spec.update.parallelism
    budget = len(outdated) if parallelism == 0 else max(0, parallelism - updating)
    for t in sorted(outdated, key=lambda t: t.slot)[:budget]:
        plan.shutdowns.append(ShutdownTask(t.id, states.SHUTDOWN))
        plan.creates.append(new_task(service, t.slot))
    return plan


class ReplicatedOrchestrator(Reconciler):
    """Runs `plan_service` for every dirty replicated service and commits the plans."""

    name = "orchestrator.replicated"
    debounce = 0.02
    max_delay = 0.5

    def __init__(self, cache: Cache, store: Store, clock: Callable[[], float]) -> None:
        super().__init__(clock)
        self.cache = cache
        self.store = store
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
            if plan.wake_at is not None:
                self.mark_at(plan.wake_at, service_id)
        if not creates and not shutdowns:
            return
        # Shutdowns first: a replacement never runs beside the task it replaces for long.
        ops: list[Create | Update] = [
            Update(Kind.TASK, s.task_id, _shut_down(s)) for s in shutdowns
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


def _shut_down(decision: ShutdownTask) -> Callable[[objects_pb2.Task], objects_pb2.Task | None]:
    def mutate(task: objects_pb2.Task) -> objects_pb2.Task | None:
        if task.desired_state >= decision.desired:
            return None
        task.desired_state = decision.desired  # type: ignore[assignment]
        if decision.declined:
            task.restart_declined = True
        if decision.restart_at is not None:
            task.restart_at.FromNanoseconds(round(decision.restart_at * 1e9))
        return task

    return mutate
