"""The orchestrator: for every dirty service, plan with the planner of its mode
(replicated, global, replicated job, global job) and commit the plans in batches.

Services are marked dirty by changes to themselves, to their tasks (created, deleted,
ended, running, desired state changed) and to nodes (a node lost marks the services
with tasks on it; any node change marks the global services). When automatic
rebalancing is on, a node that joins or becomes active again asks every replicated
service to rebalance.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial

from common import states
from common.api import objects_pb2
from common.modes import GLOBAL_MODES, REPLICATED_JOB, is_global, mode_of
from common.nodes import keeps_tasks, takes_new_tasks
from common.rollout import ROLLING, US
from common.timeutil import stamp_now
from manager.domain.placer import Placer
from manager.orchestrator.global_mode import plan_global
from manager.orchestrator.jobs import plan_replicated_job
from manager.orchestrator.plan import Plan, Renumber, ShutdownTask, plan_removal
from manager.orchestrator.replicated import plan_service
from manager.orchestrator.updater import UpdateDecision
from manager.reconciler import Reconciler
from manager.store import BatchResult, Create, Event, Kind, Update
from manager.store.views import CacheView, Committer

# Tasks created in one pass at most.
MAX_CREATES_PER_PASS = 4096
# Services with this many tasks and slots or more are planned in a worker thread
# (`Orchestrator.plan_in_thread`): about 25 ms of planning on the loop, at most.
PLAN_IN_THREAD_FROM = 2_000
# Creates per store commit when a pass makes many (`commit_sliced`), and how many
# such commits run at once (4 x 1,024 creates: the store's 32 transactions in flight).
COMMIT_SLICE = 1024
SLICES_AT_ONCE = 4
# A service is planned (each plan reading all its slots and tasks) about this many
# times while it is created: a pass may create an eighth of its replicas, not just
# MAX_CREATES_PER_PASS, so the planning of a create grows with its size, not its square.
PLANS_PER_CREATE = 8
# Tasks placed by the scheduler in one go before the loop gets a turn (`place_new`
# takes ~4 us a task).
PLACE_SLICE = 4096


def plan_for(
    service: objects_pb2.Service | None,
    tasks: list[objects_pb2.Task],
    nodes: Mapping[str, objects_pb2.Node],
    now: float,
    target: Mapping[str, int] | None,
    max_creates: int | None,
) -> Plan:
    """The plan of one service, by its mode's planner (pure: what it reads is given;
    `target` is the scheduler's placement while a rebalance is requested)."""
    if service is None:
        return plan_removal(tasks)
    mode = mode_of(service.spec)
    if mode in GLOBAL_MODES:
        return plan_global(service, tasks, nodes, now)
    if mode == REPLICATED_JOB:
        return plan_replicated_job(service, tasks, lambda n: keeps_tasks(nodes.get(n)), now)
    return plan_service(
        service, tasks, lambda n: keeps_tasks(nodes.get(n)), now, nodes, target, max_creates
    )


