"""Whether a node satisfies a task's placement: every constraint holds and its platform
is among the task's platforms.

The scheduler checks the same two rules as separate filters (each explains itself, and
reads labels from its NodeInfo's dicts); the global orchestrator, the control API's
service counts and the constraint enforcer check a node against a whole placement here.
"""

from __future__ import annotations

from common.api import objects_pb2, specs_pb2
from manager.domain.constraints import parsed
from manager.domain.platforms import matches_platforms


def matches_placement(placement: specs_pb2.Placement, node: objects_pb2.Node) -> bool:
    """`node` satisfies the constraints and platforms of `placement` (a task spec's)."""
    if placement.constraints and not all(
        c.matches(node) for c in parsed(tuple(placement.constraints))
    ):
        return False
    return not placement.platforms or matches_platforms(
        placement.platforms, node.description.platform
    )
