"""What a node's data plane is derived from the cluster's networks: overlays only where
needed, peers only remote, backends only serving tasks, the routing mesh on every node,
DNS names per network."""

from __future__ import annotations

import ipaddress

from agent.network.dataplane import Peer
from agent.network.view import (
    ClusterNetworks,
    NetworkInfo,
    ServiceInfo,
    TaskAddress,
    local_networks,
    plan,
)

IP = ipaddress.IPv4Address
NET = ipaddress.IPv4Network

FRONT = NetworkInfo("front", "front", 4097, NET("10.0.1.0/24"), IP("10.0.1.1"))
BACK = NetworkInfo("back", "back", 4098, NET("10.0.2.0/24"), IP("10.0.2.1"), internal=True)
INGRESS = NetworkInfo("ing", "ingress", 4096, NET("10.0.0.0/24"), IP("10.0.0.1"), ingress=True)
HOSTS = {"n1": IP("192.168.0.1"), "n2": IP("192.168.0.2"), "n3": IP("192.168.0.3")}


def view(*tasks: TaskAddress, **kw: object) -> ClusterNetworks:
    return ClusterNetworks(
        networks={n.id: n for n in (FRONT, BACK, INGRESS)},
        services={
            "web": ServiceInfo(
                "web",
                "web",
                vips={"front": IP("10.0.1.2"), "ing": IP("10.0.0.2")},
                published=(("tcp", 8080, 80),),
            ),
            "db": ServiceInfo("db", "db"),  # dnsrr: no virtual IP
        },
        tasks=tasks,
        hosts=HOSTS,
        node_ingress={"n1": IP("10.0.0.11"), "n2": IP("10.0.0.12"), "n3": IP("10.0.0.13")},
    )


def task(
    tid: str,
    service: str,
    net: str,
    addr: str,
    node: str,
    serving: bool = True,
    aliases: tuple[str, ...] = (),
) -> TaskAddress:
    return TaskAddress(tid, service, net, IP(addr), node, aliases, serving)


CLUSTER = view(
    task("w1", "web", "front", "10.0.1.5", "n1"),
    task("w1", "web", "ing", "10.0.0.5", "n1"),
    task("w2", "web", "front", "10.0.1.6", "n2", serving=False),  # starting
    task("w2", "web", "ing", "10.0.0.6", "n2", serving=False),
    task("d1", "db", "back", "10.0.2.5", "n2", aliases=("database",)),
    task("d1", "db", "front", "10.0.1.7", "n2"),
)


def test_a_node_gets_the_networks_of_its_tasks_and_the_ingress() -> None:
    assert local_networks(CLUSTER, "n1") == {"front", "ing"}
    assert local_networks(CLUSTER, "n2") == {"front", "back", "ing"}
    assert local_networks(CLUSTER, "n3") == {"ing"}  # no task: only the routing mesh


def test_peers_are_the_other_nodes_addresses_and_vips_sit_on_the_bridge() -> None:
    overlays = {o.vni: o for o in plan(CLUSTER, "n1").overlays}
    front = overlays[4097]
    assert front.peers == {Peer(IP("10.0.1.6"), HOSTS["n2"]), Peer(IP("10.0.1.7"), HOSTS["n2"])}
    assert front.extra == {IP("10.0.1.2")}
    ingress = overlays[4096]
    # Remote tasks and the other nodes' own ingress addresses; this node's own on the bridge.
    assert Peer(IP("10.0.0.12"), HOSTS["n2"]) in ingress.peers
    assert Peer(IP("10.0.0.13"), HOSTS["n3"]) in ingress.peers
    assert IP("10.0.0.11") in ingress.extra
    assert IP("10.0.0.2") in ingress.extra


def test_only_serving_tasks_are_backends() -> None:
    rules = plan(CLUSTER, "n3").rules
    assert rules.ingress_source == IP("10.0.0.13")
    (published,) = rules.published
    assert (published.protocol, published.published, published.target) == ("tcp", 8080, 80)
    assert published.backends == (IP("10.0.0.5"),)  # w2 is not running yet
    assert {v.vip for v in rules.vips} == {IP("10.0.0.2")}  # only the networks it has


def test_internal_networks_are_marked_for_isolation() -> None:
    assert plan(CLUSTER, "n2").rules.bridges == {
        "swl-br-4096": False,
        "swl-br-4097": False,
        "swl-br-4098": True,
    }


def test_dns_answers_per_network_and_knows_each_local_task() -> None:
    node = plan(CLUSTER, "n2")
    assert set(node.dns) == {"front", "back"}  # the ingress has no names
    assert node.dns["front"].lookup("web") == (IP("10.0.1.2"),)
    assert node.dns["front"].lookup("tasks.web") == (IP("10.0.1.5"),)
    assert node.dns["back"].lookup("database") == (IP("10.0.2.5"),)
    assert node.dns["back"].lookup("web") is None
    assert node.dns_clients[("back", "10.0.2.5")] == ("back", "front")
    assert node.dns_listen == {"back": "10.0.2.1", "front": "10.0.1.1"}


def test_the_managers_view_round_trips_into_the_agents() -> None:
    from common import states
    from common.api import objects_pb2, specs_pb2, types_pb2
    from manager.dispatcher.networkview import build_view
    from tests.fakes import FakeCache

    ingress = objects_pb2.Network(
        id="ing",
        spec=specs_pb2.NetworkSpec(ingress=True),
        allocation=objects_pb2.NetworkAllocation(
            subnet="10.0.0.0/24", gateway="10.0.0.1", vxlan_id=4096
        ),
    )
    ingress.spec.annotations.name = "ingress"
    service = objects_pb2.Service(id="web")
    service.spec.annotations.name = "web"
    service.endpoint.virtual_ips.add(network_id="ing", addr="10.0.0.2/24")
    service.endpoint.ports.add(
        protocol=types_pb2.PORT_PROTOCOL_TCP, target_port=80, published_port=30000
    )
    running = objects_pb2.Task(
        id="t1", service_id="web", node_id="n1", desired_state=states.RUNNING
    )
    running.status.state = states.RUNNING
    running.networks.add(network_id="ing", addresses=["10.0.0.5/24"])
    stopping = objects_pb2.Task(
        id="t2", service_id="web", node_id="n2", desired_state=states.SHUTDOWN
    )
    stopping.status.state = states.RUNNING
    stopping.networks.add(network_id="ing", addresses=["10.0.0.6/24"])
    node = objects_pb2.Node(id="n1")
    node.status.addr = "192.168.0.1"
    node.attachments.add(network_id="ing", addresses=["10.0.0.11/24"])
    cache = FakeCache(ingress, service, running, stopping, node)

    from agent.network.view import from_proto

    got = from_proto(build_view(cache))
    assert got.networks["ing"].vni == 4096
    assert got.services["web"].vips == {"ing": IP("10.0.0.2")}
    assert got.services["web"].published == (("tcp", 30000, 80),)
    assert {(t.task_id, t.serving) for t in got.tasks} == {("t1", True), ("t2", False)}
    assert got.hosts == {"n1": IP("192.168.0.1")}
    assert got.node_ingress == {"n1": IP("10.0.0.11")}
