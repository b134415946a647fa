"""Network namespaces for data-plane tests: "hosts" and "containers" made with `ip`,
all named with one prefix per test module and removed afterwards (and before, in case an
earlier run left some)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="needs root and iproute2 (network namespaces)",
)

# A TCP server that answers every connection with its name and closes it.
NAME_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[2]))); s.listen(64)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.sendall(sys.argv[1].encode()); c.close()
"""

# Connects to HOST:PORT COUNT times and prints what each connection said.
NAME_CLIENT = """
import socket, sys
for _ in range(int(sys.argv[3])):
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    print(s.recv(100).decode(), flush=True); s.close()
"""


def sh(cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True)


class Namespaces:
    """Namespaces named `prefix + name`, removed by `remove_all`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.servers: list[subprocess.Popen[str]] = []

    def __call__(self, name: str) -> str:
        return self.prefix + name

    def add(self, *names: str) -> None:
        for name in names:
            sh(f"ip netns add {self(name)}")
            sh(f"ip -n {self(name)} link set lo up")

    def remove_all(self) -> None:
        for proc in self.servers:
            proc.kill()
            proc.wait()
        self.servers.clear()
        for line in sh("ip netns list", check=False).stdout.splitlines():
            name = line.split()[0] if line.strip() else ""
            if name.startswith(self.prefix):
                sh(f"ip netns del {name}", check=False)

    def netlink(self, name: str) -> Any:
        from pyroute2 import NetNS

        return lambda: NetNS(self(name))

    def plug(
        self, host: str, container: str, addr: str, bridge: str, prefixlen: int, gateway: str
    ) -> None:
        """A veth from `container` into `host`'s `bridge`, with Docker's MAC for `addr`."""
        import ipaddress

        from agent.network.dataplane import mac_of

        c = self(container)
        sh(f"ip -n {self(host)} link add v{container} type veth peer name eth0 netns {c}")
        sh(f"ip -n {self(host)} link set v{container} master {bridge} mtu 1450 up")
        mac = mac_of(ipaddress.IPv4Address(addr))
        sh(f"ip -n {c} link set eth0 address {mac} mtu 1450 up")
        sh(f"ip -n {c} addr add {addr}/{prefixlen} dev eth0")
        sh(f"ip -n {c} route add default via {gateway}")

    def serve_name(self, container: str, port: int) -> None:
        """Start NAME_SERVER in `container`, answering with the container's name."""
        proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self(container),
                sys.executable,
                "-c",
                NAME_SERVER,
                container,
                str(port),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.servers.append(proc)
        assert proc.stdout is not None
        deadline = time.monotonic() + 10
        while proc.stdout.readline().strip() != "ready":
            assert time.monotonic() < deadline, f"the server in {container} did not start"

    def ask_names(self, container: str, host: str, port: int, count: int) -> list[str]:
        """What `count` connections from `container` to host:port were told."""
        out = sh(
            f"ip netns exec {self(container)} {sys.executable} -c '{NAME_CLIENT}' "
            f"{host} {port} {count}",
            check=False,
        )
        return out.stdout.split()


@contextmanager
def namespaces(prefix: str) -> Iterator[Namespaces]:
    ns = Namespaces(prefix)
    ns.remove_all()
    try:
        yield ns
    finally:
        ns.remove_all()
