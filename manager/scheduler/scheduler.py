"""Placing pending tasks on nodes.

Pending tasks are grouped by service and spec version; for each group the filters run
once per node, then tasks are placed one by one on the best-ranked eligible node (fewest
tasks of this service, then fewest tasks overall), the ranking updated after each
placement through a heap. A pass runs ~50 ms after the first change it reacts to (at
most 1 s later under a stream of changes), and its placements are committed in batched
transactions. A task that fits nowhere stays PENDING with the pipeline's explanation in
its status, and is placed as soon as a node event makes one fit.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from common import states
from common.api import objects_pb2
from common.timeutil import now_timestamp, timestamp_seconds
from manager.reconciler import Reconciler
from manager.scheduler.nodeinfo import NodeInfo, NodeInfos
from manager.scheduler.pipeline import Pipeline
from manager.store import Cache, Event, Kind, Store, Update


def is_pending(task: objects_pb2.Task | None) -> bool:
    """The task waits for a node."""
    return (
        task is not None
        and task.status.state == states.PENDING
        and task.desired_state <= states.RUNNING
    )


@dataclass
class Decision:
    task_id: str
    node_id: str = ""
    # Why the task could not be placed, when node_id is empty.
    explanation: str = ""


def schedule_group(
    tasks: Sequence[objects_pb2.Task], infos: Iterable[NodeInfo], pipeline: Pipeline
) -> list[Decision]:
    """Place tasks of one service and spec; `infos` are updated as tasks are placed."""
    if not tasks:
        return []
    first = tasks[0]
    service_id = first.service_id
    pipeline.set_task(first)
    eligible = pipeline.eligible(first, infos)
    if not eligible:
        reason = pipeline.explain()
        return [Decision(t.id, explanation=reason) for t in tasks]
    heap = [(i.by_service[service_id], i.total, i.node.id, i) for i in eligible]
    heapq.heapify(heap)
    by_id = {i.node.id: i for i in eligible}
    decisions = []
    for task in tasks:
        if task.node_id:
            # Already bound to a node (a global service's task): only check it fits.
            bound = by_id.get(task.node_id)
            if bound is None:
                decisions.append(Decision(task.id, explanation=pipeline.explain()))
            else:
                bound.add(task)
                decisions.append(Decision(task.id, task.node_id))
            continue
        _, _, node_id, info = heapq.heappop(heap)
        info.add(task)
        decisions.append(Decision(task.id, node_id))
        heapq.heappush(heap, (info.by_service[service_id], info.total, node_id, info))
    return decisions


class Scheduler(Reconciler):
    """Keeps the set of pending tasks and places them in debounced passes."""

    name = "scheduler"
    debounce = 0.05
    max_delay = 1.0

    def __init__(self, cache: Cache, store: Store, pipeline: Pipeline | None = None) -> None:
        super().__init__()
        self.cache = cache
        self.store = store
        self.pipeline = pipeline or Pipeline()
        self.nodes = NodeInfos()
        self.pending: set[str] = set()
        self.placed = 0
        cache.add_listener(self._on_event)
        cache.add_resync_listener(self._resync)

    def _resync(self) -> None:
        self.mark_everything()

    def _on_event(self, ev: Event) -> None:
        if ev.kind is Kind.TASK:
            self.nodes.task_changed(ev.old, ev.new)
            if is_pending(ev.new):
                self.pending.add(ev.new.id)
                self.mark(ev.new.id)
            else:
                self.pending.discard(ev.obj.id)
        elif ev.kind is Kind.NODE:
            self.nodes.node_changed(ev.old, ev.new)
            # Any node change may make a waiting task fit (or stop fitting).
            if self.pending:
                self.mark_many(self.pending)

    def all_keys(self) -> Iterable[str]:
        # Called on start and after a re-list: recount everything from the cache.
        self.nodes.rebuild(self.cache.nodes, self.cache.tasks)
        self.pending = {t.id for t in self.cache.tasks.values() if is_pending(t)}
        return set(self.pending)

    async def reconcile(self, keys: set[str]) -> None:
        groups: dict[tuple[str, int], list[objects_pb2.Task]] = defaultdict(list)
        for task_id in keys:
            task = self.cache.tasks.get(task_id)
            if is_pending(task):
                assert task is not None
                groups[(task.service_id, task.spec_version)].append(task)
        if not groups:
            return
        infos = self.nodes.infos
        ops: list[Update] = []
        placements: list[tuple[NodeInfo, objects_pb2.Task]] = []
        for group in groups.values():
            group.sort(key=lambda t: (t.slot, timestamp_seconds(t.meta.created_at)))
            for d in schedule_group(group, infos.values(), self.pipeline):
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
