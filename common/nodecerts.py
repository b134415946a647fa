"""A node's TLS identity on disk: its key, certificate and the cluster's root CA, kept
mode 0600 in `<state-dir>/certificates/`.

The agent keeps its identity there; a manager writes its own node's identity in the
same layout for the agent on its host (`manager/ca/credentials.py`), so that agent
runs as the manager's node. One layout, read and written here only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from common import pki

CERT_DIR = "certificates"
KEY_FILE = "node.key"
CERT_FILE = "node.crt"
CA_FILE = "ca.crt"


class UnusableCredentialsError(Exception):
    """The files are there but do not hold a usable certificate; the message says which."""


@dataclass(frozen=True)
class NodeCredentials:
    """A node's private key, its certificate and the root CA (all PEM)."""

    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes

    @property
    def identity(self) -> pki.Identity:
        return pki.identity(self.cert_pem)

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem,
            private_key=self.key_pem,
            certificate_chain=self.cert_pem,
        )


def folder(state_dir: Path) -> Path:
    return state_dir / CERT_DIR


def load(state_dir: Path) -> NodeCredentials | None:
    """The identity kept in `state_dir`, None if there is none yet."""
    where = folder(state_dir)
    try:
        creds = NodeCredentials(
            (where / KEY_FILE).read_bytes(),
            (where / CERT_FILE).read_bytes(),
            (where / CA_FILE).read_bytes(),
        )
    except FileNotFoundError:
        return None
    try:
        creds.identity  # noqa: B018 - parse now: a broken file should fail at start
    except pki.PKIError as exc:
        raise UnusableCredentialsError(f"{where}/{CERT_FILE} is not usable ({exc})") from None
    return creds


def save(state_dir: Path, creds: NodeCredentials) -> None:
    """Keep `creds` in `state_dir` (each file replaced atomically, mode 0600)."""
    where = folder(state_dir)
    pki.write_private(where / KEY_FILE, creds.key_pem)
    pki.write_private(where / CERT_FILE, creds.cert_pem)
    pki.write_private(where / CA_FILE, creds.ca_pem)
