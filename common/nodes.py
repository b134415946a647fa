"""What a node's state and settings allow: run tasks at all, take new ones, keep the
ones it has. The scheduler, the orchestrators, the control API and swarmctl all decide
by these, so that a node is never eligible to one of them and not to another.
"""

from __future__ import annotations

from common.api import objects_pb2, types_pb2


def runs_tasks(node: objects_pb2.Node) -> bool:
    """Agents' nodes run tasks; a manager is a node too (role manager), with no engine
    unless an agent runs on it."""
    return node.role != types_pb2.NODE_ROLE_MANAGER or bool(node.description.engine.engine_version)


def takes_new_tasks(node: objects_pb2.Node | None) -> bool:
    """New tasks may go to this node: it is ready (its agent has a session) and its
    availability is active (not paused, not drained)."""
    return (
        node is not None
        and node.status.state == types_pb2.NODE_STATE_READY
        and node.spec.availability == types_pb2.NODE_AVAILABILITY_ACTIVE
    )


def keeps_tasks(node: objects_pb2.Node | None) -> bool:
    """Tasks may stay on this node: it exists, is not down and is not drained (a
    paused node keeps what it has)."""
    return (
        node is not None
        and node.status.state != types_pb2.NODE_STATE_DOWN
        and node.spec.availability != types_pb2.NODE_AVAILABILITY_DRAIN
    )
