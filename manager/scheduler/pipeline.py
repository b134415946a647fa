"""Runs the filters over the candidate nodes and explains a task that fits nowhere."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from common.api import objects_pb2
from manager.scheduler.filters import Filter, default_filters
from manager.scheduler.nodeinfo import NodeInfo


class Pipeline:
    """The filters in order; a node is eligible when every enabled filter accepts it."""

    def __init__(self, filters: list[Filter] | None = None) -> None:
        self.filters = filters if filters is not None else default_filters()
        self.failures: Counter[str] = Counter()
        self._active: list[Filter] = []

    def set_task(self, task: objects_pb2.Task) -> None:
        """Prepare for the tasks of one group (same service and spec)."""
        self._active = [f for f in self.filters if f.enabled(task)]
        self.failures = Counter()

    def eligible(self, task: objects_pb2.Task, infos: Iterable[NodeInfo]) -> list[NodeInfo]:
        out = []
        for info in infos:
            if self.accepts(task, info):
                out.append(info)
        return out

    def accepts(self, task: objects_pb2.Task, info: NodeInfo) -> bool:
        for f in self._active:
            if not f.check(task, info):
                self.failures[f.name] += 1
                return False
        return True

    def explain(self) -> str:
        """ "no suitable node (insufficient memory on 2 nodes; ...)", filters in order."""
        reasons = [f.explain(self.failures[f.name]) for f in self._active if self.failures[f.name]]
        if not reasons:
            return "no suitable node (no nodes in the cluster)"
        return f"no suitable node ({'; '.join(reasons)})"
