"""The engine's side of an overlay network: a Docker `bridge` network bound to the
network's bridge (`com.docker.network.bridge.name`), with the same subnet and gateway
on every node, so containers join it with the address the manager gave them (their MAC
follows from it) and the engine keeps doing what it does for any bridge network
(masquerade out, its own isolation rules, its embedded DNS, which passes the names it
does not know to the agent's DNS server on the gateway).

Docker's own overlay driver needs swarm mode, which swarmlet does not use. The engine
networks are named `swl-<network name>` and labelled with the network's id; only those
are ever removed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import docker.errors
import docker.types

from agent.network.dataplane import OVERLAY_MTU, bridge_name
from agent.network.view import NetworkInfo
from common.log import get_logger

log = get_logger("engine-networks")
T = TypeVar("T")

LABEL_NETWORK_ID = "swarmlet.network.id"
PREFIX = "swl-"


def engine_network_name(net: NetworkInfo) -> str:
    return f"{PREFIX}{net.name}"


class EngineNetworks:
    """Creates and removes the engine's bridge networks for overlay networks.

    `call` runs a blocking SDK call off the loop (the executor's pool)."""

    def __init__(self, api: Any, call: Callable[..., Any]) -> None:
        self.api = api
        self.call = call

    async def ensure(self, net: NetworkInfo) -> str:
        """The engine network for `net`, made if missing (or remade if its settings are
        not the network's); returns its name."""
        name = engine_network_name(net)
        try:
            attrs = await self.call(self.api.inspect_network, name)
        except docker.errors.NotFound:
            attrs = None
        if attrs is not None and not _matches(attrs, net):
            log.info("replacing engine network with other settings", network=name)
            await self._remove(name)
            attrs = None
        if attrs is None:
            ipam = docker.types.IPAMConfig(
                pool_configs=[
                    docker.types.IPAMPool(subnet=str(net.subnet), gateway=str(net.gateway))
                ]
            )
            try:
                await self.call(
                    self.api.create_network,
                    name,
                    driver="bridge",
                    ipam=ipam,
                    internal=net.internal,
                    labels={LABEL_NETWORK_ID: net.id},
                    options={
                        "com.docker.network.bridge.name": bridge_name(net.vni),
                        "com.docker.network.driver.mtu": str(OVERLAY_MTU),
                    },
                    check_duplicate=True,
                )
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
        return name

    async def prune(self, keep: Iterable[str]) -> None:
        """Remove the engine networks of overlay networks not in `keep` (ids) that no
        container uses any more."""
        kept = set(keep)
        found = await self.call(self.api.networks, filters={"label": LABEL_NETWORK_ID})
        for attrs in found:
            if attrs.get("Labels", {}).get(LABEL_NETWORK_ID) in kept:
                continue
            await self._remove(attrs["Name"])

    async def _remove(self, name: str) -> None:
        try:
            await self.call(self.api.remove_network, name)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            # Still in use (a container not yet removed): the next prune tries again.
            log.info("engine network not removed yet", network=name, reason=str(exc))


def _matches(attrs: dict[str, Any], net: NetworkInfo) -> bool:
    configs = (attrs.get("IPAM") or {}).get("Config") or [{}]
    options = attrs.get("Options") or {}
    return bool(
        configs[0].get("Subnet") == str(net.subnet)
        and configs[0].get("Gateway") == str(net.gateway)
        and options.get("com.docker.network.bridge.name") == bridge_name(net.vni)
        and bool(attrs.get("Internal")) == net.internal
        and (attrs.get("Labels") or {}).get(LABEL_NETWORK_ID) == net.id
    )
