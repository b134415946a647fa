"""Property test: reservations are never over-committed.

Hypothesis builds a cluster of nodes with random capacities and labels and services
with random CPU and memory reservations, constraints and per-node limits, then throws
random events at it: nodes join, leave, go down, are paused, drained and reactivated,
labels change, services are created, scaled and removed, tasks fail, and the leader's
loops run in any order. The scheduler is the real one (`Scheduler.reconcile`: its
grouping, filters, ranking, the provisional counts of a pass and its mutators) over an
in-memory store that feeds its writes back as cache events, as etcd's watch does;
the orchestrator's plans are the real `plan_service`/`plan_removal`.

After every step, for every node: the CPU and memory reserved by the tasks placed on
it that are wanted running and have not ended is at most the node's capacity; every
task placed in the step went to a ready, active node that satisfies its constraints;
and the scheduler's incremental node counts equal a recount from scratch.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import states
from common.api import objects_pb2, types_pb2
from common.nodes import keeps_tasks
from manager.domain.constraints import parse_all
from manager.orchestrator.orchestrator import _renumber, _shut_down
from manager.orchestrator.replicated import plan_removal, plan_service
from manager.orchestrator.taskreaper import tasks_to_delete
from manager.scheduler.nodeinfo import NodeInfos
from manager.scheduler.scheduler import Scheduler
from manager.store import Kind
from tests.fakes import FakeCache, RecordingCommitter
from tests.unit import factories as f
from tests.unit.factories import NOW

GIB = 1024**3
CPU = 1_000_000_000


def copy(obj: Any) -> Any:
    out = type(obj)()
    out.CopyFrom(obj)
    return out


def occupies(t: objects_pb2.Task) -> bool:
    """Placed, wanted running (or to completion) and not ended."""
    return (
        bool(t.node_id)
        and (t.desired_state <= states.RUNNING or t.desired_state == states.COMPLETE)
        and t.status.state <= states.RUNNING
    )


CONSTRAINTS = [(), ("node.labels.zone==a",), ("node.labels.zone!=a",), ("node.role==worker",)]


@dataclass
class Sim:
    # The cache and store the scheduler reads and writes: every write is delivered to
    # its listeners as an event, in order.
    cache: FakeCache = field(default_factory=FakeCache)
    services: dict[str, objects_pb2.Service] = field(default_factory=dict)
    removed: dict[str, objects_pb2.Service] = field(default_factory=dict)
    now: float = NOW
    ids: itertools.count[int] = field(default_factory=itertools.count)
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)

    def __post_init__(self) -> None:
        self.store = RecordingCommitter(self.cache)
        self.scheduler = Scheduler(self.cache, self.store, clock=lambda: self.now)
        self.scheduler.all_keys()

    # -- the cluster's events --

    def pick_node(self, i: int) -> objects_pb2.Node | None:
        ids = sorted(self.cache.nodes)
        return copy(self.cache.nodes[ids[i % len(ids)]]) if ids else None

    def pick_service(self, i: int) -> objects_pb2.Service | None:
        ids = sorted(self.services)
        return self.services[ids[i % len(ids)]] if ids else None

    def join(self, cpus: int, gib: int, zone: str) -> None:
        node = f.node(f"n{next(self.ids):03d}", labels={"zone": zone} if zone else {})
        node.description.resources.nano_cpus = cpus * CPU // 2
        node.description.resources.memory_bytes = gib * GIB // 2
        node.description.engine.engine_version = "test"
        self.cache.put(node)

    def node_event(self, kind: str, i: int, value: str) -> None:
        node = self.pick_node(i)
        if node is None:
            return
        if kind == "remove":
            self.cache.delete(Kind.NODE, node.id)
            return
        if kind == "availability":
            node.spec.availability = f.AVAILABILITIES[value]
        elif kind == "state":
            node.status.state = f.NODE_STATES[value]
        elif value:
            node.spec.annotations.labels["zone"] = value
        else:
            node.spec.annotations.labels.pop("zone", None)
        self.cache.put(node)

    def create(
        self, replicas: int, cpus: int, gib: int, constraint: int, max_replicas: int
    ) -> None:
        n = next(self.ids)
        svc = f.service(replicas, service_id=f"s{n:03d}", name=f"svc{n}", delay=0.0)
        svc.spec.task.resources.reservations.nano_cpus = cpus * CPU // 4
        svc.spec.task.resources.reservations.memory_bytes = gib * GIB // 4
        svc.spec.task.placement.constraints.extend(CONSTRAINTS[constraint])
        svc.spec.task.placement.max_replicas = max_replicas
        self.services[svc.id] = svc

    def scale(self, i: int, replicas: int) -> None:
        svc = self.pick_service(i)
        if svc is not None:
            self.services[svc.id] = f.changed(svc, replicas=replicas)

    def remove_service(self, i: int) -> None:
        svc = self.pick_service(i)
        if svc is not None:
            self.removed[svc.id] = self.services.pop(svc.id)

    def fail(self, i: int) -> None:
        started = [
            t
            for _, t in sorted(self.cache.tasks.items())
            if occupies(t) and t.status.state >= states.ASSIGNED
        ]
        if started:
            self.report(started[i % len(started)], states.FAILED)

    # -- the leader's loops and the agents --

    def orchestrate(self) -> None:
        def node_ok(node_id: str) -> bool:
            return keeps_tasks(self.cache.nodes.get(node_id))

        for service_id in sorted(set(self.services) | set(self.removed)):
            tasks = list(self.cache.tasks_by_service[service_id].values())
            if service_id in self.services:
                svc = self.services[service_id]
                plan = plan_service(svc, tasks, node_ok, self.now, self.cache.nodes)
            else:
                plan = plan_removal(tasks)
            for s in plan.shutdowns:
                new = _shut_down(s)(copy(self.cache.tasks[s.task_id]))
                if new is not None:
                    self.cache.put(new)
            for r in plan.renumbers:
                new = _renumber(r)(copy(self.cache.tasks[r.task_id]))
                if new is not None:
                    self.cache.put(new)
            for t in plan.creates:
                t.meta.created_at.CopyFrom(f.timestamp(self.now + next(self.ids) * 1e-6))
                self.cache.put(t)

    def schedule(self, share: int) -> None:
        pending = sorted(self.scheduler.pending)
        keys = set(pending[: max(1, len(pending) * share // 4)]) if pending else set()
        before = {tid: t.node_id for tid, t in self.cache.tasks.items()}
        self.loop.run_until_complete(self.scheduler.reconcile(keys))
        for tid, t in self.cache.tasks.items():
            if t.node_id and not before.get(tid):
                node = self.cache.nodes[t.node_id]
                assert node.status.state == types_pb2.NODE_STATE_READY, (tid, node.status)
                assert node.spec.availability == types_pb2.NODE_AVAILABILITY_ACTIVE, tid
                constraints = parse_all(list(t.spec.placement.constraints))
                assert all(c.matches(node) for c in constraints), (tid, node.spec)

    def report(self, t: objects_pb2.Task, state: int) -> None:
        new = copy(t)
        new.status.state = state
        new.status.timestamp.CopyFrom(f.timestamp(self.now))
        self.cache.put(new)

    def agent(self) -> None:
        for _, t in sorted(self.cache.tasks.items()):
            node = self.cache.nodes.get(t.node_id)
            if node is None or node.status.state != types_pb2.NODE_STATE_READY:
                continue
            if states.is_terminal(t.status.state) or t.status.state < states.ASSIGNED:
                continue
            if t.desired_state > states.RUNNING:
                self.report(t, states.SHUTDOWN)
            elif t.status.state < states.RUNNING:
                self.report(t, states.RUNNING)

    def reap(self) -> None:
        for service_id, by_id in list(self.cache.tasks_by_service.items()):
            svc = self.services.get(service_id)
            replicas = svc.spec.replicated.replicas if svc is not None else 0
            for t in tasks_to_delete(list(by_id.values()), self.cache.nodes, 2, replicas):
                self.cache.delete(Kind.TASK, t.id)

    def apply(self, action: tuple[Any, ...]) -> None:
        kind, *args = action
        if kind == "join":
            self.join(*args)
        elif kind in ("availability", "state", "label", "remove"):
            self.node_event(kind, *args)
        elif kind == "create":
            self.create(*args)
        elif kind == "scale":
            self.scale(*args)
        elif kind == "rm-service":
            self.remove_service(*args)
        elif kind == "fail":
            self.fail(*args)
        elif kind == "time":
            self.now += 1.0
        elif kind == "orchestrate":
            self.orchestrate()
        elif kind == "schedule":
            self.schedule(*args)
        elif kind == "agent":
            self.agent()
        elif kind == "reap":
            self.reap()
        elif kind == "round":
            self.orchestrate()
            self.check()
            self.schedule(4)
            self.check()
            self.agent()
        else:  # pragma: no cover
            raise AssertionError(kind)

    # -- the invariants --

    def check(self) -> None:
        cpu: dict[str, int] = defaultdict(int)
        memory: dict[str, int] = defaultdict(int)
        for t in self.cache.tasks.values():
            if occupies(t):
                cpu[t.node_id] += t.spec.resources.reservations.nano_cpus
                memory[t.node_id] += t.spec.resources.reservations.memory_bytes
        for node_id, node in self.cache.nodes.items():
            resources = node.description.resources
            assert cpu[node_id] <= resources.nano_cpus, f"CPU over-committed on {node_id}"
            assert memory[node_id] <= resources.memory_bytes, f"memory over-committed on {node_id}"
        fresh = NodeInfos()
        fresh.rebuild(self.cache.nodes, self.cache.tasks.values(), self.now)
        assert counts(self.scheduler.nodes) == counts(fresh), "incremental node counts drifted"


def counts(infos: NodeInfos) -> dict[str, tuple[int, int, int, dict[str, int]]]:
    return {
        node_id: (i.total, i.reserved_cpu, i.reserved_memory, dict(i.by_service))
        for node_id, i in infos.infos.items()
    }


INDEX = st.integers(0, 15)
JOIN = st.tuples(
    st.just("join"),
    st.integers(0, 6),  # half CPUs
    st.integers(0, 6),  # half GiB
    st.sampled_from(["", "a", "b"]),  # zone label
)
CREATE = st.tuples(
    st.just("create"),
    st.integers(1, 8),  # replicas
    st.integers(0, 6),  # quarter CPUs reserved
    st.integers(0, 6),  # quarter GiB reserved
    st.integers(0, len(CONSTRAINTS) - 1),
    st.integers(0, 2),  # max replicas per node (0: no limit)
)
LOOPS = st.sampled_from(
    [
        ("round",),  # orchestrate, schedule, agents
        ("round",),
        ("round",),
        ("orchestrate",),
        ("schedule", 1),  # a pass over a quarter of the pending tasks
        ("schedule", 4),  # ... over all of them
        ("agent",),
        ("reap",),
        ("time",),
    ]
)
EVENTS = st.one_of(
    JOIN,
    st.tuples(st.just("availability"), INDEX, st.sampled_from(["active", "pause", "drain"])),
    st.tuples(st.just("state"), INDEX, st.sampled_from(["ready", "down"])),
    st.tuples(st.just("label"), INDEX, st.sampled_from(["", "a", "b"])),
    st.tuples(st.just("remove"), INDEX, st.just("")),
    CREATE,
    st.tuples(st.just("scale"), INDEX, st.integers(0, 10)),
    st.tuples(st.just("rm-service"), INDEX),
    st.tuples(st.just("fail"), INDEX),
)
# Loops first: the examples hypothesis starts from and shrinks towards run the loops.
ACTIONS = st.one_of(LOOPS, EVENTS)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    nodes=st.lists(JOIN, min_size=1, max_size=6),
    services=st.lists(CREATE, min_size=1, max_size=4),
    actions=st.lists(ACTIONS, min_size=10, max_size=80),
)
def test_reservations_are_never_over_committed(
    nodes: list[tuple[Any, ...]], services: list[tuple[Any, ...]], actions: list[tuple[Any, ...]]
) -> None:
    sim = Sim()
    try:
        for action in [*nodes, *services, *actions]:
            sim.apply(action)
            sim.check()
        # And once everything has settled.
        for _ in range(5):
            sim.apply(("round",))
            sim.check()
            sim.apply(("reap",))
    finally:
        sim.loop.close()
