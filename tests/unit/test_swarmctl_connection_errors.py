"""swarmctl names what is wrong with a connection: the address of a manager's dispatcher
(or CA port) instead of its control API, and each kind of TLS failure; certificate
files that cannot work are refused before connecting. Real gRPC servers on loopback
with certificates from real CAs (common/pki.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from typer.testing import CliRunner, Result

from common import pki
from common.api import ca_pb2_grpc, dispatcher_pb2_grpc
from swarmctl.main import app


@dataclass
class Files:
    """A cluster CA, a manager certificate from it, and admin client files on disk."""

    ca: pki.RootCA
    other: pki.RootCA
    server_key: bytes
    server_cert: bytes
    dir: Path

    def flags(self, ca: str = "ca.pem", cert: str = "cert.pem", key: str = "key.pem") -> list[str]:
        return [
            "--tlscacert", str(self.dir / ca),
            "--tlscert", str(self.dir / cert),
            "--tlskey", str(self.dir / key),
        ]  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    folder = tmp_path_factory.mktemp("tls")
    ca, other = pki.RootCA.create(), pki.RootCA.create()
    server_key, server_cert = ca.issue(
        node_id="m1", role=pki.ROLE_MANAGER, cluster_id="c1", server_names=[pki.SERVER_NAME]
    )
    key, cert = ca.issue(node_id="admin", role=pki.ROLE_ADMIN, cluster_id="c1")
    other_key, other_cert = other.issue(node_id="admin", role=pki.ROLE_ADMIN, cluster_id="c1")
    expired_key, expired_cert = ca.issue(
        node_id="admin", role=pki.ROLE_ADMIN, cluster_id="c1", lifetime=-30
    )
    for name, data in {
        "ca.pem": ca.cert_pem,
        "cert.pem": cert,
        "key.pem": key,
        "other-ca.pem": other.cert_pem,
        "other-cert.pem": other_cert,
        "other-key.pem": other_key,
        "expired-cert.pem": expired_cert,
        "expired-key.pem": expired_key,
        "junk.pem": b"-----BEGIN CERTIFICATE-----\n",
    }.items():
        (folder / name).write_bytes(data)
    return Files(ca, other, server_key, server_cert, folder)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


Server = Callable[..., str]


@pytest.fixture
def serve(files: Files) -> Iterator[Server]:
    """Start a gRPC server on loopback: its address. Stopped after the test."""
    started: list[grpc.Server] = []

    def start(
        *,
        add: Callable[[grpc.Server], None] | None = None,
        tls: bool = True,
        client_auth: bool = True,
        server_names: list[str] | None = None,
    ) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(2))
        started.append(server)
        if add is not None:
            add(server)
        address = f"127.0.0.1:{_free_port()}"
        if not tls:
            server.add_insecure_port(address)
        else:
            key, cert = files.server_key, files.server_cert
            if server_names is not None:
                key, cert = files.ca.issue(
                    node_id="m1",
                    role=pki.ROLE_MANAGER,
                    cluster_id="c1",
                    server_names=server_names,
                )
            credentials = grpc.ssl_server_credentials(
                [(key, cert + files.ca.cert_pem)],
                root_certificates=files.ca.cert_pem,
                require_client_auth=client_auth,
            )
            server.add_secure_port(address, credentials)
        server.start()
        return address

    yield start
    for server in started:
        server.stop(None)


def swarmctl(address: str, *args: str) -> Result:
    return CliRunner().invoke(app, ["-H", address, *args], env={"SWARMCTL_HOST": None})


def assert_error(result: Result, exit_code: int, *needles: str) -> None:
    """One `Error:` line (after Click's usage lines for a usage error) with `needles`."""
    assert result.exit_code == exit_code, result.output
    assert result.stdout == ""
    error = result.stderr.splitlines()[-1]
    assert error.startswith("Error: ")
    if exit_code != 2:
        assert result.stderr == f"{error}\n"
    for needle in needles:
        assert needle in error, error
    assert "cannot reach" not in error
    assert "Method not found" not in error
    assert "(OK)" not in error


def _dispatcher(server: grpc.Server) -> None:
    dispatcher_pb2_grpc.add_DispatcherServicer_to_server(_UnimplementedDispatcher(), server)


def _ca(server: grpc.Server) -> None:
    ca_pb2_grpc.add_NodeCAServicer_to_server(_UnimplementedCA(), server)


class _UnimplementedDispatcher(dispatcher_pb2_grpc.DispatcherServicer):
    """A dispatcher port whose calls are never made: swarmctl's Control calls meet
    "Method not found" there, which is what the test is about."""

    def Session(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not faked")

    def Heartbeat(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not faked")

    def Heartbeats(self, request_iterator: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not faked")

    def UpdateTaskStatus(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not faked")

    def Goodbye(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not faked")


class _UnimplementedCA(ca_pb2_grpc.NodeCAServicer):
    """A CA port that answers every call with UNIMPLEMENTED: swarmctl must say this address
    is not the control API before it calls anything here."""

    def GetRootCACertificate(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not faked")

    def IssueNodeCertificate(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not faked")


def test_the_dispatcher_port_is_named_as_such(files: Files, serve: Server) -> None:
    address = serve(add=_dispatcher)
    result = swarmctl(address, *files.flags(), "node", "ls")
    assert_error(
        result,
        1,
        f"tcp://{address} does not serve the control API: it serves agents",
        "control socket",
        "--control-addr",
    )


def test_the_ca_port_is_named_as_such(files: Files, serve: Server) -> None:
    address = serve(add=_ca, client_auth=False)
    result = swarmctl(address, *files.flags(), "service", "ls")
    assert_error(result, 1, "does not serve the control API: it serves agents")


def test_a_manager_certificate_from_another_ca(files: Files, serve: Server) -> None:
    address = serve()
    result = swarmctl(address, *files.flags(ca="other-ca.pem"), "node", "ls")
    assert_error(
        result,
        1,
        f"TLS handshake with tcp://{address} failed: the manager's certificate is not "
        "signed by the CA in --tlscacert",
    )


def test_a_client_certificate_the_manager_does_not_accept(files: Files, serve: Server) -> None:
    address = serve()
    flags = files.flags(cert="other-cert.pem", key="other-key.pem")
    result = swarmctl(address, *flags, "node", "ls")
    assert_error(
        result,
        1,
        f"TLS handshake with tcp://{address} failed:",
        "did not accept the certificate in --tlscert",
    )


def test_a_server_that_is_no_swarmlet_manager(files: Files, serve: Server) -> None:
    address = serve(server_names=["example.org"])
    result = swarmctl(address, *files.flags(), "node", "ls")
    assert_error(result, 1, "TLS handshake", "does not name swarmlet-manager")


def test_a_server_without_tls(files: Files, serve: Server) -> None:
    address = serve(tls=False)
    result = swarmctl(address, *files.flags(), "node", "ls")
    assert_error(result, 1, "TLS handshake", "does not speak TLS")


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (("junk.pem", "cert.pem", "key.pem"), "--tlscacert is not a PEM certificate"),
        (("ca.pem", "junk.pem", "key.pem"), "--tlscert is not a PEM certificate"),
        (("ca.pem", "cert.pem", "junk.pem"), "--tlskey is not an unencrypted PEM ECDSA key"),
        (
            ("ca.pem", "cert.pem", "other-key.pem"),
            "--tlskey is not the key of the certificate in --tlscert",
        ),
        (("ca.pem", "expired-cert.pem", "expired-key.pem"), "the certificate in --tlscert expired"),
    ],
)
def test_certificate_files_that_cannot_work_are_usage_errors(
    files: Files, names: tuple[str, str, str], message: str
) -> None:
    result = swarmctl("127.0.0.1:1", *files.flags(*names), "node", "ls")
    assert_error(result, 2, message, "<state-dir>/admin/")


def test_no_manager_at_a_tcp_address_is_still_unreachable(files: Files) -> None:
    result = swarmctl(f"127.0.0.1:{_free_port()}", *files.flags(), "node", "ls")
    assert result.exit_code == 1
    assert "cannot reach a swarmlet manager at tcp://127.0.0.1:" in result.stderr
    assert "(connection refused)" in result.stderr


def test_grpc_adds_no_lines_of_its_own(files: Files, serve: Server) -> None:
    # gRPC's C core logs a failed handshake to stderr unless told not to, which the
    # console script does before importing grpc (swarmctl/launch.py).
    address = serve()
    args = ["-H", address, *files.flags(ca="other-ca.pem"), "node", "ls"]
    result = subprocess.run(
        [sys.executable, "-m", "swarmctl", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert result.stderr.startswith("Error: TLS handshake with")
    assert result.stderr.count("\n") == 1, result.stderr
