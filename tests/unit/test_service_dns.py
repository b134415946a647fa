"""The agent's service-discovery DNS server, over real UDP sockets on loopback: names,
`tasks.` names, dnsrr, a network's isolation from another, forwarding to the host's
resolvers, and a table change seen by the next query."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from agent.network.dns import (
    DnsServers,
    NameTable,
    ServiceNames,
    ServiceResolver,
    build_table,
    host_resolvers,
)

A = ipaddress.IPv4Address


class Upstream(asyncio.DatagramProtocol):
    """A stand-in for the host's resolver: answers `example.test` with 192.0.2.7."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        if query.question[0].name.to_text() == "example.test.":
            reply.answer.append(dns.rrset.from_text("example.test.", 60, "IN", "A", "192.0.2.7"))
        else:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        self.transport.sendto(reply.to_wire(), addr)


@pytest.fixture
async def servers() -> AsyncIterator[tuple[DnsServers, ServiceResolver]]:
    loop = asyncio.get_running_loop()
    upstream, _ = await loop.create_datagram_endpoint(Upstream, local_addr=("127.0.0.1", 0))
    up_port = upstream.get_extra_info("sockname")[1]
    resolver = ServiceResolver([("127.0.0.1", up_port)])
    dns_servers = DnsServers(resolver, port=0)
    await dns_servers.listen({"front": "127.0.0.1", "back": "127.0.0.2"})
    yield dns_servers, resolver
    dns_servers.close()
    upstream.close()


async def ask(dns_servers: DnsServers, network: str, name: str) -> dns.message.Message:
    bound = dns_servers.bound(network)
    assert bound is not None
    query = dns.message.make_query(name, dns.rdatatype.A)
    return await dns.asyncquery.udp(query, bound[0], port=bound[1], timeout=2)


def addresses(reply: dns.message.Message) -> set[str]:
    return {r.address for rrset in reply.answer for r in rrset}


async def test_names_tasks_and_dnsrr(servers: tuple[DnsServers, ServiceResolver]) -> None:
    dns_servers, resolver = servers
    resolver.tables["front"] = build_table(
        [
            ServiceNames(["web", "www"], [A("10.0.0.2")], [A("10.0.0.5"), A("10.0.0.6")]),
            ServiceNames(["db"], [], [A("10.0.0.9")]),
        ]
    )
    assert addresses(await ask(dns_servers, "front", "web")) == {"10.0.0.2"}
    assert addresses(await ask(dns_servers, "front", "WWW.")) == {"10.0.0.2"}
    assert addresses(await ask(dns_servers, "front", "tasks.web")) == {"10.0.0.5", "10.0.0.6"}
    assert addresses(await ask(dns_servers, "front", "db")) == {"10.0.0.9"}


async def test_a_network_sees_only_its_own_names(
    servers: tuple[DnsServers, ServiceResolver],
) -> None:
    dns_servers, resolver = servers
    resolver.tables["front"] = build_table([ServiceNames(["web"], [A("10.0.0.2")], [])])
    reply = await ask(dns_servers, "back", "web")
    assert reply.rcode() == dns.rcode.NXDOMAIN  # forwarded, and the host knows no "web"


async def test_other_names_go_to_the_host_resolvers(
    servers: tuple[DnsServers, ServiceResolver],
) -> None:
    dns_servers, _ = servers
    assert addresses(await ask(dns_servers, "front", "example.test")) == {"192.0.2.7"}


async def test_a_change_shows_in_the_next_answer(
    servers: tuple[DnsServers, ServiceResolver],
) -> None:
    dns_servers, resolver = servers
    resolver.tables["front"] = build_table([ServiceNames(["api"], [], [A("10.0.0.5")])])
    assert addresses(await ask(dns_servers, "front", "tasks.api")) == {"10.0.0.5"}
    resolver.tables["front"] = build_table([ServiceNames(["api"], [], [A("10.0.0.8")])])
    assert addresses(await ask(dns_servers, "front", "tasks.api")) == {"10.0.0.8"}
    resolver.tables["front"] = NameTable()
    assert (await ask(dns_servers, "front", "tasks.api")).rcode() == dns.rcode.NXDOMAIN


async def test_no_upstream_answers_servfail(tmp_path: Path) -> None:
    resolver = ServiceResolver([])
    reply = dns.message.from_wire(
        await resolver.answer("x", dns.message.make_query("nowhere.test", "A").to_wire()) or b""
    )
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert await resolver.answer("x", b"not dns") is None
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nnameserver 192.0.2.53\nsearch example\n")
    assert host_resolvers(conf) == [("192.0.2.53", 53)]


async def test_a_task_on_two_networks_resolves_names_of_both(
    servers: tuple[DnsServers, ServiceResolver],
) -> None:
    dns_servers, resolver = servers
    resolver.tables["front"] = build_table([ServiceNames(["web"], [A("10.0.0.2")], [])])
    resolver.tables["back"] = build_table([ServiceNames(["db"], [A("10.1.0.2")], [])])
    # The asking task (127.0.0.1 here) is on both networks, "front" first.
    resolver.clients[("front", "127.0.0.1")] = ("front", "back")
    assert addresses(await ask(dns_servers, "front", "db")) == {"10.1.0.2"}
    assert addresses(await ask(dns_servers, "front", "web")) == {"10.0.0.2"}
