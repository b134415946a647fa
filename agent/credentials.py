"""The node's TLS identity: joining the cluster with a join token, keeping the key and
certificate in the state dir (mode 0600), and renewing the certificate.

Joining, as SwarmKit does it: the node fetches the root CA certificate from the manager
without trusting anyone yet, accepts it only if its digest is the one in the join token,
then asks the CA (now over verified TLS) to sign a key it made itself. From then on
every call is mutual TLS with that certificate.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from common import nodecerts, pki
from common.api import ca_pb2, ca_pb2_grpc
from common.nodecerts import NodeCredentials, save

__all__ = [
    "JoinError",
    "JoinRefusedError",
    "NodeCredentials",
    "channel_options",
    "fetch_root_ca",
    "join",
    "load",
    "renew",
    "save",
]
_TIMEOUT = 10.0


class JoinError(Exception):
    """The node could not join; the message says why and what to do."""


class JoinRefusedError(JoinError):
    """Joining cannot succeed by trying again: bad token, foreign CA, refused by the CA."""


def channel_options() -> list[tuple[str, str | int]]:
    # Every manager's certificate names SERVER_NAME: any manager of the cluster will do.
    return [("grpc.ssl_target_name_override", pki.SERVER_NAME)]


def load(state_dir: Path) -> NodeCredentials | None:
    """The node identity kept in `state_dir` (None before the node joined)."""
    try:
        return nodecerts.load(state_dir)
    except nodecerts.UnusableCredentialsError as exc:
        raise JoinError(f"{exc}: remove {nodecerts.folder(state_dir)} and join again") from None


def fetch_root_ca(addr: str, token: pki.JoinToken) -> bytes:
    """The root CA certificate the manager at `addr` serves, if it matches `token`.

    Blocking (a plain TLS handshake); run it in a thread.
    """
    host, _, port = addr.rpartition(":")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # nothing to trust yet: the digest decides
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host.strip("[]"), int(port)), timeout=_TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname=pki.SERVER_NAME) as tls,
        ):
            chain = _unverified_chain(tls)
    except (OSError, ssl.SSLError) as exc:
        raise JoinError(f"cannot reach the manager at {addr} to fetch its CA: {exc}") from None
    for der in chain:
        pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
        if pki.ca_digest(pem) == token.digest:
            return pem
    raise JoinRefusedError(
        f"the CA served by the manager at {addr} does not match the join token (the token "
        "is for another cluster, or something between you and the manager is impersonating "
        "it): refusing to join"
    )


def _unverified_chain(tls: ssl.SSLSocket) -> list[bytes]:
    getter = getattr(tls, "get_unverified_chain", None)  # public from Python 3.13
    if getter is None:
        getter = tls._sslobj.get_unverified_chain  # type: ignore[attr-defined]
    chain = getter() or []
    out = []
    for cert in chain:
        der = cert if isinstance(cert, bytes) else cert.public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]
        out.append(der)
    return out


async def join(manager: str, token_text: str) -> NodeCredentials:
    """Join the cluster of the manager whose dispatcher is at `manager`, with a join token."""
    try:
        token = pki.JoinToken.parse(token_text)
    except pki.PKIError as exc:
        raise JoinRefusedError(str(exc)) from None
    addr = pki.ca_address(manager)
    ca_pem = await asyncio.to_thread(fetch_root_ca, addr, token)
    key = pki.new_key()
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    async with grpc.aio.secure_channel(addr, credentials, options=channel_options()) as channel:
        stub = ca_pb2_grpc.NodeCAStub(channel)
        try:
            response = await stub.IssueNodeCertificate(
                ca_pb2.IssueNodeCertificateRequest(csr=pki.make_csr(key), token=str(token)),
                timeout=_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            message = f"the manager at {addr} refused to let this node join: " + (
                exc.details() or exc.code().name
            )
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise JoinError(message) from None
            raise JoinRefusedError(message) from None
    return NodeCredentials(pki.key_pem(key), response.certificate, ca_pem)


async def renew(addr: str, current: NodeCredentials) -> NodeCredentials:
    """A new certificate (for a new key) for the same identity, asked with the current one."""
    key = pki.new_key()
    async with grpc.aio.secure_channel(
        addr, current.channel_credentials(), options=channel_options()
    ) as channel:
        response = await ca_pb2_grpc.NodeCAStub(channel).IssueNodeCertificate(
            ca_pb2.IssueNodeCertificateRequest(csr=pki.make_csr(key)), timeout=_TIMEOUT
        )
    return NodeCredentials(
        pki.key_pem(key), response.certificate, response.root_ca or current.ca_pem
    )
