"""What the scheduler knows about each node: the node object and the tasks it holds."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from common import states
from common.api import objects_pb2


def counts_against_node(task: objects_pb2.Task | None) -> bool:
    """The task occupies its node: assigned, wanted, and not yet ended."""
    return (
        task is not None
        and bool(task.node_id)
        and task.desired_state <= states.RUNNING
        and not states.is_terminal(task.status.state)
    )


@dataclass
class NodeInfo:
    """A node with the number of tasks it holds, in total and per service."""

    node: objects_pb2.Node
    total: int = 0
    by_service: Counter[str] = field(default_factory=Counter)

    def add(self, task: objects_pb2.Task) -> None:
        self.total += 1
        self.by_service[task.service_id] += 1

    def remove(self, task: objects_pb2.Task) -> None:
        self.total -= 1
        self.by_service[task.service_id] -= 1
        if self.by_service[task.service_id] <= 0:
            del self.by_service[task.service_id]


class NodeInfos:
    """NodeInfo for every node, updated incrementally from cache events."""

    def __init__(self) -> None:
        self.infos: dict[str, NodeInfo] = {}

    def rebuild(
        self, nodes: dict[str, objects_pb2.Node], tasks: dict[str, objects_pb2.Task]
    ) -> None:
        self.infos = {n.id: NodeInfo(n) for n in nodes.values()}
        for t in tasks.values():
            if counts_against_node(t) and t.node_id in self.infos:
                self.infos[t.node_id].add(t)

    def node_changed(self, old: objects_pb2.Node | None, new: objects_pb2.Node | None) -> None:
        if new is None:
            if old is not None:
                self.infos.pop(old.id, None)
            return
        info = self.infos.get(new.id)
        if info is None:
            self.infos[new.id] = NodeInfo(new)
        else:
            info.node = new

    def task_changed(self, old: objects_pb2.Task | None, new: objects_pb2.Task | None) -> None:
        if counts_against_node(old):
            assert old is not None
            info = self.infos.get(old.node_id)
            if info is not None:
                info.remove(old)
        if counts_against_node(new):
            assert new is not None
            info = self.infos.get(new.node_id)
            if info is not None:
                info.add(new)
