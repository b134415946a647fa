"""What the scheduler knows about each node: the node object, the tasks it holds (in total
and per service), what they reserve, the host ports they publish, and recent failures."""

from __future__ import annotations

import copy
import operator
import time
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Final, Protocol

from common import states
from common.api import objects_pb2, types_pb2
from common.nodes import runs_tasks, takes_new_tasks
from common.timeutil import timestamp_seconds

# A node with this many failures of a service within FAILURE_WINDOW ranks last for it.
FAILURE_THRESHOLD = 5
FAILURE_WINDOW = 300.0

HostPort = tuple[int, int]  # (published port, protocol)
_NO_PORTS: Counter[HostPort] = Counter()
_NO_FAILURES: dict[str, deque[float]] = {}
_NO_LABELS: dict[str, str] = {}
_SHARED_INTS: dict[int, int] = {}


def _shared(value: int) -> int:
    """One int object per distinct value (bounded: a cluster has few node sizes)."""
    shared = _SHARED_INTS.get(value)
    if shared is None:
        if len(_SHARED_INTS) >= 4096:
            return value
        _SHARED_INTS[value] = shared = value
    return shared


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


# What a task occupies on its node: (service id, reserved nano CPUs, reserved memory
# bytes, host ports). A plain tuple, unpacked by name where it is read (see Entry for
# why not a NamedTuple: `apply` unpacks one per placement).
Load = tuple[str, int, int, tuple[HostPort, ...]]


def task_load(task: objects_pb2.Task) -> Load:
    reservations = task.spec.resources.reservations
    ports = task.endpoint.ports
    return (
        task.service_id,
        reservations.nano_cpus,
        reservations.memory_bytes,
        tuple(host_ports(task)) if ports else (),
    )


def failed_on_node(task: objects_pb2.Task | None) -> bool:
    return (
        task is not None
        and bool(task.node_id)
        and task.status.state in (states.FAILED, states.REJECTED)
    )


