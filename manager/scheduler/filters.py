"""Scheduling filters: each decides whether a node can take a task, and says why not.

A filter is one definition: `matcher(task)` gives its check of a node with what it
reads of the task bound once (for a pass over many nodes), and `check(task, info)` is
that matcher, so that the fast path and the explanation counted from it cannot
disagree. The pipeline counts the nodes each filter rejected and asks `explain(count)`
for the reason shown to the operator, as SwarmKit's filters do; that text and the
dry run's `reason` for one node come from the filter's `reason`. Filters are in
pipeline order: ready and availability, resources (CPU, memory), constraints,
platform, host ports, max replicas per node.

Filters that read nothing of the node but its object (not what its tasks occupy) are
`StaticFilter`s and give a `signature(task)`: what they read of the task, so that the
nodes passing them can be kept between groups and passes for every task with the same
signature (see `NodeInfos.pool`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from typing import ClassVar

from common.api import objects_pb2
from manager.domain.constraints import parsed
from manager.domain.platforms import platform_matcher
from manager.scheduler.nodeinfo import NodeInfo, host_ports

Matcher = Callable[[NodeInfo], bool]


def _nodes(count: int) -> str:
    return "1 node" if count == 1 else f"{count} nodes"


class Filter(ABC):
    """One rule of the pipeline, defined by its matcher."""

    name: ClassVar[str]
    # What is wrong with one node that fails it, for dry-run output ("insufficient
    # memory").
    reason: ClassVar[str]
    # The explanation of `count` nodes turned down: {reason}, {nodes} ("2 nodes").
    explanation: ClassVar[str] = "{reason} on {nodes}"

    def enabled(self, task: objects_pb2.Task) -> bool:
        """Whether the rule applies to this task at all."""
        return True

    @abstractmethod
    def matcher(self, task: objects_pb2.Task) -> Matcher:
        """Whether a node passes, for `task`, with what it reads of the task bound."""

    def check(self, task: objects_pb2.Task, info: NodeInfo) -> bool:
        """Whether `info` passes for `task` (the matcher, asked once)."""
        return self.matcher(task)(info)

    def explain(self, count: int) -> str:
        return self.explanation.format(reason=self.reason, nodes=_nodes(count))


class StaticFilter(Filter):
    """A filter that reads nothing of a node but its object (see the module's text)."""

    @abstractmethod
    def signature(self, task: objects_pb2.Task) -> Hashable:
        """What `matcher` reads of the task: tasks with equal signatures pass the same
        nodes."""


class ReadyFilter(StaticFilter):
    """The node is ready (its agent has a session) and its availability is active."""

    name = "ready"
    reason = "not available for new tasks (down, paused or drained)"
    # Docker's words: "1 node not available for new tasks".
    explanation = "{nodes} not available for new tasks"

    def matcher(self, task: objects_pb2.Task) -> Matcher:
        # NodeInfo keeps node.status.state == READY and availability == ACTIVE.
        return _usable

    def signature(self, task: objects_pb2.Task) -> Hashable:
        return ()


def _usable(info: NodeInfo) -> bool:
    return info.usable


class EngineFilter(StaticFilter):
    """The node's container engine answers, as its agent last reported: a node whose
    engine is down is connected (ready) but would only reject what it is given."""

    name = "engine"
    reason = "engine down"

    def matcher(self, task: objects_pb2.Task) -> Matcher:
        return _engine_up

    def signature(self, task: objects_pb2.Task) -> Hashable:
        return ()


def _engine_up(info: NodeInfo) -> bool:
    return info.engine_up


class CPUFilter(Filter):
    """The node's CPUs minus what its tasks reserve cover the task's CPU reservation."""

    name = "cpu"
    reason = "insufficient CPU"

    def enabled(self, task: objects_pb2.Task) -> bool:
        return task.spec.resources.reservations.nano_cpus > 0

    def matcher(self, task: objects_pb2.Task) -> Matcher:
        wanted = task.spec.resources.reservations.nano_cpus
        return lambda info: info.cpu_capacity - info.reserved_cpu >= wanted


class MemoryFilter(Filter):
    """The node's memory minus what its tasks reserve covers the task's reservation."""

    name = "memory"
    reason = "insufficient memory"

    def enabled(self, task: objects_pb2.Task) -> bool:
        return task.spec.resources.reservations.memory_bytes > 0

    def matcher(self, task: objects_pb2.Task) -> Matcher:
        wanted = task.spec.resources.reservations.memory_bytes
        return lambda info: info.memory_capacity - info.reserved_memory >= wanted


class ConstraintFilter(StaticFilter):
    """Every `--constraint` of the task holds for the node."""

    name = "constraints"
    reason = "scheduling constraints not satisfied"

    def enabled(self, task: objects_pb2.Task) -> bool:
        return len(task.spec.placement.constraints) > 0

    def matcher(self, task: objects_pb2.Task) -> Matcher:
        matchers = [c.info_matcher() for c in parsed(tuple(task.spec.placement.constraints))]
        if len(matchers) == 1:
            return matchers[0]
        return lambda info: all(m(info) for m in matchers)

    def signature(self, task: objects_pb2.Task) -> Hashable:
        return tuple(task.spec.placement.constraints)


class PlatformFilter(StaticFilter):
    """The node's OS and architecture are among the image's platforms."""

    name = "platform"
    reason = "unsupported platform"

    def enabled(self, task: objects_pb2.Task) -> bool:
        return len(task.spec.placement.platforms) > 0

    def matcher(self, task: objects_pb2.Task) -> Matcher:
        match = platform_matcher(task.spec.placement.platforms)
        return lambda info: match(info.node.description.platform)

    def signature(self, task: objects_pb2.Task) -> Hashable:
        return tuple((p.os, p.architecture) for p in task.spec.placement.platforms)


class HostPortFilter(Filter):
    """No task on the node already publishes one of the task's host ports."""

    name = "hostports"
    reason = "host-mode port already in use"

    def enabled(self, task: objects_pb2.Task) -> bool:
        return bool(host_ports(task))

    def matcher(self, task: objects_pb2.Task) -> Matcher:
        wanted = host_ports(task)
        return lambda info: not any(hp in info.ports for hp in wanted)


class MaxReplicasFilter(Filter):
    """The node holds fewer than `--replicas-max-per-node` tasks of the service."""

    name = "maxreplicas"
    reason = "max replicas per node reached"

    def enabled(self, task: objects_pb2.Task) -> bool:
        return task.spec.placement.max_replicas > 0

    def matcher(self, task: objects_pb2.Task) -> Matcher:
        service_id, most = task.service_id, task.spec.placement.max_replicas
        return lambda info: info.by_service.get(service_id, 0) < most


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
