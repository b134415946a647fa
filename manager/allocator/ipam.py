"""The bookkeeping of address allocation: subnets of the cluster's pools, addresses of a
subnet, and VXLAN ids, each with one owner at a time.

Pure and synchronous: no store, no clock. Allocation is next-fit (a cursor that moves
on), as SwarmKit's IPAM does: an address that was just released is handed out again only
after the rest of the range, so a stale ARP or conntrack entry on some host is unlikely
to point at a new owner.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

IPv4Network = ipaddress.IPv4Network
IPv4Address = ipaddress.IPv4Address

# Swarm's defaults: `--default-addr-pool 10.0.0.0/8 --default-addr-pool-mask-length 24`.
DEFAULT_POOLS: tuple[IPv4Network, ...] = (IPv4Network("10.0.0.0/8"),)
DEFAULT_SUBNET_SIZE = 24
# VXLAN network identifiers: Docker's overlay driver starts at 4096 (below it, VLAN ids).
FIRST_VNI = 4096
LAST_VNI = (1 << 24) - 1


class AllocationError(Exception):
    """An allocation that cannot be made; the message says why and what to do."""


class ExhaustedError(AllocationError):
    """Nothing is left to hand out."""


class TakenError(AllocationError):
    """What was asked for belongs to someone else (or overlaps what does)."""


def parse_subnet(text: str) -> IPv4Network:
    """A user's `--subnet`: an IPv4 CIDR whose host bits are zero, /8 to /29."""
    try:
        net = IPv4Network(text, strict=True)
    except ValueError as exc:
        raise AllocationError(
            f"invalid subnet {text!r}: {exc} (give an IPv4 CIDR such as 10.20.0.0/24)"
        ) from None
    if not 8 <= net.prefixlen <= 29:
        raise AllocationError(f"subnet {text} is /{net.prefixlen}: use a prefix between /8 and /29")
    return net


@dataclass
class SubnetPool:
    """Subnets for networks: from the cluster's address pools, or given by the user.

    A subnet never overlaps another network's, whoever chose it.
    """

    pools: tuple[IPv4Network, ...] = DEFAULT_POOLS
    size: int = DEFAULT_SUBNET_SIZE
    _owners: dict[IPv4Network, str] = field(default_factory=dict)
    _cursor: int = 0

    def __post_init__(self) -> None:
        for pool in self.pools:
            if pool.prefixlen > self.size:
                raise AllocationError(
                    f"address pool {pool} is smaller than the subnet size /{self.size}"
                )

    def owner_of(self, subnet: IPv4Network) -> str | None:
        return self._owners.get(subnet)

    def overlapping(self, subnet: IPv4Network) -> tuple[IPv4Network, str] | None:
        for taken, owner in self._owners.items():
            if taken.overlaps(subnet):
                return taken, owner
        return None

    def reserve(self, subnet: IPv4Network, owner: str) -> None:
        """Record `subnet` as `owner`'s (a user's choice, or one read back from the store)."""
        if self._owners.get(subnet) == owner:
            return
        clash = self.overlapping(subnet)
        if clash is not None:
            raise TakenError(
                f"subnet {subnet} overlaps {clash[0]} of network {clash[1]}: "
                "choose another subnet, or leave --subnet out to get a free one"
            )
        self._owners[subnet] = owner

    def allocate(self, owner: str) -> IPv4Network:
        """A free /size subnet of the pools, next-fit."""
        candidates = list(self._candidates())
        if candidates:
            n = len(candidates)
            for i in range(n):
                subnet = candidates[(self._cursor + i) % n]
                if self.overlapping(subnet) is None:
                    self._owners[subnet] = owner
                    self._cursor = (self._cursor + i + 1) % n
                    return subnet
        pools = ", ".join(str(p) for p in self.pools)
        raise ExhaustedError(
            f"no free /{self.size} subnet left in the address pools ({pools}): remove unused "
            "networks, or give a --subnet outside them"
        )

    def release(self, subnet: IPv4Network) -> None:
        self._owners.pop(subnet, None)

    def _candidates(self) -> Iterator[IPv4Network]:
        for pool in self.pools:
            yield from pool.subnets(new_prefix=self.size)


