"""The overlay data plane on real kernels: two "hosts" (network namespaces joined by an
underlay link) each get a bridge and a VXLAN device from `DataPlane.apply`, and two
"containers" (namespaces with a veth into their host's bridge) talk across them.

Needs root and network namespaces; no Docker. Every namespace is made with a prefix of
this test's own and removed afterwards, also when the test fails.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from agent.network.dataplane import DataPlane, OverlayPlan, Peer, mac_of

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="needs root and iproute2 (network namespaces)",
)

PREFIX = "swltdp-"
A, B = ipaddress.IPv4Address("10.99.0.1"), ipaddress.IPv4Address("10.99.0.2")
SUBNET = ipaddress.IPv4Network("10.0.9.0/24")
GATEWAY = ipaddress.IPv4Address("10.0.9.1")


def sh(cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True)


def ns(name: str) -> str:
    return PREFIX + name


def remove_namespaces() -> None:
    for line in sh("ip netns list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(PREFIX):
            sh(f"ip netns del {name}", check=False)


@pytest.fixture
def hosts() -> Iterator[None]:
    remove_namespaces()  # leftovers of an earlier run
    try:
        for n in ("ha", "hb", "ca", "cb"):
            sh(f"ip netns add {ns(n)}")
        sh(f"ip link add u0 netns {ns('ha')} type veth peer name u0 netns {ns('hb')}")
        for host, addr in (("ha", A), ("hb", B)):
            sh(f"ip -n {ns(host)} addr add {addr}/24 dev u0")
            sh(f"ip -n {ns(host)} link set u0 up")
        yield
    finally:
        remove_namespaces()


def netlink(name: str) -> Any:
    from pyroute2 import NetNS

    return lambda: NetNS(ns(name))


def plug_container(host: str, container: str, addr: ipaddress.IPv4Address, vni: int) -> None:
    """A veth from the container's namespace into the host's overlay bridge, with the
    address and MAC Docker would give it."""
    c = ns(container)
    sh(f"ip -n {ns(host)} link add v{container} type veth peer name eth0 netns {c}")
    sh(f"ip -n {ns(host)} link set v{container} master swl-br-{vni} mtu 1450 up")
    sh(f"ip -n {c} link set eth0 address {mac_of(addr)} mtu 1450 up")
    sh(f"ip -n {c} addr add {addr}/{SUBNET.prefixlen} dev eth0")
    sh(f"ip -n {c} route add default via {GATEWAY}")


def ping(container: str, addr: ipaddress.IPv4Address) -> bool:
    return sh(f"ip netns exec {ns(container)} ping -c 1 -W 1 {addr}", check=False).returncode == 0


def links(host: str) -> set[str]:
    out = sh(f"ip -n {ns(host)} -o link show").stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


@pytest.mark.usefixtures("hosts")
def test_containers_on_two_hosts_talk_over_the_overlay_and_stale_state_goes() -> None:
    if shutil.which("ping") is None:
        pytest.skip("needs ping")
    ca, cb = ipaddress.IPv4Address("10.0.9.2"), ipaddress.IPv4Address("10.0.9.3")
    plane_a, plane_b = DataPlane(A, netlink("ha")), DataPlane(B, netlink("hb"))
    plane_a.apply([OverlayPlan(4096, SUBNET, GATEWAY, frozenset({Peer(cb, B)}))])
    plane_b.apply([OverlayPlan(4096, SUBNET, GATEWAY, frozenset({Peer(ca, A)}))])
    plug_container("ha", "ca", ca, 4096)
    plug_container("hb", "cb", cb, 4096)

    assert ping("ca", cb)
    assert ping("cb", ca)
    assert ping("ca", GATEWAY)  # each host's own bridge answers for the gateway

    # Applying again changes nothing and breaks nothing (an agent restart).
    plane_a.apply([OverlayPlan(4096, SUBNET, GATEWAY, frozenset({Peer(cb, B)}))])
    assert ping("ca", cb)

    # The peer leaves: its entries go, and it is no longer reachable.
    plane_a.apply([OverlayPlan(4096, SUBNET, GATEWAY, frozenset())])
    fdb = sh(f"ip netns exec {ns('ha')} bridge fdb show dev swl-vx-4096").stdout
    assert mac_of(cb) not in fdb, fdb
    assert "10.0.9.3" not in sh(f"ip -n {ns('ha')} neigh show dev swl-vx-4096").stdout
    assert not ping("ca", cb)

    # The network's last task goes: no bridge or VXLAN device is left.
    plane_a.apply([])
    assert not {n for n in links("ha") if n.startswith("swl-")}


@pytest.mark.usefixtures("hosts")
def test_a_vxlan_device_with_stale_settings_is_replaced() -> None:
    sh(
        f"ip -n {ns('ha')} link add swl-vx-4097 type vxlan id 4097 local 10.99.0.1 "
        "dstport 4789 learning"
    )
    DataPlane(A, netlink("ha")).apply([OverlayPlan(4097, SUBNET, GATEWAY)])
    detail = sh(f"ip -n {ns('ha')} -d link show swl-vx-4097").stdout
    assert "nolearning" in detail
    assert "proxy" in detail
    assert "master swl-br-4097" in detail
