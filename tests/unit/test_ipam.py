"""The allocator's bookkeeping: subnets never overlap, an address or VXLAN id never has
two owners, and what is released can be handed out again."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from manager.allocator.ipam import (
    AddressSpace,
    AllocationError,
    ExhaustedError,
    SubnetPool,
    TakenError,
    VniPool,
    parse_subnet,
)

Net = ipaddress.IPv4Network
Addr = ipaddress.IPv4Address


def test_subnets_come_from_the_pool_in_order_and_skip_user_subnets() -> None:
    pool = SubnetPool()
    pool.reserve(Net("10.0.1.0/24"), "user")
    assert pool.allocate("a") == Net("10.0.0.0/24")
    assert pool.allocate("b") == Net("10.0.2.0/24")


def test_an_overlapping_user_subnet_is_refused_naming_the_owner() -> None:
    pool = SubnetPool()
    pool.allocate("backend")
    with pytest.raises(TakenError, match=r"overlaps 10\.0\.0\.0/24 of network backend"):
        pool.reserve(Net("10.0.0.0/16"), "wide")


def test_a_small_pool_runs_out_with_a_message_saying_what_to_do() -> None:
    pool = SubnetPool(pools=(Net("10.9.0.0/23"),), size=24)
    pool.allocate("a")
    pool.allocate("b")
    with pytest.raises(ExhaustedError, match="remove unused networks"):
        pool.allocate("c")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.0.0.1/24", "has host bits set"),
        ("banana", "give an IPv4 CIDR"),
        ("10.0.0.0/30", "between /8 and /29"),
    ],
)
def test_bad_subnets_are_clear_errors(text: str, message: str) -> None:
    with pytest.raises(AllocationError, match=message):
        parse_subnet(text)


def test_addresses_skip_network_gateway_and_broadcast() -> None:
    space = AddressSpace(Net("10.0.0.0/29"))
    got = [space.allocate(str(i)) for i in range(space.size)]
    assert got == [Addr(f"10.0.0.{i}") for i in range(2, 7)]
    with pytest.raises(ExhaustedError, match="no free address"):
        space.allocate("x")


def test_a_gateway_outside_the_subnet_is_refused() -> None:
    with pytest.raises(AllocationError, match="not a host address"):
        AddressSpace(Net("10.0.0.0/24"), gateway=Addr("10.0.1.1"))


def test_released_addresses_come_back_last() -> None:
    space = AddressSpace(Net("10.0.0.0/24"))
    a = space.allocate("a")
    space.allocate("b")
    space.release(a)
    assert space.allocate("c") != a


def test_release_with_an_owner_frees_only_its_own_address() -> None:
    space = AddressSpace(Net("10.0.0.0/24"))
    a = space.allocate("a")
    space.release(a, owner="someone else")
    assert space.owner_of(a) == "a"


@given(st.lists(st.sampled_from(["alloc", "release"]), max_size=200))
def test_vxlan_ids_are_unique(ops: list[str]) -> None:
    pool = VniPool(first=4096, last=4110)
    held: list[int] = []
    for i, op in enumerate(ops):
        if op == "alloc":
            try:
                held.append(pool.allocate(f"n{i}"))
            except ExhaustedError:
                assert len(held) == 15
        elif held:
            pool.release(held.pop(0))
        assert len(set(held)) == len(held)
        assert all(4096 <= v <= 4110 for v in held)


class AddressMachine(RuleBasedStateMachine):
    """Random allocations, reservations and releases on a small subnet, checked against
    a model of who owns what."""

    def __init__(self) -> None:
        super().__init__()
        self.space = AddressSpace(Net("10.1.0.0/28"))
        self.model: dict[Addr, str] = {}
        self.counter = 0

    def _owner(self) -> str:
        self.counter += 1
        return f"o{self.counter}"

    @rule()
    def allocate(self) -> None:
        owner = self._owner()
        if len(self.model) == self.space.size:
            with pytest.raises(ExhaustedError):
                self.space.allocate(owner)
            return
        addr = self.space.allocate(owner)
        assert addr not in self.model
        self.model[addr] = owner

    @rule(host=st.integers(min_value=0, max_value=15))
    def reserve(self, host: int) -> None:
        addr = Addr("10.1.0.0") + host
        owner = self._owner()
        if host in (0, 1, 15):
            with pytest.raises(AllocationError):
                self.space.reserve(addr, owner)
        elif addr in self.model:
            with pytest.raises(TakenError):
                self.space.reserve(addr, owner)
        else:
            self.space.reserve(addr, owner)
            self.model[addr] = owner

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        addr = data.draw(st.sampled_from(sorted(self.model)))
        self.space.release(addr, self.model.pop(addr))

    @invariant()
    def matches_the_model(self) -> None:
        assert dict(self.space.items()) == self.model
        for addr in self.model:
            assert addr in self.space.subnet
            assert addr != self.space.gateway


TestAddressMachine = AddressMachine.TestCase
TestAddressMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
