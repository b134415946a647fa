"""What the scheduler knows about each node: the node object, the tasks it holds (in total
and per service), what they reserve, the host ports they publish, and recent failures."""

from __future__ import annotations

import copy
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable

from common import states
from common.api import objects_pb2, types_pb2
from common.timeutil import timestamp_seconds

# A node with this many failures of a service within FAILURE_WINDOW ranks last for it.
FAILURE_THRESHOLD = 5
FAILURE_WINDOW = 300.0

HostPort = tuple[int, int]  # (published port, protocol)


def runs_tasks(node: objects_pb2.Node) -> bool:
    """Agents' nodes run tasks; a manager is a node too (role manager), with no engine."""
    return node.role != types_pb2.NODE_ROLE_MANAGER or bool(node.description.engine.engine_version)


def counts_against_node(task: objects_pb2.Task | None) -> bool:
    """The task occupies its node: assigned, wanted, and not yet ended."""
    return (
        task is not None
        and bool(task.node_id)
        and states.is_runnable(task.desired_state)
        and not states.is_terminal(task.status.state)
    )


def host_ports(task: objects_pb2.Task) -> list[HostPort]:
    """The fixed host ports a task binds (ports left to the engine's choice excluded)."""
    return [
        (p.published_port, p.protocol)
        for p in task.endpoint.ports
        if p.publish_mode == types_pb2.PUBLISH_MODE_HOST and p.published_port
    ]


def failed_on_node(task: objects_pb2.Task | None) -> bool:
    return (
        task is not None
        and bool(task.node_id)
        and task.status.state in (states.FAILED, states.REJECTED)
    )


class NodeInfo:
    """A node with what its tasks occupy.

    What the filters and the ranking read of the node object is kept as plain attributes
    (`id`, `usable`, `cpu_capacity`, `memory_capacity`), refreshed whenever `node` is set:
    replace the node object, do not change it in place.
    """

    __slots__ = (
        "_node",
        "by_service",
        "cpu_capacity",
        "failures",
        "id",
        "memory_capacity",
        "ports",
        "reserved_cpu",
        "reserved_memory",
        "total",
        "usable",
    )

    def __init__(
        self,
        node: objects_pb2.Node,
        total: int = 0,
        by_service: Counter[str] | None = None,
        reserved_cpu: int = 0,
        reserved_memory: int = 0,
        ports: Counter[HostPort] | None = None,
        failures: dict[str, deque[float]] | None = None,
    ) -> None:
        self.node = node
        self.total = total
        self.by_service: Counter[str] = Counter() if by_service is None else by_service
        self.reserved_cpu = reserved_cpu
        self.reserved_memory = reserved_memory
        self.ports: Counter[HostPort] = Counter() if ports is None else ports
        # Times of recent task failures on this node, per service.
        self.failures: dict[str, deque[float]] = defaultdict(deque)
        if failures:
            self.failures.update(failures)

    @property
    def node(self) -> objects_pb2.Node:
        return self._node

    @node.setter
    def node(self, node: objects_pb2.Node) -> None:
        self._node = node
        self.id: str = node.id
        self.usable: bool = (
            node.status.state == types_pb2.NODE_STATE_READY
            and node.spec.availability == types_pb2.NODE_AVAILABILITY_ACTIVE
        )
        resources = node.description.resources
        self.cpu_capacity: int = resources.nano_cpus
        self.memory_capacity: int = resources.memory_bytes

    def __repr__(self) -> str:
        return f"NodeInfo({self.id!r}, total={self.total})"

    def add(self, task: objects_pb2.Task) -> None:
        self._count(task, 1)

    def remove(self, task: objects_pb2.Task) -> None:
        self._count(task, -1)

    def _count(self, task: objects_pb2.Task, sign: int) -> None:
        self.total += sign
        service_id = task.service_id
        count = self.by_service.get(service_id, 0) + sign
        if count > 0:
            self.by_service[service_id] = count
        else:
            self.by_service.pop(service_id, None)
        reservations = task.spec.resources.reservations
        self.reserved_cpu += sign * reservations.nano_cpus
        self.reserved_memory += sign * reservations.memory_bytes
        if task.endpoint.ports:
            for hp in host_ports(task):
                self.ports[hp] += sign
                if self.ports[hp] <= 0:
                    del self.ports[hp]

    @property
    def free_cpu(self) -> int:
        return self.cpu_capacity - self.reserved_cpu

    @property
    def free_memory(self) -> int:
        return self.memory_capacity - self.reserved_memory

    def free_share(self, task: objects_pb2.Task) -> float:
        """The smallest free fraction among the resources `task` reserves (1.0 if none)."""
        wanted = task.spec.resources.reservations
        return share_function(bool(wanted.nano_cpus), bool(wanted.memory_bytes))(self)

    def recent_failures(self, service_id: str, now: float) -> int:
        times = self.failures.get(service_id)
        if not times:
            return 0
        while times and times[0] < now - FAILURE_WINDOW:
            times.popleft()
        return len(times)

    def note_failure(self, service_id: str, when: float) -> None:
        self.failures[service_id].append(when)

    def copy(self) -> NodeInfo:
        """A copy to try placements on without touching this one."""
        return NodeInfo(
            self.node,
            self.total,
            Counter(self.by_service),
            self.reserved_cpu,
            self.reserved_memory,
            Counter(self.ports),
            copy.deepcopy(self.failures),
        )


