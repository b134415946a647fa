"""Overlay networks on one node: a bridge and a VXLAN device per network, and a static
forwarding (fdb) and neighbour entry for every address of the network on another node.

No flooding and no learning: the VXLAN device has no default destination, so no
broadcast crosses hosts; it answers ARP for remote addresses from its neighbour table
(`proxy`), and sends a frame for a remote MAC to exactly the host the fdb names. Every
node's bridge can therefore hold the same gateway address.

`apply` is level-triggered: it makes the kernel match the desired set, whatever is there
(devices of networks that are gone, entries of attachments that moved), so an agent
restart changes nothing that is right and repairs what is stale. Devices are recognised
by their name prefix, and only those are ever touched. The calls block (netlink), so the
agent runs `apply` off its event loop.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from common.log import get_logger

log = get_logger("dataplane")

BRIDGE_PREFIX = "swl-br-"
VXLAN_PREFIX = "swl-vx-"
VXLAN_PORT = 4789
# 1500 on the underlay less VXLAN's 50 bytes of headers.
OVERLAY_MTU = 1450
NUD_PERMANENT = 0x80
NTF_MASTER = 0x04
# A bridge fdb entry that is "permanent" is the bridge's own (local) address; a static
# one forwards to its port.
NUD_NOARP = 0x40


def mac_of(address: ipaddress.IPv4Address) -> str:
    """The MAC Docker gives a container with this address: 02:42 and the four bytes."""
    return "02:42:" + ":".join(f"{b:02x}" for b in address.packed)


def bridge_name(vni: int) -> str:
    return f"{BRIDGE_PREFIX}{vni}"


def vxlan_name(vni: int) -> str:
    return f"{VXLAN_PREFIX}{vni}"


@dataclass(frozen=True)
class Peer:
    """An address of the network that lives on another node, reached through `host`."""

    address: ipaddress.IPv4Address
    host: ipaddress.IPv4Address

    @property
    def mac(self) -> str:
        return mac_of(self.address)


@dataclass(frozen=True)
class OverlayPlan:
    """What one overlay network must look like on this node."""

    vni: int
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    peers: frozenset[Peer] = field(default_factory=frozenset)
    # Addresses of this node's bridge besides the gateway, each a /32: virtual IPs (so
    # this node answers ARP for them) and the node's own address on the network.
    extra: frozenset[ipaddress.IPv4Address] = field(default_factory=frozenset)

    @property
    def bridge(self) -> str:
        return bridge_name(self.vni)

    @property
    def vxlan(self) -> str:
        return vxlan_name(self.vni)


class Netlink(Protocol):
    """The part of pyroute2's IPRoute that the data plane uses."""

    def link_lookup(self, **kwarg: Any) -> list[int]: ...
    def get_links(self, *argv: Any, **kwarg: Any) -> Any: ...
    def link(self, command: str, **kwarg: Any) -> Any: ...
    def addr(self, command: str, *argv: Any, **kwarg: Any) -> Any: ...
    def get_addr(self, **kwarg: Any) -> Any: ...
    def fdb(self, command: str, **kwarg: Any) -> Any: ...
    def neigh(self, command: str, **kwarg: Any) -> Any: ...
    def brport(self, command: str, **kwarg: Any) -> Any: ...
    def close(self) -> None: ...


def default_netlink() -> Netlink:
    from pyroute2 import IPRoute

    ipr: Netlink = IPRoute()
    return ipr


class DataPlane:
    """Applies overlay plans to the kernel of the network namespace it runs in.

    `local` is this node's underlay address (the source of its VXLAN packets)."""

    def __init__(
        self, local: ipaddress.IPv4Address, netlink: Callable[[], Netlink] = default_netlink
    ) -> None:
        self.local = local
        self._netlink = netlink

    def apply(self, plans: Iterable[OverlayPlan]) -> None:
        """Make the kernel's overlay devices and entries exactly `plans`."""
        wanted = {p.vni: p for p in plans}
        ipr = self._netlink()
        try:
            for name, index in _our_links(ipr).items():
                vni = int(name.rsplit("-", 1)[1])
                if vni not in wanted:
                    log.info("removing overlay device", device=name)
                    ipr.link("del", index=index)
            for plan in wanted.values():
                self._apply_one(ipr, plan)
        finally:
            ipr.close()

    def _apply_one(self, ipr: Netlink, plan: OverlayPlan) -> None:
        bridge = _ensure_bridge(ipr, plan)
        vxlan = _ensure_vxlan(ipr, plan, self.local, bridge)
        _hairpin_ports(ipr, bridge, vxlan)
        _sync_fdb(ipr, vxlan, {p.mac: str(p.host) for p in plan.peers})
        _sync_neighbours(ipr, vxlan, {str(p.address): p.mac for p in plan.peers})


def _our_links(ipr: Netlink) -> dict[str, int]:
    found: dict[str, int] = {}
    for link in ipr.get_links():
        name = link.get_attr("IFLA_IFNAME")
        if name and name.startswith((BRIDGE_PREFIX, VXLAN_PREFIX)):
            found[name] = link["index"]
    return found


