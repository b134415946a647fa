"""Placing pending tasks on nodes.

Pending tasks are grouped by service and spec version. For each group the filters run
once per node; then tasks are placed one by one on the best-ranked eligible node, and a
node is checked again before each placement (its free resources, host ports and
per-node count change as tasks land on it). Ranking (`rank_key`):

- nodes where the service failed 5 or more times in the last 5 minutes come last;
- spread (default): fewest tasks of this service, then, when the task reserves
  resources, the largest free share of those resources (swarmkit#1033), then fewest
  tasks overall;
- binpack (`--placement-strategy binpack`): the smallest free share first, then the
  most tasks, so nodes fill up before others are used;
- placement preferences (`spread=node.labels.zone`, nested) come before all of that:
  the group (label value, then sub-value...) with the fewest tasks of this service wins;
  nodes without the label form their own group.

A pass runs ~50 ms after the first change it reacts to (at most 1 s later under a
stream of changes), and its placements are committed in batched transactions. A task
that fits nowhere stays PENDING with the pipeline's explanation in its status, and is
tried again whenever a node changes or a task frees what it held.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from common import states
from common.api import objects_pb2, specs_pb2
from common.timeutil import now_timestamp, timestamp_seconds
from manager.reconciler import Reconciler
from manager.scheduler.constraints import spread_value
from manager.scheduler.nodeinfo import (
    FAILURE_THRESHOLD,
    NodeInfo,
    NodeInfos,
    counts_against_node,
    share_function,
)
from manager.scheduler.pipeline import Pipeline
from manager.store import Cache, Event, Kind, Store, Update


def is_pending(task: objects_pb2.Task | None) -> bool:
    """The task waits for a node."""
    return (
        task is not None
        and task.status.state == states.PENDING
        and states.is_runnable(task.desired_state)
    )


@dataclass
class Decision:
    task_id: str
    node_id: str = ""
    # Why the task could not be placed, when node_id is empty.
    explanation: str = ""


@dataclass
class Rejection:
    node: objects_pb2.Node
    reason: str


@dataclass
class GroupResult:
    decisions: list[Decision] = field(default_factory=list)
    # For a dry run: why each node that did not pass was turned down.
    rejections: list[Rejection] = field(default_factory=list)


Key = tuple[object, ...]


def ranker(task: objects_pb2.Task, now: float) -> Callable[[NodeInfo], Key]:
    """`rank_key` for the tasks of one group, with what it reads of the task bound once."""
    service_id = task.service_id
    reservations = task.spec.resources.reservations
    cpu, memory = bool(reservations.nano_cpus), bool(reservations.memory_bytes)
    share = share_function(cpu, memory)

    def failing(info: NodeInfo) -> bool:
        return bool(info.failures) and info.recent_failures(service_id, now) >= FAILURE_THRESHOLD

    if task.spec.placement.strategy == specs_pb2.PLACEMENT_STRATEGY_BINPACK:
        return lambda info: (
            failing(info),
            share(info),
            -info.by_service.get(service_id, 0),
            -info.total,
            info.id,
        )
    if cpu or memory:
        return lambda info: (
            failing(info),
            info.by_service.get(service_id, 0),
            -share(info),
            info.total,
            info.id,
        )
    return lambda info: (failing(info), info.by_service.get(service_id, 0), info.total, info.id)


def rank_key(task: objects_pb2.Task, info: NodeInfo, now: float) -> Key:
    """Lower is better; ends with the node id so that ties break the same way every time."""
    return ranker(task, now)(info)


def schedule_group(
    tasks: Sequence[objects_pb2.Task],
    infos: Iterable[NodeInfo],
    pipeline: Pipeline,
    now: float | None = None,
) -> list[Decision]:
    """Place tasks of one service and spec; `infos` are updated as tasks are placed."""
    return place_group(tasks, infos, pipeline, now).decisions


def place_group(
    tasks: Sequence[objects_pb2.Task],
    infos: Iterable[NodeInfo],
    pipeline: Pipeline,
    now: float | None = None,
    *,
    explain_nodes: bool = False,
) -> GroupResult:
    result = GroupResult()
    if not tasks:
        return result
    now = time.time() if now is None else now
    all_infos = list(infos)
    first = tasks[0]
    pipeline.set_task(first)
    eligible = pipeline.eligible(first, all_infos)
    if explain_nodes:
        for info in all_infos:
            failed = pipeline.first_failure(first, info)
            if failed is not None:
                result.rejections.append(Rejection(info.node, failed.reason))
    by_id: dict[str, NodeInfo] | None = None

    free = []
    for task in tasks:
        if not task.node_id:
            free.append(task)
            continue
        # Bound to a node already (a global service's task): only that node will do.
        if by_id is None:
            by_id = {i.id: i for i in all_infos}
        bound = by_id.get(task.node_id)
        if bound is not None and pipeline.fits(task, bound):
            bound.add(task)
            result.decisions.append(Decision(task.id, task.node_id))
        else:
            one = Pipeline(pipeline.filters)
            one.set_task(task)
            if bound is not None:
                one.accepts(task, bound)
            result.decisions.append(Decision(task.id, explanation=one.explain()))
    if not free:
        return result
    preferences = [
        p.spread.spread_descriptor
        for p in first.spec.placement.preferences
        if p.spread.spread_descriptor
    ]
    if preferences:
        _place_spread_over(free, eligible, all_infos, preferences, pipeline, now, result)
    else:
        _place_ranked(free, eligible, pipeline, now, result)
    return result


def _place_ranked(
    tasks: list[objects_pb2.Task],
    eligible: list[NodeInfo],
    pipeline: Pipeline,
    now: float,
    result: GroupResult,
) -> None:
    key = ranker(tasks[0], now)
    heap = [(key(i), i) for i in eligible]
    heapq.heapify(heap)
    for task in tasks:
        while heap:
            _, info = heapq.heappop(heap)
            if not pipeline.fits(task, info):
                pipeline.count_failure(task, info)  # full now: out for the rest of the group
                continue
            info.add(task)
            result.decisions.append(Decision(task.id, info.node.id))
            heapq.heappush(heap, (key(info), info))
            break
        else:
            result.decisions.append(Decision(task.id, explanation=pipeline.explain()))


def _place_spread_over(
    tasks: list[objects_pb2.Task],
    eligible: list[NodeInfo],
    all_infos: list[NodeInfo],
    descriptors: list[str],
    pipeline: Pipeline,
    now: float,
    result: GroupResult,
) -> None:
    service_id = tasks[0].service_id
    levels = range(len(descriptors))
    paths = {i.node.id: tuple(spread_value(i.node, d) for d in descriptors) for i in all_infos}
    counts: list[Counter[tuple[str, ...]]] = [Counter() for _ in levels]
    for info in all_infos:
        n = info.by_service[service_id]
        path = paths[info.node.id]
        for level in levels:
            counts[level][path[: level + 1]] += n
    candidates = list(eligible)
    key = ranker(tasks[0], now)
    for task in tasks:
        best: tuple[tuple[object, ...], NodeInfo] | None = None
        for info in list(candidates):
            if not pipeline.fits(task, info):
                pipeline.count_failure(task, info)
                candidates.remove(info)
                continue
            path = paths[info.node.id]
            k = (tuple(counts[lv][path[: lv + 1]] for lv in levels), key(info))
            if best is None or k < best[0]:
                best = (k, info)
        if best is None:
            result.decisions.append(Decision(task.id, explanation=pipeline.explain()))
            continue
        info = best[1]
        info.add(task)
        path = paths[info.node.id]
        for level in levels:
            counts[level][path[: level + 1]] += 1
        result.decisions.append(Decision(task.id, info.node.id))


class Scheduler(Reconciler):
    """Keeps the set of pending tasks and places them in debounced passes."""

    name = "scheduler"
    debounce = 0.05
    max_delay = 1.0

    def __init__(
        self,
        cache: Cache,
        store: Store,
        pipeline: Pipeline | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock)
        self.cache = cache
        self.store = store
        self.pipeline = pipeline or Pipeline()
        self.nodes = NodeInfos()
        self.pending: set[str] = set()
        self.placed = 0
        self._retry_pending = False
        cache.add_listener(self._on_event)
        cache.add_resync_listener(self.mark_everything)

    def _retry_all_pending(self) -> None:
        if self.pending:
            self._retry_pending = True
            self._wake.set()

    def has_work(self) -> bool:
        return self._retry_pending or super().has_work()

    def _on_event(self, ev: Event) -> None:
        if ev.kind is Kind.TASK:
            old, new = ev.old, ev.new
            self.nodes.task_changed(old, new, self.clock())
            if is_pending(new):
                self.pending.add(new.id)
                self.mark(new.id)
            else:
                self.pending.discard(ev.obj.id)
            if counts_against_node(old) and not counts_against_node(new):
                # Resources, ports or a per-node slot were freed: waiting tasks may fit.
                self._retry_all_pending()
        elif ev.kind is Kind.NODE:
            self.nodes.node_changed(ev.old, ev.new)
            # Any node change may make a waiting task fit (or stop fitting).
            self._retry_all_pending()

    def all_keys(self) -> Iterable[str]:
        # Called on start and after a re-list: recount everything from the cache.
        self.nodes.rebuild(self.cache.nodes, self.cache.tasks.values(), self.clock())
        self.pending = {t.id for t in self.cache.tasks.values() if is_pending(t)}
        return set(self.pending)

    async def reconcile(self, keys: set[str]) -> None:
        if self._retry_pending:
            self._retry_pending = False
            keys |= self.pending
        groups: dict[tuple[str, int], list[objects_pb2.Task]] = defaultdict(list)
        for task_id in keys:
            task = self.cache.tasks.get(task_id)
            if is_pending(task):
                assert task is not None
                groups[(task.service_id, task.spec_version)].append(task)
        if not groups:
            return
        infos = self.nodes.infos
        now = self.clock()
        ops: list[Update] = []
        placements: list[tuple[NodeInfo, objects_pb2.Task]] = []
        for group in groups.values():
            group.sort(key=lambda t: (t.slot, timestamp_seconds(t.meta.created_at)))
            for d in schedule_group(group, infos.values(), self.pipeline, now):
                task = self.cache.tasks[d.task_id]
                if d.node_id:
                    ops.append(Update(Kind.TASK, d.task_id, _assign(d.node_id), base=task))
                    placements.append((infos[d.node_id], task))
                elif task.status.err != d.explanation:
                    ops.append(Update(Kind.TASK, d.task_id, _explain(d.explanation), base=task))
        placed = len(placements)
        try:
            result = await self.store.commit(ops)
            await self.cache.wait_for(result.revision)
        finally:
            # The placements were counted into the node infos ahead of the writes so that
            # the ranking saw them; the watch counts what was stored, so take them out.
            for info, task in placements:
                info.remove(task)
        self.placed += placed
        if placed or result.failed:
            self.log.info(
                "scheduled", placed=placed, unplaced=len(ops) - placed, failed=len(result.failed)
            )

    def preview(
        self, tasks: Sequence[objects_pb2.Task], *, without_service: str = ""
    ) -> GroupResult:
        """Where `tasks` (one service, one spec) would go now; nothing is written.

        With `without_service`, that service's current tasks are left out first, as if
        they were all being replaced (a dry-run update).
        """
        infos = {nid: i.copy() for nid, i in self.nodes.infos.items()}
        if without_service:
            for t in self.cache.tasks_by_service.get(without_service, {}).values():
                if counts_against_node(t) and t.node_id in infos:
                    infos[t.node_id].remove(t)
        return place_group(
            tasks, infos.values(), Pipeline(self.pipeline.filters), self.clock(), explain_nodes=True
        )


def _assign(node_id: str) -> Callable[[objects_pb2.Task], objects_pb2.Task | None]:
    def mutate(task: objects_pb2.Task) -> objects_pb2.Task | None:
        if not is_pending(task) or (task.node_id and task.node_id != node_id):
            return None
        task.node_id = node_id
        task.status.state = states.ASSIGNED
        task.status.message = "scheduler assigned task to node"
        task.status.err = ""
        task.status.timestamp.CopyFrom(now_timestamp())
        return task

    return mutate


def _explain(explanation: str) -> Callable[[objects_pb2.Task], objects_pb2.Task | None]:
    def mutate(task: objects_pb2.Task) -> objects_pb2.Task | None:
        if not is_pending(task) or task.status.err == explanation:
            return None
        task.status.err = explanation
        task.status.timestamp.CopyFrom(now_timestamp())
        return task

    return mutate
