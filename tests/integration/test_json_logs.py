"""With `--log-format json` a daemon's stderr holds JSON lines only: gRPC's C core, which
writes its own glog-style lines to fd 2 (a failed TLS handshake, for one), is kept
quiet by the daemons' entry points (common/log.py `quiet_grpc_core`)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.harness import Agent, Manager

pytestmark = pytest.mark.slow

# Not JSON, not TLS: what a port scanner or a misdirected browser sends.
HTTP_REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def assert_json_lines(log: str, least: int) -> None:
    lines = log.splitlines()
    assert len(lines) >= least, log
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            pytest.fail(f"a line of the log is not JSON: {line!r}\nwhole log:\n{log}")


def probe_with_http(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(HTTP_REQUEST)
        with contextlib.suppress(OSError):
            conn.recv(100)


@pytest.fixture(autouse=True)
def no_grpc_verbosity(monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemons decide, not whoever runs the tests."""
    monkeypatch.delenv("GRPC_VERBOSITY", raising=False)


@pytest.fixture
def manager() -> Iterator[Manager]:
    m = Manager().start()
    try:
        yield m
    finally:
        m.cleanup()


def test_the_manager_logs_only_json_when_a_tls_handshake_fails(manager: Manager) -> None:
    # Before: "I1207 ... ssl_transport_security.cc:2563] Handshake failed with error
    # SSL_ERROR_SSL ... HTTP_REQUEST" for each probe, in between the JSON lines.
    for port in (manager.port, manager.port + 1):
        probe_with_http(port)
    time.sleep(1)
    assert manager.stop() == 0
    assert_json_lines(manager.process.log(), least=3)


class HttpOnly:
    """A port that answers anything with an HTTP error: not the manager agents expect."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                self.connections += 1
                with conn, contextlib.suppress(OSError):
                    conn.recv(100)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    def close(self) -> None:
        self.sock.close()


def test_the_agent_logs_only_json_when_a_tls_handshake_fails(manager: Manager) -> None:
    # A joined agent (it has its node certificate) restarted against a port that is not a
    # manager: its gRPC channel's TLS handshakes fail, which the C core logged.
    agent = Agent(
        [manager.addr],
        "unix:///nonexistent",
        join_token=manager.join_token(),
        extra=["--executor", "hollow"],
    )
    fake = HttpOnly()
    try:
        agent.start()
        assert agent.node_id
        assert agent.stop() == 0
        os.truncate(agent.process.log_path, 0)
        agent.process.args[agent.process.args.index(manager.addr)] = f"127.0.0.1:{fake.port}"
        agent.start()
        deadline = time.monotonic() + 20
        while fake.connections < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert fake.connections >= 2
        time.sleep(1)
        agent.stop()
        assert_json_lines(agent.process.log(), least=1)
    finally:
        fake.close()
        agent.cleanup(None)
