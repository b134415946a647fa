"""Service discovery: a DNS server the agent runs on each overlay network's gateway
address, which the network's containers get as their resolver.

It answers, from the names of every network the asking task is on (it is known by its
address on the network the query arrived on; Docker's embedded DNS likewise answers for
all of a container's networks):
- `SERVICE` (and each network alias): the service's virtual IP, or in `dnsrr` mode the
  addresses of its running tasks;
- `tasks.SERVICE`: the addresses of its running tasks;
and passes every other name on to the host's resolvers, unchanged, over UDP. The table
is replaced whole whenever the agent learns of a change, so an answer is never older
than the agent's own view (TTL 0: containers do not cache it).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from common.log import get_logger

log = get_logger("dns")

TASKS_PREFIX = "tasks."
FORWARD_TIMEOUT = 2.0


@dataclass(frozen=True)
class NameTable:
    """Names of one network: lower-case name (no trailing dot) -> addresses."""

    names: Mapping[str, tuple[ipaddress.IPv4Address, ...]] = field(default_factory=dict)

    def lookup(self, qname: str) -> tuple[ipaddress.IPv4Address, ...] | None:
        return self.names.get(qname.rstrip(".").lower())


@dataclass(frozen=True)
class ServiceNames:
    """What one service on a network answers to: its name and aliases, its virtual IPs
    (none in `dnsrr` mode) and the addresses of its running tasks."""

    names: Sequence[str]
    vips: Sequence[ipaddress.IPv4Address]
    tasks: Sequence[ipaddress.IPv4Address]


def build_table(services: Iterable[ServiceNames]) -> NameTable:
    """A network's table: a name resolves to the virtual IPs if there are any (`vip`
    mode), else to the tasks (`dnsrr`); `tasks.NAME` always to the tasks."""
    names: dict[str, tuple[ipaddress.IPv4Address, ...]] = {}
    for service in services:
        for name in service.names:
            key = name.lower()
            names[key] = tuple(service.vips) if service.vips else tuple(service.tasks)
            names[TASKS_PREFIX + key] = tuple(service.tasks)
    return NameTable(names)


def host_resolvers(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[tuple[str, int]]:
    """The host's nameservers, where other names go."""
    found: list[tuple[str, int]] = []
    try:
        text = resolv_conf.read_text()
    except OSError:
        return found
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            found.append((parts[1], 53))
    return found


class ServiceResolver:
    """Answers queries from the tables of the asking task's networks."""

    def __init__(self, upstreams: Sequence[tuple[str, int]]) -> None:
        self.upstreams = list(upstreams)
        self.tables: dict[str, NameTable] = {}
        # (network the query arrives on, the task's address there) -> the networks of
        # that task, that one first. A client not in it is answered from the network's.
        self.clients: dict[tuple[str, str], tuple[str, ...]] = {}

    def lookup(
        self, network: str, client: str, qname: str
    ) -> tuple[ipaddress.IPv4Address, ...] | None:
        for net in self.clients.get((network, client), (network,)):
            found = self.tables.get(net, NameTable()).lookup(qname)
            if found is not None:
                return found
        return None

    async def answer(self, network: str, wire: bytes, client: str = "") -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None  # not DNS: nothing to say to it
        if len(query.question) != 1:
            return _reply(query, dns.rcode.FORMERR).to_wire()
        question = query.question[0]
        found = self.lookup(network, client, question.name.to_text())
        if found is None:
            return await self._forward(wire, query)
        reply = _reply(query, dns.rcode.NOERROR)
        reply.flags |= dns.flags.AA
        if question.rdtype in (dns.rdatatype.A, dns.rdatatype.ANY) and found:
            shuffled = list(found)
            random.shuffle(shuffled)  # round robin for dnsrr clients that take the first
            reply.answer.append(
                dns.rrset.from_text_list(
                    question.name, 0, dns.rdataclass.IN, dns.rdatatype.A, [str(a) for a in shuffled]
                )
            )
        # A known name with no A answer (AAAA, or no task running) is NOERROR with no
        # data, so clients do not give up on the name altogether.
        return reply.to_wire()

    async def _forward(self, wire: bytes, query: dns.message.Message) -> bytes:
        for host, port in self.upstreams:
            try:
                return await _udp_exchange(wire, host, port, FORWARD_TIMEOUT)
            except (OSError, TimeoutError):
                continue
        return _reply(query, dns.rcode.SERVFAIL).to_wire()


def _reply(query: dns.message.Message, rcode: dns.rcode.Rcode) -> dns.message.Message:
    reply = dns.message.make_response(query)
    reply.flags |= dns.flags.RA
    reply.set_rcode(rcode)
    return reply


class _Exchange(asyncio.DatagramProtocol):
    def __init__(self, done: asyncio.Future[bytes]) -> None:
        self.done = done

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if not self.done.done():
            self.done.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


async def _udp_exchange(wire: bytes, host: str, port: int, timeout: float) -> bytes:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Exchange(done), remote_addr=(host, port)
    )
    try:
        transport.sendto(wire)
        return await asyncio.wait_for(done, timeout)
    finally:
        transport.close()


class _Server(asyncio.DatagramProtocol):
    def __init__(self, resolver: ServiceResolver, network: str) -> None:
        self.resolver = resolver
        self.network = network
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's own datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        task = asyncio.create_task(self._respond(data, addr))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _respond(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            reply = await self.resolver.answer(self.network, data, str(addr[0]))
        except Exception:
            log.exception("answering a query failed", network=self.network)
            return
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


class DnsServers:
    """One UDP listener per network, on that network's gateway address."""

    def __init__(self, resolver: ServiceResolver, port: int = 53) -> None:
        self.resolver = resolver
        self.port = port
        self._listeners: dict[str, tuple[str, asyncio.DatagramTransport]] = {}

    async def listen(self, wanted: Mapping[str, str]) -> None:
        """Listen on exactly `wanted` (network id -> address)."""
        for network, (addr, transport) in list(self._listeners.items()):
            if wanted.get(network) != addr:
                transport.close()
                del self._listeners[network]
        loop = asyncio.get_running_loop()
        for network, addr in wanted.items():
            if network in self._listeners:
                continue
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    functools.partial(_Server, self.resolver, network),
                    local_addr=(addr, self.port),
                )
            except OSError as exc:
                log.warning("cannot serve DNS", network=network, addr=addr, error=str(exc))
                continue
            self._listeners[network] = (addr, transport)

    def bound(self, network: str) -> tuple[str, int] | None:
        held = self._listeners.get(network)
        if held is None:
            return None
        host, port = held[1].get_extra_info("sockname")[:2]
        return str(host), int(port)

    def close(self) -> None:
        for _, transport in self._listeners.values():
            transport.close()
        self._listeners.clear()
