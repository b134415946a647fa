"""The allocator over random histories: networks, services with replicas joining them,
scale-downs, removals, nodes joining and leaving, and the leader killed in the middle of
a write (part of its operations stored, the rest lost, then a new leader rebuilding from
what is stored). Whatever happens, no address, subnet or VXLAN id ever has two live
owners in the store, and every NEW task is eventually given its addresses."""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from collections.abc import Sequence

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from common import states
from common.api import objects_pb2, specs_pb2, types_pb2
from manager.allocator.allocator import Allocator
from manager.allocator.book import owns_addresses
from manager.store import BatchResult, Kind, StoreUnavailableError
from manager.store.store import Op
from tests.fakes import FakeCache, RecordingCommitter


class KillableCommitter(RecordingCommitter):
    """Commits normally, or, once `kill_after` is set, applies that many operations of
    the next batch and raises as a leader killed mid-write would leave etcd."""

    def __init__(self, cache: FakeCache) -> None:
        super().__init__(cache)
        self.kill_after: int | None = None

    async def commit(self, ops: Sequence[Op]) -> BatchResult:
        if self.kill_after is None:
            return await super().commit(ops)
        keep, self.kill_after = self.kill_after, None
        await super().commit(list(ops)[:keep])
        raise StoreUnavailableError("the leader was killed mid-write")


def network(net_id: str, subnet: str = "") -> objects_pb2.Network:
    net = objects_pb2.Network(id=net_id)
    net.spec.annotations.name = net_id
    net.spec.driver = "overlay"
    net.spec.ipam.subnet = subnet
    return net


def service(service_id: str, networks: list[str], published: bool) -> objects_pb2.Service:
    svc = objects_pb2.Service(id=service_id)
    svc.spec.annotations.name = service_id
    for net in networks:
        svc.spec.task.networks.add(target=net)
    if published:
        svc.spec.endpoint.ports.add(
            protocol=types_pb2.PORT_PROTOCOL_TCP,
            target_port=80,
            publish_mode=types_pb2.PUBLISH_MODE_INGRESS,
        )
    return svc


def new_task(svc: objects_pb2.Service, n: int) -> objects_pb2.Task:
    task = objects_pb2.Task(id=f"{svc.id}-t{n}", service_id=svc.id, slot=n)
    task.spec.CopyFrom(svc.spec.task)
    task.endpoint.CopyFrom(svc.spec.endpoint)
    task.desired_state = states.RUNNING
    task.status.state = states.NEW
    return task


def node(node_id: str) -> objects_pb2.Node:
    n = objects_pb2.Node(id=node_id)
    n.status.state = types_pb2.NODE_STATE_READY
    n.description.engine.engine_version = "20.10"
    return n


class AllocatorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.cache = FakeCache()
        self.committer = KillableCommitter(self.cache)
        self.allocator = self._leader()
        self.counter = 0

    def _leader(self) -> Allocator:
        allocator = Allocator(self.cache, self.committer)
        allocator.mark_everything()
        return allocator

    def _id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def _pass(self) -> None:
        allocator = self.allocator
        keys, allocator._dirty = allocator._dirty, set()
        if allocator._everything:
            allocator._everything = False
            keys.update(allocator.all_keys())
        try:
            asyncio.run(allocator.reconcile(keys))
        except StoreUnavailableError:
            # The leader died: a new one starts from what is stored.
            self.allocator = self._leader()

    @rule(subnet=st.sampled_from(["", "", "10.0.7.0/28", "10.0.1.0/24"]))
    def create_network(self, subnet: str) -> None:
        taken = [n.spec.ipam.subnet for n in self.cache.networks.values()]
        if subnet and subnet in taken:
            return  # the control API refuses an overlap before it is stored
        self.cache.put(network(self._id("net"), subnet))

    @precondition(lambda self: bool(self.cache.networks))
    @rule(data=st.data(), replicas=st.integers(1, 6), published=st.booleans())
    def create_service(self, data: st.DataObject, replicas: int, published: bool) -> None:
        # The control API refuses the ingress network in --network: ports join it.
        own = sorted(n.id for n in self.cache.networks.values() if not n.spec.ingress)
        nets = data.draw(st.lists(st.sampled_from(own), max_size=2)) if own else []
        svc = service(self._id("svc"), sorted(set(nets)), published)
        self.cache.put(svc)
        for n in range(1, replicas + 1):
            self.cache.put(new_task(svc, n))

    @precondition(lambda self: bool(self.cache.tasks))
    @rule(data=st.data())
    def end_a_task(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(sorted(self.cache.tasks)))
        task = self.cache.tasks[task_id]
        task.status.state = states.FAILED
        self.cache.put(task)

    @precondition(lambda self: bool(self.cache.tasks))
    @rule(data=st.data())
    def delete_a_task(self, data: st.DataObject) -> None:
        self.cache.delete(Kind.TASK, data.draw(st.sampled_from(sorted(self.cache.tasks))))

    @precondition(lambda self: bool(self.cache.services))
    @rule(data=st.data())
    def remove_a_service(self, data: st.DataObject) -> None:
        self.cache.delete(Kind.SERVICE, data.draw(st.sampled_from(sorted(self.cache.services))))

    @rule()
    def join_a_node(self) -> None:
        self.cache.put(node(self._id("node")))

    @precondition(lambda self: bool(self.cache.nodes))
    @rule(data=st.data())
    def remove_a_node(self, data: st.DataObject) -> None:
        self.cache.delete(Kind.NODE, data.draw(st.sampled_from(sorted(self.cache.nodes))))

    @rule(keep=st.integers(0, 5))
    def kill_the_leader_mid_write(self, keep: int) -> None:
        self.committer.kill_after = keep
        self._pass()

    @rule()
    def allocate(self) -> None:
        self._pass()

    @invariant()
    def nothing_has_two_owners(self) -> None:
        subnets = [
            ipaddress.IPv4Network(n.allocation.subnet)
            for n in self.cache.networks.values()
            if n.allocation.subnet
        ]
        for i, a in enumerate(subnets):
            assert not any(a.overlaps(b) for b in subnets[i + 1 :]), subnets
        vnis = Counter(
            n.allocation.vxlan_id for n in self.cache.networks.values() if n.allocation.subnet
        )
        assert all(c == 1 for c in vnis.values()), vnis
        held: Counter[tuple[str, str]] = Counter()
        for svc in self.cache.services.values():
            held.update((v.network_id, v.addr) for v in svc.endpoint.virtual_ips)
        for task in self.cache.tasks.values():
            if owns_addresses(task):
                held.update((a.network_id, x) for a in task.networks for x in a.addresses)
        for n in self.cache.nodes.values():
            held.update((a.network_id, x) for a in n.attachments for x in a.addresses)
        twice = {k: c for k, c in held.items() if c > 1}
        assert not twice, twice
        ports = Counter(
            p.published_port
            for svc in self.cache.services.values()
            for p in svc.endpoint.ports
            if p.published_port
        )
        assert all(c == 1 for c in ports.values()), ports

    def teardown(self) -> None:
        # Left alone, the allocator finishes what it can: every NEW task whose networks
        # exist and have room gets its addresses.
        for _ in range(3):
            self.allocator.mark_everything()
            self._pass()
        for task in self.cache.tasks.values():
            if task.status.state == states.NEW:
                assert "waiting for addresses" in task.status.message, task


TestAllocator = AllocatorMachine.TestCase
TestAllocator.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)


def test_the_ingress_network_is_made_once() -> None:
    cache = FakeCache()
    allocator = Allocator(cache, RecordingCommitter(cache))
    for _ in range(2):
        asyncio.run(allocator.reconcile(set(allocator.all_keys())))
    ingress = [n for n in cache.networks.values() if n.spec.ingress]
    assert len(ingress) == 1
    assert ingress[0].allocation.subnet == "10.0.0.0/24"
    assert ingress[0].spec.annotations.name == "ingress"


def test_a_task_joins_its_networks_and_the_ingress_then_becomes_pending() -> None:
    cache = FakeCache(network("front"), node("n1"))
    allocator = Allocator(cache, RecordingCommitter(cache))
    for _ in range(2):
        asyncio.run(allocator.reconcile(set(allocator.all_keys())))
    svc = service("web", ["front"], published=True)
    cache.put(svc, new_task(svc, 1))
    asyncio.run(allocator.reconcile(set(allocator.all_keys())))
    task = cache.tasks["web-t1"]
    assert task.status.state == states.PENDING
    ingress_id = next(n.id for n in cache.networks.values() if n.spec.ingress)
    assert [a.network_id for a in task.networks] == [ingress_id, "front"]
    web = cache.services["web"]
    assert {v.network_id for v in web.endpoint.virtual_ips} == {ingress_id, "front"}
    assert web.endpoint.ports[0].published_port == 30000
    assert cache.nodes["n1"].attachments[0].network_id == ingress_id


def test_a_dnsrr_service_gets_no_virtual_ip() -> None:
    cache = FakeCache(network("front"))
    allocator = Allocator(cache, RecordingCommitter(cache))
    svc = service("db", ["front"], published=False)
    svc.spec.endpoint.mode = specs_pb2.RESOLUTION_MODE_DNSRR
    cache.put(svc)
    for _ in range(2):
        asyncio.run(allocator.reconcile(set(allocator.all_keys())))
    assert not cache.services["db"].endpoint.virtual_ips