class NodeInfo:
    """A node with what its tasks occupy.

    What the filters and the ranking read of the node object is kept as plain attributes
    (`id`, `usable`, `cpu_capacity`, `memory_capacity`, and the node's and its engine's
    labels as dicts), refreshed whenever `node` is set: replace the node object, do not
    change it in place. (Reading a label through the protobuf map costs about ten times
    a dict look-up, and a pool's fill reads it on every node.)
    """

    __slots__ = (
        "_node",
        "by_service",
        "cpu_capacity",
        "engine_labels",
        "engine_up",
        "failures",
        "id",
        "labels",
        "memory_capacity",
        "node_version",
        "owner",
        "ports",
        "reserved_cpu",
        "reserved_memory",
        "total",
        "usable",
        "version",
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
        # Bumped on every change of the counts or the node (node_version: of the node).
        self.version = 0
        self.node_version = 0
        # The NodeInfos that keeps this info's pools and indexes up to date (None for a
        # copy, or an info made on its own).
        self.owner: NodeInfos | None = None
        self.node = node
        self.total = total
        self.by_service: Counter[str] = Counter() if by_service is None else by_service
        self.reserved_cpu = reserved_cpu
        self.reserved_memory = reserved_memory
        # Most nodes have no host ports and no failures: they share empty ones (never
        # written; replaced on the first write).
        self.ports: Counter[HostPort] = _NO_PORTS if ports is None else ports
        # Times of recent task failures on this node, per service.
        self.failures: dict[str, deque[float]] = dict(failures) if failures else _NO_FAILURES

    @property
    def node(self) -> objects_pb2.Node:
        return self._node

    @node.setter
    def node(self, node: objects_pb2.Node) -> None:
        self._node = node
        self.id: str = node.id
        self.usable: bool = takes_new_tasks(node)
        # Its agent reports that the container engine does not answer (EngineFilter).
        self.engine_up: bool = not node.status.engine_error
        resources = node.description.resources
        # Nodes mostly come in a few sizes: they share the int objects of their
        # capacities (a protobuf read makes a new one each time), which keeps what a
        # placement reads of thousands of nodes in fewer cache lines.
        self.cpu_capacity: int = _shared(resources.nano_cpus)
        self.memory_capacity: int = _shared(resources.memory_bytes)
        labels = node.spec.annotations.labels
        self.labels: dict[str, str] = dict(labels) if labels else _NO_LABELS
        engine_labels = node.description.engine.labels
        self.engine_labels: dict[str, str] = dict(engine_labels) if engine_labels else _NO_LABELS
        self.version += 1
        self.node_version += 1
        if self.owner is not None:
            self.owner._touched(self)

    def __repr__(self) -> str:
        return f"NodeInfo({self.id!r}, total={self.total})"

    def add(self, task: objects_pb2.Task) -> None:
        self.apply(task_load(task), 1)

    def remove(self, task: objects_pb2.Task) -> None:
        self.apply(task_load(task), -1)

    def apply(self, load: Load, sign: int) -> None:
        """Count a task's load in (sign 1) or out (-1)."""
        service_id, cpu, memory, ports = load
        self.total += sign
        by_service = self.by_service
        before = by_service.get(service_id, 0)
        count = before + sign
        if count > 0:
            by_service[service_id] = count
        else:
            by_service.pop(service_id, None)
        if cpu:
            self.reserved_cpu += sign * cpu
        if memory:
            self.reserved_memory += sign * memory
        if ports:
            if self.ports is _NO_PORTS:
                self.ports = Counter()
            for hp in ports:
                self.ports[hp] += sign
                if self.ports[hp] <= 0:
                    del self.ports[hp]
        self.version += 1
        owner = self.owner
        if owner is not None:
            if (before > 0) != (count > 0):
                owner._running_changed(self, service_id, count > 0)
            for pool in owner._pool_list:
                pool.dirty[self] = None

    @property
    def free_cpu(self) -> int:
        return self.cpu_capacity - self.reserved_cpu

    @property
    def free_memory(self) -> int:
        return self.memory_capacity - self.reserved_memory

    def recent_failures(self, service_id: str, now: float) -> int:
        times = self.failures.get(service_id)
        if not times:
            return 0
        while times and times[0] < now - FAILURE_WINDOW:
            times.popleft()
        return len(times)

    def note_failure(self, service_id: str, when: float) -> None:
        if self.failures is _NO_FAILURES:
            self.failures = {}
        times = self.failures.get(service_id)
        if times is None:
            self.failures[service_id] = times = deque()
        times.append(when)
        if self.owner is not None:
            self.owner._failed(self, service_id)

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


# A node's spread path: its value for each spread preference's descriptor.
Path = tuple[str, ...]


# A node in a pool's lane: (first, second, node id, version, info), its fields read by
# the names below. Entries compare as tuples: by the ranking's two order fields
# (ranking.py; second is 0 where a ranking has one), then the node id; (node id,
# version) is unique in a pool, so the info itself is never compared. version is
# info.version when the entry was made: the entry is current while they are equal.
#
# A plain tuple, not a NamedTuple: a pass makes one for every node it queues (about
# 15,000 in the scheduler benchmark's pass at 5,000 nodes), and making a NamedTuple
# costs about seven times a tuple (a call of its class), reading a field by name about
# twice an index (docs/performance.md, "Decisions").
Entry = tuple[float, float, str, int, NodeInfo]
FIRST: Final = 0
SECOND: Final = 1
NODE_ID: Final = 2
VERSION: Final = 3
INFO: Final = 4

# A node that passes a pool's static filters: (its info, the info's node_version when
# the filters were checked, its spread path). Unpacked where it is read.
Member = tuple[NodeInfo, int, Path]


class Pool:
    """The nodes that pass one set of static filters (see filters.py), kept in order
    for one kind of ranking, one lane per spread path (one path, (), without
    placement preferences).

    A lane is a list of entries sorted best last: drawing the best node is a pop from
    its end. Kept by NodeInfos between groups and passes: a change to a node (its
    object or its counts) bumps its version, which makes its entries stale (dropped
    when they come to the end), and marks it dirty; `flush` queues the dirty nodes
    again, with their current key (re-checking the static filters of those whose
    object changed), and merges what is queued into the lanes. So a group starts with
    the lanes right at the cost of what changed since the last one, not of the
    cluster's size. Built from a plain list for one group when the nodes are not a
    NodeInfos (preview, tests).
    """

    # Up to this many queued entries go in one by one (a binary search and an insert);
    # more are sorted and merged.
    INSERT_AT_MOST = 64

    def __init__(
        self,
        accepts: Callable[[NodeInfo], bool],
        entry: Callable[[NodeInfo], Entry],
        path: Callable[[NodeInfo], Path] | None,
        order_fields: int,
    ) -> None:
        self.accepts = accepts
        self.entry = entry
        # None: one path, () (no spread preferences).
        self.path = path
        # The entry's order fields that vary between nodes (first, or first and
        # second). Entries are sorted by node id, then by each of those fields from the
        # last to the first, in stable passes on one field each: cheaper than comparing
        # the tuples.
        self._order = [_ORDER_FIELDS[i] for i in reversed(range(order_fields))]
        self.members: dict[str, Member] = {}
        self.lanes: dict[Path, list[Entry]] = {}
        self.queued: dict[Path, list[Entry]] = {}
        # The nodes changed since the last flush, in the order they changed (those a
        # group placed on in the order it drew them: their queue is mostly sorted).
        self.dirty: dict[NodeInfo, None] = {}

    def _sort(self, entries: list[Entry]) -> None:
        """Sort entries best last: the same order as comparing them, for entries of
        distinct nodes (a fill, or one flush's queue: one entry per node)."""
        entries.sort(key=_NODE_ID)
        for get in self._order:
            entries.sort(key=get)
        entries.reverse()

    def fill(self, infos: Iterable[NodeInfo]) -> None:
        accepts, path = self.accepts, self.path
        self.dirty.clear()
        if path is None:
            # One lane: members and entries in one go (the one cost of a pool that is
            # proportional to the cluster).
            entry = self.entry
            members: dict[str, Member] = {}
            single: list[Entry] = []
            for info in infos:
                if accepts(info):
                    members[info.id] = (info, info.node_version, ())
                    single.append(entry(info))
            self.members = members
            self._sort(single)
            self.lanes = {(): single}
            self.queued = {}
            return
        self.members = {
            info.id: (info, info.node_version, path(info)) for info in infos if accepts(info)
        }
        self._rebuild()

    def _rebuild(self) -> None:
        entry = self.entry
        self.queued = {}
        if self.path is None:
            single = [entry(info) for info, _, _ in self.members.values()]
            self._sort(single)
            self.lanes = {(): single}
            return
        lanes: dict[Path, list[Entry]] = {}
        for info, _, path in self.members.values():
            lane = lanes.get(path)
            if lane is None:
                lanes[path] = lane = []
            lane.append(entry(info))
        for lane in lanes.values():
            self._sort(lane)
        self.lanes = lanes

    def requeue(self, path: Path, entry: Entry) -> None:
        """Put back an entry taken from a lane (merged at the next flush)."""
        queued = self.queued.get(path)
        if queued is None:
            self.queued[path] = queued = []
        queued.append(entry)

    def _flush_single(self, dirty: dict[NodeInfo, None], live: dict[str, NodeInfo]) -> None:
        """flush's queueing of the dirty nodes with one lane: the loop below with the
        path look-ups left out (it runs for every node placed on since the last group)."""
        members, entry = self.members, self.entry
        waiting = self.queued.get(())
        if waiting is None:
            self.queued[()] = waiting = []
        for info in dirty:
            known, seen, _ = members.get(info.id, _NOT_MEMBER)
            if known is not info or seen != info.node_version:
                if live.get(info.id) is not info:
                    if known is info:
                        del members[info.id]
                    continue
                if not self.accepts(info):
                    members.pop(info.id, None)
                    continue
                members[info.id] = (info, info.node_version, ())
            waiting.append(entry(info))
        dirty.clear()
        if not waiting:
            del self.queued[()]

    def flush(self, live: dict[str, NodeInfo]) -> None:
        """Bring the lanes up to date with what changed since the last group."""
        dirty = self.dirty
        if dirty and self.path is None:
            self._flush_single(dirty, live)
        elif dirty:
            members, entry, queued = self.members, self.entry, self.queued
            for info in dirty:
                known, seen, path = members.get(info.id, _NOT_MEMBER)
                if known is not info or seen != info.node_version:
                    # A new node, or its object changed (a removal changes node_version).
                    if live.get(info.id) is not info:
                        if known is info:
                            del members[info.id]
                        continue
                    if not self.accepts(info):
                        members.pop(info.id, None)
                        continue
                    path = () if self.path is None else self.path(info)
                    members[info.id] = (info, info.node_version, path)
                waiting = queued.get(path)
                if waiting is None:
                    queued[path] = waiting = []
                waiting.append(entry(info))
            dirty.clear()
        if not self.queued:
            return
        lanes = self.lanes
        for path, waiting in self.queued.items():
            lane = lanes.get(path)
            if lane is None:
                lanes[path] = lane = []
            if len(waiting) <= self.INSERT_AT_MOST:
                for e in waiting:
                    lane.insert(_after_worse(lane, e), e)
            else:
                self._sort(waiting)
                # The lane's entries worse than all of the queue's (at its start) and
                # better than all of it (at its end) stay as they are; the ones between
                # and the queue, two sorted runs, are merged. Often there are none
                # between: with spread, the nodes just placed on come back worse than
                # every node left in the lane.
                lo = _after_worse(lane, waiting[0])
                hi = _after_worse(lane, waiting[-1], lo)
                if lo == hi:
                    lane[lo:lo] = waiting
                else:
                    middle = lane[lo:hi]
                    middle.extend(waiting)
                    middle.sort(reverse=True)
                    lane[lo:hi] = middle
        self.queued = {}
        if sum(len(lane) for lane in lanes.values()) > 2 * len(self.members) + 64:
            self._rebuild()  # mostly stale entries: start again from the members


_NODE_ID = operator.itemgetter(NODE_ID)
_ORDER_FIELDS = (operator.itemgetter(FIRST), operator.itemgetter(SECOND))
# What `members.get` gives for a node that is not one.
_NOT_MEMBER: tuple[NodeInfo | None, int, Path] = (None, -1, ())


def _after_worse(lane: list[Entry], entry: Entry, lo: int = 0) -> int:
    """Where `entry` goes in `lane` (sorted best last): after the entries worse than it
    (searching from `lo` on)."""
    hi = len(lane)
    while lo < hi:
        mid = (lo + hi) // 2
        if lane[mid] > entry:
            lo = mid + 1
        else:
            hi = mid
    return lo


class NodeIndex(Protocol):
    """What place_group needs to know of the nodes."""

    def all(self) -> Iterable[NodeInfo]:
        """Every node (for explanations)."""
        ...

    def get(self, node_id: str) -> NodeInfo | None: ...

    def running(self, service_id: str) -> list[NodeInfo]:
        """The nodes that run tasks of the service or failed it (a superset is fine)."""
        ...

    def pool(self, key: Hashable, make: Callable[[], Pool]) -> Pool:
        """The pool for `key`, up to date; `make` creates an empty one."""
        ...


class ListedNodes:
    """A NodeIndex over a plain list of infos, for one group: built in time
    proportional to the nodes."""

    def __init__(self, infos: Iterable[NodeInfo]) -> None:
        self.infos = list(infos)
        self._by_id: dict[str, NodeInfo] | None = None

    def all(self) -> Iterable[NodeInfo]:
        return self.infos

    def get(self, node_id: str) -> NodeInfo | None:
        if self._by_id is None:
            self._by_id = {i.id: i for i in self.infos}
        return self._by_id.get(node_id)

    def running(self, service_id: str) -> list[NodeInfo]:
        return [i for i in self.infos if i.by_service.get(service_id) or i.failures.get(service_id)]

    def pool(self, key: Hashable, make: Callable[[], Pool]) -> Pool:
        pool = make()
        pool.fill(self.infos)
        return pool


class NodeInfos:
    """NodeInfo for every node, updated incrementally from cache events, with an index
    of the nodes running each service and the pools of ready nodes the scheduler draws
    from (a NodeIndex)."""

    # Pools kept (one per static filter signature, ranking kind and spread
    # preferences); the least recently used goes first.
    POOLS = 32

    def __init__(self) -> None:
        self.infos: dict[str, NodeInfo] = {}
        # Removed nodes whose tasks still count (until those end): if the node comes
        # back with the same id, its counts are still right.
        self._gone: dict[str, NodeInfo] = {}
        # service id -> the infos with tasks of it (also of removed nodes: `running`
        # looks only at those in `infos`).
        self._running: dict[str, set[NodeInfo]] = defaultdict(set)
        # service id -> the infos where it failed (a superset of the recent ones).
        self._failures: dict[str, set[NodeInfo]] = defaultdict(set)
        self._pools: OrderedDict[Hashable, Pool] = OrderedDict()
        self._pool_list: list[Pool] = []
        # Managers' nodes without an engine (no agent runs them): not candidates, but
        # named when a task fits nowhere that they would otherwise take (the pipeline
        # shares this dict: it is only ever changed in place). Infos of their own, in
        # no pool or index.
        self.engineless: dict[str, NodeInfo] = {}

    def _adopt(self, info: NodeInfo) -> NodeInfo:
        info.owner = self
        for service_id in info.by_service:
            self._running[service_id].add(info)
        for service_id in info.failures:
            self._failures[service_id].add(info)
        self._touched(info)
        return info

    def _touched(self, info: NodeInfo) -> None:
        for pool in self._pool_list:
            pool.dirty[info] = None

    def _running_changed(self, info: NodeInfo, service_id: str, runs: bool) -> None:
        if runs:
            self._running[service_id].add(info)
        else:
            running = self._running.get(service_id)
            if running is not None:
                running.discard(info)
                if not running:
                    del self._running[service_id]

    def _failed(self, info: NodeInfo, service_id: str) -> None:
        self._failures[service_id].add(info)

    # -- NodeIndex --

    def all(self) -> Iterable[NodeInfo]:
        return self.infos.values()

    def get(self, node_id: str) -> NodeInfo | None:
        return self.infos.get(node_id)

    def running(self, service_id: str) -> list[NodeInfo]:
        live = self.infos
        out = [i for i in self._running.get(service_id, ()) if live.get(i.id) is i]
        failed = self._failures.get(service_id)
        if failed:
            for info in list(failed):
                if not info.failures.get(service_id) or self._info(info.id) is not info:
                    failed.discard(info)  # no failures left, or the node is gone
                elif live.get(info.id) is info and not info.by_service.get(service_id):
                    out.append(info)
            if not failed:
                del self._failures[service_id]
        return out

    def pool(self, key: Hashable, make: Callable[[], Pool]) -> Pool:
        pool = self._pools.get(key)
        if pool is None:
            pool = make()
            pool.fill(self.infos.values())
            self._pools[key] = pool
            if len(self._pools) > self.POOLS:
                self._pools.popitem(last=False)
            self._pool_list = list(self._pools.values())
        else:
            self._pools.move_to_end(key)
            pool.flush(self.infos)
        return pool

    # -- updates --

    def _info(self, node_id: str) -> NodeInfo | None:
        return self.infos.get(node_id) or self._gone.get(node_id)

    def rebuild(
        self,
        nodes: Mapping[str, objects_pb2.Node],
        tasks: Iterable[objects_pb2.Task],
        now: float | None = None,
    ) -> None:
        now = time.time() if now is None else now
        self._running.clear()
        self._failures.clear()
        self._pools.clear()
        self._pool_list = []
        self.infos = {n.id: self._adopt(NodeInfo(n)) for n in nodes.values() if runs_tasks(n)}
        self.engineless.clear()
        self.engineless.update((n.id, NodeInfo(n)) for n in nodes.values() if not runs_tasks(n))
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
            self.engineless[new.id] = NodeInfo(new)
            return
        if old is not None:
            self.engineless.pop(old.id, None)
        if new is None:
            if old is not None:
                gone = self.infos.pop(old.id, None)
                if gone is not None:
                    # Out of the pools: its entries are stale, and the next flush sees
                    # a changed node that is no longer there.
                    gone.version += 1
                    gone.node_version += 1
                    self._touched(gone)
                    if gone.total > 0:
                        self._gone[old.id] = gone
            return
        info = self.infos.get(new.id) or self._gone.pop(new.id, None)
        if info is None:
            info = self._adopt(NodeInfo(new))
        else:
            info.node = new
        self.infos[new.id] = info

    def task_changed(
        self, old: objects_pb2.Task | None, new: objects_pb2.Task | None, now: float | None = None
    ) -> None:
        counted_old, counted_new = counts_against_node(old), counts_against_node(new)
        if counted_old and counted_new and _same_load(old, new):
            pass  # a state change that occupies the node just as before
        else:
            if counted_old:
                assert old is not None
                info = self._info(old.node_id)
                if info is not None:
                    info.remove(old)
                    if info.total <= 0 and old.node_id in self._gone:
                        del self._gone[old.node_id]
            if counted_new:
                assert new is not None
                info = self._info(new.node_id)
                if info is not None:
                    info.add(new)
        if failed_on_node(new) and not failed_on_node(old):
            assert new is not None
            info = self.infos.get(new.node_id)
            if info is not None:
                info.note_failure(new.service_id, time.time() if now is None else now)


def _same_load(old: objects_pb2.Task | None, new: objects_pb2.Task | None) -> bool:
    """Both tasks count the same against the same node."""
    return (
        old is not None
        and new is not None
        and old.node_id == new.node_id
        and old.service_id == new.service_id
        and old.spec.resources.reservations == new.spec.resources.reservations
        and old.endpoint.ports == new.endpoint.ports
    )
