"""Join tokens, certificates and mutual TLS, with real managers and agents (hollow ones:
what is tested is the security of the sessions, not the containers)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from common import pki
from common.api import (
    ca_pb2,
    ca_pb2_grpc,
    control_pb2,
    control_pb2_grpc,
    dispatcher_pb2,
    dispatcher_pb2_grpc,
)
from tests.harness import Agent, Manager, free_port_pair, wait_until

HOLLOW = ["--executor", "hollow"]


@pytest.fixture
def manager() -> Iterator[Manager]:
    m = Manager().start()
    try:
        yield m
    finally:
        m.cleanup()


def hollow_agent(manager: Manager, token: str) -> Agent:
    return Agent([manager.addr], "unix:///nonexistent", join_token=token, extra=HOLLOW)


def node_ready(manager: Manager, node_id: str) -> bool:
    return any(n.id == node_id and n.status.state == 2 for n in manager.nodes())


def dispatcher_call(addr: str, creds: grpc.ChannelCredentials) -> None:
    """Open a session with the given credentials; raises grpc.RpcError when refused."""
    options = [("grpc.ssl_target_name_override", pki.SERVER_NAME)]
    with grpc.secure_channel(addr, creds, options=options) as channel:
        stream = dispatcher_pb2_grpc.DispatcherStub(channel).Session(
            dispatcher_pb2.SessionRequest(), timeout=5
        )
        next(iter(stream))


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(link[len("socket:[") : -1])
    return inodes


def tcp_listen_ports(pid: int) -> set[int]:
    """The TCP (v4 and v6) ports process `pid` listens on, from /proc/PID/net/tcp*."""
    inodes = socket_inodes(pid)
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                ports.add(int(local.rpartition(":")[2], 16))
    return ports


def unix_listen_paths(pid: int) -> set[str]:
    """The paths of the unix sockets process `pid` listens on, from /proc/PID/net/unix."""
    inodes = socket_inodes(pid)
    paths = set()
    for line in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        # Num RefCount Protocol Flags Type St Inode [Path]; flag 0x10000 is listening.
        if len(fields) >= 8 and fields[6] in inodes and int(fields[3], 16) & 0x10000:
            paths.add(fields[7])
    return paths


def test_default_manager_has_no_plaintext_tcp_listener(manager: Manager) -> None:
    """The embedded etcd (no auth, the root CA key inside) is on owner-only unix sockets
    in the 0700 state dir; the manager listens on TCP only for the dispatcher (mutual
    TLS) and the CA for joining nodes (TLS)."""
    assert manager.process.proc is not None
    manager_pid = manager.process.proc.pid
    etcd_pid = int((manager.state_dir / "etcd.pid").read_text())
    assert Path(f"/proc/{etcd_pid}/exe").resolve().name == "etcd"
    assert tcp_listen_ports(manager_pid) == {manager.port, manager.port + 1}
    assert tcp_listen_ports(etcd_pid) == set()
    etcd_sockets = unix_listen_paths(etcd_pid)
    assert etcd_sockets, "the embedded etcd listens on no unix socket"
    for path in etcd_sockets:
        # etcd binds them relative to its working directory, the state dir.
        sock = manager.state_dir / Path(path).name
        assert sock.exists(), path
        assert sock.stat().st_mode & 0o777 == 0o600, sock
    assert {Path(p).name for p in etcd_sockets} == {"etcd.sock:0", "etcd-peer.sock:0"}
    assert manager.socket.stat().st_mode & 0o777 == 0o600  # the control socket
    assert manager.state_dir.stat().st_mode & 0o777 == 0o700
    assert (manager.state_dir / "etcd").stat().st_mode & 0o777 == 0o700


def test_join_with_token_gives_a_0600_certificate_and_a_ready_node(manager: Manager) -> None:
    agent = hollow_agent(manager, manager.join_token()).start()
    try:
        node_id = agent.node_id
        wait_until(lambda: node_ready(manager, node_id), 20, what="the node to be ready")
        folder = agent.state_dir / "1" / "certificates"
        if not folder.exists():
            folder = agent.state_dir / "certificates"
        for name in ("node.key", "node.crt", "ca.crt"):
            assert (folder / name).stat().st_mode & 0o777 == 0o600
        ident = pki.identity((folder / "node.crt").read_bytes())
        cluster = manager.api().GetCluster(control_pb2.GetClusterRequest()).cluster
        assert ident.role == pki.ROLE_WORKER
        assert ident.cluster_id == cluster.id
        assert not cluster.root_ca.ca_key  # the CA key never leaves the manager
    finally:
        agent.cleanup(None)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("not-a-token", "invalid join token"),
        ("SWMTKN-1-" + "0" * 50 + "-" + "1" * 25, "does not match the join token"),
    ],
)
def test_malformed_or_foreign_token_is_refused(manager: Manager, token: str, message: str) -> None:
    agent = hollow_agent(manager, token).start()
    try:
        assert agent.process.proc is not None
        assert agent.process.proc.wait(30) == 1
        assert message in agent.process.log()
        assert "Traceback" not in agent.process.log()
        assert not manager.nodes()
    finally:
        agent.cleanup(None)


def test_wrong_and_rotated_tokens_are_unauthenticated(manager: Manager) -> None:
    old = manager.join_token()
    cluster = manager.api().GetCluster(control_pb2.GetClusterRequest()).cluster
    manager.api().UpdateCluster(
        control_pb2.UpdateClusterRequest(
            cluster_version=cluster.meta.version,
            spec=cluster.spec,
            rotate_worker_token=True,
        )
    )
    assert manager.join_token() != old
    ca_addr = pki.ca_address(manager.addr)
    creds = grpc.ssl_channel_credentials(root_certificates=cluster.root_ca.ca_cert)
    options = [("grpc.ssl_target_name_override", pki.SERVER_NAME)]
    right_ca_wrong_secret = str(pki.JoinToken(cluster.root_ca.ca_digest, "z" * 25))
    with grpc.secure_channel(ca_addr, creds, options=options) as channel:
        stub = ca_pb2_grpc.NodeCAStub(channel)
        for token, message in [(old, "rotated out"), (right_ca_wrong_secret, "not valid")]:
            with pytest.raises(grpc.RpcError) as err:
                stub.IssueNodeCertificate(
                    ca_pb2.IssueNodeCertificateRequest(
                        csr=pki.make_csr(pki.new_key()), token=token
                    ),
                    timeout=5,
                )
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert message in (err.value.details() or "")
    # The current token works.
    agent = hollow_agent(manager, manager.join_token()).start()
    try:
        wait_until(lambda: node_ready(manager, agent.node_id), 20, what="join with the new token")
    finally:
        agent.cleanup(None)


def test_forged_certificate_cannot_reach_the_dispatcher(manager: Manager) -> None:
    agent = hollow_agent(manager, manager.join_token()).start()
    try:
        node_id = agent.node_id
        cluster = manager.api().GetCluster(control_pb2.GetClusterRequest()).cluster
        forger = pki.RootCA.create()  # a CA of the forger's own, same names inside
        key, cert = forger.issue(node_id=node_id, role=pki.ROLE_WORKER, cluster_id=cluster.id)
        creds = grpc.ssl_channel_credentials(
            root_certificates=cluster.root_ca.ca_cert, private_key=key, certificate_chain=cert
        )
        with pytest.raises(grpc.RpcError) as err:
            dispatcher_call(manager.addr, creds)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake fails
        # Without any client certificate the dispatcher refuses too.
        with pytest.raises(grpc.RpcError):
            dispatcher_call(
                manager.addr,
                grpc.ssl_channel_credentials(root_certificates=cluster.root_ca.ca_cert),
            )
    finally:
        agent.cleanup(None)


def test_certificate_of_another_cluster_is_refused(manager: Manager) -> None:
    other = Manager().start()
    agent = hollow_agent(other, other.join_token()).start()
    try:
        agent.node_id  # noqa: B018 - waits for the join
        folder = next(agent.state_dir.glob("**/certificates"))
        ours = manager.api().GetCluster(control_pb2.GetClusterRequest()).cluster
        creds = grpc.ssl_channel_credentials(
            root_certificates=ours.root_ca.ca_cert,
            private_key=(folder / "node.key").read_bytes(),
            certificate_chain=(folder / "node.crt").read_bytes(),
        )
        with pytest.raises(grpc.RpcError) as err:
            dispatcher_call(manager.addr, creds)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        agent.cleanup(None)
        other.cleanup()


def test_removed_node_is_refused_with_its_old_certificate(manager: Manager) -> None:
    agent = hollow_agent(manager, manager.join_token()).start()
    try:
        node_id = agent.node_id
        wait_until(lambda: node_ready(manager, node_id), 20, what="the node to be ready")
        manager.api().RemoveNode(control_pb2.RemoveNodeRequest(node_id=node_id, force=True))
        assert agent.process.proc is not None
        assert agent.process.proc.wait(30) == 1
        assert "removed from the cluster" in agent.process.log()
        assert node_id not in {n.id for n in manager.nodes()}
    finally:
        agent.cleanup(None)


def test_a_running_manager_node_is_not_removed(manager: Manager) -> None:
    # Found by the fuzz test: `node rm` of a running manager's node (its stored state is
    # not READY) went through, and that manager could not start again ("not part of"
    # the cluster) and vanished from node ls.
    manager_id = (manager.state_dir / "manager_id").read_text().strip()
    for force in (False, True):
        with pytest.raises(grpc.RpcError) as err:
            manager.api().RemoveNode(control_pb2.RemoveNodeRequest(node_id=manager_id, force=force))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "is a running manager" in (err.value.details() or "")
    assert manager_id in {n.id for n in manager.nodes(managers=True)}
    manager.stop()
    manager.start()  # it is still a member of its cluster


def test_control_api_over_tcp_needs_an_admin_certificate() -> None:
    port = free_port_pair()
    m = Manager(extra=["--control-addr", f"127.0.0.1:{port}"]).start()
    try:
        admin = m.state_dir / "admin"
        ca = (admin / "ca.pem").read_bytes()
        options = [("grpc.ssl_target_name_override", pki.SERVER_NAME)]

        def list_nodes(creds: grpc.ChannelCredentials) -> None:
            with grpc.secure_channel(f"127.0.0.1:{port}", creds, options=options) as channel:
                control_pb2_grpc.ControlStub(channel).ListNodes(
                    control_pb2.ListNodesRequest(), timeout=5
                )

        with pytest.raises(grpc.RpcError):
            list_nodes(grpc.ssl_channel_credentials(root_certificates=ca))
        # A worker's certificate is not enough.
        agent = hollow_agent(m, m.join_token()).start()
        try:
            agent.node_id  # noqa: B018
            folder = next(agent.state_dir.glob("**/certificates"))
            with pytest.raises(grpc.RpcError) as err:
                list_nodes(
                    grpc.ssl_channel_credentials(
                        root_certificates=ca,
                        private_key=(folder / "node.key").read_bytes(),
                        certificate_chain=(folder / "node.crt").read_bytes(),
                    )
                )
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        finally:
            agent.cleanup(None)
        list_nodes(
            grpc.ssl_channel_credentials(
                root_certificates=ca,
                private_key=(admin / "key.pem").read_bytes(),
                certificate_chain=(admin / "cert.pem").read_bytes(),
            )
        )
        assert (admin / "key.pem").stat().st_mode & 0o777 == 0o600
    finally:
        m.cleanup()


@pytest.mark.slow
def test_certificates_renew_by_themselves() -> None:
    m = Manager(extra=["--cert-expiry", "1m"]).start()
    agent = hollow_agent(m, m.join_token()).start()
    try:
        node_id = agent.node_id
        cert_file = next(agent.state_dir.glob("**/certificates/node.crt"))
        first = cert_file.read_bytes()
        ident = pki.identity(first)
        assert 55 < ident.not_after - ident.not_before - pki.BACKDATE < 65  # 1 minute
        renewed = wait_until(
            lambda: cert_file.read_bytes() != first and cert_file.read_bytes(),
            120,
            interval=1,
            what="the certificate to be renewed",
        )
        assert pki.identity(renewed).node_id == node_id
        wait_until(lambda: node_ready(m, node_id), 20, what="the node to stay ready")
        time.sleep(2)
        assert node_ready(m, node_id)
    finally:
        agent.cleanup(None)
        m.cleanup()
