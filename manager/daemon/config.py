"""What a manager is started with (`ManagerConfig`, filled from the command line by
`main`), and the error it stops with when it cannot start (`ManagerError`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import pki
from common.defaults import AGENT_RESTART_GRACE, HEARTBEAT_PERIOD
from manager.store.etcd import EtcdConfig

CONTROL_SOCKET = "control.sock"


class ManagerError(Exception):
    """The manager cannot start; the message says why and what to do."""


@dataclass
class ManagerConfig:
    """A manager's settings (the command line's options, see `main`)."""

    state_dir: Path
    listen_addr: str = "127.0.0.1:4242"
    advertise_addr: str = ""
    etcd: EtcdConfig | None = None
    etcd_prefix: str = "/swarmlet/"
    heartbeat_period: float = HEARTBEAT_PERIOD
    # How long an agent that said goodbye may stay away before its node is down.
    agent_restart_grace: float = AGENT_RESTART_GRACE
    # host:port for the control API over TCP (mutual TLS, admin certificates); off if "".
    control_addr: str = ""
    # [host]:port to serve Prometheus metrics on (loopback without host); off if "".
    metrics_addr: str = ""
    # Lifetime of node certificates, set when this manager creates the cluster.
    cert_expiry: float = pki.DEFAULT_NODE_CERT_LIFETIME
    # The manager join token, for a manager joining an existing cluster.
    join_token: str = ""
    # TTL of the manager's etcd lease: how long a dead leader goes unnoticed.
    leader_ttl: int = 2
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def control_socket(self) -> Path:
        return self.state_dir / CONTROL_SOCKET

    @property
    def listen_host(self) -> str:
        """--listen-addr without its port."""
        return self.listen_addr.rpartition(":")[0]
