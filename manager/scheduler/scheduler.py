"""Placing pending tasks on nodes.

Pending tasks are grouped by service and spec version. For each group the filters run
once per node; then tasks are placed one by one on the best-ranked eligible node, and a
node is checked again before each placement (its free resources, host ports and
per-node count change as tasks land on it). Nodes are ordered by the group's
`Ranking` (ranking.py: spread, spread by free share, binpack; nodes failing the
service last). Placement preferences (`spread=node.labels.zone`, nested) come before
that: the group of nodes (label value, then sub-value...) with the fewest tasks of
this service wins; nodes without the label form their own group.

A pass runs ~50 ms after the first change it reacts to (at most 1 s later under a
stream of changes), and its placements are committed in batched transactions. A task
that fits nowhere stays PENDING with the pipeline's explanation in its status, and is
tried again whenever a node changes or a task frees what it held.

Tasks the orchestrator is about to create are placed before their first write
(`place_new`): a new task is stored already assigned (or pending with its
explanation), one write instead of two. Those placements, and the resources of the
tasks shut down in the same commit, are counted in the node infos until the cache has
seen the writes, as a pass's own placements are.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from common import states
from common.api import objects_pb2
from common.timeutil import stamp_now, timestamp_seconds
from manager.domain.constraints import info_getter
from manager.domain.placer import Decision, GroupResult, Rejection
from manager.domain.tasks import TaskMaker
from manager.metrics import LAST_PLACEMENT, PLACEMENTS, SCHEDULING_LATENCY
from manager.reconciler import Reconciler
from manager.scheduler.nodeinfo import (
    INFO,
    VERSION,
    Entry,
    ListedNodes,
    Load,
    NodeIndex,
    NodeInfo,
    NodeInfos,
    Path,
    Pool,
    counts_against_node,
    task_load,
)
from manager.scheduler.pipeline import ENGINELESS_REASON, Pipeline
from manager.scheduler.ranking import Key, Ranking
from manager.store import Event, Kind, Update
from manager.store.views import CacheView, Committer


def is_pending(task: objects_pb2.Task | None) -> bool:
    """The task waits for a node."""
    return (
        task is not None
        and task.status.state == states.PENDING
        and states.is_runnable(task.desired_state)
    )


# A node in one of a group's own heaps: (its full rank key, its info), unpacked where
# it is read. A plain tuple, as a pool's Entry is: a group makes one per placement.
Ranked = tuple[Key, NodeInfo]


class Held(NamedTuple):
    """A pool entry a group took from its lane and did not place on: put back after
    the group (a node ranked in the group's own heaps, or one that did not fit)."""

    path: Path
    entry: Entry


def schedule_group(
    tasks: Sequence[objects_pb2.Task],
    infos: NodeInfos | Iterable[NodeInfo],
    pipeline: Pipeline,
    now: float | None = None,
) -> list[Decision]:
    """Place tasks of one service and spec; the infos are updated as tasks are placed.

    Give the NodeInfos itself where there is one: its pools make a group's work follow
    the group's tasks; a plain list of infos costs a pass over them per group."""
    return place_group(tasks, infos, pipeline, now).decisions


def place_group(
    tasks: Sequence[objects_pb2.Task],
    infos: NodeInfos | Iterable[NodeInfo],
    pipeline: Pipeline,
    now: float | None = None,
    *,
    explain_nodes: bool = False,
) -> GroupResult:
    result = GroupResult()
    if not tasks:
        return result
    now = time.time() if now is None else now
    index: NodeIndex = infos if isinstance(infos, NodeInfos) else ListedNodes(infos)
    first = tasks[0]
    pipeline.set_task(first)
    if explain_nodes:
        for info in index.all():
            failed = pipeline.first_failure(first, info)
            if failed is not None:
                result.rejections.append(Rejection(info.node, failed.reason))

    free = []
    for task in tasks:
        if not task.node_id:
            free.append(task)
            continue
        # Bound to a node already (a global service's task): only that node will do.
        bound = index.get(task.node_id)
        if bound is not None and pipeline.fits(task, bound):
            bound.add(task)
            result.decisions.append(Decision(task.id, task.node_id))
        else:
            one = Pipeline(pipeline.filters)
            one.set_task(task)
            if bound is not None:
                one.accepts(task, bound)
            result.decisions.append(Decision(task.id, explanation=one.explain()))
    if free:
        preferences = tuple(
            p.spread.spread_descriptor
            for p in first.spec.placement.preferences
            if p.spread.spread_descriptor
        )
        _place_free(free, index, pipeline, now, preferences, result)
    return result


def _path_function(descriptors: tuple[str, ...]) -> Callable[[NodeInfo], Path] | None:
    """A node's spread path: its value for each descriptor ("" without the label, as
    spread_value has it)."""
    if not descriptors:
        return None
    getters = [info_getter(d) for d in descriptors]
    if len(getters) == 1:
        (get,) = getters
        return lambda info: (get(info) or "",)
    return lambda info: tuple(get(info) or "" for get in getters)


@dataclass
class _Draw:
    """What drawing nodes for a group's tasks not bound to a node works with."""

    tasks: list[objects_pb2.Task]
    ranking: Ranking
    # The group's full rank key of a node.
    key: Callable[[NodeInfo], Key]
    # What each task of the group occupies (the tasks of a group have the same spec).
    load: Load
    # The re-check before a placement, on what the node's tasks occupy (None: no
    # filter looks at that for this group).
    fits: Callable[[NodeInfo], bool] | None
    # The explanation for a task that fits nowhere.
    explain: Callable[[], str]
    # The nodes ranked in the group's own heaps, not to be drawn from the pool. A node
    # drawn from the pool needs no mark: its entry was the only current one there.
    skip: set[str]
    # Pool entries taken and not placed on, put back at the group's end.
    held: list[Held]
    decisions: list[Decision]


def _place_free(
    tasks: list[objects_pb2.Task],
    index: NodeIndex,
    pipeline: Pipeline,
    now: float,
    descriptors: tuple[str, ...],
    result: GroupResult,
) -> None:
    """Place tasks not bound to a node, each on the best node that passes the filters.

    The candidates are the nodes of the pool for the group's static filters (ready,
    constraints, platform) and ranking. The nodes that run the service (or failed it)
    rank by their own counts: they go into small heaps of the group's own, keyed by
    the ranking's full key; every other node ranks by the pool's order, which is the
    same ranking for them, and is drawn from the pool's lane only when it comes to the
    top. Each node is checked against the other filters (resources, host ports, max
    replicas) when it is the best left; one that fails is out for the rest of the
    group, as its counts only grow. So the work follows the tasks placed and the nodes
    turned down, not the cluster's size. With spread preferences each spread path has
    its lane and heap, and the path with the fewest tasks of the service (level by
    level) wins, then the best node's key decides between paths.

    A task that fits nowhere gets the explanation of a pass of the full pipeline over
    every node, as the nodes are then (every node turned down by the filter that turns
    it down now); the rest of the group gets the same.
    """
    first = tasks[0]
    service_id = first.service_id
    ranking = Ranking.of(first)
    key = ranking.key(service_id, now)
    path_of = _path_function(descriptors)
    pool = index.pool(
        (pipeline.static_signature(), ranking, descriptors),
        lambda: Pool(pipeline.static_check(), ranking.entry(), path_of, ranking.order_fields),
    )
    members = pool.members
    levels = range(len(descriptors))
    counts: list[Counter[Path]] = [Counter() for _ in levels]
    skip: set[str] = set()
    own: dict[Path, list[Ranked]] = {}
    for info in index.running(service_id):
        skip.add(info.id)
        if path_of is not None:
            n = info.by_service.get(service_id, 0)
            if n:
                path = path_of(info)
                for lv in levels:
                    counts[lv][path[: lv + 1]] += n
        member = members.get(info.id)
        if member is None:
            continue
        known, _, path = member
        if known is info:
            own.setdefault(path, []).append((key(info), info))
    for ranked in own.values():
        heapq.heapify(ranked)

    def explain() -> str:
        pipeline.set_task(first)
        for info in index.all():
            pipeline.accepts(first, info)
        return pipeline.explain()

    draw = _Draw(
        tasks,
        ranking,
        key,
        task_load(first),
        # Bound to the group's first task, as the eligibility of every node always
        # was: the tasks of a group have the same spec.
        pipeline.dynamic_check(),
        explain,
        skip,
        [],
        result.decisions,
    )
    if descriptors:
        _draw_by_path(draw, pool, own, counts)
    else:
        _draw(draw, pool.lanes.get((), []), own.get((), []))
    for path, entry in draw.held:
        if entry[VERSION] == entry[INFO].version:
            pool.requeue(path, entry)


def _draw(draw: _Draw, lane: list[Entry], mine: list[Ranked]) -> None:
    """_place_free without spread preferences: one pool lane and one heap of our own."""
    # The hot loop: what it reads of `draw` in locals.
    key, load, fits, skip, held, decisions = (
        draw.key,
        draw.load,
        draw.fits,
        draw.skip,
        draw.held,
        draw.decisions,
    )
    ranking = draw.ranking
    ceiling = ranking.pool_ceiling
    # With spread, a node placed on from the pool has a task of the service now, so it
    # ranks after every pool node: it joins `mine` only once the pool has none left.
    pool_first = ranking.pool_first
    later: list[NodeInfo] = []
    pop, push = heapq.heappop, heapq.heappush
    explanation = ""
    for task in draw.tasks:
        while not explanation:
            # The pool's best current entry not ranked in `mine` (_best, inlined).
            top = None
            while lane:
                entry = lane[-1]
                info = entry[INFO]
                if entry[VERSION] != info.version:
                    lane.pop()
                elif skip and info.id in skip:
                    held.append(Held((), lane.pop()))
                else:
                    top = entry
                    break
            if top is not None:
                info = top[INFO]
                k = mine[0][0] if mine else None  # the best key of our own
                if k is not None and (ceiling is None or k < ceiling) and k < key(info):
                    _, info = pop(mine)
                    if fits is not None and not fits(info):
                        continue  # full now: out for the rest of the group
                else:
                    lane.pop()
                    if fits is not None and not fits(info):
                        held.append(Held((), top))
                        continue
                    if pool_first:
                        info.apply(load, 1)
                        later.append(info)
                        decisions.append(Decision(task.id, info.id))
                        break
            elif later:
                for info in later:
                    push(mine, (key(info), info))
                later.clear()
                continue
            elif mine:
                _, info = pop(mine)
                if fits is not None and not fits(info):
                    continue
            else:
                explanation = draw.explain()
                continue  # ends the loop: the task gets the explanation
            info.apply(load, 1)
            push(mine, (key(info), info))
            decisions.append(Decision(task.id, info.id))
            break
        else:
            decisions.append(Decision(task.id, explanation=explanation))


def _draw_by_path(
    draw: _Draw, pool: Pool, own: dict[Path, list[Ranked]], counts: list[Counter[Path]]
) -> None:
    """_place_free with spread preferences: per task, the path with the fewest tasks of
    the service (level by level), then the best node key, among paths with candidates."""
    key, load, fits, skip, held, decisions = (
        draw.key,
        draw.load,
        draw.fits,
        draw.skip,
        draw.held,
        draw.decisions,
    )
    lanes = pool.lanes
    levels = range(len(counts))
    paths = sorted(set(lanes) | set(own))
    # Each path's top pool entry and its key: the same entry is the same node in the
    # same state (its version unchanged), so the key holds while it stays on top.
    top_keys: dict[Path, tuple[Entry, Key]] = {}
    # One level (a single preference): a path is its own first-level prefix.
    single = counts[0] if len(counts) == 1 else None
    explanation = ""
    for task in draw.tasks:
        while not explanation:
            best: Key | None = None
            best_path: Path = ()
            best_top: Entry | None = None
            exhausted = False
            for path in paths:
                lane = lanes.get(path)
                top = _best(lane, path, skip, held) if lane else None
                mine = own.get(path)
                if top is None:
                    if not mine:
                        exhausted = True
                        continue
                    k, _ = mine[0]
                else:
                    cached_top, cached_key = top_keys.get(path, _NO_TOP)
                    if cached_top is top:
                        k = cached_key
                    else:
                        k = key(top[INFO])
                        top_keys[path] = (top, k)
                    if mine and mine[0][0] < k:
                        k, top = mine[0][0], None
                rank: Key
                if single is not None:
                    rank = (single[path], k)
                else:
                    rank = (tuple(counts[lv][path[: lv + 1]] for lv in levels), k)
                if best is None or rank < best:
                    best, best_path, best_top = rank, path, top
            if exhausted:
                paths = [p for p in paths if lanes.get(p) or own.get(p)]
            if best is None:
                explanation = draw.explain()
                continue  # ends the loop: the task gets the explanation
            if best_top is not None:
                lanes[best_path].pop()
                info = best_top[INFO]
                if fits is not None and not fits(info):
                    held.append(Held(best_path, best_top))
                    continue
            else:
                _, info = heapq.heappop(own[best_path])
                if fits is not None and not fits(info):
                    continue
            info.apply(load, 1)
            mine = own.get(best_path)
            if mine is None:
                own[best_path] = mine = []
            heapq.heappush(mine, (key(info), info))
            for lv in levels:
                counts[lv][best_path[: lv + 1]] += 1
            decisions.append(Decision(task.id, info.id))
            break
        else:
            decisions.append(Decision(task.id, explanation=explanation))


# What top_keys gives for a path not seen yet.
_NO_TOP: tuple[Entry | None, Key] = (None, ())


def _best(lane: list[Entry], path: Path, skip: set[str], held: list[Held]) -> Entry | None:
    """The lane's best current entry not skipped; stale entries are dropped and
    skipped ones held (to be put back after the group)."""
    while lane:
        entry = lane[-1]
        info = entry[INFO]
        if entry[VERSION] != info.version:
            lane.pop()
        elif skip and info.id in skip:
            held.append(Held(path, lane.pop()))
        else:
            return entry
    return None


class Scheduler(Reconciler):
    """Keeps the set of pending tasks and places them in debounced passes; the
    orchestrator's Placer (manager.domain.placer) and the control API's previewer."""

    name = "scheduler"
    debounce = 0.05
    max_delay = 1.0

    def __init__(
        self,
        cache: CacheView,
        store: Committer,
        pipeline: Pipeline | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock)
        self.cache = cache
        self.store = store
        self.pipeline = pipeline or Pipeline()
        self.nodes = NodeInfos()
        # Explanations name the managers' nodes no agent runs (kept by `nodes`).
        self.pipeline.engineless = self.nodes.engineless
        self.pending: set[str] = set()
        self.placed = 0
        self._retry_pending = False
        cache.add_listener(self._on_event)
        cache.add_resync_listener(self.mark_everything)

    def _count_placements(self, placed: int) -> None:
        """Count placements made by a pass or before a first write, and when."""
        if placed:
            self.placed += placed
            PLACEMENTS.inc(placed)
            LAST_PLACEMENT.set_to_current_time()

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
        # One pass, each task decoded once and dropped: the cache keeps tasks
        # serialized, and 150,000 decoded at once would be ~300 MB.
        pending: set[str] = set()

        def noting_pending() -> Iterator[objects_pb2.Task]:
            for t in self.cache.tasks.values():
                if is_pending(t):
                    pending.add(t.id)
                yield t

        self.nodes.rebuild(self.cache.nodes, noting_pending(), self.clock())
        self.pending = pending
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
        placements: list[tuple[NodeInfo, Load]] = []
        waited: list[float] = []  # how long each placed task waited for a node
        for group in groups.values():
            group.sort(key=lambda t: (t.slot, timestamp_seconds(t.meta.created_at)))
            load = task_load(group[0])  # the same for every task of the group
            by_id = {t.id: t for t in group}
            for d in schedule_group(group, self.nodes, self.pipeline, now):
                task = by_id[d.task_id]
                if d.node_id:
                    ops.append(Update(Kind.TASK, d.task_id, _assign(d.node_id), base=task))
                    placements.append((infos[d.node_id], load))
                    waited.append(now - timestamp_seconds(task.meta.created_at))
                elif task.status.err != d.explanation:
                    ops.append(Update(Kind.TASK, d.task_id, _explain(d.explanation), base=task))
        placed = len(placements)
        try:
            result = await self.store.commit(ops)
            await self.cache.wait_for(result.revision)
        finally:
            # The placements were counted into the node infos ahead of the writes so that
            # the ranking saw them; the watch counts what was stored, so take them out.
            for info, load in placements:
                info.apply(load, -1)
        self._count_placements(placed)
        for seconds in waited:
            SCHEDULING_LATENCY.observe(max(0.0, seconds))
        if placed or result.failed:
            self.log.info(
                "scheduled", placed=placed, unplaced=len(ops) - placed, failed=len(result.failed)
            )

    def place_new(
        self, tasks: Sequence[objects_pb2.Task], freed: Iterable[objects_pb2.Task] = ()
    ) -> Callable[[], None]:
        """Place `tasks`, not yet stored, as a pass would: each one placed gets its node
        and ASSIGNED, each other one its explanation. `freed` are tasks shut down in the
        same commit: what they hold counts as free. Returns the function that takes
        these provisional counts out again, to call once the cache has seen the writes
        (or they failed)."""
        infos = self.nodes.infos
        undo: list[tuple[NodeInfo, Load, int]] = []
        for t in freed:
            info = infos.get(t.node_id)
            if info is not None and counts_against_node(t):
                load = task_load(t)
                info.apply(load, -1)
                undo.append((info, load, 1))
        groups: dict[tuple[str, int], list[objects_pb2.Task]] = defaultdict(list)
        for task in tasks:
            if is_pending(task):
                groups[(task.service_id, task.spec_version)].append(task)
        now = self.clock()
        placed = 0
        for group in groups.values():
            group.sort(key=lambda t: t.slot)
            load = task_load(group[0])  # the same for every task of the group
            by_id = {t.id: t for t in group}
            for d in schedule_group(group, self.nodes, self.pipeline, now):
                task = by_id[d.task_id]
                if d.node_id:
                    _assign(d.node_id)(task)
                    undo.append((infos[d.node_id], load, -1))
                    placed += 1
                else:
                    _explain(d.explanation)(task)
        if placed:
            self._count_placements(placed)
            SCHEDULING_LATENCY.observe(0.0)

        def release() -> None:
            for info, load, sign in undo:
                info.apply(load, sign)

        return release

    def target_placement(self, service: objects_pb2.Service) -> dict[str, int]:
        """Tasks per node if the service's replicas were placed afresh now."""
        replicas = service.spec.replicated.replicas
        new_task = TaskMaker(service)
        fresh = [new_task(slot) for slot in range(1, replicas + 1)]
        result = self.preview(fresh, without_service=service.id)
        counts: dict[str, int] = {}
        for d in result.decisions:
            if d.node_id:
                counts[d.node_id] = counts.get(d.node_id, 0) + 1
        return counts

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
        pipeline = Pipeline(self.pipeline.filters, self.nodes.engineless)
        result = place_group(tasks, infos.values(), pipeline, self.clock(), explain_nodes=True)
        if tasks:
            result.rejections += [
                Rejection(info.node, ENGINELESS_REASON) for info in pipeline.passed_over()
            ]
        return result


def _assign(node_id: str) -> Callable[[objects_pb2.Task], objects_pb2.Task | None]:
    def mutate(task: objects_pb2.Task) -> objects_pb2.Task | None:
        if not is_pending(task) or (task.node_id and task.node_id != node_id):
            return None
        task.node_id = node_id
        task.status.state = states.ASSIGNED
        task.status.message = "scheduler assigned task to node"
        task.status.err = ""
        stamp_now(task.status.timestamp)
        return task

    return mutate


def _explain(explanation: str) -> Callable[[objects_pb2.Task], objects_pb2.Task | None]:
    def mutate(task: objects_pb2.Task) -> objects_pb2.Task | None:
        if not is_pending(task) or task.status.err == explanation:
            return None
        task.status.err = explanation
        stamp_now(task.status.timestamp)
        return task

    return mutate
