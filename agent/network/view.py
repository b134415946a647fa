"""What the agent knows of the cluster's networks, and what it makes of it on this node.

The manager sends every agent the networks, the services' endpoints on them and every
task's address (`ClusterNetworks`). From that alone, `plan` derives the three things the
node's data plane needs, so they can never disagree:
- the overlay devices (`OverlayPlan`): each network that has a task here, and the
  ingress network on every node (the routing mesh answers everywhere), with a static
  entry for every address of it on another node, and the virtual IPs and this node's
  own address as addresses of its bridge;
- the packet rules (`NodeRules`): each virtual IP's backends and each published port's,
  only tasks that run (and are healthy, where they have a health check);
- the DNS tables: per local network, the names of the services on it, and for each
  local task the networks whose names it sees (all of its own). The ingress network has
  no names, as in Swarm.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agent.network.dataplane import OverlayPlan, Peer, bridge_name
from agent.network.dns import NameTable, ServiceNames, build_table
from agent.network.rules import NodeRules, PublishedPort, VirtualIP
from common.api import network_pb2, types_pb2

IP = ipaddress.IPv4Address


@dataclass(frozen=True)
class NetworkInfo:
    """A network as allocated: its subnet, gateway and VXLAN id."""

    id: str
    name: str
    vni: int
    subnet: ipaddress.IPv4Network
    gateway: IP
    internal: bool = False
    ingress: bool = False


@dataclass(frozen=True)
class ServiceInfo:
    """A service's endpoint: its virtual IPs by network (none in dnsrr mode), its ports
    published in ingress mode as (protocol, published, target)."""

    id: str
    name: str
    vips: Mapping[str, IP] = field(default_factory=dict)
    published: tuple[tuple[str, int, int], ...] = ()


@dataclass(frozen=True)
class TaskAddress:
    """A task's address on one network, where it runs, and whether it takes traffic
    (running, and healthy where it has a health check)."""

    task_id: str
    service_id: str
    network_id: str
    address: IP
    node_id: str
    aliases: tuple[str, ...] = ()
    serving: bool = False


@dataclass(frozen=True)
class ClusterNetworks:
    """Everything network the agent has been told."""

    networks: Mapping[str, NetworkInfo] = field(default_factory=dict)
    services: Mapping[str, ServiceInfo] = field(default_factory=dict)
    tasks: tuple[TaskAddress, ...] = ()
    # node id -> its underlay address (where its VXLAN packets go)
    hosts: Mapping[str, IP] = field(default_factory=dict)
    # node id -> its own address on the ingress network
    node_ingress: Mapping[str, IP] = field(default_factory=dict)


@dataclass(frozen=True)
class NodePlan:
    """What this node's data plane must be."""

    overlays: tuple[OverlayPlan, ...]
    rules: NodeRules
    dns: Mapping[str, NameTable]
    # (network, a local task's address there) -> that task's networks, that one first
    dns_clients: Mapping[tuple[str, str], tuple[str, ...]]
    # network -> the address its DNS server listens on (the gateway)
    dns_listen: Mapping[str, str]


def local_networks(view: ClusterNetworks, node_id: str) -> set[str]:
    """The networks this node needs: those of its tasks, and the ingress network if this
    node may be reached through the routing mesh (it has an ingress address)."""
    here = {t.network_id for t in view.tasks if t.node_id == node_id}
    if node_id in view.node_ingress:
        here.update(n.id for n in view.networks.values() if n.ingress)
    return {n for n in here if n in view.networks}


def plan(view: ClusterNetworks, node_id: str) -> NodePlan:
    nets = local_networks(view, node_id)
    by_network: dict[str, list[TaskAddress]] = {}
    for t in view.tasks:
        by_network.setdefault(t.network_id, []).append(t)
    overlays = []
    for net_id in sorted(nets):
        net = view.networks[net_id]
        peers = {
            Peer(t.address, view.hosts[t.node_id])
            for t in by_network.get(net_id, ())
            if t.node_id != node_id and t.node_id in view.hosts
        }
        extra: set[IP] = {s.vips[net_id] for s in view.services.values() if net_id in s.vips}
        if net.ingress:
            for other, addr in view.node_ingress.items():
                if other == node_id:
                    extra.add(addr)
                elif other in view.hosts:
                    peers.add(Peer(addr, view.hosts[other]))
        overlays.append(
            OverlayPlan(
                net.vni,
                net.subnet,
                net.gateway,
                frozenset(peers),
                frozenset(extra),
            )
        )
    named = {n for n in nets if not view.networks[n].ingress}
    return NodePlan(
        overlays=tuple(overlays),
        rules=_rules(view, node_id, nets, by_network),
        dns=_dns(view, named, by_network),
        dns_clients=_dns_clients(view, node_id, named),
        dns_listen={n: str(view.networks[n].gateway) for n in sorted(named)},
    )


