"""Managers as members of the cluster: each one is a node (role manager) in the store,
joins with the manager join token if the cluster already exists, and announces that it
is alive with a presence key on its lease (its dispatcher address, for agents).

The node made here has no engine: the agent on the manager's host brings that, running
this same node with the identity the manager writes for it (`ca/credentials.py`,
`write_local_node`), so a host is one node. What the agent's session registers (the
engine's description) is left as it is when the manager restarts."""

from __future__ import annotations

import asyncio
import hmac
import platform
import socket

from common.api import objects_pb2, types_pb2
from common.log import get_logger
from manager.leadership.lease import ManagerLease
from manager.store import AlreadyExistsError, Cache, Store, StoreError

_log = get_logger("membership")


class JoinRefusedError(Exception):
    """This manager may not join the cluster; the message says what to do."""


async def ensure_manager_node(
    store: Store, cache: Cache, manager_id: str, join_token: str, created_cluster: bool
) -> None:
    """Make sure this manager is a node of the cluster, joining with the token if new."""
    if manager_id in cache.nodes:
        return
    cluster = cache.cluster()
    assert cluster is not None
    if not created_cluster:
        expected = cluster.root_ca.join_tokens.manager
        if not join_token or not hmac.compare_digest(join_token.strip(), expected):
            hint = "on a manager of the cluster: swarmctl join-token manager"
            if not join_token:
                raise JoinRefusedError(
                    f"this etcd already holds a cluster ({cluster.id}) that this manager is "
                    f"not part of: start it with --join-token <the manager join token> ({hint})"
                )
            raise JoinRefusedError(
                f"the join token is not this cluster's manager token (wrong, rotated out, or a "
                f"worker token): {hint}"
            )
    node = objects_pb2.Node(id=manager_id, role=types_pb2.NODE_ROLE_MANAGER)
    node.spec.desired_role = types_pb2.NODE_ROLE_MANAGER
    node.spec.availability = types_pb2.NODE_AVAILABILITY_ACTIVE
    node.description.hostname = socket.gethostname()
    node.description.platform.os = platform.system().lower()
    node.description.platform.architecture = platform.machine()
    try:
        created = await store.create(node)
        await cache.wait_for(created.meta.version)
        _log.info("manager joined the cluster", manager_id=manager_id)
    except AlreadyExistsError:
        pass


async def announce_forever(
    store: Store, lease: ManagerLease, manager_id: str, dispatcher_addr: str
) -> None:
    """Keep this manager's presence key on its lease (written again on every new lease)."""
    presence = objects_pb2.ManagerPresence(
        id=manager_id, dispatcher_addr=dispatcher_addr, hostname=socket.gethostname()
    )
    while True:
        await lease.granted.wait()
        generation = lease.generation
        try:
            await store.put_leased([presence], lease.id)
        except StoreError as exc:
            _log.warning("could not announce this manager; retrying", error=str(exc))
            await asyncio.sleep(0.5)
            continue
        await lease.lost.wait()
        _log.warning("lease lost; announcing again on the next one", generation=generation)
