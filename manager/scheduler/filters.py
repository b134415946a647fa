"""Scheduling filters: each decides whether a node can take a task, and says why not.

A filter is asked `check(task, node_info)` for every candidate node; the pipeline
counts the nodes each filter rejected and asks `explain(count)` for the reason shown
to the operator, as SwarmKit's filters do.
"""

from __future__ import annotations

from typing import Protocol

from common.api import objects_pb2, types_pb2
from manager.scheduler.nodeinfo import NodeInfo


def _nodes(count: int) -> str:
    return "1 node" if count == 1 else f"{count} nodes"


class Filter(Protocol):
    """One rule of the pipeline."""

    name: str

    def enabled(self, task: objects_pb2.Task) -> bool:
        """Whether the rule applies to this task at all."""
        ...

    def check(self, task: objects_pb2.Task, info: NodeInfo) -> bool: ...

    def explain(self, count: int) -> str: ...


class ReadyFilter:
    """The node is ready (its agent has a session) and its availability is active."""

    name = "ready"

    def enabled(self, task: objects_pb2.Task) -> bool:
        return True

    def check(self, task: objects_pb2.Task, info: NodeInfo) -> bool:
        node = info.node
        return (
            node.status.state == types_pb2.NODE_STATE_READY
            and node.spec.availability == types_pb2.NODE_AVAILABILITY_ACTIVE
        )

    def explain(self, count: int) -> str:
        return f"{_nodes(count)} not available for new tasks"


def default_filters() -> list[Filter]:
    return [ReadyFilter()]
