"""The scheduler benchmark's workload: hollow nodes (objects only, no agents) and the
pending tasks of a few replicated services, built the way the manager builds them, and
the in-memory measurement of the real placement code over them.

Nodes are ready and active. One in four is small (2 CPUs, 4 GiB), the others have
4 CPUs and 16 GiB; each carries `zone=zone-a|zone-b|zone-c` in turn. Variants:

- `spread`: no reservations, no constraints (ready filter and ranking only);
- `reservations`: every task reserves 0.1 CPU and 256 MiB, so the CPU and memory
  filters run and ranking looks at free shares; at 500 nodes the small nodes fill up
  (16 tasks) and are turned down for the rest of the group;
- `constraint`: `node.labels.zone!=zone-a`, which a third of the nodes fail;
- `preference` (not run by default: slow, see docs/performance.md):
  `--placement-pref spread=node.labels.zone`.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from common import states
from common.api import objects_pb2, specs_pb2, types_pb2
from common.ids import new_id
from manager.domain.tasks import new_task
from manager.scheduler.nodeinfo import NodeInfos
from manager.scheduler.pipeline import Pipeline
from manager.scheduler.scheduler import schedule_group

# Run by default, and every variant there is.
VARIANTS = ("spread", "reservations", "constraint")
ALL_VARIANTS = (*VARIANTS, "preference")
GIB = 1 << 30
MIB = 1 << 20
CPU = 1_000_000_000
ZONES = ("zone-a", "zone-b", "zone-c")
CONSTRAINT = "node.labels.zone!=zone-a"
RESERVE_CPU = CPU // 10
RESERVE_MEMORY = 256 * MIB


def hollow_node(index: int) -> objects_pb2.Node:
    """A ready, active worker node as the dispatcher would have stored it."""
    node = objects_pb2.Node(id=new_id(), role=types_pb2.NODE_ROLE_WORKER)
    node.spec.availability = types_pb2.NODE_AVAILABILITY_ACTIVE
    node.spec.desired_role = types_pb2.NODE_ROLE_WORKER
    node.spec.annotations.labels["zone"] = ZONES[index % len(ZONES)]
    desc = node.description
    desc.hostname = f"hollow-{index:05d}"
    desc.platform.os = "linux"
    desc.platform.architecture = "x86_64"
    small = index % 4 == 0
    desc.resources.nano_cpus = (2 if small else 4) * CPU
    desc.resources.memory_bytes = (4 if small else 16) * GIB
    desc.engine.engine_version = "hollow"
    desc.engine.labels["swarmlet.hollow"] = "true"
    node.status.state = types_pb2.NODE_STATE_READY
    node.status.addr = f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}"
    node.status.message = "hollow node (scheduler benchmark)"
    return node


def hollow_nodes(count: int) -> list[objects_pb2.Node]:
    return [hollow_node(i) for i in range(count)]


def service(index: int, replicas: int, variant: str) -> objects_pb2.Service:
    svc = objects_pb2.Service(id=new_id(), spec_version=1)
    spec = svc.spec
    spec.annotations.name = f"bench-{variant}-{index:02d}"
    spec.replicated.replicas = replicas
    spec.task.container.image = "busybox:latest"
    spec.task.restart.condition = specs_pb2.RESTART_CONDITION_ANY
    if variant == "reservations":
        spec.task.resources.reservations.nano_cpus = RESERVE_CPU
        spec.task.resources.reservations.memory_bytes = RESERVE_MEMORY
    elif variant == "constraint":
        spec.task.placement.constraints.append(CONSTRAINT)
    elif variant == "preference":
        spec.task.placement.preferences.add().spread.spread_descriptor = "node.labels.zone"
    elif variant != "spread":
        raise ValueError(f"unknown variant {variant!r}")
    return svc


@dataclass
class Workload:
    """`tasks` pending tasks of `len(services)` services, grouped per service (slot order,
    as the scheduler's pass sorts them)."""

    variant: str
    services: list[objects_pb2.Service]
    groups: list[list[objects_pb2.Task]]

    @property
    def tasks(self) -> list[objects_pb2.Task]:
        return [t for g in self.groups for t in g]

    @property
    def count(self) -> int:
        return sum(len(g) for g in self.groups)


def workload(variant: str, tasks: int, services: int) -> Workload:
    """`tasks` PENDING tasks spread evenly over `services` services (new_task, as the
    orchestrator makes them)."""
    per, extra = divmod(tasks, services)
    svcs = [service(i, per + (1 if i < extra else 0), variant) for i in range(services)]
    groups = [
        [new_task(s, slot) for slot in range(1, s.spec.replicated.replicas + 1)]
        for s in svcs
        if s.spec.replicated.replicas
    ]
    for group in groups:
        for t in group:
            assert t.status.state == states.PENDING
    return Workload(variant, [s for s in svcs if s.spec.replicated.replicas], groups)


@dataclass
class MemorySample:
    variant: str
    nodes: int
    tasks: int
    seconds: float
    # CPU time of the pass (this process): what the machine's other load disturbs least.
    cpu_seconds: float
    placed: int
    unplaced: int
    # Tasks per node among nodes that got any, and nodes whose reservations exceed
    # their capacity (must be 0).
    per_node_min: int
    per_node_max: int
    nodes_used: int
    overcommitted: int
    explanations: list[str] = field(default_factory=list)
    timed: bool = True

    @property
    def rate(self) -> float:
        return (self.placed + self.unplaced) / self.seconds


def place_in_memory(
    nodes: Sequence[objects_pb2.Node], work: Workload, *, timed: bool = True
) -> MemorySample:
    """Place every group of `work` on fresh NodeInfos of `nodes`, as one scheduler pass
    does (one Pipeline of the default filters, groups one after the other, the node
    infos updated as tasks land); only the schedule_group calls are timed, in wall-clock
    and in CPU time."""
    now = time.time()
    infos = NodeInfos()
    infos.rebuild({n.id: n for n in nodes}, [], now)
    pipeline = Pipeline()
    gc.collect()
    decided = []
    start, cpu_start = time.perf_counter(), time.process_time()
    for group in work.groups:
        decided.extend(schedule_group(group, infos, pipeline, now))
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    per_node = Counter(d.node_id for d in decided if d.node_id)
    explanations = sorted({d.explanation for d in decided if not d.node_id})
    overcommitted = sum(1 for i in infos.infos.values() if i.free_cpu < 0 or i.free_memory < 0)
    return MemorySample(
        variant=work.variant,
        nodes=len(nodes),
        tasks=work.count,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        placed=sum(per_node.values()),
        unplaced=len(decided) - sum(per_node.values()),
        per_node_min=min(per_node.values(), default=0),
        per_node_max=max(per_node.values(), default=0),
        nodes_used=len(per_node),
        overcommitted=overcommitted,
        explanations=explanations[:3],
        timed=timed,
    )
