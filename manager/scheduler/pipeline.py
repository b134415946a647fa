"""Runs the filters over the candidate nodes and explains a task that fits nowhere."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence

from common.api import objects_pb2, types_pb2
from manager.scheduler.filters import Filter, ReadyFilter, StaticFilter, default_filters
from manager.scheduler.nodeinfo import NodeInfo

Check = Callable[[NodeInfo], bool]
# What is wrong with a manager's node that no agent runs, for dry-run output.
ENGINELESS_REASON = "a manager with no agent (no engine to run tasks)"


def _all(checks: list[Check]) -> Check | None:
    """One check that passes when all of `checks` pass (None for none)."""
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        one, two = checks
        return lambda info: one(info) and two(info)
    return lambda info: all(check(info) for check in checks)


class Pipeline:
    """The filters in order; a node is eligible when every enabled filter accepts it."""

    def __init__(
        self,
        filters: Sequence[Filter] | None = None,
        engineless: Mapping[str, NodeInfo] | None = None,
    ) -> None:
        self.filters: Sequence[Filter] = filters if filters is not None else default_filters()
        # The managers' nodes that no agent runs (no engine): never candidates, so no
        # filter sees them, but a task that fits nowhere names those it would otherwise
        # take (`NodeInfos.engineless`, kept up to date by its owner).
        self.engineless: Mapping[str, NodeInfo] = {} if engineless is None else engineless
        self.failures: Counter[str] = Counter()
        self._active: list[Filter] = []
        self._task: objects_pb2.Task | None = None
        # The active filters' checks bound to `_task` (the group's first task).
        self._bound: list[tuple[Filter, Check]] = []

    def set_task(self, task: objects_pb2.Task) -> None:
        """Prepare for the tasks of one group (same service and spec)."""
        self._active = [f for f in self.filters if f.enabled(task)]
        self._task = task
        self._bound = [(f, f.matcher(task)) for f in self._active]
        self.failures = Counter()

    def static_signature(self) -> Hashable:
        """What the active static filters read of the set task: groups with the same
        signature accept the same nodes on those filters."""
        assert self._task is not None
        task = self._task
        return tuple(
            (type(f), f.signature(task)) for f in self._active if isinstance(f, StaticFilter)
        )

    def static_check(self) -> Check:
        """Whether a node passes the active static filters, for the set task."""
        static = [check for f, check in self._bound if isinstance(f, StaticFilter)]
        return _all(static) or (lambda info: True)

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

    def dynamic_check(self) -> Check | None:
        """Whether a node passes the active filters that look at what its tasks occupy,
        for the set task (None: there are none)."""
        return _all([check for f, check in self._bound if not isinstance(f, StaticFilter)])

    def first_failure(self, task: objects_pb2.Task, info: NodeInfo) -> Filter | None:
        if task is self._task:
            for f, check in self._bound:
                if not check(info):
                    return f
            return None
        for f in self._active:
            if not f.check(task, info):
                return f
        return None

    def passed_over(self) -> list[NodeInfo]:
        """The managers' nodes without an engine that would be candidates for the set
        task if an agent ran them: active, and passing its constraints and platforms.
        (Not ready, having no session, is what an agent would change; what their tasks
        occupy is unknown without an engine.) A drained manager is not named: it would
        take no task with an agent either."""
        if not self.engineless:
            return []
        checks = [
            check
            for f, check in self._bound
            if isinstance(f, StaticFilter) and not isinstance(f, ReadyFilter)
        ]
        return [
            info
            for info in self.engineless.values()
            if info.node.spec.availability == types_pb2.NODE_AVAILABILITY_ACTIVE
            and all(check(info) for check in checks)
        ]

    def explain(self) -> str:
        """ "no suitable node (insufficient memory on 2 nodes; ...)", filters in order."""
        reasons = [f.explain(self.failures[f.name]) for f in self._active if self.failures[f.name]]
        engineless = len(self.passed_over())
        if engineless:
            reasons.insert(0, explain_engineless(engineless))
        if not reasons:
            return "no suitable node (no nodes in the cluster)"
        return f"no suitable node ({'; '.join(reasons)})"


def explain_engineless(count: int) -> str:
    """Why managers' nodes without an agent take no tasks, for `count` of them. Short:
    beside another reason it still fits the 75 characters of a progress line."""
    return f"{count} manager{'' if count == 1 else 's'} with no agent"
