"""The allocator's view of who holds what: every network's subnet and VXLAN id, every
address on every network, every published ingress port. Rebuilt from the stored
objects (which carry their own allocations) and then kept in step, so that what it
hands out never has two owners.

Ownership rules, one place each:
- a network owns its subnet and VXLAN id while it exists;
- a service owns its virtual IPs and published ingress ports while it exists;
- a task owns its addresses while it has not ended (observed state at most RUNNING, or
  not yet started); an ended task keeps its addresses in its history, unowned;
- a node owns its address on the ingress network while it exists.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from common import states
from common.api import objects_pb2, types_pb2
from manager.allocator.ipam import (
    DEFAULT_POOLS,
    DEFAULT_SUBNET_SIZE,
    AddressSpace,
    AllocationError,
    ExhaustedError,
    SubnetPool,
    TakenError,
    VniPool,
    parse_subnet,
)

# Swarm's range for published ports chosen by the cluster.
DYNAMIC_PORTS = range(30000, 32768)
INGRESS_NAME = "ingress"


def owns_addresses(task: objects_pb2.Task) -> bool:
    """A task holds its addresses until it has ended."""
    return not states.is_terminal(task.status.state)


def cidr(addr: ipaddress.IPv4Address, subnet: ipaddress.IPv4Network) -> str:
    return f"{addr}/{subnet.prefixlen}"


def address_of(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Interface(text).ip


@dataclass
class AddressBook:
    """Everything allocated in the cluster, by owner."""

    pools: tuple[ipaddress.IPv4Network, ...] = DEFAULT_POOLS
    subnet_size: int = DEFAULT_SUBNET_SIZE
    subnets: SubnetPool = field(init=False)
    vnis: VniPool = field(default_factory=VniPool)
    spaces: dict[str, AddressSpace] = field(default_factory=dict)
    ports: dict[tuple[int, int], str] = field(default_factory=dict)
    # owner id -> what it holds, to release it all at once.
    held: dict[str, list[tuple[str, ipaddress.IPv4Address]]] = field(default_factory=dict)
    _port_cursor: int = 0

    def __post_init__(self) -> None:
        self.subnets = SubnetPool(self.pools, self.subnet_size)

    # ---------------------------------------------------------------- rebuild

    def load(
        self,
        networks: Iterable[objects_pb2.Network],
        services: Iterable[objects_pb2.Service],
        tasks: Iterable[objects_pb2.Task],
        nodes: Iterable[objects_pb2.Node],
    ) -> list[str]:
        """Record what the stored objects hold. Returns complaints about objects whose
        allocations clash (the later one loses its claim, and is allocated again)."""
        complaints: list[str] = []
        for net in networks:
            if net.allocation.subnet:
                try:
                    self.take_network(net)
                except AllocationError as exc:
                    complaints.append(f"network {net.id}: {exc}")
        for service in services:
            complaints.extend(self._claim(service.id, _service_addresses(service)))
            for port in service.endpoint.ports:
                if port.publish_mode == types_pb2.PUBLISH_MODE_INGRESS and port.published_port:
                    key = (int(port.protocol), port.published_port)
                    self.ports.setdefault(key, service.id)
        for task in tasks:
            if owns_addresses(task):
                complaints.extend(self._claim(task.id, _attachment_addresses(task.networks)))
        for node in nodes:
            complaints.extend(self._claim(node.id, _attachment_addresses(node.attachments)))
        return complaints

    def _claim(self, owner: str, addresses: Iterable[tuple[str, str]]) -> list[str]:
        complaints = []
        for network_id, text in addresses:
            space = self.spaces.get(network_id)
            if space is None:
                continue  # its network is gone or not allocated: nothing to hold
            addr = address_of(text)
            try:
                space.reserve(addr, owner)
            except AllocationError as exc:
                complaints.append(f"{owner}: {exc}")
                continue
            self.held.setdefault(owner, []).append((network_id, addr))
        return complaints

    # ---------------------------------------------------------------- networks

    def take_network(self, net: objects_pb2.Network) -> None:
        """Record a stored network's allocation as its own."""
        alloc = net.allocation
        subnet = ipaddress.IPv4Network(alloc.subnet)
        self.subnets.reserve(subnet, net.spec.annotations.name or net.id)
        try:
            self.vnis.reserve(alloc.vxlan_id, net.id)
        except AllocationError:
            self.subnets.release(subnet)
            raise
        self.spaces[net.id] = AddressSpace(subnet, ipaddress.IPv4Address(alloc.gateway))

    def allocate_network(self, net: objects_pb2.Network) -> objects_pb2.NetworkAllocation:
        """A subnet (the user's, checked, or a free one of the pools), a gateway and a
        VXLAN id for `net`, recorded as its own."""
        name = net.spec.annotations.name or net.id
        ipam = net.spec.ipam
        if ipam.subnet:
            subnet = parse_subnet(ipam.subnet)
            self.subnets.reserve(subnet, name)
        else:
            subnet = self.subnets.allocate(name)
        try:
            gateway = ipaddress.IPv4Address(ipam.gateway) if ipam.gateway else None
            space = AddressSpace(subnet, gateway)
            vni = self.vnis.allocate(net.id)
        except (AllocationError, ValueError) as exc:
            self.subnets.release(subnet)
            raise AllocationError(str(exc)) from None
        self.spaces[net.id] = space
        assert space.gateway is not None
        return objects_pb2.NetworkAllocation(
            subnet=str(subnet), gateway=str(space.gateway), vxlan_id=vni
        )

    def release_network(self, net_id: str, alloc: objects_pb2.NetworkAllocation) -> None:
        self.spaces.pop(net_id, None)
        if alloc.subnet:
            self.subnets.release(ipaddress.IPv4Network(alloc.subnet))
            self.vnis.release(alloc.vxlan_id)

    # ---------------------------------------------------------------- addresses

    def holds(self, owner: str, network_id: str) -> ipaddress.IPv4Address | None:
        for net, addr in self.held.get(owner, ()):
            if net == network_id:
                return addr
        return None

    def address_for(self, owner: str, network_id: str) -> str:
        """`owner`'s address on `network_id` (CIDR form): the one it holds, or a new one."""
        space = self.spaces.get(network_id)
        if space is None:
            raise AllocationError(f"network {network_id} has no subnet yet")
        addr = self.holds(owner, network_id)
        if addr is None:
            addr = space.allocate(owner)
            self.held.setdefault(owner, []).append((network_id, addr))
        return cidr(addr, space.subnet)

    def release_owner(self, owner: str, keep: Iterable[str] = ()) -> None:
        """Free what `owner` holds, except on the networks in `keep`."""
        kept = set(keep)
        remaining = []
        for network_id, addr in self.held.pop(owner, []):
            if network_id in kept:
                remaining.append((network_id, addr))
                continue
            space = self.spaces.get(network_id)
            if space is not None:
                space.release(addr, owner)
        if remaining:
            self.held[owner] = remaining

    # ---------------------------------------------------------------- ports

    def published_ports(
        self, service_id: str, ports: Iterable[types_pb2.PortConfig]
    ) -> list[types_pb2.PortConfig]:
        """The service's ingress ports with their published numbers: its own as they
        are (refused if another service holds them), a free dynamic one where it asked
        for any. Ports it no longer publishes are released."""
        wanted: list[types_pb2.PortConfig] = []
        keep: set[tuple[int, int]] = set()
        for port in ports:
            out = types_pb2.PortConfig()
            out.CopyFrom(port)
            if port.publish_mode == types_pb2.PUBLISH_MODE_INGRESS:
                key: tuple[int, int]
                if port.published_port:
                    key = (int(port.protocol), port.published_port)
                    holder = self.ports.get(key, service_id)
                    if holder != service_id:
                        raise TakenError(
                            f"port {port.published_port} is already published by service {holder}"
                        )
                else:
                    protocol = int(port.protocol)
                    key = (protocol, self._free_port(protocol))
                    out.published_port = key[1]
                self.ports[key] = service_id
                keep.add(key)
            wanted.append(out)
        for key, holder in list(self.ports.items()):
            if holder == service_id and key not in keep:
                del self.ports[key]
        return wanted

    def _free_port(self, protocol: int) -> int:
        n = len(DYNAMIC_PORTS)
        for i in range(n):
            port = DYNAMIC_PORTS[(self._port_cursor + i) % n]
            if (protocol, port) not in self.ports:
                self._port_cursor = (self._port_cursor + i + 1) % n
                return port
        raise ExhaustedError(
            f"no free port left in {DYNAMIC_PORTS.start}-{DYNAMIC_PORTS.stop - 1}: "
            "publish a port of your choice, or remove unused services"
        )

    def release_ports(self, service_id: str) -> None:
        for key, holder in list(self.ports.items()):
            if holder == service_id:
                del self.ports[key]


def _service_addresses(service: objects_pb2.Service) -> list[tuple[str, str]]:
    return [(v.network_id, v.addr) for v in service.endpoint.virtual_ips]


def _attachment_addresses(
    attachments: Iterable[objects_pb2.NetworkAttachment],
) -> list[tuple[str, str]]:
    return [(a.network_id, text) for a in attachments for text in a.addresses]
