"""How the scheduler orders the nodes that pass the filters for one group's tasks.

A `Ranking` is chosen once per group from the group's first task (`Ranking.of`; the
tasks of a group share their spec). It gives two orders that agree:

- `key`: a node's full rank key, lower is better: nodes where the service failed
  `FAILURE_THRESHOLD` times within `FAILURE_WINDOW` come last, then the strategy's
  criteria, then the node id, so that ties break the same way every time;
- `entry`: a pool's order (see nodeinfo.Pool), the same ranking for the nodes that
  neither run the service nor failed it: for those, "not failing" and "none of the
  service's tasks" are the same, so the pool leaves them out.

The strategies:

- `Spread` (default): fewest tasks of the service, then fewest tasks overall;
- `SpreadByShare` (spread for a task that reserves CPU or memory): fewest tasks of
  the service, then the largest free share of the reserved resources (swarmkit#1033),
  then fewest tasks overall;
- `Binpack` (`--placement-strategy binpack`): the smallest free share first, then the
  most tasks of the service, then the most tasks, so nodes fill up before others are
  used.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from common.api import objects_pb2, specs_pb2
from manager.scheduler.nodeinfo import FAILURE_THRESHOLD, Entry, NodeInfo

# A node's rank key: compared as a tuple, lower is better, ending with the node id.
Key = tuple[object, ...]


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
        # Not min(): this runs for every node a pool queues, and the call costs more
        # than the arithmetic.
        cpu_share = (cpu - info.reserved_cpu) / cpu
        memory_share = (memory - info.reserved_memory) / memory
        return cpu_share if cpu_share < memory_share else memory_share
    if cpu:
        return (cpu - info.reserved_cpu) / cpu
    if memory:
        return (memory - info.reserved_memory) / memory
    return 1.0


def share_function(cpu: bool, memory: bool) -> Callable[[NodeInfo], float]:
    """A node's free share for a task that reserves CPU and/or memory: the smallest free
    fraction among those resources the node has a capacity for (1.0 if none)."""
    if cpu and memory:
        return _share_both
    if cpu:
        return _share_cpu
    if memory:
        return _share_memory
    return _share_none


@dataclass(frozen=True)
class Ranking(ABC):
    """One strategy's order of nodes, for the tasks of one group. Hashable: it is part
    of the key a pool is kept under (equal rankings order a pool alike)."""

    # Which reservations the free share looks at.
    cpu: bool = False
    memory: bool = False

    # Set where every pool node's key (not failing, none of the service's tasks) is
    # below it and the key of every node running the service or failing it is not:
    # spread's, whose keys start (failing, tasks of the service). A key of the group's
    # own nodes at or above it then ranks after every pool node, with no need to
    # compute the pool node's key.
    pool_ceiling: ClassVar[Key | None] = None
    # How many of an entry's order fields (first, second) vary between nodes: the pool
    # sorts by those.
    order_fields: ClassVar[int] = 2

    @property
    def pool_first(self) -> bool:
        """Every node of the pool ranks before every node that runs the service or
        failed it; so a node a group places on from the pool ranks after every pool
        node from then on."""
        return self.pool_ceiling is not None

    @staticmethod
    def of(task: objects_pb2.Task) -> Ranking:
        """The ranking for `task`'s group."""
        reservations = task.spec.resources.reservations
        cpu, memory = bool(reservations.nano_cpus), bool(reservations.memory_bytes)
        if task.spec.placement.strategy == specs_pb2.PLACEMENT_STRATEGY_BINPACK:
            return Binpack(cpu, memory)
        if cpu or memory:
            return SpreadByShare(cpu, memory)
        return Spread()

    @abstractmethod
    def key(self, service_id: str, now: float) -> Callable[[NodeInfo], Key]:
        """A node's full rank key for the service's tasks at `now`."""

    @abstractmethod
    def entry(self) -> Callable[[NodeInfo], Entry]:
        """A node's pool entry: `key`'s order for a node without tasks or failures of
        the service."""


@dataclass(frozen=True)
class Spread(Ranking):
    """Fewest tasks of the service, then fewest tasks overall."""

    pool_ceiling: ClassVar[Key | None] = (False, 1)
    order_fields: ClassVar[int] = 1

    def key(self, service_id: str, now: float) -> Callable[[NodeInfo], Key]:
        return lambda i: (
            bool(i.failures) and i.recent_failures(service_id, now) >= FAILURE_THRESHOLD,
            i.by_service.get(service_id, 0),
            i.total,
            i.id,
        )

    def entry(self) -> Callable[[NodeInfo], Entry]:
        return lambda i: (i.total, 0, i.id, i.version, i)


@dataclass(frozen=True)
class SpreadByShare(Ranking):
    """Fewest tasks of the service, then the largest free share, then fewest tasks."""

    pool_ceiling: ClassVar[Key | None] = (False, 1)

    def key(self, service_id: str, now: float) -> Callable[[NodeInfo], Key]:
        share = share_function(self.cpu, self.memory)
        return lambda i: (
            bool(i.failures) and i.recent_failures(service_id, now) >= FAILURE_THRESHOLD,
            i.by_service.get(service_id, 0),
            -share(i),
            i.total,
            i.id,
        )

    def entry(self) -> Callable[[NodeInfo], Entry]:
        share = share_function(self.cpu, self.memory)
        return lambda i: (-share(i), i.total, i.id, i.version, i)


@dataclass(frozen=True)
class Binpack(Ranking):
    """The smallest free share, then the most tasks of the service, then the most tasks."""

    def key(self, service_id: str, now: float) -> Callable[[NodeInfo], Key]:
        share = share_function(self.cpu, self.memory)
        return lambda i: (
            bool(i.failures) and i.recent_failures(service_id, now) >= FAILURE_THRESHOLD,
            share(i),
            -i.by_service.get(service_id, 0),
            -i.total,
            i.id,
        )

    def entry(self) -> Callable[[NodeInfo], Entry]:
        share = share_function(self.cpu, self.memory)
        return lambda i: (share(i), -i.total, i.id, i.version, i)


def rank_key(task: objects_pb2.Task, info: NodeInfo, now: float) -> Key:
    """A node's rank key for `task` (lower is better; ends with the node id)."""
    return Ranking.of(task).key(task.service_id, now)(info)
