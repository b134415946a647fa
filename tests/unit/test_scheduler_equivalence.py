"""The scheduler's placements against a reference: the straightforward implementation
it replaced (every group filters and ranks every node), kept here verbatim in substance
and reading the protobuf objects directly.

Hypothesis builds small clusters (ready, down, paused and drained nodes, labels,
capacities, other services' load, host ports, recent failures) and runs groups of
pending tasks with every ranking rule and filter (spread, reservations, binpack,
constraints, platforms, host ports, max replicas per node, spread preferences, tasks
bound to a node), with node and task changes between the groups. The real
`schedule_group` runs on one NodeInfos kept incrementally the whole time (its pools
and indexes carried across groups and changes) and on a plain list of infos; the
reference runs on infos rebuilt from the objects. Decisions and explanations must be
identical, and so must the counts.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Unpack

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from common import states
from common.api import objects_pb2, specs_pb2, types_pb2
from manager.domain.constraints import parse_all, spread_value
from manager.domain.placer import Decision
from manager.domain.platforms import normalise_arch
from manager.scheduler.nodeinfo import (
    FAILURE_THRESHOLD,
    NodeInfo,
    NodeInfos,
    counts_against_node,
    host_ports,
)
from manager.scheduler.pipeline import Pipeline
from manager.scheduler.scheduler import Scheduler, _assign, schedule_group
from tests.fakes import fake_store
from tests.unit import factories as f
from tests.unit.factories import NOW

CPU = 1_000_000_000
GIB = 1 << 30

# ---- the reference ---------------------------------------------------------------------


def _nodes(count: int) -> str:
    return "1 node" if count == 1 else f"{count} nodes"


def _free_cpu(info: NodeInfo) -> int:
    return info.node.description.resources.nano_cpus - info.reserved_cpu


def _free_memory(info: NodeInfo) -> int:
    return info.node.description.resources.memory_bytes - info.reserved_memory


@dataclass
class RefFilter:
    name: str
    what: str

    def enabled(self, task: objects_pb2.Task) -> bool:
        p, r = task.spec.placement, task.spec.resources.reservations
        return {
            "ready": True,
            "cpu": r.nano_cpus > 0,
            "memory": r.memory_bytes > 0,
            "constraints": len(p.constraints) > 0,
            "platform": len(p.platforms) > 0,
            "hostports": bool(host_ports(task)),
            "maxreplicas": p.max_replicas > 0,
        }[self.name]

    def check(self, task: objects_pb2.Task, info: NodeInfo) -> bool:
        node = info.node
        if self.name == "ready":
            return (
                node.status.state == types_pb2.NODE_STATE_READY
                and node.spec.availability == types_pb2.NODE_AVAILABILITY_ACTIVE
            )
        if self.name == "cpu":
            return _free_cpu(info) >= task.spec.resources.reservations.nano_cpus
        if self.name == "memory":
            return _free_memory(info) >= task.spec.resources.reservations.memory_bytes
        if self.name == "constraints":
            return all(c.matches(node) for c in parse_all(list(task.spec.placement.constraints)))
        if self.name == "platform":
            os_ = node.description.platform.os.lower()
            arch = normalise_arch(node.description.platform.architecture)
            return any(
                (not p.os or p.os.lower() == os_)
                and (not p.architecture or normalise_arch(p.architecture) == arch)
                for p in task.spec.placement.platforms
            )
        if self.name == "hostports":
            return not any(hp in info.ports for hp in host_ports(task))
        assert self.name == "maxreplicas"
        return info.by_service[task.service_id] < task.spec.placement.max_replicas

    def explain(self, count: int) -> str:
        if self.name == "ready":
            return f"{_nodes(count)} not available for new tasks"
        return f"{self.what} on {_nodes(count)}"


REF_FILTERS = [
    RefFilter("ready", ""),
    RefFilter("cpu", "insufficient CPU"),
    RefFilter("memory", "insufficient memory"),
    RefFilter("constraints", "scheduling constraints not satisfied"),
    RefFilter("platform", "unsupported platform"),
    RefFilter("hostports", "host-mode port already in use"),
    RefFilter("maxreplicas", "max replicas per node reached"),
]


@dataclass
class RefPipeline:
    failures: Counter[str] = field(default_factory=Counter)
    active: list[RefFilter] = field(default_factory=list)

    def set_task(self, task: objects_pb2.Task) -> None:
        self.active = [x for x in REF_FILTERS if x.enabled(task)]
        self.failures = Counter()

    def first_failure(self, task: objects_pb2.Task, info: NodeInfo) -> RefFilter | None:
        return next((x for x in self.active if not x.check(task, info)), None)

    def accepts(self, task: objects_pb2.Task, info: NodeInfo) -> bool:
        failed = self.first_failure(task, info)
        if failed is not None:
            self.failures[failed.name] += 1
        return failed is None

    def explain(self) -> str:
        reasons = [x.explain(self.failures[x.name]) for x in self.active if self.failures[x.name]]
        if not reasons:
            return "no suitable node (no nodes in the cluster)"
        return f"no suitable node ({'; '.join(reasons)})"


def ref_free_share(info: NodeInfo, task: objects_pb2.Task) -> float:
    wanted = task.spec.resources.reservations
    res = info.node.description.resources
    shares = []
    if wanted.nano_cpus and res.nano_cpus:
        shares.append(_free_cpu(info) / res.nano_cpus)
    if wanted.memory_bytes and res.memory_bytes:
        shares.append(_free_memory(info) / res.memory_bytes)
    return min(shares) if shares else 1.0


def ref_rank_key(task: objects_pb2.Task, info: NodeInfo, now: float) -> tuple[object, ...]:
    sid = task.service_id
    failing = info.recent_failures(sid, now) >= FAILURE_THRESHOLD
    r = task.spec.resources.reservations
    if task.spec.placement.strategy == specs_pb2.PLACEMENT_STRATEGY_BINPACK:
        return (
            failing,
            ref_free_share(info, task),
            -info.by_service[sid],
            -info.total,
            info.node.id,
        )
    if r.nano_cpus or r.memory_bytes:
        return (
            failing,
            info.by_service[sid],
            -ref_free_share(info, task),
            info.total,
            info.node.id,
        )
    return (failing, info.by_service[sid], info.total, info.node.id)


def ref_schedule_group(
    tasks: Sequence[objects_pb2.Task], all_infos: list[NodeInfo], now: float
) -> list[Decision]:
    decisions: list[Decision] = []
    if not tasks:
        return decisions
    pipeline = RefPipeline()
    first = tasks[0]
    pipeline.set_task(first)
    eligible = [i for i in all_infos if pipeline.accepts(first, i)]
    by_id = {i.node.id: i for i in all_infos}
    free = []
    for task in tasks:
        if not task.node_id:
            free.append(task)
            continue
        bound = by_id.get(task.node_id)
        if bound is not None and pipeline.first_failure(task, bound) is None:
            bound.add(task)
            decisions.append(Decision(task.id, task.node_id))
        else:
            one = RefPipeline()
            one.set_task(task)
            if bound is not None:
                one.accepts(task, bound)
            decisions.append(Decision(task.id, explanation=one.explain()))
    if not free:
        return decisions
    descriptors = [
        p.spread.spread_descriptor
        for p in first.spec.placement.preferences
        if p.spread.spread_descriptor
    ]
    if descriptors:
        sid = first.service_id
        levels = range(len(descriptors))
        paths = {i.node.id: tuple(spread_value(i.node, d) for d in descriptors) for i in all_infos}
        counts: list[Counter[tuple[str, ...]]] = [Counter() for _ in levels]
        for info in all_infos:
            for lv in levels:
                counts[lv][paths[info.node.id][: lv + 1]] += info.by_service[sid]
        candidates = list(eligible)
        for task in free:
            best: tuple[tuple[object, ...], NodeInfo] | None = None
            for info in list(candidates):
                if pipeline.first_failure(task, info) is not None:
                    pipeline.accepts(task, info)
                    candidates.remove(info)
                    continue
                path = paths[info.node.id]
                key = (
                    tuple(counts[lv][path[: lv + 1]] for lv in levels),
                    ref_rank_key(task, info, now),
                )
                if best is None or key < best[0]:
                    best = (key, info)
            if best is None:
                decisions.append(Decision(task.id, explanation=pipeline.explain()))
                continue
            info = best[1]
            info.add(task)
            for lv in levels:
                counts[lv][paths[info.node.id][: lv + 1]] += 1
            decisions.append(Decision(task.id, info.node.id))
        return decisions
    heap = [(ref_rank_key(first, i, now), i) for i in eligible]
    heapq.heapify(heap)
    for task in free:
        while heap:
            _, info = heapq.heappop(heap)
            if pipeline.first_failure(task, info) is not None:
                pipeline.accepts(task, info)
                continue
            info.add(task)
            decisions.append(Decision(task.id, info.node.id))
            heapq.heappush(heap, (ref_rank_key(task, info, now), info))
            break
        else:
            decisions.append(Decision(task.id, explanation=pipeline.explain()))
    return decisions


# ---- the cluster ---------------------------------------------------------------------------

NODE_IDS = [f"n{i}" for i in range(7)]
CONSTRAINTS = [
    "node.labels.zone==a",
    "node.labels.zone!=a",
    "node.labels.rack==r1",
    "node.hostname!=host-n3",
    "engine.labels.disk==ssd",
    "node.role==worker",
]


@st.composite
def node_objects(draw: st.DrawFn, node_id: str) -> objects_pb2.Node:
    labels = {}
    zone = draw(st.sampled_from(["a", "b", "c", None]))
    if zone:
        labels["zone"] = zone
    rack = draw(st.sampled_from(["r1", "r2", None]))
    if rack:
        labels["rack"] = rack
    n = f.node(
        node_id,
        state=draw(st.sampled_from(["ready"] * 5 + ["down"])),
        availability=draw(st.sampled_from(["active"] * 5 + ["pause", "drain"])),
        labels=labels,
    )
    n.description.resources.nano_cpus = draw(st.sampled_from([0, 1, 2, 2, 4])) * CPU
    n.description.resources.memory_bytes = draw(st.sampled_from([0, 1, 2, 8, 8])) * GIB
    n.description.platform.os = "linux"
    n.description.platform.architecture = draw(st.sampled_from(["x86_64", "aarch64"]))
    if draw(st.booleans()):
        n.description.engine.labels["disk"] = "ssd"
    return n


@st.composite
def service_objects(draw: st.DrawFn, service_id: str) -> objects_pb2.Service:
    """Services often share what decides their pool (the static filters, the ranking's
    kind, the spread preferences) and differ in the rest (amounts reserved, host ports,
    max replicas), so that pools are shared between services as well as between groups."""
    ports = [(80, 8080)] if draw(st.integers(0, 3)) == 0 else []
    svc = f.service(0, service_id=service_id, name=service_id, ports=ports)
    spec = svc.spec.task
    res = spec.resources.reservations
    if draw(st.booleans()):
        res.nano_cpus = draw(st.sampled_from([CPU // 2, CPU, 2 * CPU]))
    if draw(st.integers(0, 2)) == 0:
        res.memory_bytes = draw(st.sampled_from([GIB // 2, GIB, 4 * GIB]))
    placement = spec.placement
    if draw(st.integers(0, 3)) == 0:
        placement.strategy = specs_pb2.PLACEMENT_STRATEGY_BINPACK
    if draw(st.integers(0, 2)) == 0:
        for c in draw(st.lists(st.sampled_from(CONSTRAINTS), min_size=1, max_size=2, unique=True)):
            placement.constraints.append(c)
    if draw(st.integers(0, 5)) == 0:
        placement.platforms.add(os="linux", architecture="amd64")
    placement.max_replicas = draw(st.sampled_from([0, 0, 0, 1, 2]))
    if draw(st.integers(0, 2)) == 0:
        for d in draw(
            st.sampled_from([["node.labels.zone"], ["node.labels.zone", "node.labels.rack"]])
        ):
            placement.preferences.add().spread.spread_descriptor = d
    return svc


@dataclass
class Cluster:
    nodes: dict[str, objects_pb2.Node]
    tasks: dict[str, objects_pb2.Task]
    table: NodeInfos

    def put_task(self, new: objects_pb2.Task, now: float = NOW) -> None:
        self.table.task_changed(self.tasks.get(new.id), new, now)
        self.tasks[new.id] = new

    def reference_infos(self) -> list[NodeInfo]:
        fresh = NodeInfos()
        fresh.rebuild(self.nodes, self.tasks.values(), NOW)
        return [i.copy() for i in fresh.infos.values()]


def snapshot(infos: list[NodeInfo]) -> dict[str, tuple[int, dict[str, int], int, int]]:
    return {i.id: (i.total, dict(i.by_service), i.reserved_cpu, i.reserved_memory) for i in infos}


SERVICES = ["s1", "s2", "s3"]


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_schedule_group_places_as_the_reference(data: st.DataObject) -> None:
    count = data.draw(st.integers(0, len(NODE_IDS)), label="nodes")
    nodes = {i: data.draw(node_objects(i), label=i) for i in NODE_IDS[:count]}
    services = {s: data.draw(service_objects(s), label=s) for s in SERVICES}
    tasks: dict[str, objects_pb2.Task] = {}
    # Tasks only on nodes that exist: a task on an unknown node is not counted, also not
    # when the node joins later (the incremental counts and a rebuild would differ).
    on = st.sampled_from(sorted(nodes)) if nodes else st.nothing()
    for sid, node_id, failed in data.draw(
        st.lists(st.tuples(st.sampled_from(SERVICES), on, st.booleans()), max_size=12)
        if nodes
        else st.just([]),
        label="existing",
    ):
        t = f.task(services[sid], 1, node=node_id)
        if failed:
            t.status.state = states.FAILED
            t.status.timestamp.CopyFrom(f.timestamp(NOW - 10))
        tasks[t.id] = t
    # Enough failures of one service on one node to rank it last (or just short of it).
    sid, node_id, failures = data.draw(
        st.tuples(st.sampled_from(SERVICES), st.sampled_from(NODE_IDS), st.integers(0, 6)),
        label="failures",
    )
    for k in range(failures if node_id in nodes else 0):
        t = f.task(services[sid], 1, node=node_id, state=states.FAILED)
        t.status.timestamp.CopyFrom(f.timestamp(NOW - 100 + k))
        tasks[t.id] = t
    table = NodeInfos()
    table.rebuild(nodes, tasks.values(), NOW)
    cluster = Cluster(nodes, tasks, table)
    slot = 100
    seen = {t.node_id for t in tasks.values()} | set(nodes)
    removed: set[str] = set()
    for _ in range(data.draw(st.integers(1, 10), label="steps")):
        step = data.draw(st.sampled_from(["group", "group", "group", "node", "node", "end"]))
        if step == "node":
            # A node changes, leaves for good, or joins (one never seen: its tasks and
            # failures would be counted by a rebuild only).
            node_id = data.draw(st.sampled_from(NODE_IDS))
            if node_id in removed or (node_id not in nodes and node_id in seen):
                continue
            if node_id in nodes and data.draw(st.booleans()):
                table.node_changed(nodes.pop(node_id), None)
                removed.add(node_id)
            else:
                new = data.draw(node_objects(node_id))
                table.node_changed(nodes.get(node_id), new)
                nodes[node_id] = new
            continue
        if step == "end":
            counted = sorted(t.id for t in tasks.values() if counts_against_node(t))
            if counted:
                t = f.copy(tasks[data.draw(st.sampled_from(counted))])
                t.status.state = data.draw(st.sampled_from([states.COMPLETE, states.FAILED]))
                t.status.timestamp.CopyFrom(f.timestamp(NOW))
                cluster.put_task(t)
            continue
        svc = services[data.draw(st.sampled_from(SERVICES))]
        n = data.draw(st.integers(0, 12), label="tasks")
        # Bound to a node that exists, or to one that never joins.
        bound = data.draw(st.sampled_from([None, None, None, "n9", *sorted(nodes)[:2]]))
        group = []
        for _ in range(n):
            slot += 1
            group.append(
                f.task(svc, slot, state=states.PENDING, node=bound or "", created_at=NOW + slot)
            )
        reference = cluster.reference_infos()
        listed = cluster.reference_infos()
        expected = ref_schedule_group(group, reference, NOW)
        assert schedule_group(group, listed, Pipeline(), NOW) == expected
        assert snapshot(listed) == snapshot(reference)
        got = schedule_group(group, table, Pipeline(), NOW)
        assert got == expected
        live = sorted(table.infos.values(), key=lambda i: i.id)
        assert snapshot(live) == snapshot(sorted(reference, key=lambda i: i.id))
        # As the scheduler does: the provisional counts out, the writes counted back.
        for d in got:
            if d.node_id:
                table.infos[d.node_id].remove(next(t for t in group if t.id == d.task_id))
        for t in group:
            d = next(d for d in got if d.task_id == t.id)
            if d.node_id:
                assigned = _assign(d.node_id)(f.copy(t))
                assert assigned is not None
                cluster.put_task(assigned)
            else:
                cluster.put_task(t)


# ---- the pools' upkeep, case by case ------------------------------------------------------


def _node(node_id: str, cpus: int = 4, **kw: Unpack[f.NodeArgs]) -> objects_pb2.Node:
    n = f.node(node_id, **kw)
    n.description.resources.nano_cpus = cpus * CPU
    n.description.resources.memory_bytes = 8 * GIB
    return n


def _service(service_id: str, cpus: float = 0, port: int = 0) -> objects_pb2.Service:
    svc = f.service(0, service_id=service_id, name=service_id, ports=[(80, port)] if port else [])
    svc.spec.task.resources.reservations.nano_cpus = int(cpus * CPU)
    return svc


def _place(table: NodeInfos, svc: objects_pb2.Service, n: int) -> list[str]:
    group = [f.task(svc, s, state=states.PENDING) for s in range(1, n + 1)]
    return [d.node_id or d.explanation for d in schedule_group(group, table, Pipeline(), NOW)]


def test_a_node_turned_down_by_one_group_is_a_candidate_for_the_next() -> None:
    nodes = f.nodes(_node("n1", cpus=1), _node("n2", cpus=4))
    table = NodeInfos()
    table.rebuild(nodes, [], NOW)
    # n1 comes first (same free share, same totals, lower id) but has too little CPU.
    assert _place(table, _service("big", cpus=2), 1) == ["n2"]
    # The same pool (CPU reserved, no constraints): n1 has the larger free share now.
    assert _place(table, _service("small", cpus=0.5), 1) == ["n1"]


def test_a_node_turned_down_for_a_port_is_a_candidate_for_the_next_group() -> None:
    nodes = f.nodes(_node("n1"), _node("n2"))
    other = _service("other", port=8080)
    table = NodeInfos()
    table.rebuild(nodes, [f.task(other, 1, node="n1")], NOW)
    assert _place(table, _service("web", port=8080), 1) == ["n2"]
    assert _place(table, _service("db"), 2) == ["n1", "n2"]


def test_node_changes_reach_the_pools() -> None:
    nodes = f.nodes(_node("n1"), _node("n2"), _node("n3"))
    table = NodeInfos()
    table.rebuild(nodes, [], NOW)
    assert _place(table, _service("a"), 3) == ["n1", "n2", "n3"]
    table.node_changed(nodes["n1"], _node("n1", availability="drain"))
    table.node_changed(nodes["n2"], None)
    assert _place(table, _service("b"), 2) == ["n3", "n3"]
    table.node_changed(None, _node("n4"))
    table.node_changed(_node("n1", availability="drain"), _node("n1"))
    assert _place(table, _service("c"), 2) == ["n4", "n1"]


def test_label_changes_move_nodes_between_spread_paths() -> None:
    nodes = f.nodes(_node("n1", labels={"zone": "a"}), _node("n2", labels={"zone": "b"}))
    table = NodeInfos()
    table.rebuild(nodes, [], NOW)
    svc = _service("web")
    svc.spec.task.placement.preferences.add().spread.spread_descriptor = "node.labels.zone"
    assert _place(table, svc, 2) == ["n1", "n2"]
    table.node_changed(nodes["n2"], _node("n2", labels={"zone": "a"}))
    table.node_changed(None, _node("n3", labels={"zone": "c"}))
    # Zone a has 2 of the service's tasks now, zone c none.
    assert _place(table, svc, 2) == ["n3", "n3"]


def test_a_removed_node_is_never_drawn() -> None:
    nodes = f.nodes(_node("n1"), _node("n2"), _node("n3"))
    table = NodeInfos()
    table.rebuild(nodes, [], NOW)
    assert _place(table, _service("a"), 1) == ["n1"]
    # n2 is unchanged since the pool was filled: its entry there is current.
    table.node_changed(nodes["n2"], None)
    assert _place(table, _service("b"), 2) == ["n3", "n1"]


def test_a_node_turned_down_in_a_spread_path_is_a_candidate_for_the_next_group() -> None:
    nodes = f.nodes(
        _node("n1", cpus=1, labels={"zone": "a"}), _node("n2", cpus=4, labels={"zone": "b"})
    )
    table = NodeInfos()
    table.rebuild(nodes, [], NOW)
    big, small = _service("big", cpus=2), _service("small", cpus=0.5)
    for svc in (big, small):
        svc.spec.task.placement.preferences.add().spread.spread_descriptor = "node.labels.zone"
    assert _place(table, big, 1) == ["n2"]
    assert _place(table, small, 1) == ["n1"]


def test_preview_places_as_a_pass_would_and_leaves_the_infos_alone() -> None:
    nodes = f.nodes(_node("n1"), _node("n2", cpus=1), _node("n3", availability="drain"))
    web = _service("web", cpus=0.5)
    running = [f.task(web, 1, node="n1"), f.task(web, 2, node="n1")]
    scheduler = Scheduler(*fake_store(*running), clock=lambda: NOW)
    scheduler.nodes.rebuild(nodes, running, NOW)
    _place(scheduler.nodes, _service("other", cpus=0.5), 1)  # a pool exists
    before = snapshot(list(scheduler.nodes.infos.values()))
    lanes = {k: list(v) for k, v in next(iter(scheduler.nodes._pools.values())).lanes.items()}
    pending = [f.task(web, s, state=states.PENDING) for s in (3, 4, 5)]
    preview = scheduler.preview(pending)
    # n2 (1 CPU, 0.5 held by "other") runs no web task: first; then it is full.
    assert [d.node_id for d in preview.decisions] == ["n2", "n1", "n1"]
    assert [(r.node.id, r.reason) for r in preview.rejections] == [
        ("n3", "not available for new tasks (down, paused or drained)")
    ]
    # Replacing the service's tasks (a dry-run update): n1 is free of them.
    replaced = scheduler.preview(pending, without_service="web")
    assert [d.node_id for d in replaced.decisions] == ["n1", "n2", "n1"]
    assert snapshot(list(scheduler.nodes.infos.values())) == before
    assert next(iter(scheduler.nodes._pools.values())).lanes == lanes
    # And the same placements for real.
    real = schedule_group(pending, scheduler.nodes, Pipeline(), NOW)
    assert real == preview.decisions


def test_place_new_counts_its_placements_and_when_it_made_them() -> None:
    nodes = f.nodes(_node("n1"), _node("n2"))
    web = _service("web")
    scheduler = Scheduler(*fake_store(), clock=lambda: NOW)
    scheduler.nodes.rebuild(nodes, [], NOW)
    before = REGISTRY.get_sample_value("swarmlet_placements_total") or 0.0
    started = time.time()
    release = scheduler.place_new([f.task(web, s, state=states.PENDING) for s in (1, 2, 3)])
    release()
    assert REGISTRY.get_sample_value("swarmlet_placements_total") == before + 3
    last = REGISTRY.get_sample_value("swarmlet_last_placement_timestamp_seconds")
    assert last is not None
    assert started <= last <= time.time()
