"""An overlay network on a real Docker engine: the engine's bridge network bound to our
bridge, a container joined with the address the manager gave it (and the MAC that
follows), and names resolved through the engine's embedded DNS, which passes them on to
the agent's DNS server on the gateway."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import Iterator
from typing import Any

import pytest

from agent.network.dataplane import DataPlane, OverlayPlan, mac_of
from agent.network.dns import DnsServers, ServiceNames, ServiceResolver, build_table
from agent.network.engine import EngineNetworks, engine_network_name
from agent.network.view import NetworkInfo
from tests.harness import IMAGE
from tests.netnslib import needs_netns

pytestmark = [pytest.mark.docker, needs_netns]

IP = ipaddress.IPv4Address
NET = NetworkInfo(
    id="testnet0001",
    name=f"enginetest{os.getpid()}",
    vni=4990,
    subnet=ipaddress.IPv4Network("10.249.0.0/24"),
    gateway=IP("10.249.0.1"),
)
VIP = IP("10.249.0.2")


@pytest.fixture
def overlay(docker_client: Any) -> Iterator[EngineNetworks]:
    api = docker_client.api
    plane = DataPlane(IP("127.0.0.1"))
    plane.apply([OverlayPlan(NET.vni, NET.subnet, NET.gateway, extra=frozenset({VIP}))])

    async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    networks = EngineNetworks(api, call)
    try:
        yield networks
    finally:
        for c in api.containers(all=True, filters={"label": "swarmlet.test.engine-networks"}):
            api.remove_container(c["Id"], force=True)
        asyncio.run(networks.prune(keep=()))
        plane.apply([])


def test_a_container_joins_with_its_address_and_resolves_service_names(
    overlay: EngineNetworks, docker_client: Any
) -> None:
    api = docker_client.api
    name = asyncio.run(overlay.ensure(NET))
    assert name == engine_network_name(NET)
    assert asyncio.run(overlay.ensure(NET)) == name  # again: nothing changes
    attrs = api.inspect_network(name)
    assert attrs["Options"]["com.docker.network.bridge.name"] == "swl-br-4990"

    resolver = ServiceResolver([])
    resolver.tables[NET.id] = build_table(
        [ServiceNames(["web"], [VIP], [IP("10.249.0.20"), IP("10.249.0.21")])]
    )

    async def run_container() -> str:
        servers = DnsServers(resolver)
        await servers.listen({NET.id: str(NET.gateway)})
        try:
            container = api.create_container(
                IMAGE,
                command=["sh", "-c", "nslookup web; nslookup tasks.web; ip addr show eth0"],
                labels={"swarmlet.test.engine-networks": "1"},
                host_config=api.create_host_config(network_mode=name, dns=[str(NET.gateway)]),
                networking_config=api.create_networking_config(
                    {name: api.create_endpoint_config(ipv4_address="10.249.0.10")}
                ),
            )
            api.start(container["Id"])
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, lambda: api.wait(container["Id"], timeout=30))
            return str(api.logs(container["Id"]).decode())
        finally:
            servers.close()

    out = asyncio.run(run_container())
    assert str(VIP) in out, out
    assert "10.249.0.20" in out, out
    assert "10.249.0.21" in out, out
    assert "10.249.0.10/24" in out, out
    assert mac_of(IP("10.249.0.10")) in out, out
