"""The manager writes its own node's identity for the agent on its host, in the layout
the agent reads: an agent started with that state dir is the manager's node."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from agent import credentials
from common import nodecerts, pki
from common.api import objects_pb2
from manager.ca.bootstrap import init_root_ca
from manager.ca.credentials import local_node_dir, write_local_node


def cluster(cluster_id: str = "c1") -> objects_pb2.Cluster:
    c = objects_pb2.Cluster(id=cluster_id)
    init_root_ca(c)
    return c


def test_the_agent_loads_the_managers_node_identity(tmp_path: Path) -> None:
    c = cluster()
    target = write_local_node(tmp_path, c, "managerid1")
    assert target == local_node_dir(tmp_path) == tmp_path / "node"
    creds = credentials.load(target)
    assert creds is not None
    ident = creds.identity
    assert (ident.node_id, ident.role, ident.cluster_id) == ("managerid1", pki.ROLE_MANAGER, "c1")
    assert creds.ca_pem == c.root_ca.ca_cert
    # Signed by the cluster's CA, and only readable by the manager's user.
    pki.load_cert(creds.cert_pem).verify_directly_issued_by(pki.load_cert(c.root_ca.ca_cert))
    for f in (target / "certificates").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert stat.S_IMODE((target / "certificates").stat().st_mode) == 0o700


def test_a_good_certificate_is_kept_across_restarts(tmp_path: Path) -> None:
    # The agent renews its certificate and keeps the new one there: a manager restart
    # must not undo that.
    c = cluster()
    write_local_node(tmp_path, c, "managerid1")
    renewed = nodecerts.NodeCredentials(b"renewed key", *_issue(c, "managerid1"))
    nodecerts.save(local_node_dir(tmp_path), renewed)
    write_local_node(tmp_path, c, "managerid1")
    assert (local_node_dir(tmp_path) / "certificates" / "node.key").read_bytes() == b"renewed key"


@pytest.mark.parametrize("case", ["other cluster", "other node", "expired", "garbage"])
def test_a_certificate_that_will_not_do_is_replaced(
    tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = cluster()
    target = local_node_dir(tmp_path)
    if case == "other cluster":
        other = cluster("c2")
        nodecerts.save(target, nodecerts.NodeCredentials(b"k", *_issue(other, "managerid1")))
    elif case == "other node":
        nodecerts.save(target, nodecerts.NodeCredentials(b"k", *_issue(c, "someoneelse")))
    elif case == "expired":
        # Expired while no agent ran to renew it.
        nodecerts.save(target, nodecerts.NodeCredentials(b"k", *_issue(c, "managerid1")))
        later = time.time() + 7200
        monkeypatch.setattr(time, "time", lambda: later)
    else:
        nodecerts.save(target, nodecerts.NodeCredentials(b"k", b"not a certificate", b"x"))
    write_local_node(tmp_path, c, "managerid1")
    creds = credentials.load(target)
    assert creds is not None
    assert creds.key_pem != b"k"
    assert creds.node_id == "managerid1"
    assert creds.identity.cluster_id == "c1"
    assert creds.identity.not_after > time.time()
    monkeypatch.undo()


def _issue(c: objects_pb2.Cluster, node_id: str, lifetime: float = 3600.0) -> tuple[bytes, bytes]:
    _key, cert = pki.RootCA(c.root_ca.ca_cert, c.root_ca.ca_key).issue(
        node_id=node_id, role=pki.ROLE_MANAGER, cluster_id=c.id, lifetime=lifetime
    )
    return cert, c.root_ca.ca_cert