def _share_none(info: NodeInfo) -> float:
    return 1.0


def _share_cpu(info: NodeInfo) -> float:
    capacity = info.cpu_capacity
    if not capacity:
        return 1.0
    return (capacity - info.reserved_cpu) / capacity


def _share_memory(info: NodeInfo) -> float:
    capacity = info.memory_capacity
    if not capacity:
        return 1.0
    return (capacity - info.reserved_memory) / capacity


def _share_both(info: NodeInfo) -> float:
    cpu, memory = info.cpu_capacity, info.memory_capacity
    if cpu and memory:
        return min((cpu - info.reserved_cpu) / cpu, (memory - info.reserved_memory) / memory)
    if cpu:
        return (cpu - info.reserved_cpu) / cpu
    if memory:
        return (memory - info.reserved_memory) / memory
    return 1.0


def share_function(cpu: bool, memory: bool) -> Callable[[NodeInfo], float]:
    """`NodeInfo.free_share` for a task that reserves CPU and/or memory: the smallest free
    fraction among those resources the node has a capacity for (1.0 if none)."""
    if cpu and memory:
        return _share_both
    if cpu:
        return _share_cpu
    if memory:
        return _share_memory
    return _share_none


class NodeInfos:
    """NodeInfo for every node, updated incrementally from cache events."""

    def __init__(self) -> None:
        self.infos: dict[str, NodeInfo] = {}
        # Removed nodes whose tasks still count (until those end): if the node comes
        # back with the same id, its counts are still right.
        self._gone: dict[str, NodeInfo] = {}

    def _info(self, node_id: str) -> NodeInfo | None:
        return self.infos.get(node_id) or self._gone.get(node_id)

    def rebuild(
        self,
        nodes: dict[str, objects_pb2.Node],
        tasks: Iterable[objects_pb2.Task],
        now: float | None = None,
    ) -> None:
        now = time.time() if now is None else now
        self.infos = {n.id: NodeInfo(n) for n in nodes.values() if runs_tasks(n)}
        self._gone = {}
        failures = []
        for t in tasks:
            if counts_against_node(t) and t.node_id in self.infos:
                self.infos[t.node_id].add(t)
            elif failed_on_node(t) and t.node_id in self.infos:
                when = timestamp_seconds(t.status.timestamp)
                if when >= now - FAILURE_WINDOW:
                    failures.append((when, t.node_id, t.service_id))
        for when, node_id, service_id in sorted(failures):
            self.infos[node_id].note_failure(service_id, when)

    def node_changed(self, old: objects_pb2.Node | None, new: objects_pb2.Node | None) -> None:
        if new is not None and not runs_tasks(new):
            return
        if new is None:
            if old is not None:
                gone = self.infos.pop(old.id, None)
                if gone is not None and gone.total > 0:
                    self._gone[old.id] = gone
            return
        info = self.infos.get(new.id) or self._gone.pop(new.id, None)
        if info is None:
            info = NodeInfo(new)
        info.node = new
        self.infos[new.id] = info

    def task_changed(
        self, old: objects_pb2.Task | None, new: objects_pb2.Task | None, now: float | None = None
    ) -> None:
        if counts_against_node(old):
            assert old is not None
            info = self._info(old.node_id)
            if info is not None:
                info.remove(old)
                if info.total <= 0 and old.node_id in self._gone:
                    del self._gone[old.node_id]
        if counts_against_node(new):
            assert new is not None
            info = self._info(new.node_id)
            if info is not None:
                info.add(new)
        if failed_on_node(new) and not failed_on_node(old):
            assert new is not None
            info = self.infos.get(new.node_id)
            if info is not None:
                info.note_failure(new.service_id, time.time() if now is None else now)
