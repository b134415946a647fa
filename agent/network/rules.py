"""The node's packet rules in one nftables table of our own (`ip swarmlet`), replaced
whole and atomically from the desired set, as kube-proxy's nftables mode does: load
balancing without IPVS (virtual IPs, the routing mesh) and the isolation of networks.

- A virtual IP is an address of the network's bridge on every node (so each node
  answers ARP for it locally). A new connection to it is DNATed to one of the service's
  backends, chosen at random; bridge netfilter un-NATs the replies, also from a backend
  on another node. A task that reaches itself through its own virtual IP is
  masqueraded (kube-proxy's hairpin rule), or its replies would bypass the NAT.
- A port published in ingress mode is DNATed on every node's own addresses to the
  backends' addresses on the ingress network, and SNATed to this node's own address on
  that network, so the replies come back through this node.
- Only running (and healthy) tasks are backends: the agent builds the set from what
  its manager sends, and a task leaves it before its container is stopped. Connections
  already established keep their conntrack entry, so they finish.

- Isolation: traffic from one overlay bridge to another is dropped, and traffic from an
  `--internal` network's bridge to anywhere but itself. A drop in nftables is final
  whatever other tables (Docker's) say.

`render` is pure; `apply` hands the ruleset to `nft -f -` in one transaction.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from common.log import get_logger

log = get_logger("nat")

TABLE = "swarmlet"
# Marks on packets that need their source rewritten on the way out.
HAIRPIN_MARK = 0x4000
INGRESS_MARK = 0x8000


class RulesError(Exception):
    """nft refused the ruleset; the message is nft's."""


@dataclass(frozen=True)
class VirtualIP:
    """A service's virtual IP on one network, and the addresses of its backends there."""

    vip: ipaddress.IPv4Address
    backends: tuple[ipaddress.IPv4Address, ...]


@dataclass(frozen=True)
class PublishedPort:
    """A port published in ingress mode: answered on every address of this node."""

    protocol: str  # "tcp" | "udp"
    published: int
    target: int
    backends: tuple[ipaddress.IPv4Address, ...]


@dataclass(frozen=True)
class NodeRules:
    """Every rule of this node: the virtual IPs of every network it has, the ports
    published in ingress mode, this node's own address on the ingress network, and its
    overlay bridges (name -> internal or not)."""

    bridges: Mapping[str, bool] = field(default_factory=dict)
    vips: Sequence[VirtualIP] = ()
    published: Sequence[PublishedPort] = ()
    ingress_source: ipaddress.IPv4Address | None = None


def _spread(
    chain: str,
    targets: list[str],
    lines: list[str],
    *,
    mark: int | None = None,
    match_self: bool = False,
    protocol: str = "",
) -> None:
    """A chain that picks one of `targets` at random, and one chain per target."""
    if not targets:
        return
    picks = ", ".join(f"{i} : jump {chain}-{i}" for i in range(len(targets)))
    lines.append(f"  chain {chain} {{")
    lines.append(f"    numgen random mod {len(targets)} vmap {{ {picks} }}")
    lines.append("  }")
    for i, target in enumerate(targets):
        lines.append(f"  chain {chain}-{i} {{")
        if match_self:
            address = target.split(":")[0]
            lines.append(f"    ip saddr {address} meta mark set mark | {HAIRPIN_MARK:#010x}")
        if mark is not None:
            lines.append(f"    meta mark set mark | {mark:#010x}")
        match = f"meta l4proto {protocol} " if protocol else ""
        lines.append(f"    {match}dnat to {target}")
        lines.append("  }")