def _lookup(ipr: Netlink, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def _ensure_bridge(ipr: Netlink, plan: OverlayPlan) -> int:
    index = _lookup(ipr, plan.bridge)
    if index is None:
        log.info("creating overlay bridge", device=plan.bridge, subnet=str(plan.subnet))
        ipr.link("add", ifname=plan.bridge, kind="bridge")
        index = _lookup(ipr, plan.bridge)
        assert index is not None
    have = {
        (a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=index, family=2)
    }
    gateway = (str(plan.gateway), plan.subnet.prefixlen)
    want = [gateway, *sorted((str(a), 32) for a in plan.extra)]
    for address, prefixlen in have - set(want):
        ipr.addr("del", index=index, address=address, prefixlen=prefixlen)
    # The gateway first: Docker, binding its network to this bridge, accepts it only if
    # the bridge's first address is the gateway.
    for address, prefixlen in want:
        if (address, prefixlen) not in have:
            ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
    ipr.link("set", index=index, mtu=OVERLAY_MTU, state="up")
    return index


def _hairpin_ports(ipr: Netlink, bridge: int, vxlan: int) -> None:
    """Hairpin mode on the containers' ports: a task that reaches itself through its
    service's virtual IP is DNATed back to itself while being bridged (bridge netfilter),
    and its frame must be allowed out of the port it came in by."""
    for link in ipr.get_links():
        if link.get_attr("IFLA_MASTER") == bridge and link["index"] != vxlan:
            ipr.brport("set", index=link["index"], mode=1)


def _vxlan_matches(ipr: Netlink, index: int, plan: OverlayPlan, local: str) -> bool:
    (link,) = ipr.get_links(index)
    info = link.get_attr("IFLA_LINKINFO")
    data = info.get_attr("IFLA_INFO_DATA") if info else None
    if data is None:
        return False
    return bool(
        data.get_attr("IFLA_VXLAN_ID") == plan.vni
        and data.get_attr("IFLA_VXLAN_LOCAL") == local
        and not data.get_attr("IFLA_VXLAN_LEARNING")
        and data.get_attr("IFLA_VXLAN_PROXY")
    )


def _ensure_vxlan(
    ipr: Netlink, plan: OverlayPlan, local: ipaddress.IPv4Address, bridge: int
) -> int:
    index = _lookup(ipr, plan.vxlan)
    if index is not None and not _vxlan_matches(ipr, index, plan, str(local)):
        log.info("replacing overlay device with other settings", device=plan.vxlan)
        ipr.link("del", index=index)
        index = None
    if index is None:
        log.info("creating overlay device", device=plan.vxlan, vni=plan.vni, local=str(local))
        ipr.link(
            "add",
            ifname=plan.vxlan,
            kind="vxlan",
            vxlan_id=plan.vni,
            vxlan_port=VXLAN_PORT,
            vxlan_local=str(local),
            vxlan_learning=0,
            vxlan_proxy=1,
        )
        index = _lookup(ipr, plan.vxlan)
        assert index is not None
    ipr.link("set", index=index, master=bridge, mtu=OVERLAY_MTU, state="up")
    ipr.brport("set", index=index, learning=0)
    return index


def _sync_fdb(ipr: Netlink, vxlan: int, wanted: dict[str, str]) -> None:
    """Per remote MAC, two entries: the VXLAN device's own (which host to send
    the frame to) and the bridge's (send it to the VXLAN port). The bridge port learns
    nothing, so no stale learned entry can send a moved address the wrong way."""
    remote: dict[str, str] = {}
    bridged: set[str] = set()
    for entry in ipr.fdb("dump", ifindex=vxlan):
        mac = entry.get_attr("NDA_LLADDR")
        dst = entry.get_attr("NDA_DST")
        if dst is not None:
            remote[mac] = dst
        elif entry.get_attr("NDA_MASTER") is not None and entry["state"] == NUD_NOARP:
            bridged.add(mac)
    for mac, dst in remote.items():
        if wanted.get(mac) != dst:
            ipr.fdb("del", ifindex=vxlan, lladdr=mac, dst=dst)
    for mac in bridged - wanted.keys():
        ipr.fdb("del", ifindex=vxlan, lladdr=mac, flags=NTF_MASTER)
    for mac, dst in wanted.items():
        if remote.get(mac) != dst:
            ipr.fdb("append", ifindex=vxlan, lladdr=mac, dst=dst)
        if mac not in bridged:
            ipr.fdb("replace", ifindex=vxlan, lladdr=mac, flags=NTF_MASTER, state=NUD_NOARP)


def _sync_neighbours(ipr: Netlink, vxlan: int, wanted: dict[str, str]) -> None:
    """One permanent neighbour entry per remote address, which the device's ARP proxy
    answers from."""
    have: dict[str, str] = {}
    for entry in ipr.neigh("dump", ifindex=vxlan, family=2):
        if entry["state"] & NUD_PERMANENT:
            have[entry.get_attr("NDA_DST")] = entry.get_attr("NDA_LLADDR")
    for dst, mac in have.items():
        if wanted.get(dst) != mac:
            ipr.neigh("del", ifindex=vxlan, dst=dst, lladdr=mac)
    for dst, mac in wanted.items():
        if have.get(dst) != mac:
            ipr.neigh("replace", ifindex=vxlan, dst=dst, lladdr=mac, state=NUD_PERMANENT)
