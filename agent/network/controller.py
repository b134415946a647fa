"""Keeps this node's network data plane in step with the cluster: whenever the manager
sends a new view of the networks (or a local container starts), it derives the node's
plan (`view.plan`) and applies it whole: the overlay devices, the nftables table, the
DNS servers and their tables, and the engine networks no task here needs any more are
removed.

Level-triggered and idempotent: a burst of updates is applied once, a failed apply is
retried with backoff, and an agent that restarts applies the same plan again, which
changes nothing that is right.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import shutil
from collections.abc import Awaitable, Callable, Iterable

from agent.network import rules
from agent.network.dataplane import DataPlane
from agent.network.dns import DnsServers, ServiceResolver, host_resolvers
from agent.network.engine import EngineNetworks
from agent.network.view import ClusterNetworks, NetworkInfo, NodePlan, local_networks, plan
from common.log import get_logger

log = get_logger("network")

DEBOUNCE = 0.02
LOOPBACK = ipaddress.IPv4Address("127.0.0.1")
MAX_BACKOFF = 5.0


class NetworkController:
    """Applies the node's plan for the latest view; `wait_applied` for tests and the
    task runner (a container that joins a network waits for its overlay)."""

    def __init__(
        self,
        node_id: str,
        engine: EngineNetworks | None,
        *,
        underlay: ipaddress.IPv4Address | None = None,
        dns_port: int = 53,
        apply_rules: Callable[[str], Awaitable[None]] = rules.apply,
    ) -> None:
        self.node_id = node_id
        self.engine = engine
        # This node's underlay address: given, or the one its manager sees its session
        # come from (the view's hosts).
        self.underlay = underlay
        self.resolver = ServiceResolver(host_resolvers())
        self.dns = DnsServers(self.resolver, port=dns_port)
        self.apply_rules = apply_rules
        self.view = ClusterNetworks()
        self.applied: NodePlan | None = None
        self._wake = asyncio.Event()
        self._generation = 0
        self._applied_generation = -1
        self._applied_event = asyncio.Event()
        self._nft_missing = shutil.which("nft") is None
        self._iptables_missing = shutil.which("iptables-restore") is None
        self._view_event = asyncio.Event()
        self._ever_applied = False

    def update(self, view: ClusterNetworks) -> None:
        self.view = view
        self._view_event.set()
        self.poke()

    def poke(self) -> None:
        """Apply again (a container started: its bridge port wants hairpin mode)."""
        self._generation += 1
        self._wake.set()

    async def wait_applied(self, timeout: float = 10.0) -> None:
        target = self._generation
        async with asyncio.timeout(timeout):
            while True:
                self._applied_event.clear()
                if self._applied_generation >= target:
                    return
                await self._applied_event.wait()

    async def run(self) -> None:
        backoff = 0.1
        try:
            while True:
                await self._wake.wait()
                await asyncio.sleep(DEBOUNCE)
                self._wake.clear()
                generation = self._generation
                try:
                    await self.apply_once()
                except Exception as exc:
                    log.warning(
                        "network plan not applied; retrying", error=str(exc), retry_in=backoff
                    )
                    await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                    backoff = min(backoff * 2, MAX_BACKOFF)
                    self._wake.set()
                    continue
                backoff = 0.1
                self._applied_generation = generation
                self._applied_event.set()
        finally:
            self.dns.close()

    def network(self, network_id: str) -> NetworkInfo | None:
        return self.view.networks.get(network_id)

    async def wait_for_networks(self, network_ids: Iterable[str], timeout: float = 10.0) -> None:
        """Until the view names every one of `network_ids` (a task's networks arrive in
        the same message as the task, but a view may lag an assignment)."""
        wanted = set(network_ids)
        async with asyncio.timeout(timeout):
            while True:
                self._view_event.clear()
                if wanted <= self.view.networks.keys():
                    return
                await self._view_event.wait()

    async def apply_once(self) -> None:
        node_plan = plan(self.view, self.node_id)
        if not node_plan.overlays and not self._ever_applied:
            return  # nothing of ours here: leave the host's devices and rules alone
        self._ever_applied = True
        local = self.view.hosts.get(self.node_id) or self.underlay or LOOPBACK
        await asyncio.to_thread(DataPlane(local).apply, node_plan.overlays)
        if self._nft_missing:
            if node_plan.rules.vips or node_plan.rules.published:
                raise RuntimeError("nft not found: install nftables for virtual IPs and ports")
        else:
            await self.apply_rules(rules.render(node_plan.rules))
        if node_plan.overlays and not self._iptables_missing:
            await rules.accept_forwarding()
        self.resolver.tables = dict(node_plan.dns)
        self.resolver.clients = dict(node_plan.dns_clients)
        await self.dns.listen(node_plan.dns_listen)
        if self.engine is not None:
            await self.engine.prune(keep=local_networks(self.view, self.node_id))
        self.applied = node_plan
