"""What the orchestrator and the control API ask of the scheduler, as a protocol: they
reach it only through these (the daemon passes the scheduler in), never by importing
it.

- The orchestrator places the tasks it is about to create before their first write
  (`place_new`), and asks where a service's replicas would go now to rebalance them
  (`target_placement`).
- The control API previews a create or update (`--dry-run`): where each task would go,
  and why each node that would not take one was turned down (`Previewer`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from common.api import objects_pb2


@dataclass
class Decision:
    """Where one task goes: a node, or why none would do."""

    task_id: str
    node_id: str = ""
    # Why the task could not be placed, when node_id is empty.
    explanation: str = ""


@dataclass
class Rejection:
    """A node that would not take the tasks, and the first rule it failed."""

    node: objects_pb2.Node
    reason: str


@dataclass
class GroupResult:
    """The placement of a group of tasks (one service, one spec)."""

    decisions: list[Decision] = field(default_factory=list)
    # For a dry run: why each node that did not pass was turned down.
    rejections: list[Rejection] = field(default_factory=list)


class Placer(Protocol):
    """What the orchestrator asks of the scheduler (the Scheduler implements it)."""

    def target_placement(self, service: objects_pb2.Service) -> Mapping[str, int]:
        """Tasks per node if the service's replicas were placed afresh now."""
        ...

    def place_new(
        self, tasks: Sequence[objects_pb2.Task], freed: Iterable[objects_pb2.Task] = ()
    ) -> Callable[[], None]:
        """Place tasks before their first write; returns the release of the counts."""
        ...


# Where the given tasks (one service, one spec) would go now, nothing written; the
# second argument is a service whose current tasks count as gone (a dry-run update),
# or "". The daemon makes it from the scheduler's `preview`.
Previewer = Callable[[Sequence[objects_pb2.Task], str], GroupResult]
