"""The overlay data plane on real kernels: two "hosts" (network namespaces joined by an
underlay link) each get a bridge and a VXLAN device from `DataPlane.apply`, and two
"containers" (namespaces with a veth into their host's bridge) talk across them.

Needs root and network namespaces; no Docker."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from agent.network.dataplane import DataPlane, OverlayPlan, Peer, mac_of
from tests.netnslib import Namespaces, namespaces, needs_netns, sh

pytestmark = needs_netns

A, B = ipaddress.IPv4Address("10.99.0.1"), ipaddress.IPv4Address("10.99.0.2")
SUBNET = ipaddress.IPv4Network("10.0.9.0/24")
GATEWAY = ipaddress.IPv4Address("10.0.9.1")


@pytest.fixture
def hosts() -> Iterator[Namespaces]:
    with namespaces("swltdp-") as ns:
        ns.add("ha", "hb", "ca", "cb")
        sh(f"ip link add u0 netns {ns('ha')} type veth peer name u0 netns {ns('hb')}")
        for host, addr in (("ha", A), ("hb", B)):
            sh(f"ip -n {ns(host)} addr add {addr}/24 dev u0")
            sh(f"ip -n {ns(host)} link set u0 up")
        yield ns


def ping(ns: Namespaces, container: str, addr: ipaddress.IPv4Address) -> bool:
    return sh(f"ip netns exec {ns(container)} ping -c 1 -W 1 {addr}", check=False).returncode == 0


def links(ns: Namespaces, host: str) -> set[str]:
    out = sh(f"ip -n {ns(host)} -o link show").stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def test_containers_on_two_hosts_talk_over_the_overlay_and_stale_state_goes(
    hosts: Namespaces,
) -> None:
    ns = hosts
    ca, cb = ipaddress.IPv4Address("10.0.9.2"), ipaddress.IPv4Address("10.0.9.3")
    plane_a, plane_b = DataPlane(A, ns.netlink("ha")), DataPlane(B, ns.netlink("hb"))
    plane_a.apply([OverlayPlan(4096, SUBNET, GATEWAY, frozenset({Peer(cb, B)}))])
    plane_b.apply([OverlayPlan(4096, SUBNET, GATEWAY, frozenset({Peer(ca, A)}))])
    ns.plug("ha", "ca", str(ca), "swl-br-4096", 24, str(GATEWAY))
    ns.plug("hb", "cb", str(cb), "swl-br-4096", 24, str(GATEWAY))

    assert ping(ns, "ca", cb)
    assert ping(ns, "cb", ca)
    assert ping(ns, "ca", GATEWAY)  # each host's own bridge answers for the gateway

    # Applying again changes nothing and breaks nothing (an agent restart).
    plane_a.apply([OverlayPlan(4096, SUBNET, GATEWAY, frozenset({Peer(cb, B)}))])
    assert ping(ns, "ca", cb)

    # The peer leaves: its entries go, and it is no longer reachable.
    plane_a.apply([OverlayPlan(4096, SUBNET, GATEWAY, frozenset())])
    fdb = sh(f"ip netns exec {ns('ha')} bridge fdb show dev swl-vx-4096").stdout
    assert mac_of(cb) not in fdb, fdb
    assert str(cb) not in sh(f"ip -n {ns('ha')} neigh show dev swl-vx-4096").stdout
    assert not ping(ns, "ca", cb)

    # The network's last task goes: no bridge or VXLAN device is left.
    plane_a.apply([])
    assert not {n for n in links(ns, "ha") if n.startswith("swl-")}


def test_a_vxlan_device_with_stale_settings_is_replaced(hosts: Namespaces) -> None:
    ns = hosts
    sh(
        f"ip -n {ns('ha')} link add swl-vx-4097 type vxlan id 4097 local 10.99.0.1 "
        "dstport 4789 learning"
    )
    DataPlane(A, ns.netlink("ha")).apply([OverlayPlan(4097, SUBNET, GATEWAY)])
    detail = sh(f"ip -n {ns('ha')} -d link show swl-vx-4097").stdout
    assert "nolearning" in detail
    assert "proxy" in detail
    assert "master swl-br-4097" in detail
