"""Control API logic for nodes: get, list, update (availability, labels), remove."""

from __future__ import annotations

from collections.abc import Callable

from common.api import control_pb2, objects_pb2, types_pb2
from manager.controlapi.filters import labels_match
from manager.controlapi.resolve import resolve
from manager.grpc_errors import FailedPreconditionError, InvalidArgumentError
from manager.store import Cache, ConflictError, Kind
from manager.store.views import ObjectWriter

_LABEL_KEY_FORBIDDEN = (" ", "\t", "\n")


def find_node(cache: Cache, ref: str) -> objects_pb2.Node:
    return resolve("node", cache.nodes, ref, lambda n: n.description.hostname)


def with_manager_status(node: objects_pb2.Node, cache: Cache, leader_id: str) -> objects_pb2.Node:
    """A manager node as operators see it: Leader / Reachable / Unreachable, from its
    presence key and the leader key, both current in the cache (nothing stored)."""
    if node.role != types_pb2.NODE_ROLE_MANAGER:
        return node
    presence = cache.objects[Kind.MANAGER].get(node.id)
    out = objects_pb2.Node()
    out.CopyFrom(node)
    out.manager_status.leader = node.id == leader_id
    if presence is not None:
        out.manager_status.addr = presence.dispatcher_addr
        out.manager_status.reachability = objects_pb2.REACHABILITY_REACHABLE
        if not node.description.engine.engine_version:
            out.status.state = types_pb2.NODE_STATE_READY
            out.status.message = ""
    else:
        out.manager_status.reachability = objects_pb2.REACHABILITY_UNREACHABLE
        if not node.description.engine.engine_version:
            out.status.state = types_pb2.NODE_STATE_DOWN
            out.status.message = "manager unreachable"
    return out


def list_nodes(
    cache: Cache, request: control_pb2.ListNodesRequest
) -> control_pb2.ListNodesResponse:
    f = request.filters
    out = control_pb2.ListNodesResponse()
    for node in sorted(cache.nodes.values(), key=lambda n: (n.description.hostname, n.id)):
        if f.names and node.description.hostname not in f.names:
            continue
        if f.id_prefixes and not any(node.id.startswith(p) for p in f.id_prefixes):
            continue
        if f.roles and node.role not in f.roles:
            continue
        if f.availabilities and node.spec.availability not in f.availabilities:
            continue
        if not labels_match(node.spec.annotations.labels, f.labels):
            continue
        out.nodes.append(node)
    return out


async def update_node(
    cache: Cache, store: ObjectWriter, request: control_pb2.UpdateNodeRequest
) -> control_pb2.UpdateNodeResponse:
    current = find_node(cache, request.node_id)
    if not request.node_version:
        raise InvalidArgumentError(
            "node_version is required: send the meta.version of the node you read"
        )
    spec = request.spec
    if spec.availability not in types_pb2.NodeAvailability.values():
        raise InvalidArgumentError(
            f"invalid availability {spec.availability}: use active, pause or drain"
        )
    if spec.desired_role not in types_pb2.NodeRole.values():
        raise InvalidArgumentError(
            f"invalid desired role {spec.desired_role}: use worker or manager"
        )
    for key in spec.annotations.labels:
        if not key or any(c in key for c in _LABEL_KEY_FORBIDDEN):
            raise InvalidArgumentError(f"invalid node label key {key!r}: non-empty, no spaces")

    def apply(node: objects_pb2.Node) -> objects_pb2.Node:
        node.spec.CopyFrom(spec)
        return node

    try:
        updated = await store.update(
            Kind.NODE, current.id, apply, expect_version=request.node_version
        )
    except ConflictError:
        raise FailedPreconditionError(
            f"node {current.id} changed since you read it (you sent version "
            f"{request.node_version}): read it again and retry the update"
        ) from None
    assert updated is not None  # apply never declines
    await cache.wait_for(updated.meta.version)
    return control_pb2.UpdateNodeResponse(node=updated)


async def remove_node(
    cache: Cache,
    store: ObjectWriter,
    request: control_pb2.RemoveNodeRequest,
    on_removed: Callable[[str], None],
) -> control_pb2.RemoveNodeResponse:
    node = find_node(cache, request.node_id)
    if node.role == types_pb2.NODE_ROLE_MANAGER and node.id in cache.objects[Kind.MANAGER]:
        # Not even with force: the manager would be locked out of its own cluster (it
        # could not start again without a join token) and vanish from node ls.
        raise FailedPreconditionError(
            f"node {node.id} ({node.description.hostname}) is a running manager: stop that "
            "swarm-manager first, then remove its node"
        )
    if node.status.state == types_pb2.NODE_STATE_READY and not request.force:
        raise FailedPreconditionError(
            f"node {node.id} ({node.description.hostname}) is ready: stop its agent first, or "
            "remove it anyway with --force"
        )
    await cache.wait_for(await store.delete(Kind.NODE, node.id))
    on_removed(node.id)
    return control_pb2.RemoveNodeResponse()
