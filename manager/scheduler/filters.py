"""Scheduling filters: each decides whether a node can take a task, and says why not.

A filter is asked `check(task, node_info)` for every candidate node; the pipeline
counts the nodes each filter rejected and asks `explain(count)` for the reason shown
to the operator, as SwarmKit's filters do. Filters are in pipeline order: ready and
availability, resources (CPU, memory), constraints, platform, host ports, max replicas
per node.

Besides `check`, the default filters offer `matcher(task)`: the same check with what it
reads of the task bound once, for a pass over many nodes. Filters that read nothing of
the node but its object (not what its tasks occupy) say `static = True` and give a
`signature(task)`: what they read of the task, so that the nodes passing them can be
kept between groups and passes for every task with the same signature (see
`NodeInfos.pool`). A filter without these is checked with `check` on every candidate.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from functools import lru_cache
from typing import Protocol

from common.api import objects_pb2
from manager.scheduler.constraints import Constraint, normalise_arch, parse_all
from manager.scheduler.nodeinfo import NodeInfo, host_ports

Matcher = Callable[[NodeInfo], bool]


def _nodes(count: int) -> str:
    return "1 node" if count == 1 else f"{count} nodes"


class Filter(Protocol):
    """One rule of the pipeline."""

    name: str
    # What is wrong with one node, for dry-run output ("insufficient memory").
    reason: str

    def enabled(self, task: objects_pb2.Task) -> bool:
        """Whether the rule applies to this task at all."""
        ...

    def check(self, task: objects_pb2.Task, info: NodeInfo) -> bool: ...

    def explain(self, count: int) -> str: ...


class StaticFilter(Filter, Protocol):
    """A filter that reads nothing of a node but its object (see the module's text)."""

    static: bool

    def signature(self, task: objects_pb2.Task) -> Hashable:
        """What `check` reads of the task: tasks with equal signatures pass the same nodes."""
        ...


class ReadyFilter:
    """The node is ready (its agent has a session) and its availability is active."""

    name = "ready"
    reason = "not available for new tasks (down, paused or drained)"

    def enabled(self, task: objects_pb2.Task) -> bool:
        return True

    static = True

    def check(self, task: objects_pb2.Task, info: NodeInfo) -> bool:
        # NodeInfo keeps node.status.state == READY and availability == ACTIVE.
        return info.usable

    def matcher(self, task: objects_pb2.Task) -> Matcher:
        return _usable

    def signature(self, task: objects_pb2.Task) -> Hashable:
        return ()

    def explain(self, count: int) -> str:
        return f"{_nodes(count)} not available for new tasks"


def _usable(info: NodeInfo) -> bool:
    return info.usable


class EngineFilter:
    """The node's container engine answers, as its agent last reported: a node whose
    engine is down is connected (ready) but would only reject what it is given."""

    name = "engine"
    reason = "engine down"

    def enabled(self, task: objects_pb2.Task) -> bool:
        return True

    static = True

    def check(self, task: objects_pb2.Task, info: NodeInfo) -> bool:
        return info.engine_up

    def matcher(self, task: objects_pb2.Task) -> Matcher:
        return _engine_up

    def signature(self, task: objects_pb2.Task) -> Hashable:
        return ()

    def explain(self, count: int) -> str:
        return f"engine down on {_nodes(count)}"


def _engine_up(info: NodeInfo) -> bool:
    return info.engine_up


class CPUFilter:
    """The node's CPUs minus what its tasks reserve cover the task's CPU reservation."""

    name = "cpu"
    reason = "insufficient CPU"

    def enabled(self, task: objects_pb2.Task) -> bool:
        return task.spec.resources.reservations.nano_cpus > 0

    def check(self, task: objects_pb2.Task, info: NodeInfo) -> bool:
        return info.free_cpu >= task.spec.resources.reservations.nano_cpus

    def matcher(self, task: objects_pb2.Task) -> Matcher:
        wanted = task.spec.resources.reservations.nano_cpus
        return lambda info: info.cpu_capacity - info.reserved_cpu >= wanted

    def explain(self, count: int) -> str:
        return f"insufficient CPU on {_nodes(count)}"


class MemoryFilter:
    """The node's memory minus what its tasks reserve covers the task's reservation."""

    name = "memory"
    reason = "insufficient memory"

    def enabled(self, task: objects_pb2.Task) -> bool:
        return task.spec.resources.reservations.memory_bytes > 0

    def check(self, task: objects_pb2.Task, info: NodeInfo) -> bool:
        return info.free_memory >= task.spec.resources.reservations.memory_bytes

    def matcher(self, task: objects_pb2.Task) -> Matcher:
        wanted = task.spec.resources.reservations.memory_bytes
        return lambda info: info.memory_capacity - info.reserved_memory >= wanted

    def explain(self, count: int) -> str:
        return f"insufficient memory on {_nodes(count)}"


@lru_cache(maxsize=1024)
def _parsed(exprs: tuple[str, ...]) -> list[Constraint]:
    return parse_all(exprs)


class ConstraintFilter:
    """Every `--constraint` of the task holds for the node."""

    name = "constraints"
    reason = "scheduling constraints not satisfied"

    def enabled(self, task: objects_pb2.Task) -> bool:
        return len(task.spec.placement.constraints) > 0

    static = True

    def check(self, task: objects_pb2.Task, info: NodeInfo) -> bool:
        constraints = _parsed(tuple(task.spec.placement.constraints))
        return all(c.matches(info.node) for c in constraints)

    def matcher(self, task: objects_pb2.Task) -> Matcher:
        matchers = [c.info_matcher() for c in _parsed(tuple(task.spec.placement.constraints))]
        if len(matchers) == 1:
            return matchers[0]
        return lambda info: all(m(info) for m in matchers)

    def signature(self, task: objects_pb2.Task) -> Hashable:
        return tuple(task.spec.placement.constraints)

    def explain(self, count: int) -> str:
        return f"scheduling constraints not satisfied on {_nodes(count)}"


class PlatformFilter:
    """The node's OS and architecture are among the image's platforms."""

    name = "platform"
    reason = "unsupported platform"

    def enabled(self, task: objects_pb2.Task) -> bool:
        return len(task.spec.placement.platforms) > 0

    static = True

    def check(self, task: objects_pb2.Task, info: NodeInfo) -> bool:
        return self.matcher(task)(info)

    def matcher(self, task: objects_pb2.Task) -> Matcher:
        wanted = [
            (p.os.lower(), normalise_arch(p.architecture) if p.architecture else "")
            for p in task.spec.placement.platforms
        ]

        def match(info: NodeInfo) -> bool:
            node = info.node.description.platform
            os_ = node.os.lower()
            arch = normalise_arch(node.architecture)
            return any((not o or o == os_) and (not a or a == arch) for o, a in wanted)

        return match

    def signature(self, task: objects_pb2.Task) -> Hashable:
        return tuple((p.os, p.architecture) for p in task.spec.placement.platforms)

    def explain(self, count: int) -> str:
        return f"unsupported platform on {_nodes(count)}"


class HostPortFilter:
    """No task on the node already publishes one of the task's host ports."""

    name = "hostports"
    reason = "host-mode port already in use"

    def enabled(self, task: objects_pb2.Task) -> bool:
        return bool(host_ports(task))

    def check(self, task: objects_pb2.Task, info: NodeInfo) -> bool:
        return not any(hp in info.ports for hp in host_ports(task))

    def matcher(self, task: objects_pb2.Task) -> Matcher:
        wanted = host_ports(task)
        return lambda info: not any(hp in info.ports for hp in wanted)

    def explain(self, count: int) -> str:
        return f"host-mode port already in use on {_nodes(count)}"


class MaxReplicasFilter:
    """The node holds fewer than `--replicas-max-per-node` tasks of the service."""

    name = "maxreplicas"
    reason = "max replicas per node reached"

    def enabled(self, task: objects_pb2.Task) -> bool:
        return task.spec.placement.max_replicas > 0

    def check(self, task: objects_pb2.Task, info: NodeInfo) -> bool:
        return info.by_service[task.service_id] < task.spec.placement.max_replicas

    def matcher(self, task: objects_pb2.Task) -> Matcher:
        service_id, most = task.service_id, task.spec.placement.max_replicas
        return lambda info: info.by_service.get(service_id, 0) < most

    def explain(self, count: int) -> str:
        return f"max replicas per node reached on {_nodes(count)}"


def default_filters() -> list[Filter]:
    return [
        ReadyFilter(),
        EngineFilter(),
        CPUFilter(),
        MemoryFilter(),
        ConstraintFilter(),
        PlatformFilter(),
        HostPortFilter(),
        MaxReplicasFilter(),
    ]