class Orchestrator(Reconciler):
    """Runs the planners for dirty services and commits what they decide.

    With a `placer` (the scheduler), new tasks are placed before they are written, so
    each is stored once, already assigned."""

    name = "orchestrator"
    debounce = 0.02
    max_delay = 0.5

    def __init__(
        self,
        cache: CacheView,
        store: Committer,
        clock: Callable[[], float],
        placer: Placer | None = None,
    ) -> None:
        super().__init__(clock)
        self.cache = cache
        self.store = store
        self.placer = placer
        self._rebalance_all = False
        cache.add_listener(self._on_event)
        cache.add_resync_listener(self.mark_everything)

    def has_work(self) -> bool:
        return self._rebalance_all or super().has_work()

    def _global_services(self) -> set[str]:
        return {s.id for s in self.cache.services.values() if is_global(s.spec)}

    def _on_event(self, ev: Event) -> None:
        if ev.kind is Kind.SERVICE:
            self.mark(ev.obj.id)
        elif ev.kind is Kind.TASK:
            old, new = ev.old, ev.new
            if old is None:
                return  # tasks are created by this orchestrator; nothing to re-plan
            if (
                new is None
                or old.desired_state != new.desired_state
                or (
                    old.status.state != new.status.state
                    and (
                        states.is_terminal(new.status.state)
                        or (new.status.state == states.RUNNING and self._waits_for_running(new))
                    )
                )
            ):
                self.mark(ev.obj.service_id)
        elif ev.kind is Kind.NODE:
            old, new = ev.old, ev.new
            if keeps_tasks(old) and not keeps_tasks(new):
                tasks = self.cache.tasks_by_node.get(ev.obj.id, {}).values()
                self.mark_many({t.service_id for t in tasks})
            self.mark_many(self._global_services())
            cluster = self.cache.cluster()
            if (
                cluster is not None
                and cluster.spec.orchestration.auto_rebalance
                and takes_new_tasks(new)
                and not takes_new_tasks(old)
            ):
                self._rebalance_all = True
                self._wake.set()

    def _waits_for_running(self, task: objects_pb2.Task) -> bool:
        """Whether the task reaching RUNNING lets the plan of its service move on (a
        rollout, a start-first replacement or a rebalance); otherwise, with thousands of
        tasks starting, re-planning their services for each would be wasted work."""
        if task.replaces:
            return True
        service = self.cache.services.get(task.service_id)
        return service is not None and (
            service.update_status.state in ROLLING
            or service.rebalance_requested > service.rebalance_done
        )

    def all_keys(self) -> Iterable[str]:
        return set(self.cache.services) | set(self.cache.tasks_by_service)

    def plan(self, service_id: str, now: float, max_creates: int | None = None) -> Plan:
        """The plan of one service, made here and now (see `plan_in_thread`)."""
        service = self.cache.services.get(service_id)
        tasks = list(self.cache.tasks_by_service.get(service_id, {}).values())
        return plan_for(service, tasks, self.cache.nodes, now, self._target(service), max_creates)

    def _target(self, service: objects_pb2.Service | None) -> Mapping[str, int] | None:
        if (
            service is not None
            and service.spec.HasField("replicated")
            and service.rebalance_requested > service.rebalance_done
            and self.placer is not None
        ):
            # Where the scheduler would put the service's tasks now, per node.
            return self.placer.target_placement(service)
        return None

    async def plan_in_thread(self, service_id: str, now: float, max_creates: int | None) -> Plan:
        """`plan`, for a service too large to plan on the event loop.

        Planning is pure but not cheap: a service of 100,000 replicas took 1.2 s a pass
        (decoding its tasks, settling every slot, the rollout check), and a create that
        large takes 25 passes (MAX_CREATES_PER_PASS), each a stall of the whole manager.
        Here the loop only takes a snapshot (the tasks' stored bytes, the nodes), and a
        worker thread decodes and plans; the loop runs on meanwhile (the GIL changes
        hands every millisecond, threaded.SWITCH_INTERVAL). What changes while the plan
        is made is seen by the next pass, as a change during a commit is."""
        service = self.cache.services.get(service_id)
        blobs = self.cache.service_task_bytes(service_id)
        nodes = dict(self.cache.nodes)
        target = self._target(service)

        def work() -> Plan:
            tasks = [objects_pb2.Task.FromString(b) for b in blobs]
            return plan_for(service, tasks, nodes, now, target, max_creates)

        return await asyncio.to_thread(work)

    def _pass_budget(self, service_id: str) -> int:
        """How many tasks a pass that plans this service may create (PLANS_PER_CREATE)."""
        service = self.cache.services.get(service_id)
        if service is None or not service.spec.HasField("replicated"):
            return MAX_CREATES_PER_PASS
        return max(MAX_CREATES_PER_PASS, service.spec.replicated.replicas // PLANS_PER_CREATE)

    def _plan_size(self, service_id: str) -> int:
        """How much planning the service is: its tasks and its slots."""
        service = self.cache.services.get(service_id)
        tasks = len(self.cache.tasks_by_service.get(service_id, ()))
        if service is None or not service.spec.HasField("replicated"):
            return tasks
        return tasks + service.spec.replicated.replicas

    async def _plan_isolated(self, service_id: str, now: float, room: int) -> Plan | None:
        """The service's plan, in a worker thread if it is large; None if planning
        raised: the service is left out and retried on its own (`isolate`)."""
        if self._plan_size(service_id) >= PLAN_IN_THREAD_FROM:
            return await self.isolate_async(
                service_id,
                partial(self.plan_in_thread, service_id, now, max_creates=room),
                service_id=service_id,
            )
        return self.isolate(
            service_id,
            partial(self.plan, service_id, now, max_creates=room),
            service_id=service_id,
        )

    def _service_writes(self, service_id: str, plan: Plan) -> list[Create | Update]:
        """What the plan decided about the service itself: its update status, the end
        of a rebalance."""
        writes: list[Create | Update] = []
        service = self.cache.services.get(service_id)
        if service is None:
            return writes
        if plan.service_update is not None:
            writes.append(
                Update(
                    Kind.SERVICE,
                    service_id,
                    _update_status(plan.service_update, service.spec_version),
                )
            )
        if plan.rebalance_done:
            writes.append(
                Update(Kind.SERVICE, service_id, _rebalance_done(service.rebalance_requested))
            )
        return writes

    async def reconcile(self, keys: set[str]) -> None:
        now = self.clock()
        ops: list[Create | Update] = []
        creates = shutdowns = 0
        if self._rebalance_all:
            self._rebalance_all = False
            for service in self.cache.services.values():
                if service.spec.HasField("replicated"):
                    ops.append(Update(Kind.SERVICE, service.id, _request_rebalance))
        late: list[Create | Update] = []
        new_tasks: list[objects_pb2.Task] = []
        stopping: list[str] = []
        pending = list(keys)
        while pending:
            if len(new_tasks) >= MAX_CREATES_PER_PASS:
                # The rest in the next pass: a pass is a few hundred milliseconds of work
                # at most, so the tasks made so far go out (and are dispatched and
                # started) while the rest is planned, and nothing waits on one long pass.
                self.mark_many(pending)
                break
            service_id = pending.pop()
            room = self._pass_budget(service_id) - len(new_tasks)
            # Only the tasks this pass has room for are made (a task costs ~6 us to make).
            plan = await self._plan_isolated(service_id, now, room)
            if plan is None:
                continue
            if plan.wake_at is not None:
                self.mark_at(plan.wake_at, service_id)
            if plan.more or len(plan.creates) > room:
                # Planning is level-triggered: the slots left out now are planned again
                # (and created) in the next pass. What the plan decided about the whole
                # service waits for that pass too.
                del plan.creates[room:]
                plan.service_update = None
                plan.rebalance_done = False
                self.mark(service_id)
            await asyncio.sleep(0)  # let the rest of the manager run between services
            # Shutdowns first: a replacement never runs beside the task it replaces for long.
            ops.extend(Update(Kind.TASK, s.task_id, _shut_down(s)) for s in plan.shutdowns)
            ops.extend(Update(Kind.TASK, r.task_id, _renumber(r)) for r in plan.renumbers)
            late.extend(Create(t) for t in plan.creates)
            new_tasks.extend(plan.creates)
            stopping.extend(s.task_id for s in plan.shutdowns)
            late.extend(self._service_writes(service_id, plan))
            creates += len(plan.creates)
            shutdowns += len(plan.shutdowns)
        ops.extend(late)
        if not ops:
            return
        releases: list[Callable[[], None]] = []
        try:
            if self.placer is not None and new_tasks:
                tasks = self.cache.tasks
                freed = [tasks[t] for t in stopping if t in tasks]
                for start in range(0, len(new_tasks), PLACE_SLICE):
                    placing = new_tasks[start : start + PLACE_SLICE]
                    releases.append(self.placer.place_new(placing, freed if not start else ()))
                    await asyncio.sleep(0)
            result = await commit_sliced(self.store, ops)
            await self.cache.wait_for(result.revision)
        finally:
            for release in releases:
                release()
        self.log.info(
            "reconciled",
            services=len(keys) - len(pending),
            created=creates,
            shut_down=shutdowns,
            failed=len(result.failed),
        )
        for op, err in result.failed:
            self.log.warning("write failed", error=str(err), op=type(op).__name__)


async def commit_sliced(store: Committer, ops: Sequence[Create | Update]) -> BatchResult:
    """Commit `ops`, the creates in slices of COMMIT_SLICE committed side by side.

    The store prepares a commit's operations (serializes them, builds the requests)
    before it first waits, ~15 us an operation: 4,096 creates held the loop for ~60 ms,
    and more on a busy machine. Each new task is a key of its own, so the order of the
    creates does not matter; the other operations (a service written twice in a pass,
    shutdowns before the creates that replace them) go first, in one commit, in their
    order. SLICES_AT_ONCE commits run at a time, and between slices the loop has a
    turn. The results are merged; the first error
    is raised once every slice is done, as a single commit does."""
    creates = [op for op in ops if isinstance(op, Create)]
    if len(creates) <= COMMIT_SLICE:
        return await store.commit(ops)
    others = [op for op in ops if not isinstance(op, Create)]
    gate = asyncio.Semaphore(SLICES_AT_ONCE)

    async def commit(batch: Sequence[Create | Update]) -> BatchResult:
        async with gate:
            return await store.commit(batch)

    commits = [asyncio.ensure_future(commit(others))] if others else []
    for start in range(0, len(creates), COMMIT_SLICE):
        await asyncio.sleep(0)
        commits.append(asyncio.ensure_future(commit(creates[start : start + COMMIT_SLICE])))
    merged = BatchResult()
    first_error: BaseException | None = None
    for outcome in await asyncio.gather(*commits, return_exceptions=True):
        if isinstance(outcome, BaseException):
            first_error = first_error or outcome
            continue
        merged.revision = max(merged.revision, outcome.revision)
        merged.written.extend(outcome.written)
        merged.deleted.extend(outcome.deleted)
        merged.failed.extend(outcome.failed)
    if first_error is not None:
        raise first_error
    return merged


def _shut_down(decision: ShutdownTask) -> Callable[[objects_pb2.Task], objects_pb2.Task | None]:
    def mutate(task: objects_pb2.Task) -> objects_pb2.Task | None:
        if task.desired_state >= decision.desired:
            return None
        task.desired_state = decision.desired  # type: ignore[assignment]
        if decision.declined:
            task.restart_declined = True
        if decision.restart_at is not None:
            task.restart_at.FromNanoseconds(round(decision.restart_at * 1e9))
        if decision.reason:
            task.shutdown_reason = decision.reason
        return task

    return mutate


def _renumber(r: Renumber) -> Callable[[objects_pb2.Task], objects_pb2.Task | None]:
    def mutate(task: objects_pb2.Task) -> objects_pb2.Task | None:
        if task.slot == r.slot:
            return None
        task.slot = r.slot
        task.annotations.name = r.name
        return task

    return mutate


def _update_status(
    decision: UpdateDecision, planned_for: int
) -> Callable[[objects_pb2.Service], objects_pb2.Service | None]:
    def mutate(service: objects_pb2.Service) -> objects_pb2.Service | None:
        if service.spec_version != planned_for:
            return None  # the spec changed since: that update decides
        if decision.rollback:
            # Roll the previous spec out, with the rollback settings.
            current = objects_pb2.Service().spec
            current.CopyFrom(service.spec)
            service.spec.CopyFrom(service.previous_spec)
            service.previous_spec.CopyFrom(current)
            service.spec_version += 1
            stamp_now(service.update_status.started_at)
            service.update_status.ClearField("completed_at")
        elif decision.state in (
            US.UPDATE_STATE_COMPLETED,
            US.UPDATE_STATE_ROLLBACK_COMPLETED,
        ):
            stamp_now(service.update_status.completed_at)
        service.update_status.state = decision.state  # type: ignore[assignment]
        service.update_status.message = decision.message
        return service

    return mutate


def _request_rebalance(service: objects_pb2.Service) -> objects_pb2.Service:
    service.rebalance_requested += 1
    return service


def _rebalance_done(requested: int) -> Callable[[objects_pb2.Service], objects_pb2.Service | None]:
    def mutate(service: objects_pb2.Service) -> objects_pb2.Service | None:
        if service.rebalance_done >= requested:
            return None
        service.rebalance_done = requested
        return service

    return mutate