@dataclass
class AddressSpace:
    """The addresses of one network's subnet: the gateway's, then one per owner.

    The network address, the broadcast address and the gateway are never handed out.
    """

    subnet: IPv4Network
    gateway: IPv4Address | None = None
    _owners: dict[IPv4Address, str] = field(default_factory=dict)
    _cursor: int = 0

    def __post_init__(self) -> None:
        if self.gateway is None:
            self.gateway = self.subnet.network_address + 1
        elif self.gateway not in self.subnet or self.gateway in (
            self.subnet.network_address,
            self.subnet.broadcast_address,
        ):
            raise AllocationError(
                f"gateway {self.gateway} is not a host address of {self.subnet}: "
                "give one inside the subnet, or leave --gateway out"
            )

    @property
    def size(self) -> int:
        """How many addresses can be handed out."""
        return self.subnet.num_addresses - 3

    def __len__(self) -> int:
        return len(self._owners)

    def owner_of(self, addr: IPv4Address) -> str | None:
        return self._owners.get(addr)

    def items(self) -> Iterable[tuple[IPv4Address, str]]:
        return self._owners.items()

    def _usable(self, addr: IPv4Address) -> bool:
        return addr in self.subnet and addr not in (
            self.subnet.network_address,
            self.subnet.broadcast_address,
            self.gateway,
        )

    def reserve(self, addr: IPv4Address, owner: str) -> None:
        """Record `addr` as `owner`'s (read back from the store, or asked for by the user)."""
        if not self._usable(addr):
            raise AllocationError(f"{addr} is not an address {self.subnet} can hand out")
        current = self._owners.get(addr)
        if current is not None and current != owner:
            raise TakenError(f"{addr} on {self.subnet} already belongs to {current}")
        self._owners[addr] = owner

    def allocate(self, owner: str) -> IPv4Address:
        """A free address, next-fit after the last one handed out."""
        first = int(self.subnet.network_address) + 1
        count = self.subnet.num_addresses - 2
        for i in range(count):
            addr = IPv4Address(first + (self._cursor + i) % count)
            if addr == self.gateway or addr in self._owners:
                continue
            self._owners[addr] = owner
            self._cursor = (self._cursor + i + 1) % count
            return addr
        raise ExhaustedError(
            f"network {self.subnet} has no free address left ({self.size} in use): "
            "scale down, or use a network with a larger subnet"
        )

    def release(self, addr: IPv4Address, owner: str | None = None) -> None:
        """Free `addr` (only if `owner` holds it, when given)."""
        if owner is None or self._owners.get(addr) == owner:
            self._owners.pop(addr, None)


@dataclass
class VniPool:
    """VXLAN network identifiers, one per network."""

    first: int = FIRST_VNI
    last: int = LAST_VNI
    _owners: dict[int, str] = field(default_factory=dict)
    _cursor: int = 0

    def reserve(self, vni: int, owner: str) -> None:
        if not self.first <= vni <= self.last:
            raise AllocationError(f"VXLAN id {vni} is outside {self.first}-{self.last}")
        current = self._owners.get(vni)
        if current is not None and current != owner:
            raise TakenError(f"VXLAN id {vni} already belongs to network {current}")
        self._owners[vni] = owner

    def allocate(self, owner: str) -> int:
        count = self.last - self.first + 1
        for i in range(min(count, len(self._owners) + 1)):
            vni = self.first + (self._cursor + i) % count
            if vni not in self._owners:
                self._owners[vni] = owner
                self._cursor = (self._cursor + i + 1) % count
                return vni
        raise ExhaustedError("no VXLAN id left: remove unused networks")

    def release(self, vni: int) -> None:
        self._owners.pop(vni, None)
