"""Virtual IPs and the routing mesh on a real kernel, without IPVS: one "host"
namespace with an overlay bridge and three "containers", the NAT table loaded with
`nft`, and real TCP connections counted by which backend answered."""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
from collections import Counter
from collections.abc import Iterator

import pytest

from agent.network.dataplane import DataPlane, OverlayPlan
from agent.network.rules import NodeRules, PublishedPort, RulesError, VirtualIP, apply, render
from tests.netnslib import Namespaces, namespaces, needs_netns, sh

pytestmark = [
    needs_netns,
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft (apt-get install nftables)"),
]

IP = ipaddress.IPv4Address
SUBNET = ipaddress.IPv4Network("10.0.9.0/24")
GATEWAY = IP("10.0.9.1")
VIP = IP("10.0.9.250")
NODE_ADDR = IP("10.0.9.254")  # this node's own address on the network
C1, C2, C3 = "10.0.9.11", "10.0.9.12", "10.0.9.13"
OTHER = ipaddress.IPv4Network("10.0.10.0/24")
OTHER_GATEWAY = IP("10.0.10.1")
C4 = "10.0.10.14"
# The virtual IP and this node's own address sit on the bridge (the data plane puts them).
PLANS = [
    OverlayPlan(4200, SUBNET, GATEWAY, extra=frozenset({VIP, NODE_ADDR})),
    OverlayPlan(4201, OTHER, OTHER_GATEWAY),
]


@pytest.fixture
def host() -> Iterator[Namespaces]:
    with namespaces("swltnat-") as ns:
        ns.add("h", "c1", "c2", "c3", "c4", "x")
        h = ns("h")
        sh(f"ip netns exec {h} sysctl -qw net.ipv4.ip_forward=1")
        sh(f"ip netns exec {h} sysctl -qw net.bridge.bridge-nf-call-iptables=1", check=False)
        plane = DataPlane(IP("10.99.0.1"), ns.netlink("h"))
        plane.apply(PLANS)
        for c, addr in (("c1", C1), ("c2", C2), ("c3", C3)):
            ns.plug("h", c, addr, "swl-br-4200", SUBNET.prefixlen, str(GATEWAY))
        ns.plug("h", "c4", C4, "swl-br-4201", OTHER.prefixlen, str(OTHER_GATEWAY))
        plane.apply(PLANS)  # as the agent does after a start
        # An outside client on the host's "physical" network.
        sh(f"ip link add eth1 netns {h} type veth peer name eth0 netns {ns('x')}")
        sh(f"ip -n {h} addr add 10.99.0.1/24 dev eth1")
        sh(f"ip -n {h} link set eth1 up")
        sh(f"ip -n {ns('x')} addr add 10.99.0.9/24 dev eth0")
        sh(f"ip -n {ns('x')} link set eth0 up")
        ns.serve_name("c2", 7000)
        ns.serve_name("c3", 7000)
        ns.serve_name("c4", 7000)
        yield ns


def load(ns: Namespaces, plan: NodeRules) -> None:
    asyncio.run(apply(render(plan), nft=("ip", "netns", "exec", ns("h"), "nft")))


def test_a_virtual_ip_reaches_every_backend_and_a_task_reaches_itself(host: Namespaces) -> None:
    load(host, NodeRules(vips=[VirtualIP(VIP, (IP(C2), IP(C3)))]))
    answers = Counter(host.ask_names("c1", str(VIP), 7000, 30))
    assert set(answers) == {"c2", "c3"}, answers
    # Hairpin: c2 through its own virtual IP, whichever backend is picked.
    assert len(host.ask_names("c2", str(VIP), 7000, 10)) == 10

    # A backend leaves: new connections go to the other one only.
    load(host, NodeRules(vips=[VirtualIP(VIP, (IP(C3),))]))
    assert set(host.ask_names("c1", str(VIP), 7000, 10)) == {"c3"}

    # No backend: the connection is refused at once, not left hanging.
    load(host, NodeRules(vips=[VirtualIP(VIP, ())]))
    assert host.ask_names("c1", str(VIP), 7000, 1) == []


def test_a_published_port_answers_on_the_node_address(host: Namespaces) -> None:
    plan = NodeRules(
        published=[PublishedPort("tcp", 8080, 7000, (IP(C2), IP(C3)))],
        ingress_source=NODE_ADDR,
    )
    load(host, plan)
    answers = Counter(host.ask_names("x", "10.99.0.1", 8080, 30))
    assert set(answers) == {"c2", "c3"}, answers


def test_a_bad_ruleset_changes_nothing(host: Namespaces) -> None:
    load(host, NodeRules(vips=[VirtualIP(VIP, (IP(C2),))]))
    with pytest.raises(RulesError):
        asyncio.run(
            apply(
                "table ip swarmlet {\n  chain x {\n    nonsense\n  }\n}\n",
                nft=("ip", "netns", "exec", host("h"), "nft"),
            )
        )
    assert set(host.ask_names("c1", str(VIP), 7000, 5)) == {"c2"}


def test_networks_are_isolated_and_an_internal_one_reaches_nothing_outside(
    host: Namespaces,
) -> None:
    sh(f"ip -n {host('c4')} route replace default via {OTHER_GATEWAY}")
    open_rules = NodeRules(bridges={"swl-br-4200": False, "swl-br-4201": False})
    load(host, NodeRules())
    assert host.ask_names("c1", C4, 7000, 1) == ["c4"]  # the kernel alone would route it
    load(host, open_rules)
    assert host.ask_names("c1", C4, 7000, 1) == []
    assert host.ask_names("c4", C2, 7000, 1) == []
    assert host.ask_names("c1", C2, 7000, 1) == ["c2"]  # within a network: fine
    # An outside address: reachable from a normal network, not from an internal one.
    # (Docker masquerades a bridge network's traffic out; here x routes back instead.)
    sh(f"ip -n {host('x')} route add {SUBNET} via 10.99.0.1")
    host.serve_name("x", 7001)
    assert host.ask_names("c1", "10.99.0.9", 7001, 1) == ["x"]
    load(host, NodeRules(bridges={"swl-br-4200": True, "swl-br-4201": False}))
    assert host.ask_names("c1", "10.99.0.9", 7001, 1) == []
    assert host.ask_names("c1", C2, 7000, 1) == ["c2"]
