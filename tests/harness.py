"""Test harness: real swarm-manager / swarm-agent processes, swarmctl runs, and polling.

Everything started here is stopped by the fixtures that use it, also when a test fails,
and every container an agent of a test made is removed by its node-id label, so one
run never sees another's leftovers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import grpc

from common import pki
from common.api import ca_pb2, ca_pb2_grpc, control_pb2, control_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
T = TypeVar("T")

IMAGE = os.environ.get("SWARMLET_TEST_IMAGE", "swarmlet/demo:latest")
SLEEPER = "swarmlet/sleeper:latest"
# A sleeper with a HEALTHCHECK of its own: healthy once /tmp/ready exists (images/).
HEALTHCHECKED = "swarmlet/healthcheck:latest"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_port_pair() -> int:
    """A free port whose next port is free too (the manager's CA listens on port + 1)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports")


def remove_tree(path: Path) -> None:
    """Remove a test's state dir, unless SWARMLET_KEEP_TEST_STATE is set (to read the
    daemons' logs after a failure; the dir names are in the test's output)."""
    if os.environ.get("SWARMLET_KEEP_TEST_STATE"):
        print(f"kept {path}", file=sys.stderr)
        return
    shutil.rmtree(path, ignore_errors=True)


def short_tmpdir(prefix: str) -> Path:
    # Unix socket paths must stay under 108 bytes; pytest's tmp_path can be longer.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def wait_until(
    check: Callable[[], T | Literal[False] | None],
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll `check` until it returns something truthy, and return that; fail the test
    after `timeout`. (None and False mean "not yet", so `cond and value` works.)"""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (grpc.RpcError, OSError, AssertionError, StopIteration) as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


@dataclass
class Process:
    """A daemon started by a test, with its log in a file."""

    name: str
    args: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        log.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class EtcdCluster:
    """A real etcd cluster of `size` members on loopback, for tests of etcd faults."""

    def __init__(self, size: int = 3) -> None:
        self.dir = short_tmpdir("swl-etcd-")
        self.names = [f"e{i}" for i in range(1, size + 1)]
        self.client_ports = {n: free_port() for n in self.names}
        self.peer_ports = {n: free_port() for n in self.names}
        initial = ",".join(f"{n}=http://127.0.0.1:{self.peer_ports[n]}" for n in self.names)
        self.members: dict[str, Process] = {}
        for n in self.names:
            args = [
                "etcd", "--name", n, "--data-dir", str(self.dir / n),
                "--listen-client-urls", f"http://127.0.0.1:{self.client_ports[n]}",
                "--advertise-client-urls", f"http://127.0.0.1:{self.client_ports[n]}",
                "--listen-peer-urls", f"http://127.0.0.1:{self.peer_ports[n]}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_ports[n]}",
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", self.dir.name, "--log-level", "warn",
            ]  # fmt: skip
            self.members[n] = Process(n, args, self.dir / f"{n}.log")

    @property
    def endpoints(self) -> str:
        return ",".join(f"http://127.0.0.1:{self.client_ports[n]}" for n in self.names)

    def start(self) -> EtcdCluster:
        for p in self.members.values():
            p.start()
        wait_until(self.healthy, 30, what="the etcd cluster to be healthy")
        return self

    def healthy(self, names: list[str] | None = None) -> bool:
        import urllib.request

        for n in names or [n for n, p in self.members.items() if p.running]:
            url = f"http://127.0.0.1:{self.client_ports[n]}/health"
            with urllib.request.urlopen(url, timeout=2) as resp:
                if b'"health":"true"' not in resp.read():
                    return False
        return True

    def leader(self) -> str:
        """The name of the member that leads now (asked through etcd's HTTP gateway)."""
        import json
        import urllib.request

        for n, p in self.members.items():
            if not p.running:
                continue
            url = f"http://127.0.0.1:{self.client_ports[n]}/v3/maintenance/status"
            request = urllib.request.Request(url, data=b"{}", method="POST")
            with urllib.request.urlopen(request, timeout=2) as resp:
                status = json.loads(resp.read())
            if status.get("leader") and status["leader"] == status["header"]["member_id"]:
                return n
        raise AssertionError("no etcd member says it leads")

    def stop_member(self, name: str) -> None:
        self.members[name].stop(signal.SIGKILL)

    def start_member(self, name: str) -> None:
        self.members[name].start()

    def cleanup(self) -> None:
        for p in self.members.values():
            p.stop(signal.SIGKILL)
        remove_tree(self.dir)


class Manager:
    """A swarm-manager with its embedded etcd (or given --etcd), and a control client."""

    def __init__(self, *, etcd: str = "", heartbeat: str = "1s", extra: list[str] | None = None):
        self.state_dir = short_tmpdir("swl-m-")
        self.port = free_port_pair()
        self.addr = f"127.0.0.1:{self.port}"
        args = [
            str(BIN / "swarm-manager"),
            "--state-dir",
            str(self.state_dir),
            "--listen-addr",
            self.addr,
            "--heartbeat-period",
            heartbeat,
            "--log-format",
            "json",
        ]
        if etcd:
            args += ["--etcd", etcd]
        self.process = Process("manager", args + (extra or []), self.state_dir / "manager.log")
        self._channel: grpc.Channel | None = None
        self.control: control_pb2_grpc.ControlStub | None = None

    @property
    def socket(self) -> Path:
        return self.state_dir / "control.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def start(self, wait: bool = True) -> Manager:
        """Start the manager (and wait until it answers); stopped again if it does not."""
        self.process.start()
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                self.cleanup()
                raise
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if not self.process.running:
                raise AssertionError(f"manager exited:\n{self.process.log()[-3000:]}")
            if not self.socket.exists():
                return False
            self.connect()
            assert self.control is not None
            self.control.GetCluster(control_pb2.GetClusterRequest(), timeout=2)
            return True

        wait_until(ready, timeout, what="the manager to answer")

    def connect(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = grpc.insecure_channel(f"unix:{self.socket}")
        self.control = control_pb2_grpc.ControlStub(self._channel)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        return self.process.stop(sig)

    def cleanup(self) -> None:
        self.stop()
        remove_tree(self.state_dir)

    # -- convenience reads through the control API --

    def api(self) -> control_pb2_grpc.ControlStub:
        if self.control is None:
            self.connect()
        assert self.control is not None
        return self.control

    def tasks(self, service: str = "") -> list[Any]:
        filters = control_pb2.ListTasksRequest.Filters(service_ids=[service] if service else [])
        # The stream: a list of any length (ListTasks stops at gRPC's 4 MiB).
        parts = self.api().ListTasksStream(control_pb2.ListTasksRequest(filters=filters))
        return [t for part in parts for t in part.tasks]

    def service(self, ref: str) -> Any:
        """A service by id, id prefix or name."""
        return self.api().GetService(control_pb2.GetServiceRequest(service_id=ref)).service

    def running_tasks_named(self, name: str) -> list[Any]:
        return self.running_tasks(self.service(name).id)

    def running_tasks(self, service: str) -> list[Any]:
        return [t for t in self.tasks(service) if t.status.state == 512 and t.desired_state == 512]

    def nodes(self, *, managers: bool = False) -> list[Any]:
        """The nodes agents run on (and the managers' own nodes with managers=True)."""
        parts = self.api().ListNodesStream(control_pb2.ListNodesRequest())
        nodes = [n for part in parts for n in part.nodes]
        return [n for n in nodes if managers or n.role != 1]

    def join_token(self, role: str = "worker") -> str:
        tokens = self.api().GetCluster(control_pb2.GetClusterRequest()).cluster.root_ca.join_tokens
        return str(getattr(tokens, role))

    @property
    def ca_addr(self) -> str:
        """Where joining nodes get their certificates (the port after --listen-addr's)."""
        return f"127.0.0.1:{self.port + 1}"

    def join_worker(self) -> WorkerIdentity:
        """A new worker node's identity, issued by the CA for the worker join token, as
        an agent would get it; for tests that speak the dispatcher's protocol by hand."""
        ca_cert = self.api().GetCluster(control_pb2.GetClusterRequest()).cluster.root_ca.ca_cert
        key = pki.new_key()
        request = ca_pb2.IssueNodeCertificateRequest(csr=pki.make_csr(key), token=self.join_token())
        with tls_channel(self.ca_addr, ca_cert) as channel:
            issued = ca_pb2_grpc.NodeCAStub(channel).IssueNodeCertificate(request, timeout=10)
        return WorkerIdentity(issued.node_id, pki.key_pem(key), issued.certificate, ca_cert)


@dataclass(frozen=True)
class WorkerIdentity:
    """A worker node's id, private key and certificate (PEM), and the cluster's CA."""

    node_id: str
    key: bytes
    cert: bytes
    ca_cert: bytes

    def channel(self, addr: str) -> grpc.Channel:
        return tls_channel(addr, self.ca_cert, self.key, self.cert)


def tls_channel(
    addr: str, ca: bytes, key: bytes | None = None, cert: bytes | None = None
) -> grpc.Channel:
    """A channel to a manager's TLS port, as a node with `key` and `cert` (if given)."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
    channel: grpc.Channel = grpc.secure_channel(
        addr, creds, options=[("grpc.ssl_target_name_override", pki.SERVER_NAME)]
    )
    return channel


class Agent:
    """A swarm-agent on a Docker engine (or a farm of hollow ones, with `extra`)."""

    def __init__(
        self,
        managers: list[str],
        docker_host: str,
        hostname: str = "",
        state_dir: Path | None = None,
        join_token: str = "",
        extra: list[str] | None = None,
    ):
        self.state_dir = state_dir or short_tmpdir("swl-a-")
        self.docker_host = docker_host
        args = [
            str(BIN / "swarm-agent"),
            "--state-dir",
            str(self.state_dir),
            "--docker-host",
            docker_host,
            "--log-format",
            "json",
            *(extra or []),
        ]
        for m in managers:
            args += ["--manager", m]
        if hostname:
            args += ["--hostname", hostname]
        if join_token:
            args += ["--join-token", join_token]
        self.process = Process("agent", args, self.state_dir / "agent.log")

    @property
    def node_id(self) -> str:
        """The node id in the agent's certificate (it has one once it joined)."""

        def joined() -> str:
            cert = next(self.state_dir.glob("**/certificates/node.crt"))
            return pki.identity(cert.read_bytes()).node_id

        return wait_until(joined, 30, what="the agent to join")

    def start(self) -> Agent:
        self.process.start()
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        return self.process.stop(sig)

    def cleanup(self, docker: Any) -> None:
        """Stop the agent and remove its containers (`docker` is None for hollow agents)."""
        self.stop()
        for cert in self.state_dir.glob("**/certificates/node.crt"):
            if docker is not None:
                remove_node_containers(docker, pki.identity(cert.read_bytes()).node_id)
        remove_tree(self.state_dir)


def remove_node_containers(docker: Any, node_id: str) -> None:
    for c in docker.containers.list(all=True, filters={"label": f"swarmlet.node.id={node_id}"}):
        with contextlib.suppress(Exception):
            c.remove(force=True)


def remove_overlays(docker: Any) -> None:
    """What an agent's network data plane made on this host: the engine's networks for
    overlays, the bridges and VXLAN devices, the nftables table (an agent that stops
    leaves them, as it leaves its containers running)."""
    from agent.network.cleanup import remove_host_state
    from agent.network.engine import LABEL_NETWORK_ID

    for net in docker.networks.list(filters={"label": LABEL_NETWORK_ID}):
        with contextlib.suppress(Exception):
            net.remove()
    remove_host_state()


def swarmctl(
    host: str,
    *args: str,
    timeout: float = 120.0,
    check: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real swarmctl against `host` (with `env` added to its environment)."""
    result = subprocess.run(
        [str(BIN / "swarmctl"), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "SWARMCTL_HOST": host, "COLUMNS": "200", **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"swarmctl {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result
