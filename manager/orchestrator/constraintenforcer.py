"""The constraint enforcer: moves tasks off a node that no longer fits them.

The scheduler checks placement constraints and resources once, when it places a task.
Nodes change afterwards: an operator removes the label a service is constrained to, or
an agent comes back advertising less memory or fewer CPUs than its tasks reserve. This
reconciler (leader only, like SwarmKit's constraintenforcer) looks at a node whenever
such a thing changes and shuts down the tasks that no longer fit it: desired state
SHUTDOWN, with the reason in `status.err` ("constraint no longer satisfied:
node.labels.zone==east"). The orchestrator sees the desired state change and fills the
slot again at once (not counted as a restart), and the scheduler places the new task
on a node that fits.

What it leaves to others:
- drained, down and removed nodes: the orchestrator's slot rules (`plan.settle_slot`)
  already remove their tasks;
- paused nodes: as in SwarmKit, a paused node keeps its tasks as they are;
- global services: their planner (`global_mode.py`) already takes tasks off nodes that
  no longer match; it does not check resources, so evicting a global task for memory
  would only see it made again on the same node.

Resources are checked the way SwarmKit does: the node's tasks, oldest first, each
taking its reservation from what the node advertises; a task that does not fit in what
is left goes. A node that advertises no figure for a resource (0) is not checked for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from common import states
from common.api import objects_pb2, types_pb2
from common.timeutil import timestamp_seconds
from manager.domain.constraints import Constraint, parse_all
from manager.reconciler import Reconciler
from manager.store import Event, Kind, Update
from manager.store.views import CacheView, Committer

# Give the rest of the manager a turn after this much work in one go (a start-up pass
# looks at every node of the cluster, and each of its tasks is decoded).
_SLICE_SECONDS = 0.02

_GLOBAL_MODES = frozenset(("global", "global_job"))


@dataclass(frozen=True)
class Eviction:
    """Shut `task_id` down; `reason` says why, for `service ps`."""

    task_id: str
    reason: str


@lru_cache(maxsize=1024)
def _constraints(exprs: tuple[str, ...]) -> list[Constraint]:
    # Stored specs were validated on the way in; a constraint that no longer parses
    # (say, after a change of the grammar) must not stop the enforcer: it is ignored,
    # as the scheduler would have refused the task in the first place.
    try:
        return parse_all(exprs)
    except ValueError:
        return []


def _occupies(task: objects_pb2.Task, node_id: str) -> bool:
    """The task is on the node, wanted there, and has not ended."""
    return (
        task.node_id == node_id
        and states.is_runnable(task.desired_state)
        and not states.is_terminal(task.status.state)
    )


def _mib(size: int) -> str:
    return f"{size / 1024**2:.0f} MiB"


def _cpus(nano: int) -> str:
    return f"{nano / 1e9:g}"


def node_checked(node: objects_pb2.Node | None) -> bool:
    """Whether the enforcer looks at this node's tasks at all (see the module's text)."""
    return node is not None and node.spec.availability == types_pb2.NODE_AVAILABILITY_ACTIVE


def noncompliant(
    node: objects_pb2.Node,
    tasks: Iterable[objects_pb2.Task],
    skip: Callable[[objects_pb2.Task], bool] = lambda t: False,
) -> list[Eviction]:
    """The tasks on `node` that no longer fit it, and why (pure: tested without etcd).

    `skip` names tasks left alone (those of global services)."""
    mine = [t for t in tasks if _occupies(t, node.id) and not skip(t)]
    # Keep the tasks that have run longest: the newest give way first.
    mine.sort(key=lambda t: (timestamp_seconds(t.meta.created_at), t.id))
    capacity = node.description.resources
    free_memory, free_cpu = capacity.memory_bytes, capacity.nano_cpus
    out: list[Eviction] = []
    for t in mine:
        broken = next(
            (c for c in _constraints(tuple(t.spec.placement.constraints)) if not c.matches(node)),
            None,
        )
        if broken is not None:
            out.append(
                Eviction(
                    t.id,
                    f"constraint no longer satisfied: {broken.key}"
                    f"{'==' if broken.equal else '!='}{broken.value}",
                )
            )
            continue
        wanted = t.spec.resources.reservations
        if capacity.memory_bytes and wanted.memory_bytes > free_memory:
            out.append(
                Eviction(
                    t.id,
                    f"insufficient memory on the node: it advertises "
                    f"{_mib(capacity.memory_bytes)}, {_mib(capacity.memory_bytes - free_memory)}"
                    f" of it reserved by older tasks, and this task reserves "
                    f"{_mib(wanted.memory_bytes)}",
                )
            )
            continue
        if capacity.nano_cpus and wanted.nano_cpus > free_cpu:
            out.append(
                Eviction(
                    t.id,
                    f"insufficient CPU on the node: it advertises {_cpus(capacity.nano_cpus)}"
                    f" CPUs, {_cpus(capacity.nano_cpus - free_cpu)} of them reserved by older"
                    f" tasks, and this task reserves {_cpus(wanted.nano_cpus)}",
                )
            )
            continue
        free_memory -= wanted.memory_bytes
        free_cpu -= wanted.nano_cpus
    return out


def fit_changed(old: objects_pb2.Node | None, new: objects_pb2.Node | None) -> bool:
    """Whether a node change can make a task that fitted it fit no longer: its labels,
    role, availability (a paused node made active again is looked at afresh), address,
    or what it describes of itself (hostname, platform, engine labels, resources)."""
    if new is None:
        return False  # gone: the orchestrator replaces its tasks
    if old is None:
        return True
    return (
        old.spec != new.spec
        or old.role != new.role
        or old.status.addr != new.status.addr
        or old.description != new.description
    )


def _shut_down(node_id: str, reason: str) -> Callable[[objects_pb2.Task], objects_pb2.Task | None]:
    def mutate(task: objects_pb2.Task) -> objects_pb2.Task | None:
        if not _occupies(task, node_id):
            return None  # moved on since the pass read it
        task.desired_state = states.SHUTDOWN
        task.status.err = reason
        return task

    return mutate


class ConstraintEnforcer(Reconciler):
    """Keyed by node id: a node whose fit changed is checked against its tasks."""

    name = "constraintenforcer"
    debounce = 0.05
    max_delay = 1.0

    def __init__(self, cache: CacheView, store: Committer, clock: Callable[[], float] = time.time):
        super().__init__(clock)
        self.cache = cache
        self.store = store
        cache.add_listener(self._on_event)
        cache.add_resync_listener(self.mark_everything)
        self.evicted = 0

    def _on_event(self, ev: Event) -> None:
        if ev.kind is Kind.NODE and fit_changed(ev.old, ev.new):
            self.mark(ev.id)

    def all_keys(self) -> Iterable[str]:
        return list(self.cache.nodes)

    def _is_global(
        self, services: Mapping[str, objects_pb2.Service]
    ) -> Callable[[objects_pb2.Task], bool]:
        def skip(task: objects_pb2.Task) -> bool:
            service = services.get(task.service_id)
            if service is None:
                return task.slot == 0  # global tasks have no slot number
            return service.spec.WhichOneof("mode") in _GLOBAL_MODES

        return skip

    async def reconcile(self, keys: set[str]) -> None:
        loop = asyncio.get_running_loop()
        ops: list[Update] = []
        slice_start = loop.time()
        for node_id in keys:
            node = self.cache.nodes.get(node_id)
            if not node_checked(node):
                continue
            assert node is not None
            group = self.cache.tasks_by_node.get(node_id)
            if not group:
                continue
            evictions = noncompliant(node, group.values(), self._is_global(self.cache.services))
            for e in evictions:
                self.log.info(
                    "shutting down a task that no longer fits its node",
                    node_id=node_id,
                    task_id=e.task_id,
                    reason=e.reason,
                )
                ops.append(Update(Kind.TASK, e.task_id, _shut_down(node_id, e.reason)))
            if loop.time() - slice_start > _SLICE_SECONDS:
                await asyncio.sleep(0)
                slice_start = loop.time()
        if not ops:
            return
        result = await self.store.commit(ops)
        await self.cache.wait_for(result.revision)
        self.evicted += len(ops) - len(result.failed)
        for op, err in result.failed:
            self.log.warning("write failed", error=str(err), op=type(op).__name__)
