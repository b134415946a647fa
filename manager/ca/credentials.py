"""The manager's own TLS identity: a certificate from the cluster CA for its node id, with
the name every client verifies (pki.SERVER_NAME), renewed by itself at 50-80% of its
lifetime without restarting the gRPC servers (dynamic server credentials). Also the
operators' admin client certificate, written to <state-dir>/admin/ for swarmctl over TCP,
and the identity of this manager's own node for the agent on its host, written to
<state-dir>/node/ (`write_local_node`): an agent started with that state dir opens its
session as the manager's node, so a host is one node, as in Swarm.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import grpc

from common import nodecerts, pki
from common.api import objects_pb2
from common.ids import new_id
from common.log import get_logger
from manager.ca.bootstrap import node_cert_lifetime, root_ca
from manager.store import Cache

_log = get_logger("ca.credentials")
ADMIN_DIR = "admin"
# The local agent's state dir, inside the manager's: `swarm-agent --state-dir` this.
LOCAL_NODE_DIR = "node"


def manager_id(state_dir: Path) -> str:
    """This manager's node id, kept in its state dir."""
    path = state_dir / "manager_id"
    if path.exists():
        return path.read_text().strip()
    node_id = new_id()
    pki.write_private(path, (node_id + "\n").encode())
    return node_id


def local_node_dir(state_dir: Path) -> Path:
    """The state dir for the agent that runs this manager's node on the same host."""
    return state_dir / LOCAL_NODE_DIR


def write_local_node(state_dir: Path, cluster: objects_pb2.Cluster, node_id: str) -> Path:
    """Give the agent on this host the identity of this manager's node (role manager),
    in <state-dir>/node/ (see `local_node_dir`); returns that dir.

    A certificate already there for this node and this CA, not yet expired, is kept:
    the agent renews it by itself (through the CA, as any node does) and keeps the
    renewed one there. Otherwise (first start, another cluster's CA, or expired while
    no agent ran) a new key and certificate are written.
    """
    target = local_node_dir(state_dir)
    try:
        current = nodecerts.load(target)
    except nodecerts.UnusableCredentialsError:
        current = None  # unreadable: replaced below
    if current is not None and _still_good(current, cluster, node_id):
        return target
    ca = root_ca(cluster)
    key, cert = ca.issue(
        node_id=node_id,
        role=pki.ROLE_MANAGER,
        cluster_id=cluster.id,
        lifetime=node_cert_lifetime(cluster),
    )
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    nodecerts.save(target, nodecerts.NodeCredentials(key, cert, ca.cert_pem))
    _log.info("wrote this manager's node identity for a local agent", dir=str(target))
    return target


def _still_good(
    creds: nodecerts.NodeCredentials, cluster: objects_pb2.Cluster, node_id: str
) -> bool:
    ident = creds.identity
    return (
        ident.node_id == node_id
        and ident.cluster_id == cluster.id
        and ident.role == pki.ROLE_MANAGER
        and creds.ca_pem == cluster.root_ca.ca_cert
        and ident.not_after > time.time()
    )


class ManagerTLS:
    """Issues and renews this manager's certificate; hands gRPC the current one."""

    def __init__(self, state_dir: Path, cache: Cache, server_names: list[str]) -> None:
        self.state_dir = state_dir
        self.cache = cache
        self.node_id = manager_id(state_dir)
        self.server_names = [pki.SERVER_NAME, *server_names]
        self._lock = threading.Lock()
        self._config: grpc.ServerCertificateConfiguration | None = None
        self._generation = 0
        self.cert_pem = b""
        self.key_pem = b""
        self.ca_pem = b""
        self._issue()

    def _issue(self) -> None:
        cluster = self.cache.cluster()
        assert cluster is not None
        ca = root_ca(cluster)
        key, cert = ca.issue(
            node_id=self.node_id,
            role=pki.ROLE_MANAGER,
            cluster_id=cluster.id,
            lifetime=node_cert_lifetime(cluster),
            server_names=self.server_names,
        )
        config = grpc.ssl_server_certificate_configuration(
            # The chain ends with the root so that a joining node can fetch and pin it.
            [(key, cert + ca.cert_pem)],
            root_certificates=ca.cert_pem,
        )
        with self._lock:
            self.key_pem, self.cert_pem, self.ca_pem = key, cert, ca.cert_pem
            self._config = config
            self._generation += 1

    def server_credentials(self, *, require_client_auth: bool) -> grpc.ServerCredentials:
        with self._lock:
            initial = self._config
            seen = self._generation
        assert initial is not None

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            # Called by gRPC for new connections: hand over a renewed certificate once.
            nonlocal seen
            with self._lock:
                if self._generation == seen:
                    return None
                seen = self._generation
                return self._config

        return grpc.dynamic_ssl_server_credentials(
            initial,
            fetch,  # type: ignore[arg-type]  # gRPC takes None as "no change"
            require_client_authentication=require_client_auth,
        )

    async def renew_forever(self) -> None:
        while True:
            due = pki.renewal_time(self.cert_pem)
            await asyncio.sleep(max(1.0, due - time.time()))
            await asyncio.to_thread(self._issue)
            _log.info("manager certificate renewed", node_id=self.node_id)

    def write_local_node(self) -> Path:
        """This manager's node identity for the agent on its host (`write_local_node`)."""
        cluster = self.cache.cluster()
        assert cluster is not None
        return write_local_node(self.state_dir, cluster, self.node_id)

    def write_admin_bundle(self) -> Path:
        """Write an admin client certificate (if none matches this cluster's CA yet)."""
        cluster = self.cache.cluster()
        assert cluster is not None
        folder = self.state_dir / ADMIN_DIR
        ca_file = folder / "ca.pem"
        if ca_file.exists() and ca_file.read_bytes() == cluster.root_ca.ca_cert:
            return folder
        key, cert = root_ca(cluster).issue(
            node_id=f"admin-{new_id()[:12]}",
            role=pki.ROLE_ADMIN,
            cluster_id=cluster.id,
            lifetime=365 * 24 * 3600.0,
        )
        pki.write_private(folder / "key.pem", key)
        pki.write_private(folder / "cert.pem", cert)
        pki.write_private(ca_file, cluster.root_ca.ca_cert)
        return folder
