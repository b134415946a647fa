"""The manager's own TLS identity: a certificate from the cluster CA for its node id, with
the name every client verifies (pki.SERVER_NAME), renewed by itself at 50-80% of its
lifetime without restarting the gRPC servers (dynamic server credentials). Also the
operators' admin client certificate, written to <state-dir>/admin/ for swarmctl over TCP.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import grpc

from common import pki
from common.ids import new_id
from common.log import get_logger
from manager.ca.bootstrap import node_cert_lifetime, root_ca
from manager.store import Cache

_log = get_logger("ca.credentials")
ADMIN_DIR = "admin"


def manager_id(state_dir: Path) -> str:
    """This manager's node id, kept in its state dir."""
    path = state_dir / "manager_id"
    if path.exists():
        return path.read_text().strip()
    node_id = new_id()
    pki.write_private(path, (node_id + "\n").encode())
    return node_id


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
