"""The allocator (leader only): gives networks their subnet and VXLAN id, services their
virtual IPs and published ingress ports, tasks their addresses before they are
scheduled, and nodes their address on the ingress network.

Crash-only, like every reconciler here: on start it rebuilds its `AddressBook` from the
stored objects, which carry their own allocations, and looks at everything. A task of a
service that joins networks is made NEW by the orchestrator; the allocator writes its
addresses and makes it PENDING in one update, so the scheduler, which takes only PENDING
tasks, never places a task without them. What a write that failed had taken is given
back, so nothing leaks and nothing has two owners; a deposed leader's writes fail on
the leader key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

from common import states
from common.api import objects_pb2, specs_pb2
from common.ids import new_id
from common.nodes import runs_tasks
from manager.allocator.book import INGRESS_NAME, AddressBook, owns_addresses
from manager.allocator.ipam import DEFAULT_POOLS, DEFAULT_SUBNET_SIZE, AllocationError
from manager.domain.networks import joined_networks, needs_allocation, task_networks
from manager.reconciler import Reconciler
from manager.store import (
    AlreadyExistsError,
    Create,
    Event,
    Kind,
    Update,
)
from manager.store.views import CacheView, Committer

Op = Update | Create


def ingress_spec() -> specs_pb2.NetworkSpec:
    """The routing mesh's network, made with the cluster (Swarm's `ingress`)."""
    spec = specs_pb2.NetworkSpec(driver="overlay", ingress=True)
    spec.annotations.name = INGRESS_NAME
    return spec


def _key(prefix: str, obj_id: str) -> str:
    return f"{prefix}:{obj_id}"


class Allocator(Reconciler):
    """Allocates addresses for networks, services, tasks and nodes from the cache."""

    name = "allocator"

    def __init__(self, cache: CacheView, store: Committer) -> None:
        super().__init__()
        self.cache = cache
        self.store = store
        self.book = AddressBook()
        # A deleted network's allocation, kept until a pass releases it.
        self._gone_networks: dict[str, objects_pb2.NetworkAllocation] = {}
        cache.add_listener(self._on_event)
        cache.add_resync_listener(self.mark_everything)

    # ---------------------------------------------------------------- events

    def _on_event(self, ev: Event) -> None:
        if ev.kind is Kind.NETWORK:
            if ev.new is None and ev.old is not None and ev.old.allocation.subnet:
                self._gone_networks[ev.id] = ev.old.allocation
            if ev.new is None or not ev.new.allocation.subnet:
                self.mark(_key("n", ev.id))
        elif ev.kind is Kind.SERVICE:
            if ev.new is None or ev.old is None or ev.old.spec != ev.new.spec:
                self.mark(_key("s", ev.id))
        elif ev.kind is Kind.TASK and _task_changed(ev.old, ev.new):
            self.mark(_key("t", ev.id))
        elif ev.kind is Kind.NODE and _node_changed(ev.old, ev.new):
            self.mark(_key("h", ev.id))

    def all_keys(self) -> Iterable[str]:
        # (Re)started: rebuild the book from what is stored.
        pools, size = self._pools()
        self.book = AddressBook(pools=pools, subnet_size=size)
        self._gone_networks.clear()
        cache = self.cache
        for complaint in self.book.load(
            cache.networks.values(),
            cache.services.values(),
            cache.tasks.values(),
            cache.nodes.values(),
        ):
            self.log.error("allocation clash in the store; allocating again", detail=complaint)
        keys = [_key("n", i) for i in cache.networks]
        keys += [_key("s", i) for i in cache.services]
        keys += [_key("t", i) for i, t in cache.tasks.items() if t.status.state == states.NEW]
        keys += [_key("h", i) for i in cache.nodes]
        keys.append("ingress")
        return keys

    def _pools(self) -> tuple[tuple[ipaddress.IPv4Network, ...], int]:
        cluster = self.cache.cluster()
        if cluster is None or not cluster.spec.network.default_addr_pool:
            return DEFAULT_POOLS, DEFAULT_SUBNET_SIZE
        net = cluster.spec.network
        pools = tuple(ipaddress.IPv4Network(p) for p in net.default_addr_pool)
        return pools, net.subnet_size or DEFAULT_SUBNET_SIZE

    # ---------------------------------------------------------------- the pass

    async def reconcile(self, keys: set[str]) -> None:
        ops: list[Op] = []
        releases: dict[int, Callable[[], None]] = {}
        if "ingress" in keys and self.ingress_id() is None:
            net = objects_pb2.Network(id=new_id(), spec=ingress_spec())
            ops.append(Create(net, unique_name=INGRESS_NAME))
        by_kind: dict[str, list[str]] = {"n": [], "s": [], "t": [], "h": []}
        for key in keys:
            prefix, _, obj_id = key.partition(":")
            if prefix in by_kind:
                by_kind[prefix].append(obj_id)
        for net_id in by_kind["n"]:
            self._network(net_id, ops, releases)
        ingress_id = self.ingress_id() or ""
        for service_id in by_kind["s"]:
            self._service(service_id, ingress_id, ops)
        for task_id in by_kind["t"]:
            self._task(task_id, ingress_id, ops, releases)
        for node_id in by_kind["h"]:
            self._node(node_id, ingress_id, ops, releases)
        if not ops:
            return
        result = await self.store.commit(ops)
        for op, error in result.failed:
            give_back = releases.get(id(op))
            if give_back is not None:
                give_back()
            if not isinstance(error, AlreadyExistsError):
                self.log.warning("allocation not written", error=str(error))
                self.mark_everything()
        await self.cache.wait_for(result.revision)

    def ingress_id(self) -> str | None:
        for net in self.cache.networks.values():
            if net.spec.ingress:
                return net.id
        return None

    def _network(self, net_id: str, ops: list[Op], releases: dict[int, Callable[[], None]]) -> None:
        net = self.cache.networks.get(net_id)
        gone = self._gone_networks.pop(net_id, None)
        if net is None:
            if gone is not None:
                self.book.release_network(net_id, gone)
            return
        if net.allocation.subnet:
            return
        try:
            alloc = self.book.allocate_network(net)
        except AllocationError as exc:
            self.log.warning("network not allocated", network_id=net_id, error=str(exc))
            return

        def write(current: objects_pb2.Network) -> objects_pb2.Network | None:
            if current.allocation.subnet:
                return None
            current.allocation.CopyFrom(alloc)
            return current

        op = Update(Kind.NETWORK, net_id, write)
        ops.append(op)
        releases[id(op)] = lambda: self.book.release_network(net_id, alloc)
        # Services and tasks waiting for this network can go on now.
        self.mark_everything()

    def _service(self, service_id: str, ingress_id: str, ops: list[Op]) -> None:
        service = self.cache.services.get(service_id)
        if service is None or not needs_allocation(service.spec):
            # Gone, or nothing to allocate (no network, no port through the mesh): a
            # service that never had an endpoint is not written to (no extra event).
            self.book.release_owner(service_id)
            self.book.release_ports(service_id)
            if service is not None and service.HasField("endpoint"):
                ops.append(Update(Kind.SERVICE, service_id, _without_endpoint))
            return
        endpoint = objects_pb2.Endpoint()
        endpoint.spec.CopyFrom(service.spec.endpoint)
        try:
            endpoint.ports.extend(
                self.book.published_ports(service_id, service.spec.endpoint.ports)
            )
            for net_id in self._vip_networks(service, ingress_id):
                addr = self.book.address_for(service_id, net_id)
                endpoint.virtual_ips.add(network_id=net_id, addr=addr)
        except AllocationError as exc:
            self.log.warning("service not allocated", service_id=service_id, error=str(exc))
            return
        self.book.release_owner(service_id, keep=[v.network_id for v in endpoint.virtual_ips])
        if service.endpoint == endpoint:
            return

        def write(current: objects_pb2.Service) -> objects_pb2.Service | None:
            if current.spec.endpoint != endpoint.spec:
                return None  # changed since: the next pass allocates for the new spec
            current.endpoint.CopyFrom(endpoint)
            return current

        ops.append(Update(Kind.SERVICE, service_id, write))

    @staticmethod
    def _vip_networks(service: objects_pb2.Service, ingress_id: str) -> list[str]:
        if service.spec.endpoint.mode == specs_pb2.RESOLUTION_MODE_DNSRR:
            return []
        spec = service.spec
        return [n for n, _ in joined_networks(spec.task, spec.endpoint, ingress_id)]

    def _task(
        self,
        task_id: str,
        ingress_id: str,
        ops: list[Op],
        releases: dict[int, Callable[[], None]],
    ) -> None:
        task = self.cache.tasks.get(task_id)
        if task is None or not owns_addresses(task):
            self.book.release_owner(task_id)
            return
        if task.status.state != states.NEW:
            return
        attachments: list[objects_pb2.NetworkAttachment] = []
        try:
            for net_id, aliases in task_networks(task, ingress_id):
                if net_id not in self.cache.networks:
                    raise AllocationError(f"network {net_id} not found")
                addr = self.book.address_for(task_id, net_id)
                attachments.append(
                    objects_pb2.NetworkAttachment(
                        network_id=net_id, addresses=[addr], aliases=aliases
                    )
                )
        except AllocationError as exc:
            self.book.release_owner(task_id)
            self._waiting(task_id, str(exc), ops)
            return

        def write(current: objects_pb2.Task) -> objects_pb2.Task | None:
            if current.status.state != states.NEW:
                return None
            del current.networks[:]
            current.networks.extend(attachments)
            current.status.state = states.PENDING
            current.status.message = "pending task scheduling"
            return current

        op = Update(Kind.TASK, task_id, write)
        ops.append(op)
        releases[id(op)] = lambda: self.book.release_owner(task_id)

    def _waiting(self, task_id: str, reason: str, ops: list[Op]) -> None:
        message = f"waiting for addresses: {reason}"

        def write(current: objects_pb2.Task) -> objects_pb2.Task | None:
            if current.status.state != states.NEW or current.status.message == message:
                return None
            current.status.message = message
            return current

        ops.append(Update(Kind.TASK, task_id, write))

    def _node(
        self,
        node_id: str,
        ingress_id: str,
        ops: list[Op],
        releases: dict[int, Callable[[], None]],
    ) -> None:
        node = self.cache.nodes.get(node_id)
        if node is None or not runs_tasks(node) or not ingress_id:
            if node is None:
                self.book.release_owner(node_id)
            return
        if ingress_id not in self.book.spaces:
            return
        had = self.book.holds(node_id, ingress_id)
        try:
            addr = self.book.address_for(node_id, ingress_id)
        except AllocationError as exc:
            self.log.warning("node not allocated", node_id=node_id, error=str(exc))
            return
        if had is not None and any(a.network_id == ingress_id for a in node.attachments):
            return

        def write(current: objects_pb2.Node) -> objects_pb2.Node | None:
            if any(a.network_id == ingress_id for a in current.attachments):
                return None
            current.attachments.add(network_id=ingress_id, addresses=[addr])
            return current

        op = Update(Kind.NODE, node_id, write)
        ops.append(op)
        if had is None:
            releases[id(op)] = lambda: self.book.release_owner(node_id)


def _task_changed(old: objects_pb2.Task | None, new: objects_pb2.Task | None) -> bool:
    """Created NEW (to allocate), ended or deleted (to release)."""
    if new is None:
        return True
    if old is not None and old.status.state == new.status.state:
        return False
    return new.status.state == states.NEW or not owns_addresses(new)


def _node_changed(old: objects_pb2.Node | None, new: objects_pb2.Node | None) -> bool:
    """Joined, left, or started or stopped running tasks (an agent on a manager)."""
    return old is None or new is None or runs_tasks(old) != runs_tasks(new)


def _without_endpoint(current: objects_pb2.Service) -> objects_pb2.Service | None:
    if not current.HasField("endpoint") or needs_allocation(current.spec):
        return None
    current.ClearField("endpoint")
    return current
