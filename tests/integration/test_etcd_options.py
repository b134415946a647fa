"""The manager on an etcd of the operator's: TLS with client certificates, user/password
auth, and the space-quota alarm surfaced. Every etcd here is a real one."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from common import pki
from tests.harness import Manager, Process, free_port, short_tmpdir, swarmctl, wait_until


@dataclass
class Etcd:
    process: Process
    url: str
    dir: Path

    def cleanup(self) -> None:
        self.process.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_etcd(extra: list[str], scheme: str = "http") -> Etcd:
    folder = short_tmpdir("swl-etcd-")
    port, peer = free_port(), free_port()
    url = f"{scheme}://127.0.0.1:{port}"
    args = [
        "etcd", "--name", "e", "--data-dir", str(folder / "data"),
        "--listen-client-urls", url, "--advertise-client-urls", url,
        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"e=http://127.0.0.1:{peer}", "--log-level", "warn", *extra,
    ]  # fmt: skip
    process = Process("etcd", args, folder / "etcd.log")
    process.start()
    time.sleep(1.0)
    assert process.running, process.log()
    return Etcd(process, url, folder)


@pytest.fixture
def tls_etcd() -> Iterator[tuple[Etcd, Path]]:
    certs = short_tmpdir("swl-certs-")
    ca = pki.RootCA.create()
    key, cert = ca.issue(node_id="etcd", role=pki.ROLE_MANAGER, cluster_id="etcd",
                         server_names=["127.0.0.1", "localhost"])  # fmt: skip
    ckey, ccert = ca.issue(node_id="manager", role=pki.ROLE_MANAGER, cluster_id="etcd")
    for name, data in [("ca.pem", ca.cert_pem), ("server.pem", cert), ("server-key.pem", key),
                       ("client.pem", ccert), ("client-key.pem", ckey)]:  # fmt: skip
        pki.write_private(certs / name, data)
    etcd = start_etcd(
        ["--cert-file", str(certs / "server.pem"), "--key-file", str(certs / "server-key.pem"),
         "--trusted-ca-file", str(certs / "ca.pem"), "--client-cert-auth"],
        scheme="https",
    )  # fmt: skip
    try:
        yield etcd, certs
    finally:
        etcd.cleanup()
        shutil.rmtree(certs, ignore_errors=True)


def test_etcd_over_tls_with_client_certificates(tls_etcd: tuple[Etcd, Path]) -> None:
    etcd, certs = tls_etcd
    # Without a client certificate the manager cannot use it, and says where it failed.
    bare = Manager(etcd=etcd.url, extra=["--etcd-cacert", str(certs / "ca.pem")])
    try:
        bare.process.start()
        assert bare.process.proc is not None
        assert bare.process.proc.wait(60) == 1
        assert etcd.url in bare.process.log()
    finally:
        bare.cleanup()
    m = Manager(
        etcd=etcd.url,
        extra=[
            "--etcd-cacert",
            str(certs / "ca.pem"),
            "--etcd-cert",
            str(certs / "client.pem"),
            "--etcd-key",
            str(certs / "client-key.pem"),
        ],
    ).start()
    try:
        swarmctl(m.host, "service", "create", "-d", "--name", "web", "--replicas", "0", "x",
                 check=True)  # fmt: skip
        assert "web" in swarmctl(m.host, "service", "ls", check=True).stdout
    finally:
        m.cleanup()


def etcdctl(url: str, *args: str, user: str = "") -> None:
    cmd = ["etcdctl", f"--endpoints={url}", *args]
    if user:
        cmd.insert(1, f"--user={user}")
    subprocess.run(cmd, check=True, capture_output=True,
                   env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})  # fmt: skip


def test_etcd_user_and_password() -> None:
    etcd = start_etcd([])
    try:
        etcdctl(etcd.url, "user", "add", "root:rootpw")
        etcdctl(etcd.url, "auth", "enable")
        wrong = Manager(etcd=etcd.url, extra=["--etcd-user", "root"])
        wrong.process.env["SWARMLET_ETCD_PASSWORD"] = "nope"
        try:
            wrong.process.start()
            assert wrong.process.proc is not None
            assert wrong.process.proc.wait(60) == 1
            log = wrong.process.log()
            assert "Traceback" not in log
            assert etcd.url in log
        finally:
            wrong.cleanup()
        m = Manager(etcd=etcd.url, extra=["--etcd-user", "root"])
        m.process.env["SWARMLET_ETCD_PASSWORD"] = "rootpw"
        m.start()
        try:
            swarmctl(m.host, "service", "create", "-d", "--name", "web", "--replicas", "0", "x",
                     check=True)  # fmt: skip
        finally:
            m.cleanup()
    finally:
        etcd.cleanup()


def test_space_quota_alarm_is_surfaced() -> None:
    # A tiny quota, filled by writes through another client.
    etcd = start_etcd(["--quota-backend-bytes", str(2 * 1024 * 1024)])
    m = Manager(etcd=etcd.url).start()
    try:
        blob = "x" * 100_000
        for i in range(200):
            result = subprocess.run(  # noqa: PLW1510 - the exit code is what is checked
                ["etcdctl", f"--endpoints={etcd.url}", "put", f"/filler/{i}", blob],
                capture_output=True, text=True, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
            )  # fmt: skip
            if result.returncode != 0:
                break
        else:
            pytest.fail("etcd never raised its space quota alarm")

        def refused() -> str:
            r = swarmctl(m.host, "service", "create", "-d", "--name", "late", "--replicas", "0",
                         "x")  # fmt: skip
            return r.stderr if r.returncode != 0 and "space quota" in r.stderr else ""

        message = wait_until(refused, 30, what="writes refused with the quota alarm")
        assert "etcdctl alarm disarm" in message
        assert "Traceback" not in message
        # Reads still work: the operator can look at what is there.
        assert swarmctl(m.host, "service", "ls").returncode == 0
    finally:
        m.cleanup()
        etcd.cleanup()
