"""swarmctl's security commands end to end, against a real manager (on a one-member
etcd, so that a second manager can try to join): join-token rotation, the control API
over TCP with an admin certificate (flags and environment), and the certificate
expiry setting. Agents are hollow."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from common import pki
from common.api import control_pb2
from tests.harness import (
    Agent,
    EtcdCluster,
    Manager,
    free_port_pair,
    short_tmpdir,
    swarmctl,
    wait_until,
)

HOLLOW = ["--executor", "hollow"]


@dataclass
class Setup:
    etcd: EtcdCluster
    manager: Manager
    tcp: str  # the control API over TCP, tcp://HOST:PORT

    def ctl(self, *args: str) -> str:
        return swarmctl(self.manager.host, *args, check=True).stdout

    def token(self, role: str) -> str:
        return self.ctl("join-token", "-q", role).strip()

    def agent(self, token: str) -> Agent:
        return Agent([self.manager.addr], "unix:///nonexistent", join_token=token, extra=HOLLOW)

    def ready(self, node_id: str) -> bool:
        return any(n.id == node_id and n.status.state == 2 for n in self.manager.nodes())


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    etcd = EtcdCluster(1).start()
    manager: Manager | None = None
    try:
        control = f"127.0.0.1:{free_port_pair()}"
        manager = Manager(etcd=etcd.endpoints, extra=["--control-addr", control]).start()
        yield Setup(etcd, manager, f"tcp://{control}")
    finally:
        if manager is not None:
            manager.cleanup()
        etcd.cleanup()


def refused_join(agent: Agent) -> str:
    """Start an agent that must be refused; its log."""
    agent.start()
    assert agent.process.proc is not None
    assert agent.process.proc.wait(30) == 1
    return agent.process.log()


def test_rotating_the_worker_token(setup: Setup) -> None:
    old, manager_token = setup.token("worker"), setup.token("manager")
    out = setup.ctl("join-token", "--rotate", "worker")
    new = setup.token("worker")
    assert out.startswith("Successfully rotated worker join token.")
    assert new != old
    assert f"SWARMLET_JOIN_TOKEN={new} swarm-agent --manager" in out
    assert "--join-token " not in out  # not on a command line others see in ps
    assert setup.token("manager") == manager_token  # only the worker token changed
    late = setup.agent(old)
    try:
        log = refused_join(late)
        assert "rotated out" in log
        assert "Traceback" not in log
    finally:
        late.cleanup(None)
    agent = setup.agent(new).start()
    try:
        node_id = agent.node_id
        wait_until(lambda: setup.ready(node_id), 20, what="a join with the new token")
        # A worker's certificate is no admin certificate for the control API over TCP.
        certs = next(agent.state_dir.glob("**/certificates"))
        result = swarmctl(
            setup.tcp,
            "--tlscacert", str(certs / "ca.crt"),
            "--tlscert", str(certs / "node.crt"),
            "--tlskey", str(certs / "node.key"),
            "node", "ls",
        )  # fmt: skip
        assert result.returncode == 1
        assert "admin" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        agent.cleanup(None)


def test_rotating_the_manager_token(setup: Setup) -> None:
    old, worker_token = setup.token("manager"), setup.token("worker")
    out = setup.ctl("join-token", "--rotate", "manager")
    new = setup.token("manager")
    assert out.startswith("Successfully rotated manager join token.")
    assert new != old
    assert setup.token("worker") == worker_token
    late = Manager(etcd=setup.etcd.endpoints, extra=["--join-token", old])
    try:
        late.process.start()
        assert late.process.proc is not None
        assert late.process.proc.wait(30) == 1
        assert "rotated out" in late.process.log()
        assert "Traceback" not in late.process.log()
    finally:
        late.cleanup()
    second = Manager(etcd=setup.etcd.endpoints, extra=["--join-token", new]).start()
    try:
        second_id = (second.state_dir / "manager_id").read_text().strip()
        assert second_id in {n.id for n in setup.manager.nodes(managers=True) if n.role == 1}
    finally:
        second.cleanup()


def _ids(node_ls: str) -> list[str]:
    """The first column (node IDs) of `node ls` output, header left out."""
    return [line.split()[0] for line in node_ls.splitlines()[1:] if line.strip()]


def test_swarmctl_over_tcp_needs_an_admin_certificate(setup: Setup) -> None:
    admin = setup.manager.state_dir / "admin"
    files = {
        "TLSCACERT": admin / "ca.pem",
        "TLSCERT": admin / "cert.pem",
        "TLSKEY": admin / "key.pem",
    }
    flags = [arg for name, path in files.items() for arg in (f"--{name.lower()}", str(path))]
    out = swarmctl(setup.tcp, *flags, "node", "ls", check=True).stdout
    assert "Leader" in out
    env = {f"SWARMCTL_{name}": str(path) for name, path in files.items()}
    again = swarmctl(setup.tcp, "node", "ls", env=env, check=True).stdout
    # The same nodes, compared without their status: an agent stopped by an earlier
    # test turns Down when its heartbeat runs out, which may fall between the calls.
    assert _ids(again) == _ids(out)
    # No certificate: swarmctl says what to give.
    result = swarmctl(setup.tcp, "node", "ls")
    assert result.returncode == 1
    assert "--tlscacert, --tlscert and --tlskey" in result.stderr
    # An admin certificate from a CA of its own: the manager refuses the handshake.
    forged_dir = short_tmpdir("swl-forged-")
    try:
        cluster = setup.manager.api().GetCluster(control_pb2.GetClusterRequest()).cluster
        key, cert = pki.RootCA.create().issue(
            node_id="admin", role=pki.ROLE_ADMIN, cluster_id=cluster.id
        )
        pki.write_private(forged_dir / "key.pem", key)
        pki.write_private(forged_dir / "cert.pem", cert)
        result = swarmctl(
            setup.tcp,
            "--tlscacert", str(files["TLSCACERT"]),
            "--tlscert", str(forged_dir / "cert.pem"),
            "--tlskey", str(forged_dir / "key.pem"),
            "node", "ls",
        )  # fmt: skip
        assert result.returncode == 1
        assert result.stdout == ""
        assert "did not accept the certificate in --tlscert" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        shutil.rmtree(forged_dir, ignore_errors=True)


def test_swarmctl_names_the_agents_ports_and_tls_failures(setup: Setup) -> None:
    admin = setup.manager.state_dir / "admin"
    flags = [
        "--tlscacert", str(admin / "ca.pem"),
        "--tlscert", str(admin / "cert.pem"),
        "--tlskey", str(admin / "key.pem"),
    ]  # fmt: skip
    host, port = setup.manager.addr.rsplit(":", 1)
    # The dispatcher (--listen-addr) and the CA port after it serve agents.
    for address in (setup.manager.addr, f"{host}:{int(port) + 1}"):
        result = swarmctl(address, *flags, "node", "ls")
        assert result.returncode == 1
        assert result.stderr == (
            f"Error: tcp://{address} does not serve the control API: it serves agents (a "
            "manager's dispatcher, --listen-addr, or its CA port, the next one). Point "
            "swarmctl at the manager's control socket (unix://<state-dir>/control.sock on "
            "its host) or at the address given to swarm-manager --control-addr.\n"
        )
    # A CA of another cluster: the manager's certificate is not signed by it.
    other = short_tmpdir("swl-other-ca-")
    try:
        (other / "ca.pem").write_bytes(pki.RootCA.create().cert_pem)
        flags[1] = str(other / "ca.pem")
        result = swarmctl(setup.tcp, *flags, "node", "ls")
        assert result.returncode == 1
        assert result.stderr == (
            f"Error: TLS handshake with {setup.tcp} failed: the manager's certificate is not "
            "signed by the CA in --tlscacert: give this cluster's CA (ca.pem in "
            "<state-dir>/admin/ on a manager)\n"
        )
    finally:
        shutil.rmtree(other, ignore_errors=True)


def test_cluster_update_sets_the_certificate_expiry(setup: Setup) -> None:
    out = setup.ctl("cluster", "update", "--cert-expiry", "1h")
    assert out.endswith("CA Configuration:\n Expiry Duration: 1h\n")
    # Bad values are refused before they reach the manager (tests/unit/test_swarmctl_e2e.py).
    agent = setup.agent(setup.token("worker")).start()
    try:
        agent.node_id  # noqa: B018 - waits for the join
        cert = next(agent.state_dir.glob("**/certificates/node.crt")).read_bytes()
        ident = pki.identity(cert)
        assert 3590 <= ident.not_after - ident.not_before - pki.BACKDATE <= 3610
    finally:
        agent.cleanup(None)
