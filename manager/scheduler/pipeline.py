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
        """Whether `info` passes, counting the failing filter for the explanation."""
        failed = self.first_failure(task, info)
        if failed is not None:
            self.failures[failed.name] += 1
            return False
        return True

    def fits(self, task: objects_pb2.Task, info: NodeInfo) -> bool:
        """Whether `info` passes (a re-check after placements; nothing counted)."""
        return self.first_failure(task, info) is None

    def first_failure(self, task: objects_pb2.Task, info: NodeInfo) -> Filter | None:
        for f in self._active:
            if not f.check(task, info):
                return f
        return None

    def count_failure(self, task: objects_pb2.Task, info: NodeInfo) -> None:
        """Count why a node that passed earlier no longer takes this group's tasks."""
        failed = self.first_failure(task, info)
        if failed is not None:
            self.failures[failed.name] += 1

    def explain(self) -> str:
        """ "no suitable node (insufficient memory on 2 nodes; ...)", filters in order."""
        reasons = [f.explain(self.failures[f.name]) for f in self._active if self.failures[f.name]]
        if not reasons:
            return "no suitable node (no nodes in the cluster)"
        return f"no suitable node ({'; '.join(reasons)})"