def _dns_clients(
    view: ClusterNetworks, node_id: str, named: set[str]
) -> dict[tuple[str, str], tuple[str, ...]]:
    by_task: dict[str, list[TaskAddress]] = {}
    for t in view.tasks:
        if t.node_id == node_id and t.network_id in named:
            by_task.setdefault(t.task_id, []).append(t)
    clients = {}
    for attachments in by_task.values():
        order = [a.network_id for a in attachments]
        for a in attachments:
            rest = tuple(n for n in order if n != a.network_id)
            clients[(a.network_id, str(a.address))] = (a.network_id, *rest)
    return clients


def _serving(tasks: Iterable[TaskAddress], service_id: str) -> tuple[IP, ...]:
    return tuple(sorted(t.address for t in tasks if t.service_id == service_id and t.serving))


def _rules(
    view: ClusterNetworks,
    node_id: str,
    nets: set[str],
    by_network: Mapping[str, list[TaskAddress]],
) -> NodeRules:
    vips = []
    for service in view.services.values():
        for net_id, vip in service.vips.items():
            if net_id in nets:
                vips.append(VirtualIP(vip, _serving(by_network.get(net_id, ()), service.id)))
    published = []
    ingress = next((n for n in view.networks.values() if n.ingress), None)
    source = view.node_ingress.get(node_id)
    if ingress is not None and source is not None:
        for service in view.services.values():
            backends = _serving(by_network.get(ingress.id, ()), service.id)
            for protocol, port, target in service.published:
                published.append(PublishedPort(protocol, port, target, backends))
    bridges = {bridge_name(view.networks[n].vni): view.networks[n].internal for n in nets}
    return NodeRules(bridges=bridges, vips=vips, published=published, ingress_source=source)


def _dns(
    view: ClusterNetworks, nets: set[str], by_network: Mapping[str, list[TaskAddress]]
) -> dict[str, NameTable]:
    tables = {}
    for net_id in nets:
        tasks = by_network.get(net_id, ())
        entries = []
        for service in view.services.values():
            mine = [t for t in tasks if t.service_id == service.id]
            if not mine and net_id not in service.vips:
                continue
            aliases = sorted({a for t in mine for a in t.aliases})
            vip = service.vips.get(net_id)
            entries.append(
                ServiceNames(
                    [service.name, *aliases],
                    [vip] if vip is not None else [],
                    _serving(mine, service.id),
                )
            )
        tables[net_id] = build_table(entries)
    return tables


def _ip(text: str) -> IP:
    return ipaddress.IPv4Interface(text).ip


def from_proto(message: network_pb2.NetworkView) -> ClusterNetworks:
    """The view as the manager sent it (protos/network.proto)."""
    networks = {}
    for net in message.networks:
        alloc = net.allocation
        networks[net.id] = NetworkInfo(
            id=net.id,
            name=net.spec.annotations.name,
            vni=alloc.vxlan_id,
            subnet=ipaddress.IPv4Network(alloc.subnet),
            gateway=IP(alloc.gateway),
            internal=net.spec.internal,
            ingress=net.spec.ingress,
        )
    services = {}
    for s in message.services:
        published = tuple(
            (_PROTOCOLS.get(p.protocol, "tcp"), p.published_port, p.target_port)
            for p in s.endpoint.ports
            if p.publish_mode == types_pb2.PUBLISH_MODE_INGRESS and p.published_port
        )
        vips = {v.network_id: _ip(v.addr) for v in s.endpoint.virtual_ips}
        services[s.id] = ServiceInfo(s.id, s.name, vips, published)
    tasks = tuple(
        TaskAddress(
            task_id=t.id,
            service_id=t.service_id,
            network_id=a.network_id,
            address=_ip(a.addresses[0]),
            node_id=t.node_id,
            aliases=tuple(a.aliases),
            serving=t.serving,
        )
        for t in message.tasks
        for a in t.networks
        if a.addresses and a.network_id in networks
    )
    return ClusterNetworks(
        networks=networks,
        services=services,
        tasks=tasks,
        hosts={n: IP(addr) for n, addr in message.hosts.items()},
        node_ingress={n: _ip(addr) for n, addr in message.node_ingress.items()},
    )


_PROTOCOLS = {
    types_pb2.PORT_PROTOCOL_TCP: "tcp",
    types_pb2.PORT_PROTOCOL_UDP: "udp",
    types_pb2.PORT_PROTOCOL_SCTP: "sctp",
}