def render(plan: NodeRules) -> str:
    """The whole table, as one `nft -f` transaction that replaces what was there."""
    entry: list[str] = []
    chains: list[str] = []
    for i, vip in enumerate(sorted(plan.vips, key=lambda v: v.vip)):
        if not vip.backends:
            continue  # nothing answers: the bridge's own address refuses the connection
        chain = f"vip-{i}"
        entry.append(f"    ip daddr {vip.vip} jump {chain}")
        _spread(chain, [str(b) for b in vip.backends], chains, match_self=True)
    if plan.ingress_source is not None:
        ports = sorted(plan.published, key=lambda p: (p.protocol, p.published))
        for i, port in enumerate(ports):
            if not port.backends:
                continue
            chain = f"pub-{i}"
            entry.append(
                f"    fib daddr type local {port.protocol} dport {port.published} jump {chain}"
            )
            targets = [f"{b}:{port.target}" for b in port.backends]
            _spread(chain, targets, chains, mark=INGRESS_MARK, protocol=port.protocol)
    lines = [f"table ip {TABLE}", f"delete table ip {TABLE}", f"table ip {TABLE} {{"]
    for hook, priority in (("prerouting", "dstnat"), ("output", "-100")):
        lines.append(f"  chain {hook} {{")
        lines.append(f"    type nat hook {hook} priority {priority}; policy accept;")
        lines.extend(entry)
        lines.append("  }")
    lines.append("  chain postrouting {")
    lines.append("    type nat hook postrouting priority srcnat; policy accept;")
    lines.append(f"    meta mark & {HAIRPIN_MARK:#010x} == {HAIRPIN_MARK:#010x} masquerade")
    if plan.ingress_source is not None:
        lines.append(
            f"    meta mark & {INGRESS_MARK:#010x} == {INGRESS_MARK:#010x} "
            f"snat to {plan.ingress_source}"
        )
    lines.append("  }")
    lines.extend(_isolation(plan.bridges))
    lines.extend(chains)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _isolation(bridges: Mapping[str, bool]) -> list[str]:
    lines = [
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
    ]
    for name, internal in sorted(bridges.items()):
        if internal:
            lines.append(f'    iifname "{name}" oifname != "{name}" drop')
        else:
            lines.append(f'    iifname "{name}" oifname != "{name}" oifname "swl-br-*" drop')
    lines.append("  }")
    return lines


def render_removal() -> str:
    return f"table ip {TABLE}\ndelete table ip {TABLE}\n"


async def apply(ruleset: str, nft: Sequence[str] = ("nft",)) -> None:
    """Load `ruleset` in one transaction: all of it, or nothing and a RulesError."""
    proc = await asyncio.create_subprocess_exec(
        *nft,
        "-f",
        "-",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate(ruleset.encode())
    if proc.returncode != 0:
        raise RulesError(err.decode(errors="replace").strip() or f"nft exited {proc.returncode}")


# The iptables side: a host whose Docker engine turned IP forwarding on has the FORWARD
# chain's policy at DROP, and accepts only what Docker's own rules for its networks do
# (nothing, for an engine run with --iptables=false). An accept in our nftables table
# does not override that drop (each table decides alone), so the traffic of our
# bridges is accepted in a chain of our own in iptables' filter table, replaced whole
# with `iptables-restore --noflush` (kube-proxy's way), reached by one jump at the top
# of FORWARD. What it accepts stays confined by our nftables isolation, whose drop is
# final: traffic within an overlay network (bridged or hairpinned through a virtual IP),
# and connections we DNATed into or out of one (virtual IPs, the routing mesh).
FORWARD_CHAIN = "SWARMLET-FORWARD"
FORWARD_RULES = f"""*filter
:{FORWARD_CHAIN} - [0:0]
-A {FORWARD_CHAIN} -i swl-br+ -o swl-br+ -j ACCEPT
-A {FORWARD_CHAIN} -o swl-br+ -m conntrack --ctstate DNAT -j ACCEPT
-A {FORWARD_CHAIN} -i swl-br+ -m conntrack --ctstate DNAT -j ACCEPT
COMMIT
"""
# How to take the chain out again (each step ignored if there is nothing to remove).
FORWARD_REMOVAL = (
    ("-D", "FORWARD", "-j", FORWARD_CHAIN),
    ("-F", FORWARD_CHAIN),
    ("-X", FORWARD_CHAIN),
)


async def _run(*argv: str, stdin: str = "") -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate(stdin.encode())
    return proc.returncode or 0, err.decode(errors="replace").strip()


async def accept_forwarding(iptables: str = "iptables") -> None:
    """Load our FORWARD chain (whole) and make sure FORWARD jumps to it first."""
    code, err = await _run(f"{iptables}-restore", "--noflush", stdin=FORWARD_RULES)
    if code != 0:
        raise RulesError(f"iptables-restore: {err}")
    code, _ = await _run(iptables, "-C", "FORWARD", "-j", FORWARD_CHAIN)
    if code != 0:
        code, err = await _run(iptables, "-I", "FORWARD", "1", "-j", FORWARD_CHAIN)
        if code != 0:
            raise RulesError(f"iptables -I FORWARD: {err}")
